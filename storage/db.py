"""The database: SQLite (the embedded default) or PostgreSQL (several processes), and its schema migrations.

Storage modules write plain SQL with ``?`` placeholders and call five methods, on the `Database` itself
(one statement, committed at once) or on the connection a `transaction()` yields:

    row = await db.fetchone("SELECT ... WHERE id = ?", (job_id,))
    async with db.transaction() as tx:
        await tx.execute("UPDATE ...", (...))          # returns the number of rows changed
        rows = await tx.fetchall("SELECT ...")

Rows are sequences (tuples on SQLite, asyncpg Records on PostgreSQL): index them or unpack them.

- **SQLite**: one aiosqlite connection for writes and reads, an asyncio lock so that transactions from
  different coroutines don't interleave, BEGIN IMMEDIATE so that another process waits (busy_timeout), and
  read-only connections for reports. Several processes can share the file, but only one claims jobs.
- **PostgreSQL**: an asyncpg pool; ``?`` becomes ``$1, $2, ...`` (cached per statement). `lock()` takes a
  transaction-level advisory lock, which is how admission and claiming stay exact across processes.

Migrations are the numbered files in storage/migrations (``0001_initial.sql``, ...), written once in
SQLite's type names. On PostgreSQL the same file is applied with INTEGER read as BIGINT (Discord ids are
64-bit), REAL as DOUBLE PRECISION and ``INTEGER PRIMARY KEY`` as an identity column; a file that needs
more than that has a ``NNNN_name.postgresql.sql`` twin. Each file is applied in its own transaction together
with the version bump (``PRAGMA user_version`` on SQLite, the ``schema_version`` table on PostgreSQL,
where an advisory lock also keeps two processes starting at once from migrating twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol

import aiosqlite

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 5000
#: Connections a PostgreSQL process opens at most: its running jobs' writes, reports and admissions.
POSTGRES_POOL_SIZE = 10

_MIGRATION_NAME = re.compile(r"(\d{4})_(\w+?)(\.postgresql)?\.sql")

Dialect = Literal["sqlite", "postgresql"]
Row = Sequence[Any]
Params = Sequence[Any]

#: Advisory lock keys (PostgreSQL): one per thing that must happen one process at a time.
LOCK_MIGRATE = 0x62616E01
LOCK_JOBS = 0x62616E02
#: Advisory lock namespaces (PostgreSQL's two-key locks): admissions lock the guild and the member they count.
LOCK_GUILD = 0x62616E03
LOCK_MEMBER = 0x62616E04
LOCK_USER_INSTALLS = 0x62616E05
#: PostgreSQL's notification channel: a job was queued or gave its slot back, so idle processes claim now.
NOTIFY_CHANNEL = "banana_jobs"


class MigrationError(RuntimeError):
    """The migration files are inconsistent, or one of them failed to apply."""


class IntegrityError(Exception):
    """A constraint refused a write (a duplicate key, a failed CHECK), on either backend."""


class DatabaseError(RuntimeError):
    """The database can't be reached or refused to open (the message says why, without the password)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # the file name, e.g. "0001_initial.sql"
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR, dialect: Dialect = "sqlite") -> list[Migration]:
    """Read the migration files for `dialect`, checking they are numbered 1, 2, 3, ... without gaps."""
    base: dict[int, Migration] = {}
    twins: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name!r} is not named NNNN_name.sql")
        migration = Migration(int(match[1]), path.name, path.read_text(encoding="utf-8"))
        target = twins if match[3] else base
        if migration.version in target:
            raise MigrationError(f"migration number {migration.version} is used twice ({path.name})")
        target[migration.version] = migration

    migrations = [base[v] for v in sorted(base)]
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration {migration.name} has number {migration.version}, expected {expected} "
                "(numbers must start at 1 and have no gaps or duplicates)"
            )
    for version, twin in twins.items():
        if version not in base:
            raise MigrationError(f"{twin.name} has no NNNN_name.sql of the same number")
    if dialect == "sqlite":
        return migrations
    return [twins.get(m.version) or Migration(m.version, m.name, postgres_types(m.sql)) for m in migrations]


