"""Shared fixtures.

- ``fake_api``: a fresh FakeImageAPI on 127.0.0.1 per test (see tests/fake_image_api).
- ``postgres``: one throwaway PostgreSQL server for the session (tests/postgres.py), started on first use.
- ``database_target``: where a storage test's database lives, once per backend: a SQLite file, then a fresh
  PostgreSQL database. ``BANANA_TEST_BACKEND=postgresql`` makes the bot's own tests (the harness) run on
  PostgreSQL too.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.bot_harness import BotHarness
from tests.fake_image_api import FakeImageAPI
from tests.postgres import PostgresServer, postgres_installed, shared_server


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """The throwaway server. Without PostgreSQL's programs the tests that need it are skipped, so ./test.sh
    needs no database server; CI installs them and sets BANANA_REQUIRE_POSTGRES=1, so there they must run."""
    if not postgres_installed() and not os.environ.get("BANANA_REQUIRE_POSTGRES"):
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql); CI runs these tests")
    return shared_server()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file's path, or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return str(tmp_path / "data" / "bot.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.fresh_url()


@pytest_asyncio.fixture
async def fake_api() -> AsyncIterator[FakeImageAPI]:
    """A running fake image API (small payloads, no latency); stopped after the test."""
    async with FakeImageAPI() as fake:
        yield fake


@pytest_asyncio.fixture
async def harness(tmp_path: Path) -> AsyncIterator[BotHarness]:
    """The real bot, started against a fake Discord and a fake image API; checked for stray calls after."""
    async with BotHarness(tmp_path) as started:
        await started.start()
        yield started
        assert not started.discord.unknown_routes, started.discord.unknown_routes
        assert not started.discord.internal_errors, started.discord.internal_errors
