"""The queue, quotas, restarts and Discord's limits, end to end against the fake Discord and image API."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.cli import sync_commands
from bot.client import BananaBot
from bot.config import Settings, load_settings
from bot.ui import surfaces
from storage.generations import count_generations
from storage.jobs import count_reserved_since, get_job, jobs_where
from tests.bot_harness import BotHarness, custom_ids, embed_fields, has_image, image_size, wait_until
from tests.fake_discord import FakeInteraction
from tests.fake_image_api import Fault

pytestmark = pytest.mark.timeout(90)


def prompts_sent(h: BotHarness) -> list[str]:
    return [r.json["contents"][-1]["parts"][0]["text"] for r in h.gemini_requests()]


async def wait_queued(h: BotHarness, count: int) -> None:
    """Until `count` jobs are waiting or running (the bot admitted them)."""
    assert h.bot is not None
    queue = h.bot.jobs.queue
    await wait_until(lambda: queue.waiting_count + queue.running_count >= count, f"{count} jobs are queued", 5)


async def wait_running(h: BotHarness, count: int) -> None:
    """Until this bot runs `count` jobs (claims are asynchronous)."""
    assert h.bot is not None
    queue = h.bot.jobs.queue
    await wait_until(lambda: queue.running_here == count, f"{count} jobs run", 5)


async def test_a_burst_is_deferred_in_time_and_the_guild_cap_holds(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        members = [h.guild.add_member(f"m{n}") for n in range(10)]
        await h.start(BANANA_GUILD_CONCURRENT="2", BANANA_MAX_CONCURRENT="8")
        h.api.latency = 0.3
        inters = await asyncio.gather(*(h.imagine(m, f"picture {n}") for n, m in enumerate(members)))
        for inter in inters:
            assert (await inter.wait_callback()).status == 200
            assert inter.deferred_at is not None and inter.deferred_at < 3.0
        results = await asyncio.gather(*(h.wait_result(i, timeout=30) for i in inters))
        assert len({r.id for r in results}) == 10
        assert h.api.max_in_flight == 2  # never more than the guild's cap at the image API
        # Members further back were told their place in line.
        first_statuses = [(r.edits[0].get("content") or "") for r in results if r.edits]
        assert any("In line: number" in s for s in first_statuses), first_statuses


async def test_two_guilds_take_turns(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        other = h.discord.add_guild("Other Guild")
        carol = other.add_member("carol")
        busy = [h.guild.add_member(f"b{n}") for n in range(4)]
        await h.start(BANANA_MAX_CONCURRENT="1", BANANA_GUILD_CONCURRENT="1")
        h.api.latency = 0.2
        inters: list[FakeInteraction] = []
        for n, member in enumerate(busy):
            inters.append(await h.imagine(member, f"A{n}"))
            await wait_queued(h, n + 1)
            if n == 0:  # claims are asynchronous: A0 runs before the others arrive, as the test's story says
                await wait_running(h, 1)
        dave = other.add_member("dave")
        for n, member in enumerate([carol, dave]):
            inters.append(await h.discord.slash(other.id, other.channel_id, member, "imagine", {"prompt": f"B{n}"}))
            await wait_queued(h, len(busy) + n + 1)
        for inter in inters:
            await h.wait_result(inter, timeout=30)
        # A0 was already running; then the guilds alternate until only A is left.
        assert prompts_sent(h) == ["A0", "B0", "A1", "B1", "A2", "A3"]


async def test_cancel_is_for_the_requester_and_refunds(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start(BANANA_MAX_CONCURRENT="1")
        h.api.latency = 1.0
        running = await h.imagine(h.alice, "first")
        await wait_running(h, 1)
        waiting = await h.imagine(h.bob, "second")
        status = await h.discord.wait_for_message(
            lambda m: m.interaction_id == waiting.id and any(c.startswith("job:cancel:") for c in custom_ids(m))
        )
        assert "In line: number 1" in status.content
        cancel_id = next(c for c in custom_ids(status) if c.startswith("job:cancel:"))

        refused = await h.discord.click(status.id, cancel_id, h.alice)
        answer = await h.discord.wait_for_message(lambda m: m.interaction_id == refused.id)
        assert answer.ephemeral and "Only the person who asked" in answer.content

        accepted = await h.discord.click(status.id, cancel_id, h.bob)
        answer = await h.discord.wait_for_message(lambda m: m.interaction_id == accepted.id)
        assert answer.ephemeral and answer.content.startswith("Cancelled")
        await h.discord.wait_for_message(lambda m: m.id == status.id and m.content.startswith("Cancelled"))
        await h.wait_result(running)
        assert prompts_sent(h) == ["first"]
        assert h.bot is not None
        assert await count_reserved_since(h.bot.jobs.db, 0, user_id=h.bob.id) == 0
        job = await get_job(h.bot.jobs.db, cancel_id.split(":")[2])
        assert job is not None and job.status == "cancelled"


async def test_the_daily_limit_says_which_limit_and_when_it_resets(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start(BANANA_USER_DAILY="1")
        await h.wait_result(await h.imagine(h.alice, "the one for today"))
        refused = await h.imagine(h.alice, "one more")
        message = await h.wait_ephemeral(refused)
        assert "your 1 image for today" in message.content and "<t:" in message.content and ":R>" in message.content
        assert len(h.gemini_requests()) == 1
        # Someone else still can.
        await h.wait_result(await h.imagine(h.bob, "bob's first"))


async def test_too_many_pending_for_one_member(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start(BANANA_USER_PENDING="1")
        h.api.latency = 0.5
        first = await h.imagine(h.alice, "one")
        await wait_queued(h, 1)
        second = await h.imagine(h.alice, "two")
        message = await h.wait_ephemeral(second)
        assert "already have 1 image waiting or in progress" in message.content
        await h.wait_result(first)


async def test_a_result_over_the_upload_limit_is_reencoded_and_the_original_kept(tmp_path: Path) -> None:
    async with BotHarness(tmp_path, api_payload="realistic") as h:
        await h.start()
        inter = await h.imagine(h.alice, "a detailed city at night", resolution="4K", aspect_ratio="1:1")
        result = await h.wait_result(inter, timeout=60)
        [file] = result.files
        assert file.data[:3] == b"\xff\xd8\xff" and len(file.data) <= 10 * 2**20
        assert "upload limit" in embed_fields(result)["Notes"]
        assert h.bot is not None
        job = await get_job(h.bot.jobs.db, custom_ids(result)[0].split(":")[2])
        assert job is not None and job.image_key is not None
        original = await h.bot.runtime.images.get(job.image_key)
        assert original.startswith(b"\x89PNG") and len(original) > 10 * 2**20
        assert image_size(original) == (4096, 4096)


async def test_a_job_that_outlives_the_interaction_token_posts_through_the_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(surfaces, "INTERACTION_TOKEN_LIFETIME", 1.0)
    monkeypatch.setattr(surfaces, "TOKEN_SAFETY_MARGIN", 0.2)
    async with BotHarness(tmp_path, token_lifetime=1.0) as h:
        await h.start()
        h.api.latency = 1.5
        await h.imagine(h.alice, "a slow masterpiece")
        late = await h.discord.wait_for_message(
            lambda m: m.interaction_id is None and has_image(m) and m.channel_id == h.guild.channel_id
        )
        assert late.content.startswith(f"<@{h.alice.id}>") and "your image is ready" in late.content
        assert h.alice.id in late.mention_ids
        await h.discord.wait_for_message(lambda m: m.channel_id == late.id)  # its thread
        assert not any(c.status == 401 for c in h.discord.calls)  # the expired token was never used


async def test_an_unexpected_error_gives_a_reference_that_is_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with BotHarness(tmp_path) as h:
        bot = await h.start()

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug")

        bot.jobs.generation.generate = broken  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR):
            inter = await h.imagine(h.alice, "anything")
            message = await h.wait_ephemeral(inter)
        assert message.content.startswith("Sorry, something went wrong")
        reference = message.content.split("Reference: ")[1].split()[0]
        assert any(reference in r.getMessage() for r in caplog.records)
        assert "a bug" not in message.content
        assert await count_reserved_since(bot.jobs.db, 0, user_id=h.alice.id) == 0


async def test_queued_and_running_jobs_resume_after_a_restart_without_double_charging(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start(BANANA_MAX_CONCURRENT="1")
        h.api.latency = 2.0
        await h.imagine(h.alice, "interrupted while drawing")
        await wait_running(h, 1)
        waiting = await h.imagine(h.bob, "interrupted while waiting")
        status = await h.discord.wait_for_message(lambda m: m.interaction_id == waiting.id and "In line" in m.content)
        assert h.bot is not None
        db, queue = h.bot.jobs.db, h.bot.jobs.queue
        waiting_id = custom_ids(status)[0].split(":")[2]

        async def status_message_recorded() -> bool:  # once Discord has answered the edit
            job = await get_job(db, waiting_id)
            return job is not None and job.status_message_id == status.id

        await wait_until(status_message_recorded, "the waiting job records its status message")
        [running_job] = await jobs_where(db, "user_id = ?", (h.alice.id,))
        assert running_job.status == "running" and queue.position(waiting_id) == 1
        await h.stop()

        h.api.latency = 0.1
        bot = await h.restart(BANANA_MAX_CONCURRENT="1")
        # Both post through the channel, mentioning their requester; the old status message says what happened.
        for user, prompt in ((h.alice, "interrupted while drawing"), (h.bob, "interrupted while waiting")):
            await h.discord.wait_for_message(
                lambda m, u=user, p=prompt: (
                    has_image(m) and m.content.startswith(f"<@{u.id}>") and m.embeds[0]["description"] == p
                )  # type: ignore[misc]
            )
        assert any("restarted" in (e.get("content") or "") for e in h.discord.messages[status.id].edits)
        # The interrupted one is asked for again, the waiting one for the first time; neither twice more.
        assert Counter(prompts_sent(h)) == {"interrupted while drawing": 2, "interrupted while waiting": 1}
        for user in (h.alice, h.bob):
            assert await count_reserved_since(bot.jobs.db, 0, user_id=user.id) == 1
        assert await count_generations(bot.jobs.db) == 2  # one usage row each, not one per attempt


async def test_the_harness_bot_retries_a_server_error_as_production_does(harness: BotHarness) -> None:
    assert harness.bot is not None
    settings, production = harness.bot.settings, Settings()
    assert settings.retry == production.retry
    assert (settings.timeouts, settings.connect_timeout) == (production.timeouts, production.connect_timeout)
    harness.api.script(Fault.server_error(503))
    result = await harness.wait_result(await harness.imagine(harness.alice, "an overloaded model"))
    assert [r.status for r in harness.gemini_requests()] == [503, 200]
    assert has_image(result)


async def test_commands_sync_only_when_they_change_and_on_demand(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start()

        def global_puts() -> int:
            return sum(1 for c in h.discord.calls if c.method == "PUT" and c.path.endswith("/commands"))

        assert global_puts() == 1
        await h.restart()
        assert global_puts() == 1  # unchanged tree: no sync
        await h.stop()

        settings = load_settings(h.settings_env(), env_file=None)
        assert await sync_commands(settings, h.guild.id) == 0
        assert {c["name"] for c in h.discord.synced_commands[h.guild.id]} >= {"imagine"}


def test_discord_api_base_routes_rest_through_a_proxy(tmp_path: Path) -> None:
    from bot.client import create_bot

    saved = discord.http.Route.BASE
    try:
        settings = load_settings(
            {"DISCORD_API_BASE": "http://nirn:8080", "BANANA_DATA_DIR": str(tmp_path)}, env_file=None
        )
        create_bot(settings)
        assert discord.http.Route("GET", "/users/@me").url == "http://nirn:8080/api/v10/users/@me"
    finally:
        discord.http.Route.BASE = saved


async def test_one_member_bursting_runs_one_at_a_time(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start(BANANA_USER_CONCURRENT="1", BANANA_USER_PENDING="4", BANANA_GUILD_CONCURRENT="4")
        h.api.latency = 0.2
        inters = await asyncio.gather(*(h.imagine(h.alice, f"mine {n}") for n in range(4)))
        await asyncio.gather(*(h.wait_result(i, timeout=30) for i in inters))
        assert h.api.max_in_flight == 1
        assert sorted(prompts_sent(h)) == [f"mine {n}" for n in range(4)]


async def test_imagine_inside_a_thread_answers_in_place(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start()
        first = await h.wait_result(await h.imagine(h.alice, "a castle"))
        threads_before = len(h.discord.threads)
        inter = await h.imagine(h.alice, "a dragon", channel_id=first.id)  # run in the result's thread
        result = await h.wait_result(inter)
        assert result.channel_id == first.id and len(h.discord.threads) == threads_before


async def test_a_job_whose_channel_is_gone_after_a_restart_is_refunded_and_reported(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        side = h.guild.add_channel("side")
        await h.start(BANANA_MAX_CONCURRENT="1")
        h.api.latency = 2.0
        await h.imagine(h.alice, "keeps the slot busy")
        await wait_queued(h, 1)
        await h.imagine(h.bob, "a lost cause", channel_id=side)
        await wait_queued(h, 2)
        await h.stop()
        del h.discord.channels[side]  # deleted while the bot was down
        h.guild.channel_ids.remove(side)

        bot = await h.restart(BANANA_MAX_CONCURRENT="1")
        dm = await h.discord.wait_for_message(lambda m: "its channel is gone" in m.content)
        assert h.discord.channels[dm.channel_id].recipient == h.bob and "a lost cause" in dm.content

        async def refunded() -> bool:  # the refund is written right after the DM goes out
            return await count_reserved_since(bot.jobs.db, 0, user_id=h.bob.id) == 0

        await wait_until(refunded, "bob's lost job is refunded")


async def test_a_job_admitted_before_on_ready_runs_once(tmp_path: Path) -> None:
    """discord.py holds on_ready back until the guilds have arrived, but handles interactions meanwhile; a
    job admitted then is queued in this process and must not be 'resumed' a second time by on_ready."""
    async with BotHarness(tmp_path) as h:
        h.api.latency = 2.0  # still running when on_ready comes
        h.guild_ready_timeout = 1.0  # on_ready 1 s after the last GUILD_CREATE
        bot = h.launch()
        handled = on_ready_handled(bot)
        await h.discord.wait_ready()  # READY and the GUILD_CREATE are on the bot's socket
        inter = await h.imagine(h.alice, "admitted early")
        await wait_queued(h, 1)
        assert not h.ready.is_set(), "on_ready came before the job was admitted: the window was missed"
        await h.wait_ready()
        [job] = await jobs_where(bot.jobs.db, "user_id = ?", (h.alice.id,))
        assert job.status == "running", "the job ended before on_ready: nothing left to run twice"
        await wait_until(handled.is_set, "the bot's on_ready has returned", 10)
        result = await h.wait_result(inter)
        # A second run, had on_ready queued one, ends before the queue is idle.
        await asyncio.wait_for(bot.jobs.queue.wait_idle(), 10)
        await asyncio.wait_for(bot.jobs.wait_told(), 10)
        assert len(h.gemini_requests()) == 1
        posts = [m for m in h.discord.messages.values() if has_image(m) and m.interaction_id == inter.id]
        assert [m.id for m in posts] == [result.id]
        assert await count_generations(bot.jobs.db) == 1
        stored = await get_job(bot.jobs.db, job.id)
        assert stored is not None and stored.attempts_started == 1


def on_ready_handled(bot: BananaBot) -> asyncio.Event:
    """Set once the bot's own on_ready handlers have returned. discord.py runs each handler as a task named
    after the event, the bot's own first; this listener waits for its namesakes (and never sets the event
    if the tasks are no longer named so)."""
    handled = asyncio.Event()

    async def wait_for_the_others() -> None:
        me = asyncio.current_task()
        if me is None or not me.get_name().endswith("on_ready"):
            return
        await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not me and t.get_name() == me.get_name()))
        handled.set()

    bot.add_listener(wait_for_the_others, "on_ready")
    return handled
