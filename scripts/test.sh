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

# Browser end-to-end tests: Debian's Chromium, and the Node packages of the example client.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "note: /usr/bin/chromium is missing and this is not root; browser tests will report a skip reason" >&2
    fi
fi
if [ -f examples/browser-client/package.json ]; then
    (cd examples/browser-client && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
fi

# pyproject's addopts leave `slow` tests out; this -m comes later and brings them back.
# An -m given to this script comes later still and wins.
exec "$VENV/bin/python" -m pytest -m "slow or not slow" "$@"
