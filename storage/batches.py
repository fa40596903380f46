"""Provider batches (relax mode and `banana-bot batch`), the relax jobs waiting for one, and named leases.

A relax job waits as 'queued' with speed 'relax'. Taking it into a batch sets it 'running' with the batch's
id, in the same transaction that records the batch as 'sending' (before the provider is called: a batch
whose create call was cut off is found again by its id, sent as its display name). A batched job is finished
by whoever delivers its batch, not through a lease: see `finish_batched`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storage.db import Database, Queryable
from storage.jobs import Job, columns_and_values, jobs_where

#: Provider states after which a batch changes no more.
FINAL_STATES = ("succeeded", "failed", "cancelled", "expired")


@dataclass(slots=True, kw_only=True)
class Batch:
    id: str
    name: str | None = None
    origin: str  # 'discord' or 'cli'
    provider: str
    model: str
    key_id: str
    state: str
    request_count: int
    input_bytes: int = 0
    input_kind: str = "inline"
    created_at: float
    sent_at: float | None = None
    ended_at: float | None = None
    delivered_at: float | None = None
    next_poll_at: float | None = None
    polls: int = 0
    error: str | None = None
    #: CLI batches: each line as submitted ({"key", "prompt", "size", ...}).
    items: list[dict[str, Any]] | None = None


_FIELDS = tuple(f.name for f in dataclasses.fields(Batch))
_COLUMNS = tuple("items_json" if name == "items" else name for name in _FIELDS)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM batches"


def _to_row(batch: Batch) -> list[Any]:
    return [
        json.dumps(batch.items) if name == "items" and batch.items is not None else getattr(batch, name)
        for name in _FIELDS
    ]


def _from_row(row: Any) -> Batch:
    values = dict(zip(_FIELDS, row, strict=True))
    if values["items"] is not None:
        values["items"] = json.loads(values["items"])
    return Batch(**values)


async def insert_batch(db: Queryable, batch: Batch) -> None:
    marks = ", ".join("?" for _ in _COLUMNS)
    await db.execute(f"INSERT INTO batches ({', '.join(_COLUMNS)}) VALUES ({marks})", _to_row(batch))


async def get_batch(db: Queryable, batch_id: str) -> Batch | None:
    """By our id, or by the provider's name ('batches/...')."""
    row = await db.fetchone(f"{_SELECT} WHERE id = ? OR name = ?", (batch_id, batch_id))
    return _from_row(row) if row else None


async def update_batch(db: Queryable, batch_id: str, **changes: Any) -> None:
    unknown = set(changes) - set(_FIELDS)
    if unknown:
        raise ValueError(f"unknown batch fields: {sorted(unknown)}")
    names = ["items_json" if name == "items" else name for name in changes]
    values = [json.dumps(v) if name == "items" and v is not None else v for name, v in changes.items()]
    await db.execute(f"UPDATE batches SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?", [*values, batch_id])


async def claim_delivery(db: Queryable, batch_id: str, now: float) -> bool:
    """Mark a batch delivered, if nobody did yet: True for the one caller that then records its results."""
    sql = "UPDATE batches SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL"
    return await db.execute(sql, (now, batch_id)) > 0


async def open_batches(db: Queryable, origin: str | None = None) -> list[Batch]:
    """Batches not yet delivered, those due for a look first."""
    where = "delivered_at IS NULL" + (" AND origin = ?" if origin else "")
    rows = await db.fetchall(f"{_SELECT} WHERE {where} ORDER BY next_poll_at, created_at", (origin,) if origin else ())
    return [_from_row(r) for r in rows]


async def recent_batches(db: Queryable, *, origin: str | None = None, limit: int = 50) -> list[Batch]:
    where = " WHERE origin = ?" if origin else ""
    rows = await db.fetchall(
        f"{_SELECT}{where} ORDER BY created_at DESC LIMIT ?", (origin, limit) if origin else (limit,)
    )
    return [_from_row(r) for r in rows]


# --- relax jobs -----------------------------------------------------------------------------------------------
#: A waiting relax job that no process holds (the admitting one holds it until its status is shown).
_FREE_RELAX = (
    "status = 'queued' AND speed = 'relax' AND batch_id IS NULL AND (lease_owner IS NULL OR lease_expires < ?)"
)


async def waiting_relax_jobs(db: Queryable, now: float) -> list[Job]:
    """Relax jobs waiting for a batch that may go in one now, oldest first."""
    return await jobs_where(db, f"{_FREE_RELAX} ORDER BY created_at, id", (now,))


