"""Shared fixtures. ``fake_api``: a fresh FakeImageAPI on 127.0.0.1 per test (see tests/fake_image_api)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.bot_harness import BotHarness
from tests.fake_image_api import FakeImageAPI


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
