"""The relax batcher and the Batch API client against the fake Gemini API, on SQLite and PostgreSQL: one
batcher at a time, batches cut off while being sent, refusals, polling's back-off, and file input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

import bot.core.batches as batches_module
import bot.jobs.relax as relax_module
from bot.config import load_settings
from bot.core.batches import BatchClient, BatchLine, BatchState, key_id
from bot.core.errors import BatchEndedError
from bot.core.types import ImageRequest
from bot.jobs.conversation import request_context
from bot.jobs.limits import QueueLimits, RelaxSettings
from bot.jobs.presenting import JobOutcome
from bot.jobs.relax import LEASE_NAME, poll_interval
from bot.jobs.runner import JobRunner
from bot.runtime import Runtime
from storage.batches import (
    Batch,
    finish_batched,
    get_batch,
    open_batches,
    take_into_batch,
    take_lease,
    waiting_relax_jobs,
)
from storage.jobs import Job, JobRequest, count_reserved_since, get_job
from tests.bot_harness import wait_until
from tests.fake_image_api import FakeImageAPI, Fault
from tests.postgres import PostgresServer
from tests.test_jobs import Events

pytestmark = pytest.mark.timeout(30)


async def delivered(runner: JobRunner) -> bool:
    """One batcher round (the test plays them), then whether every relax job is sent and every batch delivered."""
    await runner.relax.round()
    return not await open_batches(runner.db) and not await waiting_relax_jobs(runner.db, runner.clock() + 3600)


async def log_first_answer(runtime: Runtime, runner: JobRunner, job: Job) -> tuple[Batch, BatchLine]:
    """What a delivering process does first for `job` of the one open batch: read its answer, store and log it."""
    [batch] = await open_batches(runtime.db)
    client = runner.relax.client()
    assert client is not None and batch.name is not None
    info = await client.get(batch.name, batch.key_id)
    spec = runtime.service.spec_for(client.provider, ImageRequest(prompt=""))
    prepared = await runner.conversation.prepare(job)
    [line] = await client.lines(info, batch.key_id, {job.id: (prepared.request, spec)})
    assert line.result is not None
    await runtime.service.record_batched(
        prepared.request, request_context(job), spec, batch_id=batch.id, total_ms=1.0, result=line.result
    )
    return batch, line


def sending(runner: JobRunner, batch_id: str, count: int, age: float) -> Batch:
    """A batch recorded as being sent `age` seconds ago (its create call cut off, or never made)."""
    client = runner.relax.client()
    assert client is not None
    return Batch(
        id=batch_id,
        origin="discord",
        provider=client.name,
        model="gemini-3-pro-image-preview",
        key_id=client.next_key(),
        state="sending",
        request_count=count,
        created_at=runner.clock() - age,
    )


def relax_job(prompt: str, *, user: int = 1, guild: int = 10) -> Job:
    return Job(
        guild_id=guild,
        channel_id=100,
        user_id=user,
        kind="imagine",
        request=JobRequest(prompt=prompt, size="1K", aspect_ratio="1:1"),
        speed="relax",
    )


@pytest_asyncio.fixture
async def opened(
    fake_api: FakeImageAPI, tmp_path: Path, database_target: str
) -> AsyncIterator[tuple[Runtime, JobRunner, Events]]:
    env = {
        "GEMINI_API_KEY": "test-key",
        "GEMINI_BASE_URL": fake_api.base_url,
        "BANANA_DATA_DIR": str(tmp_path / "data"),
        "BANANA_HTTP_VERSION": "2-prior",
        "BANANA_RETRY_ATTEMPTS": "1",
    }
    if database_target.startswith("postgresql"):
        env["BANANA_DATABASE_URL"] = database_target
    runtime = await Runtime.open(load_settings(env, env_file=None))
    events = Events()
    runner = JobRunner(
        db=runtime.db,
        images=runtime.images,
        generation=runtime.service,
        limits=QueueLimits(),
        relax=RelaxSettings(batch_size=2, max_wait=60, poll_min=0.05, poll_max=0.2, lease=2.0),
    )

    async def presenter_for(job: Job) -> Events:
        return events

    await runner.start(presenter_for)
    yield runtime, runner, events
    await runner.aclose()
    await runtime.aclose()


async def test_polling_backs_off_from_frequent_to_every_few_minutes() -> None:
    settings = RelaxSettings(poll_min=10, poll_max=300)
    assert [poll_interval(age, settings) for age in (0, 60, 600, 3000, 86400)] == [10, 10, 60, 300, 300]


async def test_one_batcher_at_a_time_and_another_takes_over_when_its_lease_lapses(
    opened: tuple[Runtime, JobRunner, Events],
) -> None:
    runtime, runner, _ = opened
    db = runtime.db
    await wait_until(lambda: runner.relax.holds_lease, "the runner's batcher holds the lease")
    assert not await take_lease(db, LEASE_NAME, "other-process", runner.clock(), 2.0)
    await runner.relax.aclose()  # a batcher that stops lets go at once
    # One that dies holds on until its lease runs out; then another takes over.
    now = runner.clock()
    assert await take_lease(db, LEASE_NAME, "dead-process", now, 0.3)
    assert not await take_lease(db, LEASE_NAME, "other-process", now, 2.0)
    assert await take_lease(db, LEASE_NAME, "other-process", now + 0.31, 2.0)
    assert await take_lease(db, LEASE_NAME, "other-process", now + 1.0, 2.0)  # renewing its own


async def test_jobs_of_a_batch_cut_off_while_being_sent_are_found_at_the_provider_not_sent_again(
    opened: tuple[Runtime, JobRunner, Events], fake_api: FakeImageAPI
) -> None:
    runtime, runner, events = opened
    await runner.relax.aclose()  # this test plays the batcher's rounds itself
    db = runtime.db
    jobs = [relax_job("a moth"), relax_job("a lamp", user=2)]
    for job in jobs:
        await runner.submit(job, events)
    # A process records the batch as being sent, sends it, and dies before it records the provider's answer.
    client = runner.relax.client()
    assert client is not None
    batch = sending(runner, "banana-relax-cutoff", 2, age=120)  # long enough ago that its create call is over
    assert await take_into_batch(db, batch, [j.id for j in jobs], runner.clock()) == [j.id for j in jobs]
    spec = runtime.service.spec_for(client.provider, ImageRequest(prompt=""))
    items = [(j.id, ImageRequest(prompt=j.request.prompt, aspect_ratio="1:1")) for j in jobs]
    await client.create(items, spec, display_name=batch.id, key=batch.key_id)
    assert len(fake_api.batches) == 1

    await runner.relax.round()  # finds it by its display name
    found = await get_batch(db, batch.id)
    assert found is not None and found.name is not None and found.state != "sending"
    await wait_until(lambda: delivered(runner), "the batch delivered", timeout=10)
    assert all(j.id in events.outcomes for j in jobs)
    assert len(fake_api.batches) == 1  # never sent again


async def test_a_batch_never_created_puts_its_jobs_back_in_line(opened: tuple[Runtime, JobRunner, Events]) -> None:
    runtime, runner, events = opened
    await runner.relax.aclose()
    db = runtime.db
    job = relax_job("a lost letter")
    await runner.submit(job, events)
    client = runner.relax.client()
    assert client is not None
    batch = sending(runner, "banana-relax-never", 1, age=3600)
    await take_into_batch(db, batch, [job.id], runner.clock())
    await runner.relax.round()
    back = await get_job(db, job.id)
    assert back is not None and back.status == "queued" and back.batch_id is None
    assert await get_batch(db, batch.id) is None


async def test_a_refused_batch_fails_its_jobs_and_a_busy_provider_keeps_them_waiting(
    opened: tuple[Runtime, JobRunner, Events], fake_api: FakeImageAPI
) -> None:
    runtime, runner, events = opened
    db = runtime.db
    fake_api.script(Fault.rate_limit(retry_delay="0s"), path_contains=":batchGenerateContent")
    busy = [relax_job("a storm"), relax_job("a calm", user=2)]
    for job in busy:
        await runner.submit(job, events)
    await wait_until(lambda: any(r.status == 429 for r in fake_api.requests), "the 429")
    # Not accepted: the jobs wait for the next round, which sends them.
    await wait_until(lambda: all(j.id in events.outcomes for j in busy), "delivered after the 429", timeout=10)
    assert len(fake_api.batches) == 1

    fake_api.script(Fault.bad_request("Batch too large."), path_contains=":batchGenerateContent")
    refused = [relax_job("a mountain", user=3), relax_job("a hill", user=4)]
    for job in refused:
        await runner.submit(job, events)
    await wait_until(lambda: all(j.id in events.errors for j in refused), "both refused")
    for job in refused:
        ended = await get_job(db, job.id)
        assert ended is not None and ended.status == "failed"
        assert await count_reserved_since(db, 0, user_id=job.user_id) == 0


async def test_requests_over_the_inline_limit_go_as_an_uploaded_file(
    opened: tuple[Runtime, JobRunner, Events], fake_api: FakeImageAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, runner, events = opened
    monkeypatch.setattr(batches_module, "INLINE_LIMIT_BYTES", 70 * 1024)  # the envelope's room plus a little
    jobs = [relax_job("a long scroll " * 400), relax_job("another long scroll " * 400, user=2)]
    for job in jobs:
        await runner.submit(job, events)
    await wait_until(lambda: all(j.id in events.outcomes for j in jobs), "both delivered", timeout=10)
    [batch] = fake_api.batches.values()
    assert batch.input_kind == "file"
    assert all(events.outcomes[j.id].result.image.data for j in jobs)


async def test_the_client_reads_states_and_cancels(fake_api: FakeImageAPI, tmp_path: Path) -> None:
    settings = load_settings(
        {"GEMINI_API_KEY": "k-one,k-two", "GEMINI_BASE_URL": fake_api.base_url, "BANANA_DATA_DIR": str(tmp_path)},
        env_file=None,
    )
    runtime = await Runtime.open(settings)
    try:
        provider = runtime.service.batch_provider()
        assert provider is not None
        client = BatchClient(provider)
        spec = runtime.service.spec_for(provider, ImageRequest(prompt=""))
        fake_api.batch_seconds = 30
        key = client.next_key()
        info, kind, _ = await client.create([("a", ImageRequest(prompt="a fern"))], spec, display_name="d1", key=key)
        assert info.state is BatchState.PENDING and kind == "inline"
        # Only the key that created it can see it: the batch is read with that key again (by its fingerprint).
        [recorded] = fake_api.batches.values()
        assert recorded.api_key is not None and key_id(recorded.api_key) == key
        await client.cancel(info.name, key)
        assert (await client.get(info.name, key)).state is BatchState.CANCELLED
        assert (await client.find("d1", key)) is not None
        assert (await client.find("nothing-by-this-name", key)) is None
    finally:
        await runtime.aclose()


async def test_a_delivery_cut_off_is_taken_up_again_without_charging_twice(
    opened: tuple[Runtime, JobRunner, Events], fake_api: FakeImageAPI
) -> None:
    runtime, runner, events = opened
    db = runtime.db
    await runner.relax.aclose()
    jobs = [relax_job("a kettle"), relax_job("a teacup", user=2)]
    for job in jobs:
        await runner.submit(job, events)
    await runner.relax.round()  # sends the batch (two are waiting)
    # The process delivering it stored and logged the first answer, then died before finishing that job.
    first = jobs[0]
    _, line = await log_first_answer(runtime, runner, first)
    assert line.result is not None
    await wait_until(lambda: delivered(runner), "the batch delivered", timeout=10)
    assert all(j.id in events.outcomes for j in jobs)
    rows = await db.fetchall("SELECT job_id, count(*) FROM generations GROUP BY job_id ORDER BY job_id")
    assert sorted((str(r[0]), int(r[1])) for r in rows) == sorted((j.id, 1) for j in jobs)
    finished = await get_job(db, first.id)
    assert finished is not None and finished.status == "done" and finished.image_key == line.result.image_key


async def test_a_server_error_on_create_is_looked_for_before_anything_is_sent_again(
    opened: tuple[Runtime, JobRunner, Events], fake_api: FakeImageAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 5xx may come after the batch was made: sending again at once could make (and bill) it twice."""
    runtime, runner, events = opened
    await runner.relax.aclose()
    monkeypatch.setattr(relax_module, "UNANSWERED_GRACE", 0.5)
    fake_api.script(Fault.server_error(503), path_contains=":batchGenerateContent")
    jobs = [relax_job("a tide"), relax_job("a wave", user=2)]
    for job in jobs:
        await runner.submit(job, events)
    await runner.relax.round()  # sends: 503
    [batch] = await open_batches(runtime.db)
    assert batch.state == "sending" and batch.error == "unanswered"
    await runner.relax.round()  # looks for it, doesn't find it, and doesn't send again before the grace
    assert len([r for r in fake_api.requests if r.path.endswith(":batchGenerateContent")]) == 1
    assert any(r.path.endswith("/batches") for r in fake_api.requests)  # it looked
    # Once the grace is over, a batch not found was never made: the jobs go in a new one.
    await wait_until(lambda: delivered(runner), "sent again after the grace, and delivered", timeout=10)
    assert all(j.id in events.outcomes for j in jobs)
    assert len(fake_api.batches) == 1


