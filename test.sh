#!/usr/bin/env bash
# Set up the development environment (first time, or after an update) and run the tests: ./test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
ensure_venv
exec .venv/bin/python -m pytest "$@"
