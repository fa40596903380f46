"""`banana-bot health`: the database answers, and the running process is connected on every shard."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import load_settings
from bot.health import check, heartbeat_path, heartbeat_text
from tests.bot_harness import BotHarness, wait_until

pytestmark = pytest.mark.timeout(60)


async def test_a_running_bot_is_healthy_and_a_stopped_one_is_not(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        bot = await h.start()
        settings = bot.settings

        async def healthy() -> bool:
            return (await asyncio.to_thread(check, settings)).healthy  # as the command runs: its own event loop

        # The heartbeat written as the bot connected, at the latest the one written on ready.
        await wait_until(healthy, "the bot is healthy")
        health = await asyncio.to_thread(check, settings)
        assert health.lines[0].startswith("database: ok") and "shards 0 (" in health.lines[1]
        await h.stop()
        health = await asyncio.to_thread(check, settings)  # as the command runs: its own event loop
        assert not health.healthy and "stopped" in health.lines[-1]


def write_beat(path: Path, shards: list[tuple[int, bool, float]], *, age: float = 0.0) -> None:
    beat = json.loads(heartbeat_text(shards))
    beat["at"] -= age
    path.write_text(json.dumps(beat))


def test_a_shard_that_lost_its_connection_or_an_old_heartbeat_is_unhealthy(tmp_path: Path) -> None:
    env = {"BANANA_DATA_DIR": str(tmp_path), "BANANA_SHARD_COUNT": "4", "BANANA_SHARD_IDS": "2-3"}
    settings = load_settings(env, env_file=None)
    (tmp_path / "banana.sqlite3").write_bytes(b"")  # an empty file is a valid empty SQLite database
    path = heartbeat_path(settings)
    assert path.name == "heartbeat-shards-2-3"  # one per process when they share a folder
    assert not check(settings).healthy  # no heartbeat yet
    write_beat(path, [(2, True, 0.042), (3, True, float("inf"))])
    health = check(settings)
    assert health.healthy and "shards 2 (42 ms), 3 (up)" in health.lines[1], health.lines
    write_beat(path, [(2, True, 0.042), (3, False, 0.05)])
    health = check(settings)
    assert not health.healthy and health.lines[-1] == "gateway: shard 3 not connected"
    write_beat(path, [(2, True, 0.042), (3, True, 0.05)], age=300)
    health = check(settings)
    assert not health.healthy and "300 s ago" in health.lines[-1]


def test_an_unreachable_database_is_unhealthy_without_showing_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql://banana:hunter2@/banana?host={tmp_path / 'no-server-here'}"
    for name, value in {"BANANA_DATA_DIR": str(tmp_path), "BANANA_DATABASE_URL": url}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no .env here
    write_beat(tmp_path / "heartbeat", [(0, True, 0.04)])
    started = time.monotonic()
    assert main(["health"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("unhealthy: database: can't connect to PostgreSQL") and "hunter2" not in err, err
    assert "gateway: shards 0 (40 ms)" in err
    assert time.monotonic() - started < 15