class SlowPosting(Events):
    """A presenter whose posting takes a while (a 4K upload), and can be held until a test lets it go."""

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds = seconds
        self.gate = asyncio.Event()
        self.gate.set()
        self.posting = asyncio.Event()

    async def finished(self, job: Job, outcome: JobOutcome) -> None:
        self.posting.set()
        await self.gate.wait()
        await asyncio.sleep(self.seconds)
        await super().finished(job, outcome)


def hold_posting(runner: JobRunner) -> SlowPosting:
    """Results the batcher posts wait, until the test opens the gate."""
    held = SlowPosting()
    held.gate.clear()

    async def presenter_for(job: Job) -> Events:
        return held

    runner.relax.presenter_for = presenter_for
    return held


async def open_runner(
    fake_api: FakeImageAPI, data_dir: Path, url: str | None, presenter: Events, lease: float = 2.0
) -> tuple[Runtime, JobRunner]:
    env = {
        "GEMINI_API_KEY": "test-key",
        "GEMINI_BASE_URL": fake_api.base_url,
        "BANANA_DATA_DIR": str(data_dir),
        "BANANA_RETRY_ATTEMPTS": "1",
    }
    if url is not None:
        env["BANANA_DATABASE_URL"] = url
    runtime = await Runtime.open(load_settings(env, env_file=None))
    runner = JobRunner(
        db=runtime.db,
        images=runtime.images,
        generation=runtime.service,
        limits=QueueLimits(),
        relax=RelaxSettings(batch_size=4, max_wait=60, poll_min=0.05, poll_max=0.2, lease=lease),
    )

    async def presenter_for(job: Job) -> Events:
        return presenter

    await runner.start(presenter_for)
    return runtime, runner


