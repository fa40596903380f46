#!/usr/bin/env bash
# Set up the development environment (first time, or after an update) and run the tests: ./test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")"
stamp=".venv/.installed-dev-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "Setting up .venv with the development tools..." >&2
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[dev]"
    rm -f .venv/.installed-* && touch "$stamp"
fi
exec .venv/bin/python -m pytest "$@"
