"""Reports stay instant as the log grows, on SQLite and on PostgreSQL, and logging never stalls the bot.

    .venv/bin/python -m bench.bench_reports                    # ~1.5 minutes, both (building the logs is most of it)
    .venv/bin/python -m bench.bench_reports --backend sqlite   # one backend only (sqlite or postgresql)

1. A usage log of 1,000,000 rows over 90 days: 20 guilds, the busiest with 30% of all rows (so its last
   30 days hold ~100,000), 2,000 members, 90% ok / 3% blocked / 7% errors, 10% of them relax requests (half
   price, minutes to an hour of turnaround; --relax-share 0 for the log as it was before relax). The same
   rows (one generator, one seed) go into a WAL SQLite file (plain sqlite3, big transactions) and into a
   fresh migrated database on a throwaway PostgreSQL (tests/postgres.py; asyncpg COPY, then VACUUM
   (ANALYZE)). Building them is setup, not measured.
2. Time of /usage's queries (storage.reports.usage_report) for that guild's last 30 days, and for one
   member's; median of 10, the backends taking turns, each alternating with the same queries on one
   connection for comparison. Target: under 300 ms on each backend.
3. With both backends: the reports must give the same figures (requests, images, blocked, errors, cost to the
   cent, latency percentiles, top users, days, the chart's histogram, fast and relax apart); a mismatch is
   printed and the benchmark exits 1.
4. Logging 1,000 rows a second for 5 s through storage.generations.insert_generation (as the bot does, one task
   a row; the group commit writes what queued up together) while a task in the same event loop sleeps 10 ms
   at a time and records how late it wakes. Target: lag under 20 ms, on each backend.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.db import Database, Params, Row
from storage.generations import GenerationRow, insert_generation
from storage.reports import Scope, UsageReport, usage_report

ROWS, DAYS, GUILDS, USERS = 1_000_000, 90, 20, 2_000
BUSIEST_SHARE = 0.30
RELAX_SHARE = 0.10
MODELS = ("gemini-3-pro-image-preview", "gemini-3.1-flash-image-preview")
SIZES = ("1K", "2K", "4K")
TARGET_MS, LAG_TARGET_MS = 300, 20
BACKENDS = ("sqlite", "postgresql")
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
COLUMNS = (
    "created_at", "guild_id", "channel_id", "user_id", "command", "provider", "model", "size", "aspect_ratio",
    "reference_count", "prompt", "status", "error_class", "attempts", "queue_ms", "total_ms", "cost_usd",
    "speed", "batch_id",
)  # fmt: skip


def synthetic_rows(now: float, rows: int, relax_share: float = RELAX_SHARE) -> Iterator[tuple[Any, ...]]:
    """The synthetic log, row by row in COLUMNS' order: the same rows for the same `now` on every call. Which
    rows are relax comes from a generator of its own, so that the rest of each row is what it was before
    relax: with relax_share 0, the log of earlier runs."""
    rng, relax_rng = random.Random(7), random.Random(17)
    for _ in range(rows):
        guild = 0 if rng.random() < BUSIEST_SHARE else rng.randrange(1, GUILDS)
        roll = rng.random()
        status = "ok" if roll < 0.90 else "blocked" if roll < 0.93 else "error"
        total = rng.lognormvariate(10.3, 0.5) if status == "ok" else None
        row = (
            now - rng.random() * DAYS * 86400, 1000 + guild, 1, rng.randrange(USERS), "imagine", "gemini",
            rng.choice(MODELS), rng.choice(SIZES), "1:1", 0, "a prompt", status,
            None if status == "ok" else ("blocked" if status == "blocked" else "timeout"), 1,
            rng.expovariate(1 / 2000), total, 0.134 if status == "ok" else 0.0,
        )  # fmt: skip
        if relax_rng.random() < relax_share:
            # Turnaround around 15 minutes (a few to an hour and more), at the batch price; ~50 requests a batch.
            turnaround = relax_rng.lognormvariate(math.log(900_000), 0.6) if status == "ok" else None
            yield (*row[:-2], turnaround, row[-1] / 2, "relax", f"batch-{relax_rng.randrange(rows // 500 + 1)}")
        else:
            yield (*row, "fast", None)


def batches(now: float, rows: int, relax_share: float, size: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
    batch = []
    for row in synthetic_rows(now, rows, relax_share):
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_sqlite_log(path: Path, now: float, rows: int, relax_share: float = RELAX_SHARE) -> None:
    """Written with plain sqlite3 in big transactions (setup, not what is measured)."""
    conn = sqlite3.connect(path)
    sql = f"INSERT INTO generations ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    for batch in batches(now, rows, relax_share):
        conn.executemany(sql, batch)
        conn.commit()
    conn.execute("ANALYZE")
    conn.close()


async def build_postgres_log(url: str, now: float, rows: int, relax_share: float = RELAX_SHARE) -> None:
    """COPY into the migrated database's `generations` (the identity column numbers the rows 1, 2, ... as SQLite
    does), then VACUUM (ANALYZE): the state autovacuum keeps the table in (migration 0016 has it visit the log
    after 1% new rows), made here at once so that autovacuum doesn't start in the middle of the timings."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for batch in batches(now, rows, relax_share, 100_000):
            await conn.copy_records_to_table("generations", records=batch, columns=COLUMNS)
        await conn.execute("VACUUM (ANALYZE) generations")
    finally:
        await conn.close()


