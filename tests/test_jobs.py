"""The job service against the fake image API: quotas, refunds, conversations, restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_settings
from bot.core.errors import GenerationError
from bot.core.types import GeneratedImage, Preview
from bot.jobs.admission import LimitExceeded
from bot.jobs.limits import ContextBudget, QueueLimits
from bot.jobs.presenting import JobOutcome
from bot.jobs.runner import JobRunner
from bot.runtime import Runtime
from storage.generations import count_generations, get_generation
from storage.jobs import Job, JobRequest, count_reserved_since, get_job, insert_job, update_job
from tests.bot_harness import wait_until
from tests.fake_image_api import FakeImageAPI, Fault

pytestmark = pytest.mark.timeout(30)


@dataclass
class Events:
    """A presenter that records what the member would have been told."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    outcomes: dict[str, JobOutcome] = field(default_factory=dict)
    errors: dict[str, GenerationError | None] = field(default_factory=dict)
    done: dict[str, asyncio.Event] = field(default_factory=dict)
    #: Drafts and finished images handed over while jobs run (the runner's on_preview / on_image hooks).
    previews: list[Preview] = field(default_factory=list)
    prepared: list[GeneratedImage] = field(default_factory=list)

    def _event(self, job_id: str) -> asyncio.Event:
        return self.done.setdefault(job_id, asyncio.Event())

    async def queued(self, job: Job) -> None:
        self.seen.append(("queued", job.id))

    async def started(self, job: Job) -> None:
        self.seen.append(("started", job.id))

    def preview(self, preview: Preview) -> None:
        self.previews.append(preview)

    def prepare(self, image: GeneratedImage) -> None:
        self.prepared.append(image)

    async def finished(self, job: Job, outcome: JobOutcome) -> None:
        self.seen.append(("finished", job.id))
        self.outcomes[job.id] = outcome
        self._event(job.id).set()

    async def failed(self, job: Job, error: GenerationError | None) -> None:
        self.seen.append(("failed", job.id))
        self.errors[job.id] = error
        self._event(job.id).set()

    async def cancelled(self, job: Job) -> None:
        self.seen.append(("cancelled", job.id))
        self._event(job.id).set()

    async def interrupted(self) -> None:
        self.seen.append(("interrupted", ""))

    async def wait(self, job_id: str) -> None:
        await asyncio.wait_for(self._event(job_id).wait(), 10)


async def open_service(
    fake: FakeImageAPI, data_dir: Path, *, limits: QueueLimits | None = None, budget: ContextBudget | None = None
) -> tuple[Runtime, JobRunner]:
    settings = load_settings(
        {
            "GEMINI_API_KEY": "test-key",
            "GEMINI_BASE_URL": fake.base_url,
            "BANANA_DATA_DIR": str(data_dir),
            "BANANA_HTTP_VERSION": "2-prior",
            "BANANA_RETRY_ATTEMPTS": "1",
        },
        env_file=None,
    )
    runtime = await Runtime.open(settings)
    service = JobRunner(
        db=runtime.db,
        images=runtime.images,
        generation=runtime.service,
        limits=limits or QueueLimits(),
        budget=budget,
    )
    return runtime, service


@pytest.fixture
async def opened(fake_api: FakeImageAPI, tmp_path: Path) -> AsyncIterator[tuple[Runtime, JobRunner]]:
    runtime, service = await open_service(fake_api, tmp_path / "data", limits=QueueLimits(user_daily=3, user_pending=2))
    yield runtime, service
    await service.aclose()
    await runtime.aclose()


def new_job(prompt: str = "a cat", *, user: int = 1, guild: int = 10, **fields: Any) -> Job:
    request = JobRequest(prompt=prompt, size="1K", aspect_ratio="16:9", **fields.pop("request", {}))
    return Job(guild_id=guild, channel_id=20, user_id=user, kind="imagine", request=request, **fields)


