#!/usr/bin/env bash
# Set up Banana Bot (first time, or after an update) and run it: ./run.sh [banana-bot arguments]
# With no arguments it runs the bot; e.g. ./run.sh generate "an orange cat" -o cat.png
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
ensure_venv
if [ "$#" -eq 0 ]; then set -- run; fi
exec .venv/bin/banana-bot "$@"
