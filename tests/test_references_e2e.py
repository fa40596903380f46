"""Up to the model's reference limit from Discord: "Imagine with these images" takes every image on a message,
thread replies use all of theirs, a character's images fill what is left, and images over the limit are left
out (and named) before anything is spent."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from storage.characters import change_character, create_character
from tests.bot_harness import BotHarness, embed_fields, png
from tests.fake_discord import MANAGE_GUILD, MEMBER_PERMISSIONS, FakeInteraction, FakeMessage, FakeUser

pytestmark = pytest.mark.timeout(60)
MENU = "Imagine with these images"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[BotHarness]:
    async with BotHarness(tmp_path) as harness:
        await harness.start()
        yield harness
        assert not harness.discord.unknown_routes, harness.discord.unknown_routes
        assert not harness.discord.internal_errors, harness.discord.internal_errors


def pictures(count: int, prefix: str = "pic") -> list[tuple[str, bytes, str]]:
    """`count` different PNGs (each its own width, so the model's inputs can be told apart)."""
    return [(f"{prefix}{n}.png", png(40 + n, 30, (n * 20, 90, 160)), "image/png") for n in range(1, count + 1)]


def sent_widths(h: BotHarness, request_index: int = -1) -> list[int]:
    """The widths of the images in the newest user turn sent to the model, in order."""
    parts = h.gemini_requests()[request_index].json["contents"][-1]["parts"]
    widths = []
    for part in parts:
        if "inlineData" in part:
            with Image.open(io.BytesIO(base64.b64decode(part["inlineData"]["data"]))) as img:
                widths.append(img.width)
    return widths


async def open_form(h: BotHarness, user: FakeUser, message_id: int) -> FakeInteraction:
    inter = await h.discord.context_menu(h.guild.id, h.guild.channel_id, user, MENU, message_id)
    await inter.wait_callback()
    return inter


def inputs(inter: FakeInteraction) -> dict[str, dict[str, Any]]:
    """The form's Labels by their text."""
    assert inter.modal is not None, "the bot answered without a form"
    return {c["label"]: c for c in inter.modal["components"]}


async def submit(h: BotHarness, inter: FakeInteraction, user: FakeUser, **answers: str) -> FakeInteraction:
    """Answer the form: `answers` by Label text (a select gets that one value)."""
    assert inter.modal is not None
    shown = inputs(inter)
    fields: dict[str, str | list[str]] = {}
    for text, value in answers.items():
        component = shown[text]["component"]
        fields[component["custom_id"]] = [value] if component["type"] == 3 else value
    return await h.discord.submit_modal(inter.modal["custom_id"], fields, user, channel_id=h.guild.channel_id)


async def first_answer(h: BotHarness, inter: FakeInteraction) -> FakeMessage:
    return await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and not m.loading and not m.deleted)


