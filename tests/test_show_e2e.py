"""/show end to end: a past result (or grid) posted again with live buttons and a link to its thread, found by
its id, a message link or the autocomplete; only in its own server; bad input told, nothing spent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.jobs import get_job, jobs_where
from tests.bot_harness import BotHarness, custom_ids, embed_fields, footer, has_image, image_size
from tests.fake_discord import MANAGE_GUILD, MEMBER_PERMISSIONS, FakeInteraction, FakeMessage, FakeUser
from tests.fake_image_api import Fault

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[BotHarness]:
    async with BotHarness(tmp_path) as harness:
        await harness.start(BANANA_USER_PENDING="5")
        yield harness
        assert not harness.discord.unknown_routes, harness.discord.unknown_routes
        assert not harness.discord.internal_errors, harness.discord.internal_errors


def result_id(message: FakeMessage) -> str:
    """The id at the end of a result's footer ('Version 1 · AbC123')."""
    return footer(message).rsplit(" · ", 1)[-1]


def link(h: BotHarness, message: FakeMessage) -> str:
    return f"https://discord.com/channels/{h.guild.id}/{message.channel_id}/{message.id}"


async def show(
    h: BotHarness, user: FakeUser, job: str, *, guild_id: int | None = None, **options: object
) -> FakeMessage:
    """/show's answer once it is final (the copy, or an error)."""
    guild = h.discord.guilds[guild_id] if guild_id else h.guild
    inter = await h.discord.slash(guild.id, guild.channel_id, user, "show", {"job": job, **options})
    return await answer(h, inter)


async def answer(h: BotHarness, inter: FakeInteraction) -> FakeMessage:
    return await h.discord.wait_for_message(
        lambda m: m.interaction_id == inter.id and not m.loading and not m.deleted and bool(m.content or m.files)
    )


def labels(message: FakeMessage) -> list[str]:
    return [str(c.get("label")) for row in message.components for c in row["components"]]


async def test_a_result_comes_back_privately_with_live_buttons_and_its_thread(h: BotHarness) -> None:
    original = await h.wait_result(await h.imagine(h.alice, "a red fox in the snow", aspect_ratio="16:9"))
    job_id = result_id(original)
    sent = len(h.gemini_requests())

    copy = await show(h, h.bob, job_id)
    assert copy.ephemeral and has_image(copy)
    assert f"<#{original.id}>" in copy.content  # the thread opened on the original
    assert copy.embeds[0]["description"] == "a red fox in the snow" and footer(copy) == footer(original)
    assert embed_fields(copy)["Size"] == embed_fields(original)["Size"]
    assert image_size(copy.files[0].data) == image_size(original.files[0].data)
    assert labels(copy) == ["Reroll", "Remix", "Edit", "Redo at 2K", "Add to character", "Report"]  # no Delete
    assert len(h.gemini_requests()) == sent  # showing costs nothing

    # Its buttons are the result's own: Reroll makes a new image of the same prompt for whoever presses it.
    reroll = await h.discord.click(copy.id, f"job:reroll:{job_id}", h.bob)
    again = await h.wait_result(reroll)
    assert h.sent_texts() == ["a red fox in the snow"] and len(h.gemini_requests()) == sent + 1
    assert again.embeds[0]["description"] == "a red fox in the snow"

    # Edit continues the conversation in the original's thread.
    edit = await h.discord.click(copy.id, f"job:edit:{job_id}", h.bob)
    await edit.wait_callback()
    assert edit.modal is not None
    field = edit.modal["components"][0]["components"][0]["custom_id"]
    await h.discord.submit_modal(edit.modal["custom_id"], {field: "make it night"}, h.bob, channel_id=copy.channel_id)
    edited = await h.discord.wait_for_message(lambda m: m.channel_id == original.id and has_image(m))
    assert "from version 1" in footer(edited)
    assert h.sent_texts() == ["a red fox in the snow", "make it night"]  # the original's conversation


async def test_a_message_link_shows_it_publicly_and_only_its_owner_may_delete_the_copy(h: BotHarness) -> None:
    original = await h.wait_result(await h.imagine(h.alice, "a lighthouse at dusk"))
    copy = await show(h, h.bob, link(h, original), public=True)
    assert not copy.ephemeral and has_image(copy)
    assert f"<@{h.bob.id}> shows a result from <t:" in copy.content and f"<#{original.id}>" in copy.content
    job_id = result_id(copy)
    assert job_id == result_id(original) and f"job:delete:{job_id}" in custom_ids(copy)

    refused = await h.discord.click(copy.id, f"job:delete:{job_id}", h.bob)
    assert "Only" in (await answer(h, refused)).content and not copy.deleted
    await h.discord.click(copy.id, f"job:delete:{job_id}", h.alice)
    await h.discord.wait_for_message(lambda m: m.id == copy.id and m.deleted)
    assert not original.deleted


async def test_a_grid_comes_back_as_its_preview_with_u_and_v(h: BotHarness) -> None:
    inter = await h.discord.slash(h.guild.id, h.guild.channel_id, h.alice, "grid", {"prompt": "four kites"})
    preview = await h.wait_result(inter)
    grid_id = footer(preview)
    copy = await show(h, h.alice, link(h, preview))
    assert copy.ephemeral and copy.files[0].data[:3] == b"\xff\xd8\xff"  # the 2x2 JPEG, drawn again
    assert image_size(copy.files[0].data) == image_size(preview.files[0].data)
    assert labels(copy) == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "Reroll"]
    assert footer(copy) == grid_id and f"<#{preview.id}>" in copy.content
    assert embed_fields(copy)["Cost"] == embed_fields(preview)["Cost"]

    u3 = await h.discord.click(copy.id, f"grid:u:{grid_id}:3", h.bob)
    await h.discord.wait_for_message(lambda m: m.interaction_id == u3.id and "Posted" in m.content)
    full = await h.discord.wait_for_message(lambda m: m.channel_id == preview.id and has_image(m))
    assert footer(full).startswith("Version 1")
    assert (await show(h, h.alice, grid_id)).files[0].data == copy.files[0].data  # by its id too


