"""Answers that say exactly what to do, end to end: replies without the ping, errors in the member's words and
where they go, the provider that served a result, and the wait estimate while a job is in line."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from bot.i18n import t
from bot.jobs.limits import QueueLimits
from bot.jobs.queue import THROUGHPUT_MIN_JOBS, JobQueue
from bot.ui import surfaces
from bot.ui.errors import formats, option_label
from storage.db import Database
from storage.guild_settings import update_guild_settings
from storage.jobs import Job, JobRequest, insert_job, jobs_where
from storage.queue import finish as finish_job
from tests.bot_harness import BotHarness, custom_ids, embed_fields, has_image, png, wait_until
from tests.fake_discord import FakeInteraction, FakeMessage, FakeUser
from tests.fake_image_api import Fault

pytestmark = pytest.mark.timeout(90)
REFUSED = "The image service refused this request."


@pytest.fixture
def h(harness: BotHarness) -> BotHarness:
    return harness


def dms_to(h: BotHarness, user: FakeUser) -> list[FakeMessage]:
    return [
        m
        for m in h.discord.messages.values()
        if m.channel_id in h.discord.channels and h.discord.channels[m.channel_id].recipient is user
    ]


def public_errors(h: BotHarness, text: str) -> list[FakeMessage]:
    """The bot's messages that everyone in a channel or thread can read and that carry `text`."""
    return [
        m
        for m in h.discord.messages.values()
        if m.author_id == h.discord.bot_user_id
        and not m.ephemeral
        and text in m.content
        and (m.channel_id not in h.discord.channels or h.discord.channels[m.channel_id].recipient is None)
    ]


def bot_event_content(h: BotHarness, message_id: int) -> str:
    """The content of a member's message as the bot's gateway session received it."""
    [data] = [d for name, d in h.discord.session_events() if name == "MESSAGE_CREATE" and d["id"] == str(message_id)]
    return str(data["content"])


# --- replies without the ping ----------------------------------------------------------------------------


async def test_a_reply_without_the_ping_is_told_to_ping_the_bot(h: BotHarness) -> None:
    v1 = await h.wait_result(await h.imagine(h.alice, "a red kite"))
    # The hint after each result already says so.
    hint = await h.discord.wait_for_message(lambda m: m.channel_id == v1.id and m.author_id == h.discord.bot_user_id)
    assert hint.content == t("en-US", "result.thread_hint") and "@ON" in hint.content
    # "@OFF" in the reply bar: Discord hides the words (and the image) from a bot without the content intent.
    photo = [("snow.png", png(), "image/png")]
    quiet = await h.discord.user_message(v1.id, h.bob, "make it snowy", reply_to=v1.id, ping=False, attachments=photo)
    answer = await h.discord.wait_for_message(lambda m: (m.message_reference or {}).get("message_id") == str(quiet))
    assert bot_event_content(h, quiet) == ""
    assert answer.content == t("en-US", "reply.no_ping") and "@ON" in answer.content
    assert answer.channel_id == v1.id and h.bob.id not in answer.mention_ids  # answered in place, no ping
    assert len(h.gemini_requests()) == 1  # nothing was made of it
    # The same reply with the ping goes through.
    loud = await h.discord.user_message(v1.id, h.bob, "make it snowy", reply_to=v1.id)
    assert bot_event_content(h, loud) == "make it snowy"
    await h.wait_reply(loud)
    assert h.sent_texts() == ["a red kite", "make it snowy"]
    # A reply that pings but has no words still gets the other hint.
    empty = await h.discord.user_message(v1.id, h.bob, "", reply_to=v1.id)
    hint2 = await h.discord.wait_for_message(lambda m: (m.message_reference or {}).get("message_id") == str(empty))
    assert hint2.content == t("en-US", "reply.empty")


# --- errors in the member's language ----------------------------------------------------------------------


