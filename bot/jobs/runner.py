"""Running jobs: admitted jobs go to the fair queue, run when a slot frees, and are finished or refunded.

The Discord side hands in a `Job` and a `JobPresenter` (which keeps the member informed); this module
does the rest and knows nothing of Discord. After a restart, `resume` queues again what was interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from bot.core.errors import GenerationError
from bot.core.service import GenerationService
from bot.core.types import (
    GeneratedImage,
)
from bot.jobs.admission import Admission
from bot.jobs.conversation import Conversation, request_context
from bot.jobs.limits import ContextBudget, QueueLimits, RelaxSettings
from bot.jobs.presenting import JobOutcome, JobPresenter, stored_result
from bot.jobs.queue import JobQueue
from bot.jobs.relax import RelaxBatcher
from bot.observability.logs import job_context
from bot.observability.metrics import Metrics
from storage.batches import cancel_delivery, relax_place, relax_turnaround_ms
from storage.db import Database
from storage.generations import recent_latencies_ms
from storage.images import ImageStore
from storage.jobs import Job, get_job
from storage.queue import (
    HOLD_SECONDS,
    LEASE_SECONDS,
    cancel_queued,
    finish,
    paid_generation,
    pending_in_lane,
    pending_requests,
    release_holds,
)

log = logging.getLogger(__name__)


class JobRunner:
    def __init__(
        self,
        *,
        db: Database,
        images: ImageStore,
        generation: GenerationService,
        limits: QueueLimits,
        budget: ContextBudget | None = None,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
        metrics: Metrics | None = None,
        lease: float = LEASE_SECONDS,
        relax: RelaxSettings | None = None,
    ) -> None:
        self.db = db
        self.images = images
        self.generation = generation
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.queue = JobQueue(
            db,
            limits,
            owner=owner or process_owner(),
            run=self._claimed,
            clock=clock,
            lease=lease,
            on_claim=self.metrics.claim,
        )
        self.queue.on_refresh = self._refreshed
        self.admission = Admission(db=db, generation=generation, limits=limits, clock=clock)
        self.conversation = Conversation(
            db=db, images=images, budget=budget or ContextBudget(), default_model=generation.providers[0].config.model
        )
        self.relax = RelaxBatcher(
            db=db,
            generation=generation,
            conversation=self.conversation,
            settings=relax or RelaxSettings(),
            owner=self.queue.owner,
            clock=clock,
        )
        self.relax.on_end = self.metrics.job_finished
        #: Presenters of jobs this process admitted, until the job ends here or another process takes it, and
        #: when each was admitted (time.monotonic()).
        self._presenters: dict[str, JobPresenter] = {}
        self._admitted_at: dict[str, float] = {}
        #: How a job admitted elsewhere (or before a restart) is shown: set by `start`.
        self._presenter_for: Callable[[Job], Awaitable[JobPresenter | None]] | None = None
        self._started = False
        #: Presenters telling members about finished jobs (see _after_slot).
        self._telling: set[asyncio.Task[None]] = set()
        #: The shard of a guild's events, for log lines (set by the bot).
        self.shard_of: Callable[[int | None], int | None] = lambda guild_id: None

    async def start(self, presenter_for: Callable[[Job], Awaitable[JobPresenter | None]] | None = None) -> None:
        """Start claiming jobs: this process's own, other processes', and whatever a restart left behind
        (`presenter_for` shows those)."""
        if presenter_for is not None:
            self._presenter_for = presenter_for
            self.relax.presenter_for = presenter_for
        if not self._started:
            self._started = True
            await self.queue.start()
            await self.relax.start()

    # --- admission ----------------------------------------------------------------------------------
    async def submit(self, job: Job, presenter: JobPresenter, *, member_daily: int | None = None) -> None:
        """Reserve quota, persist and queue the job; raises LimitExceeded or BudgetExceeded (nothing reserved).
        `member_daily` is the member's daily limit from their roles, if they have one."""
        await self.submit_group([(job, presenter)], member_daily=member_daily)

    async def submit_group(self, jobs: Sequence[tuple[Job, JobPresenter]], *, member_daily: int | None = None) -> None:
        """Admit the jobs of one request (a grid's tiles) together: all of them or none."""
        await self.start()
        owner = self.queue.owner
        admitting = self.admission.admit(
            [job for job, _ in jobs],
            member_daily=member_daily,
            # Ours alone until the member sees the status message and it is recorded: another process that takes
            # a job then edits that message instead of leaving it behind (or the batcher, for a relax job).
            held_by=owner,
            hold=HOLD_SECONDS,
        )
        if jobs[0][0].speed == "relax":
            await self._submit_relax(jobs, admitting)
            return
        # Known before the jobs can be claimed (this process may take them as soon as they are committed), and
        # forgotten again if admission refuses them.
        for job, presenter in jobs:
            self._presenters[job.id] = presenter
        began = time.perf_counter()
        try:
            await admitting
        except BaseException:
            self.metrics.admission(time.perf_counter() - began)
            for job, _ in jobs:
                self._presenters.pop(job.id, None)
                self._admitted_at.pop(job.id, None)
            raise
        self.metrics.admission(time.perf_counter() - began)
        ids = [job.id for job, _ in jobs]
        for job_id in ids:
            # From now on a look at the queue that doesn't see the job means another process has it.
            self._admitted_at[job_id] = time.monotonic()
        self.queue.queued_here(ids)
        self.queue.wake()  # this process may start them at once
        self._count_jobs()
        try:
            for job, presenter in jobs:
                await presenter.queued(job)
        finally:
            await release_holds(self.db, ids, owner)
            self.queue.submitted()

    async def _submit_relax(self, jobs: Sequence[tuple[Job, JobPresenter]], admitting: Awaitable[float]) -> None:
        """Relax jobs wait for the batcher, which shows their results through the channel when their batch is
        done: the presenter only shows the status once."""
        began = time.perf_counter()
        owner = self.queue.owner
        try:
            await admitting
        finally:
            self.metrics.admission(time.perf_counter() - began)
        try:
            for job, presenter in jobs:
                await presenter.queued(job)
                await presenter.interrupted()  # nothing more to show until the batch goes, and then hours maybe
        finally:
            await release_holds(self.db, [job.id for job, _ in jobs], owner)
            self.relax.wake()

    async def relax_place(self, job_id: str) -> int | None:
        """Where a relax job waits for its batch (1 = next), None once it is sent."""
        return await relax_place(self.db, job_id)

    async def relax_turnaround(self) -> float | None:
        """The median of recent relax images' time from request to result, in seconds (None before 3)."""
        recent = await relax_turnaround_ms(self.db)
        if len(recent) < 3:
            return None
        return statistics.median(recent) / 1000

    async def cancel_delivery(self, job_id: str) -> bool:
        """A relax job whose batch is already sent: it is paid for, and won't be posted."""
        return await cancel_delivery(self.db, job_id)

    async def cancel(self, job_id: str) -> bool:
        """Cancel a waiting job (refunding it), whichever process admitted it; False if it already started or
        is unknown."""
        # Out of the hand-over check first: a look at the queue while the cancel is written would find the job
        # neither waiting nor running here and let its presenter go, as if another process had taken it.
        admitted = self._admitted_at.pop(job_id, None)
        if not await cancel_queued(self.db, job_id, self.clock()):
            if admitted is not None and job_id in self._presenters:
                self._admitted_at[job_id] = admitted
            return False
        self.metrics.job_finished("cancelled")
        presenter = self._presenters.pop(job_id, None)
        job = await get_job(self.db, job_id)
        if presenter is None and job is not None and self._presenter_for is not None:
            presenter = await self._presenter_for(job)
        if presenter is not None and job is not None:
            await presenter.cancelled(job)
        await self.queue.refresh()
        return True

    def position(self, job_id: str) -> int | None:
        return self.queue.position(job_id)

    def wait_estimate(self, job_id: str) -> float | None:
        """Seconds until a waiting job starts, from the queue's recent throughput (None before there is any)."""
        return self.queue.wait_estimate(job_id)

    async def pending_for_user(self, user_id: int) -> int:
        return await pending_requests(self.db, user_id)

    async def pending_in_lane(self, lane: int) -> int:
        return await pending_in_lane(self.db, lane)

    async def usual_seconds(self, model: str, size: str) -> float | None:
        """The median of recent successful generations for this model and size (None before there are 3)."""
        recent = await recent_latencies_ms(self.db, model=model, size=size, limit=20)
        if len(recent) < 3:
            return None
        return statistics.median(recent) / 1000

    async def stop(self, grace: float) -> int:
        """A graceful stop: claim nothing more, give running jobs `grace` seconds, then hand the rest back to
        the queue (another process, or the next start, takes them over at once). How many were handed back."""
        await self.relax.aclose()
        await self.queue.stop_claiming()
        handed_back = await self.queue.drain(grace)
        await self._close_presenters(handed_back)
        return handed_back

    async def aclose(self) -> None:
        await self.relax.aclose()
        handed_back = await self.queue.aclose()
        await self._close_presenters(handed_back)

    async def _close_presenters(self, handed_back: int) -> None:
        for _ in range(handed_back):
            self.metrics.job_finished("interrupted")
        for presenter in list(self._presenters.values()):
            await presenter.interrupted()
        self._presenters.clear()
        self._admitted_at.clear()
        # Results being posted get a moment to finish; the bot is closing, so not forever.
        if self._telling:
            await asyncio.wait(self._telling, timeout=5)

    async def wait_told(self) -> None:
        """Until every finished job's member has been told (tests)."""
        while self._telling:
            await asyncio.gather(*self._telling, return_exceptions=True)

    async def _refreshed(self, waiting: set[str], as_of: float) -> None:
        """After a look at the queue (taken at `as_of`, overlapping no claim of ours): a job this process admitted
        before then that is neither waiting nor running here was taken by another process (or cancelled there),
        which now shows it; this one lets go."""
        gone = [
            job_id
            for job_id, admitted in self._admitted_at.items()
            if admitted < as_of and job_id not in waiting and not self.queue.runs(job_id)
        ]
        for job_id in gone:
            self._admitted_at.pop(job_id, None)
            presenter = self._presenters.pop(job_id, None)
            if presenter is not None:
                await presenter.interrupted()
        self._count_jobs()

    def _count_jobs(self) -> None:
        counts = self.queue.counts
        self.metrics.set_job_counts({"queued": counts["queued"], "running": counts["running"]})
        self.metrics.set_queue_depth(counts["queued"])

    async def _claimed(self, job: Job) -> None:
        """Run a job this process claimed: with its own presenter if it was admitted here, else with one that
        posts through its channel."""
        with job_context(job_id=job.id, guild_id=job.guild_id, shard=self.shard_of(job.guild_id)):
            presenter = self._presenters.get(job.id)
            if presenter is None and self._presenter_for is not None:
                presenter = await self._presenter_for(job)
                if presenter is not None:
                    await presenter.queued(job)  # says what happened, on the old status message if there is one
            if presenter is None:
                log.warning("job %s: its channel %s is gone; refunding it", job.id, job.channel_id)
                await self._end(job, "failed", error_class="channel_gone")
                return
            await self._run(job, presenter)

    # --- running --------------------------------------------------------------------------------------
    async def _run(self, job: Job, presenter: JobPresenter) -> None:
        """The claim set the job running (and counted the attempt); generate, record and tell the member."""
        await presenter.started(job)
        try:
            prepared = await self.conversation.prepare(job)
            paid = await paid_generation(self.db, job.id) if job.attempts_started > 1 else None
            if paid is not None:
                # The provider answered before the process running it died: finish from the store, don't pay again.
                log.info("job %s: finishing from generation %s, already paid for", job.id, paid[0])
                await self.queue.release(job.id)
                result = await stored_result(self.db, self.images, *paid)
            else:
                context = request_context(
                    job,
                    on_image=lambda image: self._generated(job, presenter, image),
                    # Drafts stream only where someone will see them (the server may have turned them off).
                    on_preview=presenter.preview if job.request.previews else None,
                )
                result = await self.generation.generate(prepared.request, context)
        except GenerationError as exc:
            if await self._end(job, "failed", error_class=exc.error_class, error_detail=str(exc)):
                self._after_slot(presenter.failed(job, exc))
            return
        except asyncio.CancelledError:
            # Stopping: the job goes back to the queue (JobQueue.aclose) and runs again, here or elsewhere.
            raise
        except Exception:
            log.exception("job %s failed unexpectedly (reference %s)", job.id, job.id)
            if await self._end(job, "failed", error_class="internal"):
                self._after_slot(presenter.failed(job, None))
            return
        finally:
            self._presenters.pop(job.id, None)
            self._admitted_at.pop(job.id, None)
        job.image_key, job.generation_id = result.image_key, result.generation_id
        job.user_turn = prepared.user_turn
        job.model_turn = await self.conversation.model_turn_json(result)
        ended = await self._end(
            job,
            "done",
            image_key=job.image_key,
            generation_id=job.generation_id,
            user_turn=job.user_turn,
            model_turn=job.model_turn,
        )
        if not ended:
            return  # another process took the job over (our lease ran out) and posts it
        outcome = JobOutcome(
            result=result,
            dropped_turns=prepared.dropped_turns,
            character_images_left_out=prepared.character_images_left_out,
        )
        self._after_slot(presenter.finished(job, outcome))

    def _generated(self, job: Job, presenter: JobPresenter, image: GeneratedImage) -> None:
        """The provider has answered: the next job in line may start while this one stores and logs its
        image (finishing jobs would otherwise hold their slots queued behind one another's writes), and the
        presenter may start preparing the image for Discord."""
        self._after_slot(self.queue.release(job.id))
        presenter.prepare(image)

    def _after_slot(self, telling: Coroutine[Any, Any, None]) -> None:
        """Tell the member after the job gives its slot back: posting to Discord needs no provider capacity,
        so the next job in line starts at once instead of waiting for the upload."""
        task = asyncio.create_task(telling)
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    async def _end(self, job: Job, status: str, **fields: Any) -> bool:
        """Record how the job ended (a failure refunds it); False if this process no longer holds it."""
        job.status, job.finished_at = status, self.clock()
        for name, value in fields.items():
            setattr(job, name, value)
        ended = await finish(
            self.db, job.id, self.queue.owner, {"status": status, "finished_at": job.finished_at, **fields}
        )
        if ended:
            self.metrics.job_finished(status)
        else:
            log.warning("job %s was taken over by another process; it posts the result", job.id)
        return ended


def process_owner() -> str:
    """Who holds a lease: the host and process, so a process knows its own jobs and nobody else's."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
