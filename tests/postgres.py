"""A throwaway PostgreSQL server for the tests: initdb in a temporary folder, a Unix socket there (no TCP
port at all), stopped and deleted at the end. Each test gets a database of its own (`fresh_url`).

The binaries are Debian's (``apt-get install postgresql``; `.ci/run` installs them where missing). PostgreSQL
refuses to run as root, so as root the server runs as the ``postgres`` user the package creates.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

START_TIMEOUT = 60


def postgres_bin_dir() -> Path:
    """Where initdb and pg_ctl are: the newest /usr/lib/postgresql/N/bin, or the PATH's."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError(
            "PostgreSQL's server programs (initdb, pg_ctl) are not installed: `apt-get install -y postgresql` "
            "(./test.sh's CI script does this)"
        )
    return Path(initdb).parent


def postgres_installed() -> bool:
    try:
        postgres_bin_dir()
    except RuntimeError:
        return False
    return True


class PostgresServer:
    def __init__(self) -> None:
        self.bin = postgres_bin_dir()
        self.folder = Path(tempfile.mkdtemp(prefix="banana-pg-"))
        self.data = self.folder / "data"
        self.user = "banana"
        self._as_root = os.geteuid() == 0
        self._names = itertools.count(1)
        self._template: str | None = None

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> None:
        if self._as_root:
            entry = pwd.getpwnam("postgres")
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8", "--no-sync")
        # No TCP: the socket lives in our folder. fsync off: a test database need not survive a power cut.
        options = f"-k {self.folder} -c listen_addresses='' -c fsync=off -c max_connections=300"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{database}?host={self.folder}"

    def fresh_url(self, *, migrated: bool = True) -> str:
        """A new database on this server: a copy of one with every migration applied (much faster than applying
        them each time), or an empty one."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        template = ["-T", self._migrated_template()] if migrated else []
        self._run("createdb", "-h", str(self.folder), "-U", self.user, *template, name)
        return self.url(name)

    def _migrated_template(self) -> str:
        if self._template is None:
            from storage.db import Database

            name = "migrated_template"
            self._run("createdb", "-h", str(self.folder), "-U", self.user, name)

            async def migrate() -> None:
                await (await Database.open(self.url(name))).close()

            _in_thread(migrate)  # its own event loop, whether or not the caller is inside one
            self._template = name
        return self._template


def _in_thread(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(make())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(START_TIMEOUT)
    if errors:
        raise errors[0]


_shared: PostgresServer | None = None


def shared_server() -> PostgresServer:
    """The session's one server, started on first use and stopped when the test process exits."""
    global _shared
    if _shared is None:
        server = PostgresServer()
        server.start()
        atexit.register(server.stop)
        _shared = server
    return _shared


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
