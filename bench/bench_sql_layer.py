#!/usr/bin/env python3
"""Per-call overhead: hand-written SQL on raw drivers vs SQLAlchemy Core 2.x async, on SQLite and PostgreSQL.

Operations (on a table shaped like Banana Bot's `jobs`, 100k rows):
  insert  one row in its own transaction
  claim   BEGIN; running counts per guild; oldest queued row (PG: FOR UPDATE SKIP LOCKED); UPDATE to running; COMMIT
  get     one row by primary key (all 28 columns)
  count   count(*) WHERE user_id = ? AND created_at >= ?  (index jobs_user_created)

Layers, interleaved in a random order on every iteration so that machine noise hits all of them alike:
  raw       option 1: a thin layer (same API on both backends) over aiosqlite / asyncpg, '?' -> $n cached
  raw_nr    (PG only) the same, asyncpg pool whose connection class returns an empty get_reset_query() (skips
            the RESET ALL round trip asyncpg's pool sends on every release; open transactions are still rolled back)
  sa_text   option 2: AsyncEngine + text() statements (module-level), engine.begin() / engine.connect()
  sa_core   option 2: Core expression statements built once at module level with bindparam()
  sa_inline option 2: Core expressions built inside every call (literal values -> bound params, compiled cache)
  sa_ac     (reads only) text() on a second engine with isolation_level=AUTOCOMMIT: no BEGIN/ROLLBACK per read

Usage:
  python -m bench.bench_sql_layer --pg-host /tmp/pgdir [--runs 2000] [--warmup 200] [--rows 100000]
  python -m bench.bench_sql_layer --sqlite-only ...
  python -m bench.bench_sql_layer --startup          # import time / RSS of each option (subprocesses)
  python -m bench.bench_sql_layer --loc PATH_TO_REPO # migration-runner lines (ours vs alembic init -t async)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite
import asyncpg
import sqlalchemy as sa
from sqlalchemy import bindparam, event, func, text
from sqlalchemy.ext.asyncio import create_async_engine

# --------------------------------------------------------------------------------------------- schema

COLUMNS = (
    "id",
    "created_at",
    "guild_id",
    "channel_id",
    "user_id",
    "kind",
    "locale",
    "status",
    "request_json",
    "parent_id",
    "version",
    "thread_id",
    "status_message_id",
    "result_message_id",
    "user_turn_json",
    "model_turn_json",
    "image_key",
    "generation_id",
    "error_class",
    "error_detail",
    "defer_ms",
    "queue_ms",
    "started_at",
    "finished_at",
    "attempts_started",
    "grid_id",
    "tile",
    "user_install",
)

# One DDL for both: DOUBLE PRECISION / BIGINT are accepted by SQLite (REAL / INTEGER affinity).
DDL = [
    """CREATE TABLE jobs (
        id                 TEXT    PRIMARY KEY,
        created_at         DOUBLE PRECISION NOT NULL,
        guild_id           BIGINT,
        channel_id         BIGINT  NOT NULL,
        user_id            BIGINT  NOT NULL,
        kind               TEXT    NOT NULL,
        locale             TEXT    NOT NULL DEFAULT 'en-US',
        status             TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        request_json       TEXT    NOT NULL,
        parent_id          TEXT    REFERENCES jobs (id),
        version            INTEGER NOT NULL DEFAULT 1,
        thread_id          BIGINT,
        status_message_id  BIGINT,
        result_message_id  BIGINT,
        user_turn_json     TEXT,
        model_turn_json    TEXT,
        image_key          TEXT,
        generation_id      BIGINT,
        error_class        TEXT,
        error_detail       TEXT,
        defer_ms           DOUBLE PRECISION,
        queue_ms           DOUBLE PRECISION,
        started_at         DOUBLE PRECISION,
        finished_at        DOUBLE PRECISION,
        attempts_started   INTEGER NOT NULL DEFAULT 0,
        grid_id            TEXT,
        tile               INTEGER,
        user_install       INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX jobs_status ON jobs (status)",
    "CREATE INDEX jobs_user_created ON jobs (user_id, created_at)",
    "CREATE INDEX jobs_guild_created ON jobs (guild_id, created_at)",
    "CREATE INDEX jobs_result_message ON jobs (result_message_id)",
    "CREATE INDEX jobs_thread ON jobs (thread_id, created_at)",
    "CREATE INDEX jobs_user_installs ON jobs (created_at) WHERE user_install = 1",
]

