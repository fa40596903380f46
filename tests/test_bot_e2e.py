"""Banana Bot end to end: real discord.py against the fake Discord, real core against the fake image API."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.generations import get_generation
from storage.jobs import count_reserved_since, get_job
from tests.bot_harness import BotHarness, custom_ids, embed_fields, footer, has_image, image_size, png
from tests.fake_discord import MANAGE_MESSAGES, MEMBER_PERMISSIONS, PRIVILEGED_INTENTS
from tests.fake_image_api import Fault

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def h(harness: BotHarness) -> BotHarness:
    return harness


async def test_imagine_from_interaction_to_image_in_a_thread(h: BotHarness) -> None:
    assert h.discord.identified_intents and all(i & PRIVILEGED_INTENTS == 0 for i in h.discord.identified_intents)
    synced = {c["name"] for c in h.discord.synced_commands[None]}
    assert "imagine" in synced

    inter = await h.imagine(h.alice, "an orange cat on a windowsill", aspect_ratio="16:9", resolution="2K")
    callback = await inter.wait_callback()
    assert callback.json["type"] == 5  # deferred, publicly
    assert inter.deferred_at is not None and inter.deferred_at < 1.0

    result = await h.wait_result(inter)
    [file] = result.files
    assert file.content_type == "image/png" or file.filename.endswith(".png")
    assert image_size(file.data) == (2752, 1536)  # Nano Banana Pro's 2K 16:9 (spec A8)
    fields = embed_fields(result)
    assert fields["Model"] == "Nano Banana Pro"
    assert fields["Size"] == "2K · 16:9 · 2752×1536"
    assert "Time" in fields
    assert result.embeds[0]["description"] == "an orange cat on a windowsill"
    assert result.embeds[0]["image"]["url"].startswith("attachment://")
    ids = custom_ids(result)
    job_id = ids[0].split(":")[2]
    assert ids == [f"job:{a}:{job_id}" for a in ("reroll", "remix", "edit", "upscale", "delete", "addchar", "report")]

    # The status was kept current before the result replaced it.
    original_edits = [e.get("content") or "" for e in result.edits]
    assert any("In line" in c or "Generating" in c for c in original_edits), original_edits

    # A thread on the result, with a hint on how to continue.
    thread = await h.discord.wait_for_message(lambda m: m.content.startswith("Reply to an image"))
    assert thread.channel_id == result.id and h.discord.threads[result.id].starter_message_id == result.id

    assert h.bot is not None
    job = await get_job(h.bot.jobs.db, job_id)
    assert job is not None and job.status == "done" and job.thread_id == result.id
    assert job.result_message_id == result.id
    assert job.generation_id is not None
    row = await get_generation(h.bot.jobs.db, job.generation_id)
    assert row is not None and row.command == "imagine" and row.user_id == h.alice.id
    assert row.defer_ms is not None and row.queue_ms is not None
    # The image's price ($0.134 at 2K) plus the prompt and thinking tokens the fake reports, as shown.
    assert 0.134 <= row.cost_usd < 0.14 and fields["Cost"] == f"${row.cost_usd:.3f}"


async def test_replies_in_the_thread_continue_from_the_chosen_version(h: BotHarness) -> None:
    inter = await h.imagine(h.alice, "a red fox in a meadow")
    v1 = await h.wait_result(inter)
    await h.discord.wait_for_message(lambda m: m.channel_id == v1.id)  # the thread hint

    ask2 = await h.discord.user_message(v1.id, h.alice, "make it winter", reply_to=v1.id)
    v2 = await h.wait_reply(ask2)
    assert v2.channel_id == v1.id
    assert h.sent_texts() == ["a red fox in a meadow", "make it winter"]
    model_turn = h.gemini_requests()[-1].json["contents"][1]
    assert model_turn["role"] == "model"
    assert all(p.get("thoughtSignature") in h.api.issued_signatures for p in model_turn["parts"])
    assert footer(v2).startswith("Version 2 · edited from version 1")

    # Mentioning the bot without replying continues from the newest image.
    ask3 = await h.discord.user_message(v1.id, h.bob, "add a moon", mention_bot=True)
    v3 = await h.wait_reply(ask3)
    assert h.sent_texts() == ["a red fox in a meadow", "make it winter", "add a moon"]
    assert footer(v3).startswith("Version 3 · edited from version 2")

    # Replying to the first image branches from it: the winter edits are not sent.
    ask4 = await h.discord.user_message(v1.id, h.alice, "make it night", reply_to=v1.id)
    v4 = await h.wait_reply(ask4)
    assert h.sent_texts() == ["a red fox in a meadow", "make it night"]
    assert footer(v4).startswith("Version 4 · edited from version 1")

    # Images attached to a reply go along as references.
    ask5 = await h.discord.user_message(
        v1.id, h.alice, "put this hat on the fox", reply_to=v4.id, attachments=[("hat.png", png(), "image/png")]
    )
    await h.wait_reply(ask5)
    last_user_parts = h.gemini_requests()[-1].json["contents"][-1]["parts"]
    assert last_user_parts[0] == {"text": "put this hat on the fox"} and "inlineData" in last_user_parts[1]


async def test_the_conversation_and_the_buttons_survive_a_restart(h: BotHarness) -> None:
    inter = await h.imagine(h.alice, "a lighthouse at dusk")
    v1 = await h.wait_result(inter)
    await h.restart()

    ask = await h.discord.user_message(v1.id, h.alice, "add a storm", reply_to=v1.id)
    await h.wait_reply(ask)
    assert h.sent_texts() == ["a lighthouse at dusk", "add a storm"]  # the context came from SQLite

    reroll_id = next(c for c in custom_ids(v1) if c.startswith("job:reroll:"))
    click = await h.discord.click(v1.id, reroll_id, h.bob)
    assert (await click.wait_callback()).json["type"] == 5
    rerolled = await h.wait_result(click)
    assert rerolled.id != v1.id and rerolled.embeds[0]["description"] == "a lighthouse at dusk"
    assert h.sent_texts() == ["a lighthouse at dusk"]  # a reroll starts afresh


async def test_blocked_prompt_says_why_privately_and_charges_nothing(h: BotHarness) -> None:
    h.api.script(Fault.prompt_block("PROHIBITED_CONTENT"))
    inter = await h.imagine(h.alice, "something not allowed")
    error = await h.wait_ephemeral(inter)
    assert "safety filters" in error.content and "(prohibited content)" in error.content
    assert "Nothing was charged" in error.content
    assert inter.original() is None or inter.original().deleted  # type: ignore[union-attr]
    assert h.bot is not None
    assert await count_reserved_since(h.bot.jobs.db, 0, user_id=h.alice.id) == 0


async def test_bad_reference_is_refused_before_anything_is_spent(h: BotHarness) -> None:
    inter = await h.imagine(
        h.alice, "use this", attachments={"reference": ("notes.png", b"this is not an image", "image/png")}
    )
    error = await h.wait_ephemeral(inter)
    assert error.content.startswith("reference:") and "isn't an image" in error.content
    assert h.gemini_requests() == []
    assert h.bot is not None
    assert await count_reserved_since(h.bot.jobs.db, 0, user_id=h.alice.id) == 0


async def test_reference_images_are_downloaded_and_sent(h: BotHarness) -> None:
    inter = await h.imagine(
        h.alice,
        "this dog as a watercolour",
        attachments={"reference": ("dog.png", png(300, 200), "image/png"), "reference2": ("b.png", png(), "image/png")},
    )
    await h.wait_result(inter)
    parts = h.gemini_requests()[-1].json["contents"][-1]["parts"]
    assert parts[0] == {"text": "this dog as a watercolour"} and sum("inlineData" in p for p in parts) == 2


async def test_delete_is_for_the_requester_or_moderators(h: BotHarness) -> None:
    inter = await h.imagine(h.alice, "a teapot")
    result = await h.wait_result(inter)
    delete_id = next(c for c in custom_ids(result) if c.startswith("job:delete:"))
    refused = await h.discord.click(result.id, delete_id, h.bob)
    answer = await h.discord.wait_for_message(lambda m: m.interaction_id == refused.id)
    assert answer.ephemeral and "Manage Messages" in answer.content
    assert not h.discord.messages[result.id].deleted

    moderator = h.guild.add_member("mod", permissions=MEMBER_PERMISSIONS | MANAGE_MESSAGES)
    allowed = await h.discord.click(result.id, delete_id, moderator)
    await h.discord.wait_for_message(lambda m: m.interaction_id == allowed.id)
    assert h.discord.messages[result.id].deleted


async def test_edit_button_asks_for_an_instruction_and_continues_in_the_thread(h: BotHarness) -> None:
    inter = await h.imagine(h.alice, "a cabin in the woods")
    v1 = await h.wait_result(inter)
    edit_id = next(c for c in custom_ids(v1) if c.startswith("job:edit:"))
    click = await h.discord.click(v1.id, edit_id, h.alice)
    await click.wait_callback()
    assert click.modal is not None
    modal_id = click.modal["custom_id"]
    field_id = click.modal["components"][0]["components"][0]["custom_id"]
    submitted = await h.discord.submit_modal(
        modal_id, {field_id: "add snow on the roof"}, h.alice, channel_id=v1.channel_id
    )
    # Deferred privately while the server's rules are checked, then answered with where it continues.
    ack = await h.discord.wait_for_message(lambda m: m.interaction_id == submitted.id and f"<#{v1.id}>" in m.content)
    assert ack.ephemeral
    edited = await h.discord.wait_for_message(lambda m: m.channel_id == v1.id and has_image(m))
    assert footer(edited).startswith("Version 2 · edited from version 1")
    assert h.sent_texts() == ["a cabin in the woods", "add snow on the roof"]


async def test_the_command_offers_only_what_the_model_takes(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as harness:
        await harness.start()
        [pro] = [c for c in harness.discord.synced_commands[None] if c["name"] == "imagine"]
        options = {o["name"]: o for o in pro["options"]}
        assert "thinking" not in options  # Nano Banana Pro answers 400 to any thinking level
        assert [c["value"] for c in options["resolution"]["choices"]] == ["1K", "2K", "4K"]
        assert "21:9" in [c["value"] for c in options["aspect_ratio"]["choices"]]
        assert options["prompt"]["required"] and all(o.get("description") for o in pro["options"])
        assert [o["type"] for n, o in options.items() if n.startswith("reference")] == [11, 11, 11]

        await harness.restart(GEMINI_MODEL="gemini-3.1-flash-image-preview")
        [nb2] = [c for c in harness.discord.synced_commands[None] if c["name"] == "imagine"]
        options = {o["name"]: o for o in nb2["options"]}
        assert [c["value"] for c in options["thinking"]["choices"]] == ["minimal", "high"]
        assert [c["value"] for c in options["resolution"]["choices"]] == ["512", "1K", "2K", "4K"]
        inter = await harness.imagine(harness.alice, "a quick sketch", thinking="high", resolution="512")
        await harness.wait_result(inter)
        config = harness.gemini_requests()[-1].json["generationConfig"]
        assert config["thinkingConfig"] == {"thinkingLevel": "high", "includeThoughts": True}
        assert config["imageConfig"]["imageSize"] == "512"


async def test_status_shows_the_usual_time_from_recent_jobs(h: BotHarness) -> None:
    for n in range(3):
        await h.wait_result(await h.imagine(h.alice, f"warm-up {n}"))
    h.api.latency = 0.5
    inter = await h.imagine(h.alice, "now with an estimate")
    result = await h.wait_result(inter)
    statuses = [e.get("content") or "" for e in result.edits]
    assert any("Generating at 1K" in s and "(usually ~" in s and "at 1K)" in s for s in statuses), statuses


async def test_redo_at_a_larger_size_continues_from_the_image(h: BotHarness) -> None:
    inter = await h.imagine(h.alice, "a paper boat", resolution="1K")
    v1 = await h.wait_result(inter)
    [upscale] = [c for c in custom_ids(v1) if c.startswith("job:upscale:")]
    assert any(b.get("label") == "Redo at 2K" for row in v1.components for b in row["components"])
    click = await h.discord.click(v1.id, upscale, h.bob)
    await h.discord.wait_for_message(lambda m: m.interaction_id == click.id and m.ephemeral)
    bigger = await h.discord.wait_for_message(lambda m: m.channel_id == v1.id and has_image(m))
    assert embed_fields(bigger)["Size"].startswith("2K")
    request = h.gemini_requests()[-1].json
    assert request["generationConfig"]["imageConfig"]["imageSize"] == "2K"
    assert [c["role"] for c in request["contents"]] == ["user", "model", "user"]
    # The bigger one is at the largest size the model makes but one: its own button offers 4K.
    assert any(b.get("label") == "Redo at 4K" for row in bigger.components for b in row["components"])


async def test_long_conversations_drop_the_oldest_turns_and_say_so(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as harness:
        await harness.start(BANANA_CONTEXT_IMAGES="1")
        v1 = await harness.wait_result(await harness.imagine(harness.alice, "a snowman"))
        ask = await harness.discord.user_message(v1.id, harness.alice, "give it a hat", reply_to=v1.id)
        v2 = await harness.wait_reply(ask)
        assert "left out" not in embed_fields(v2).get("Notes", "")  # one image of context: within the budget
        ask = await harness.discord.user_message(v1.id, harness.alice, "and a scarf", reply_to=v2.id)
        v3 = await harness.wait_reply(ask)
        assert "oldest edit was left out" in embed_fields(v3)["Notes"]
        assert harness.sent_texts() == ["give it a hat", "and a scarf"]


async def test_messages_not_for_the_bot_are_ignored_and_empty_replies_get_a_hint(h: BotHarness) -> None:
    v1 = await h.wait_result(await h.imagine(h.alice, "a kite"))
    chat = await h.discord.user_message(v1.id, h.bob, "nice one!")  # neither a reply to the bot nor a mention
    ask = await h.discord.user_message(v1.id, h.bob, "", reply_to=v1.id)
    hint = await h.discord.wait_for_message(lambda m: (m.message_reference or {}).get("message_id") == str(ask))
    assert hint.content.startswith("Tell me what to change")
    assert not any((m.message_reference or {}).get("message_id") == str(chat) for m in h.discord.messages.values())
    assert len(h.gemini_requests()) == 1


async def test_in_a_dm_the_bot_answers_in_place(h: BotHarness) -> None:
    dm = h.discord.open_dm(h.alice)
    inter = await h.discord.slash(None, dm, h.alice, "imagine", {"prompt": "a DM picture"})
    result = await h.wait_result(inter)
    assert result.channel_id == dm and result.files and not h.discord.threads