async def test_the_context_menu_sends_every_image_on_a_message_with_the_forms_choices(h: BotHarness) -> None:
    [menu] = [c for c in h.discord.synced_commands[None] if c.get("type") == 3 and c["name"] == MENU]
    assert menu["name_localizations"]["fr"] == "Imaginer avec ces images"  # named in each member's language
    posted = await h.discord.user_message(h.guild.channel_id, h.alice, "my moodboard", attachments=pictures(10))
    form = await open_form(h, h.bob, posted)
    shown = inputs(form)
    assert list(shown) == ["Prompt", "Aspect ratio", "Size"]  # no character: the server has none
    assert shown["Prompt"]["description"] == "Uses the 10 images on the message."
    assert [o["value"] for o in shown["Size"]["component"]["options"]] == ["1K", "2K", "4K"]
    assert not shown["Aspect ratio"]["component"]["required"]

    result = await h.wait_result(
        await submit(h, form, h.bob, **{"Prompt": "one collage", "Aspect ratio": "16:9", "Size": "2K"})
    )
    assert sent_widths(h) == [40 + n for n in range(1, 11)]  # all ten, in the message's order
    request = h.gemini_requests()[-1].json
    assert request["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert h.sent_texts() == ["one collage"]
    assert result.embeds[0]["description"] == "one collage" and "16:9" in embed_fields(result)["Size"]

    # Left empty, the choices are the server's (here the model's) defaults.
    form = await open_form(h, h.bob, posted)
    await h.wait_result(await submit(h, form, h.bob, Prompt="again"))
    assert "aspectRatio" not in h.gemini_requests()[-1].json["generationConfig"].get("imageConfig", {})
    assert h.gemini_requests()[-1].json["generationConfig"]["imageConfig"]["imageSize"] == "1K"


async def test_thread_replies_use_all_their_images(h: BotHarness) -> None:
    result = await h.wait_result(await h.imagine(h.alice, "a shop window"))
    ask = await h.discord.user_message(
        result.id, h.alice, "fill it with these", reply_to=result.id, attachments=pictures(7)
    )
    await h.wait_reply(ask)
    assert sent_widths(h) == [40 + n for n in range(1, 8)]
    assert h.sent_texts()[-1] == "fill it with these"


async def test_a_characters_images_fill_what_is_left(h: BotHarness) -> None:
    assert h.bot is not None
    services = h.bot.services
    mira = await create_character(services.db, guild_id=h.guild.id, name="Mira", description="red braid", created_by=1)
    keys = [await services.images.put(png(200 + n, 30), "image/png") for n in range(6)]
    await change_character(services.db, mira.id, changed_by=1, change="add_image", max_images=14, add_keys=keys)
    posted = await h.discord.user_message(h.guild.channel_id, h.alice, "ten poses", attachments=pictures(10))

    form = await open_form(h, h.bob, posted)
    character = inputs(form)["Character"]["component"]
    assert character["type"] == 3 and [o["value"] for o in character["options"]] == ["Mira"]
    result = await h.wait_result(await submit(h, form, h.bob, Prompt="Mira in ten poses", Character="Mira"))
    # 14 in all: the member's ten, and the character's four newest before them.
    assert sent_widths(h) == [202, 203, 204, 205] + [40 + n for n in range(1, 11)]
    text = h.sent_texts()[-1]
    assert "The first 4 reference images show Mira" in text and text.endswith("Scene: Mira in ten poses")
    assert "2 of the character's images were left out" in embed_fields(result)["Notes"]


async def test_over_the_models_limit_the_member_is_told_which_were_left_out(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start(GEMINI_MODEL="gemini-2.5-flash-image")  # Nano Banana takes 3 images
        posted = await h.discord.user_message(h.guild.channel_id, h.alice, "five", attachments=pictures(5))
        form = await open_form(h, h.bob, posted)
        downloads = len(h.discord.cdn_requests)
        submitted = await submit(h, form, h.bob, Prompt="three of them")
        await h.wait_result(submitted)
        assert sent_widths(h) == [41, 42, 43]
        note = await submitted.wait_followup(predicate=lambda m: m.ephemeral and "left out" in m.content)
        assert (
            note.content == "Nano Banana takes at most 3 images, so these were left out: pic4.png (#4), pic5.png (#5)"
        )
        fetched = h.discord.cdn_requests[downloads:]
        assert len(fetched) == 3 and not any(p.endswith(("pic4.png", "pic5.png")) for p in fetched)  # never read

        # A thread reply: the same limit, said in a reply to the member's message.
        result = await h.wait_result(await h.imagine(h.alice, "a shop window"))
        ask = await h.discord.user_message(
            result.id, h.alice, "use these", reply_to=result.id, attachments=pictures(4, "r")
        )
        await h.wait_reply(ask)
        assert sent_widths(h) == [41, 42, 43]
        told = await h.discord.wait_for_message(
            lambda m: (m.message_reference or {}).get("message_id") == str(ask) and "left out" in m.content
        )
        assert told.content.endswith("left out: r4.png") and not told.mention_ids


async def test_bad_input_is_told_and_nothing_is_spent(h: BotHarness) -> None:
    words = await h.discord.user_message(h.guild.channel_id, h.alice, "no pictures here")
    empty = await h.discord.context_menu(h.guild.id, h.guild.channel_id, h.bob, MENU, words)
    told = await first_answer(h, empty)
    assert told.ephemeral and "has no images" in told.content and empty.modal is None

    broken = [*pictures(1), ("broken.png", b"not really a png", "image/png")]
    posted = await h.discord.user_message(h.guild.channel_id, h.alice, "two", attachments=broken)
    answer = await first_answer(h, await submit(h, await open_form(h, h.bob, posted), h.bob, Prompt="both"))
    assert answer.ephemeral and answer.content.startswith("broken.png (#2): that file isn't an image")

    # With more characters than a menu holds, the form asks for a name, and an unknown one is refused.
    assert h.bot is not None
    for n in range(26):
        await create_character(h.bot.services.db, guild_id=h.guild.id, name=f"C{n:02}", description="d", created_by=1)
    posted = await h.discord.user_message(h.guild.channel_id, h.alice, "one", attachments=pictures(1))
    form = await open_form(h, h.bob, posted)
    assert inputs(form)["Character"]["component"]["type"] == 4
    unknown = await first_answer(h, await submit(h, form, h.bob, Prompt="x", Character="Nobody"))
    assert "no character called Nobody" in unknown.content

    # The server's rules: a banned word in the prompt, and a blocked member (told before the form).
    mod = h.guild.add_member("mod", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
    for sub, options in (
        ("banned-words", {"add": "dragon"}),
        ("block member", {"member": h.alice.id, "reason": "spam"}),
    ):
        inter = await h.discord.slash(h.guild.id, h.guild.channel_id, mod, "settings", options, subcommand=sub)
        await first_answer(h, inter)
    banned = await first_answer(h, await submit(h, await open_form(h, h.bob, posted), h.bob, Prompt="a dragon"))
    assert "doesn't allow “dragon”" in banned.content
    blocked = await h.discord.context_menu(h.guild.id, h.guild.channel_id, h.alice, MENU, posted)
    assert "blocked you" in (await first_answer(h, blocked)).content and blocked.modal is None
    assert h.gemini_requests() == []