def postgres_types(sql: str) -> str:
    """A migration written in SQLite's type names, for PostgreSQL: 64-bit integers (Discord ids need them),
    double-precision floats (unix times need them) and identity primary keys."""
    sql = re.sub(r"\bINTEGER PRIMARY KEY\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", sql)
    sql = re.sub(r"\bINTEGER\b", "BIGINT", sql)
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)


class Connection(ABC):
    """A connection inside a transaction (or a read-only one): the statements storage modules run."""

    dialect: Dialect

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Params]) -> None: ...

    async def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Params]) -> None:
        """Insert many rows of the same columns in one go (PostgreSQL: one COPY)."""
        placeholders = ", ".join("?" for _ in columns)
        await self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", rows)

    @abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...

    @abstractmethod
    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    @abstractmethod
    def stream(self, sql: str, params: Params = ()) -> AsyncIterator[Row]:
        """The rows a few hundred at a time, for results too long to hold (a CSV export)."""

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row (None when there is no row)."""
        row = await self.fetchone(sql, params)
        return row[0] if row is not None else None


class Queryable(Protocol):
    """A `Database` (each statement committed at once) or a transaction's `Connection`: storage functions that
    may run inside an admission's or a claim's transaction take either."""

    dialect: Dialect

    async def execute(self, sql: str, params: Params = ()) -> int: ...
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...
    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...
    async def fetchval(self, sql: str, params: Params = ()) -> Any: ...


class Database(ABC):
    """An open database with an up-to-date schema. Create it with `Database.open`."""

    dialect: Dialect

    @staticmethod
    async def open(target: Path | str, *, migrations_dir: Path = MIGRATIONS_DIR) -> Database:
        """Open the database and apply pending migrations. `target` is a ``postgresql://`` URL, or the path of a
        SQLite file (created if needed; ``":memory:"`` for a throwaway one in tests)."""
        if is_postgres_url(name := str(target)):
            return await PostgresDatabase.connect(name, migrations_dir=migrations_dir)
        return await SQLiteDatabase.connect(target, migrations_dir=migrations_dir)

    # --- one statement, committed at once --------------------------------------------------------------
    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    @abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...

    @abstractmethod
    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetchone(sql, params)
        return row[0] if row is not None else None

    # --- several statements -----------------------------------------------------------------------------
    @abstractmethod
    def transaction(
        self, *, locks: Sequence[tuple[int, int]] = (), generic_plans: bool = False
    ) -> AbstractAsyncContextManager[Connection]:
        """Run the block in one transaction: committed if it finishes, rolled back if it raises or is
        cancelled. It first takes `locks`, (namespace, id) keys held until it ends (see `lock`): namespace by
        namespace in the order they first appear, and within each its ids ascending. Callers name the
        namespaces in one order (admission: user installs, guilds, members), so two transactions can't wait
        for each other in a circle. With `generic_plans`, PostgreSQL plans each statement of the block once
        per connection, not once per run: for statements whose best plan doesn't depend on their parameters'
        values (no time bound among them)."""

    @abstractmethod
    def reading(self) -> AbstractAsyncContextManager[Connection]:
        """A connection of its own for report queries, which may run side by side with each other and with
        writes."""

    @abstractmethod
    async def lock(self, tx: Connection, key: int) -> None:
        """Inside a transaction: wait until no other process holds `key`, and hold it until the transaction
        ends. (On SQLite, a write transaction already excludes every other writer.)"""

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call `wake` whenever another process says the job queue changed (PostgreSQL; on SQLite this process
        is the only one)."""
        return None

    async def notify(self) -> None:
        """Tell the other processes that the job queue changed."""
        return None

    @abstractmethod
    async def schema_version(self) -> int:
        """The number of the last migration applied."""

    @abstractmethod
    async def close(self) -> None: ...

    # --- SQL that differs between the two ----------------------------------------------------------------
    def whole(self, expression: str) -> str:
        """`expression` (not negative) rounded down to an integer."""
        if self.dialect == "sqlite":
            return f"CAST({expression} AS INTEGER)"
        return f"CAST(floor({expression}) AS BIGINT)"

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# --- SQLite ---------------------------------------------------------------------------------------------


