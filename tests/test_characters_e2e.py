"""/character end to end: lifecycle, the sheet form, permissions, guild isolation, use in /imagine, the cap, and
history: /character history and restore, Reroll with the version a result used, the creator's /forget-me."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from bot.media.strips import GAP, THUMB
from storage.characters import FORGOTTEN, character_images, character_versions, get_character
from storage.jobs import job_for_message
from tests.bot_harness import BotHarness, custom_ids, embed_fields, png
from tests.fake_discord import MANAGE_GUILD, MEMBER_PERMISSIONS, FakeInteraction, FakeMessage, FakeUser

pytestmark = pytest.mark.timeout(60)
REFS = ("reference", "reference2", "reference3")


@pytest.fixture
def h(harness: BotHarness) -> BotHarness:
    return harness


async def character(
    h: BotHarness, sub: str, user: FakeUser, options: dict[str, object], *, guild_id: int | None = None, **kw: object
) -> FakeInteraction:
    guild = guild_id or h.guild.id
    channel = h.guild.channel_id if guild == h.guild.id else h.discord.guilds[guild].channel_id
    return await h.discord.slash(guild, channel, user, "character", options, subcommand=sub, **kw)  # type: ignore[arg-type]


async def answer(h: BotHarness, inter: FakeInteraction) -> FakeMessage:
    return await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and not m.loading)


async def test_lifecycle_create_list_show_edit_delete(h: BotHarness) -> None:
    created = await character(
        h,
        "create",
        h.alice,
        {"name": "Mira", "description": "About 30, red braid, green wool coat, freckles."},
        attachments={
            "reference": ("front.png", png(300, 400), "image/png"),
            "reference2": ("side.png", png(), "image/png"),
        },
    )
    reply = await answer(h, created)
    assert reply.ephemeral and "Saved Mira with 2 reference images" in reply.content

    listed = await answer(h, await character(h, "list", h.bob, {}))
    assert "**Mira**" in listed.embeds[0]["description"] and "2 images" in listed.embeds[0]["description"]

    shown = await answer(h, await character(h, "show", h.bob, {"name": "mira"}))
    assert shown.embeds[0]["title"] == "Mira" and len(shown.files) == 2
    assert "red braid" in shown.embeds[0]["description"]

    choices = await h.discord.autocomplete(
        h.guild.id, h.guild.channel_id, h.bob, "imagine", {"prompt": "x", "character": "m"}, "character"
    )
    assert [c["value"] for c in choices] == ["Mira"]

    edited = await character(
        h, "edit", h.alice, {"name": "Mira"}, attachments={"reference": ("back.png", png(200, 200), "image/png")}
    )
    reply = await answer(h, edited)
    assert "Updated Mira" in reply.content and "Added 1 reference image" in reply.content
    assert h.bot is not None
    stored = await get_character(h.bot.jobs.db, h.guild.id, "Mira")
    assert stored is not None and stored.version == 2 and len(await character_images(h.bot.jobs.db, stored.id)) == 3

    deleting = await character(h, "delete", h.alice, {"name": "Mira"})
    confirm = await answer(h, deleting)
    [button] = custom_ids(confirm)
    assert button.startswith("char:delete:")
    click = await h.discord.click(confirm.id, button, h.alice)
    await h.discord.wait_for_message(lambda m: m.id == confirm.id and m.content.startswith("Deleted Mira"))
    assert click.responded
    assert await get_character(h.bot.jobs.db, h.guild.id, "Mira") is None


async def test_the_sheet_form_fills_a_structured_description(h: BotHarness) -> None:
    created = await character(h, "create", h.alice, {"name": "Tomo"})
    await created.wait_callback()
    assert created.modal is not None
    inputs = [row["components"][0] for row in created.modal["components"]]
    assert [i["label"] for i in inputs] == [
        "Appearance and face",
        "Hair and eyes",
        "Build and outfit",
        "Art style and colour palette",
        "Distinguishing marks",
    ]
    values = {inputs[0]["custom_id"]: "boy of ten, round face", inputs[3]["custom_id"]: "flat cel shading"}
    submitted = await h.discord.submit_modal(created.modal["custom_id"], values, h.alice, channel_id=h.guild.channel_id)
    reply = await answer(h, submitted)
    assert "Saved Tomo with 0 reference images" in reply.content
    assert h.bot is not None
    tomo = await get_character(h.bot.jobs.db, h.guild.id, "tomo")
    assert tomo is not None
    assert (
        tomo.description
        == "Appearance and face: boy of ten, round face\nArt style and colour palette: flat cel shading"
    )


async def test_only_the_creator_or_manage_server_may_change(h: BotHarness) -> None:
    await answer(h, await character(h, "create", h.alice, {"name": "Mira", "description": "red braid"}))
    refused = await answer(h, await character(h, "edit", h.bob, {"name": "Mira", "description": "blue hair"}))
    assert refused.ephemeral and "Only the character's creator" in refused.content
    refused = await answer(h, await character(h, "delete", h.bob, {"name": "Mira"}))
    assert "Only the character's creator" in refused.content
    admin = h.guild.add_member("admin", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
    done = await answer(h, await character(h, "edit", admin, {"name": "Mira", "description": "blue hair"}))
    assert "Updated Mira" in done.content
    # A confirmation button pressed by someone else does nothing.
    confirm = await answer(h, await character(h, "delete", h.alice, {"name": "Mira"}))
    click = await h.discord.click(confirm.id, custom_ids(confirm)[0], admin)
    nope = await h.discord.wait_for_message(lambda m: m.interaction_id == click.id)
    assert "Only the character's creator" in nope.content
    assert h.bot is not None and await get_character(h.bot.jobs.db, h.guild.id, "Mira") is not None


async def test_another_guild_can_neither_see_nor_use_it(h: BotHarness) -> None:
    await answer(h, await character(h, "create", h.alice, {"name": "Mira", "description": "red braid"}))
    other = h.discord.add_guild("Elsewhere")
    carol = other.add_member("carol")
    listed = await answer(h, await character(h, "list", carol, {}, guild_id=other.id))
    assert "no characters yet" in listed.content
    shown = await answer(h, await character(h, "show", carol, {"name": "Mira"}, guild_id=other.id))
    assert "no character called Mira" in shown.content
    choices = await h.discord.autocomplete(
        other.id, other.channel_id, carol, "imagine", {"prompt": "x", "character": ""}, "character"
    )
    assert choices == []
    inter = await h.discord.slash(other.id, other.channel_id, carol, "imagine", {"prompt": "x", "character": "Mira"})
    refused = await h.wait_ephemeral(inter)
    assert refused.content.startswith("character: this server has no character called Mira")
    assert h.gemini_requests() == []


async def test_imagine_with_a_character_sends_the_sheet_and_its_references(h: BotHarness) -> None:
    await answer(
        h,
        await character(
            h,
            "create",
            h.alice,
            {"name": "Mira", "description": "About 30, red braid, green wool coat."},
            attachments={"reference": ("front.png", png(300, 400, (200, 40, 40)), "image/png")},
        ),
    )
    inter = await h.imagine(
        h.bob,
        "Mira reading in a rainy café",
        character="Mira",
        attachments={"reference": ("cafe.png", png(), "image/png")},
    )
    result = await h.wait_result(inter)
    parts = h.gemini_requests()[-1].json["contents"][-1]["parts"]
    text = parts[0]["text"]
    assert "Character: Mira." in text and "red braid, green wool coat" in text
    assert text.endswith("Scene: Mira reading in a rainy café")
    assert sum("inlineData" in p for p in parts) == 2  # the character's image first, then the member's
    assert result.embeds[0]["description"] == "Mira reading in a rainy café"  # the member's words, as typed

    # "Add to character" puts this result into Mira's references.
    [add] = [c for c in custom_ids(result) if c.startswith("job:addchar:")]
    click = await h.discord.click(result.id, add, h.alice)
    menu = await h.discord.wait_for_message(lambda m: m.interaction_id == click.id)
    [select_id] = custom_ids(menu)
    picked = await h.discord.select(
        menu.id, select_id, h.alice, [menu.components[0]["components"][0]["options"][0]["value"]]
    )
    await h.discord.wait_for_message(lambda m: m.id == menu.id and "Added the image to Mira" in m.content)
    assert picked.responded
    assert h.bot is not None
    mira = await get_character(h.bot.jobs.db, h.guild.id, "Mira")
    assert mira is not None and len(await character_images(h.bot.jobs.db, mira.id)) == 2


async def test_the_reference_cap_drops_the_oldest_and_says_so(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start(GEMINI_MODEL="gemini-2.5-flash-image")  # Nano Banana: 3 reference images at most
        await answer(
            h,
            await character(
                h,
                "create",
                h.alice,
                {"name": "Mira", "description": "red braid"},
                attachments={name: (f"{name}.png", png(50 + n, 50), "image/png") for n, name in enumerate(REFS)},
            ),
        )
        reply = await answer(
            h,
            await character(
                h, "edit", h.alice, {"name": "Mira"}, attachments={"reference": ("new.png", png(99, 50), "image/png")}
            ),
        )
        assert "The oldest image was removed: a character keeps at most 3." in reply.content
        # With a reference of the member's own, one of the character's three images is left out, and said so.
        inter = await h.imagine(
            h.bob, "Mira at the sea", character="Mira", attachments={"reference": ("sea.png", png(), "image/png")}
        )
        result = await h.wait_result(inter)
        parts = h.gemini_requests()[-1].json["contents"][-1]["parts"]
        assert sum("inlineData" in p for p in parts) == 3
        assert "1 of the character's images was left out" in embed_fields(result)["Notes"]


async def test_bad_character_input(h: BotHarness) -> None:
    too_long = await answer(h, await character(h, "create", h.alice, {"name": "x" * 40, "description": "d"}))
    assert "at most 32 characters" in too_long.content
    bad_chars = await answer(h, await character(h, "create", h.alice, {"name": "@here", "description": "d"}))
    assert "can't contain" in bad_chars.content
    not_image = await answer(
        h,
        await character(
            h,
            "create",
            h.alice,
            {"name": "Mira", "description": "d"},
            attachments={"reference": ("a.txt", b"words", "text/plain")},
        ),
    )
    assert not_image.content.startswith("reference:") and "isn't an image" in not_image.content
    assert h.bot is not None and await get_character(h.bot.jobs.db, h.guild.id, "Mira") is None
    await answer(h, await character(h, "create", h.alice, {"name": "Mira", "description": "d"}))
    duplicate = await answer(h, await character(h, "create", h.bob, {"name": "MIRA", "description": "d"}))
    assert "already has a character called MIRA" in duplicate.content
    unknown = await answer(h, await character(h, "show", h.bob, {"name": "Nobody"}))
    assert "no character called Nobody" in unknown.content


RED, BLUE = (220, 30, 30), (30, 30, 220)


def sent_images(h: BotHarness) -> list[bytes]:
    """The images the last request to the image API carried, in order."""
    parts = h.gemini_requests()[-1].json["contents"][-1]["parts"]
    return [base64.b64decode(p["inlineData"]["data"]) for p in parts if "inlineData" in p]


async def mira_in_two_versions(h: BotHarness) -> None:
    """Mira as alice made her (red braid, a red image), then as she changed her (blue hair, a blue image added)."""
    await answer(
        h,
        await character(
            h,
            "create",
            h.alice,
            {"name": "Mira", "description": "red braid"},
            attachments={"reference": ("red.png", png(60, 40, RED), "image/png")},
        ),
    )
    edited = await answer(
        h,
        await character(
            h,
            "edit",
            h.alice,
            {"name": "Mira", "description": "blue hair"},
            attachments={"reference": ("blue.png", png(40, 60, BLUE), "image/png")},
        ),
    )
    assert "Mira is now at version 2" in edited.content


async def test_history_lists_who_changed_what_and_when_with_a_thumbnail_strip(h: BotHarness) -> None:
    await mira_in_two_versions(h)
    admin = h.guild.add_member("admin", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
    log_channel = h.guild.add_channel("mod-log")
    await answer(
        h,
        await h.discord.slash(
            h.guild.id, h.guild.channel_id, admin, "settings", {"channel": log_channel}, subcommand="log-channel"
        ),
    )
    restored = await answer(h, await character(h, "restore", admin, {"name": "Mira", "version": 1}))
    assert "Restored version 1 of Mira: it is now version 3" in restored.content
    line = "Character Mira: version 1 restored (now version 3)"
    logged = await h.discord.wait_for_message(
        lambda m: m.channel_id == log_channel and any(f["value"] == line for e in m.embeds for f in e.get("fields", []))
    )
    assert any(f["value"] == f"<@{admin.id}>" for f in logged.embeds[0]["fields"])

    shown = await answer(h, await character(h, "history", h.bob, {"name": "mira"}))
    assert shown.ephemeral
    [embed] = shown.embeds
    assert embed["title"] == "History of Mira"
    lines = embed["description"].split("\n")
    assert len(lines) == 3
    assert lines[0].startswith(f"**v3** · restored version 1 · <@{admin.id}> · <t:") and lines[0].endswith("(current)")
    assert lines[1].startswith(f"**v2** · sheet changed, 1 image added · <@{h.alice.id}> · <t:")
    assert lines[2].startswith(f"**v1** · created with 1 image · <@{h.alice.id}> · <t:")
    assert "(current)" not in lines[1] + lines[2]
    assert "/character restore" in embed["footer"]["text"] and "older" not in embed["footer"]["text"]
    # The strip: one JPEG, a row per version.
    [strip] = shown.files
    assert strip.filename == "history.jpg" and embed["image"]["url"] == "attachment://history.jpg"
    with Image.open(io.BytesIO(strip.data)) as img:
        assert img.format == "JPEG" and img.height == GAP + 3 * (THUMB + GAP)

    unknown = await answer(h, await character(h, "history", h.bob, {"name": "Nobody"}))
    assert "no character called Nobody" in unknown.content and not unknown.files


async def test_restore_brings_an_old_version_back_as_a_new_one_and_refuses_bad_input(h: BotHarness) -> None:
    await mira_in_two_versions(h)
    assert h.bot is not None
    db = h.bot.jobs.db
    choices = await h.discord.autocomplete(
        h.guild.id,
        h.guild.channel_id,
        h.alice,
        "character",
        {"name": "Mira", "version": ""},
        "version",
        subcommand="restore",
    )
    assert [(c["value"], c["name"]) for c in choices] == [
        (2, "Version 2: sheet changed, 1 image added"),
        (1, "Version 1: created with 1 image"),
    ]

    async def mira_now() -> tuple[int, str, list[str]]:
        mira = await get_character(db, h.guild.id, "Mira")
        assert mira is not None
        return mira.version, mira.description, await character_images(db, mira.id)

    before = await mira_now()
    assert before[:2] == (2, "blue hair") and len(before[2]) == 2
    refused = await answer(h, await character(h, "restore", h.bob, {"name": "Mira", "version": 1}))
    assert "Only the character's creator" in refused.content
    missing = await answer(h, await character(h, "restore", h.alice, {"name": "Mira", "version": 9}))
    assert "Mira has no version 9 (its newest is version 2)" in missing.content
    assert "Nothing was changed" in missing.content
    current = await answer(h, await character(h, "restore", h.alice, {"name": "Mira", "version": 2}))
    assert "Version 2 is already Mira's current version" in current.content
    nobody = await answer(h, await character(h, "restore", h.alice, {"name": "Nobody", "version": 1}))
    assert "no character called Nobody" in nobody.content
    assert await mira_now() == before  # none of that changed anything

    done = await answer(h, await character(h, "restore", h.alice, {"name": "Mira", "version": 1}))
    assert "Restored version 1 of Mira: it is now version 3" in done.content
    mira = await get_character(db, h.guild.id, "Mira")
    assert mira is not None
    versions = await character_versions(db, mira.id)
    assert await mira_now() == (3, "red braid", list(versions[-1].image_keys))
    assert [v.version for v in versions] == [3, 2, 1] and versions[1].description == "blue hair"
    same = await answer(h, await character(h, "restore", h.alice, {"name": "Mira", "version": 1}))
    assert "Version 1 has the same sheet and images as Mira has now" in same.content

    # An old sheet meets today's rules: a banned word keeps it out.
    admin = h.guild.add_member("admin", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
    ban = await h.discord.slash(
        h.guild.id, h.guild.channel_id, admin, "settings", {"add": "blue"}, subcommand="banned-words"
    )
    await h.discord.wait_for_message(lambda m: m.interaction_id == ban.id and "Banned" in m.content)
    banned = await answer(h, await character(h, "restore", h.alice, {"name": "Mira", "version": 2}))
    assert banned.ephemeral and "“blue”" in banned.content
    assert (await mira_now())[:2] == (3, "red braid")


async def test_reroll_uses_the_character_version_its_result_used(h: BotHarness) -> None:
    await answer(
        h,
        await character(
            h,
            "create",
            h.alice,
            {"name": "Mira", "description": "red braid"},
            attachments={"reference": ("red.png", png(60, 40, RED), "image/png")},
        ),
    )
    assert h.bot is not None
    db, images = h.bot.jobs.db, h.bot.runtime.images
    mira = await get_character(db, h.guild.id, "Mira")
    assert mira is not None
    [red_key] = await character_images(db, mira.id)
    red = await images.get(red_key)

    result = await h.wait_result(await h.imagine(h.bob, "Mira at the sea", character="Mira"))
    assert "red braid" in h.sent_texts()[-1] and sent_images(h) == [red]
    job = await job_for_message(db, result.id)
    assert job is not None and job.request.character_version == 1

    await answer(
        h,
        await character(
            h,
            "edit",
            h.alice,
            {"name": "Mira", "description": "blue hair"},
            attachments={"reference": ("blue.png", png(40, 60, BLUE), "image/png")},
        ),
    )
    reroll = next(c for c in custom_ids(result) if c.startswith("job:reroll:"))
    click = await h.discord.click(result.id, reroll, h.bob)
    rerolled = await h.wait_result(click)
    text = h.sent_texts()[-1]
    assert "red braid" in text and "blue hair" not in text and sent_images(h) == [red]
    again = await job_for_message(db, rerolled.id)
    assert again is not None and again.id != job.id and again.request.character_version == 1

    # A fresh /imagine uses the character as it is now.
    fresh = await h.wait_result(await h.imagine(h.bob, "Mira in the snow", character="Mira"))
    assert "blue hair" in h.sent_texts()[-1] and len(sent_images(h)) == 2
    latest = await job_for_message(db, fresh.id)
    assert latest is not None and latest.request.character_version == 2


async def test_the_creators_forget_me_keeps_a_shared_character_without_their_name(h: BotHarness) -> None:
    await mira_in_two_versions(h)
    assert h.bot is not None
    db, images = h.bot.jobs.db, h.bot.runtime.images
    mira = await get_character(db, h.guild.id, "Mira")
    assert mira is not None
    keys = {k for v in await character_versions(db, mira.id) for k in v.image_keys}

    question = await answer(h, await h.discord.slash(h.guild.id, h.guild.channel_id, h.alice, "forget-me", {}))
    click = await h.discord.click(question.id, custom_ids(question)[0], h.alice)
    await h.discord.wait_for_message(lambda m: m.interaction_id == click.id and m.content.startswith("Done"))

    kept = await get_character(db, h.guild.id, "Mira")
    assert kept is not None and kept.created_by == FORGOTTEN and kept.version == 2
    assert all([await images.exists(key) for key in keys])  # every version's images stay
    listed = await answer(h, await character(h, "list", h.bob, {}))
    assert "**Mira** by a former member" in listed.embeds[0]["description"]
    shown = await answer(h, await character(h, "history", h.bob, {"name": "Mira"}))
    assert f"<@{h.alice.id}>" not in shown.embeds[0]["description"]
    assert shown.embeds[0]["description"].count("a former member") == 2
    # Without a creator, only Manage Server may change it: not even the member who made it.
    refused = await answer(h, await character(h, "edit", h.alice, {"name": "Mira", "description": "green"}))
    assert "Only the character's creator" in refused.content
    admin = h.guild.add_member("admin", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
    restored = await answer(h, await character(h, "restore", admin, {"name": "Mira", "version": 1}))
    assert "it is now version 3" in restored.content


async def test_history_shows_the_newest_versions_and_says_how_many_are_older(h: BotHarness) -> None:
    await answer(h, await character(h, "create", h.alice, {"name": "Mira", "description": "sheet 1"}))
    for n in range(2, 13):
        edited = await answer(h, await character(h, "edit", h.alice, {"name": "Mira", "description": f"sheet {n}"}))
        assert f"now at version {n}" in edited.content
    unchanged = await answer(h, await character(h, "edit", h.alice, {"name": "Mira", "description": "sheet 12"}))
    assert "Mira is unchanged" in unchanged.content

    shown = await answer(h, await character(h, "history", h.bob, {"name": "Mira"}))
    lines = shown.embeds[0]["description"].split("\n")
    assert [line.split(" · ")[0] for line in lines] == [f"**v{n}**" for n in range(12, 2, -1)]
    assert lines[-1].split(" · ")[1] == "sheet changed"  # the oldest shown, against the version before it
    assert "2 older versions are not shown" in shown.embeds[0]["footer"]["text"]
    assert not shown.files  # no version has images: no strip


async def test_a_grids_reroll_makes_the_character_as_it_was(h: BotHarness) -> None:
    made = await character(h, "create", h.alice, {"name": "Mira", "description": "a red braid"})
    await h.discord.wait_for_message(lambda m: m.interaction_id == made.id and bool(m.content))
    inter = await h.discord.slash(
        h.guild.id, h.guild.channel_id, h.alice, "grid", {"prompt": "Mira at sea", "character": "Mira"}
    )
    preview = await h.wait_result(inter)
    edited = await character(h, "edit", h.alice, {"name": "Mira", "description": "short blue hair"})
    await h.discord.wait_for_message(lambda m: m.interaction_id == edited.id and bool(m.content))
    reroll = next(c for c in custom_ids(preview) if c.startswith("grid:reroll:"))
    before = len(h.gemini_requests())
    click = await h.discord.click(preview.id, reroll, h.alice)
    await h.wait_result(click)
    prompts = [str(r.json["contents"][-1]["parts"][0].get("text", "")) for r in h.gemini_requests()[before:]]
    assert len(prompts) == 4 and all("a red braid" in p and "blue hair" not in p for p in prompts)
