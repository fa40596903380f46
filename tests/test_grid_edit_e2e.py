"""/grid, /edit and the "Edit image" context menu, end to end against the fake Discord and image API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.jobs import count_reserved_since
from tests.bot_harness import BotHarness, custom_ids, embed_fields, footer, image_size
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
    full = await h.discord.wait_for_message(lambda m: m.channel_id == preview.id and bool(m.files))
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
        full = await h.discord.wait_for_message(lambda m: m.channel_id == preview.id and bool(m.files))
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
        await asyncio.sleep(0.2)
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
