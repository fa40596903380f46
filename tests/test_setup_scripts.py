"""./run.sh and ./test.sh share one .venv, installed once and again only when pyproject.toml changes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Stands in for python3 and for the venv's python: records what it was asked, makes the venv's python.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
if [ "$1 $2" = "-m venv" ]; then
    mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && cp "$0" "$3/bin/banana-bot"
fi
"""


def project_copy(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    for name in ("run.sh", "test.sh", "pyproject.toml"):
        shutil.copy2(ROOT / name, root / name)
    shutil.copytree(ROOT / "scripts", root / "scripts")
    return root


def run(root: Path, script: str, env: dict[str, str]) -> None:
    subprocess.run([f"./{script}"], cwd=root, env=env, check=True, timeout=30, capture_output=True)


def test_run_and_test_share_one_install_until_pyproject_changes(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls)}

    def installs() -> int:
        return sum("install --quiet -e .[dev]" in line for line in calls.read_text().splitlines())

    run(root, "test.sh", env)
    assert installs() == 1
    run(root, "run.sh", env)  # the development install satisfies run: nothing is installed again
    run(root, "test.sh", env)
    run(root, "run.sh", env)
    assert installs() == 1
    with (root / "pyproject.toml").open("a") as f:
        f.write("\n# a changed dependency\n")
    run(root, "run.sh", env)
    assert installs() == 2
    run(root, "test.sh", env)
    assert installs() == 2
    assert len(list((root / ".venv").glob(".installed-*"))) == 1
