"""The SQLite connection and its schema migrations.

One `Database` wraps one aiosqlite connection. aiosqlite runs every call on a
single worker thread, so individual statements never overlap; `transaction()`
adds an asyncio lock so that multi-statement writes from different coroutines
don't interleave either. (Reads share the connection, so a read that runs while
another coroutine's transaction is open sees its uncommitted rows; for a usage
log that's harmless.)

Migrations are the numbered files in storage/migrations (``0001_initial.sql``,
``0002_something.sql``, ...). The schema version lives in ``PRAGMA user_version``;
on open, every file numbered above it is applied, each in its own transaction
together with the version bump, so a failing file leaves the previous version.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiosqlite

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 5000

_MIGRATION_NAME = re.compile(r"(\d{4})_(\w+)\.sql")


class MigrationError(RuntimeError):
    """The migration files are inconsistent, or one of them failed to apply."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # the file name, e.g. "0001_initial.sql"
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Read the migration files, checking they are numbered 1, 2, 3, ... without gaps."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name!r} is not named NNNN_name.sql")
        migrations.append(Migration(int(match[1]), path.name, path.read_text(encoding="utf-8")))

    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration {migration.name} has number {migration.version}, expected {expected} "
                "(numbers must start at 1 and have no gaps or duplicates)"
            )
    return migrations


class Database:
    """An open SQLite database with an up-to-date schema. Create it with `Database.open`."""

    def __init__(self, conn: aiosqlite.Connection, path: Path | str = ":memory:") -> None:
        self._conn = conn
        self._path = path
        self._write_lock = asyncio.Lock()
        # Extra read-only connections for reports: each has its own thread, and WAL lets them read while
        # the bot writes, so a report's queries can run side by side (on several cores).
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._reader_count = 0

    @classmethod
    async def open(cls, path: Path | str, *, migrations_dir: Path = MIGRATIONS_DIR) -> Database:
        """Open (creating if needed) the database at `path` and apply pending migrations.

        `path` may be ":memory:" for a throwaway database in tests.
        """
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)

        # isolation_level=None: no implicit transactions; we issue BEGIN/COMMIT ourselves.
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            # WAL lets readers (reports, backups) run while the bot writes; NORMAL sync
            # is safe with WAL and much faster than FULL.
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA foreign_keys = ON")
            await conn.execute("PRAGMA synchronous = NORMAL")
            db = cls(conn, path)
            await db._migrate(load_migrations(migrations_dir))
        except BaseException:
            # aiosqlite's worker thread is not a daemon: an unclosed connection would
            # keep the process alive after a failed start.
            await conn.close()
            raise
        return db

    @property
    def conn(self) -> aiosqlite.Connection:
        """The connection, for the repository modules. Write through `transaction()`."""
        return self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Hold the write lock and run the block in one transaction.

        Commits if the block finishes, rolls back if it raises (or is cancelled).
        """
        async with self._write_lock:
            try:
                # IMMEDIATE takes SQLite's write lock up front, so another process
                # writing the same file makes us wait (busy_timeout) instead of failing
                # halfway through.
                await self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
                await self._conn.commit()
            except BaseException:
                # A no-op if BEGIN never ran or COMMIT already did.
                await self._conn.rollback()
                raise

    async def user_version(self) -> int:
        """The schema version: the number of the last migration applied."""
        async with self._conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    @asynccontextmanager
    async def reading(self, *, limit: int = 4) -> AsyncIterator[aiosqlite.Connection]:
        """A read-only connection of its own (the main one for an in-memory database), for report queries
        that may run concurrently with each other and with writes."""
        if str(self._path) == ":memory:":
            yield self._conn
            return
        if self._readers.empty() and self._reader_count < limit:
            self._reader_count += 1
            reader = await aiosqlite.connect(self._path)
            await reader.execute("PRAGMA query_only = ON")
            await reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._readers.put_nowait(reader)
        reader = await self._readers.get()
        try:
            yield reader
        finally:
            self._readers.put_nowait(reader)

    async def close(self) -> None:
        while not self._readers.empty():
            await self._readers.get_nowait().close()
        await self._conn.close()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _migrate(self, migrations: list[Migration]) -> None:
        current = await self.user_version()
        latest = len(migrations)
        if current > latest:
            raise MigrationError(
                f"database schema is version {current} but this code only knows up to {latest}; "
                "refusing to run an older bot against a newer database"
            )

        for migration in migrations[current:]:
            # executescript handles files with many statements. The version bump goes
            # in the same transaction, so either both happen or neither does.
            # (Two processes migrating the same file at once is not supported: the
            # second one fails cleanly and can simply be restarted.)
            script = f"BEGIN IMMEDIATE;\n{migration.sql}\n;\nPRAGMA user_version = {migration.version};\nCOMMIT;"
            try:
                await self._conn.executescript(script)
            except sqlite3.Error as e:
                await self._conn.rollback()
                raise MigrationError(
                    f"migration {migration.name} failed: {e}; database left at schema version {migration.version - 1}"
                ) from e
            log.info("applied migration %s", migration.name)