async def test_a_damaged_reference_is_explained_in_the_members_language(h: BotHarness) -> None:
    cut = ("cut.png", png(300, 300)[:200], "image/png")
    inter = await h.imagine(h.alice, "use this", attachments={"reference": cut}, locale="fr")
    error = await h.wait_ephemeral(inter)
    assert error.content.startswith(option_label("fr", "reference") + " :")  # 'référence', as Discord shows it
    assert "abîmée ou tronquée" in error.content and formats("fr") in error.content and "HEIC" in error.content
    assert "Error" not in error.content and "truncated" not in error.content and ".)." not in error.content
    assert h.gemini_requests() == []


async def test_a_model_limit_is_explained_in_the_members_language(h: BotHarness) -> None:
    """The bot's commands offer Nano Banana 2's thinking levels, but the server uses Nano Banana Pro, which takes
    none: refused before anything is spent, saying what to do."""
    await h.restart(GEMINI_MODEL="gemini-3.1-flash-image-preview")
    assert h.bot is not None
    await update_guild_settings(
        h.bot.jobs.db, h.guild.id, updated_by=h.alice.id, default_model="gemini-3-pro-image-preview"
    )
    answers = {"en-US": "Nano Banana Pro sets its own thinking level.", "zh-TW": "Nano Banana Pro 會自行決定思考程度"}
    for locale, expected in answers.items():
        error = await h.wait_ephemeral(await h.imagine(h.alice, "a lamp", thinking="high", locale=locale))
        assert expected in error.content, error.content
        assert "thinking level" not in error.content or locale == "en-US"
    assert h.gemini_requests() == []


# --- where errors go ---------------------------------------------------------------------------------------


async def test_an_error_past_the_interaction_window_goes_by_dm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(surfaces, "INTERACTION_TOKEN_LIFETIME", 1.0)
    monkeypatch.setattr(surfaces, "TOKEN_SAFETY_MARGIN", 0.2)
    async with BotHarness(tmp_path, token_lifetime=1.0) as h:
        await h.start()
        h.api.latency = 1.5
        h.api.script(Fault.bad_request())
        inter = await h.imagine(h.alice, "a slow refusal")
        dm = await h.discord.wait_for_message(lambda m: m in dms_to(h, h.alice))
        assert dm.content.startswith(t("en-US", "error.dm_intro", channel=f"<#{h.guild.channel_id}>"))
        assert REFUSED in dm.content and "Nothing was charged" in dm.content
        original = inter.original()
        await wait_until(lambda: original is not None and original.deleted, "the stale status is removed")
        assert public_errors(h, REFUSED) == []
        assert not any(c.status == 401 for c in h.discord.calls)  # the expired token was never used


async def test_an_error_past_the_window_with_dms_closed_goes_to_the_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(surfaces, "INTERACTION_TOKEN_LIFETIME", 1.0)
    monkeypatch.setattr(surfaces, "TOKEN_SAFETY_MARGIN", 0.2)
    async with BotHarness(tmp_path, token_lifetime=1.0) as h:
        await h.start()
        h.discord.closed_dms.add(h.alice.id)
        h.api.latency = 1.5
        h.api.script(Fault.bad_request())
        await h.imagine(h.alice, "a slow refusal")
        told = await h.discord.wait_for_message(lambda m: m in public_errors(h, REFUSED))
        assert told.channel_id == h.guild.channel_id and told.content.startswith(f"<@{h.alice.id}> {REFUSED}")
        assert h.alice.id in told.mention_ids
        assert dms_to(h, h.alice) == []  # the DM was refused (50007)


async def test_an_error_after_a_restart_goes_by_dm(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start()
        h.api.latency = 2.0
        inter = await h.imagine(h.alice, "interrupted, then refused")
        status = await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and "Generating" in m.content)
        assert h.bot is not None
        db = h.bot.jobs.db

        async def status_recorded() -> bool:
            [job] = await jobs_where(db, "user_id = ?", (h.alice.id,))
            return job.status == "running" and job.status_message_id == status.id

        await wait_until(status_recorded, "the running job records its status message")
        await h.stop()
        h.api.latency = 0.1
        h.api.script(Fault.bad_request())
        await h.restart()
        dm = await h.discord.wait_for_message(lambda m: m in dms_to(h, h.alice))
        assert f"<#{h.guild.channel_id}>" in dm.content and REFUSED in dm.content
        await wait_until(lambda: h.discord.messages[status.id].deleted, "the old status message is removed")
        assert public_errors(h, REFUSED) == []