async def test_two_batchers_never_charge_or_post_an_image_twice(
    fake_api: FakeImageAPI, tmp_path: Path, postgres: PostgresServer
) -> None:
    """Posting takes longer than the lease: the lease is renewed through the round, and if another process takes
    it anyway, each job is still logged and posted once."""
    url = postgres.fresh_url()
    slow = SlowPosting(seconds=0.6)
    opened = [await open_runner(fake_api, tmp_path / f"data{n}", url, slow, lease=1.0) for n in range(2)]
    try:
        jobs = [relax_job(f"a slow post {n}", user=n) for n in range(4)]
        for n, job in enumerate(jobs):
            await opened[n % 2][1].submit(job, Events())
        await wait_until(lambda: all(j.id in slow.outcomes for j in jobs), "all four posted", timeout=20)
        db = opened[0][0].db
        rows = await db.fetchall("SELECT job_id, count(*) FROM generations GROUP BY job_id")
        assert sorted(int(count) for _, count in rows) == [1, 1, 1, 1]
        assert sorted(j for kind, j in slow.seen if kind == "finished") == sorted(j.id for j in jobs)
        assert len(fake_api.batches) == 1
    finally:
        for runtime, runner in opened:
            await runner.aclose()
            await runtime.aclose()


async def test_a_delivery_cancelled_while_the_batch_is_being_posted_is_not_posted(
    opened: tuple[Runtime, JobRunner, Events], fake_api: FakeImageAPI
) -> None:
    runtime, runner, _ = opened
    held = hold_posting(runner)
    first, second = relax_job("posted first"), relax_job("cancelled meanwhile", user=2)
    await runner.submit(first, held)
    await runner.submit(second, held)
    await asyncio.wait_for(held.posting.wait(), 10)  # the batch is done; the first result is being posted
    assert await runner.cancel_delivery(second.id)
    held.gate.set()
    await wait_until(lambda: first.id in held.outcomes, "the first posted")
    await wait_until(lambda: _no_open(runtime), "the batch delivered")
    assert second.id not in held.outcomes
    done = await get_job(runtime.db, second.id)
    assert done is not None and done.status == "done" and done.delivery_cancelled  # made and paid for