class _SQLiteConnection(Connection):
    dialect: Dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._conn.execute(sql, params) as cursor:
            return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._conn.execute(sql, params) as cursor:
            row = await cursor.fetchone()
        return tuple(row) if row is not None else None

    async def stream(self, sql: str, params: Params = ()) -> AsyncIterator[Row]:
        async with self._conn.execute(sql, params) as cursor:
            async for row in cursor:
                yield row


class SQLiteDatabase(Database):
    dialect: Dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: Path | str = ":memory:") -> None:
        self._conn = conn
        self._main = _SQLiteConnection(conn)
        self._path = path
        self._write_lock = asyncio.Lock()
        # Read-only connections for reports: each has its own thread, and WAL lets them read while the bot
        # writes, so a report's queries run side by side (on several cores).
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._reader_count = 0

    @classmethod
    async def connect(cls, path: Path | str, *, migrations_dir: Path = MIGRATIONS_DIR) -> SQLiteDatabase:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; we issue BEGIN/COMMIT ourselves.
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            # WAL lets readers (reports, backups) run while the bot writes; NORMAL sync is safe with WAL and
            # much faster than FULL.
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA foreign_keys = ON")
            await conn.execute("PRAGMA synchronous = NORMAL")
            db = cls(conn, path)
            await db._migrate(load_migrations(migrations_dir, "sqlite"))
        except BaseException:
            # aiosqlite's worker thread is not a daemon: an unclosed connection would keep the process alive
            # after a failed start.
            await conn.close()
            raise
        return db

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._main.fetchall(sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        return await self._main.fetchone(sql, params)

    @asynccontextmanager
    async def transaction(
        self, *, locks: Sequence[tuple[int, int]] = (), generic_plans: bool = False
    ) -> AsyncIterator[Connection]:
        # `locks` are held already: BEGIN IMMEDIATE takes the database's only write lock.
        # (Reads share the connection, so a read that runs while another coroutine's transaction is open sees
        # its uncommitted rows; none of the bot's reads decide anything that a rollback would undo.)
        async with self._write_lock:
            try:
                # IMMEDIATE takes SQLite's write lock up front, so another process writing the same file makes
                # us wait (busy_timeout) instead of failing halfway through.
                await self._conn.execute("BEGIN IMMEDIATE")
                yield self._main
                await self._conn.commit()
            except sqlite3.IntegrityError as exc:
                await self._conn.rollback()
                raise IntegrityError(str(exc)) from exc
            except BaseException:
                await self._conn.rollback()  # a no-op if BEGIN never ran or COMMIT already did
                raise

    @asynccontextmanager
    async def reading(self, *, limit: int = 4) -> AsyncIterator[Connection]:
        if str(self._path) == ":memory:":
            yield self._main
            return
        if self._readers.empty() and self._reader_count < limit:
            self._reader_count += 1
            reader = await aiosqlite.connect(self._path)
            await reader.execute("PRAGMA query_only = ON")
            await reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._readers.put_nowait(reader)
        reader = await self._readers.get()
        try:
            yield _SQLiteConnection(reader)
        finally:
            self._readers.put_nowait(reader)

    async def lock(self, tx: Connection, key: int) -> None:
        return None  # BEGIN IMMEDIATE already holds the database's only write lock

    async def schema_version(self) -> int:
        return int(await self.fetchval("PRAGMA user_version"))

    async def close(self) -> None:
        while not self._readers.empty():
            await self._readers.get_nowait().close()
        await self._conn.close()

    async def _migrate(self, migrations: list[Migration]) -> None:
        current = await self.schema_version()
        _check_not_newer(current, len(migrations))
        for migration in migrations[current:]:
            # executescript handles files with many statements. The version bump goes in the same transaction,
            # so either both happen or neither does.
            script = f"BEGIN IMMEDIATE;\n{migration.sql}\n;\nPRAGMA user_version = {migration.version};\nCOMMIT;"
            try:
                await self._conn.executescript(script)
            except sqlite3.Error as e:
                await self._conn.rollback()
                raise MigrationError(
                    f"migration {migration.name} failed: {e}; database left at schema version {migration.version - 1}"
                ) from e
            log.info("applied migration %s", migration.name)


def _check_not_newer(current: int, latest: int) -> None:
    if current > latest:
        raise MigrationError(
            f"database schema is version {current} but this code only knows up to {latest}; "
            "refusing to run an older bot against a newer database"
        )


# --- PostgreSQL -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (a ``?`` inside a quoted string is left alone)."""
    out: list[str] = []
    number = 0
    for index, part in enumerate(re.split(r"('(?:[^']|'')*')", sql)):
        if index % 2:  # a string literal
            out.append(part)
            continue
        pieces = part.split("?")
        for piece in pieces[:-1]:
            number += 1
            out.append(f"{piece}${number}")
        out.append(pieces[-1])
    return "".join(out)


def _rowcount(status: str) -> int:
    """asyncpg's status line ("UPDATE 3", "INSERT 0 1", "DELETE 0") -> rows changed."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _PostgresConnection(Connection):
    dialect: Dialect = "postgresql"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        return _rowcount(await self._conn.execute(numbered(sql), *params))

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._conn.executemany(numbered(sql), [tuple(r) for r in rows])

    async def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Params]) -> None:
        # COPY stores 100 jobs in about half the time of an INSERT run per row (bench/README.md, bench_scale).
        await self._conn.copy_records_to_table(table, records=[tuple(r) for r in rows], columns=list(columns))

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._conn.fetch(numbered(sql), *params))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = await self._conn.fetchrow(numbered(sql), *params)
        return row

    async def stream(self, sql: str, params: Params = ()) -> AsyncIterator[Row]:
        if self._conn.is_in_transaction():  # a transaction of Database.transaction's: the cursor lives in it
            async for row in self._conn.cursor(numbered(sql), *params, prefetch=500):
                yield row
            return
        # A server-side cursor lives in a transaction; `reading()` connections have none of their own.
        async with self._conn.transaction():
            async for row in self._conn.cursor(numbered(sql), *params, prefetch=500):
                yield row


def _connection_class() -> type[Any]:
    import asyncpg

    class PooledConnection(asyncpg.Connection):  # type: ignore[misc]
        """Nothing here leaves session state behind (the advisory locks are transaction-level; no SET, no held
        cursors; the one LISTEN connection is held until the pool closes), so the reset asyncpg sends on every
        release would be a round trip for nothing: about a third of a short read's time (bench/README.md)."""

        def get_reset_query(self) -> str:
            return ""

    return PooledConnection


class PostgresDatabase(Database):
    dialect: Dialect = "postgresql"

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._listener: Any = None
        self._wake: Callable[..., None] = lambda *_: None

    @classmethod
    async def connect(cls, url: str, *, migrations_dir: Path = MIGRATIONS_DIR) -> PostgresDatabase:
        import asyncpg  # only deployments that use PostgreSQL load it

        try:
            # Every connection kept open (asyncpg reopens one it closed for being idle): a burst after a quiet
            # spell would otherwise open connections, 8-12 ms each, while members wait (bench_scale's burst).
            pool = await asyncpg.create_pool(
                url,
                min_size=POSTGRES_POOL_SIZE,
                max_size=POSTGRES_POOL_SIZE,
                command_timeout=60,
                connection_class=_connection_class(),
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise DatabaseError(f"can't connect to PostgreSQL at {redacted(url)}: {exc}") from exc
        db = cls(pool)
        try:
            await db._migrate(load_migrations(migrations_dir, "postgresql"))
        except BaseException:
            await pool.close()
            raise
        return db

    async def execute(self, sql: str, params: Params = ()) -> int:
        # One statement is a transaction of its own: no BEGIN and COMMIT round trips around it.
        import asyncpg

        try:
            return _rowcount(await self._pool.execute(numbered(sql), *params))
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(str(exc)) from exc

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._pool.fetch(numbered(sql), *params))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = await self._pool.fetchrow(numbered(sql), *params)
        return row

    @asynccontextmanager
    async def transaction(
        self, *, locks: Sequence[tuple[int, int]] = (), generic_plans: bool = False
    ) -> AsyncIterator[Connection]:
        import asyncpg

        try:
            async with self._pool.acquire() as conn:
                if not locks and not generic_plans:
                    async with conn.transaction():
                        yield _PostgresConnection(conn)
                    return
                begin = ["BEGIN"]
                if generic_plans:
                    begin.append("SET LOCAL plan_cache_mode = force_generic_plan")
                if locks:
                    begin.append(_lock_statement(locks))
                try:
                    # BEGIN and the rest in one round trip (the simple query protocol takes several statements).
                    await conn.execute("; ".join(begin))
                    yield _PostgresConnection(conn)
                except BaseException:
                    with contextlib.suppress(Exception):  # a broken connection: the pool rolls back or drops it
                        await conn.execute("ROLLBACK")
                    raise
                await conn.execute("COMMIT")
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(str(exc)) from exc

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Connection]:
        async with self._pool.acquire() as conn:
            yield _PostgresConnection(conn)

    async def lock(self, tx: Connection, key: int) -> None:
        await tx.execute("SELECT pg_advisory_xact_lock(?)", (key,))

    async def listen(self, wake: Callable[[], None]) -> None:
        if self._listener is None:
            self._listener = await self._pool.acquire()
        self._wake = lambda *_: wake()
        await self._listener.add_listener(NOTIFY_CHANNEL, self._wake)

    async def notify(self) -> None:
        await self._pool.execute(f"NOTIFY {NOTIFY_CHANNEL}")

    async def schema_version(self) -> int:
        exists = await self.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
        if not exists:
            return 0
        return int(await self.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):  # a connection already lost has nothing to unlisten
                await self._listener.remove_listener(NOTIFY_CHANNEL, self._wake)
            await self._pool.release(self._listener)
            self._listener = None
        await self._pool.close()

    async def _migrate(self, migrations: list[Migration]) -> None:
        import asyncpg

        async with self._pool.acquire() as conn, conn.transaction():
            # Two processes starting at once: the second waits here, then finds nothing left to do.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_MIGRATE)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        current = await self.schema_version()
        _check_not_newer(current, len(migrations))
        for migration in migrations[current:]:
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_MIGRATE)
                    done = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
                    if done >= migration.version:
                        continue  # another process applied it while we waited
                    await conn.execute(migration.sql)
                    await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", migration.version)
            except asyncpg.PostgresError as e:
                raise MigrationError(
                    f"migration {migration.name} failed: {e}; database left at schema version {migration.version - 1}"
                ) from e
            log.info("applied migration %s", migration.name)


