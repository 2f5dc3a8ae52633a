#!/usr/bin/env bash
# Install everything the test suite needs into .venv (and the browser tools the
# end-to-end tests drive), then run every test. CI calls this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${ENVSYNC_TEST_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[test,dev,bench]"

# Debian packages: Chromium for the browser end-to-end tests; sshd and ip for tests/cluster,
# which start their own sshd per network namespace. One apt-get update for all of them.
apt_packages=()
if [ ! -x /usr/bin/chromium ]; then
    apt_packages+=(chromium chromium-driver)
fi
if [ ! -x /usr/sbin/sshd ]; then
    apt_packages+=(openssh-server)
fi
if ! command -v ip >/dev/null; then
    apt_packages+=(iproute2)
fi
if [ "${#apt_packages[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        # openssh-server's postinst would start the system sshd; a policy-rc.d that answers
        # 101 ("not allowed") keeps every package's service stopped. Ours is removed again.
        policy=/usr/sbin/policy-rc.d
        own_policy=
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            own_policy=1
            trap 'rm -f "$policy"' EXIT
        fi
        had_pidfile=
        [ -e /run/sshd.pid ] && had_pidfile=1
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
        if [ -n "$own_policy" ]; then
            rm -f "$policy"
            trap - EXIT
        fi
        # Should an init system have started the system sshd anyway, end it by its PID.
        if [ -z "$had_pidfile" ] && [ -s /run/sshd.pid ]; then
            kill "$(cat /run/sshd.pid)" 2>/dev/null || true
        fi
    else
        echo "note: not root, so ${apt_packages[*]} cannot be installed; browser and cluster tests will report a skip reason" >&2
    fi
fi
if [ -f examples/browser-client/package.json ]; then
    (cd examples/browser-client && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
fi

# pyproject's addopts leave `slow` tests out; this -m comes later and brings them back.
# An -m given to this script comes later still and wins.
exec "$VENV/bin/python" -m pytest -m "slow or not slow" "$@"
