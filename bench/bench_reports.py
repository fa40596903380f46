"""Reports stay instant as the log grows, and logging never stalls the bot.

    .venv/bin/python -m bench.bench_reports       # ~1 minute (building the 1,000,000-row log is most of it)

1. A usage log of 1,000,000 rows over 90 days: 20 guilds, the busiest with 30% of all rows (so its last
   30 days hold ~100,000), 2,000 members, 90% ok / 3% blocked / 7% errors. Time of /usage's queries
   (storage.reports.usage_report) for that guild's last 30 days, and for one member's; median of 10,
   alternating with the same queries on one connection for comparison. Target: under 300 ms.
2. Logging 1,000 rows a second for 5 s through storage.generations.insert_generation (as the bot does,
   one transaction a row) while a task in the same event loop sleeps 10 ms at a time and records how late
   it wakes. Target: lag under 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from storage.db import Database
from storage.generations import GenerationRow, insert_generation
from storage.reports import Scope, usage_report

ROWS, DAYS, GUILDS, USERS = 1_000_000, 90, 20, 2_000
BUSIEST_SHARE = 0.30
MODELS = ("gemini-3-pro-image-preview", "gemini-3.1-flash-image-preview")
SIZES = ("1K", "2K", "4K")


def build_log(path: Path, now: float, rows: int) -> None:
    """The synthetic log, written with plain sqlite3 in big transactions (setup, not what is measured)."""
    rng = random.Random(7)
    conn = sqlite3.connect(path)
    columns = (
        "created_at, guild_id, channel_id, user_id, command, provider, model, size, aspect_ratio, "
        "reference_count, prompt, status, error_class, attempts, queue_ms, total_ms, cost_usd"
    )
    sql = f"INSERT INTO generations ({columns}) VALUES ({', '.join('?' * 17)})"
    batch = []
    for _ in range(rows):
        guild = 0 if rng.random() < BUSIEST_SHARE else rng.randrange(1, GUILDS)
        roll = rng.random()
        status = "ok" if roll < 0.90 else "blocked" if roll < 0.93 else "error"
        total = rng.lognormvariate(10.3, 0.5) if status == "ok" else None
        batch.append((
            now - rng.random() * DAYS * 86400, 1000 + guild, 1, rng.randrange(USERS), "imagine", "gemini",
            rng.choice(MODELS), rng.choice(SIZES), "1:1", 0, "a prompt", status,
            None if status == "ok" else ("blocked" if status == "blocked" else "timeout"), 1,
            rng.expovariate(1 / 2000), total, 0.134 if status == "ok" else 0.0,
        ))  # fmt: skip
        if len(batch) == 50_000:
            conn.executemany(sql, batch)
            conn.commit()
            batch.clear()
    conn.executemany(sql, batch)
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


async def time_report(db: Database, scope: Scope, repeats: int = 10) -> tuple[float, float, int]:
    """Median ms of usage_report as the bot runs it (queries side by side on read connections) and, in
    alternation for comparison, all on the one connection; and the rows in scope."""
    parallel, serial, count = [], [], 0
    reading = db.reading

    @asynccontextmanager
    async def one_connection(limit: int = 1) -> AsyncIterator[Any]:
        yield db  # its own fetch methods run on the one main connection

    for _ in range(repeats):
        for times, mode in ((parallel, reading), (serial, one_connection)):
            db.reading = mode  # type: ignore[method-assign]
            began = time.perf_counter()
            report = await usage_report(db, scope)
            times.append((time.perf_counter() - began) * 1000)
            count = report.requests
    db.reading = reading  # type: ignore[method-assign]
    return statistics.median(parallel), statistics.median(serial), count


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


async def main_async(args: argparse.Namespace) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "banana.sqlite3"
        db = await Database.open(path)  # creates the schema
        await db.close()
        now = time.time()
        began = time.perf_counter()
        build_log(path, now, args.rows)
        lines.append(
            f"log: {args.rows:,} rows over {DAYS} days, {GUILDS} guilds (built in {time.perf_counter() - began:.0f} s)"
        )
        db = await Database.open(path)
        try:
            since = now - 30 * 86400
            for label, scope in (
                ("busiest guild", Scope(since, now + 1, guild_id=1000)),
                ("one member", Scope(since, now + 1, guild_id=1000, user_id=7)),
            ):
                ms, serial_ms, count = await time_report(db, scope)
                verdict = "PASS" if ms < 300 else "MISS"
                lines.append(
                    f"[1] /usage queries, 30 days, {label} ({count:,} rows): median {ms:.0f} ms of 10 "
                    f"(target < 300 ms)  {verdict};  on one connection {serial_ms:.0f} ms "
                    f"(parallel/serial {ms / serial_ms if serial_ms else 1:.2f})"
                )
            rate, p99, worst, rows = await logging_lag(db, args.rate, args.seconds)
            verdict = "PASS" if worst < 20 and rate >= args.rate * 0.95 else "MISS"
            lines.append(
                f"[2] logging {rows:,} rows at {rate:,.0f}/s (asked {args.rate:,}/s): loop lag p99 {p99:.1f} ms, "
                f"max {worst:.1f} ms (target < 20 ms)  {verdict}"
            )
        finally:
            await db.close()
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--rate", type=int, default=1000, help="rows a second to log in part 2")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    began = time.monotonic()
    print("Banana Bot report and logging benchmark (SQLite, WAL)")
    for line in asyncio.run(main_async(args)):
        print(line)
    print(f"total {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
