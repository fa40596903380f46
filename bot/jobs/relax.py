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
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bot.core.batches import BatchClient, BatchInfo, BatchLine, BatchState
from bot.core.errors import BatchEndedError, GenerationError, InvalidRequest, ResponseError
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
#: A batch left 'sending' by a process that stopped or died is looked for at the provider; after this long, its
#: create call (retries and a large upload included) is surely over, and a batch not found was never made.
SENDING_GRACE = 900.0
#: The same for a batch whose create call this process saw end without an answer it could trust.
UNANSWERED_GRACE = 120.0
#: A batch the provider still hasn't finished this long after it was sent is given up (Google expires a batch
#: after 48 hours): its jobs are failed and refunded rather than left waiting forever.
GIVE_UP_AFTER = 72 * 3600.0


class LeaseLost(Exception):
    """Another process became the batcher (this one's lease ran out mid-round): this round stops here."""


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
        self._telling: set[asyncio.Task[None]] = set()
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
        if self._telling:  # status edits under way get a moment; the bot is closing, so not forever
            await asyncio.wait(self._telling, timeout=5)
        if self.holds_lease:
            with contextlib.suppress(Exception):
                await drop_lease(self.db, LEASE_NAME, self.owner)
            self.holds_lease = False

    async def _run(self) -> None:
        while not self._stopping:
            wait = self.settings.lease / 3
            self._wake.clear()  # before the round: a wake-up during it (a job admitted meanwhile) starts the next
            try:
                wait = min(wait, await self.round())
            except asyncio.CancelledError:
                raise
            except LeaseLost:
                self.holds_lease = False
                log.info("another process is the relax batcher now")
            except Exception:
                log.exception("the relax batcher's round failed; trying again shortly")
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.05)):
                    await self._wake.wait()

    async def round(self) -> float:
        """If this process is the batcher (or may become it): send what is due, look at what is due, deliver what
        finished. Seconds until something is due next."""
        self.holds_lease = await take_lease(self.db, LEASE_NAME, self.owner, self.clock(), self.settings.lease)
        if not self.holds_lease:
            return self.settings.lease / 3
        keeping = asyncio.create_task(self._keep_lease())
        try:
            next_send = await self._send_due()
            next_poll = await self._poll_due()
        finally:
            keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeping
        return max(0.0, min(next_send, next_poll) - self.clock())

    async def _keep_lease(self) -> None:
        """Renew the lease while a round runs (uploads, downloads and posting many images take long): the round
        stops at its next step if another process took it meanwhile."""
        while self.holds_lease:
            await asyncio.sleep(self.settings.lease / 3)
            if not await take_lease(self.db, LEASE_NAME, self.owner, self.clock(), self.settings.lease):
                self.holds_lease = False

    def _renew(self) -> None:
        """Between steps of a round: LeaseLost if another process is the batcher now, so two batchers never work
        on the same batch."""
        if not self.holds_lease:
            raise LeaseLost

    # --- sending ------------------------------------------------------------------------------------------
    async def _send_due(self) -> float:
        now = self.clock()
        due_next = now + self.settings.max_wait
        by_model: dict[tuple[str, str], list[Job]] = {}
        for job in await waiting_relax_jobs(self.db, now):
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
        self._renew()  # before the batch is recorded: one recorded and not sent waits out _reconcile's grace
        taken = set(await take_into_batch(self.db, batch, [job.id for job, _ in ready], now))
        items = [(job.id, prepared.request) for job, prepared in ready if job.id in taken]
        if not items:
            return
        taken_jobs = [job for job, _ in ready if job.id in taken]
        try:
            info, kind, size = await client.create(items, spec, display_name=batch.id, key=batch.key_id)
        except GenerationError as exc:
            if exc.status is None or exc.status >= 500:
                # No answer, or a server error that may have come after the batch was made: the next rounds look
                # for it by its display name before sending anything again (see _reconcile).
                log.warning(
                    "batch %s: the create call ended without a clear answer (%s); looking for it", batch.id, exc
                )
                await update_batch(self.db, batch.id, error="unanswered")
                return
            await unsend(self.db, batch.id, self.clock())
            if exc.retryable or exc.error_class in ("auth", "no_keys"):
                log.warning(
                    "batch %s was not accepted (%s); its %d jobs wait for the next round", batch.id, exc, len(items)
                )
                return
            log.warning("batch %s was refused (%s); failing its jobs", batch.id, exc)
            for job in taken_jobs:
                await self._fail(job, None, exc)
            return
        except Exception:
            # A fault of ours before anything was sent (building the requests): the jobs can't go, now or later.
            log.exception("batch %s could not be sent (reference %s); failing its jobs", batch.id, batch.id)
            await unsend(self.db, batch.id, self.clock())
            for job in taken_jobs:
                await self._fail(job, None, None)
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
        for job in taken_jobs:
            job.status, job.batch_id = "running", batch.id
            self._tell(self._sent(job))

    async def _sent(self, job: Job) -> None:
        """Tell the member their request went to the provider (their status message says so, once)."""
        presenter = await self._presenter(job)
        if presenter is not None:
            await presenter.started(job)

    def _tell(self, telling: Coroutine[Any, Any, None]) -> None:
        """Status edits go on beside the round: a batch's many edits in one channel wait for Discord's rate limit."""
        task = asyncio.create_task(telling)
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    # --- polling ------------------------------------------------------------------------------------------
    async def _poll_due(self) -> float:
        now = self.clock()
        due_next = now + self.settings.poll_max
        for batch in await open_batches(self.db, origin="discord"):
            self._renew()
            if batch.state == "sending":
                await self._reconcile(batch)
                due_next = min(due_next, now + self.settings.poll_min)
                continue
            if batch.next_poll_at is not None and batch.next_poll_at > now:
                due_next = min(due_next, batch.next_poll_at)
                continue
            age = now - (batch.sent_at or batch.created_at)
            if age > GIVE_UP_AFTER:  # the provider expires a batch after 48 h; this one never said it ended
                await self._give_up(batch, BatchEndedError("The batch never ended.", state="expired"))
                continue
            try:
                due_next = min(due_next, await self._poll(batch))
            except GenerationError as exc:
                if not exc.retryable:
                    # Gone at the provider (404), or its key or provider no longer configured: no later look will
                    # deliver it.
                    await self._give_up(batch, exc)
                    continue
                later = now + poll_interval(age, self.settings)
                log.warning("batch %s: could not look at it (%s); trying again in %.0f s", batch.id, exc, later - now)
                await update_batch(self.db, batch.id, next_poll_at=later)
                due_next = min(due_next, later)
        return due_next

    async def _give_up(self, batch: Batch, error: GenerationError) -> None:
        log.warning("batch %s can't be delivered (%s); failing and refunding its jobs", batch.id, error)
        for job in await batch_jobs(self.db, batch.id):
            if job.status == "running":
                self._renew()
                await self._fail(job, batch, error)
        await update_batch(self.db, batch.id, delivered_at=self.clock(), error=str(error)[:500])

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
        elif self.clock() - batch.created_at >= (UNANSWERED_GRACE if batch.error == "unanswered" else SENDING_GRACE):
            back = await unsend(self.db, batch.id, self.clock())
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
        """Each job of a finished batch: its answer stored, logged and posted, or its error told and refunded. A
        batch that failed, was cancelled or expired delivers what it answered before it ended."""
        jobs = await batch_jobs(self.db, batch.id)  # in the order they were sent
        running = [job for job in jobs if job.status == "running"]
        # Finished by a delivery that was cut off (a restart) before their results were posted. (A grid's tiles
        # have no message of their own; a resumed grid shows the ones already finished with the rest.)
        unposted = [
            job
            for job in jobs
            if job.status == "done"
            and job.result_message_id is None
            and job.grid_id is None
            and not job.delivery_cancelled
        ]
        spec = self.generation.spec_for(client.provider, ImageRequest(prompt="", model=batch.model))
        prepared = {job.id: await self._prepared(job) for job in running}
        lines: dict[str, BatchLine] = {}
        if running and (info.inline is not None or info.responses_file is not None):
            asked = {job.id: (p.request, spec) for job in running if (p := prepared[job.id]) is not None}
            found = await client.lines(info, batch.key_id, asked, order=[job.id for job in jobs])
            lines = {line.key: line for line in found if not line.missing}
            if info.state is BatchState.SUCCEEDED and asked and not lines:
                # Its output names none of its requests: a format this release doesn't read, and looking again
                # reads the same. Given up (its jobs refunded and the reason logged) rather than posted wrongly.
                raise ResponseError(f"{client.name}: the batch's output answers none of its requests.")
        ended = BatchEndedError(
            f"The batch ended {info.state}: {info.error or 'no answer'}", state=str(info.state), provider=client.name
        )
        for job in running:
            self._renew()
            p = prepared[job.id]
            line = lines.get(job.id)
            if p is None:
                await self._fail(job, batch, InvalidRequest("An image this request uses is no longer stored."))
            elif line is not None:
                await self._deliver_line(job, batch, spec, p, line)
            elif info.state is BatchState.SUCCEEDED:
                await self._fail(job, batch, ResponseError(f"{client.name} returned no answer for this request."))
            else:
                await self._fail(job, batch, ended, p.request, spec)
        for job in unposted:
            self._renew()
            await self._post_stored(job)
        await update_batch(self.db, batch.id, delivered_at=self.clock())
        log.info("batch %s delivered (%s, %d jobs)", batch.id, info.state, len(running))

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
            if result.generation_id is None and (paid := await paid_generation(self.db, job.id)) is not None:
                # Another batcher logged it a moment earlier (one row per relax job: a unique index).
                result = await stored_result(self.db, self.conversation.images, *paid)
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
        if ended is None:
            return
        self.on_end("done")
        if ended.delivery_cancelled:  # as it stood when the job was finished: a cancel after that is too late
            log.info("job %s: delivery was cancelled; the image is kept and paid for, not posted", job.id)
            return
        presenter = await self._presenter(job)
        if presenter is not None:
            presenter.prepare(result.image)
            await presenter.finished(job, JobOutcome(result=result, dropped_turns=prepared.dropped_turns))

    async def _post_stored(self, job: Job) -> None:
        paid = await paid_generation(self.db, job.id)
        if paid is None:
            return
        result = await stored_result(self.db, self.conversation.images, *paid)
        presenter = await self._presenter(job)
        if presenter is not None:
            presenter.prepare(result.image)
            await presenter.finished(job, JobOutcome(result=result))

    async def _fail(
        self,
        job: Job,
        batch: Batch | None,
        error: GenerationError | None,
        request: ImageRequest | None = None,
        spec: ModelSpec | None = None,
    ) -> None:
        """End a relax job as failed (refunding it) and tell the member why (None: a fault of ours)."""
        if batch is not None and request is not None and spec is not None and error is not None:
            total_ms = (self.clock() - job.created_at) * 1000
            await self.generation.record_batched(
                request, request_context(job), spec, batch_id=batch.id, total_ms=total_ms, error=error
            )
        changes = {
            "status": "failed",
            "finished_at": self.clock(),
            "error_class": error.error_class if error is not None else "internal",
            "error_detail": str(error) if error is not None else None,
        }
        if batch is not None:
            ended = await finish_batched(self.db, job.id, batch.id, changes)
            if ended is None:
                return
            cancelled = ended.delivery_cancelled
        else:
            if not await fail_waiting(self.db, job.id, changes):
                return
            cancelled = False
        self.on_end("failed")
        if cancelled:
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
