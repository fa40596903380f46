"""How the code is laid out: dependencies point one way, cogs -> ui -> jobs -> core, storage and media.

The folder a module sits in says what it may import, so a newcomer can tell where a change belongs and a
change can't quietly tie the generation core or the job system to Discord.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: A layer -> the layers its modules may import (besides their own and third-party libraries).
ALLOWED: dict[str, set[str]] = {
    # Metrics and log formatting, which anything may use; it uses nothing of the bot's.
    "bot.observability": set(),
    # The generation service keeps every image and usage row it makes.
    "bot.core": {"storage", "bot.observability"},
    "storage": set(),
    "bot.media": set(),
    "bot.jobs": {"bot.core", "storage", "bot.media", "bot.observability"},
    # Settings and the message catalogue are read by every Discord-facing part.
    "bot.config": {"bot.core", "bot.jobs"},
    "bot.i18n": set(),
    "bot.runtime": {"bot.config", "bot.core", "storage"},
    # `banana-bot health`: the database and the heartbeat a running process writes.
    "bot.health": {"bot.config", "storage"},
    "bot.ui": {"bot.config", "bot.i18n", "bot.jobs", "bot.core", "storage", "bot.media"},
    "cogs": {"bot.ui", "bot.config", "bot.i18n", "bot.jobs", "bot.core", "storage", "bot.media"},
    # The wiring and the entry point see everything.
    "bot.client": {
        "cogs",
        "bot.ui",
        "bot.config",
        "bot.runtime",
        "bot.jobs",
        "bot.core",
        "storage",
        "bot.media",
        "bot.observability",
        "bot.health",
    },
    # The command line's files and folders (can one be written, an OS error in words).
    "bot.local_files": {"bot.config"},
    # `banana-bot batch`: provider batches from a file, through the runtime.
    "bot.batch_cli": {"bot.local_files", "bot.config", "bot.runtime", "bot.core", "storage"},
    "bot.cli": {
        "bot.client",
        "bot.config",
        "bot.runtime",
        "bot.core",
        "storage",
        "bot.observability",
        "bot.health",
        "bot.batch_cli",
        "bot.local_files",
    },
}
WITHOUT_DISCORD = ("bot.core", "bot.jobs", "bot.media", "storage", "bot.observability", "bot.health")


def layer_of(module: str) -> str | None:
    """The longest layer name that `module` is, or sits under."""
    found = [layer for layer in ALLOWED if module == layer or module.startswith(layer + ".")]
    return max(found, key=len) if found else None


def project_modules() -> dict[str, Path]:
    modules = {}
    for folder in ("bot", "cogs", "storage"):
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if name != "bot":  # the namespace of the layers below, empty itself
                modules[name] = path
    return modules


def imports_of(name: str, path: Path) -> set[str]:
    """Every project module `path` imports, at any level of the file (TYPE_CHECKING blocks included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in ("bot", "cogs", "storage")}


def layer_edges() -> dict[str, set[str]]:
    """Layer -> the other layers its modules import."""
    modules = project_modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        source = layer_of(name)
        assert source is not None, f"{name} sits in no layer: add its folder to ALLOWED in {__file__}"
        for imported in imports_of(name, path):
            target = layer_of(imported)
            if target is not None and target != source:
                edges[source].add(target)
    return edges


def test_every_layer_imports_only_the_layers_below_it() -> None:
    edges = layer_edges()
    assert "bot.ui" in edges and "bot.jobs" in edges["bot.ui"], edges  # the walk saw real imports
    wrong = {
        source: sorted(targets - ALLOWED[source]) for source, targets in edges.items() if targets - ALLOWED[source]
    }
    assert not wrong, f"imports against the direction cogs -> ui -> jobs -> core/storage/media: {wrong}"


def test_nothing_imports_the_wiring_but_the_entry_point() -> None:
    importers = sorted(
        name for name, path in project_modules().items() if name != "bot.cli" and "bot.client" in imports_of(name, path)
    )
    assert importers == [], f"{importers} import bot.client; hand them what they need from the wiring instead"


def test_the_layers_have_no_import_cycle() -> None:
    edges = layer_edges()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(layer: str) -> None:
        assert layer not in visiting, f"import cycle between folders: {' -> '.join([*visiting, layer])}"
        if layer in done:
            return
        visiting.append(layer)
        for target in sorted(edges.get(layer, ())):
            visit(target)
        visiting.pop()
        done.add(layer)

    for layer in sorted(edges):
        visit(layer)


def test_the_checks_catch_a_wrong_import(tmp_path: Path) -> None:
    """The import parser resolves relative imports, so `from ..ui import x` in bot/jobs is seen."""
    module = tmp_path / "runner.py"
    module.write_text("from ..ui import surfaces\nfrom . import queue\nimport discord\n")
    assert imports_of("bot.jobs.runner", module) == {"bot.ui", "bot.ui.surfaces", "bot.jobs", "bot.jobs.queue"}
    assert layer_of("bot.ui.surfaces") == "bot.ui" and layer_of("bot.jobs") == "bot.jobs"


def test_core_jobs_media_and_storage_import_nothing_from_discord() -> None:
    # A fresh interpreter: in this one, other tests (and conftest) have long since imported discord.
    script = textwrap.dedent(
        f"""
        import importlib
        import pkgutil
        import sys

        def unimportable(name):
            raise ImportError(f"{{name}} could not be imported")  # the default would skip it in silence

        names = []
        for package in {WITHOUT_DISCORD!r}:
            module = importlib.import_module(package)
            names.append(package)
            if hasattr(module, "__path__"):  # a package, not a single module
                names += [m.name for m in pkgutil.walk_packages(module.__path__, package + ".", onerror=unimportable)]
        for name in names:
            importlib.import_module(name)
        for expected in (
            "bot.core.providers.gemini",
            "bot.jobs.runner",
            "bot.media.uploads",
            "storage.jobs",
            "bot.observability.metrics",
        ):
            assert expected in names, names  # the walk reached every package
        leaked = sorted(m for m in sys.modules if m == "discord" or m.startswith("discord."))
        assert not leaked, f"pulled in {{leaked}}"
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
