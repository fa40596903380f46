"""/grid, /edit and the "Edit image" context menu, end to end against the fake Discord and image API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.jobs import count_reserved_since
from tests.bot_harness import BotHarness, custom_ids, embed_fields, footer, has_image, image_size, png, wait_until
from tests.fake_discord import FakeInteraction, FakeMessage
from tests.fake_image_api import Fault

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[BotHarness]:
    async with BotHarness(tmp_path) as harness:
        await harness.start(BANANA_USER_PENDING="5")
        yield harness
        assert not harness.discord.unknown_routes, harness.discord.unknown_routes
        assert not harness.discord.internal_errors, harness.discord.internal_errors


async def grid(h: BotHarness, prompt: str, **options: object) -> tuple[FakeInteraction, FakeMessage]:
    inter = await h.discord.slash(h.guild.id, h.guild.channel_id, h.alice, "grid", {"prompt": prompt, **options})
    return inter, await h.wait_result(inter)


def button(message: FakeMessage, label: str) -> dict[str, object]:
    return next(b for row in message.components for b in row["components"] if b.get("label") == label)


async def test_grid_runs_four_tiles_side_by_side_and_u_v_work_after_a_restart(h: BotHarness) -> None:
    h.api.latency = 0.3
    _, preview = await grid(h, "a lighthouse in four moods", aspect_ratio="16:9")
    assert h.api.max_in_flight >= 2  # a member's four tiles are one request: they run side by side
    prompts = [r.json["contents"][-1]["parts"][0]["text"] for r in h.gemini_requests()]
    assert prompts == ["a lighthouse in four moods"] * 4
    [file] = preview.files
    assert file.data[:3] == b"\xff\xd8\xff"  # a JPEG preview, well under the limit
    width, height = image_size(file.data)
    assert width <= 2048 and abs(width / height - 16 / 9) < 0.05
    assert [b for b in custom_ids(preview) if b.startswith("grid:u:")][:1]
    labels = [b["label"] for row in preview.components for b in row["components"]]
    assert labels[:8] == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4"] and labels[8] == "Reroll"
    fields = embed_fields(preview)
    assert fields["Cost"].startswith("$0.5")  # four images at ~$0.134
    assert h.bot is not None
    assert await count_reserved_since(h.bot.jobs.db, 0, user_id=h.alice.id) == 4

    await h.restart(BANANA_USER_PENDING="5")
    u2 = await h.discord.click(preview.id, str(button(preview, "U2")["custom_id"]), h.bob)
    posted = await h.discord.wait_for_message(lambda m: m.interaction_id == u2.id and "Posted" in m.content)
    assert posted.ephemeral
    full = await h.discord.wait_for_message(lambda m: m.channel_id == preview.id and has_image(m))
    assert image_size(full.files[0].data) == (1376, 768)  # tile 2 at full size (1K 16:9)
    assert footer(full).startswith("Version 1")
    # The U result is ready to refine: a reply continues from tile 2's own conversation.
    ask = await h.discord.user_message(preview.id, h.alice, "make it stormy", reply_to=full.id)
    await h.wait_reply(ask)
    assert h.sent_texts() == ["a lighthouse in four moods", "make it stormy"]

    before = len(h.gemini_requests())
    v3 = await h.discord.click(preview.id, str(button(preview, "V3")["custom_id"]), h.bob)
    varied = await h.wait_result(v3)
    assert len(h.gemini_requests()) == before + 4
    assert "variation of this image" in h.sent_texts()[-1]
    assert varied.embeds[0]["description"] == "a lighthouse in four moods"


async def test_a_failing_tile_is_shown_named_and_refunded(h: BotHarness) -> None:
    h.api.script(Fault.prompt_block("PROHIBITED_CONTENT"))
    _, preview = await grid(h, "four foxes")
    notes = embed_fields(preview)["Notes"]
    assert "Variation" in notes and "safety filters" in notes and "not charged" in notes
    disabled = [b["label"] for row in preview.components for b in row["components"] if b.get("disabled")]
    assert len(disabled) == 2 and disabled[0][0] == "U" and disabled[1][0] == "V"
    assert h.bot is not None
    assert await count_reserved_since(h.bot.jobs.db, 0, user_id=h.alice.id) == 3
    failed_u = next(
        b for b in custom_ids(preview) if b == f"grid:u:{custom_ids(preview)[0].split(':')[2]}:{disabled[0][1]}"
    )
    click = await h.discord.click(preview.id, failed_u, h.alice)
    answer = await h.discord.wait_for_message(lambda m: m.interaction_id == click.id)
    assert answer.ephemeral and "failed" in answer.content


async def test_sliced_mode_asks_once_and_cuts_four(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start(BANANA_GRID_MODE="sliced")
        _, preview = await grid(h, "four cupcakes", aspect_ratio="1:1")
        assert len(h.gemini_requests()) == 1
        assert "2x2 grid" in h.sent_texts()[-1] and "four cupcakes" in h.sent_texts()[-1]
        assert h.bot is not None
        assert await count_reserved_since(h.bot.jobs.db, 0, user_id=h.alice.id) == 1
        u4 = await h.discord.click(preview.id, str(button(preview, "U4")["custom_id"]), h.alice)
        await h.discord.wait_for_message(lambda m: m.interaction_id == u4.id and "Posted" in m.content)
        full = await h.discord.wait_for_message(lambda m: m.channel_id == preview.id and has_image(m))
        assert image_size(full.files[0].data) == (512, 512)  # a quarter of the 1K square
        assert "cut from a 2×2 grid" in embed_fields(full)["Notes"]
        assert await count_reserved_since(h.bot.jobs.db, 0, user_id=h.alice.id) == 1  # the cut-out is free
        # Refining the cut-out sends it as a reference (there is no conversation behind a panel).
        ask = await h.discord.user_message(preview.id, h.alice, "add sprinkles", reply_to=full.id)
        await h.wait_reply(ask)
        parts = h.gemini_requests()[-1].json["contents"][-1]["parts"]
        assert parts[0] == {"text": "add sprinkles"} and "inlineData" in parts[1]


async def test_a_grid_needs_four_images_of_daily_quota(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start(BANANA_USER_DAILY="3")
        inter = await h.discord.slash(h.guild.id, h.guild.channel_id, h.alice, "grid", {"prompt": "too many"})
        message = await h.wait_ephemeral(inter)
        assert "needs 4 images and you have 3 left" in message.content
        assert h.gemini_requests() == []


async def test_cancel_a_waiting_grid(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start(BANANA_MAX_CONCURRENT="1")
        h.api.latency = 1.0
        first = await h.imagine(h.bob, "in front")
        assert h.bot is not None
        queue = h.bot.jobs.queue
        await wait_until(lambda: queue.running_count == 1, "bob's job holds the only slot", 5)
        inter = await h.discord.slash(h.guild.id, h.guild.channel_id, h.alice, "grid", {"prompt": "later"})
        status = await h.discord.wait_for_message(
            lambda m: m.interaction_id == inter.id and any(c.startswith("grid:cancel:") for c in custom_ids(m))
        )
        [cancel] = [c for c in custom_ids(status) if c.startswith("grid:cancel:")]
        click = await h.discord.click(status.id, cancel, h.alice)
        answer = await h.discord.wait_for_message(lambda m: m.interaction_id == click.id)
        assert answer.content.startswith("Cancelled")
        await h.discord.wait_for_message(lambda m: m.id == status.id and m.content.startswith("Cancelled"))
        await h.wait_result(first)
        assert h.sent_texts() == ["in front"] and len(h.gemini_requests()) == 1
        assert h.bot is not None
        assert await count_reserved_since(h.bot.jobs.db, 0, user_id=h.alice.id) == 0


async def test_edit_with_two_images_opens_a_thread_that_keeps_them(h: BotHarness) -> None:
    inter = await h.discord.slash(
        h.guild.id,
        h.guild.channel_id,
        h.alice,
        "edit",
        {"instruction": "put the person from image 2 into image 1", "aspect_ratio": "3:2"},
        attachments={
            "image": ("room.png", png(600, 400), "image/png"),
            "image2": ("me.png", png(200, 300), "image/png"),
        },
    )
    result = await h.wait_result(inter)
    parts = h.gemini_requests()[-1].json["contents"][-1]["parts"]
    assert parts[0] == {"text": "put the person from image 2 into image 1"}
    assert [p["inlineData"]["mimeType"] for p in parts[1:]] == ["image/png", "image/png"]
    assert h.gemini_requests()[-1].json["generationConfig"]["imageConfig"]["aspectRatio"] == "3:2"
    # Replying in the thread keeps both images in the conversation.
    ask = await h.discord.user_message(result.id, h.alice, "now make it sunset", reply_to=result.id)
    await h.wait_reply(ask)
    contents = h.gemini_requests()[-1].json["contents"]
    assert (
        sum("inlineData" in p for p in contents[0]["parts"]) == 2
        and contents[-1]["parts"][0]["text"] == "now make it sunset"
    )


async def test_edit_refuses_bad_input_before_spending(h: BotHarness) -> None:
    not_image = await h.discord.slash(
        h.guild.id,
        h.guild.channel_id,
        h.alice,
        "edit",
        {"instruction": "make it blue"},
        attachments={"image": ("a.png", png(), "image/png"), "image2": ("b.txt", b"plain text", "text/plain")},
    )
    message = await h.wait_ephemeral(not_image)
    assert message.content.startswith("image2:") and "isn't an image" in message.content
    truncated = await h.discord.slash(
        h.guild.id,
        h.guild.channel_id,
        h.alice,
        "edit",
        {"instruction": "make it blue"},
        attachments={"image": ("cut.png", png(300, 300)[:200], "image/png")},
    )
    message = await h.wait_ephemeral(truncated)
    assert message.content.startswith("image:") and "damaged or cut short" in message.content
    assert h.gemini_requests() == []


async def test_a_huge_input_is_downscaled_and_the_member_told(h: BotHarness) -> None:
    big = png(5000, 3000)
    inter = await h.discord.slash(
        h.guild.id,
        h.guild.channel_id,
        h.alice,
        "edit",
        {"instruction": "sharpen it"},
        attachments={"image": ("huge.png", big, "image/png")},
    )
    result = await h.wait_result(inter)
    assert "image was downscaled from 5000×3000 to 3072×1843" in embed_fields(result)["Notes"]
    sent = h.gemini_requests()[-1].json["contents"][-1]["parts"][1]["inlineData"]
    assert sent["mimeType"] == "image/jpeg"


async def test_context_menu_edits_a_members_image_and_continues_a_result(h: BotHarness) -> None:
    posted = await h.discord.user_message(
        h.guild.channel_id, h.bob, "my cat", attachments=[("cat.png", png(320, 240), "image/png")]
    )
    menu = await h.discord.context_menu(h.guild.id, h.guild.channel_id, h.alice, "Edit image", posted)
    await menu.wait_callback()
    assert menu.modal is not None
    field_id = menu.modal["components"][0]["components"][0]["custom_id"]
    submitted = await h.discord.submit_modal(
        menu.modal["custom_id"], {field_id: "give the cat a crown"}, h.alice, channel_id=h.guild.channel_id
    )
    result = await h.wait_result(submitted)
    parts = h.gemini_requests()[-1].json["contents"][-1]["parts"]
    assert parts[0] == {"text": "give the cat a crown"} and "inlineData" in parts[1]

    # On the bot's own result the menu continues that image's conversation.
    menu = await h.discord.context_menu(h.guild.id, h.guild.channel_id, h.bob, "Edit image", result.id)
    await menu.wait_callback()
    assert menu.modal is not None
    field_id = menu.modal["components"][0]["components"][0]["custom_id"]
    again = await h.discord.submit_modal(
        menu.modal["custom_id"], {field_id: "and a cape"}, h.bob, channel_id=h.guild.channel_id
    )
    await h.discord.wait_for_message(lambda m: m.interaction_id == again.id)
    await h.discord.wait_for_message(lambda m: m.channel_id == result.id and has_image(m))
    assert h.sent_texts() == ["give the cat a crown", "and a cape"]

    # A message without an image gets a clear answer.
    words = await h.discord.user_message(h.guild.channel_id, h.bob, "just words")
    menu = await h.discord.context_menu(h.guild.id, h.guild.channel_id, h.alice, "Edit image", words)
    answer = await h.discord.wait_for_message(lambda m: m.interaction_id == menu.id)
    assert answer.ephemeral and "has no image" in answer.content


async def test_remix_runs_a_changed_prompt_as_a_new_image(h: BotHarness) -> None:
    first = await h.wait_result(await h.imagine(h.alice, "a blue bicycle"))
    [remix] = [c for c in custom_ids(first) if c.startswith("job:remix:")]
    click = await h.discord.click(first.id, remix, h.bob)
    await click.wait_callback()
    assert click.modal is not None
    text_input = click.modal["components"][0]["components"][0]
    assert text_input["value"] == "a blue bicycle"  # prefilled with the prompt
    submitted = await h.discord.submit_modal(
        click.modal["custom_id"], {text_input["custom_id"]: "a red bicycle"}, h.bob, channel_id=h.guild.channel_id
    )
    remixed = await h.wait_result(submitted)
    assert remixed.embeds[0]["description"] == "a red bicycle" and h.sent_texts() == ["a red bicycle"]


async def test_an_admin_sets_the_grid_mode_for_their_server_only(h: BotHarness) -> None:
    from tests.fake_discord import MANAGE_GUILD, MEMBER_PERMISSIONS

    refused = await h.discord.slash(
        h.guild.id, h.guild.channel_id, h.bob, "settings", {"grid_mode": "sliced"}, subcommand="general"
    )
    answer = await h.discord.wait_for_message(lambda m: m.interaction_id == refused.id)
    assert answer.ephemeral and "Manage Server" in answer.content
    [command] = [c for c in h.discord.synced_commands[None] if c["name"] == "settings"]
    assert int(command["default_member_permissions"]) == MANAGE_GUILD

    admin = h.guild.add_member("admin", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
    changed = await h.discord.slash(
        h.guild.id, h.guild.channel_id, admin, "settings", {"grid_mode": "sliced"}, subcommand="general"
    )
    answer = await h.discord.wait_for_message(lambda m: m.interaction_id == changed.id)
    assert answer.content.startswith("Saved") and embed_fields(answer)["/grid mode"] == "sliced"
    await grid(h, "four pears")
    assert len(h.gemini_requests()) == 1  # sliced: one request

    other = h.discord.add_guild("Other")
    carol = other.add_member("carol")
    inter = await h.discord.slash(other.id, other.channel_id, carol, "grid", {"prompt": "four plums"})
    await h.wait_result(inter)
    assert len(h.gemini_requests()) == 5  # the other server keeps the default: four requests


async def test_gif_inputs_use_their_first_frame(h: BotHarness) -> None:
    import io

    from PIL import Image

    frames = [Image.new("RGB", (120, 80), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    inter = await h.discord.slash(
        h.guild.id,
        h.guild.channel_id,
        h.alice,
        "edit",
        {"instruction": "make it a poster"},
        attachments={"image": ("anim.gif", buffer.getvalue(), "image/gif")},
    )
    await h.wait_result(inter)
    sent = h.gemini_requests()[-1].json["contents"][-1]["parts"][1]["inlineData"]
    assert sent["mimeType"] == "image/png"  # the APIs don't take GIFs