class _OneConnection:
    """Every query of a report on one connection, one at a time (the comparison to side by side). A report
    only reads, with fetchall: that is all this offers."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._lock:
            return list(await self._conn.fetchall(sql, params))


@dataclass
class Backend:
    name: str
    db: Database
    one: _OneConnection  # SQLite: its main connection; PostgreSQL: one pooled connection, held throughout
    times: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    reports: dict[str, UsageReport] = field(default_factory=dict)


async def time_report(backend: Backend, label: str, scope: Scope) -> None:
    """One run of usage_report as the bot runs it (queries side by side on read connections), then one with all
    its queries on one connection; the times go into backend.times[label], the report into backend.reports."""
    db = backend.db
    parallel, serial = backend.times.setdefault(label, ([], []))
    reading = db.reading

    @asynccontextmanager
    async def one_connection(*args: Any, **kwargs: Any) -> AsyncIterator[_OneConnection]:
        yield backend.one

    for times, mode in ((parallel, reading), (serial, one_connection)):
        db.reading = mode  # type: ignore[method-assign, assignment]  # a report only calls fetchall
        try:
            began = time.perf_counter()
            report = await usage_report(db, scope)
            times.append((time.perf_counter() - began) * 1000)
        finally:
            db.reading = reading  # type: ignore[method-assign]
    backend.reports[label] = report


def differences(label: str, a: UsageReport, b: UsageReport) -> list[str]:
    """Where the two backends' reports disagree (costs compared to the cent)."""
    out: list[str] = []

    def same_cost(x: float, y: float) -> bool:
        return abs(x - y) < 0.005

    def check(what: str, x: Any, y: Any, same: bool | None = None) -> None:
        if not (x == y if same is None else same):
            out.append(f"  {label}: {what}: SQLite {x!r} != PostgreSQL {y!r}")

    for name in ("requests", "images", "blocked", "errors"):
        check(name, getattr(a, name), getattr(b, name))
    check("cost_usd", f"{a.cost_usd:.2f}", f"{b.cost_usd:.2f}", same_cost(a.cost_usd, b.cost_usd))
    check("latency", a.latency, b.latency)
    check("top users", [u[:2] for u in a.top_users], [u[:2] for u in b.top_users])
    for (user, _, x), (_, _, y) in zip(a.top_users, b.top_users, strict=False):
        check(f"top user {user} cost", f"{x:.2f}", f"{y:.2f}", same_cost(x, y))
    check("days", [d[:2] for d in a.days], [d[:2] for d in b.days])
    for (day, _, x), (_, _, y) in zip(a.days, b.days, strict=False):
        check(f"day {day} cost", f"{x:.2f}", f"{y:.2f}", same_cost(x, y))
    check("seconds histogram", a.seconds_histogram, b.seconds_histogram)
    check("speeds", sorted(a.speeds), sorted(b.speeds))
    for speed, x in a.speeds.items():
        y = b.speeds.get(speed)
        if y is not None:
            check(
                f"{speed} requests, images, total_ms",
                (x.requests, x.images, x.total_ms),
                (y.requests, y.images, y.total_ms),
            )
            check(f"{speed} cost", f"{x.cost_usd:.2f}", f"{y.cost_usd:.2f}", same_cost(x.cost_usd, y.cost_usd))
    return out


async def logging_lag(db: Database, rate: int, seconds: float) -> tuple[float, float, float, int]:
    """(achieved rows/s, lag p99 ms, lag max ms, rows) while inserting `rate` rows a second."""
    lags: list[float] = []
    stop = asyncio.Event()

    async def sampler() -> None:
        while not stop.is_set():
            began = time.perf_counter()
            await asyncio.sleep(0.010)
            lags.append((time.perf_counter() - began - 0.010) * 1000)

    task = asyncio.create_task(sampler())
    began, written = time.perf_counter(), 0
    pending: set[asyncio.Task[int]] = set()
    while (elapsed := time.perf_counter() - began) < seconds:
        due = int(elapsed * rate)
        while written < due:
            row = GenerationRow(
                guild_id=1, channel_id=1, user_id=written % 100, command="imagine", provider="gemini",
                model=MODELS[0], size="1K", aspect_ratio="1:1", thinking=None, reference_count=0,
                prompt="live", status="ok", total_ms=30_000, cost_usd=0.134,
            )  # fmt: skip
            # Each job logs from its own task, as the bot's jobs do.
            pending.add(asyncio.create_task(insert_generation(db, row)))
            written += 1
        await asyncio.sleep(0.005)
    await asyncio.gather(*pending)
    took = time.perf_counter() - began
    stop.set()
    await task
    ordered = sorted(lags)
    return written / took, ordered[int(len(ordered) * 0.99) - 1], ordered[-1], written


