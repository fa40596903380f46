"""/forget-me, /purge-server and the retention task, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import client as client_module
from storage.generations import count_generations
from storage.jobs import get_job, jobs_where
from tests.bot_harness import BotHarness, custom_ids, wait_until
from tests.fake_discord import MANAGE_GUILD, MEMBER_PERMISSIONS, FakeInteraction, FakeMessage, FakeUser

pytestmark = pytest.mark.timeout(60)


async def ask(h: BotHarness, user: FakeUser, command: str, guild_id: int | None = None) -> FakeMessage:
    guild = h.discord.guilds[guild_id or h.guild.id]
    inter = await h.discord.slash(guild.id, guild.channel_id, user, command, {})
    return await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and not m.loading)


async def confirm(h: BotHarness, question: FakeMessage, user: FakeUser) -> FakeMessage:
    click: FakeInteraction = await h.discord.click(question.id, custom_ids(question)[0], user)
    return await h.discord.wait_for_message(lambda m: m.interaction_id == click.id and not m.loading)


async def test_forget_me_deletes_only_that_members_rows_and_unshared_images(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        bot = await h.start()
        # The fake answers a prompt with the same bytes every time, and images are stored by content: asking
        # for alice's prompt again gives bob the very image alice has. Alice's 9:16 image can't be one of
        # bob's, whose images are all 1:1 (a reply keeps its parent's shape), whatever colours the fake picks.
        lighthouse = await h.wait_result(await h.imagine(h.alice, "a lighthouse"))
        await h.wait_result(await h.imagine(h.alice, "alice's cat", aspect_ratio="9:16"))
        await h.wait_result(await h.imagine(h.bob, "a lighthouse"))
        ask_bob = await h.discord.user_message(lighthouse.id, h.bob, "bob makes it blue", reply_to=lighthouse.id)
        await h.wait_reply(ask_bob)
        alice_jobs = await jobs_where(bot.jobs.db, "user_id = ?", (h.alice.id,))
        bob_before = await jobs_where(bot.jobs.db, "user_id = ?", (h.bob.id,))
        assert all(j.image_key for j in alice_jobs + bob_before)
        shared = {j.image_key for j in alice_jobs if j.image_key and j.request.prompt == "a lighthouse"}
        alone = {j.image_key for j in alice_jobs if j.image_key and j.request.prompt == "alice's cat"}
        bob_keys = {j.image_key for j in bob_before if j.image_key}
        assert len(shared) == len(alone) == 1 and shared <= bob_keys and not alone & bob_keys
        [bob_reply] = [j for j in bob_before if j.parent_id is not None]
        assert bob_reply.parent_id in {j.id for j in alice_jobs}  # bob's reply continues alice's image

        question = await ask(h, h.alice, "forget-me")
        assert question.ephemeral and "can't be undone" in question.content
        refused = await confirm(h, question, h.bob)
        assert "Only the person who asked" in refused.content
        done = await confirm(h, question, h.alice)
        assert "deleted 2 requests, 2 usage records and 1 stored image" in done.content

        assert await jobs_where(bot.jobs.db, "user_id = ?", (h.alice.id,)) == []
        assert await count_generations(bot.jobs.db) == 2  # bob's two
        [alone_key], [shared_key] = alone, shared
        assert not await bot.runtime.images.exists(alone_key)
        assert await bot.runtime.images.exists(shared_key)
        # Bob's rows stay as they were, but for the link to alice's deleted request; his images all stay.
        bob_after = await jobs_where(bot.jobs.db, "user_id = ?", (h.bob.id,))
        assert sorted(j.id for j in bob_after) == sorted(j.id for j in bob_before)
        assert {j.image_key for j in bob_after} == bob_keys and all(j.parent_id is None for j in bob_after)
        assert all([await bot.runtime.images.exists(key) for key in bob_keys])


async def test_forget_me_waits_for_running_jobs(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        bot = await h.start()
        h.api.latency = 1.0
        inter = await h.imagine(h.alice, "slow")

        async def admitted() -> bool:
            return await bot.jobs.pending_for_user(h.alice.id) > 0

        await wait_until(admitted, "alice's job is admitted", 5)
        question = await ask(h, h.alice, "forget-me")
        answer = await confirm(h, question, h.alice)
        assert "still waiting or being made" in answer.content
        await h.wait_result(inter)
        assert len(await jobs_where(bot.jobs.db, "user_id = ?", (h.alice.id,))) == 1


async def test_an_admin_purges_their_server_and_nothing_else(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        other = h.discord.add_guild("Other")
        carol = other.add_member("carol")
        bot = await h.start()
        await h.wait_result(await h.imagine(h.alice, "here"))
        kept = await h.discord.slash(other.id, other.channel_id, carol, "imagine", {"prompt": "there"})
        await h.wait_result(kept)
        await h.discord.slash(
            h.guild.id,
            h.guild.channel_id,
            h.alice,
            "character",
            {"name": "Mira", "description": "red braid"},
            subcommand="create",
        )
        await h.discord.wait_for_message(lambda m: "Saved Mira" in m.content)

        refused = await ask(h, h.bob, "purge-server")
        assert "Manage Server" in refused.content
        admin = h.guild.add_member("admin", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
        question = await ask(h, admin, "purge-server")
        done = await confirm(h, question, admin)
        assert "deleted 1 request, 1 usage record and 1 stored image" in done.content and "1 character" in done.content
        assert await jobs_where(bot.jobs.db, "guild_id = ?", (h.guild.id,)) == []
        [there] = await jobs_where(bot.jobs.db, "guild_id = ?", (other.id,))
        assert there.image_key and await bot.runtime.images.exists(there.image_key)
        assert await get_job(bot.jobs.db, there.id) is not None


async def test_old_images_are_pruned_while_the_bot_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "RETENTION_INTERVAL", 0.3)
    async with BotHarness(tmp_path) as h:
        bot = await h.start(BANANA_IMAGE_RETENTION_DAYS="0.00001")  # under a second
        await h.wait_result(await h.imagine(h.alice, "short-lived"))
        [job] = await jobs_where(bot.jobs.db, "user_id = ?", (h.alice.id,))
        key = job.image_key
        assert key is not None

        async def pruned() -> bool:
            return not await bot.runtime.images.exists(key)

        await wait_until(pruned, "the retention task deletes the image", 5)