async def test_a_job_runs_and_keeps_its_turns_and_usage_row(opened: tuple[Runtime, JobRunner]) -> None:
    runtime, service = opened
    events = Events()
    job = new_job(defer_ms=12.0)
    await service.submit(job, events)
    await events.wait(job.id)
    assert [kind for kind, _ in events.seen] == ["queued", "started", "finished"]
    # The presenter got the image as soon as the provider answered, to prepare it while the job logs it.
    assert len(events.prepared) == 1 and events.prepared[0].data == events.outcomes[job.id].result.image.data
    stored = await get_job(runtime.db, job.id)
    assert stored is not None and stored.status == "done"
    assert stored.image_key and stored.generation_id
    assert stored.user_turn == {"role": "user", "parts": [{"text": "a cat"}]}
    assert stored.model_turn is not None
    model_parts = stored.model_turn["parts"]
    assert any("image" in p for p in model_parts) and all(p.get("signature") for p in model_parts)
    row = await get_generation(runtime.db, stored.generation_id)
    assert row is not None and row.job_id == job.id and row.defer_ms == 12.0 and row.queue_ms is not None
    assert row.command == "imagine" and row.user_id == 1 and row.guild_id == 10


async def test_daily_limit_refuses_and_failures_are_refunded(
    fake_api: FakeImageAPI, opened: tuple[Runtime, JobRunner]
) -> None:
    runtime, service = opened
    events = Events()
    fake_api.script(Fault.prompt_block())
    blocked = new_job("blocked")
    await service.submit(blocked, events)
    await events.wait(blocked.id)
    assert events.errors[blocked.id] is not None and events.errors[blocked.id].error_class == "blocked"  # type: ignore[union-attr]
    assert await count_reserved_since(runtime.db, 0, user_id=1) == 0  # refunded
    for n in range(3):
        job = new_job(f"ok {n}")
        await service.submit(job, events)
        await events.wait(job.id)
    with pytest.raises(LimitExceeded) as refused:
        await service.submit(new_job("one too many"), events)
    assert refused.value.limit == "user_daily" and refused.value.allowed == 3
    assert refused.value.resets_at is not None
    # Another member is not affected.
    other = new_job("someone else", user=2)
    await service.submit(other, events)
    await events.wait(other.id)


async def test_pending_limit_counts_waiting_and_running_jobs(
    fake_api: FakeImageAPI, opened: tuple[Runtime, JobRunner]
) -> None:
    _, service = opened
    fake_api.latency = 0.3
    events = Events()
    first, second = new_job("1"), new_job("2")
    await service.submit(first, events)
    await service.submit(second, events)
    with pytest.raises(LimitExceeded) as refused:
        await service.submit(new_job("3"), events)
    assert refused.value.limit == "user_pending" and refused.value.resets_at is None
    await events.wait(first.id)
    await events.wait(second.id)


async def test_a_burst_cannot_slip_past_the_daily_limit(fake_api: FakeImageAPI, tmp_path: Path) -> None:
    runtime, service = await open_service(
        fake_api, tmp_path / "data", limits=QueueLimits(guild_daily=5, user_pending=100, user_concurrency=100)
    )
    try:
        events = Events()
        results = await asyncio.gather(
            *(service.submit(new_job(f"{n}", user=n), events) for n in range(12)), return_exceptions=True
        )
        assert sum(1 for r in results if r is None) == 5
        assert all(isinstance(r, LimitExceeded) and r.limit == "guild_daily" for r in results if r is not None)
        await service.queue.wait_idle()
    finally:
        await service.aclose()
        await runtime.aclose()