def _lock_statement(keys: Sequence[tuple[int, int]]) -> str:
    """One statement taking PostgreSQL's two-key transaction locks in the order `Database.transaction` gives:
    unnest yields the arrays' elements in order, and each row's lock is taken as the row is made. The keys are
    integers written into the text (no parameters in the simple query protocol that runs it with BEGIN).
    The two-key locks take int4s: an id folded to 32 bits may share a lock with another, which only costs a
    little waiting."""
    rank: dict[int, int] = {}
    for space, _ in keys:
        rank.setdefault(space, len(rank))
    folded = sorted({(rank[space], _int4(space), _int4(key)) for space, key in keys})
    spaces = ",".join(str(int(space)) for _, space, _ in folded)
    ids = ",".join(str(int(key)) for _, _, key in folded)
    return (
        "SELECT count(pg_advisory_xact_lock(space, key)) "
        f"FROM unnest('{{{spaces}}}'::int4[], '{{{ids}}}'::int4[]) AS t(space, key)"
    )


def _int4(value: int) -> int:
    """A 64-bit id folded into PostgreSQL's signed 32-bit integer."""
    folded = (value ^ (value >> 32)) & 0xFFFFFFFF
    return folded - 0x100000000 if folded >= 0x80000000 else folded


def one_of(q: Queryable, column: str, values: Collection[Any]) -> tuple[str, list[Any]]:
    """SQL for `column` equal to one of `values`, and its parameters: one array on PostgreSQL (so a statement
    is prepared once for any number of values), one parameter each on SQLite."""
    if q.dialect == "postgresql":
        return f"{column} = ANY(?)", [list(values)]
    return f"{column} IN ({', '.join('?' for _ in values)})", list(values)


def is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def redacted(url: str) -> str:
    """A database URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
