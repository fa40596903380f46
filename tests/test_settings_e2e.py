"""/settings changes behaviour at once: quotas, defaults, channels, who may change characters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.bot_harness import BotHarness, embed_fields
from tests.fake_discord import MANAGE_GUILD, MEMBER_PERMISSIONS, FakeMessage, FakeUser

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[BotHarness]:
    async with BotHarness(tmp_path) as harness:
        await harness.start()
        harness.admin = harness.guild.add_member("admin", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)  # type: ignore[attr-defined]
        yield harness


async def settings(h: BotHarness, options: dict[str, object], user: FakeUser | None = None) -> FakeMessage:
    who = user or h.admin  # type: ignore[attr-defined]
    inter = await h.discord.slash(h.guild.id, h.guild.channel_id, who, "settings", options, subcommand="general")
    return await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id)


async def test_a_lowered_quota_applies_to_the_next_job(h: BotHarness) -> None:
    await h.wait_result(await h.imagine(h.alice, "first"))
    answer = await settings(h, {"member_daily": 1})
    assert "1 images per member" in embed_fields(answer)["Limits"]
    refused = await h.wait_ephemeral(await h.imagine(h.alice, "second"))
    assert "your 1 image for today" in refused.content
    await settings(h, {"member_daily": 0})
    await h.wait_result(await h.imagine(h.alice, "third"))


async def test_defaults_fill_in_what_the_member_left_out(h: BotHarness) -> None:
    answer = await settings(h, {"default_size": "2K", "default_aspect_ratio": "16:9"})
    fields = embed_fields(answer)
    assert fields["Default size"] == "2K" and fields["Default aspect ratio"] == "16:9"
    await h.wait_result(await h.imagine(h.alice, "uses the defaults"))
    config = h.gemini_requests()[-1].json["generationConfig"]["imageConfig"]
    assert config == {"aspectRatio": "16:9", "imageSize": "2K"}
    await h.wait_result(await h.imagine(h.alice, "chooses", resolution="1K", aspect_ratio="1:1"))
    assert h.gemini_requests()[-1].json["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "1K"}


async def test_the_bot_can_be_limited_to_some_channels(h: BotHarness) -> None:
    art = h.guild.add_channel("art")
    answer = await settings(h, {"only_in": art})
    assert embed_fields(answer)["Channels"] == f"<#{art}>"
    refused = await h.wait_ephemeral(await h.imagine(h.alice, "in general"))
    assert f"Try <#{art}>" in refused.content and h.gemini_requests() == []
    result = await h.wait_result(await h.imagine(h.alice, "in art", channel_id=art))
    # Its thread counts as the channel: a reply there works.
    ask = await h.discord.user_message(result.id, h.alice, "brighter", reply_to=result.id)
    await h.wait_reply(ask)
    await settings(h, {"everywhere": True})
    await h.wait_result(await h.imagine(h.alice, "in general again"))


async def test_admins_only_may_change_characters_when_set(h: BotHarness) -> None:
    create = await h.discord.slash(
        h.guild.id, h.guild.channel_id, h.alice, "character", {"name": "Mira", "description": "red braid"},
        subcommand="create",
    )  # fmt: skip
    await h.discord.wait_for_message(lambda m: m.interaction_id == create.id and "Saved" in m.content)
    await settings(h, {"character_managers": "admins"})
    edit = await h.discord.slash(
        h.guild.id, h.guild.channel_id, h.alice, "character", {"name": "Mira", "description": "blue hair"},
        subcommand="edit",
    )  # fmt: skip
    answer = await h.discord.wait_for_message(lambda m: m.interaction_id == edit.id)
    assert "Only the character's creator" in answer.content or "Manage Server" in answer.content


async def test_members_without_manage_server_are_refused(h: BotHarness) -> None:
    answer = await settings(h, {"member_daily": 0}, user=h.bob)
    assert answer.ephemeral and "Manage Server" in answer.content and not answer.embeds


async def test_a_server_can_pick_its_model_and_thinking_level(h: BotHarness) -> None:
    refused = await settings(h, {"default_thinking": "high"})
    assert "Nano Banana Pro doesn't take thinking level high" in refused.content
    answer = await settings(h, {"default_model": "gemini-3.1-flash-image-preview", "default_thinking": "high"})
    fields = embed_fields(answer)
    assert fields["Model"] == "Nano Banana 2" and fields["Default thinking level"] == "high"
    await h.wait_result(await h.imagine(h.alice, "fast and thoughtful"))
    request = h.gemini_requests()[-1]
    assert request.path.endswith("gemini-3.1-flash-image-preview:streamGenerateContent")
    assert request.json["generationConfig"]["thinkingConfig"]["thinkingLevel"] == "high"
    await settings(h, {"default_model": "default", "default_thinking": "default"})
    await h.wait_result(await h.imagine(h.alice, "back to the bot's model"))
    assert h.gemini_requests()[-1].path.endswith("gemini-3-pro-image-preview:streamGenerateContent")
