#!/usr/bin/env bash
# redis-server as a rate-limit store on loopback, for tests and trials.
#
#   scripts/redis.sh start [STATE_DIR]          start on a free 127.0.0.1 port, print `export` lines
#   scripts/redis.sh env   [STATE_DIR]          print the `export` lines again
#   scripts/redis.sh stop  [STATE_DIR]          stop it and delete its state folder's files
#   scripts/redis.sh stop  [STATE_DIR] --keep   stop it, keep its port for the next start
#
# Usage: eval "$(scripts/redis.sh start /tmp/redis)"; ...; scripts/redis.sh stop /tmp/redis
#
# - Binds 127.0.0.1 only, with no persistence (no RDB, no AOF): rate-limit
#   counters are worth nothing after a restart, and nothing is written but a log.
# - REDIS_PORT fixes the port. After `stop --keep`, the next `start` with the
#   same STATE_DIR uses the same port, so the printed URI stays valid.
# - REDIS_SERVER=/path/to/redis-server overrides the binary
#   (scripts/install-test-services.sh installs Debian's).
# - REDIS_WATCH_PID=<pid>: redis is also stopped when that process dies, so a
#   killed test run leaves no server behind.
set -euo pipefail

# shellcheck source=scripts/service-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/service-lib.sh"
parse_service_args redis.sh "${REDIS_STATE_DIR:-.redis}" "$@"
python=${PYTHON:-python3}

find_server() {
    if [[ -n ${REDIS_SERVER:-} ]]; then echo "$REDIS_SERVER"
    elif command -v redis-server >/dev/null; then command -v redis-server
    else
        echo "redis.sh: no redis-server (scripts/install-test-services.sh)" >&2
        return 1
    fi
}

# A folder with one of the files this script writes is one of ours.
ours() {
    [[ -e $state/port || -e $state/pid || -e $state/env || -e $state/redis.log ]]
}

is_running() {
    [[ -f $state/pid ]] && kill -0 "$(cat "$state/pid")" 2>/dev/null
}

start() {
    local server
    server=$(find_server)
    refuse_foreign
    mkdir -p "$state"
    state=$(cd "$state" && pwd)
    if is_running; then print_env; return; fi
    umask 077
    local port picked=0
    if [[ -n ${REDIS_PORT:-} ]]; then port=$REDIS_PORT
    elif [[ -f $state/port ]]; then port=$(cat "$state/port")
    else picked=1; port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    fi
    echo "$port" >"$state/port"
    (
        cd "$state"
        exec "$server" --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
            --dir "$state" --daemonize no --protected-mode yes --databases 16 \
            --logfile "$state/redis.log"
    ) </dev/null >/dev/null 2>&1 &
    local pid=$!
    echo "$pid" >"$state/pid"
    if [[ -n ${REDIS_WATCH_PID:-} ]]; then
        local watched=$REDIS_WATCH_PID
        (
            while kill -0 "$watched" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
            kill "$pid" 2>/dev/null || true
        ) </dev/null >/dev/null 2>&1 &
    fi
    # Ready when it answers PING.
    if ! "$python" - "$port" "$pid" <<'PY'
import os, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(1)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(16).startswith(b"+PONG"):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.05)
sys.exit(1)
PY
    then
        echo "redis.sh: redis-server did not answer on 127.0.0.1:$port; log follows" >&2
        tail -n 20 "$state/redis.log" >&2 || true
        keep=$((1 - picked))  # a fixed or kept port stays recorded
        stop
        return 1
    fi
    echo "export UPSCAYL_RATE_LIMIT_STORAGE_URI=redis://127.0.0.1:$port" >"$state/env"
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
    if ((!keep)); then rm -f "$state/port" "$state/redis.log"; fi
}

case $cmd in
    start) start ;;
    env) print_env ;;
    stop) stop ;;
    *) echo "usage: $0 start|env [STATE_DIR] | stop [STATE_DIR] [--keep]" >&2; exit 2 ;;
esac