async def relax_place(db: Queryable, job_id: str) -> int | None:
    """Where a relax job waits among those not yet sent (1 = next), or None once it is sent or over."""
    row = await db.fetchone(
        "SELECT (SELECT count(*) FROM jobs AS o WHERE o.status = 'queued' AND o.speed = 'relax' "
        "AND o.batch_id IS NULL AND (o.created_at < j.created_at OR (o.created_at = j.created_at AND o.id <= j.id))) "
        "FROM jobs AS j WHERE j.id = ? AND j.status = 'queued' AND j.speed = 'relax' AND j.batch_id IS NULL",
        (job_id,),
    )
    return int(row[0]) if row else None


async def take_into_batch(db: Database, batch: Batch, job_ids: Sequence[str], now: float) -> list[str]:
    """Record `batch` as being sent, with those of `job_ids` still waiting (a member may have cancelled one
    meanwhile). Returns the ids taken; none taken records nothing."""
    async with db.transaction() as tx:
        taken: list[str] = []
        for job_id in job_ids:
            changed = await tx.execute(
                "UPDATE jobs SET status = 'running', batch_id = ?, started_at = ?, lease_owner = NULL, "
                "lease_expires = NULL, queue_ms = (? - created_at) * 1000, attempts_started = attempts_started + 1 "
                f"WHERE id = ? AND {_FREE_RELAX}",
                (batch.id, now, now, job_id, now),
            )
            if changed:
                taken.append(job_id)
        if taken:
            batch.request_count = len(taken)
            await insert_batch(tx, batch)
        return taken


async def unsend(db: Database, batch_id: str, now: float) -> int:
    """The batch was never created at the provider: its jobs wait again (those whose member cancelled the
    delivery meanwhile are cancelled, free), and the batch is forgotten. How many wait again."""
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?, reserved_usd = 0 "
            "WHERE batch_id = ? AND status = 'running' AND delivery_cancelled = 1",
            (now, batch_id),
        )
        back = await tx.execute(
            "UPDATE jobs SET status = 'queued', batch_id = NULL, started_at = NULL "
            "WHERE batch_id = ? AND status = 'running'",
            (batch_id,),
        )
        await tx.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
        return back


async def batch_jobs(db: Queryable, batch_id: str) -> list[Job]:
    return await jobs_where(db, "batch_id = ? ORDER BY created_at, id", (batch_id,))


@dataclass(frozen=True, slots=True)
class Finished:
    """A batched job just finished here; whether its member had cancelled its delivery by then."""

    delivery_cancelled: bool


async def finish_batched(db: Database, job_id: str, batch_id: str, changes: dict[str, Any]) -> Finished | None:
    """Record how a batched job ended, unless it already has (a delivery cut off by a restart is taken up again,
    and only one batcher finishes a job). None if it had."""
    columns = {**changes, "reserved_usd": 0.0}
    names, values = columns_and_values(columns)
    assignments = ", ".join(f"{name} = ?" for name in names)
    sql = (
        f"UPDATE jobs SET {assignments} WHERE id = ? AND status = 'running' AND batch_id = ? "
        "RETURNING delivery_cancelled"
    )
    async with db.transaction() as tx:
        row = await tx.fetchone(sql, [*values, job_id, batch_id])
    return Finished(bool(row[0])) if row is not None else None


async def cancel_delivery(db: Database, job_id: str) -> bool:
    """The member doesn't want a relax job whose batch is already sent: it is paid for but won't be posted.
    False if it isn't in a sent batch (any more)."""
    sql = "UPDATE jobs SET delivery_cancelled = 1 WHERE id = ? AND status = 'running' AND batch_id IS NOT NULL"
    return await db.execute(sql, (job_id,)) > 0


async def relax_turnaround_ms(db: Queryable, *, limit: int = 50) -> list[float]:
    """How long recent relax images took from the member's request to the result (newest first)."""
    rows = await db.fetchall(
        "SELECT total_ms FROM generations WHERE speed = 'relax' AND status = 'ok' AND total_ms IS NOT NULL "
        "ORDER BY created_at DESC LIMIT ?",
        (limit,),
    )
    return [float(r[0]) for r in rows]


# --- leases -------------------------------------------------------------------------------------------------
async def take_lease(db: Database, name: str, owner: str, now: float, seconds: float) -> bool:
    """Hold the role `name` until `now + seconds` if nobody else holds it (or theirs ran out); True if held."""
    changed = await db.execute(
        "INSERT INTO leases (name, owner, expires) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
        "SET owner = excluded.owner, expires = excluded.expires "
        "WHERE leases.owner = excluded.owner OR leases.expires < ?",
        (name, owner, now + seconds, now),
    )
    return changed > 0


async def drop_lease(db: Database, name: str, owner: str) -> None:
    await db.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))


async def clear_lease(db: Database, name: str) -> None:
    """Forget whoever held `name` (SQLite at start: a previous run of the only process)."""
    await db.execute("DELETE FROM leases WHERE name = ?", (name,))