async def test_the_autocomplete_offers_the_members_own_recent_results_here(h: BotHarness) -> None:
    fox = result_id(await h.wait_result(await h.imagine(h.alice, "a red fox")))
    owl = result_id(await h.wait_result(await h.imagine(h.alice, "a snowy owl")))
    grid = await h.wait_result(
        await h.discord.slash(h.guild.id, h.guild.channel_id, h.alice, "grid", {"prompt": "owls"})
    )
    bobs = result_id(await h.wait_result(await h.imagine(h.bob, "bob's own owl")))
    other = h.discord.add_guild("Elsewhere")
    other.join(h.alice)
    await h.wait_result(
        await h.discord.slash(other.id, other.channel_id, h.alice, "imagine", {"prompt": "an owl elsewhere"})
    )

    async def choices(user: FakeUser, typed: str, guild_id: int | None = None) -> list[object]:
        guild = h.discord.guilds[guild_id] if guild_id else h.guild
        found = await h.discord.autocomplete(guild.id, guild.channel_id, user, "show", {"job": typed}, "job")
        return [c["value"] for c in found]

    [command] = [c for c in h.discord.synced_commands[None] if c["name"] == "show"]
    assert command["name_localizations"]["id"] == "tampilkan"  # named in each member's language
    everything = await h.discord.autocomplete(h.guild.id, h.guild.channel_id, h.alice, "show", {"job": ""}, "job")
    assert [c["value"] for c in everything] == [footer(grid), owl, fox]  # newest first: alice's, in this server
    assert everything[0]["name"] == f"owls · grid · {footer(grid)}" and everything[2]["name"] == f"a red fox · {fox}"
    assert await choices(h.alice, "OWL") == [footer(grid), owl]
    assert await choices(h.alice, fox[:5]) == [fox]
    assert await choices(h.bob, "") == [bobs]
    assert len(await choices(h.alice, "", other.id)) == 1


async def test_only_in_its_own_server_and_bad_input_is_told_with_nothing_spent(h: BotHarness) -> None:
    original = await h.wait_result(await h.imagine(h.alice, "a quiet harbour"))
    job_id = result_id(original)
    assert h.bot is not None
    db = h.bot.services.db

    other = h.discord.add_guild("Elsewhere")
    other.join(h.alice)
    elsewhere = await show(h, h.alice, job_id, guild_id=other.id)
    assert elsewhere.ephemeral and not elsewhere.files and "another server" in elsewhere.content

    for nonsense in ("no such thing!", "AAAAAAAAAAAA", f"https://discord.com/channels/{h.guild.id}/1/2"):
        missing = await show(h, h.alice, nonsense)
        assert missing.ephemeral and not missing.files and "No result matches" in missing.content
    assert has_image(await show(h, h.alice, f"Version 1 · {job_id}"))  # a footer copied whole works

    h.api.script(Fault.prompt_block("PROHIBITED_CONTENT"))
    await h.wait_ephemeral(await h.imagine(h.alice, "a blocked harbour"))
    [failed] = await jobs_where(db, "status = 'failed'", ())
    no_image = await show(h, h.alice, failed.id)
    assert not no_image.files and "no image to show" in no_image.content

    # A moderator's rules apply as to any request: a banned word in its prompt, a blocked member.
    mod = h.guild.add_member("mod", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
    await settings(h, mod, "banned-words", {"add": "harbour"})
    banned = await show(h, h.alice, job_id)
    assert not banned.files and "doesn't allow “harbour”" in banned.content
    await settings(h, mod, "banned-words", {"remove": "harbour"})
    await settings(h, mod, "block member", {"member": h.bob.id, "reason": "spam"})
    blocked = await show(h, h.bob, job_id, public=True)
    assert blocked.ephemeral and not blocked.files and "blocked you" in blocked.content
    public = [m.id for m in h.discord.channel_messages(h.guild.channel_id) if has_image(m) and not m.ephemeral]
    assert public == [original.id]

    job = await get_job(db, job_id)
    assert job is not None and job.image_key is not None
    await h.bot.services.images.delete([job.image_key])
    gone = await show(h, h.alice, job_id)
    assert not gone.files and "no longer stored" in gone.content
    assert len(h.gemini_requests()) == 2  # the harbour and the blocked one: nothing else was asked of the model


async def settings(h: BotHarness, user: FakeUser, sub: str, options: dict[str, object]) -> None:
    inter = await h.discord.slash(h.guild.id, h.guild.channel_id, user, "settings", options, subcommand=sub)
    await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and bool(m.content or m.embeds))


async def test_a_result_from_an_age_restricted_channel_is_shown_only_in_one(h: BotHarness) -> None:
    adult = h.guild.add_channel("adult", nsfw=True)
    made = await h.wait_result(await h.discord.slash(h.guild.id, adult, h.alice, "imagine", {"prompt": "a statue"}))
    refused = await show(h, h.bob, result_id(made), public=True)
    assert "age-restricted" in refused.content and not refused.files
    assert not any(m.files for m in h.discord.channel_messages(h.guild.channel_id) if not m.ephemeral)
    other_adult = h.guild.add_channel("adult-2", nsfw=True)
    inter = await h.discord.slash(h.guild.id, other_adult, h.bob, "show", {"job": result_id(made), "public": True})
    copy = await answer(h, inter)
    assert copy.files and not copy.ephemeral