async def _no_open(runtime: Runtime) -> bool:
    return not await open_batches(runtime.db)


async def test_a_batch_the_provider_no_longer_has_fails_and_refunds_its_jobs(
    opened: tuple[Runtime, JobRunner, Events], fake_api: FakeImageAPI
) -> None:
    runtime, runner, events = opened
    fake_api.batch_seconds = 30
    jobs = [relax_job("a deleted batch"), relax_job("its sibling", user=2)]
    for job in jobs:
        await runner.submit(job, events)
    await wait_until(lambda: len(fake_api.batches) == 1, "the batch sent")
    [made] = fake_api.batches.values()
    async with httpx.AsyncClient() as client:  # deleted at the provider (by hand, or by another tool)
        deleted = await client.delete(f"{fake_api.base_url}/v1beta/{made.name}", headers={"x-goog-api-key": "test-key"})
    assert deleted.status_code == 200
    await wait_until(lambda: all(j.id in events.errors for j in jobs), "both failed and told", timeout=10)
    for job in jobs:
        failed = await get_job(runtime.db, job.id)
        assert failed is not None and failed.status == "failed" and failed.reserved_usd == 0
    await wait_until(lambda: _no_open(runtime), "the batch given up")
    gets = [r for r in fake_api.requests if r.method == "GET" and made.id in r.path]
    assert len(gets) <= 3  # given up at once, not looked at in a loop


