"""How the code is laid out: the generation core stands on its own, without Discord."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generation_core_imports_nothing_from_discord() -> None:
    # A fresh interpreter: in this one, other tests (and conftest) have long since imported discord.
    script = textwrap.dedent(
        """
        import importlib
        import pkgutil
        import sys

        import bot.core

        def unimportable(name):
            raise ImportError(f"{name} could not be imported")  # the default would skip it in silence

        names = ["bot.core"]
        names += [m.name for m in pkgutil.walk_packages(bot.core.__path__, "bot.core.", onerror=unimportable)]
        for name in names:
            importlib.import_module(name)
        assert "bot.core.providers.gemini" in names, names  # the walk reached the subpackages
        leaked = sorted(m for m in sys.modules if m == "discord" or m.startswith("discord."))
        assert not leaked, f"bot.core pulled in {leaked}"
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