async def test_cancel_refunds_a_waiting_job(fake_api: FakeImageAPI, tmp_path: Path) -> None:
    runtime, service = await open_service(fake_api, tmp_path / "data", limits=QueueLimits(global_concurrency=1))
    try:
        fake_api.latency = 0.3
        events = Events()
        running, waiting = new_job("1"), new_job("2", user=2)
        await service.submit(running, events)
        await wait_until(lambda: ("started", running.id) in events.seen, "the first job runs")  # claims are async
        await service.submit(waiting, events)
        assert service.position(waiting.id) == 1
        assert await service.cancel(waiting.id) is True
        assert await service.cancel(running.id) is False
        stored = await get_job(runtime.db, waiting.id)
        assert stored is not None and stored.status == "cancelled"
        assert await count_reserved_since(runtime.db, 0, user_id=2) == 0
        await events.wait(running.id)
        assert ("started", waiting.id) not in events.seen
    finally:
        await service.aclose()
        await runtime.aclose()


async def test_edits_replay_the_parent_chain_with_signatures(
    fake_api: FakeImageAPI, opened: tuple[Runtime, JobRunner]
) -> None:
    _, service = opened
    events = Events()
    root = new_job("a red fox")
    await service.submit(root, events)
    await events.wait(root.id)
    edit = new_job("make it winter", parent_id=root.id)
    await service.submit(edit, events)
    await events.wait(edit.id)
    assert edit.id in events.outcomes, events.errors.get(edit.id)
    contents = fake_api.requests[-1].json["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[0]["parts"] == [{"text": "a red fox"}]
    sent_signatures = [p["thoughtSignature"] for p in contents[1]["parts"]]
    assert sent_signatures and set(sent_signatures) <= fake_api.issued_signatures
    assert contents[2]["parts"][0] == {"text": "make it winter"}
    # A branch from the root (replying to the older image) does not include the winter edit.
    branch = new_job("make it night", parent_id=root.id, user=2)
    await service.submit(branch, events)
    await events.wait(branch.id)
    texts = [p.get("text") for c in fake_api.requests[-1].json["contents"] for p in c["parts"]]
    assert "make it winter" not in texts and texts[-1] == "make it night"


async def test_the_oldest_turns_are_dropped_beyond_the_budget(fake_api: FakeImageAPI, tmp_path: Path) -> None:
    runtime, service = await open_service(
        fake_api, tmp_path / "data", limits=QueueLimits(user_daily=0), budget=ContextBudget(max_images=2)
    )
    try:
        events = Events()
        parent: str | None = None
        for step in range(4):
            job = new_job(f"step {step}", parent_id=parent)
            await service.submit(job, events)
            await events.wait(job.id)
            assert job.id in events.outcomes, events.errors.get(job.id)
            parent = job.id
        assert parent is not None
        # Three earlier images, budget two: the oldest turn pair is left out, and the member is told.
        assert events.outcomes[parent].dropped_turns == 1
        contents = fake_api.requests[-1].json["contents"]
        assert contents[0]["parts"][0].get("text") == "step 1"
    finally:
        await service.aclose()
        await runtime.aclose()


async def test_a_restart_runs_interrupted_jobs_once_without_charging_twice(
    fake_api: FakeImageAPI, tmp_path: Path
) -> None:
    runtime, service = await open_service(fake_api, tmp_path / "data", limits=QueueLimits(user_daily=2))
    # A previous process left one job running and one queued.
    was_running = new_job("interrupted", status="running", attempts_started=1)
    was_queued = new_job("waiting", user=2)
    await insert_job(runtime.db, was_running)
    await insert_job(runtime.db, was_queued)
    await service.aclose()
    await runtime.aclose()

    runtime, service = await open_service(fake_api, tmp_path / "data", limits=QueueLimits(user_daily=2))
    try:
        events = Events()

        async def presenter_for(job: Job) -> Events:
            return events

        await service.start(presenter_for)
        await events.wait(was_running.id)
        await events.wait(was_queued.id)
        for job_id in (was_running.id, was_queued.id):
            stored = await get_job(runtime.db, job_id)
            assert stored is not None and stored.status == "done"
        # Each job holds one reservation: user 1 can still make exactly one more today.
        assert await count_reserved_since(runtime.db, 0, user_id=1) == 1
        await service.submit(new_job("one more"), events)
        with pytest.raises(LimitExceeded):
            await service.submit(new_job("too many"), events)
        await service.queue.wait_idle()
    finally:
        await service.aclose()
        await runtime.aclose()


async def test_a_reference_that_is_no_longer_stored_fails_clearly_and_is_refunded(
    opened: tuple[Runtime, JobRunner],
) -> None:
    runtime, service = opened
    events = Events()
    job = new_job("reroll of something old", request={"reference_keys": ("ab" * 32,)})
    await service.submit(job, events)
    await events.wait(job.id)
    error = events.errors[job.id]
    assert error is not None and error.error_class == "invalid_request" and "no longer stored" in str(error)
    assert await count_reserved_since(runtime.db, 0, user_id=1) == 0


async def test_the_next_job_starts_once_the_answer_is_in_not_after_it_is_stored_and_logged(
    fake_api: FakeImageAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for one job at a time, the second job's request reaches the API while the first job's usage
    row is still being written (JobRunner._generated gives the slot back from the on_image hook)."""
    from bot.core import service as core_service

    first_logging, release_log = asyncio.Event(), asyncio.Event()
    real_insert = core_service.insert_generation

    async def slow_insert(db: Any, row: Any) -> int:
        if row.prompt == "first":
            first_logging.set()
            await release_log.wait()
        return await real_insert(db, row)

    monkeypatch.setattr(core_service, "insert_generation", slow_insert)
    runtime, service = await open_service(
        fake_api, tmp_path / "data", limits=QueueLimits(global_concurrency=1, guild_concurrency=1, user_pending=3)
    )
    try:
        events = Events()
        first, second = new_job("first", user=1), new_job("second", user=2)
        await service.submit(first, events)
        await service.submit(second, events)
        await asyncio.wait_for(first_logging.wait(), 10)
        for _ in range(200):  # the second request arrives while the first is still logging
            if any(r.json and "second" in str(r.json) for r in fake_api.requests):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the second job waited for the first one's log write")
        assert await service.pending_for_user(1) == 1  # the first job still counts until it is logged
        release_log.set()
        await events.wait(first.id)
        await events.wait(second.id)
        assert await service.pending_for_user(1) == 0
    finally:
        release_log.set()
        await service.aclose()
        await runtime.aclose()


async def test_a_job_taken_over_after_the_provider_answered_is_finished_from_the_store_not_paid_again(
    fake_api: FakeImageAPI, tmp_path: Path
) -> None:
    """The process running it died between the usage row and the job's own record: the next claim finds the paid
    generation and posts that image; the image API is not asked again."""
    runtime, service = await open_service(fake_api, tmp_path / "data")
    events = Events()
    job = new_job("paid once")
    await service.submit(job, events)
    await events.wait(job.id)
    paid = await get_job(runtime.db, job.id)
    assert paid is not None and paid.generation_id is not None
    requests_before = len(fake_api.requests)
    # As if the process had died right after the provider answered: the job is still 'running' under a lease
    # that has run out, with its usage row and image already stored.
    await update_job(runtime.db, job.id, status="running", image_key=None, generation_id=None, model_turn=None)
    await service.aclose()
    await runtime.aclose()

    runtime, service = await open_service(fake_api, tmp_path / "data")
    try:
        again = Events()

        async def presenter_for(job: Job) -> Events:
            return again

        await service.start(presenter_for)
        await again.wait(job.id)
        assert again.seen == [("queued", job.id), ("started", job.id), ("finished", job.id)]
        assert len(fake_api.requests) == requests_before  # not generated again
        stored = await get_job(runtime.db, job.id)
        assert stored is not None and stored.status == "done" and stored.generation_id == paid.generation_id
        assert stored.image_key == paid.image_key
        assert again.outcomes[job.id].result.image.data == await runtime.images.get(paid.image_key or "")
        assert await count_generations(runtime.db) == 1  # charged once
    finally:
        await service.aclose()
        await runtime.aclose()
