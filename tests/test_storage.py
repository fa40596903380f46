"""Tests for storage/: migrations, the usage log and the image store.

Every test gets a fresh database file under pytest's tmp_path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from storage.characters import (
    FORGOTTEN,
    change_character,
    character_images,
    character_versions,
    create_character,
    delete_character,
    get_character,
)
from storage.db import Database, IntegrityError, MigrationError, load_migrations
from storage.forget import forget_user, purge_guild
from storage.generations import (
    RECENT_LATENCIES_SQL,
    GenerationRow,
    count_generations,
    get_generation,
    insert_generation,
    recent_latencies_ms,
)
from storage.images import ImageStore
from storage.jobs import (
    DEFAULT_SIZE,
    REQUEST_VERSION,
    InputNote,
    Job,
    JobRequest,
    get_job,
    insert_job,
    job_for_message,
    latest_done_job_in_thread,
    request_from_json,
    request_to_json,
    update_job,
)
from storage.reports import Latency, Scope, SpeedUsage, csv_text, usage_report
from tests.postgres import PostgresServer

DAY = 86400.0


@pytest.fixture
async def db(database_target: str) -> AsyncIterator[Database]:
    """Every test that takes `db` runs on SQLite and on PostgreSQL."""
    database = await Database.open(database_target)
    yield database
    await database.close()


sqlite_only = pytest.mark.parametrize("database_target", ["sqlite"], indirect=True)
postgres_only = pytest.mark.parametrize("database_target", ["postgresql"], indirect=True)


@pytest.fixture
def store(tmp_path: Path, db: Database) -> ImageStore:
    return ImageStore(tmp_path / "images", db)


def make_row(**overrides: Any) -> GenerationRow:
    """A row with only the required fields set, plus whatever the test overrides."""
    fields: dict[str, Any] = {
        "guild_id": 1,
        "channel_id": 2,
        "user_id": 3,
        "command": "imagine",
        "provider": "gemini",
        "model": "gemini-2.5-flash-image",
        "size": "1K",
        "aspect_ratio": "1:1",
        "thinking": None,
        "reference_count": 0,
        "prompt": "a banana",
        "status": "ok",
    }
    fields.update(overrides)
    return GenerationRow(**fields)


async def fetch_all(db: Database, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await db.fetchall(sql, params)]


async def fetch_one(db: Database, sql: str, params: tuple[Any, ...] = ()) -> Any:
    rows = await fetch_all(db, sql, params)
    return rows[0][0]


# --- Database and migrations -------------------------------------------------


async def test_open_creates_parent_dir_and_applies_all_migrations(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "bot.db"
    async with await Database.open(path) as db:
        assert path.exists()
        assert await db.schema_version() == len(load_migrations()) >= 1
        tables = {r[0] for r in await fetch_all(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"generations", "images"} <= tables


async def test_reopen_does_not_reapply_migrations(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with await Database.open(path) as db:
        version = await db.schema_version()
        row_id = await insert_generation(db, make_row())
    # Re-running 0001 would fail ("table already exists") or wipe the data.
    async with await Database.open(path) as db:
        assert await db.schema_version() == version
        assert await get_generation(db, row_id) is not None
        assert await count_generations(db) == 1


@sqlite_only
async def test_pragmas(db: Database) -> None:
    assert await fetch_one(db, "PRAGMA journal_mode") == "wal"
    assert await fetch_one(db, "PRAGMA busy_timeout") == 5000
    assert await fetch_one(db, "PRAGMA foreign_keys") == 1
    assert await fetch_one(db, "PRAGMA synchronous") == 1  # NORMAL


async def test_in_memory_database_works() -> None:
    async with await Database.open(":memory:") as db:
        row_id = await insert_generation(db, make_row())
        assert await get_generation(db, row_id) is not None


async def test_context_manager_closes_connection(tmp_path: Path) -> None:
    async with await Database.open(tmp_path / "bot.db") as db:
        assert await count_generations(db) == 0  # open inside the block
    with pytest.raises(ValueError):
        await count_generations(db)


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir()
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


async def test_failing_migration_rolls_back_and_raises(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    good = {"0001_first.sql": "CREATE TABLE first (x INTEGER);"}
    bad = {
        **good,
        "0002_broken.sql": "CREATE TABLE second (x INTEGER);\nINSERT INTO first VALUES (1);\nNOT SQL AT ALL;",
    }
    async with await Database.open(path, migrations_dir=write_migrations(tmp_path / "good", good)) as db:
        assert await db.schema_version() == 1

    threads_before = set(threading.enumerate())
    with pytest.raises(MigrationError, match=r"0002_broken\.sql.*left at schema version 1"):
        await Database.open(path, migrations_dir=write_migrations(tmp_path / "bad", bad))
    # The failed open closed its connection: aiosqlite's worker thread would
    # otherwise live on and keep the process from exiting.
    for thread in set(threading.enumerate()) - threads_before:
        thread.join(timeout=5)
        assert not thread.is_alive()

    async with await Database.open(path, migrations_dir=tmp_path / "good") as db:
        assert await db.schema_version() == 1
        tables = {r[0] for r in await fetch_all(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "second" not in tables
        assert await fetch_one(db, "SELECT count(*) FROM first") == 0


async def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(MigrationError, match="version 99"):
        await Database.open(path)


@pytest.mark.parametrize(
    "names",
    [
        ["0001_a.sql", "0003_c.sql"],  # gap
        ["0002_b.sql"],  # doesn't start at 1
        ["0001_a.sql", "0001_b.sql"],  # duplicate
        ["1_a.sql"],  # bad name
    ],
)
def test_inconsistent_migration_files_are_rejected(tmp_path: Path, names: list[str]) -> None:
    directory = write_migrations(tmp_path / "m", dict.fromkeys(names, "SELECT 1;"))
    with pytest.raises(MigrationError):
        load_migrations(directory)


async def test_failed_transaction_rolls_back_and_releases_lock(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO images VALUES ('k', 'image/png', 1, NULL, NULL, 0)")
            raise RuntimeError("boom")
    assert await fetch_one(db, "SELECT count(*) FROM images") == 0
    # Lock released and no transaction left open: the next write works.
    await insert_generation(db, make_row())
    assert await count_generations(db) == 1


async def test_a_transaction_with_locks_commits_rolls_back_and_releases_them(db: Database) -> None:
    """`transaction(locks=...)` (BEGIN and the locks in one round trip on PostgreSQL): its writes are kept when
    it finishes, undone when it raises, and its locks let go either way, leaving the connection clean."""
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: loop_errors.append(context))
    keys = [(7, 2), (7, 1), (3, 9)]
    async with db.transaction(locks=keys) as conn:
        await conn.execute("INSERT INTO images VALUES ('kept', 'image/png', 1, NULL, NULL, 0)")
        assert [row async for row in conn.stream("SELECT key FROM images")] == [("kept",)]  # a cursor in it
    with pytest.raises(RuntimeError):
        async with db.transaction(locks=keys) as conn:
            await conn.execute("INSERT INTO images VALUES ('undone', 'image/png', 1, NULL, NULL, 0)")
            raise RuntimeError("boom")
    with pytest.raises(IntegrityError):  # the database's own refusal, mapped as without locks
        async with db.transaction(locks=keys) as conn:
            await conn.execute("INSERT INTO images VALUES ('kept', 'image/png', 1, NULL, NULL, 0)")
    assert [r[0] for r in await fetch_all(db, "SELECT key FROM images")] == ["kept"]
    if db.dialect == "postgresql":  # seen by any connection: no session holds an advisory lock
        assert await fetch_one(db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
    assert loop_errors == []  # no connection went back to the pool inside a transaction


async def test_a_transaction_with_generic_plans_asks_for_them_only_inside_it(db: Database) -> None:
    """`generic_plans` (admission's transaction): PostgreSQL plans its statements once per connection, for this
    transaction only, whether it commits or rolls back; its writes are kept or undone as in any other."""
    setting = "SELECT current_setting('plan_cache_mode')"
    for locks in ([(7, 1)], []):
        async with db.transaction(locks=locks, generic_plans=True) as conn:
            await conn.execute("INSERT INTO images VALUES (?, 'image/png', 1, NULL, NULL, 0)", (f"kept{len(locks)}",))
            if db.dialect == "postgresql":
                assert await conn.fetchval(setting) == "force_generic_plan"
        with pytest.raises(RuntimeError):
            async with db.transaction(locks=locks, generic_plans=True) as conn:
                await conn.execute("INSERT INTO images VALUES ('undone', 'image/png', 1, NULL, NULL, 0)")
                raise RuntimeError("boom")
    assert sorted(r[0] for r in await fetch_all(db, "SELECT key FROM images")) == ["kept0", "kept1"]
    if db.dialect == "postgresql":  # the pool's connections are back to planning as they choose
        for _ in range(3):
            async with db.transaction() as conn:
                assert await conn.fetchval(setting) == "auto"


@postgres_only
async def test_a_transaction_waits_for_another_holding_one_of_its_locks_and_may_stop_waiting(db: Database) -> None:
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: loop_errors.append(context))
    entered = asyncio.Event()

    async def second() -> None:
        async with db.transaction(locks=[(5, 1), (5, 2)]):
            entered.set()

    waiting_for_lock = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"

    async def until_waiting() -> None:
        async with asyncio.timeout(10):
            while not await fetch_one(db, waiting_for_lock):  # noqa: ASYNC110 - PostgreSQL's state, not an event
                await asyncio.sleep(0.01)

    async with db.transaction(locks=[(5, 2)]):
        waiting = asyncio.create_task(second())
        await until_waiting()
        assert not entered.is_set()
    async with asyncio.timeout(10):
        await waiting
    assert entered.is_set()
    # One that stops waiting (its caller gone) leaves no transaction open and takes no lock.
    entered.clear()
    async with db.transaction(locks=[(5, 2)]):
        waiting = asyncio.create_task(second())
        await until_waiting()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert not entered.is_set()
    assert await fetch_one(db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
    assert loop_errors == []


# --- generations -------------------------------------------------------------


@sqlite_only
async def test_dataclass_fields_match_table_columns(db: Database) -> None:
    columns = [r[1] for r in await fetch_all(db, "PRAGMA table_info(generations)")]
    assert columns == [f.name for f in dataclasses.fields(GenerationRow)]


async def test_insert_get_round_trips_every_field(db: Database) -> None:
    # Distinct non-default values everywhere, so a dropped or swapped column shows up.
    row = GenerationRow(
        created_at=1_700_000_000.25,
        guild_id=1_234_567_890_123_456_789,  # Discord snowflakes are ~2^60
        channel_id=2_234_567_890_123_456_789,
        user_id=3_234_567_890_123_456_789,
        command="cli",
        provider="openai-compatible",
        model="gpt-image-1",
        size="2K",
        aspect_ratio="16:9",
        thinking="high",
        reference_count=3,
        prompt="a banana in space, «unicode» 🍌",
        status="error",
        error_class="ReadTimeout",
        attempts=4,
        queue_ms=1.5,
        connect_ms=2.5,
        ttfb_ms=3.5,
        download_ms=4.5,
        decode_ms=5.5,
        total_ms=6.5,
        input_tokens=7,
        output_tokens=8,
        thinking_tokens=9,
        image_tokens=10,
        total_tokens=11,
        cost_usd=0.039,
        bytes_sent=12,
        bytes_received=13,
        image_key="ab" * 32,
        width=1024,
        height=576,
        job_id="job-abc",
        defer_ms=14.5,
        speed="relax",
        batch_id="banana-relax-1",
    )
    assert all(getattr(row, f.name) != f.default for f in dataclasses.fields(row) if f.name != "id")

    row_id = await insert_generation(db, row)
    assert await get_generation(db, row_id) == dataclasses.replace(row, id=row_id)


async def test_defaults_round_trip(db: Database) -> None:
    before = time.time()
    row = make_row(guild_id=None, channel_id=None, user_id=None, command="cli")
    row_id = await insert_generation(db, row)
    got = await get_generation(db, row_id)
    assert got == dataclasses.replace(row, id=row_id)
    assert got.total_ms is None and got.input_tokens == 0 and got.attempts == 1
    assert before <= got.created_at <= time.time()


async def test_get_missing_returns_none_and_count(db: Database) -> None:
    assert await get_generation(db, 12345) is None
    assert await count_generations(db) == 0
    await insert_generation(db, make_row())
    await insert_generation(db, make_row())
    assert await count_generations(db) == 2


async def test_status_is_checked(db: Database) -> None:
    with pytest.raises(IntegrityError):
        await insert_generation(db, make_row(status="maybe"))
    assert await count_generations(db) == 0


async def test_recent_latencies_newest_first_filtered_and_limited(db: Database) -> None:
    t = 1_700_000_000.0
    rows = [
        make_row(created_at=t + 1, total_ms=100.0),
        make_row(created_at=t + 3, total_ms=300.0),
        make_row(created_at=t + 2, total_ms=200.0),
        make_row(created_at=t + 4, total_ms=400.0),
        # Excluded: wrong model, wrong size, not ok, unknown latency.
        make_row(created_at=t + 9, total_ms=1.0, model="other-model"),
        make_row(created_at=t + 9, total_ms=2.0, size="2K"),
        make_row(created_at=t + 9, total_ms=3.0, status="error"),
        make_row(created_at=t + 9, total_ms=4.0, status="blocked"),
        make_row(created_at=t + 9, total_ms=None),
    ]
    for row in rows:
        await insert_generation(db, row)

    model = "gemini-2.5-flash-image"
    assert await recent_latencies_ms(db, model=model, size="1K") == [400.0, 300.0, 200.0, 100.0]
    assert await recent_latencies_ms(db, model=model, size="1K", limit=2) == [400.0, 300.0]
    assert await recent_latencies_ms(db, model=model, size="1K", limit=0) == []
    assert await recent_latencies_ms(db, model=model, size="4K") == []
    with pytest.raises(ValueError):
        await recent_latencies_ms(db, model=model, size="1K", limit=-1)


@sqlite_only
async def test_indexes_exist(db: Database) -> None:
    names = {r[1] for r in await fetch_all(db, "PRAGMA index_list(generations)")}
    assert {
        "generations_guild_report",
        "generations_user_created",
        "generations_created",
        "generations_model_size_created",
    } <= names
    columns = [r[2] for r in await fetch_all(db, "PRAGMA index_info(generations_model_size_created)")]
    assert columns == ["model", "size", "created_at"]


async def query_plan(db: Database, sql: str, params: tuple[Any, ...]) -> str:
    return "\n".join(str(r[-1]) for r in await fetch_all(db, "EXPLAIN QUERY PLAN " + sql, params))


@pytest.mark.parametrize(
    ("sql", "params", "index"),
    [
        (  # per-guild, per-day report
            "SELECT date(created_at, 'unixepoch') AS day, count(*), sum(cost_usd) FROM generations "
            "WHERE guild_id = ? AND created_at >= ? AND created_at < ? GROUP BY day",
            (1, 0.0, DAY * 30),
            "generations_guild_report",
        ),
        (  # per-user, per-day report
            "SELECT date(created_at, 'unixepoch') AS day, count(*) FROM generations "
            "WHERE user_id = ? AND created_at >= ? GROUP BY day",
            (3, 0.0),
            "generations_user_created",
        ),
        (  # whole-bot, per-day report
            "SELECT date(created_at, 'unixepoch') AS day, count(*) FROM generations "
            "WHERE created_at >= ? AND created_at < ? GROUP BY day",
            (0.0, DAY),
            "generations_created",
        ),
        (RECENT_LATENCIES_SQL, ("m", "1K", 50), "generations_model_size_created"),
    ],
)
@sqlite_only
async def test_report_queries_use_indexes(db: Database, sql: str, params: tuple[Any, ...], index: str) -> None:
    plan = await query_plan(db, sql, params)
    assert f"INDEX {index}" in plan, plan
    assert "SCAN generations" not in plan, plan


async def test_a_usage_report_gives_the_same_figures_on_both_backends(tmp_path: Path, postgres: PostgresServer) -> None:
    """The same few hundred rows, one report per scope on SQLite and on PostgreSQL: equal UsageReports (costs
    are multiples of 1/8 so that their sums are exact in any order)."""
    rng = random.Random(3)
    now = 1_795_000_000.0
    rows = []
    for _ in range(300):
        status = rng.choice(("ok",) * 8 + ("blocked", "error"))
        rows.append(
            make_row(
                created_at=now - rng.random() * 10 * DAY,
                guild_id=rng.choice((1, 2)),
                user_id=rng.choice((None, 10, 11, 12, 13, 14, 15, 16)),
                model=rng.choice(("m1", "m2")),
                size=rng.choice(("1K", "2K")),
                status=status,
                error_class=rng.choice(("timeout", None)) if status == "error" else None,
                queue_ms=rng.choice((None, rng.uniform(0, 5000))),
                total_ms=rng.lognormvariate(10, 0.5) if status == "ok" else None,
                cost_usd=rng.choice((0.125, 0.25)) if status == "ok" else 0.0,
                speed=rng.choice(("fast", "fast", "relax")),
            )
        )
    scopes = [
        Scope(now - 7 * DAY, now + 1),
        Scope(now - 30 * DAY, now + 1, guild_id=1),
        Scope(now - 30 * DAY, now + 1, guild_id=2, user_id=12),
    ]
    reports = []
    for target in (str(tmp_path / "bot.db"), postgres.fresh_url()):
        async with await Database.open(target) as db:
            for row in rows:
                await insert_generation(db, row)
            reports.append([await usage_report(db, scope) for scope in scopes])
    on_sqlite, on_postgres = reports
    assert on_sqlite[1].requests > 100 and on_sqlite[1].latency and on_sqlite[1].top_users
    assert on_sqlite[1].speeds["relax"].images > 10 and on_sqlite[1].speeds["relax"].total_ms[0] > 0
    assert on_sqlite == on_postgres


async def test_a_usage_report_tells_fast_from_relax(db: Database) -> None:
    """Counts, cost and nearest-rank percentiles of total_ms per speed (for relax, the turnaround); the per-model
    table and the chart's histogram are of fast requests only; without relax rows, nothing on relax."""
    now = time.time()
    rows = [make_row(created_at=now - 60, total_ms=1000.0 * n, queue_ms=100.0, cost_usd=0.25) for n in range(1, 7)]
    rows.append(make_row(created_at=now - 60, status="error", error_class="timeout"))
    for minutes in (1, 2, 3, 10):
        rows.append(
            make_row(created_at=now - 30, total_ms=minutes * 60_000.0, queue_ms=50_000.0, cost_usd=0.125,
                     speed="relax", batch_id="b1")
        )  # fmt: skip
    rows.append(make_row(created_at=now - 30, status="blocked", error_class="blocked", speed="relax", batch_id="b1"))
    rows.append(make_row(created_at=now - 30, guild_id=2, total_ms=1.0, cost_usd=1.0, speed="relax"))  # elsewhere
    rows.append(make_row(created_at=now - 40 * DAY, total_ms=1.0, cost_usd=1.0, speed="relax"))  # before the period
    rows.append(make_row(created_at=now - 60, guild_id=3, total_ms=2000.0, cost_usd=0.25))  # a fast-only server
    for row in rows:
        await insert_generation(db, row)

    report = await usage_report(db, Scope(now - 30 * DAY, now + 1, guild_id=1))
    assert (report.requests, report.images, report.blocked, report.cost_usd) == (12, 10, 1, 2.0)
    # Fast: 1-6 s, p50 the 3rd of 6, p95 and p99 the 6th. Relax: 1, 2, 3 and 10 min, p50 the 2nd of 4.
    assert report.speeds == {
        "fast": SpeedUsage(requests=7, images=6, cost_usd=1.5, total_ms=(3000.0, 6000.0, 6000.0)),
        "relax": SpeedUsage(requests=5, images=4, cost_usd=0.5, total_ms=(120_000.0, 600_000.0, 600_000.0)),
    }
    assert report.relax_used
    assert report.latency == [Latency("gemini-2.5-flash-image", "1K", 6, (3000.0, 6000.0, 6000.0), (100.0,) * 3)]
    assert report.seconds_histogram == [(n, 1) for n in range(1, 7)]
    assert sum(images for _, images, _ in report.days) == 10

    member = await usage_report(db, Scope(now - 30 * DAY, now + 1, guild_id=1, user_id=3))
    assert member.speeds == report.speeds

    fast_only = await usage_report(db, Scope(now - 30 * DAY, now + 1, guild_id=3))
    assert not fast_only.relax_used
    assert fast_only.speeds == {"fast": SpeedUsage(1, 1, 0.25, (2000.0,) * 3), "relax": SpeedUsage()}

    everywhere = await usage_report(db, Scope(now - 7 * DAY, now + 1))
    assert everywhere.speeds["relax"] == SpeedUsage(6, 5, 1.5, (120_000.0, 600_000.0, 600_000.0))

    table = (await csv_text(db, Scope(now - 30 * DAY, now + 1, guild_id=1))).splitlines()
    header = table[0].split(",")
    assert header[-2:] == ["speed", "batch_id"]
    speeds = [line.split(",")[-2:] for line in table[1:]]
    assert speeds.count(["relax", "b1"]) == 5 and speeds.count(["fast", ""]) == 7


@sqlite_only
async def test_a_guild_report_reads_only_covering_indexes(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every query of a guild's (or a member's) report is served by an index alone, no lookups in the table
    however many rows the period holds: generations_guild_report (0006), and for the relax requests apart
    generations_relax_report (0018), which holds those only."""
    for n in range(20):
        await insert_generation(db, make_row(total_ms=1000.0 + n, speed=("fast", "relax")[n % 2]))
    plans: list[str] = []
    reading = db.reading

    @asynccontextmanager
    async def explaining() -> AsyncIterator[Any]:
        async with reading() as conn:

            class Explaining:
                async def fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
                    plan = await conn.fetchall("EXPLAIN QUERY PLAN " + sql, params)
                    relax = " speed = 'relax'" if "speed = 'relax'" in sql else ""
                    plans.append(" | ".join(str(r[-1]) for r in plan) + relax)
                    return list(await conn.fetchall(sql, params))

            yield Explaining()

    monkeypatch.setattr(db, "reading", explaining)
    report = await usage_report(db, Scope(0, time.time() + 1, guild_id=1))
    assert report.speeds["relax"].images == 10
    await usage_report(db, Scope(0, time.time() + 1, guild_id=1, user_id=3))
    assert len(plans) == 12
    for plan in plans:
        index = "generations_relax_report" if "speed = 'relax'" in plan else "generations_guild_report"
        assert f"USING COVERING INDEX {index} (guild_id=? AND created_at>? AND created_at<?)" in plan, plan


async def test_concurrent_inserts_all_land(db: Database) -> None:
    ids = await asyncio.gather(*(insert_generation(db, make_row(prompt=f"p{i}")) for i in range(200)))
    assert len(set(ids)) == 200
    assert await count_generations(db) == 200
    prompts = {r[0] for r in await fetch_all(db, "SELECT prompt FROM generations")}
    assert prompts == {f"p{i}" for i in range(200)}


# --- images ------------------------------------------------------------------


PNG = b"\x89PNG\r\n\x1a\n" + b"fake image data" * 1000


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def test_put_get_and_layout(tmp_path: Path, db: Database, store: ImageStore) -> None:
    key = await store.put(PNG, "image/png", width=64, height=32)
    assert key == hashlib.sha256(PNG).hexdigest()
    expected = tmp_path / "images" / key[:2] / key[2:4] / f"{key}.png"
    assert store.path(key) == expected
    assert expected.read_bytes() == PNG
    assert await store.get(key) == PNG
    assert await store.exists(key)
    row = (await fetch_all(db, "SELECT mime, bytes, width, height FROM images WHERE key = ?", (key,)))[0]
    assert row == ("image/png", len(PNG), 64, 32)


@pytest.mark.parametrize(("mime", "ext"), [("image/jpeg", "jpg"), ("image/webp", "webp"), ("image/gif", "gif")])
async def test_extension_follows_mime(store: ImageStore, mime: str, ext: str) -> None:
    key = await store.put(b"bytes for " + mime.encode(), mime)
    assert store.path(key).name == f"{key}.{ext}"


async def test_unknown_mime_rejected(tmp_path: Path, store: ImageStore) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        await store.put(PNG, "text/html")
    assert not (tmp_path / "images").exists()


async def test_missing_image(store: ImageStore) -> None:
    key = "0" * 64
    assert not await store.exists(key)
    with pytest.raises(FileNotFoundError):
        await store.get(key)
    with pytest.raises(FileNotFoundError):
        store.path(key)


async def test_put_is_idempotent(tmp_path: Path, db: Database, store: ImageStore) -> None:
    first = await store.put(PNG, "image/png")
    inode = store.path(first).stat().st_ino
    created = await fetch_one(db, "SELECT created_at FROM images WHERE key = ?", (first,))
    await asyncio.sleep(0.01)
    # Same bytes, even under another mime: one file, one row; the first mime wins.
    assert await store.put(PNG, "image/png") == first
    assert store.path(first).stat().st_ino == inode  # the file was not rewritten
    assert await store.put(PNG, "image/webp") == first
    assert files_under(tmp_path / "images") == [store.path(first)]
    assert await fetch_all(db, "SELECT key, mime FROM images") == [(first, "image/png")]
    # Re-putting refreshes created_at, so prune won't delete an image that was just reused.
    assert await fetch_one(db, "SELECT created_at FROM images WHERE key = ?", (first,)) > created


async def test_concurrent_puts_of_same_bytes(tmp_path: Path, db: Database, store: ImageStore) -> None:
    keys = await asyncio.gather(*(store.put(PNG, "image/png") for _ in range(20)))
    assert len(set(keys)) == 1
    assert files_under(tmp_path / "images") == [store.path(keys[0])]
    assert await fetch_one(db, "SELECT count(*) FROM images") == 1


async def test_write_leaves_no_temp_files(tmp_path: Path, store: ImageStore) -> None:
    key = await store.put(PNG, "image/png")
    assert files_under(tmp_path / "images") == [store.path(key)]


async def test_failed_write_leaves_nothing_behind(
    tmp_path: Path, store: ImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)  # what storage.images calls
    with pytest.raises(OSError, match="disk full"):
        await store.put(PNG, "image/png")
    key = hashlib.sha256(PNG).hexdigest()
    assert files_under(tmp_path / "images") == []  # the temp file was cleaned up
    assert not await store.exists(key)

    monkeypatch.undo()
    assert await store.put(PNG, "image/png") == key  # a retry works
    assert await store.get(key) == PNG


@pytest.mark.parametrize(
    "key",
    [
        "../../../etc/passwd",
        "../" + "a" * 61,
        "/" + "a" * 63,
        "a" * 63,
        "a" * 65,
        "A" * 64,  # keys are lowercase, so there's one spelling per image
        "g" * 64,
        "a" * 64 + "\n",
        "",
    ],
)
async def test_malformed_keys_rejected(store: ImageStore, key: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        store.path(key)
    with pytest.raises(ValueError, match="malformed"):
        await store.get(key)
    with pytest.raises(ValueError, match="malformed"):
        await store.exists(key)


async def test_prune_deletes_old_and_keeps_new(tmp_path: Path, db: Database, store: ImageStore) -> None:
    old = await store.put(b"old image", "image/png")
    new = await store.put(b"new image", "image/jpeg")
    old_path = store.path(old)
    now = time.time()
    # Backdate one image 10 days (tests only: the store always stamps the current time).
    async with db.transaction() as conn:
        await conn.execute("UPDATE images SET created_at = ? WHERE key = ?", (now - 10 * DAY, old))

    assert await store.prune(older_than_days=7, now=now) == 1
    assert not old_path.exists()
    assert not await store.exists(old)
    assert await store.get(new) == b"new image"
    assert await fetch_all(db, "SELECT key FROM images") == [(new,)]

    assert await store.prune(older_than_days=7, now=now) == 0  # nothing left to prune
    # Everything is older than 0 days a day from now.
    assert await store.prune(older_than_days=0, now=now + DAY) == 1
    assert files_under(tmp_path / "images") == []


async def test_prune_tolerates_missing_files(db: Database, store: ImageStore) -> None:
    key = await store.put(PNG, "image/png")
    store.path(key).unlink()  # e.g. a crash between deleting the file and the row
    assert await store.prune(older_than_days=0, now=time.time() + 1) == 1
    assert await fetch_one(db, "SELECT count(*) FROM images") == 0


async def test_delete_removes_files_and_rows_and_ignores_unknown_keys(store: ImageStore) -> None:
    kept = await store.put(b"\x89PNG\r\n\x1a\n" + b"k" * 100, "image/png")
    gone = await store.put(b"\x89PNG\r\n\x1a\n" + b"g" * 100, "image/png")
    path = store.path(gone)
    assert await store.delete([gone, "0" * 64]) == 1
    assert not path.exists() and not await store.exists(gone) and await store.exists(kept)
    with pytest.raises(ValueError):
        await store.delete(["../escape"])


# --- job requests -----------------------------------------------------------------------------------------
async def test_a_job_request_round_trips_with_its_version(db: Database) -> None:
    request = JobRequest(
        prompt="a fox",
        size="2K",
        aspect_ratio="16:9",
        thinking="high",
        model="gemini-3-pro-image-preview",
        provider="gemini",
        reference_keys=("ab" * 32, "cd" * 32),
        input_notes=(InputNote("reference", before=(4000, 3000), after=(3072, 2304)),),
        character_id=7,
        character_name="Mira",
        previews=False,
    )
    job = Job(guild_id=1, channel_id=2, user_id=3, kind="imagine", request=request)
    await insert_job(db, job)
    stored = json.loads(await fetch_one(db, "SELECT request_json FROM jobs WHERE id = ?", (job.id,)))
    assert stored["v"] == REQUEST_VERSION and stored["reference_keys"] == ["ab" * 32, "cd" * 32]
    loaded = await get_job(db, job.id)
    assert loaded is not None and loaded.request == request
    # Changing it goes through the same serialiser.
    await update_job(db, job.id, request=dataclasses.replace(request, prompt="a red fox"))
    again = await get_job(db, job.id)
    assert (
        again is not None
        and again.request.prompt == "a red fox"
        and again.request.reference_keys == request.reference_keys
    )


async def test_a_job_queued_before_the_typed_request_still_loads(db: Database) -> None:
    """Version 0 is the plain dict earlier releases stored: any key may be missing or null, and intake's
    leftovers ("character") may be there."""
    legacy = {
        "prompt": "an old cat",
        "aspect_ratio": None,
        "size": None,
        "thinking": None,
        "character": "Mira",
        "character_id": 4,
        "character_name": "Mira",
        "reference_keys": ["ef" * 32],
        "input_notes": [{"option": "reference", "from": [5000, 5000], "to": [3072, 3072]}],
    }
    job = Job(guild_id=1, channel_id=2, user_id=3, kind="imagine", request=JobRequest(prompt="placeholder"))
    await insert_job(db, job)
    async with db.transaction() as conn:
        await conn.execute("UPDATE jobs SET request_json = ? WHERE id = ?", (json.dumps(legacy), job.id))
    loaded = await get_job(db, job.id)
    assert loaded is not None
    assert loaded.request == JobRequest(
        prompt="an old cat",
        size=DEFAULT_SIZE,
        reference_keys=("ef" * 32,),
        input_notes=(InputNote("reference", before=(5000, 5000), after=(3072, 3072)),),
        character_id=4,
        character_name="Mira",
    )
    assert request_from_json({"prompt": "p", "previews": False}).previews is False


def test_a_request_from_a_newer_release_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="version 99 is newer"):
        request_from_json({"v": 99, "prompt": "from the future"})


async def test_a_request_stored_before_character_versions_loads_with_none(db: Database) -> None:
    """Version 1 requests recorded no character version: such a job uses the character's current one."""
    request = JobRequest(prompt="Mira again", character_id=4, character_name="Mira", character_version=3)
    assert request_from_json(request_to_json(request)) == request
    assert request_to_json(request)["character_version"] == 3
    version_1 = {"v": 1, "prompt": "Mira", "size": "1K", "character_id": 4, "character_name": "Mira"}
    job = Job(guild_id=1, channel_id=2, user_id=3, kind="imagine", request=JobRequest(prompt="placeholder"))
    await insert_job(db, job)
    async with db.transaction() as conn:
        await conn.execute("UPDATE jobs SET request_json = ? WHERE id = ?", (json.dumps(version_1), job.id))
    loaded = await get_job(db, job.id)
    assert loaded is not None
    assert loaded.request == JobRequest(prompt="Mira", character_id=4, character_name="Mira", character_version=None)


async def test_a_job_is_found_by_its_result_or_status_message_and_its_thread_through_their_indexes(
    db: Database,
) -> None:
    """Migration 0021's partial indexes: a reply to either of a job's messages, or a message in its thread, finds
    it (the newest where several match), jobs without those messages are left out, and the lookup by message
    is two index searches, not a read of the whole table."""

    def made(job_id: str, at: float, **ids: int | None) -> Job:
        return Job(
            id=job_id,
            created_at=at,
            guild_id=1,
            channel_id=2,
            user_id=3,
            kind="imagine",
            status="done",
            request=JobRequest(prompt=job_id),
            **ids,  # type: ignore[arg-type]
        )

    await insert_job(db, made("bare", 1.0))
    await insert_job(db, made("old", 2.0, result_message_id=10, status_message_id=11, thread_id=50))
    await insert_job(db, made("new", 3.0, result_message_id=20, status_message_id=10, thread_id=50))
    await insert_job(db, made("other", 4.0, result_message_id=30, status_message_id=None, thread_id=None))
    found = {m: (j.id if (j := await job_for_message(db, m)) else None) for m in (10, 11, 20, 30, 99)}
    assert found == {10: "new", 11: "old", 20: "new", 30: "other", 99: None}
    assert (job := await latest_done_job_in_thread(db, 50)) is not None and job.id == "new"
    assert await latest_done_job_in_thread(db, 51) is None

    lookup = "SELECT id FROM jobs WHERE result_message_id = 10 OR status_message_id = 10"
    if db.dialect == "sqlite":
        plan = " ".join(str(row[3]) for row in await db.fetchall(f"EXPLAIN QUERY PLAN {lookup}"))
    else:  # a table this small is read whole anyway: ask whether the indexes can answer
        async with db.transaction() as tx:
            await tx.execute("SET LOCAL enable_seqscan = off")
            plan = " ".join(str(row[0]) for row in await tx.fetchall(f"EXPLAIN {lookup}"))
    assert "jobs_result_message" in plan and "jobs_status_message" in plan, plan


# --- character history: the migration, retention and deleting people's data ------------------------------
KEYS = [f"{n:064x}" for n in range(1, 9)]


async def test_the_history_migration_keeps_todays_characters_as_their_current_version(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    before = tmp_path / "before"
    before.mkdir()
    for migration in load_migrations()[:12]:
        (before / migration.name).write_text(migration.sql)
    async with await Database.open(path, migrations_dir=before) as db, db.transaction() as conn:
        await conn.execute(
            "INSERT INTO characters (id, guild_id, name, name_key, description, created_by, created_at, "
            "updated_at, version) VALUES (1, 1, 'Mira', 'mira', 'red braid', 7, 10, 20, 3), "
            "(2, 1, 'Tomo', 'tomo', 'round face', 8, 10, 10, 1)"
        )
        # Added newest-last, but inserted out of order: added_at decides the order.
        await conn.executemany(
            "INSERT INTO character_images (character_id, image_key, version, added_at) VALUES (1, ?, ?, ?)",
            [(KEYS[1], 3, 30.0), (KEYS[0], 2, 15.0)],
        )
    async with await Database.open(path) as db:
        mira = await character_versions(db, 1)
        assert [(v.version, v.change, v.changed_by, v.description, v.image_keys) for v in mira] == [
            (3, "kept", None, "red braid", (KEYS[0], KEYS[1]))  # who made version 3 was never recorded
        ]
        assert await character_images(db, 1) == [KEYS[0], KEYS[1]]
        [tomo] = await character_versions(db, 2)
        assert (tomo.version, tomo.change, tomo.changed_by, tomo.image_keys) == (1, "create", 8, ())
        # And history goes on from there.
        saved = await change_character(db, 1, changed_by=9, change="edit", max_images=3, add_keys=[KEYS[2]])
        assert saved.character.version == 4 and await character_images(db, 1) == KEYS[:3]


async def backdate_all(db: Database, days: float) -> float:
    now = time.time()
    async with db.transaction() as conn:
        await conn.execute("UPDATE images SET created_at = ?", (now - days * DAY,))
    return now


async def test_retention_keeps_the_images_any_version_of_a_character_uses(db: Database, store: ImageStore) -> None:
    first, second, third, other = [await store.put(PNG + bytes([n]), "image/png") for n in range(4)]
    mira = await create_character(
        db, guild_id=1, name="Mira", description="d", created_by=7, image_keys=[first, second], max_images=2
    )
    # The first image drops out of the current set, but version 1 still uses it.
    await change_character(db, mira.id, changed_by=7, change="edit", max_images=2, add_keys=[third])
    assert await character_images(db, mira.id) == [second, third]
    now = await backdate_all(db, 10)
    assert await store.prune(older_than_days=7, now=now) == 1
    assert not await store.exists(other)
    assert all([await store.exists(key) for key in (first, second, third)])
    await delete_character(db, mira.id)
    assert await store.prune(older_than_days=7, now=now) == 3


async def test_the_creators_forget_me_keeps_a_shared_character_and_takes_their_name_off(
    db: Database, store: ImageStore
) -> None:
    upload, result, later, unrelated = [await store.put(PNG + bytes([n]), "image/png") for n in range(4)]
    for key in (result, unrelated):
        await insert_job(
            db,
            Job(guild_id=1, channel_id=2, user_id=7, kind="imagine", request=JobRequest(prompt="p"), image_key=key),
        )
    mira = await create_character(
        db, guild_id=1, name="Mira", description="d", created_by=7, image_keys=[upload], max_images=2
    )
    await change_character(db, mira.id, changed_by=7, change="add_image", max_images=2, add_keys=[result])
    # Bob's edit leaves the creator's result in version 2 only.
    await change_character(db, mira.id, changed_by=8, change="edit", max_images=1, add_keys=[later])
    forgotten = await forget_user(db, store, 7)
    assert (forgotten.jobs, forgotten.images) == (2, 1)
    assert not await store.exists(unrelated)
    assert all([await store.exists(key) for key in (upload, result, later)])
    kept = await get_character(db, 1, "Mira")
    assert kept is not None and kept.created_by == FORGOTTEN and kept.version == 3
    versions = await character_versions(db, mira.id)
    assert [(v.version, v.changed_by) for v in versions] == [(3, 8), (2, None), (1, None)]
    assert versions[1].image_keys == (upload, result)

    # Purging the server takes the character, every version, and their images.
    purged = await purge_guild(db, store, 1)
    assert purged.characters == 1 and purged.images == 3
    assert await fetch_one(db, "SELECT count(*) FROM character_versions") == 0
    assert await fetch_one(db, "SELECT count(*) FROM character_version_images") == 0
