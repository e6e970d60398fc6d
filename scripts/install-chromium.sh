#!/usr/bin/env bash
# Debian's Chromium for the web UI tests (tests/web/), installed only if missing.
#
#   scripts/install-chromium.sh
#
# Why this shape:
# - The tests drive /usr/bin/chromium through the Python `playwright` package.
#   `playwright install` downloads its own browser builds from a CDN, which
#   self-hosters' and CI's machines cannot reach; Debian's package comes from
#   the distribution mirror like every other system package.
# - Idempotent and cheap when Chromium is already there: no apt call at all.
# - Needs root (CI runs as root); without it, say so and leave it to the
#   tests, which skip with a reason when /usr/bin/chromium is missing.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-chromium: /usr/bin/chromium is missing; run as root to install it" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
/usr/bin/chromium --version
