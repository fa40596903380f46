"""Grids: four variations shown as one 2x2 preview (see migration 0003)."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

from storage.db import Database
from storage.jobs import Job, JobRequest, jobs_where, new_job_id, request_from_json, request_to_json


@dataclass(slots=True, kw_only=True)
class Grid:
    id: str = field(default_factory=new_job_id)
    created_at: float = field(default_factory=time.time)
    guild_id: int | None
    channel_id: int
    user_id: int
    #: 'tiles': four jobs, one per tile; 'sliced': one job asked for a 2x2 image, cut into four.
    mode: str
    request: JobRequest
    message_id: int | None = None
    thread_id: int | None = None
    #: Image-store keys of tiles 1-4; None where a tile failed.
    tile_keys: list[str | None] | None = None


_JSON_FIELDS = {"request": "request_json", "tile_keys": "tile_keys_json"}
_FIELDS = tuple(f.name for f in dataclasses.fields(Grid))
_COLUMNS = tuple(_JSON_FIELDS.get(name, name) for name in _FIELDS)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM grids"


def _encode(name: str, value: Any) -> Any:
    if value is None or name not in _JSON_FIELDS:
        return value
    return json.dumps(request_to_json(value) if name == "request" else value)


def _from_row(row: Any) -> Grid:
    values = dict(zip(_FIELDS, row, strict=True))
    for name in _JSON_FIELDS:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    values["request"] = request_from_json(values["request"])
    return Grid(**values)


async def insert_grid(db: Database, grid: Grid) -> None:
    sql = f"INSERT INTO grids ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
    async with db.transaction() as conn:
        await conn.execute(sql, [_encode(name, getattr(grid, name)) for name in _FIELDS])


async def update_grid(db: Database, grid_id: str, **changes: Any) -> None:
    unknown = set(changes) - set(_FIELDS)
    if unknown:
        raise ValueError(f"unknown grid fields: {sorted(unknown)}")
    assignments = ", ".join(f"{_JSON_FIELDS.get(name, name)} = ?" for name in changes)
    async with db.transaction() as conn:
        await conn.execute(
            f"UPDATE grids SET {assignments} WHERE id = ?", [*(_encode(n, v) for n, v in changes.items()), grid_id]
        )


async def get_grid(db: Database, grid_id: str) -> Grid | None:
    row = await db.fetchone(f"{_SELECT} WHERE id = ?", (grid_id,))
    return _from_row(row) if row else None


async def grid_jobs(db: Database, grid_id: str) -> list[Job]:
    """The grid's jobs in tile order (one job in sliced mode)."""
    return await jobs_where(db, "grid_id = ? ORDER BY tile, created_at", (grid_id,))
