"""Usage reports over the `generations` log: counts, outcomes, latency percentiles, cost, users, days.

One scope (the whole bot, a guild, or a member in a guild) and one period [since, until). Every query is
served by the (guild_id, created_at), (user_id, created_at) or (created_at) index, so a report reads only
its period's rows, however long the log grows (bench/bench_reports.py).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from storage.db import Database


@dataclass(frozen=True)
class Scope:
    since: float
    until: float
    guild_id: int | None = None
    user_id: int | None = None

    def where(self) -> tuple[str, tuple[Any, ...]]:
        """The WHERE clause (this module's own text) and its parameters."""
        clauses, params = ["created_at >= ?", "created_at < ?"], [self.since, self.until]
        if self.guild_id is not None:
            clauses.append("guild_id = ?")
            params.append(self.guild_id)
        if self.user_id is not None:
            clauses.append("user_id = ?")
            params.append(self.user_id)
        return " AND ".join(clauses), tuple(params)


PERIODS = ("today", "7d", "30d", "month", "all")


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """[since, until) of a named period, in UTC: 'today', '7d', '30d', 'month' (calendar), 'all'."""
    current = dt.datetime.fromtimestamp(now, dt.UTC)
    midnight = current.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "today":
        since = midnight.timestamp()
    elif period in ("7d", "30d"):
        since = now - int(period[:-1]) * 86400
    elif period == "month":
        since = midnight.replace(day=1).timestamp()
    elif period == "all":
        since = 0.0
    else:
        raise ValueError(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")
    return since, now + 1


def parse_since(text: str, now: float) -> float:
    """'7d', '12h', '30m' or an ISO date ('2026-11-01') -> a unix time (for `banana-bot report --since`)."""
    units = {"d": 86400, "h": 3600, "m": 60}
    if text[-1:] in units and text[:-1].isdigit():
        return now - int(text[:-1]) * units[text[-1]]
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        raise ValueError(f"--since {text!r}: expected e.g. 7d, 12h or 2026-11-01") from None


@dataclass(frozen=True)
class Latency:
    model: str
    size: str
    count: int
    #: Generation time (the provider call, retries included), then queue wait; p50, p95, p99 in ms.
    generation_ms: tuple[float, float, float]
    queue_ms: tuple[float, float, float]


@dataclass
class UsageReport:
    scope: Scope
    requests: int = 0
    images: int = 0
    blocked: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    latency: list[Latency] = field(default_factory=list)
    #: (user id, images, cost), most images first.
    top_users: list[tuple[int, int, float]] = field(default_factory=list)
    #: (UTC day 'YYYY-MM-DD', images, cost), oldest first, days without requests left out.
    days: list[tuple[str, int, float]] = field(default_factory=list)
    #: Every successful generation time in ms, for the latency chart.
    generation_times: list[float] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.images / self.requests if self.requests else 0.0

    @property
    def blocked_rate(self) -> float:
        return self.blocked / self.requests if self.requests else 0.0


async def usage_report(db: Database, scope: Scope, *, top: int = 5) -> UsageReport:
    where, params = scope.where()
    report = UsageReport(scope)
    conn = db.conn
    sql = f"""
        SELECT count(*), sum(status = 'ok'), sum(status = 'blocked'), coalesce(sum(cost_usd), 0)
        FROM generations WHERE {where}"""
    async with conn.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    report.requests, report.images, report.blocked = int(row[0]), int(row[1] or 0), int(row[2] or 0)
    report.cost_usd = float(row[3])
    sql = f"SELECT error_class, count(*) FROM generations WHERE {where} AND status = 'error' GROUP BY error_class"
    async with conn.execute(sql, params) as cursor:
        report.errors = {str(c or "unknown"): int(n) for c, n in await cursor.fetchall()}
    sql = f"""
        SELECT user_id, sum(status = 'ok') AS images, sum(cost_usd) FROM generations
        WHERE {where} AND user_id IS NOT NULL GROUP BY user_id ORDER BY images DESC, user_id LIMIT ?"""
    async with conn.execute(sql, (*params, top)) as cursor:
        report.top_users = [(int(u), int(n or 0), float(c or 0)) for u, n, c in await cursor.fetchall()]
    sql = f"""
        SELECT date(created_at, 'unixepoch') AS day, sum(status = 'ok'), sum(cost_usd) FROM generations
        WHERE {where} GROUP BY day ORDER BY day"""
    async with conn.execute(sql, params) as cursor:
        report.days = [(str(d), int(n or 0), float(c or 0)) for d, n, c in await cursor.fetchall()]
    # Percentiles: the period's successful rows, sorted by SQLite, read once.
    sql = f"""
        SELECT model, size, total_ms, coalesce(queue_ms, 0) FROM generations
        WHERE {where} AND status = 'ok' AND total_ms IS NOT NULL"""
    groups: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    async with conn.execute(sql, params) as cursor:
        for model, size, total, queued in await cursor.fetchall():
            times, waits = groups.setdefault((str(model), str(size)), ([], []))
            times.append(float(total))
            waits.append(float(queued))
    for (model, size), (times, waits) in sorted(groups.items()):
        report.latency.append(Latency(model, size, len(times), _percentiles(times), _percentiles(waits)))
        report.generation_times.extend(times)
    return report


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        # Nearest rank: the smallest value with at least q% of the values at or below it.
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]

    return at(50), at(95), at(99)


CSV_COLUMNS = (
    "id", "created_at", "guild_id", "channel_id", "user_id", "command", "provider", "model", "size",
    "aspect_ratio", "status", "error_class", "attempts", "queue_ms", "defer_ms", "total_ms", "input_tokens",
    "output_tokens", "thinking_tokens", "cost_usd", "job_id",
)  # fmt: skip


async def csv_rows(db: Database, scope: Scope) -> AsyncIterator[list[Any]]:
    """The period's rows for a CSV export, oldest first; `created_at` as ISO 8601 UTC. No prompts (privacy)."""
    where, params = scope.where()
    sql = f"SELECT {', '.join(CSV_COLUMNS)} FROM generations WHERE {where} ORDER BY created_at, id"
    async with db.conn.execute(sql, params) as cursor:
        async for row in cursor:
            values = list(row)
            values[1] = dt.datetime.fromtimestamp(values[1], dt.UTC).isoformat(timespec="seconds")
            yield values


async def csv_text(db: Database, scope: Scope) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    async for row in csv_rows(db, scope):
        writer.writerow(row)
    return out.getvalue()