async def test_an_edit_started_outside_its_thread_reports_its_error_by_dm(h: BotHarness) -> None:
    v1 = await h.wait_result(await h.imagine(h.alice, "a cabin"))
    edit_id = next(c for c in custom_ids(v1) if c.startswith("job:edit:"))
    click = await h.discord.click(v1.id, edit_id, h.alice)
    await click.wait_callback()
    assert click.modal is not None
    field_id = click.modal["components"][0]["components"][0]["custom_id"]
    h.api.script(Fault.bad_request())
    await h.discord.submit_modal(click.modal["custom_id"], {field_id: "add snow"}, h.alice, channel_id=v1.channel_id)
    dm = await h.discord.wait_for_message(lambda m: m in dms_to(h, h.alice))
    assert f"<#{v1.id}>" in dm.content and REFUSED in dm.content  # about the thread it was shown in
    assert public_errors(h, REFUSED) == []


async def test_a_thread_reply_is_answered_in_its_thread(h: BotHarness) -> None:
    v1 = await h.wait_result(await h.imagine(h.alice, "a boat"))
    h.api.script(Fault.bad_request())
    ask = await h.discord.user_message(v1.id, h.alice, "add a sail", reply_to=v1.id)
    answer = await h.discord.wait_for_message(
        lambda m: (m.message_reference or {}).get("message_id") == str(ask) and REFUSED in m.content
    )
    assert answer.channel_id == v1.id and answer.content.startswith(REFUSED)
    assert dms_to(h, h.alice) == []


async def test_a_command_error_is_ephemeral(h: BotHarness) -> None:
    h.api.script(Fault.bad_request())
    inter = await h.imagine(h.alice, "refused at once")
    error = await h.wait_ephemeral(inter)
    assert error.content.startswith(REFUSED)
    assert dms_to(h, h.alice) == [] and public_errors(h, REFUSED) == []


# --- which provider served it ------------------------------------------------------------------------------


async def start_with_relay(h: BotHarness) -> None:
    """Gemini first, the fake's OpenAI-compatible API as the relay to fail over to, with quick retries."""
    await h.start(
        BANANA_PROVIDERS="gemini,openai",
        OPENAI_API_KEY="sk-test-openai-0001",
        OPENAI_BASE_URL=f"{h.api.base_url}/v1",
        BANANA_RETRY_ATTEMPTS="2",
        BANANA_RETRY_BACKOFF="0.01",
    )


