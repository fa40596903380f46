"""The relax batcher and the Batch API client against the fake Gemini API, on SQLite and PostgreSQL: one
batcher at a time, batches cut off while being sent, refusals, polling's back-off, and file input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

import bot.core.batches as batches_module
from bot.config import load_settings
from bot.core.batches import BatchClient, BatchState, key_id
from bot.core.types import ImageRequest
from bot.jobs.conversation import request_context
from bot.jobs.limits import QueueLimits, RelaxSettings
from bot.jobs.relax import LEASE_NAME, poll_interval
from bot.jobs.runner import JobRunner
from bot.runtime import Runtime
from storage.batches import Batch, get_batch, open_batches, take_into_batch, take_lease
from storage.jobs import Job, JobRequest, count_reserved_since, get_job
from tests.bot_harness import wait_until
from tests.fake_image_api import FakeImageAPI, Fault
from tests.test_jobs import Events

pytestmark = pytest.mark.timeout(30)


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
    batch = Batch(
        id="banana-relax-cutoff",
        origin="discord",
        provider=client.name,
        model="gemini-3-pro-image-preview",
        key_id=client.next_key(),
        state="sending",
        request_count=2,
        created_at=runner.clock() - 120,  # long enough ago that its create call is surely over
    )
    assert await take_into_batch(db, batch, [j.id for j in jobs], runner.clock()) == [j.id for j in jobs]
    spec = runtime.service.spec_for(client.provider, ImageRequest(prompt=""))
    items = [(j.id, ImageRequest(prompt=j.request.prompt, aspect_ratio="1:1")) for j in jobs]
    await client.create(items, spec, display_name=batch.id, key=batch.key_id)
    assert len(fake_api.batches) == 1

    await runner.relax.round()  # finds it by its display name
    found = await get_batch(db, batch.id)
    assert found is not None and found.name is not None and found.state != "sending"
    while await open_batches(db):
        await runner.relax.round()
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
    batch = Batch(
        id="banana-relax-never",
        origin="discord",
        provider=client.name,
        model="gemini-3-pro-image-preview",
        key_id=client.next_key(),
        state="sending",
        request_count=1,
        created_at=runner.clock() - 3600,
    )
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
    fake_api.script(Fault.server_error(503), path_contains=":batchGenerateContent")
    busy = [relax_job("a storm"), relax_job("a calm", user=2)]
    for job in busy:
        await runner.submit(job, events)
    await wait_until(lambda: any(r.status == 503 for r in fake_api.requests), "the 503")
    # Not accepted: the jobs wait for the next round, which sends them.
    await wait_until(lambda: all(j.id in events.outcomes for j in busy), "delivered after the 503", timeout=10)
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
    [batch] = await open_batches(db)
    client = runner.relax.client()
    assert client is not None and batch.name is not None
    # The process delivering it stored and logged the first answer, then died before finishing that job.
    info = await client.get(batch.name, batch.key_id)
    spec = runtime.service.spec_for(client.provider, ImageRequest(prompt=""))
    first = jobs[0]
    prepared = await runner.conversation.prepare(first)
    [line] = await client.lines(info, batch.key_id, {first.id: (prepared.request, spec)})
    assert line.result is not None
    context = request_context(first)
    await runtime.service.record_batched(
        prepared.request, context, spec, batch_id=batch.id, total_ms=1.0, result=line.result
    )
    while await open_batches(db):
        await runner.relax.round()
    assert all(j.id in events.outcomes for j in jobs)
    rows = await db.fetchall("SELECT job_id, count(*) FROM generations GROUP BY job_id ORDER BY job_id")
    assert sorted((str(r[0]), int(r[1])) for r in rows) == sorted((j.id, 1) for j in jobs)
    finished = await get_job(db, first.id)
    assert finished is not None and finished.status == "done" and finished.image_key == line.result.image_key
