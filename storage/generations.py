"""The usage log: one `generations` row per image request, whatever its outcome."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from storage.db import Database


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationRow:
    """One row of the `generations` table; field names and order match the columns.

    `id` is None until the row is inserted. Who/what/status must always be given;
    everything else has a default so callers only fill in what they measured.
    """

    id: int | None = None
    created_at: float = field(default_factory=time.time)  # unix seconds, UTC
    # who
    guild_id: int | None
    channel_id: int | None
    user_id: int | None
    command: str  # 'cli', 'imagine', ...
    # what
    provider: str
    model: str
    size: str  # '1K', '2K', ...
    aspect_ratio: str
    thinking: str | None
    reference_count: int
    prompt: str
    # outcome
    status: str  # 'ok', 'blocked' or 'error'
    error_class: str | None = None
    attempts: int = 1
    # timings in milliseconds, None when unknown
    queue_ms: float | None = None
    connect_ms: float | None = None
    ttfb_ms: float | None = None
    download_ms: float | None = None
    decode_ms: float | None = None
    total_ms: float | None = None
    # usage
    input_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    image_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    # result
    image_key: str | None = None
    width: int | None = None
    height: int | None = None
    # the Discord job (migration 0002); None from the CLI
    job_id: str | None = None
    defer_ms: float | None = None  # interaction arrival -> deferral


# The column list is derived from the dataclass so the two can't drift apart
# (tests/test_storage.py checks it against the table). These are our own
# identifiers, never user input; all values go through ? parameters.
_COLUMNS = tuple(f.name for f in dataclasses.fields(GenerationRow))
_COLUMN_LIST = ", ".join(_COLUMNS)

_INSERT_SQL = f"INSERT INTO generations ({_COLUMN_LIST}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
_GET_SQL = f"SELECT {_COLUMN_LIST} FROM generations WHERE id = ?"
# Served by the (model, size, created_at) index, walked backwards.
RECENT_LATENCIES_SQL = """
    SELECT total_ms FROM generations
    WHERE model = ? AND size = ? AND status = 'ok' AND total_ms IS NOT NULL
    ORDER BY created_at DESC, id DESC
    LIMIT ?
"""


async def insert_generation(db: Database, row: GenerationRow) -> int:
    """Insert `row` and return its id (assigned by SQLite when `row.id` is None)."""
    values = [getattr(row, name) for name in _COLUMNS]
    async with db.transaction() as conn, conn.execute(_INSERT_SQL, values) as cursor:
        row_id = cursor.lastrowid
    assert row_id is not None
    return row_id


async def get_generation(db: Database, id: int) -> GenerationRow | None:
    async with db.conn.execute(_GET_SQL, (id,)) as cursor:
        found = await cursor.fetchone()
    if found is None:
        return None
    return GenerationRow(**dict(zip(_COLUMNS, found, strict=True)))


async def recent_latencies_ms(db: Database, *, model: str, size: str, limit: int = 50) -> list[float]:
    """total_ms of the newest successful requests for this model and size, newest first."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")  # SQLite treats LIMIT -1 as "no limit"
    async with db.conn.execute(RECENT_LATENCIES_SQL, (model, size, limit)) as cursor:
        rows = await cursor.fetchall()
    return [float(r[0]) for r in rows]


async def count_generations(db: Database) -> int:
    async with db.conn.execute("SELECT count(*) FROM generations") as cursor:
        found = await cursor.fetchone()
    assert found is not None
    return int(found[0])
