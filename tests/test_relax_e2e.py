"""Relax mode end to end: real discord.py against the fake Discord, relax jobs gathered into batches at the fake
Gemini Batch API, delivered through the channel with the member mentioned."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from storage.batches import open_batches
from storage.generations import get_generation
from storage.guild_settings import update_guild_settings
from storage.jobs import Job, count_reserved_since, get_job, jobs_where
from tests.bot_harness import BotHarness, custom_ids, embed_fields, has_image, wait_until
from tests.fake_discord import MANAGE_GUILD, MEMBER_PERMISSIONS, FakeMessage

pytestmark = pytest.mark.timeout(60)

#: Batches go when two relax jobs wait (or the oldest has waited 30 s), and are looked at every 50 ms. The long
#: lease makes the batcher's idle wait long too (a third of it): a batch that went only after it, not because a
#: job's admission woke the batcher, would time the tests out.
RELAX = {
    "BANANA_RELAX_BATCH_SIZE": "2",
    "BANANA_RELAX_MAX_WAIT": "30",
    "BANANA_RELAX_POLL_MIN": "0.05",
    "BANANA_JOB_LEASE": "300",
}


@pytest_asyncio.fixture
async def h(tmp_path: Path) -> AsyncIterator[BotHarness]:
    async with BotHarness(tmp_path) as harness:
        harness.api.batch_seconds = 0.3
        await harness.start(**RELAX)
        yield harness


async def relax_jobs(h: BotHarness) -> list[Job]:
    assert h.bot is not None
    return await jobs_where(h.bot.jobs.db, "speed = 'relax' ORDER BY created_at", ())


async def wait_relax_jobs(h: BotHarness, count: int) -> list[Job]:
    found: list[Job] = []

    async def admitted() -> bool:
        found[:] = await relax_jobs(h)
        return len(found) >= count

    await wait_until(admitted, f"{count} relax jobs admitted")
    return found


async def delivered_to(h: BotHarness, user_id: int, prompt: str) -> FakeMessage:
    """The result posted through the channel (no interaction), mentioning the member."""
    return await h.discord.wait_for_message(
        lambda m: (
            has_image(m)
            and not m.deleted
            and m.interaction_id is None
            and f"<@{user_id}>" in m.content
            and any(e.get("description") == prompt for e in m.embeds)
        ),
        timeout=30,
    )


async def _no_open_batches(h: BotHarness) -> bool:
    assert h.bot is not None
    return not await open_batches(h.bot.jobs.db)


def batch_calls(h: BotHarness) -> list[str]:
    return [r.path for r in h.api.requests if r.path.endswith(":batchGenerateContent")]


async def test_relax_jobs_are_batched_and_posted_to_the_channel_with_a_mention(h: BotHarness) -> None:
    first = await h.imagine(h.alice, "a relaxed otter", speed="relax")
    status = await first.wait_callback()
    assert status.json["type"] == 5
    await wait_relax_jobs(h, 1)
    shown = await h.discord.wait_for_message(
        lambda m: m.interaction_id == first.id and "Relax mode" in m.content, timeout=10
    )
    assert "instead of" in shown.content and "within 24 hours" in shown.content
    assert "job:cancel:" in " ".join(custom_ids(shown))
    assert batch_calls(h) == []  # one relax job waits for a second (batch size 2) or 30 s

    second = await h.imagine(h.bob, "a relaxed badger", speed="relax")
    await second.wait_callback()
    otter = await delivered_to(h, h.alice.id, "a relaxed otter")
    badger = await delivered_to(h, h.bob.id, "a relaxed badger")

    assert len(batch_calls(h)) == 1 and len(h.api.batches) == 1
    status = h.discord.messages[shown.id]
    # When the batch went, the same status message said so (no second message); then it gave way to the result.
    assert any("sent to Google in a batch" in (e.get("content") or "") for e in status.edits), status.edits
    assert status.deleted
    # Each member's own status message was edited; none was posted anew.
    assert not [m for m in h.discord.messages.values() if "sent to Google" in m.content and m.interaction_id is None]
    assert h.gemini_requests() == []  # nothing went the fast way
    assert otter.mention_ids == [h.alice.id] and badger.mention_ids == [h.bob.id]
    # The same buttons and thread as a fast result.
    job_id = custom_ids(otter)[0].split(":")[2]
    assert [c.split(":")[1] for c in custom_ids(otter)][:3] == ["reroll", "remix", "edit"]
    await h.discord.wait_for_message(lambda m: m.channel_id == otter.id, timeout=10)  # the thread's hint

    assert h.bot is not None
    db = h.bot.jobs.db
    job = await get_job(db, job_id)
    assert job is not None and job.status == "done" and job.speed == "relax" and job.result_message_id == otter.id
    assert job.model_turn is not None and all("signature" in p for p in job.model_turn["parts"])
    assert job.generation_id is not None
    row = await get_generation(db, job.generation_id)
    assert row is not None and row.speed == "relax" and row.batch_id == job.batch_id
    await wait_until(lambda: _no_open_batches(h), "the batch recorded as delivered")

    # The batch price is half the fast price of the same request.
    fast = await h.imagine(h.alice, "a relaxed otter")
    await h.wait_result(fast)
    fast_job = (await jobs_where(db, "speed = 'fast' AND status = 'done'", ()))[0]
    assert fast_job.generation_id is not None
    fast_row = await get_generation(db, fast_job.generation_id)
    assert fast_row is not None and fast_row.cost_usd > 0
    assert row.cost_usd == pytest.approx(fast_row.cost_usd / 2, abs=1e-6)


async def test_a_thread_reply_to_a_relax_result_refines_it_with_its_signature(h: BotHarness) -> None:
    await h.imagine(h.alice, "a lantern in the fog", speed="relax")
    await h.imagine(h.bob, "a lantern at noon", speed="relax")
    result = await delivered_to(h, h.alice.id, "a lantern in the fog")
    await h.discord.wait_for_message(lambda m: m.channel_id == result.id)  # the thread

    ask = await h.discord.user_message(result.id, h.alice, "make it green", reply_to=result.id)
    refined = await h.wait_reply(ask)
    assert refined.channel_id == result.id
    # The server's speed is fast: the reply went the fast way, with the batch's model turn replayed.
    assert h.sent_texts() == ["a lantern in the fog", "make it green"]
    model_turn = h.gemini_requests()[-1].json["contents"][1]
    assert model_turn["role"] == "model"
    signatures = [p.get("thoughtSignature") for p in model_turn["parts"]]
    assert signatures and all(s in h.api.issued_signatures for s in signatures)


async def test_a_restart_while_the_batch_runs_still_delivers_once(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        h.api.batch_seconds = 2.0
        await h.start(**RELAX)
        await h.imagine(h.alice, "a comet over the sea", speed="relax")
        await h.imagine(h.bob, "a comet over the hills", speed="relax")
        await wait_until(lambda: len(h.api.batches) == 1, "the batch sent")
        await h.restart(**RELAX)
        comet = await delivered_to(h, h.alice.id, "a comet over the sea")
        await delivered_to(h, h.bob.id, "a comet over the hills")
        assert len(h.api.batches) == 1  # the batch was picked up again, not sent again
        assert h.bot is not None
        rows = await h.bot.jobs.db.fetchall("SELECT count(*) FROM generations WHERE speed = 'relax'")
        assert rows[0][0] == 2  # each image logged (and charged) once
        assert comet.mention_ids == [h.alice.id]


async def test_a_failed_line_delivers_the_rest_and_refunds_that_one(h: BotHarness) -> None:
    h.api.fail_batch_lines("cursed", message="The request could not be processed.")
    await h.imagine(h.alice, "a cursed amulet", speed="relax")
    await h.imagine(h.bob, "a blessed amulet", speed="relax")
    await delivered_to(h, h.bob.id, "a blessed amulet")
    told = await h.discord.wait_for_message(lambda m: "Nothing was charged" in m.content, timeout=10)
    assert h.discord.channels[told.channel_id].recipient == h.alice  # by DM
    assert h.bot is not None
    db = h.bot.jobs.db
    assert await count_reserved_since(db, 0, user_id=h.alice.id) == 0  # refunded
    assert await count_reserved_since(db, 0, user_id=h.bob.id) == 1
    [failed] = await jobs_where(db, "user_id = ? AND speed = 'relax'", (h.alice.id,))
    assert failed.status == "failed" and failed.reserved_usd == 0


async def test_a_failed_batch_refunds_every_job_and_says_why(h: BotHarness) -> None:
    h.api.script_batch("EXPIRED")
    await h.imagine(h.alice, "a slow snail", speed="relax")
    await h.imagine(h.alice, "a slower snail", speed="relax")

    def told() -> list[FakeMessage]:
        return [m for m in h.discord.messages.values() if "expired" in m.content and "Nothing was charged" in m.content]

    await wait_until(lambda: len(told()) == 2, "both jobs' member told")
    assert all(h.discord.channels[m.channel_id].recipient == h.alice for m in told())
    assert h.bot is not None
    assert await count_reserved_since(h.bot.jobs.db, 0, user_id=h.alice.id) == 0
    await wait_until(lambda: _no_open_batches(h), "the batch recorded as delivered")


async def test_cancelling_before_the_batch_is_sent_costs_nothing(h: BotHarness) -> None:
    inter = await h.imagine(h.alice, "a patient heron", speed="relax")
    [job] = await wait_relax_jobs(h, 1)
    shown = await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and "Relax mode" in m.content)
    cancel_id = next(c for c in custom_ids(shown) if c.startswith("job:cancel:"))
    click = await h.discord.click(shown.id, cancel_id, h.alice)
    answer = await h.discord.wait_for_message(lambda m: m.interaction_id == click.id)
    assert "Nothing was charged" in answer.content
    assert h.bot is not None
    db = h.bot.jobs.db
    cancelled = await get_job(db, job.id)
    assert cancelled is not None and cancelled.status == "cancelled" and cancelled.batch_id is None
    assert await count_reserved_since(db, 0, user_id=h.alice.id) == 0

    # The next batch goes without it.
    await h.imagine(h.bob, "a busy heron", speed="relax")
    await h.imagine(h.bob, "a busier heron", speed="relax")
    await delivered_to(h, h.bob.id, "a busier heron")
    [batch] = h.api.batches.values()
    assert job.id not in batch.keys


async def test_the_budget_counts_relax_at_half_price(h: BotHarness) -> None:
    assert h.bot is not None
    # Nano Banana Pro at 1K: $0.134 fast, $0.067 relax.
    await update_guild_settings(h.bot.jobs.db, h.guild.id, updated_by=1, monthly_budget_usd=0.1)
    refused = await h.imagine(h.alice, "a costly crown")
    error = await h.wait_ephemeral(refused)
    assert "budget" in error.content.lower()
    accepted = await h.imagine(h.alice, "a cheaper crown", speed="relax")
    await h.discord.wait_for_message(lambda m: m.interaction_id == accepted.id and "Relax mode" in m.content)
    [reserved] = await relax_jobs(h)
    assert reserved.reserved_usd == pytest.approx(0.0672)  # half of 1,120 image tokens at $120 per million
    second = await h.imagine(h.bob, "another cheaper crown", speed="relax")
    error = await h.wait_ephemeral(second)
    assert "budget" in error.content.lower()  # 2 x $0.067 is over $0.10


async def test_a_relax_only_server_refuses_fast_and_defaults_to_relax(h: BotHarness) -> None:
    assert h.bot is not None
    # Relax only wins over a default of fast left from before.
    await update_guild_settings(h.bot.jobs.db, h.guild.id, updated_by=1, relax_only=True, default_speed="fast")
    fast = await h.imagine(h.alice, "right now please", speed="fast")
    error = await h.wait_ephemeral(fast)
    assert "relax mode only" in error.content
    assert h.gemini_requests() == [] and await relax_jobs(h) == []

    await h.imagine(h.alice, "whenever you like")
    [job] = await wait_relax_jobs(h, 1)
    assert job.speed == "relax"


async def test_cancelling_after_the_batch_was_sent_stops_delivery_but_is_paid_for(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        h.api.batch_seconds = 1.0
        await h.start(**RELAX)
        inter = await h.imagine(h.alice, "a late train", speed="relax")
        await h.imagine(h.bob, "an early train", speed="relax")
        await wait_until(lambda: len(h.api.batches) == 1, "the batch sent")
        shown = await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and "Relax mode" in m.content)
        cancel_id = next(c for c in custom_ids(shown) if c.startswith("job:cancel:"))
        click = await h.discord.click(shown.id, cancel_id, h.alice)
        answer = await h.discord.wait_for_message(lambda m: m.interaction_id == click.id)
        assert "already sent" in answer.content and "won't be posted" in answer.content

        await delivered_to(h, h.bob.id, "an early train")
        await wait_until(lambda: _no_open_batches(h), "the batch recorded as delivered")
        assert not any(has_image(m) and f"<@{h.alice.id}>" in m.content for m in h.discord.messages.values()), (
            "a cancelled delivery was posted"
        )
        assert h.bot is not None
        db = h.bot.jobs.db
        job_id = cancel_id.split(":")[2]
        job = await get_job(db, job_id)
        assert job is not None and job.status == "done" and job.delivery_cancelled
        assert job.generation_id is not None
        row = await get_generation(db, job.generation_id)
        assert row is not None and row.cost_usd > 0  # paid for
        assert await count_reserved_since(db, 0, user_id=h.alice.id) == 1


async def test_the_status_tells_the_usual_relax_turnaround_from_the_log(h: BotHarness) -> None:
    for n in range(4):
        await h.imagine(h.alice if n % 2 else h.bob, f"warm-up {n}", speed="relax")
    for n in range(4):
        await delivered_to(h, h.alice.id if n % 2 else h.bob.id, f"warm-up {n}")
    inter = await h.imagine(h.alice, "a measured wait", speed="relax")
    shown = await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and "Relax mode" in m.content)
    assert "relax: usually ~" in shown.content and "number 1 for the next batch" in shown.content


async def test_a_relax_grid_goes_in_one_batch_and_its_preview_is_posted_with_a_mention(h: BotHarness) -> None:
    inter = await h.discord.slash(
        h.guild.id, h.guild.channel_id, h.alice, "grid", {"prompt": "four quiet harbours", "speed": "relax"}
    )
    shown = await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and "Relax mode" in m.content)
    assert "instead of" in shown.content
    preview = await h.discord.wait_for_message(
        lambda m: has_image(m) and m.interaction_id is None and f"<@{h.alice.id}>" in m.content, timeout=30
    )
    labels = [b["label"] for row in preview.components for b in row["components"]]
    assert labels[:4] == ["U1", "U2", "U3", "U4"]
    # The four tiles are one request: one batch of four, though a batch goes at two (they aren't split).
    [batch] = h.api.batches.values()
    assert len(batch.keys) == 4
    assert h.gemini_requests() == []


async def test_in_a_relax_server_thread_replies_are_relax_turns_with_the_signature_replayed(h: BotHarness) -> None:
    assert h.bot is not None
    await update_guild_settings(h.bot.jobs.db, h.guild.id, updated_by=1, default_speed="relax")
    await h.imagine(h.alice, "a paper boat")
    await h.imagine(h.bob, "a paper plane")
    boat = await delivered_to(h, h.alice.id, "a paper boat")
    plane = await delivered_to(h, h.bob.id, "a paper plane")
    for result in (boat, plane):
        await h.discord.wait_for_message(lambda m, r=result: m.channel_id == r.id)  # the threads

    await h.discord.user_message(boat.id, h.alice, "make it red", reply_to=boat.id)
    await h.discord.user_message(plane.id, h.bob, "make it blue", reply_to=plane.id)
    red = await h.discord.wait_for_message(
        lambda m: has_image(m) and m.channel_id == boat.id and f"<@{h.alice.id}>" in m.content, timeout=30
    )
    assert red.id != boat.id and h.gemini_requests() == []  # the replies went in a second batch
    assert len(h.api.batches) == 2
    second = list(h.api.batches.values())[1]
    replayed = [r for r in h.api.requests if r.path.endswith(":batchGenerateContent")][-1].json
    requests = [item["request"] for item in replayed["batch"]["inputConfig"]["requests"]["requests"]]
    assert len(requests) == len(second.keys) == 2
    for request in requests:
        model_turn = request["contents"][1]
        assert model_turn["role"] == "model"
        assert all(p.get("thoughtSignature") in h.api.issued_signatures for p in model_turn["parts"])


async def test_a_relax_image_whose_channel_is_gone_is_reported_as_made_and_paid(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        side = h.guild.add_channel("side")
        h.api.batch_seconds = 1.0
        await h.start(**RELAX)
        await h.imagine(h.alice, "a vanishing act", speed="relax", channel_id=side)
        await h.imagine(h.bob, "a steady act", speed="relax")
        await wait_until(lambda: len(h.api.batches) == 1, "the batch sent")
        await h.stop()
        del h.discord.channels[side]  # deleted while the bot was down, its batch running
        h.guild.channel_ids.remove(side)
        await h.start(**RELAX)
        dm = await h.discord.wait_for_message(lambda m: "couldn't be posted" in m.content, timeout=30)
        assert h.discord.channels[dm.channel_id].recipient == h.alice and "a vanishing act" in dm.content
        await delivered_to(h, h.bob.id, "a steady act")
        assert h.bot is not None
        assert await count_reserved_since(h.bot.jobs.db, 0, user_id=h.alice.id) == 1  # made, so paid for


async def test_settings_make_relax_the_default_and_then_the_only_speed(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start(**RELAX)
        admin = h.guild.add_member("admin", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)

        async def settings(options: dict[str, object]) -> FakeMessage:
            inter = await h.discord.slash(
                h.guild.id, h.guild.channel_id, admin, "settings", options, subcommand="general"
            )
            return await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id)

        answer = await settings({"default_speed": "relax"})
        assert embed_fields(answer)["Speed"] == "relax (half price)"
        await h.imagine(h.alice, "relaxed by default")
        [job] = await wait_relax_jobs(h, 1)
        assert job.speed == "relax"
        fast = await h.imagine(h.alice, "but this one now", speed="fast")
        await h.wait_result(fast)  # a member may still choose fast

        answer = await settings({"relax_only": True})
        assert embed_fields(answer)["Speed"] == "relax (half price) · relax only"
        refused = await h.wait_ephemeral(await h.imagine(h.bob, "fast please", speed="fast"))
        assert "relax mode only" in refused.content


async def test_a_bot_without_a_gemini_key_offers_no_relax(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start(
            GEMINI_API_KEY="",
            BANANA_PROVIDERS="openai",
            OPENAI_API_KEY="sk-test-openai-0001",
            OPENAI_BASE_URL=f"{h.api.base_url}/v1",
        )
        synced = {c["name"]: c for c in h.discord.synced_commands[None]}
        for name in ("imagine", "grid", "edit"):
            assert "speed" not in [o["name"] for o in synced[name].get("options", [])], name
        general = next(o for o in synced["settings"]["options"] if o["name"] == "general")
        offered = [o["name"] for o in general["options"]]
        assert "default_speed" not in offered and "relax_only" not in offered and "default_size" in offered
        await h.wait_result(await h.imagine(h.alice, "fast is fine"))  # through the relay