async def main_async(args: argparse.Namespace, targets: dict[str, str], now: float) -> tuple[list[str], bool]:
    """The report lines, and whether everything passed."""
    lines: list[str] = []
    ok = True
    async with contextlib.AsyncExitStack() as stack:
        backends: list[Backend] = []
        for name, target in targets.items():
            began = time.perf_counter()
            if name == "sqlite":
                await (await Database.open(target)).close()  # creates the schema
                build_sqlite_log(Path(target), now, args.rows, args.relax_share)
            else:
                await build_postgres_log(target, now, args.rows, args.relax_share)
            built = time.perf_counter() - began
            db = await Database.open(target)
            stack.push_async_callback(db.close)
            if name == "sqlite":
                one = _OneConnection(db)  # its fetch methods run on the one main connection
            else:
                one = _OneConnection(await stack.enter_async_context(db.reading()))
            backends.append(Backend(name, db, one))
            lines.append(
                f"log on {NAMES[name]}: {args.rows:,} rows over {DAYS} days, {GUILDS} guilds, "
                f"{args.relax_share:.0%} relax (built in {built:.0f} s)"
            )

        since = now - 30 * 86400
        scopes = {
            "busiest guild": Scope(since, now + 1, guild_id=1000),
            "one member": Scope(since, now + 1, guild_id=1000, user_id=7),
        }
        for _ in range(args.repeats):  # the backends take turns, so a noisy moment hits both
            for label, scope in scopes.items():
                for backend in backends:
                    await time_report(backend, label, scope)

        width = 12
        head = f"{'/usage, 30 days, median of ' + str(args.repeats):<40}{'rows':>9}"
        lines.append("")
        lines.append(head + "".join(f"{NAMES[b.name]:>{width + 6}}" for b in backends))
        for label in scopes:
            count = backends[0].reports[label].requests
            cells, serial_cells = "", ""
            for backend in backends:
                parallel, serial = (statistics.median(t) for t in backend.times[label])
                verdict = "PASS" if parallel < TARGET_MS else "FAIL"
                ok &= parallel < TARGET_MS
                cells += f"{parallel:>{width}.0f} ms {verdict}"
                serial_cells += f"{serial:>{width}.0f} ms     "
            lines.append(f"{'[1] ' + label + ' (target < 300 ms)':<40}{count:>9,}{cells}")
            lines.append(f"{'    same queries on one connection':<40}{'':>9}{serial_cells}")

        if len(backends) == 2:
            mismatches = [
                line
                for label in scopes
                for line in differences(label, backends[0].reports[label], backends[1].reports[label])
            ]
            if mismatches:
                ok = False
                lines.append("[2] MISMATCH: SQLite and PostgreSQL give different figures:")
                lines.extend(mismatches)
            else:
                shown = backends[0].reports["busiest guild"]
                relax = shown.speeds["relax"]
                lines.append(
                    f"[2] same figures on both: busiest guild {shown.requests:,} requests, {shown.images:,} images, "
                    f"{shown.blocked:,} blocked, errors {shown.errors}, ${shown.cost_usd:,.2f}, "
                    f"{len(shown.latency)} latency rows, top {len(shown.top_users)} users, {len(shown.days)} days, "
                    f"relax {relax.requests:,} requests, {relax.images:,} images, ${relax.cost_usd:,.2f}, "
                    f"turnaround p50 {relax.total_ms[0] / 1000:.0f} s  PASS"
                )

        lines.append("")
        for backend in backends:
            rate, p99, worst, rows = await logging_lag(backend.db, args.rate, args.seconds)
            passed = worst < LAG_TARGET_MS and rate >= args.rate * 0.95
            ok &= passed
            lines.append(
                f"[3] {NAMES[backend.name]}: logging {rows:,} rows at {rate:,.0f}/s (asked {args.rate:,}/s): loop lag "
                f"p99 {p99:.1f} ms, max {worst:.1f} ms (target < {LAG_TARGET_MS} ms)  {'PASS' if passed else 'FAIL'}"
            )
    return lines, ok


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--relax-share", type=float, default=RELAX_SHARE, help="the share of relax requests")
    parser.add_argument("--repeats", type=int, default=10, help="report runs per scope and mode")
    parser.add_argument("--rate", type=int, default=1000, help="rows a second to log in part 3")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    chosen = BACKENDS if args.backend == "both" else (args.backend,)
    began = time.monotonic()
    shown = {"sqlite": "SQLite (WAL)", "postgresql": "PostgreSQL (a throwaway server, tests/postgres.py)"}
    print(f"Banana Bot report and logging benchmark: {' and '.join(shown[b] for b in chosen)}")
    with contextlib.ExitStack() as stack:
        targets: dict[str, str] = {}
        if "sqlite" in chosen:
            targets["sqlite"] = str(Path(stack.enter_context(tempfile.TemporaryDirectory())) / "banana.sqlite3")
        if "postgresql" in chosen:
            from tests.postgres import running_postgres

            targets["postgresql"] = stack.enter_context(running_postgres()).fresh_url()
        lines, ok = asyncio.run(main_async(args, targets, time.time()))
    for line in lines:
        print(line)
    print(f"total {time.monotonic() - began:.0f} s")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
