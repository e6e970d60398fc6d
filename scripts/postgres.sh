#!/usr/bin/env bash
# PostgreSQL on loopback for trials of the scale-out stack (and by hand, for
# tests against a running server).
#
#   scripts/postgres.sh start [STATE_DIR]          initdb (first time), start, print `export` lines
#   scripts/postgres.sh env   [STATE_DIR]          print the `export` lines again
#   scripts/postgres.sh stop  [STATE_DIR]          stop it and delete its database
#   scripts/postgres.sh stop  [STATE_DIR] --keep   stop it, keep database, port and password
#
# Usage: eval "$(scripts/postgres.sh start /tmp/pg)"; ...; scripts/postgres.sh stop /tmp/pg
#
# - initdb, pg_ctl and createdb are taken from PATH, else from Debian's
#   /usr/lib/postgresql/<version>/bin (newest first), as tests/support/postgres.py
#   does; PG_BIN=/path/to/bin overrides. scripts/install-test-services.sh
#   installs Debian's postgresql package.
# - Listens on 127.0.0.1 only (and a Unix socket in STATE_DIR), on a free port
#   or POSTGRES_PORT. User `postgres` with a random password (scram-sha-256,
#   kept in STATE_DIR, mode 600); database POSTGRES_DB (default "upscayl").
# - PostgreSQL refuses to run as root: as root, the server runs as
#   POSTGRES_RUN_AS (default: user postgres if it exists, else nobody), and
#   STATE_DIR is given to that user (every folder above it must let it through).
# - After `stop --keep`, the next `start` brings the same database back on the
#   same port with the same password, so the printed URL stays valid.
set -euo pipefail

# shellcheck source=scripts/service-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/service-lib.sh"
parse_service_args postgres.sh "${POSTGRES_STATE_DIR:-.postgres}" "$@"
python=${PYTHON:-python3}
dbname=${POSTGRES_DB:-upscayl}

pg_bin() {
    local name=$1
    if [[ -n ${PG_BIN:-} ]]; then echo "$PG_BIN/$name"; return; fi
    if command -v "$name" >/dev/null; then command -v "$name"; return; fi
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r | head -n 1)
    if [[ -n $dir && -x $dir/$name ]]; then echo "$dir/$name"; return; fi
    echo "postgres.sh: no $name (scripts/install-test-services.sh, or PG_BIN=...)" >&2
    return 1
}

run_as=()
if [[ $(id -u) -eq 0 ]]; then
    if [[ -n ${POSTGRES_RUN_AS:-} ]]; then user=$POSTGRES_RUN_AS
    elif id postgres >/dev/null 2>&1; then user=postgres
    else user=nobody
    fi
    run_as=(runuser -u "$user" --)
fi

# A folder with one of the files this script writes is one of ours.
ours() {
    [[ -e $state/port || -e $state/password || -e $state/env || -e $state/db/PG_VERSION ]]
}

is_running() {
    [[ -f $state/db/postmaster.pid ]] && "${run_as[@]}" "$(pg_bin pg_ctl)" -D "$state/db" status >/dev/null 2>&1
}

start() {
    local initdb pg_ctl createdb
    initdb=$(pg_bin initdb)
    pg_ctl=$(pg_bin pg_ctl)
    createdb=$(pg_bin createdb)
    refuse_foreign
    mkdir -p "$state"
    state=$(cd "$state" && pwd)
    if is_running; then print_env; return; fi
    umask 077
    chmod 700 "$state"
    if ((${#run_as[@]})); then
        chown "$user" "$state"
        if ! "${run_as[@]}" test -w "$state"; then
            echo "postgres.sh: user $user cannot write $state (a folder above it is closed to it)" >&2
            return 1
        fi
    fi
    local port password fresh=0
    if [[ -n ${POSTGRES_PORT:-} ]]; then port=$POSTGRES_PORT
    elif [[ -f $state/port ]]; then port=$(cat "$state/port")
    else port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    fi
    echo "$port" >"$state/port"
    if [[ ! -f $state/db/PG_VERSION ]]; then
        fresh=1
        rm -rf "$state/db"
        "$python" -c 'import secrets; print(secrets.token_hex(24))' >"$state/password"
        ((${#run_as[@]})) && chown "$user" "$state/password"
        if ! "${run_as[@]}" "$initdb" -D "$state/db" -U postgres --auth=scram-sha-256 \
            --pwfile="$state/password" >"$state/initdb.log" 2>&1; then
            echo "postgres.sh: initdb failed; log follows" >&2
            tail -n 20 "$state/initdb.log" >&2 || true
            return 1
        fi
    fi
    password=$(cat "$state/password")
    local options="-c listen_addresses=127.0.0.1 -p $port -k $state"
    if ! "${run_as[@]}" "$pg_ctl" -D "$state/db" -o "$options" -l "$state/log" -w -t 60 start \
        >/dev/null 2>&1; then
        echo "postgres.sh: PostgreSQL did not start on 127.0.0.1:$port; log follows" >&2
        tail -n 20 "$state/log" >&2 || true
        return 1
    fi
    if ((fresh)); then
        PGPASSWORD=$password "$createdb" -h 127.0.0.1 -p "$port" -U postgres "$dbname"
    fi
    echo "export UPSCAYL_DATABASE_URL=postgresql+psycopg://postgres:$password@127.0.0.1:$port/$dbname" \
        >"$state/env"
    print_env
}

stop() {
    refuse_foreign
    if [[ -f $state/db/postmaster.pid ]]; then
        "${run_as[@]}" "$(pg_bin pg_ctl)" -D "$state/db" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -f "$state/env"
    if ((!keep)); then
        rm -rf "$state/db"
        rm -f "$state/port" "$state/password" "$state/log" "$state/initdb.log"
    fi
}

case $cmd in
    start) start ;;
    env) print_env ;;
    stop) stop ;;
    *) echo "usage: $0 start|env [STATE_DIR] | stop [STATE_DIR] [--keep]" >&2; exit 2 ;;
esac
