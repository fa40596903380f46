#!/usr/bin/env bash
# Set up Banana Bot (first time, or after an update) and run it: ./run.sh [banana-bot arguments]
# With no arguments it runs the bot; e.g. ./run.sh generate "an orange cat" -o cat.png
set -euo pipefail
cd "$(dirname "$0")"
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "Setting up .venv (first run or updated dependencies)..." >&2
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e .
    rm -f .venv/.installed-* && touch "$stamp"
fi
if [ "$#" -eq 0 ]; then set -- run; fi
exec .venv/bin/banana-bot "$@"