async def test_after_a_failover_the_result_names_the_provider_and_model(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await start_with_relay(h)
        plain = await h.wait_result(await h.imagine(h.alice, "served by the first"))
        assert embed_fields(plain)["Model"] == "Nano Banana Pro"
        # Gemini stays overloaded, streamed (:streamGenerateContent) or not (:generateContent).
        h.api.script(Fault.server_error(503), path_contains="enerateContent", times=10)
        relayed = await h.wait_result(await h.imagine(h.alice, "served by the relay"))
        fields = embed_fields(relayed)
        assert fields["Model"] == "gpt-image-2 via the OpenAI-compatible API"
        assert "Made with the OpenAI-compatible API because the Gemini API couldn't make it." in fields["Notes"]
        assert any("/v1/images/generations" in r.path for r in h.api.requests)


# --- the wait estimate ---------------------------------------------------------------------------------------


def in_line(message: FakeMessage) -> list[str]:
    """The status lines a message showed while its job was in line."""
    return [str(e.get("content")) for e in message.edits if "In line" in str(e.get("content") or "")]


async def test_the_queued_status_estimates_the_wait_once_there_is_data(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        members = [h.guild.add_member(f"m{n}") for n in range(5)]
        await h.start(BANANA_MAX_CONCURRENT="1")
        h.api.latency = 0.5
        inters: list[FakeInteraction] = []
        assert h.bot is not None
        queue = h.bot.jobs.queue
        for n, member in enumerate(members):
            inters.append(await h.imagine(member, f"picture {n}"))
            await wait_until(lambda n=n: queue.waiting_count + queue.running_count == n + 1, "queued")  # type: ignore[misc]
        grid = await h.discord.slash(h.guild.id, h.guild.channel_id, h.bob, "grid", {"prompt": "four at the end"})
        # The fifth image waits while the third finishes: from then on, its status has an estimate.
        estimate = re.compile(r"starts in about (\d+) sec")
        fifth = await h.discord.wait_for_message(
            lambda m: m.interaction_id == inters[4].id and bool(estimate.search(m.content))
        )
        seconds = int(estimate.search(fifth.content).group(1))  # type: ignore[union-attr]
        assert 1 <= seconds <= 6, fifth.content  # ~0.5 s a job (more on a busy host), one slot, 1-2 jobs ahead
        grid_status = await h.discord.wait_for_message(
            lambda m: m.interaction_id == grid.id and bool(estimate.search(m.content))
        )
        assert "In line" in grid_status.content
        results = await asyncio.gather(*(h.wait_result(i, timeout=30) for i in inters))
        # The second and third waited before any three jobs had run: never an estimate.
        for early in results[1:3]:
            lines = in_line(h.discord.messages[early.id])
            assert lines and not any("starts in" in line for line in lines), lines
        await h.discord.wait_for_message(lambda m: m.interaction_id == grid.id and has_image(m), timeout=30)


async def test_the_estimate_is_the_place_in_line_times_the_recent_time_per_slot(tmp_path: Path) -> None:
    """The arithmetic, on the real queue (over a real database) with its own clock: two slots, third in line."""
    now = [1000.0]
    gates = {f"j{n}": asyncio.Event() for n in range(8)}
    db = await Database.open(tmp_path / "queue.sqlite3")

    async def run(job: Job) -> None:
        await gates[job.id].wait()
        await finish_job(db, job.id, queue.owner, {"status": "done"})

    limits = QueueLimits(global_concurrency=2, guild_concurrency=2, user_concurrency=1)
    queue = JobQueue(db, limits, owner="this-process", run=run, clock=lambda: now[0])
    for n in range(8):
        request = JobRequest(prompt=f"j{n}")
        await insert_job(
            db, Job(id=f"j{n}", created_at=n, guild_id=1, channel_id=2, user_id=n, kind="imagine", request=request)
        )
    try:
        await queue.start()
        await wait_until(lambda: queue.runs("j0") and queue.runs("j1"), "j0 and j1 started", 5)

        async def finish(n: int, at: float) -> None:
            now[0] = at
            await queue.release(f"j{n}")  # the provider answered: the slot is free
            gates[f"j{n}"].set()
            await wait_until(lambda: queue.runs(f"j{n + 2}"), f"j{n + 2} started", 5)

        await finish(0, 1010.0)  # held its slot 10 s; j2 starts
        await finish(1, 1010.0)  # 10 s; j3 starts
        await queue.refresh()
        assert THROUGHPUT_MIN_JOBS == 3 and queue.wait_estimate("j7") is None  # two jobs are not enough data
        await finish(2, 1016.0)  # 6 s; j4 starts
        await queue.refresh()
        # j3 and j4 hold the two slots; j5, j6, j7 wait. A slot frees every (10 + 10 + 6) / 3 / 2 s.
        assert [queue.position(f"j{n}") for n in (5, 6, 7)] == [1, 2, 3]
        assert queue.wait_estimate("j7") == pytest.approx(3 * (26 / 3) / 2)
        assert queue.wait_estimate("j3") is None  # running, not waiting
        for gate in gates.values():
            gate.set()
        await queue.wait_idle(5)
    finally:
        await queue.aclose()
        await db.close()


async def test_after_a_failover_a_grid_names_the_provider_too(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await start_with_relay(h)
        h.api.script(Fault.server_error(503), path_contains="enerateContent", times=40)
        inter = await h.discord.slash(h.guild.id, h.guild.channel_id, h.alice, "grid", {"prompt": "four kites"})
        preview = await h.wait_result(inter)
        assert embed_fields(preview)["Model"] == "gpt-image-2 via the OpenAI-compatible API"
