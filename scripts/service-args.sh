# Sourced by postgres.sh, redis.sh and seaweedfs.sh: their shared command line,
# `<script> start|stop|env [STATE_DIR] [--keep]`.

# parse_service_args SCRIPT DEFAULT_STATE [ARGS...]: sets cmd, keep and state.
parse_service_args() {
    local script=$1 arg
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
        echo "$script: refusing state folder '$state' (empty or /)" >&2
        exit 2
    fi
}
