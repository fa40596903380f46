"""Usage reports over the `generations` log: counts, outcomes, latency percentiles, cost, users, days, and
the same apart for fast and relax (batch) requests.

One scope (the whole bot, a guild, or a member in a guild) and one period [since, until). Every query is
served by the (guild_id, created_at), (user_id, created_at) or (created_at) index, so a report reads only
its period's rows, however long the log grows (bench/bench_reports.py).
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import math
from collections.abc import AsyncIterator, Awaitable, Callable
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


#: The usage log's speeds (migration 0017): 'fast' (at once) and 'relax' (through the Batch API, half price).
SPEEDS = ("fast", "relax")


@dataclass(frozen=True)
class SpeedUsage:
    """One speed's share of a report."""

    requests: int = 0
    images: int = 0
    cost_usd: float = 0.0
    #: p50, p95, p99 in ms (to STEP_MS) of `total_ms` over the successful rows: for fast the generation time
    #: (the provider call, retries included), for relax the turnaround (the member's request to the result).
    #: Zeros without successful rows.
    total_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)


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
    #: (whole seconds, successful generations that took that long), for the latency chart.
    seconds_histogram: list[tuple[int, int]] = field(default_factory=list)
    #: Fast and relax (SPEEDS) apart. `latency` and `seconds_histogram` are of fast requests only: a relax
    #: request's total_ms is its turnaround, minutes to hours, not a generation.
    speeds: dict[str, SpeedUsage] = field(default_factory=lambda: {speed: SpeedUsage() for speed in SPEEDS})

    @property
    def relax_used(self) -> bool:
        """Whether the period has any relax request (/usage shows fast and relax apart only then)."""
        return self.speeds["relax"].requests > 0

    @property
    def success_rate(self) -> float:
        return self.images / self.requests if self.requests else 0.0

    @property
    def blocked_rate(self) -> float:
        return self.blocked / self.requests if self.requests else 0.0


async def usage_report(db: Database, scope: Scope, *, top: int = 5) -> UsageReport:
    """Four passes over the period's index entries, each grouped in SQLite, and two over its relax requests
    alone (their own small index), run side by side on their own read connections; only small results come
    back. Fast is everything less relax, so a period without relax requests costs what it did before relax."""
    where, params = scope.where()
    relax_where = f"{where} AND speed = 'relax'"  # served by migration 0018's partial index
    report = UsageReport(scope)

    async def fetch(sql: str, args: tuple[Any, ...] = params) -> list[Any]:
        async with db.reading() as conn:
            return await conn.fetchall(sql, args)

    # On PostgreSQL, migration 0016's statistics match the grouped expressions below (db.whole(...)) word for
    # word, so that the planner knows how few groups there are; change both together. The longest first: on
    # SQLite, which has four read connections, the relax queries wait for one of the shorter ones.
    generation, waiting, by_day, users, relax, relax_waiting = await asyncio.gather(
        # Latency percentiles from distributions counted in SQLite (0.1 s steps; shown to the second).
        _distributions(db, fetch, "total_ms", where),
        _distributions(db, fetch, "coalesce(queue_ms, 0)", where),
        # Outcomes and cost per UTC day (integer division: cheaper per row than date(), the same days).
        fetch(
            f"""SELECT {db.whole("created_at / 86400")} AS day, status, error_class, count(*),
                       coalesce(sum(cost_usd), 0)
                FROM generations WHERE {where} GROUP BY day, status, error_class ORDER BY day"""
        ),
        fetch(
            f"""SELECT user_id, sum(CASE WHEN status = 'ok' THEN 1 ELSE 0 END) AS images, sum(cost_usd) FROM generations
                WHERE {where} AND user_id IS NOT NULL GROUP BY user_id ORDER BY images DESC, user_id LIMIT ?""",
            (*params, top),
        ),
        # Relax requests by outcome, with their cost and (successful ones) the distribution of their total_ms.
        fetch(
            f"""SELECT status, model, size, {db.whole(f"total_ms / {STEP_MS}")} AS step, count(*),
                       coalesce(sum(cost_usd), 0)
                FROM generations WHERE {relax_where} GROUP BY status, model, size, step"""
        ),
        _distributions(db, fetch, "coalesce(queue_ms, 0)", relax_where),
    )
    days: dict[int, tuple[int, float]] = {}
    for day, status, error_class, count, cost in by_day:
        report.requests += int(count)
        report.cost_usd += float(cost)
        images, day_cost = days.get(int(day), (0, 0.0))
        if status == "ok":
            report.images += int(count)
            images += int(count)
        elif status == "blocked":
            report.blocked += int(count)
        else:
            name = str(error_class or "unknown")
            report.errors[name] = report.errors.get(name, 0) + int(count)
        days[int(day)] = (images, day_cost + float(cost))
    report.top_users = [(int(u), int(n or 0), float(c or 0)) for u, n, c in users]
    report.days = [
        (dt.date.fromordinal(_EPOCH_ORDINAL + day).isoformat(), images, cost)
        for day, (images, cost) in sorted(days.items())
    ]

    # Relax on its own; fast is the rest.
    requests, images, cost = 0, 0, 0.0
    relax_generation: dict[tuple[str, str], Distribution] = {}
    for status, model, size, step, count, step_cost in relax:
        requests, cost = requests + int(count), cost + float(step_cost)
        if status == "ok":
            images += int(count)
            if step is not None:
                relax_generation.setdefault((str(model), str(size)), []).append((int(step), int(count)))
    for counted in relax_generation.values():
        counted.sort()
    fast = {key: _less(counted, relax_generation.get(key)) for key, counted in sorted(generation.items())}
    report.speeds = {
        "fast": SpeedUsage(
            # Never below zero: a relax row logged between the two queries' snapshots is in only one of them.
            max(0, report.requests - requests),
            max(0, report.images - images),
            max(0.0, round(report.cost_usd - cost, 9)),  # not -0.00 from rounding when all were relax
            total_ms=_percentiles(_merged(list(fast.values())))[1],
        ),
        "relax": SpeedUsage(requests, images, cost, total_ms=_percentiles(_merged(list(relax_generation.values())))[1]),
    }
    # The per-model table and the chart: fast requests only (a relax request's total_ms is its turnaround).
    for (model, size), counted in fast.items():
        count, gen = _percentiles(counted)
        if count:
            wait = _percentiles(_less(waiting.get((model, size), []), relax_waiting.get((model, size))))[1]
            report.latency.append(Latency(model, size, count, gen, wait))
    report.seconds_histogram = _seconds(list(fast.values()))
    return report


