"""Banana Bot as shards: the real bot, built from BANANA_SHARD_COUNT / BANANA_SHARD_IDS, on a fake Discord that
delivers each guild's events only to the shard that owns it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bot_harness import BotHarness, has_image

pytestmark = pytest.mark.timeout(60)


async def test_a_process_running_shard_one_of_two_answers_in_its_guilds_only(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        fake = h.discord
        mine = fake.add_guild("Shard one", shard=(1, 2))
        theirs = fake.add_guild("Shard zero", shard=(0, 2))
        carol = mine.add_member("carol")
        theirs.join(carol)
        bot = await h.start(BANANA_SHARD_COUNT="2", BANANA_SHARD_IDS="1")
        assert bot.shard_count == 2 and bot.shard_ids == [1]
        assert fake.identified_shards == [(1, 2)]
        assert not any(c.path == "/gateway/bot" for c in fake.calls)  # the count was given: nothing to ask
        expected = {g.id for g in fake.guilds.values() if (g.id >> 22) % 2 == 1}  # the harness's own guild may be one
        assert mine.id in expected and {g.id for g in bot.guilds} == expected
        assert bot.get_guild(theirs.id) is None

        inter = await fake.slash(mine.id, mine.channel_id, carol, "imagine", {"prompt": "a lighthouse at dusk"})
        assert (await inter.wait_callback()).json["type"] == 5
        result = await h.wait_result(inter)
        assert has_image(result) and result.channel_id == mine.channel_id
        # Shard 0's guild has no session here: Discord would deliver its interactions to another process.
        with pytest.raises(AssertionError, match="no connected, READY bot session owns guild"):
            await fake.slash(theirs.id, theirs.channel_id, carol, "imagine", {"prompt": "a harbour"})
        assert not fake.unknown_routes and not fake.internal_errors


async def test_without_shard_settings_the_bot_runs_what_discord_recommends(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        bot = await h.start()
        assert any(c.path == "/gateway/bot" for c in h.discord.calls)
        assert bot.shard_count == h.discord.recommended_shards == 1
        assert h.discord.identified_shards == [(0, 1)]
        inter = await h.imagine(h.alice, "a teapot")
        assert has_image(await h.wait_result(inter))
