"""The usage log: one `generations` row per image request, whatever its outcome."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

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
    # relax mode (migration 0017): 'fast' or 'relax' (batch price), and the batch
    speed: str = "fast"
    batch_id: str | None = None


# The column list is derived from the dataclass so the two can't drift apart
# (tests/test_storage.py checks it against the table). These are our own
# identifiers, never user input; all values go through ? parameters.
_COLUMNS = tuple(f.name for f in dataclasses.fields(GenerationRow))
_COLUMN_LIST = ", ".join(_COLUMNS)

_INSERT_SQL = f"INSERT INTO generations ({_COLUMN_LIST}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
_INSERT_RETURNING_SQL = (
    f"INSERT INTO generations ({', '.join(c for c in _COLUMNS if c != 'id')}) "
    f"VALUES ({', '.join('?' for c in _COLUMNS if c != 'id')}) RETURNING id"
)
_GET_SQL = f"SELECT {_COLUMN_LIST} FROM generations WHERE id = ?"
# Served by the (model, size, created_at) index, walked backwards.
RECENT_LATENCIES_SQL = """
    SELECT total_ms FROM generations
    WHERE model = ? AND size = ? AND status = 'ok' AND total_ms IS NOT NULL
    ORDER BY created_at DESC, id DESC
    LIMIT ?
"""


async def insert_generation(db: Database, row: GenerationRow) -> int:
    """Insert `row` and return its id (assigned by SQLite when `row.id` is None).

    Rows logged while another insert's transaction is running are written together in the next one (a
    group commit): at a thousand rows a second the bot then commits tens of times a second, not a thousand,
    and the event loop barely notices (bench/bench_reports.py)."""
    committer = _committers.get(db)
    if committer is None:
        committer = _committers[db] = _GroupCommit(db)
    return await committer.insert([getattr(row, name) for name in _COLUMNS])


class _GroupCommit:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.pending: list[tuple[list[Any], asyncio.Future[int]]] = []
        self.flushing: asyncio.Task[None] | None = None

    async def insert(self, values: list[Any]) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending.append((values, future))
        if self.flushing is None or self.flushing.done():
            self.flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            try:
                ids = await self._write([values for values, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), row_id in zip(batch, ids, strict=True):
                if not future.done():
                    future.set_result(row_id)

    async def _write(self, rows: list[list[Any]]) -> list[int]:
        id_index = _COLUMNS.index("id")
        if self.db.dialect == "postgresql":
            return await self._write_returning_ids(rows)
        async with self.db.transaction() as conn:
            # The write lock is held (BEGIN IMMEDIATE): nobody else can take ids between here and the insert.
            found = await conn.fetchone("SELECT coalesce(max(id), 0) FROM generations")
            next_id = int(found[0]) + 1 if found else 1
            ids = []
            for values in rows:
                if values[id_index] is None:
                    values[id_index] = next_id
                next_id = max(next_id, int(values[id_index])) + 1
                ids.append(int(values[id_index]))
            await conn.executemany(_INSERT_SQL, rows)
        return ids

    async def _write_returning_ids(self, rows: list[list[Any]]) -> list[int]:
        """Several processes log at once: the identity column hands out the ids."""
        id_index = _COLUMNS.index("id")
        ids = []
        async with self.db.transaction() as conn:
            for values in rows:
                if values[id_index] is None:
                    without_id = values[:id_index] + values[id_index + 1 :]
                    ids.append(int(await conn.fetchval(_INSERT_RETURNING_SQL, without_id)))
                else:
                    await conn.execute(_INSERT_SQL, values)
                    ids.append(int(values[id_index]))
        return ids


_committers: weakref.WeakKeyDictionary[Database, _GroupCommit] = weakref.WeakKeyDictionary()


async def get_generation(db: Database, id: int) -> GenerationRow | None:
    found = await db.fetchone(_GET_SQL, (id,))
    if found is None:
        return None
    return GenerationRow(**dict(zip(_COLUMNS, found, strict=True)))


async def recent_latencies_ms(db: Database, *, model: str, size: str, limit: int = 50) -> list[float]:
    """total_ms of the newest successful requests for this model and size, newest first."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")  # SQLite treats LIMIT -1 as "no limit"
    rows = await db.fetchall(RECENT_LATENCIES_SQL, (model, size, limit))
    return [float(r[0]) for r in rows]


async def count_generations(db: Database) -> int:
    found = await db.fetchone("SELECT count(*) FROM generations")
    assert found is not None
    return int(found[0])
