#!/usr/bin/env bash
# Set everything up (venv, Python deps, Debian's chromium for the browser tests) and run the whole suite:
# lint, then every test (unit, storage, HTTP, end-to-end, browser). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
source scripts/lib.sh
apt_install chromium postgresql
.venv/bin/ruff check src tests benchmarks
# The browser tests drive Playwright's sync API, which leaves an event loop behind in its process,
# so they run in a pytest process of their own after everything else.
status=0
.venv/bin/python -m pytest -q -p no:cacheprovider -m "not browser" "$@" || status=$?
browser=0
.venv/bin/python -m pytest -q -p no:cacheprovider -m browser "$@" || browser=$?
[ "$status" -eq 0 ] || { echo "tests failed (pytest exit $status)" >&2; exit "$status"; }
[ "$browser" -eq 0 ] || { echo "browser tests failed (pytest exit $browser)" >&2; exit "$browser"; }
