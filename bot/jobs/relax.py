"""Relax mode: relax jobs gathered into provider batches at half price, polled, and delivered.

One process at a time is the batcher (a lease in the database; any process takes over when it lapses). Each
round it:

1. sends a batch for each model once `batch_size` relax jobs wait or the oldest has waited `max_wait`
   seconds (a grid's tiles always go together). The batch is recorded as 'sending', with its jobs, before the
   provider is called, under our own id as its display name: a create call cut off by a crash is found again
   at the provider instead of being paid twice;
2. looks at every open batch when it is due, frequently at first and then every few minutes;
3. delivers a finished batch: each answer is stored and logged at the batch price, the job finished, and the
   member shown the result through the job's channel (the interaction is long gone). An error line, or a
   batch that failed, was cancelled or expired, fails its jobs, which refunds them. A job whose answer was
   already stored (a delivery cut off by a restart) is finished from the store, not charged again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from bot.core.batches import BatchClient, BatchInfo, BatchLine, BatchState
from bot.core.errors import BatchEndedError, GenerationError, InvalidRequest
from bot.core.models import ModelSpec
from bot.core.service import GenerationService, validate
from bot.core.types import GenerationResult, ImageRequest
from bot.jobs.conversation import Conversation, PreparedRequest, request_context
from bot.jobs.limits import RelaxSettings
from bot.jobs.presenting import JobOutcome, JobPresenter, stored_result
from storage.batches import (
    Batch,
    batch_jobs,
    clear_lease,
    drop_lease,
    finish_batched,
    open_batches,
    take_into_batch,
    take_lease,
    unsend,
    update_batch,
    waiting_relax_jobs,
)
from storage.db import Database
from storage.jobs import Job
from storage.queue import fail_waiting, paid_generation

log = logging.getLogger(__name__)

#: The database lease naming the one batcher.
LEASE_NAME = "relax_batcher"
#: A batch still 'sending' after this long was never created, or was and is found at the provider: its create
#: call (retries included) is surely over by then.
SENDING_GRACE = 900.0


def poll_interval(age: float, settings: RelaxSettings) -> float:
    """Frequent at first, then every few minutes: a tenth of the batch's age, within the settings' bounds."""
    return min(settings.poll_max, max(settings.poll_min, age / 10))


class RelaxBatcher:
    def __init__(
        self,
        *,
        db: Database,
        generation: GenerationService,
        conversation: Conversation,
        settings: RelaxSettings,
        owner: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.generation = generation
        self.conversation = conversation
        self.settings = settings
        self.owner = owner
        self.clock = clock
        self.presenter_for: Callable[[Job], Awaitable[JobPresenter | None]] | None = None
        #: Called with the final status of each relax job that ends (the runner counts them in its metrics).
        self.on_end: Callable[[str], None] = lambda status: None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._clients: dict[str, BatchClient] = {}
        self.holds_lease = False

    @property
    def available(self) -> bool:
        """Whether the bot has a provider that takes batches."""
        return self.generation.batch_provider() is not None

    def client(self, provider_name: str | None = None) -> BatchClient | None:
        provider = self.generation.batch_provider(provider_name)
        if provider is None:
            return None
        if provider.name not in self._clients:
            self._clients[provider.name] = BatchClient(provider)
        return self._clients[provider.name]

    async def start(self) -> None:
        if self._task is not None or not self.available:
            return
        self._stopping = False
        if self.db.dialect == "sqlite":
            # SQLite serves one process: a lease left by a previous run of it is this run's at once.
            await clear_lease(self.db, LEASE_NAME)
        self._task = asyncio.create_task(self._run(), name="relax-batcher")

    def wake(self) -> None:
        self._wake.set()

    async def aclose(self) -> None:
        """Stop after the round under way (a batch half sent would wait for `_reconcile`), or within 10 s."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._task), 10)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self.holds_lease:
            with contextlib.suppress(Exception):
                await drop_lease(self.db, LEASE_NAME, self.owner)
            self.holds_lease = False

    async def _run(self) -> None:
        while not self._stopping:
            wait = self.settings.lease / 3
            try:
                self.holds_lease = await take_lease(self.db, LEASE_NAME, self.owner, self.clock(), self.settings.lease)
                if self.holds_lease:
                    wait = min(wait, await self.round())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the relax batcher's round failed; trying again shortly")
            if self._stopping:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.05)):
                    await self._wake.wait()

    async def round(self) -> float:
        """Send what is due, look at what is due, deliver what finished. Seconds until something is due next."""
        next_send = await self._send_due()
        next_poll = await self._poll_due()
        return max(0.0, min(next_send, next_poll) - self.clock())

    # --- sending ------------------------------------------------------------------------------------------
    async def _send_due(self) -> float:
        now = self.clock()
        due_next = now + self.settings.max_wait
        by_model: dict[tuple[str, str], list[Job]] = {}
        for job in await waiting_relax_jobs(self.db):
            client = self.client(job.request.provider)
            if client is None:
                await self._fail(job, None, InvalidRequest("No provider that takes batches is configured."))
                continue
            model = job.request.model or client.provider.config.model
            by_model.setdefault((client.name, model), []).append(job)
        for (provider_name, model), jobs in by_model.items():
            while jobs and (
                len(jobs) >= self.settings.batch_size or jobs[0].created_at + self.settings.max_wait <= now
            ):
                chunk = _whole_groups(jobs, self.settings.batch_size)
                sent = {job.id for job in chunk}
                jobs = [job for job in jobs if job.id not in sent]
                await self._send(provider_name, model, chunk)
            if jobs:
                due_next = min(due_next, jobs[0].created_at + self.settings.max_wait)
        return due_next

    async def _send(self, provider_name: str, model: str, jobs: list[Job]) -> None:
        client = self.client(provider_name)
        assert client is not None
        spec = self.generation.spec_for(client.provider, ImageRequest(prompt="", model=model))
        ready: list[tuple[Job, PreparedRequest]] = []
        for job in jobs:
            try:
                prepared = await self.conversation.prepare(job)
                validate(prepared.request, spec)
            except InvalidRequest as exc:
                await self._fail(job, None, exc)
                continue
            ready.append((job, prepared))
        if not ready:
            return
        now = self.clock()
        batch = Batch(
            id=f"banana-relax-{secrets.token_hex(6)}",
            origin="discord",
            provider=client.name,
            model=spec.model_id,
            key_id=client.next_key(),
            state="sending",
            request_count=len(ready),
            created_at=now,
        )
        taken = set(await take_into_batch(self.db, batch, [job.id for job, _ in ready], now))
        items = [(job.id, prepared.request) for job, prepared in ready if job.id in taken]
        if not items:
            return
        try:
            info, kind, size = await client.create(items, spec, display_name=batch.id, key=batch.key_id)
        except GenerationError as exc:
            if exc.status is None:
                # No answer at all (a timeout, a broken connection): it may have been created. The next rounds
                # look for it by its display name (see _reconcile).
                log.warning("batch %s: the create call got no answer (%s); looking for it later", batch.id, exc)
                return
            await unsend(self.db, batch.id)
            if exc.retryable or exc.error_class in ("auth", "no_keys"):
                log.warning(
                    "batch %s was not accepted (%s); its %d jobs wait for the next round", batch.id, exc, len(items)
                )
                return
            log.warning("batch %s was refused (%s); failing its jobs", batch.id, exc)
            for job, _ in ready:
                if job.id in taken:
                    await self._fail(job, None, exc)
            return
        await update_batch(
            self.db,
            batch.id,
            name=info.name,
            state=str(info.state),
            sent_at=self.clock(),
            input_kind=kind,
            input_bytes=size,
            next_poll_at=self.clock() + self.settings.poll_min,
        )
        log.info("batch %s sent as %s: %d requests, %s, %d bytes", batch.id, info.name, len(items), kind, size)

    # --- polling ------------------------------------------------------------------------------------------
    async def _poll_due(self) -> float:
        now = self.clock()
        due_next = now + self.settings.poll_max
        for batch in await open_batches(self.db, origin="discord"):
            if batch.state == "sending":
                await self._reconcile(batch)
                due_next = min(due_next, now + self.settings.poll_min)
                continue
            if batch.next_poll_at is not None and batch.next_poll_at > now and not _final(batch.state):
                due_next = min(due_next, batch.next_poll_at)
                continue
            try:
                due_next = min(due_next, await self._poll(batch))
            except GenerationError as exc:
                log.warning("batch %s: could not look at it (%s); trying again later", batch.id, exc)
                await update_batch(self.db, batch.id, next_poll_at=now + self.settings.poll_min)
                due_next = min(due_next, now + self.settings.poll_min)
        return due_next

    async def _reconcile(self, batch: Batch) -> None:
        """A batch left 'sending' (its create call got no answer, or its process stopped or died in it): adopted
        if the provider has it, or its jobs put back in line once its create call is surely over."""
        client = self.client(batch.provider)
        if client is None:
            return
        try:
            found = await client.find(batch.id, batch.key_id)
        except GenerationError as exc:
            log.warning("batch %s: could not look for it (%s)", batch.id, exc)
            return
        if found is not None:
            log.info("batch %s was created after all, as %s", batch.id, found.name)
            await update_batch(
                self.db,
                batch.id,
                name=found.name,
                state=str(found.state),
                sent_at=batch.created_at,
                next_poll_at=self.clock(),
            )
        elif self.clock() - batch.created_at >= SENDING_GRACE:
            back = await unsend(self.db, batch.id)
            log.info("batch %s was never created; its %d jobs wait again", batch.id, back)

    async def _poll(self, batch: Batch) -> float:
        """Look at a batch (delivering it if it is over); when to look again."""
        client = self.client(batch.provider)
        assert batch.name is not None
        if client is None:
            raise InvalidRequest(f"provider {batch.provider} is no longer configured")
        now = self.clock()
        info = await client.get(batch.name, batch.key_id)
        age = now - (batch.sent_at or batch.created_at)
        next_poll = now + poll_interval(age, self.settings)
        changes: dict[str, object] = {"state": str(info.state), "polls": batch.polls + 1, "next_poll_at": next_poll}
        if info.state.final and batch.ended_at is None:
            changes["ended_at"] = now
            changes["error"] = info.error
        await update_batch(self.db, batch.id, **changes)
        if info.state.final:
            await self._deliver(batch, info, client)
        return next_poll

    # --- delivering ---------------------------------------------------------------------------------------
    async def _deliver(self, batch: Batch, info: BatchInfo, client: BatchClient) -> None:
        jobs = [job for job in await batch_jobs(self.db, batch.id) if job.status == "running"]
        spec = self.generation.spec_for(client.provider, ImageRequest(prompt="", model=batch.model))
        if info.state is BatchState.SUCCEEDED and jobs:
            prepared = {job.id: await self._prepared(job) for job in jobs}
            asked = {job.id: (p.request, spec) for job in jobs if (p := prepared[job.id]) is not None}
            lines = {line.key: line for line in await client.lines(info, batch.key_id, asked)}
            for job in jobs:
                p = prepared[job.id]
                if p is None:
                    await self._fail(job, batch, InvalidRequest("An image this request uses is no longer stored."))
                    continue
                await self._deliver_line(job, batch, spec, p, lines[job.id])
        else:
            error = BatchEndedError(
                f"The batch ended {info.state}: {info.error or 'no answer'}",
                state=str(info.state),
                provider=client.name,
            )
            for job in jobs:
                await self._fail(job, batch, error)
        await update_batch(self.db, batch.id, delivered_at=self.clock())
        log.info("batch %s delivered (%s, %d jobs)", batch.id, info.state, len(jobs))

    async def _prepared(self, job: Job) -> PreparedRequest | None:
        try:
            return await self.conversation.prepare(job)
        except InvalidRequest:
            return None

    async def _deliver_line(
        self, job: Job, batch: Batch, spec: ModelSpec, prepared: PreparedRequest, line: BatchLine
    ) -> None:
        if line.result is None:
            assert line.error is not None
            await self._fail(job, batch, line.error, prepared.request, spec)
            return
        total_ms = (self.clock() - job.created_at) * 1000
        paid = await paid_generation(self.db, job.id)
        result: GenerationResult
        if paid is not None:
            # A delivery cut off by a restart: the answer is stored and logged already.
            result = await stored_result(self.db, self.conversation.images, *paid)
        else:
            result = line.result
            await self.generation.record_batched(
                prepared.request, request_context(job), spec, batch_id=batch.id, total_ms=total_ms, result=result
            )
        job.image_key, job.generation_id = result.image_key, result.generation_id
        job.user_turn = prepared.user_turn
        job.model_turn = await self.conversation.model_turn_json(result)
        job.status, job.finished_at = "done", self.clock()
        ended = await finish_batched(
            self.db,
            job.id,
            batch.id,
            {
                "status": "done",
                "finished_at": job.finished_at,
                "image_key": job.image_key,
                "generation_id": job.generation_id,
                "user_turn": job.user_turn,
                "model_turn": job.model_turn,
            },
        )
        if not ended:
            return
        self.on_end("done")
        if job.delivery_cancelled:
            log.info("job %s: delivery was cancelled; the image is kept and paid for, not posted", job.id)
            return
        presenter = await self._presenter(job)
        if presenter is not None:
            presenter.prepare(result.image)
            await presenter.finished(job, JobOutcome(result=result, dropped_turns=prepared.dropped_turns))

    async def _fail(
        self,
        job: Job,
        batch: Batch | None,
        error: GenerationError,
        request: ImageRequest | None = None,
        spec: ModelSpec | None = None,
    ) -> None:
        """End a relax job as failed (refunding it) and tell the member why."""
        if batch is not None and request is not None and spec is not None:
            total_ms = (self.clock() - job.created_at) * 1000
            await self.generation.record_batched(
                request, request_context(job), spec, batch_id=batch.id, total_ms=total_ms, error=error
            )
        changes = {
            "status": "failed",
            "finished_at": self.clock(),
            "error_class": error.error_class,
            "error_detail": str(error),
        }
        if batch is not None:
            ended = await finish_batched(self.db, job.id, batch.id, changes)
        else:
            ended = await fail_waiting(self.db, job.id, changes)
        if not ended:
            return
        self.on_end("failed")
        if job.delivery_cancelled:
            return
        presenter = await self._presenter(job)
        if presenter is not None:
            await presenter.failed(job, error)

    async def _presenter(self, job: Job) -> JobPresenter | None:
        if self.presenter_for is None:
            return None
        try:
            return await self.presenter_for(job)
        except Exception:
            log.exception("job %s: could not reach its channel", job.id)
            return None


def _final(state: str) -> bool:
    return state in ("succeeded", "failed", "cancelled", "expired")


def _whole_groups(jobs: list[Job], size: int) -> list[Job]:
    """The first jobs, up to `size`, without splitting a request (a grid's tiles) across batches; a request
    larger than `size` goes whole on its own."""
    chunk: list[Job] = []
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.job_group, []).append(job)
    for group in groups.values():
        if chunk and len(chunk) + len(group) > size:
            break
        chunk.extend(group)
    return chunk
