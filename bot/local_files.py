"""The command line's local files and folders: whether a folder can be written, and an OS error in words."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Settings


def check_writable(directory: Path) -> None:
    """Raise OSError unless a file can be created in `directory` (mkdir is happy with one nobody may write
    into; only creating a file tells)."""
    tempfile.TemporaryFile(dir=directory).close()


def data_dir_error(settings: Settings, exc: OSError | sqlite3.Error) -> str:
    return f"error: can't use the data directory {settings.data_dir} (BANANA_DATA_DIR): {os_reason(exc)}."


def os_reason(exc: OSError | sqlite3.Error) -> str:
    """What went wrong, in words an operator can act on."""
    if isinstance(exc, FileExistsError) and exc.filename:
        # What mkdir(exist_ok=True) raises when a file sits where a directory has to go.
        return f"{exc.filename} is a file, not a directory"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