async def test_inline_answers_without_their_keys_are_matched_by_position(
    opened: tuple[Runtime, JobRunner, Events], fake_api: FakeImageAPI
) -> None:
    _, runner, events = opened
    fake_api.batch_api.echo_metadata = False  # some reports say the API doesn't send the metadata back
    jobs = [relax_job("first in line"), relax_job("second in line", user=2)]
    for job in jobs:
        await runner.submit(job, events)
    await wait_until(lambda: all(j.id in events.outcomes for j in jobs), "both delivered", timeout=10)
    [batch] = fake_api.batches.values()
    entries = batch.output["inlinedResponses"]["inlinedResponses"]  # type: ignore[index]
    assert all("metadata" not in e for e in entries)
    # Each got its own answer: the fake's answer text names the prompt it drew.
    for job in jobs:
        assert events.outcomes[job.id].result.image.data


async def test_a_batch_that_expired_half_done_delivers_what_it_answered(
    opened: tuple[Runtime, JobRunner, Events], fake_api: FakeImageAPI
) -> None:
    runtime, runner, events = opened
    fake_api.script_batch("EXPIRED", done=1)
    answered, lost = relax_job("answered in time"), relax_job("too late", user=2)
    await runner.submit(answered, events)
    await runner.submit(lost, events)
    await wait_until(lambda: answered.id in events.outcomes and lost.id in events.errors, "both ended", timeout=10)
    error = events.errors[lost.id]
    assert isinstance(error, BatchEndedError) and error.state == "expired"
    assert await count_reserved_since(runtime.db, 0, user_id=lost.user_id) == 0
    assert await count_reserved_since(runtime.db, 0, user_id=answered.user_id) == 1


