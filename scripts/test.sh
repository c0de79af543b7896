#!/usr/bin/env bash
# Set everything up (venv, Python deps, Debian's chromium for the browser tests) and run the whole suite:
# lint, then every test (unit, storage, HTTP, end-to-end, browser). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
source scripts/lib.sh
apt_install chromium postgresql
.venv/bin/ruff check src tests benchmarks
status=0
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" || status=$?
if [ "$status" -eq 5 ]; then echo "pytest collected no tests" >&2; fi
exit "$status"