# SQLAlchemy Table for the Core layers (types only matter for bind processing).
md = sa.MetaData()
T = sa.Table(
    "jobs",
    md,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("guild_id", sa.BigInteger),
    sa.Column("channel_id", sa.BigInteger, nullable=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("locale", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("request_json", sa.Text, nullable=False),
    sa.Column("parent_id", sa.Text),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("thread_id", sa.BigInteger),
    sa.Column("status_message_id", sa.BigInteger),
    sa.Column("result_message_id", sa.BigInteger),
    sa.Column("user_turn_json", sa.Text),
    sa.Column("model_turn_json", sa.Text),
    sa.Column("image_key", sa.Text),
    sa.Column("generation_id", sa.BigInteger),
    sa.Column("error_class", sa.Text),
    sa.Column("error_detail", sa.Text),
    sa.Column("defer_ms", sa.Double),
    sa.Column("queue_ms", sa.Double),
    sa.Column("started_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    sa.Column("attempts_started", sa.Integer, nullable=False),
    sa.Column("grid_id", sa.Text),
    sa.Column("tile", sa.Integer),
    sa.Column("user_install", sa.Integer, nullable=False),
)
assert tuple(T.c.keys()) == COLUMNS

# --- SQL (hand-written, '?' style) -----------------------------------------------------------------------

INSERT_SQL = f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
COUNTS_SQL = "SELECT guild_id, count(*) FROM jobs WHERE status = ? GROUP BY guild_id"
OLDEST_SQL = "SELECT id, guild_id, user_id FROM jobs WHERE status = ? ORDER BY created_at LIMIT 1"
CLAIM_SQL = "UPDATE jobs SET status = ?, started_at = ?, attempts_started = attempts_started + 1 WHERE id = ?"
GET_SQL = f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id = ?"
COUNT_SQL = "SELECT count(*) FROM jobs WHERE user_id = ? AND created_at >= ?"
RESET_SQL = "UPDATE jobs SET status = 'queued', created_at = ? WHERE id = ?"  # untimed, keeps the queue steady

# text() versions (named params)
T_INSERT = text(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)})")
T_COUNTS = text("SELECT guild_id, count(*) FROM jobs WHERE status = :status GROUP BY guild_id")
T_OLDEST = {
    False: text("SELECT id, guild_id, user_id FROM jobs WHERE status = :status ORDER BY created_at LIMIT 1"),
    True: text(
        "SELECT id, guild_id, user_id FROM jobs WHERE status = :status ORDER BY created_at LIMIT 1 "
        "FOR UPDATE SKIP LOCKED"
    ),
}
T_CLAIM = text(
    "UPDATE jobs SET status = :new_status, started_at = :started, "
    "attempts_started = attempts_started + 1 WHERE id = :id"
)
T_GET = text(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id = :id")
T_COUNT = text("SELECT count(*) FROM jobs WHERE user_id = :uid AND created_at >= :since")

# Core expression versions, built once
C_INSERT = T.insert()
C_COUNTS = sa.select(T.c.guild_id, func.count()).where(T.c.status == bindparam("status")).group_by(T.c.guild_id)
_oldest = (
    sa.select(T.c.id, T.c.guild_id, T.c.user_id)
    .where(T.c.status == bindparam("status"))
    .order_by(T.c.created_at)
    .limit(1)
)
C_OLDEST = {False: _oldest, True: _oldest.with_for_update(skip_locked=True)}
C_CLAIM = (
    sa.update(T)
    .where(T.c.id == bindparam("b_id"))
    .values(status=bindparam("b_status"), started_at=bindparam("b_started"), attempts_started=T.c.attempts_started + 1)
)
C_GET = sa.select(T).where(T.c.id == bindparam("id"))
C_COUNT = (
    sa.select(func.count()).select_from(T).where(T.c.user_id == bindparam("uid"), T.c.created_at >= bindparam("since"))
)

# --------------------------------------------------------------------------------------------- option 1: thin layer


class RawSqlite:
    """Mirrors storage/db.py: one aiosqlite connection, autocommit mode, write lock + BEGIN IMMEDIATE."""

    pg = False

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> RawSqlite:
        conn = await aiosqlite.connect(path, isolation_level=None)
        for p in (
            "PRAGMA journal_mode = WAL",
            "PRAGMA busy_timeout = 5000",
            "PRAGMA foreign_keys = ON",
            "PRAGMA synchronous = NORMAL",
        ):
            await conn.execute(p)
        return cls(conn)

    @asynccontextmanager
    async def transaction(self):
        async with self.lock:
            try:
                await self.conn.execute("BEGIN IMMEDIATE")
                yield self
                await self.conn.commit()
            except BaseException:
                await self.conn.rollback()
                raise

    async def execute(self, sql, params=()):
        await self.conn.execute(sql, params)

    async def fetchall(self, sql, params=()):
        async with self.conn.execute(sql, params) as cur:
            return await cur.fetchall()

    async def fetchone(self, sql, params=()):
        async with self.conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def close(self):
        await self.conn.close()


_QMARK = re.compile(r"'[^']*'|\?")


@functools.lru_cache(maxsize=512)
def to_dollar(sql: str) -> str:
    """'?' placeholders -> $1..$n (not inside string literals); cached per statement text."""
    n = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal n
        if m[0] != "?":
            return m[0]
        n += 1
        return f"${n}"

    return _QMARK.sub(sub, sql)


class _PgTx:
    __slots__ = ("c",)

    def __init__(self, c):
        self.c = c

    async def execute(self, sql, params=()):
        await self.c.execute(to_dollar(sql), *params)

    async def fetchall(self, sql, params=()):
        return await self.c.fetch(to_dollar(sql), *params)

    async def fetchone(self, sql, params=()):
        return await self.c.fetchrow(to_dollar(sql), *params)


class NoResetQueryConnection(asyncpg.Connection):
    """For raw_nr: release() still rolls back an open transaction and drops listeners (Connection._reset), but
    skips the 'SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL' round trip. Safe when the
    code never leaves session state behind (SET, session advisory locks, LISTEN, WITH HOLD cursors)."""

    def get_reset_query(self) -> str:
        return ""


class RawPg:
    """The same API over an asyncpg pool."""

    pg = True

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, host: str, *, noreset: bool = False) -> RawPg:
        kw = {"connection_class": NoResetQueryConnection} if noreset else {}
        pool = await asyncpg.create_pool(host=host, user="bench", database="postgres", min_size=2, max_size=4, **kw)
        return cls(pool)

    @asynccontextmanager
    async def transaction(self):
        async with self.pool.acquire() as c, c.transaction():
            yield _PgTx(c)

    async def execute(self, sql, params=()):
        await self.pool.execute(to_dollar(sql), *params)

    async def fetchall(self, sql, params=()):
        return await self.pool.fetch(to_dollar(sql), *params)

    async def fetchone(self, sql, params=()):
        return await self.pool.fetchrow(to_dollar(sql), *params)

    async def close(self):
        await self.pool.close()


# --------------------------------------------------------------------------------------------- layers


class Layer:
    name = "?"
    ops = ("insert", "claim", "get", "count")


class RawLayer(Layer):
    def __init__(self, name, db):
        self.name, self.db, self.pg = name, db, db.pg
        self.oldest = OLDEST_SQL + (" FOR UPDATE SKIP LOCKED" if db.pg else "")

    async def insert(self, row):
        async with self.db.transaction() as tx:
            await tx.execute(INSERT_SQL, row)

    async def claim(self, now):
        async with self.db.transaction() as tx:
            counts = await tx.fetchall(COUNTS_SQL, ("running",))
            row = await tx.fetchone(self.oldest, ("queued",))
            await tx.execute(CLAIM_SQL, ("running", now, row[0]))
        return row[0], len(counts)

    async def get(self, job_id):
        row = await self.db.fetchone(GET_SQL, (job_id,))
        return tuple(row)

    async def count(self, uid, since):
        row = await self.db.fetchone(COUNT_SQL, (uid, since))
        return int(row[0])


class SaLayer(Layer):
    """style: 'text' | 'core' | 'inline'. `read_engine` is used for get/count (an AUTOCOMMIT engine for sa_ac)."""

    def __init__(self, name, engine, pg, style, read_engine=None, ops=None):
        self.name, self.engine, self.pg, self.style = name, engine, pg, style
        self.read_engine = read_engine or engine
        if ops:
            self.ops = ops
        self.w_engine = engine.execution_options(sqlite_immediate=True) if not pg else engine

    async def insert(self, row):
        if self.style == "text":
            stmt, params = T_INSERT, dict(zip(COLUMNS, row, strict=False))
        elif self.style == "core":
            stmt, params = C_INSERT, dict(zip(COLUMNS, row, strict=False))
        else:
            stmt, params = T.insert().values(dict(zip(COLUMNS, row, strict=False))), None
        async with self.w_engine.begin() as conn:
            await conn.execute(stmt, params)

    async def claim(self, now):
        async with self.w_engine.begin() as conn:
            if self.style == "text":
                counts = (await conn.execute(T_COUNTS, {"status": "running"})).all()
                row = (await conn.execute(T_OLDEST[self.pg], {"status": "queued"})).first()
                await conn.execute(T_CLAIM, {"new_status": "running", "started": now, "id": row[0]})
            elif self.style == "core":
                counts = (await conn.execute(C_COUNTS, {"status": "running"})).all()
                row = (await conn.execute(C_OLDEST[self.pg], {"status": "queued"})).first()
                await conn.execute(C_CLAIM, {"b_status": "running", "b_started": now, "b_id": row[0]})
            else:
                counts = (
                    await conn.execute(
                        sa.select(T.c.guild_id, func.count()).where(T.c.status == "running").group_by(T.c.guild_id)
                    )
                ).all()
                q = sa.select(T.c.id, T.c.guild_id, T.c.user_id).where(T.c.status == "queued")
                q = q.order_by(T.c.created_at).limit(1)
                if self.pg:
                    q = q.with_for_update(skip_locked=True)
                row = (await conn.execute(q)).first()
                await conn.execute(
                    sa.update(T)
                    .where(T.c.id == row[0])
                    .values(status="running", started_at=now, attempts_started=T.c.attempts_started + 1)
                )
        return row[0], len(counts)

    async def get(self, job_id):
        if self.style == "text":
            stmt, params = T_GET, {"id": job_id}
        elif self.style == "core":
            stmt, params = C_GET, {"id": job_id}
        else:
            stmt, params = sa.select(T).where(T.c.id == job_id), None
        async with self.read_engine.connect() as conn:
            row = (await conn.execute(stmt, params)).first()
        return tuple(row)

    async def count(self, uid, since):
        if self.style == "text":
            stmt, params = T_COUNT, {"uid": uid, "since": since}
        elif self.style == "core":
            stmt, params = C_COUNT, {"uid": uid, "since": since}
        else:
            stmt, params = (
                (sa.select(func.count()).select_from(T).where(T.c.user_id == uid, T.c.created_at >= since)),
                None,
            )
        async with self.read_engine.connect() as conn:
            return int((await conn.execute(stmt, params)).scalar_one())


def sqlite_engine(path: str, *, autocommit: bool = False):
    """SQLAlchemy's documented recipe for real SQLite transactions (pysqlite's own BEGIN handling only starts a
    transaction before DML, which would leave the claim's SELECTs outside it), plus the bot's PRAGMAs.
    Writes get BEGIN IMMEDIATE like storage/db.py; reads a deferred BEGIN. autocommit=True: no BEGIN at all."""
    eng = create_async_engine(
        f"sqlite+aiosqlite:///{path}", **({"isolation_level": "AUTOCOMMIT"} if autocommit else {})
    )

    @event.listens_for(eng.sync_engine, "connect")
    def _connect(dbapi_conn, _rec):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        for p in (
            "PRAGMA journal_mode = WAL",
            "PRAGMA busy_timeout = 5000",
            "PRAGMA foreign_keys = ON",
            "PRAGMA synchronous = NORMAL",
        ):
            cur.execute(p)
        cur.close()

    if not autocommit:

        @event.listens_for(eng.sync_engine, "begin")
        def _begin(conn):
            immediate = conn.get_execution_options().get("sqlite_immediate")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return eng


def pg_engine(host: str, *, autocommit: bool = False):
    return create_async_engine(
        f"postgresql+asyncpg://bench@/postgres?host={host}", **({"isolation_level": "AUTOCOMMIT"} if autocommit else {})
    )


# --------------------------------------------------------------------------------------------- data

REQUEST_JSON = json.dumps(
    {
        "v": 2,
        "prompt": "a banana wearing sunglasses on a beach at sunset, photorealistic",
        "size": "1K",
        "aspect_ratio": "16:9",
        "model": "gemini-2.5-flash-image",
        "reference_keys": ["ab12cd34ef56", "0123456789ab"],
    },
    separators=(",", ":"),
)
N_USERS, N_GUILDS, N_QUEUED, N_RUNNING = 1000, 50, 50, 20
NOW = 1_780_000_000.0


def make_row(job_id, created_at, user_id, guild_id, status):
    r = dict.fromkeys(COLUMNS)
    r.update(
        id=job_id,
        created_at=created_at,
        guild_id=guild_id,
        channel_id=900_000_000_000_000_000 + guild_id,
        user_id=user_id,
        kind="imagine",
        locale="en-US",
        status=status,
        request_json=REQUEST_JSON,
        version=1,
        attempts_started=0,
        user_install=0,
    )
    if status == "done":
        r.update(
            result_message_id=1_200_000_000_000_000_000 + hash(job_id) % 10**9,
            image_key="k" + job_id,
            user_turn_json='{"parts":[{"text":"x"}]}',
            model_turn_json='{"parts":[{"image":"k"}]}',
            defer_ms=120.5,
            queue_ms=3.2,
            started_at=created_at + 1,
            finished_at=created_at + 9,
            attempts_started=1,
            generation_id=1,
        )
    return tuple(r[c] for c in COLUMNS)


def seed_rows(n, rng):
    rows = []
    for i in range(n):
        if i < N_QUEUED:
            status, created = "queued", NOW - 100 + i
        elif i < N_QUEUED + N_RUNNING:
            status, created = "running", NOW - 200 + i
        else:
            status, created = rng.choice(("done",) * 8 + ("failed", "cancelled")), NOW - rng.uniform(0, 30 * 86400)
        rows.append(
            make_row(f"seed{i:07d}", created, 10**17 + rng.randrange(N_USERS), 10**18 + rng.randrange(N_GUILDS), status)
        )
    return rows


async def setup_sqlite(path, rows):
    db = await RawSqlite.open(path)
    async with db.transaction():
        for s in DDL:
            await db.conn.execute(s)
        await db.conn.executemany(INSERT_SQL, rows)
    # No ANALYZE: the bot never runs it, and with sqlite_stat1 present SQLite plans the claim's
    # "counts by guild WHERE status = 'running'" as a full scan of jobs_guild_created (~15 ms at 20k rows).
    return db


async def setup_pg(host, rows):
    conn = await asyncpg.connect(host=host, user="bench", database="postgres")
    await conn.execute("DROP TABLE IF EXISTS jobs")
    async with conn.transaction():
        for s in DDL:
            await conn.execute(s)
        await conn.copy_records_to_table("jobs", records=rows, columns=list(COLUMNS))
    await conn.execute("VACUUM ANALYZE jobs")
    return conn


# --------------------------------------------------------------------------------------------- benchmark


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def bench_backend(label, layers, reset_exec, ids, runs, warmup, rng):
    """reset_exec(sql, params): untimed statement through a separate raw connection."""
    results = {}
    counter = [0]
    created = [NOW + 1.0]

    for op in ("insert", "claim", "get", "count"):
        part = [L for L in layers if op in L.ops]
        times = {L.name: [] for L in part}
        gc.collect()
        for it in range(warmup + runs):
            # the same arguments for every layer in this iteration
            uid = 10**17 + rng.randrange(N_USERS)
            since = NOW - 7 * 86400
            job_id = rng.choice(ids)
            order = part[:]
            rng.shuffle(order)
            for L in order:
                if op == "insert":
                    counter[0] += 1
                    row = make_row(
                        f"new{counter[0]:08d}", NOW + counter[0] * 1e-3, uid, 10**18 + rng.randrange(N_GUILDS), "done"
                    )
                    t0 = time.perf_counter_ns()
                    await L.insert(row)
                    dt = time.perf_counter_ns() - t0
                elif op == "claim":
                    t0 = time.perf_counter_ns()
                    claimed, _ = await L.claim(NOW)
                    dt = time.perf_counter_ns() - t0
                    created[0] += 1.0
                    await reset_exec(RESET_SQL, (created[0], claimed))  # back to the end of the queue
                elif op == "get":
                    t0 = time.perf_counter_ns()
                    await L.get(job_id)
                    dt = time.perf_counter_ns() - t0
                else:
                    t0 = time.perf_counter_ns()
                    await L.count(uid, since)
                    dt = time.perf_counter_ns() - t0
                if it >= warmup:
                    times[L.name].append(dt / 1000)
        results[op] = times
        print(f"  [{label}] {op} done", file=sys.stderr)
    return results


def report(label, results, baseline="raw"):
    lines = [
        f"### {label}",
        "",
        "| op | layer | median µs | p99 µs | ratio median (÷raw) | ratio p99 (÷raw) "
        "| paired ratio (median of per-iteration ratios) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for op, times in results.items():
        base = times[baseline]
        bm, bp = statistics.median(base), pct(base, 99)
        for name, xs in times.items():
            m, p = statistics.median(xs), pct(xs, 99)
            paired = statistics.median(a / b for a, b in zip(xs, base, strict=False))
            lines.append(f"| {op} | {name} | {m:,.0f} | {p:,.0f} | {m / bm:.2f} | {p / bp:.2f} | {paired:.2f} |")
    return "\n".join(lines)


async def run_sqlite(args, rng):
    tmp = tempfile.mkdtemp(prefix="sqlcompare-")
    path = os.path.join(tmp, "bench.sqlite3")
    rows = seed_rows(args.rows, rng)
    ids = [r[0] for r in rows]
    raw = await setup_sqlite(path, rows)
    resetter = await aiosqlite.connect(path, isolation_level=None)
    await resetter.execute("PRAGMA busy_timeout = 5000")

    async def reset_exec(sql, params):
        await resetter.execute(sql, params)

    eng = sqlite_engine(path)
    eng_ac = sqlite_engine(path, autocommit=True)
    layers = [
        RawLayer("raw", raw),
        SaLayer("sa_text", eng, False, "text"),
        SaLayer("sa_core", eng, False, "core"),
        SaLayer("sa_inline", eng, False, "inline"),
        SaLayer("sa_ac", eng, False, "text", read_engine=eng_ac, ops=("get", "count")),
    ]
    try:
        res = await bench_backend("sqlite", layers, reset_exec, ids, args.runs, args.warmup, rng)
    finally:
        await eng.dispose()
        await eng_ac.dispose()
        await resetter.close()
        await raw.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return res


async def run_pg(args, rng):
    rows = seed_rows(args.rows, rng)
    ids = [r[0] for r in rows]
    admin = await setup_pg(args.pg_host, rows)

    async def reset_exec(sql, params):
        await admin.execute(to_dollar(sql), *params)

    raw = await RawPg.open(args.pg_host)
    raw_nr = await RawPg.open(args.pg_host, noreset=True)
    eng = pg_engine(args.pg_host)
    eng_ac = pg_engine(args.pg_host, autocommit=True)
    layers = [
        RawLayer("raw", raw),
        RawLayer("raw_nr", raw_nr),
        SaLayer("sa_text", eng, True, "text"),
        SaLayer("sa_core", eng, True, "core"),
        SaLayer("sa_inline", eng, True, "inline"),
        SaLayer("sa_ac", eng, True, "text", read_engine=eng_ac, ops=("get", "count")),
    ]
    try:
        res = await bench_backend("postgresql", layers, reset_exec, ids, args.runs, args.warmup, rng)
    finally:
        await eng.dispose()
        await eng_ac.dispose()
        await raw.close()
        await raw_nr.close()
        await admin.execute("DROP TABLE jobs")
        await admin.close()
    return res


# --------------------------------------------------------------------------------------------- startup cost

STARTUP = {
    "baseline (python -c pass)": "",
    "raw: import aiosqlite, asyncpg": "import aiosqlite, asyncpg",
    "sa: import sqlalchemy + ext.asyncio": "import sqlalchemy; from sqlalchemy.ext.asyncio import create_async_engine",
    "sa: + create_async_engine(sqlite+aiosqlite)+first query": (
        "import asyncio, sqlalchemy as sa\nfrom sqlalchemy.ext.asyncio import create_async_engine\n"
        "async def m():\n e=create_async_engine('sqlite+aiosqlite:///:memory:')\n"
        " async with e.connect() as c: await c.execute(sa.text('select 1'))\n await e.dispose()\nasyncio.run(m())"
    ),
    "sa: + create_async_engine(postgresql+asyncpg) (no connect)": (
        "from sqlalchemy.ext.asyncio import create_async_engine\n"
        "e=create_async_engine('postgresql+asyncpg://u@/db?host=/tmp')"
    ),
    "raw: import + aiosqlite connect + first query": (
        "import asyncio, aiosqlite, asyncpg\nasync def m():\n c=await aiosqlite.connect(':memory:')\n"
        " await (await c.execute('select 1')).fetchone()\n await c.close()\nasyncio.run(m())"
    ),
    "alembic: import alembic.command + op": "import alembic.command, alembic.op, alembic.config",
}

# VmHWM (peak RSS of this process image; ru_maxrss would carry over the forking parent's peak across exec)
_PROBE = (
    "import time\nt=time.perf_counter()\n{code}\nt=time.perf_counter()-t\n"
    "hwm=[l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
    "print(t*1000, int(hwm)/1024)"
)


def startup(reps=7):
    out = [f"| what | wall ms (median of {reps} fresh processes) | max RSS MiB |", "|---|---:|---:|"]
    for label, code in STARTUP.items():
        ts, rss = [], []
        for _ in range(reps):
            o = subprocess.run(
                [sys.executable, "-c", _PROBE.format(code=code)], capture_output=True, text=True, check=True
            ).stdout.split()
            ts.append(float(o[0]))
            rss.append(float(o[1]))
        out.append(f"| {label} | {statistics.median(ts):.1f} | {statistics.median(rss):.1f} |")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- migration-runner LOC


def _code_lines(text_: str, comment: str = "#") -> int:
    n, in_doc = 0, False
    for line in text_.splitlines():
        s = line.strip()
        if in_doc:
            if s.endswith(('"""', "'''")):
                in_doc = False
            continue
        if s.startswith(('"""', "'''")):
            if not (len(s) > 3 and s.endswith(('"""', "'''"))):
                in_doc = not in_doc
            continue
        if in_doc or not s or s.startswith(comment):
            continue
        n += 1
    return n


_RUNNER_NAMES = {
    "MigrationError",
    "Migration",
    "load_migrations",
    "_migrate",
    "user_version",
    "schema_version",
    "postgres_types",
    "_check_not_newer",
}


def _runner_lines(src: str) -> tuple[int, str]:
    import ast

    lines = src.splitlines()
    total, parts = 0, []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in _RUNNER_NAMES:
            n = _code_lines("\n".join(lines[node.lineno - 1 : node.end_lineno]))
            parts.append(f"{node.name}@{node.lineno}={n}")
            total += n
    return total + 2, ", ".join(parts)  # + the _MIGRATION_NAME regex and MIGRATIONS_DIR constants


def loc(repo: str):
    out = []
    head = subprocess.run(["git", "-C", repo, "show", "HEAD:storage/db.py"], capture_output=True, text=True)
    if head.returncode == 0:
        n, parts = _runner_lines(head.stdout)
        out.append(f"numbered-file runner, storage/db.py at HEAD (SQLite only): {n} code lines ({parts}, +2 constants)")
    work = (Path(repo) / "storage/db.py").read_text()
    if head.returncode != 0 or work != head.stdout:
        n, parts = _runner_lines(work)
        out.append(f"numbered-file runner, storage/db.py working tree: {n} code lines ({parts}, +2 constants)")
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            [str(Path(sys.executable).parent / "alembic"), "init", "-t", "async", "alembic"],
            cwd=d,
            check=True,
            capture_output=True,
        )
        for f in ("alembic.ini", "alembic/env.py", "alembic/script.py.mako"):
            t = (Path(d) / f).read_text()
            out.append(
                f"alembic init -t async: {f}: {len(t.splitlines())} lines, "
                f"{_code_lines(t, '#' if not f.endswith('mako') else '##')} non-comment"
            )
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- main


def versions():
    import importlib.metadata as md_
    import sqlite3

    v = {p: md_.version(p) for p in ("aiosqlite", "asyncpg", "sqlalchemy", "alembic", "greenlet")}
    v["python"] = sys.version.split()[0]
    v["sqlite (library)"] = sqlite3.sqlite_version
    return v


async def main_async(args):
    rng = random.Random(args.seed)
    out = {}
    if not args.pg_only:
        print("sqlite ...", file=sys.stderr)
        out["SQLite (file, WAL, synchronous=NORMAL)"] = await run_sqlite(args, rng)
    if args.pg_host and not args.sqlite_only:
        print("postgresql ...", file=sys.stderr)
        conn = await asyncpg.connect(host=args.pg_host, user="bench", database="postgres")
        pgv = await conn.fetchval("SHOW server_version")
        await conn.close()
        out[f"PostgreSQL {pgv} (Unix socket)"] = await run_pg(args, rng)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg-host", help="PostgreSQL Unix-socket directory (user bench, database postgres)")
    ap.add_argument("--sqlite-only", action="store_true")
    ap.add_argument("--pg-only", action="store_true")
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--startup", action="store_true", help="also measure import time / RSS")
    ap.add_argument("--loc", metavar="REPO", help="also count migration-runner lines")
    ap.add_argument("--no-bench", action="store_true", help="only --startup / --loc")
    ap.add_argument("--json", help="write raw timings here")
    args = ap.parse_args()

    print("## versions\n")
    for k, v in versions().items():
        print(f"- {k}: {v}")
    print(f"\nruns={args.runs} warmup={args.warmup} rows={args.rows} seed={args.seed}\n")
    res = {} if args.no_bench else asyncio.run(main_async(args))
    for label, r in res.items():
        print(report(label, r))
        print()
    if args.json:
        Path(args.json).write_text(json.dumps(res))
    if args.startup:
        print("### startup cost\n")
        print(startup())
        print()
    if args.loc:
        print("### migration runner size\n")
        print(loc(args.loc))


if __name__ == "__main__":
    main()