async def test_a_job_finished_but_not_posted_before_a_restart_is_posted_when_its_batch_is_taken_up_again(
    opened: tuple[Runtime, JobRunner, Events], fake_api: FakeImageAPI
) -> None:
    runtime, runner, events = opened
    await runner.relax.aclose()
    jobs = [relax_job("finished quietly"), relax_job("finished loudly", user=2)]
    for job in jobs:
        await runner.submit(job, events)
    await runner.relax.round()  # sent
    # The delivering process logged and finished the first job, then died before posting it.
    batch, _ = await log_first_answer(runtime, runner, jobs[0])
    assert await finish_batched(runtime.db, jobs[0].id, batch.id, {"status": "done", "finished_at": 1.0})
    await wait_until(lambda: delivered(runner), "the batch delivered", timeout=10)
    assert all(j.id in events.outcomes for j in jobs)  # the first one too


async def test_the_batcher_keeps_its_lease_while_a_long_delivery_runs(
    opened: tuple[Runtime, JobRunner, Events], fake_api: FakeImageAPI
) -> None:
    runtime, runner, _ = opened
    held = hold_posting(runner)
    jobs = [relax_job("a long upload"), relax_job("another long upload", user=2)]
    for job in jobs:
        await runner.submit(job, held)
    await asyncio.wait_for(held.posting.wait(), 10)
    # Posting the first result takes longer than the lease (2 s): the batcher renews it meanwhile, so no other
    # process becomes the batcher and delivers the same batch.
    deadline = runner.clock() + runner.relax.settings.lease * 1.5
    while runner.clock() < deadline:
        assert not await take_lease(runtime.db, LEASE_NAME, "another-process", runner.clock(), 2.0)
        await asyncio.sleep(0.2)
    held.gate.set()
    await wait_until(lambda: all(j.id in held.outcomes for j in jobs), "both posted")


async def test_a_relax_answer_is_logged_once_whoever_logs_it(
    opened: tuple[Runtime, JobRunner, Events], fake_api: FakeImageAPI
) -> None:
    """Two batchers delivering the same job at once (a lease lost mid-round): the second row is refused."""
    runtime, runner, events = opened
    await runner.relax.aclose()
    jobs = [relax_job("logged once"), relax_job("also once", user=2)]
    for job in jobs:
        await runner.submit(job, events)
    await runner.relax.round()
    await log_first_answer(runtime, runner, jobs[0])
    _, line = await log_first_answer(runtime, runner, jobs[0])  # a second batcher, a moment later
    assert line.result is not None and line.result.generation_id is None  # its write was refused
    rows = await runtime.db.fetchall("SELECT count(*) FROM generations WHERE job_id = ?", (jobs[0].id,))
    assert rows[0][0] == 1


async def test_a_batch_that_never_ends_is_given_up_and_refunded(
    opened: tuple[Runtime, JobRunner, Events], fake_api: FakeImageAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, runner, events = opened
    monkeypatch.setattr(relax_module, "GIVE_UP_AFTER", 0.5)  # in place of 72 hours
    fake_api.batch_seconds = 60
    jobs = [relax_job("forever pending"), relax_job("forever running", user=2)]
    for job in jobs:
        await runner.submit(job, events)
    await wait_until(lambda: all(j.id in events.errors for j in jobs), "both given up", timeout=10)
    for job in jobs:
        error = events.errors[job.id]
        assert isinstance(error, BatchEndedError) and error.state == "expired"
        assert await count_reserved_since(runtime.db, 0, user_id=job.user_id) == 0
    await wait_until(lambda: _no_open(runtime), "the batch closed")
