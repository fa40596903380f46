"""The metrics endpoint of the real bot (real discord.py against the fake Discord and the fake image API)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import bot.client
from bot.cli import run_bot
from bot.client import create_bot
from bot.config import load_settings
from bot.observability.metrics import DISCORD_HTTP_LOGGER, MetricsServerError
from tests.bot_harness import BotHarness, wait_until
from tests.test_observability import samples_of


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


async def test_the_running_bot_serves_its_metrics_and_closes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bot.client, "METRICS_REFRESH_INTERVAL", 0.02)
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    async with BotHarness(tmp_path) as h, httpx.AsyncClient(timeout=5) as scraper:
        running = await h.start(BANANA_METRICS_PORT=str(port))
        assert running.metrics.rate_limits in logging.getLogger(DISCORD_HTTP_LOGGER).handlers

        await h.wait_result(await h.imagine(h.alice, "a cat"))
        scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

        async def scrape_shows_the_image_and_latency() -> bool:
            scraped.update(samples_of((await scraper.get(url)).text))
            return ("banana_gateway_latency_seconds", (("shard", "0"),)) in scraped

        await wait_until(scrape_shows_the_image_and_latency, "the scrape shows shard 0's latency", timeout=10)
        labels = (("model", "gemini-3-pro-image-preview"), ("provider", "gemini"), ("size", "1K"))
        assert scraped[("banana_images_total", labels)] == 1
        assert scraped[("banana_provider_request_seconds_count", labels)] == 1
        assert scraped[("banana_gateway_latency_seconds", (("shard", "0"),))] >= 0
        # The admission and the claims (one took the job; others may have found nothing) were timed.
        assert scraped[("banana_admission_seconds_count", ())] == 1
        assert scraped[("banana_claim_seconds_count", ())] >= 1
        assert 0 < scraped[("banana_admission_seconds_sum", ())] < 5

        await h.stop()
        assert running.metrics.rate_limits not in logging.getLogger(DISCORD_HTTP_LOGGER).handlers
        with pytest.raises(httpx.ConnectError):
            await scraper.get(url)


async def test_a_port_in_use_stops_the_start(tmp_path: Path, busy_port: int) -> None:
    async with BotHarness(tmp_path) as h:
        starting = create_bot(load_settings(h.settings_env(BANANA_METRICS_PORT=str(busy_port)), env_file=None))
        try:
            with pytest.raises(MetricsServerError, match=f"127.0.0.1:{busy_port}: the port is already in use"):
                await asyncio.wait_for(starting.start(h.discord.token), 10)
            assert not hasattr(starting, "runtime")  # stopped before opening anything else
        finally:
            await starting.close()


async def test_banana_bot_run_says_so_in_one_line(
    tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    async with BotHarness(tmp_path) as h:
        settings = load_settings(h.settings_env(BANANA_METRICS_PORT=str(busy_port)), env_file=None)
        # run_bot runs its own event loop, as `banana-bot run` does; the fakes keep serving on this one.
        code = await asyncio.wait_for(asyncio.to_thread(run_bot, settings), 30)
    assert code == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"error: can't serve metrics on 127.0.0.1:{busy_port}: the port is already in use; "
        "stop what listens there or pick another BANANA_METRICS_PORT."
    )
    assert "Traceback" not in err
