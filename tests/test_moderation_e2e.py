"""Server admins' moderation, end to end through the fake Discord with a plain member and a moderator: who
may use the bot, what may be asked, and the moderators' log with its buttons."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.jobs.moderation import fold
from storage.jobs import get_job, queued_job_ids
from storage.moderation import refusals_by_rule
from tests.bot_harness import BotHarness, custom_ids, embed_fields, has_image, wait_until
from tests.fake_discord import MANAGE_GUILD, MANAGE_MESSAGES, MEMBER_PERMISSIONS, FakeInteraction, FakeMessage, FakeUser

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[BotHarness]:
    async with BotHarness(tmp_path) as harness:
        await harness.start()
        harness.mod = harness.guild.add_member("mod", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD | MANAGE_MESSAGES)  # type: ignore[attr-defined]
        yield harness


def mod(h: BotHarness) -> FakeUser:
    return h.mod  # type: ignore[attr-defined, no-any-return]


async def settings(h: BotHarness, sub: str, options: dict[str, object], user: FakeUser | None = None) -> FakeMessage:
    inter = await h.discord.slash(h.guild.id, h.guild.channel_id, user or mod(h), "settings", options, subcommand=sub)
    return await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and bool(m.content or m.embeds))


async def imagine_refused(h: BotHarness, user: FakeUser, prompt: str, channel: int | None = None) -> str:
    """The private answer a refused /imagine gets; fails if an image was made instead."""
    sent = len(h.gemini_requests())
    inter = await h.discord.slash(h.guild.id, channel or h.guild.channel_id, user, "imagine", {"prompt": prompt})
    answer = await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and m.ephemeral)
    assert len(h.gemini_requests()) == sent, "a refused request reached the image API"
    return answer.content


async def refusals(h: BotHarness) -> dict[str, int]:
    assert h.bot is not None
    return await refusals_by_rule(h.bot.services.db, h.guild.id, 0, time.time() + 60)


async def modal_of(inter: FakeInteraction) -> tuple[str, str]:
    """The custom ids of the modal an interaction answered with, and of its text field."""
    await inter.wait_callback()
    assert inter.modal is not None
    return str(inter.modal["custom_id"]), str(inter.modal["components"][0]["components"][0]["custom_id"])


async def log_entry(h: BotHarness, log_channel: int, title: str) -> FakeMessage:
    return await h.discord.wait_for_message(
        lambda m: m.channel_id == log_channel and bool(m.embeds) and m.embeds[0].get("title") == title
    )


async def test_role_gated_access_and_the_highest_role_limit(h: BotHarness) -> None:
    artists = h.guild.add_role("Artists")
    boosters = h.guild.add_role("Boosters")
    answer = await settings(h, "access", {"allow": artists.id})
    assert f"<@&{artists.id}>" in answer.content and answer.ephemeral

    refused = await imagine_refused(h, h.bob, "a cat")
    assert f"<@&{artists.id}>" in refused and "moderators" in refused
    assert await refusals(h) == {"access": 1}

    h.guild.give_role(h.bob, artists)
    await h.wait_result(await h.imagine(h.bob, "a cat"))

    # Boosters: 2 a day, everyone else 1 (the server's member limit).
    await settings(h, "general", {"member_daily": 1})
    await settings(h, "role-limit", {"role": boosters.id, "daily": 2})
    h.guild.give_role(h.alice, artists)
    h.guild.give_role(h.alice, boosters)
    await h.wait_result(await h.imagine(h.alice, "one"))
    await h.wait_result(await h.imagine(h.alice, "two"))
    third = await h.discord.slash(h.guild.id, h.guild.channel_id, h.alice, "imagine", {"prompt": "three"})
    limit = await h.discord.wait_for_message(lambda m: m.interaction_id == third.id and m.ephemeral)
    assert "2 images for today" in limit.content
    bobs_second = await h.discord.slash(h.guild.id, h.guild.channel_id, h.bob, "imagine", {"prompt": "again"})
    limit = await h.discord.wait_for_message(lambda m: m.interaction_id == bobs_second.id and m.ephemeral)
    assert "1 image for today" in limit.content

    # A moderator passes the role gate; "everyone" opens it again.
    await h.wait_result(await h.imagine(mod(h), "mod's picture"))
    await settings(h, "access", {"everyone": True})
    carol = h.guild.add_member("carol")
    await h.wait_result(await h.imagine(carol, "for everyone"))


async def test_a_blocked_member_is_told_why_and_can_be_unblocked(h: BotHarness) -> None:
    answer = await settings(h, "block member", {"member": h.bob.id, "reason": "spamming the channel"})
    assert "spamming the channel" in answer.content
    refused = await imagine_refused(h, h.bob, "a dog")
    assert "spamming the channel" in refused and "blocked" in refused
    # A blocked member's buttons are refused too: Reroll on someone else's image.
    result = await h.wait_result(await h.imagine(h.alice, "a horse"))
    reroll = next(c for c in custom_ids(result) if c.startswith("job:reroll:"))
    sent = len(h.gemini_requests())
    click = await h.discord.click(result.id, reroll, h.bob)
    answer = await h.discord.wait_for_message(lambda m: m.interaction_id == click.id and m.ephemeral)
    assert "spamming the channel" in answer.content and len(h.gemini_requests()) == sent
    assert (await refusals(h))["blocked"] == 2

    answer = await settings(h, "unblock member", {"member": h.bob.id})
    assert "may use the bot here again" in answer.content
    await h.wait_result(await h.imagine(h.bob, "a dog"))


async def test_the_ban_list_matches_whole_words_whatever_their_case_and_accents(h: BotHarness) -> None:
    answer = await settings(h, "banned-words", {"add": "ass, crème brûlée"})
    assert "Banned: “ass”" in answer.content and "Banned: “crème brûlée”" in answer.content

    # The Scunthorpe problem: a banned word inside a longer innocent word passes.
    await h.wait_result(await h.imagine(h.alice, "a classic class photo of a bass player"))
    refused = await imagine_refused(h, h.alice, "what an ASS")
    assert "“ass”" in refused
    refused = await imagine_refused(h, h.alice, "a CREME   BRULEE on a plate")
    assert "crème brûlée" in refused
    assert await refusals(h) == {"banned_word": 2}

    # The refusal, and the word it names, are never where others can see them.
    public = [m for m in h.discord.channel_messages(h.guild.channel_id) if not m.ephemeral]
    assert not any(fold(m.content).count("ass") or "doesn't allow" in m.content for m in public if m.content)

    # Remix text goes through the same list.
    result = await h.wait_result(await h.imagine(h.alice, "a bicycle"))
    remix = next(c for c in custom_ids(result) if c.startswith("job:remix:"))
    click = await h.discord.click(result.id, remix, h.alice)
    modal, field = await modal_of(click)
    sent = len(h.gemini_requests())
    submitted = await h.discord.submit_modal(
        modal, {field: "a bicycle, ass first"}, h.alice, channel_id=h.guild.channel_id
    )
    answer = await h.discord.wait_for_message(lambda m: m.interaction_id == submitted.id and m.ephemeral)
    assert "“ass”" in answer.content and len(h.gemini_requests()) == sent

    # And removing a word allows it again.
    answer = await settings(h, "banned-words", {"remove": "ASS"})
    assert "Allowed again" in answer.content
    await h.wait_result(await h.imagine(h.alice, "what an ass"))


async def test_a_thread_reply_with_a_banned_word_is_refused_by_dm(h: BotHarness) -> None:
    result = await h.wait_result(await h.imagine(h.alice, "a castle"))
    await settings(h, "banned-words", {"add": "dragon"})
    thread = result.thread_id
    assert thread is not None
    sent = len(h.gemini_requests())
    await h.discord.user_message(thread, h.alice, "add a Dragon on the tower", reply_to=result.id)
    dm = h.discord.open_dm(h.alice)
    answer = await h.discord.wait_for_message(lambda m: m.channel_id == dm)
    assert "“dragon”" in answer.content
    assert len(h.gemini_requests()) == sent
    bots = [m for m in h.discord.channel_messages(thread) if m.author_id != h.alice.id]
    assert not any("dragon" in m.content.lower() or "doesn't allow" in m.content for m in bots)


async def test_a_regular_expression_that_backtracks_is_refused_when_set(h: BotHarness) -> None:
    started = time.monotonic()
    answer = await settings(h, "banned-words", {"pattern": "(a+)+$"})
    assert "take too long" in answer.content
    assert time.monotonic() - started < 10
    answer = await settings(h, "banned-words", {"pattern": "(unclosed"})
    assert "isn't a valid regular expression" in answer.content
    answer = await settings(h, "banned-words", {"pattern": r"\bnud(e|ity)\b"})
    assert "saved" in answer.content
    refused = await imagine_refused(h, h.alice, "a NUDE statue")
    assert "pattern" in refused
    await h.wait_result(await h.imagine(h.alice, "a nudibranch in the sea"))
    assert await refusals(h) == {"banned_pattern": 1}


async def test_nsfw_only_answers_in_age_restricted_channels_and_their_threads(h: BotHarness) -> None:
    adult = h.guild.add_channel("adult", nsfw=True)
    answer = await settings(h, "nsfw-only", {"enabled": True})
    assert "only in age-restricted channels" in answer.content
    refused = await imagine_refused(h, h.alice, "a sunset")
    assert "age-restricted" in refused
    inter = await h.discord.slash(h.guild.id, adult, h.alice, "imagine", {"prompt": "a sunset"})
    result = await h.wait_result(inter)
    assert result.thread_id is not None
    await h.discord.user_message(result.thread_id, h.alice, "make it night", reply_to=result.id)
    await h.discord.wait_for_message(lambda m: m.channel_id == result.thread_id and has_image(m))


async def test_the_log_mirrors_results_and_its_buttons_delete_and_block(h: BotHarness) -> None:
    log_channel = h.guild.add_channel("mod-log")
    await settings(h, "log-channel", {"channel": log_channel})
    result = await h.wait_result(await h.imagine(h.alice, "a red fox"))

    entry = await log_entry(h, log_channel, "New image")
    fields = embed_fields(entry)
    assert fields["Member"] == f"<@{h.alice.id}>" and fields["Prompt"] == "a red fox"
    assert str(result.id) in fields["Where"] and "$" in fields["Model, size and cost"]
    assert entry.files and entry.files[0].filename == "thumbnail.jpg"
    delete = next(c for c in custom_ids(entry) if c.startswith("modlog:delete:"))
    block = next(c for c in custom_ids(entry) if c.startswith("modlog:block:"))

    # A plain member can't use the log's buttons.
    click = await h.discord.click(entry.id, delete, h.bob)
    answer = await h.discord.wait_for_message(lambda m: m.interaction_id == click.id and m.ephemeral)
    assert not h.discord.messages[result.id].deleted

    click = await h.discord.click(entry.id, delete, mod(h))
    await h.discord.wait_for_message(lambda m: m.interaction_id == click.id and m.ephemeral and bool(m.content))
    assert h.discord.messages[result.id].deleted
    deleted = await log_entry(h, log_channel, "Image deleted")
    assert embed_fields(deleted)["Deleted by"] == f"<@{mod(h).id}>"

    click = await h.discord.click(entry.id, block, mod(h))
    modal, field = await modal_of(click)
    submitted = await h.discord.submit_modal(modal, {field: "off-topic images"}, mod(h), channel_id=log_channel)
    answer = await h.discord.wait_for_message(lambda m: m.interaction_id == submitted.id and m.ephemeral)
    assert "off-topic images" in answer.content
    refused = await imagine_refused(h, h.alice, "another fox")
    assert "off-topic images" in refused
    refusal = await log_entry(h, log_channel, "Request refused")
    assert embed_fields(refusal)["Rule"] == "Blocked member"


async def test_report_reaches_the_log_with_the_reporters_name(h: BotHarness) -> None:
    result = await h.wait_result(await h.imagine(h.alice, "a lighthouse"))
    report = next(c for c in custom_ids(result) if c.startswith("job:report:"))
    click = await h.discord.click(result.id, report, h.bob)
    answer = await h.discord.wait_for_message(
        lambda m: m.interaction_id == click.id and m.ephemeral and bool(m.content)
    )
    assert "no moderators' log" in answer.content

    log_channel = h.guild.add_channel("mod-log")
    await settings(h, "log-channel", {"channel": log_channel})
    click = await h.discord.click(result.id, report, h.bob)
    answer = await h.discord.wait_for_message(
        lambda m: m.interaction_id == click.id and m.ephemeral and bool(m.content)
    )
    assert "sent to this server's moderators" in answer.content
    entry = await log_entry(h, log_channel, "Image reported")
    fields = embed_fields(entry)
    assert fields["Reported by"] == f"<@{h.bob.id}>" and fields["Member"] == f"<@{h.alice.id}>"
    assert any(c.startswith("modlog:delete:") for c in custom_ids(entry))


async def test_a_log_channel_that_disappears_leaves_generation_alone_and_warns_the_admin(h: BotHarness) -> None:
    log_channel = h.guild.add_channel("mod-log")
    await settings(h, "log-channel", {"channel": log_channel})
    h.discord.delete_channel(log_channel)
    result = await h.wait_result(await h.imagine(h.alice, "a meadow"))
    assert has_image(result)
    assert h.bot is not None
    await h.bot.services.modlog.wait_posted()
    shown = await settings(h, "general", {})
    assert "The log channel is gone" in embed_fields(shown)["Moderation"]

    # Access lost instead: the same, with the other reason; a new channel clears the warning.
    other = h.guild.add_channel("mod-log-2")
    await settings(h, "log-channel", {"channel": other})
    h.discord.revoke_access(other)
    await h.wait_result(await h.imagine(h.alice, "a second meadow"))
    await h.bot.services.modlog.wait_posted()
    shown = await settings(h, "general", {})
    assert "can't post in the log channel" in embed_fields(shown)["Moderation"]


async def test_usage_counts_refusals_by_rule(h: BotHarness) -> None:
    await settings(h, "banned-words", {"add": "forbidden"})
    await imagine_refused(h, h.alice, "a forbidden fruit")
    await imagine_refused(h, h.alice, "another forbidden thing")
    inter = await h.discord.slash(h.guild.id, h.guild.channel_id, mod(h), "usage", {}, subcommand="server")
    answer = await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and bool(m.embeds))
    assert embed_fields(answer)["Refused before anything was spent"] == "Banned word: 2"


async def test_settings_refuse_plain_members(h: BotHarness) -> None:
    answer = await settings(h, "block member", {"member": h.alice.id, "reason": "x"}, user=h.bob)
    assert "Manage Server" in answer.content
    await h.wait_result(await h.imagine(h.alice, "still allowed"))


async def test_a_characters_sheet_answers_to_todays_ban_list(h: BotHarness) -> None:
    create = await h.discord.slash(
        h.guild.id,
        h.guild.channel_id,
        h.alice,
        "character",
        {"name": "Mira", "description": "a red braid"},
        subcommand="create",
    )
    await h.discord.wait_for_message(lambda m: m.interaction_id == create.id and bool(m.content))
    await settings(h, "banned-words", {"add": "braid"})
    sent = len(h.gemini_requests())
    inter = await h.discord.slash(
        h.guild.id, h.guild.channel_id, h.alice, "imagine", {"prompt": "Mira at sea", "character": "Mira"}
    )
    answer = await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and m.ephemeral)
    assert "“braid”" in answer.content and len(h.gemini_requests()) == sent


async def test_a_redo_is_not_refused_for_the_bots_own_words(h: BotHarness) -> None:
    result = await h.wait_result(await h.imagine(h.alice, "a lake"))
    await settings(h, "banned-words", {"add": "image, render"})  # words of the bot's own re-render prompt
    upscale = next(c for c in custom_ids(result) if c.startswith("job:upscale:"))
    click = await h.discord.click(result.id, upscale, h.alice)
    await h.discord.wait_for_message(lambda m: m.channel_id == result.id and has_image(m))
    assert await refusals(h) == {}
    assert click.id


async def test_a_blocked_member_cannot_change_characters(h: BotHarness) -> None:
    result = await h.wait_result(await h.imagine(h.alice, "a fox"))
    await settings(h, "block member", {"member": h.bob.id, "reason": "spam"})
    add = next(c for c in custom_ids(result) if c.startswith("job:addchar:"))
    click = await h.discord.click(result.id, add, h.bob)
    answer = await h.discord.wait_for_message(lambda m: m.interaction_id == click.id and m.ephemeral)
    assert "spam" in answer.content and not answer.components


async def test_the_logs_delete_removes_the_message_its_entry_shows(h: BotHarness) -> None:
    log_channel = h.guild.add_channel("mod-log")
    await settings(h, "log-channel", {"channel": log_channel})
    inter = await h.discord.slash(h.guild.id, h.guild.channel_id, h.alice, "grid", {"prompt": "four pears"})
    preview = await h.wait_result(inter)
    u2 = next(c for c in custom_ids(preview) if c.endswith(":2") and c.startswith("grid:u:"))
    await h.discord.click(preview.id, u2, h.alice)
    posted = await h.discord.wait_for_message(lambda m: m.channel_id == preview.id and has_image(m) and bool(m.embeds))
    entries = [
        m for m in h.discord.channel_messages(log_channel) if m.embeds and m.embeds[0].get("title") == "New image"
    ]
    await h.discord.wait_for_message(
        lambda m: (
            m.channel_id == log_channel and str(posted.id) in embed_fields(m).get("Where", "") if m.embeds else False
        )
    )
    entry = next(
        m
        for m in h.discord.channel_messages(log_channel)
        if m.embeds and str(posted.id) in embed_fields(m).get("Where", "")
    )
    delete = next(c for c in custom_ids(entry) if c.startswith("modlog:delete:"))
    click = await h.discord.click(entry.id, delete, mod(h))
    await h.discord.wait_for_message(lambda m: m.interaction_id == click.id and m.ephemeral and bool(m.content))
    assert h.discord.messages[posted.id].deleted and not h.discord.messages[preview.id].deleted
    assert entries  # the grid's own entry was logged as well


async def test_a_report_that_cannot_reach_the_log_says_so(h: BotHarness) -> None:
    log_channel = h.guild.add_channel("mod-log")
    await settings(h, "log-channel", {"channel": log_channel})
    result = await h.wait_result(await h.imagine(h.alice, "a lighthouse"))
    h.discord.delete_channel(log_channel)
    report = next(c for c in custom_ids(result) if c.startswith("job:report:"))
    click = await h.discord.click(result.id, report, h.bob)
    answer = await h.discord.wait_for_message(
        lambda m: m.interaction_id == click.id and m.ephemeral and bool(m.content)
    )
    assert "couldn't be posted" in answer.content


async def test_a_change_of_settings_is_logged_in_words(h: BotHarness) -> None:
    log_channel = h.guild.add_channel("mod-log")
    await settings(h, "log-channel", {"channel": log_channel})
    await settings(h, "general", {"member_daily": 3, "previews": False})
    entry = await h.discord.wait_for_message(
        lambda m: m.channel_id == log_channel and bool(m.embeds) and "Images per member a day" in str(m.embeds[0])
    )
    assert "Images per member a day: 3" in embed_fields(entry)["Change"]
    assert "off" in embed_fields(entry)["Change"]


async def test_an_age_restricted_image_is_a_spoiler_in_an_ordinary_log(h: BotHarness) -> None:
    log_channel = h.guild.add_channel("mod-log")
    adult = h.guild.add_channel("adult", nsfw=True)
    await settings(h, "log-channel", {"channel": log_channel})
    await h.wait_result(await h.discord.slash(h.guild.id, adult, h.alice, "imagine", {"prompt": "a statue"}))
    entry = await log_entry(h, log_channel, "New image")
    assert [f.filename for f in entry.files] == ["SPOILER_thumbnail.jpg"]
    assert "thumbnail" not in entry.embeds[0]
    await h.wait_result(await h.imagine(h.alice, "a plain statue"))
    plain = await h.discord.wait_for_message(
        lambda m: m.channel_id == log_channel and bool(m.embeds) and "a plain statue" in str(m.embeds[0])
    )
    assert [f.filename for f in plain.files] == ["thumbnail.jpg"]


async def test_a_log_that_moves_says_where_it_went(h: BotHarness) -> None:
    first = h.guild.add_channel("mod-log")
    second = h.guild.add_channel("mod-log-2")
    await settings(h, "log-channel", {"channel": first})
    await settings(h, "log-channel", {"channel": second})
    moved = await h.discord.wait_for_message(
        lambda m: m.channel_id == first and bool(m.embeds) and f"<#{second}>" in str(m.embeds[0])
    )
    assert embed_fields(moved)["Change"] == f"Moderators' log: <#{second}>"
    await settings(h, "log-channel", {"off": True})
    await h.discord.wait_for_message(
        lambda m: m.channel_id == second and bool(m.embeds) and "No moderators' log" in str(m.embeds[0])
    )


async def test_blocking_cancels_what_the_member_has_waiting(h: BotHarness) -> None:
    h.api.latency = 4.0  # the first job generates while the test looks for it running and blocks the member
    first = await h.imagine(h.alice, "first")
    assert h.bot is not None
    queue = h.bot.jobs.queue
    # Each interaction is handled in a task of its own: without waiting, "second" could be admitted first.
    await wait_until(lambda: queue.running_here == 1, "the first job runs")
    second = await h.imagine(h.alice, "second")  # one at a time per member: this one waits
    db = h.bot.services.db

    async def first_runs_and_second_waits() -> bool:
        waiting = [await get_job(db, job_id) for job_id in await queued_job_ids(db, h.guild.id, h.alice.id)]
        # Claiming is asynchronous: until the first job is taken, both wait (and blocking would cancel both).
        return [job.request.prompt for job in waiting if job is not None] == ["second"]

    await wait_until(first_runs_and_second_waits, "the first job runs and the second waits in line")
    await settings(h, "block member", {"member": h.alice.id, "reason": "spam"})
    assert await queued_job_ids(db, h.guild.id, h.alice.id) == []
    await h.wait_result(first)  # what was already generating still finishes
    assert h.sent_texts() == ["first"] and len(h.gemini_requests()) == 1
    assert second.id


async def test_repeated_refusals_are_counted_but_logged_once(h: BotHarness) -> None:
    log_channel = h.guild.add_channel("mod-log")
    await settings(h, "log-channel", {"channel": log_channel})
    await settings(h, "block member", {"member": h.bob.id, "reason": "spam"})
    for n in range(3):
        await imagine_refused(h, h.bob, f"try {n}")
    assert await refusals(h) == {"blocked": 3}
    assert h.bot is not None
    await h.bot.services.modlog.wait_posted()
    refused = [
        m for m in h.discord.channel_messages(log_channel) if m.embeds and m.embeds[0].get("title") == "Request refused"
    ]
    assert len(refused) == 1