_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


#: Nearest-rank percentiles: the smallest value with at least q% of the values at or below it.
QUANTILES = (50, 95, 99)
STEP_MS = 100

#: (step, count) pairs, steps of STEP_MS ascending: how many successful rows had each value.
Distribution = list[tuple[int, int]]


async def _distributions(
    db: Database, fetch: Callable[[str], Awaitable[list[Any]]], column: str, where: str
) -> dict[tuple[str, str], Distribution]:
    """(model, size) -> the distribution of `column` over the successful rows, counted in the database."""
    sql = f"""
        SELECT model, size, {db.whole(f"{column} / {STEP_MS}")} AS step, count(*) FROM generations
        WHERE {where} AND status = 'ok' AND total_ms IS NOT NULL
        GROUP BY model, size, step ORDER BY model, size, step"""
    out: dict[tuple[str, str], Distribution] = {}
    for model, size, step, count in await fetch(sql):
        out.setdefault((str(model), str(size)), []).append((int(step), int(count)))
    return out


def _percentiles(counted: Distribution) -> tuple[int, tuple[float, float, float]]:
    """(count, (p50, p95, p99) in ms, to STEP_MS) of a distribution; zeros when it is empty."""
    n = sum(count for _, count in counted)
    if n == 0:
        return 0, (0.0, 0.0, 0.0)
    values = []
    for q in QUANTILES:
        rank, seen = max(1, math.ceil(n * q / 100)), 0
        for step, count in counted:
            seen += count
            if seen >= rank:
                values.append(float(step * STEP_MS))
                break
    return n, (values[0], values[1], values[2])


def _less(counted: Distribution, part: Distribution | None) -> Distribution:
    """A distribution without the values of a part of it (all requests' less the relax ones)."""
    if not part:
        return counted
    removed = dict(part)
    return [(step, count - removed.get(step, 0)) for step, count in counted if count > removed.get(step, 0)]


def _merged(distributions: list[Distribution]) -> Distribution:
    """Several distributions as one (e.g. every model's)."""
    if len(distributions) == 1:
        return distributions[0]
    counts: dict[int, int] = {}
    for counted in distributions:
        for step, count in counted:
            counts[step] = counts.get(step, 0) + count
    return sorted(counts.items())


def _seconds(distributions: list[Distribution]) -> list[tuple[int, int]]:
    """The values counted by whole seconds, all distributions together (the chart's histogram)."""
    seconds: dict[int, int] = {}
    for counted in distributions:
        for step, count in counted:
            second = step * STEP_MS // 1000
            seconds[second] = seconds.get(second, 0) + count
    return sorted(seconds.items())


CSV_COLUMNS = (
    "id", "created_at", "guild_id", "channel_id", "user_id", "command", "provider", "model", "size",
    "aspect_ratio", "status", "error_class", "attempts", "queue_ms", "defer_ms", "total_ms", "input_tokens",
    "output_tokens", "thinking_tokens", "cost_usd", "job_id", "speed", "batch_id",
)  # fmt: skip


async def csv_rows(db: Database, scope: Scope) -> AsyncIterator[list[Any]]:
    """The period's rows for a CSV export, oldest first; `created_at` as ISO 8601 UTC. No prompts (privacy)."""
    where, params = scope.where()
    sql = f"SELECT {', '.join(CSV_COLUMNS)} FROM generations WHERE {where} ORDER BY created_at, id"
    async with db.reading() as conn:
        async for row in conn.stream(sql, params):
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
