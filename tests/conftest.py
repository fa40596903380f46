"""Shared fixtures. ``fake_api``: a fresh FakeImageAPI on 127.0.0.1 per test (see tests/fake_image_api)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.fake_image_api import FakeImageAPI


@pytest_asyncio.fixture
async def fake_api() -> AsyncIterator[FakeImageAPI]:
    """A running fake image API (small payloads, no latency); stopped after the test."""
    async with FakeImageAPI() as fake:
        yield fake
