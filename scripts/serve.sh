#!/usr/bin/env bash
# Set everything up and run `apiary serve` on the offline demo model with embedded SQLite storage.
# Extra arguments go to `apiary serve` (e.g. --port 9000, --model openai:gpt-4o-mini).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/apiary serve "$@"
