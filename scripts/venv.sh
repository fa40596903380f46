# One .venv for ./run.sh and ./test.sh: the development install (the bot plus its test tools), made again
# only when pyproject.toml changes. Sourced by both scripts.
ensure_venv() {
    local stamp
    stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ -f "$stamp" ]; then
        return
    fi
    echo "Setting up .venv (first run or updated dependencies)..." >&2
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[dev]"
    rm -f .venv/.installed-* && touch "$stamp"
}
