"""Live previews end to end: the fake API streams drafts while it "renders", the real bot shows them in the
status message (small, labelled as a draft), the final image replaces them, and a server can turn them off."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.i18n import t
from bot.media.drafts import draft_thumbnail
from bot.ui import presenter
from tests.bot_harness import BotHarness
from tests.fake_discord import MANAGE_GUILD, MEMBER_PERMISSIONS
from tests.fake_image_api import Fault

pytestmark = pytest.mark.timeout(60)
LATENCY = 1.5  # drafts at ~40% and ~70% of it; the bot's status ticks every 0.1 s in the harness


@pytest.fixture
def h(harness: BotHarness) -> BotHarness:
    harness.api.latency = LATENCY
    return harness


def draft_edits(edits: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in edits if any(str(f).startswith("draft-") for f in e.get("files") or [])]  # type: ignore[attr-defined]


async def test_the_draft_shows_in_the_status_and_the_final_image_replaces_it(h: BotHarness) -> None:
    inter = await h.imagine(h.alice, "a lighthouse in a storm", resolution="2K")
    result = await h.wait_result(inter)

    drafts = draft_edits(result.edits)
    assert drafts, [e.get("files") for e in result.edits]
    first = drafts[0]
    embed = first["embeds"][0]  # type: ignore[index]
    assert embed["title"] == t("en-US", "status.draft_title", number=1)
    assert embed["image"]["url"] == "attachment://draft-1.jpg"
    # The model's thought headline is in the status line next to the draft.
    assert any(t("en-US", "status.thinking", headline="").strip() in str(e.get("content")) for e in result.edits)
    assert h.gemini_requests()[-1].path.endswith(":streamGenerateContent")

    # The final message: the result embed and the full image only; no draft left behind.
    [final] = result.files
    assert final.filename.startswith("banana-") and result.embeds[0]["image"]["url"] == f"attachment://{final.filename}"
    assert result.edits[-1].get("embeds") and result.edits[-1]["embeds"][0].get("title") != embed["title"]
    with Image.open(io.BytesIO(final.data)) as image:
        assert image.size == (2048, 2048)


async def test_the_draft_is_small_and_a_jpeg(h: BotHarness) -> None:
    await h.wait_result(await h.imagine(h.alice, "a fox", resolution="2K"))
    uploads = [f for call in h.discord.calls for f in call.files or [] if f.filename.startswith("draft-")]
    assert uploads
    with Image.open(io.BytesIO(uploads[0].data)) as image:
        assert image.format == "JPEG" and max(image.size) <= 640


async def test_a_server_can_turn_previews_off(h: BotHarness) -> None:
    admin = h.guild.add_member("admin", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
    inter = await h.discord.slash(
        h.guild.id, h.guild.channel_id, admin, "settings", {"previews": False}, subcommand="general"
    )
    await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and not m.loading)

    result = await h.wait_result(await h.imagine(h.alice, "a quiet harbour"))
    assert draft_edits(result.edits) == []
    assert h.gemini_requests()[-1].path.endswith(":generateContent")  # the plain call: nothing streamed


async def test_a_stream_dropped_after_a_draft_retries_and_posts_only_the_final_image(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        h.api.latency = LATENCY
        await h.start(BANANA_RETRY_ATTEMPTS="3", BANANA_RETRY_BACKOFF="0.01", BANANA_RETRY_BACKOFF_MAX="0.02")
        h.api.script(Fault.drop_stream(after_events=2))
        result = await h.wait_result(await h.imagine(h.alice, "a windmill"))
        assert [r.path.rsplit(":", 1)[1] for r in h.gemini_requests()] == ["streamGenerateContent"] * 2
        with Image.open(io.BytesIO(result.files[0].data)) as image:
            assert image.size == (1024, 1024)  # the final 1K image, never a draft


async def test_a_draft_replaced_before_its_edit_is_due_is_never_decoded_or_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Status edits are spaced (a third of the interval at least); a draft that a newer one replaces in
    that time is skipped: the status shows draft 2 directly, and only one draft is shrunk and uploaded.
    Timeline: drafts at 40% and 70% of the 3 s latency (1.2 s, 2.1 s), the first edit allowed 2.5 s after
    the "generating" edit, the final image at 3 s."""
    shrunk: list[int] = []

    def counting_thumbnail(data: bytes) -> bytes:
        shrunk.append(len(data))
        return draft_thumbnail(data)

    monkeypatch.setattr(presenter, "draft_thumbnail", counting_thumbnail)
    async with BotHarness(tmp_path) as h:
        h.api.latency = 3.0
        await h.start(BANANA_STATUS_INTERVAL="7.5")
        result = await h.wait_result(await h.imagine(h.alice, "a windmill at dusk"))
        drafts = draft_edits(result.edits)
        assert [d["embeds"][0]["title"] for d in drafts] == [t("en-US", "status.draft_title", number=2)]  # type: ignore[index]
        uploads = [f.filename for call in h.discord.calls for f in call.files or [] if f.filename.startswith("draft-")]
        assert uploads == ["draft-2.jpg"]
        assert len(shrunk) == 1  # draft 1 was never decoded
