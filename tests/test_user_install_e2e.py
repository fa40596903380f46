"""Banana Bot added to a member's own account (a user install): /imagine and /edit in servers that haven't
added the bot and in DMs, counted against the member's limit and a bot-wide daily cap, with no server's
settings in play."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.jobs import jobs_where
from tests.bot_harness import BotHarness, custom_ids, has_image
from tests.fake_discord import FakeGuild, FakeMessage, FakeUser

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def started(tmp_path: Path, **env: str) -> AsyncIterator[BotHarness]:
    async with BotHarness(tmp_path) as harness:
        await harness.start(**env)
        yield harness


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[BotHarness]:
    async with started(tmp_path) as harness:
        yield harness


def stranger(h: BotHarness) -> tuple[FakeGuild, FakeUser]:
    """A server that hasn't added the bot, and a member of it who added the bot to their account."""
    other = h.discord.add_guild("No bot here", bot_installed=False)
    carol = other.add_member("carol")
    h.discord.install_for_user(carol)
    return other, carol


def footer_id(message: FakeMessage) -> str:
    """The job id every result shows at the end of its footer."""
    return str(message.embeds[0]["footer"]["text"]).rsplit(" · ", 1)[-1]


def bot_calls_to(h: BotHarness, channel_id: int) -> list[str]:
    """REST calls the bot made with its own token on a channel (not answers to interactions)."""
    return [f"{c.method} {c.path}" for c in h.discord.calls if c.path.startswith(f"/channels/{channel_id}")]


async def test_imagine_in_a_server_that_has_not_added_the_bot(h: BotHarness) -> None:
    other, carol = stranger(h)
    inter = await h.discord.slash(other.id, other.channel_id, carol, "imagine", {"prompt": "a kite"})
    result = await h.wait_result(inter)
    assert has_image(result) and result.thread_id is None  # no thread: the bot isn't in that server
    ids = custom_ids(result)
    assert any(i.startswith("job:reroll:") for i in ids)
    assert not any(i.startswith(("job:addchar:", "job:report:")) for i in ids)  # no server's characters or log
    assert bot_calls_to(h, other.channel_id) == []  # everything went through the interaction
    assert h.bot is not None
    [job] = await jobs_where(h.bot.services.db, "user_id = ?", (carol.id,))
    assert job.user_install and job.guild_id == other.id

    # The buttons work there too.
    reroll = next(i for i in ids if i.startswith("job:reroll:"))
    click = await h.discord.click(result.id, reroll, carol, via_user_install=True)
    again = await h.wait_result(click)
    assert has_image(again) and h.sent_texts() == ["a kite"]


async def test_the_commands_say_where_they_may_be_used(h: BotHarness) -> None:
    synced = {c["name"]: c for c in h.discord.synced_commands[None]}
    for name in ("imagine", "edit", "show"):
        assert sorted(synced[name]["integration_types"]) == [0, 1]
        assert sorted(synced[name]["contexts"]) == [0, 1, 2]
    for name in ("settings", "grid", "character", "usage"):
        assert 1 not in (synced[name].get("integration_types") or [0])


async def test_a_dm_through_the_users_install_continues_in_place(h: BotHarness) -> None:
    _, carol = stranger(h)
    dm = h.discord.open_dm(carol)
    inter = await h.discord.slash(None, dm, carol, "imagine", {"prompt": "a boat"}, via_user_install=True)
    result = await h.wait_result(inter)
    ask = await h.discord.user_message(dm, carol, "make the sails red", reply_to=result.id)
    reply = await h.wait_reply(ask)
    assert has_image(reply)
    assert h.sent_texts() == ["a boat", "make the sails red"]  # the earlier turn went along


async def test_user_installs_share_a_daily_cap(tmp_path: Path) -> None:
    async with started(tmp_path, BANANA_USER_INSTALL_DAILY="1") as h:
        other, carol = stranger(h)
        dave = other.add_member("dave")
        h.discord.install_for_user(dave)
        await h.wait_result(await h.discord.slash(other.id, other.channel_id, carol, "imagine", {"prompt": "one"}))
        sent = len(h.gemini_requests())
        refused = await h.discord.slash(other.id, other.channel_id, dave, "imagine", {"prompt": "two"})
        answer = await h.discord.wait_for_message(lambda m: m.interaction_id == refused.id and m.ephemeral)
        assert "used up for today" in answer.content and len(h.gemini_requests()) == sent
        # Servers that added the bot are not affected by the cap.
        await h.wait_result(await h.imagine(h.alice, "in a real server"))


async def test_user_installs_can_be_turned_off(tmp_path: Path) -> None:
    async with started(tmp_path, BANANA_USER_INSTALL_DAILY="0") as h:
        synced = {c["name"]: c for c in h.discord.synced_commands[None]}
        assert (synced["imagine"].get("integration_types") or [0]) == [0]
        other, carol = stranger(h)
        with pytest.raises(AssertionError, match="not offered to user installs"):
            await h.discord.slash(other.id, other.channel_id, carol, "imagine", {"prompt": "x"})


async def test_dms_count_as_uses_outside_servers_whichever_install(tmp_path: Path) -> None:
    async with started(tmp_path, BANANA_USER_INSTALL_DAILY="1") as h:
        dm = h.discord.open_dm(h.alice)  # through the server's install: Discord's {"0": "0"}
        await h.wait_result(await h.discord.slash(None, dm, h.alice, "imagine", {"prompt": "one"}))
        sent = len(h.gemini_requests())
        refused = await h.discord.slash(None, dm, h.alice, "imagine", {"prompt": "two"})
        answer = await h.discord.wait_for_message(lambda m: m.interaction_id == refused.id and m.ephemeral)
        assert "used up for today" in answer.content and len(h.gemini_requests()) == sent


async def test_turned_off_also_means_no_dms(tmp_path: Path) -> None:
    async with started(tmp_path, BANANA_USER_INSTALL_DAILY="0") as h:
        synced = {c["name"]: c for c in h.discord.synced_commands[None]}
        assert sorted(synced["imagine"]["contexts"]) == [0]
        dm = h.discord.open_dm(h.alice)
        refused = await h.discord.slash(None, dm, h.alice, "imagine", {"prompt": "x"})
        answer = await h.discord.wait_for_message(lambda m: m.interaction_id == refused.id and m.ephemeral)
        assert "turned off" in answer.content and h.gemini_requests() == []


async def test_show_works_through_a_members_own_install(h: BotHarness) -> None:
    other, carol = stranger(h)
    result = await h.wait_result(
        await h.discord.slash(other.id, other.channel_id, carol, "imagine", {"prompt": "a kite"})
    )
    job_id = footer_id(result)
    shown = await h.discord.slash(other.id, other.channel_id, carol, "show", {"job": job_id})
    copy = await h.discord.wait_for_message(lambda m: m.interaction_id == shown.id and has_image(m))
    reroll = next(c for c in custom_ids(copy) if c.startswith("job:reroll:"))
    again = await h.discord.click(copy.id, reroll, carol, via_user_install=True)
    assert has_image(await h.wait_result(again))
