# Sourced by postgres.sh, redis.sh and seaweedfs.sh: their shared command line,
# `<script> start|stop|env [STATE_DIR] [--keep]`, and the checks on their state
# folder. Each script defines `ours` (whether $state holds its own files).

# parse_service_args SCRIPT DEFAULT_STATE [ARGS...]: sets cmd, keep and state.
parse_service_args() {
    local arg
    service_script=$1
    state=$2
    shift 2
    cmd=${1:-}
    shift || true
    keep=0
    for arg in "$@"; do
        case $arg in
            --keep) keep=1 ;;
            *) state=$arg ;;
        esac
    done
    # An empty STATE_DIR (`stop "$UNSET"`) would make `stop` delete /port and
    # the like, and "/" is nobody's state folder: refused, never guessed at.
    if [[ -z $state || $state =~ ^/+$ || $(CDPATH="" cd -- "$state" 2>/dev/null && pwd -P) == / ]]; then
        echo "$service_script: refusing state folder '$state' (empty or /)" >&2
        exit 2
    fi
}

# `start /tmp` (or `.`) would chmod someone else's folder, `stop` delete in it:
# an existing, non-empty folder that is not one of ours is refused.
refuse_foreign() {
    if [[ -d $state && -n $(find "$state" -mindepth 1 -maxdepth 1 -print -quit 2>/dev/null) ]] &&
        ! ours; then
        echo "$service_script: $state is not empty and not a state folder of $service_script; refusing it" >&2
        exit 2
    fi
}

print_env() {
    [[ -f $state/env ]] || { echo "$service_script: not started in $state" >&2; return 1; }
    cat "$state/env"
}
