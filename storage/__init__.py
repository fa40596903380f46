"""Persistence for Banana Bot: the SQLite usage log and the on-disk image store.

- `storage.db`: `Database`, the connection and its schema migrations.
- `storage.generations`: the usage log (`GenerationRow` and its queries).
- `storage.images`: `ImageStore`, content-addressed image files.

All SQL in the project lives in this package.
"""

from __future__ import annotations

from storage.db import Database, MigrationError
from storage.generations import (
    GenerationRow,
    count_generations,
    get_generation,
    insert_generation,
    recent_latencies_ms,
)
from storage.images import ImageStore

__all__ = [
    "Database",
    "GenerationRow",
    "ImageStore",
    "MigrationError",
    "count_generations",
    "get_generation",
    "insert_generation",
    "recent_latencies_ms",
]
