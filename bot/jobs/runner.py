"""Running jobs: admitted jobs go to the fair queue, run when a slot frees, and are finished or refunded.

The Discord side hands in a `Job` and a `JobPresenter` (which keeps the member informed); this module
does the rest and knows nothing of Discord. After a restart, `resume` queues again what was interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bot.core.errors import GenerationError
from bot.core.service import GenerationService
from bot.core.types import GeneratedImage, GenerationResult, Preview, RequestContext
from bot.jobs.admission import Admission
from bot.jobs.conversation import Conversation
from bot.jobs.limits import ContextBudget, QueueLimits
from bot.jobs.queue import FairQueue, Ticket
from storage.db import Database
from storage.generations import recent_latencies_ms
from storage.images import ImageStore
from storage.jobs import Job, get_job, insert_job, unfinished_jobs, update_job

log = logging.getLogger(__name__)


@dataclass
class JobOutcome:
    result: GenerationResult
    #: Earlier turns left out to stay within the context budget.
    dropped_turns: int = 0
    #: A character's reference images left out to stay within the model's image limit.
    character_images_left_out: int = 0


class JobPresenter(Protocol):
    """Keeps the member informed. Every method may be called from the queue's tasks; none may raise."""

    async def queued(self, job: Job) -> None: ...
    async def started(self, job: Job) -> None: ...
    def preview(self, preview: Preview) -> None:
        """The model's latest thought or draft, while it works (called between stream reads: only hand off)."""

    def prepare(self, image: GeneratedImage) -> None:
        """The image has arrived: start any slow work on it while the job stores and logs it."""

    async def finished(self, job: Job, outcome: JobOutcome) -> None: ...
    async def failed(self, job: Job, error: GenerationError | None) -> None: ...
    async def cancelled(self, job: Job) -> None: ...
    async def interrupted(self) -> None:
        """The bot is shutting down; the job is picked up again by the next start."""


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
    ) -> None:
        self.db = db
        self.generation = generation
        self.clock = clock
        self.queue = FairQueue(limits)
        self.admission = Admission(db=db, generation=generation, queue=self.queue, limits=limits, clock=clock)
        self.conversation = Conversation(
            db=db, images=images, budget=budget or ContextBudget(), default_model=generation.providers[0].config.model
        )
        self._presenters: dict[str, JobPresenter] = {}
        #: Presenters telling members about finished jobs (see _after_slot).
        self._telling: set[asyncio.Task[None]] = set()

    # --- admission ----------------------------------------------------------------------------------
    async def submit(self, job: Job, presenter: JobPresenter, *, member_daily: int | None = None) -> None:
        """Reserve quota, persist and queue the job; raises LimitExceeded or BudgetExceeded (nothing reserved).
        `member_daily` is the member's daily limit from their roles, if they have one."""
        await self.submit_group([(job, presenter)], member_daily=member_daily)

    async def submit_group(self, jobs: Sequence[tuple[Job, JobPresenter]], *, member_daily: int | None = None) -> None:
        """Admit the jobs of one request (a grid's tiles) together: all of them or none."""
        first = jobs[0][0]
        admitting = self.admission.admitting(
            first.user_id,
            first.guild_id,
            first.request,
            images=len(jobs),
            member_daily=member_daily,
            user_install=first.user_install,
        )
        async with admitting as cost:
            for job, _ in jobs:
                job.status = "queued"
                await insert_job(self.db, job)
                self.admission.reserve(job.id, job.guild_id, cost)
            for job, presenter in jobs:
                self._enqueue(job, presenter)
        for job, presenter in jobs:
            await presenter.queued(job)

    def _enqueue(self, job: Job, presenter: JobPresenter) -> None:
        self._presenters[job.id] = presenter
        # A server's jobs share its lane; a member's own (DMs, user installs) get one keyed by the member.
        lane = job.guild_id if job.guild_id is not None and not job.user_install else -job.user_id
        ticket = Ticket(
            job_id=job.id,
            lane=lane,
            user_id=job.user_id,
            run=lambda: self._run(job, presenter),
            group=job.grid_id or job.id,
        )
        self.queue.submit(ticket)

    async def interrupted(self) -> list[Job]:
        """What the last run left queued or running. Read before this run admits anything of its own."""
        return await unfinished_jobs(self.db)

    async def resume(
        self, jobs: list[Job], presenter_for: Callable[[Job], Awaitable[JobPresenter | None]]
    ) -> list[Job]:
        """Queue again what a restart interrupted (`jobs`, from `interrupted()`). Their quota is already
        reserved, so no limit applies. A job whose channel is gone can't be shown: it fails (and so is
        refunded)."""
        resumed = []
        for job in jobs:
            presenter = await presenter_for(job)
            if presenter is None:
                log.warning("job %s: its channel %s is gone; refunding it", job.id, job.channel_id)
                await self._fail(job, "channel_gone", None)
                continue
            if job.status == "running":
                job.status = "queued"
                await update_job(self.db, job.id, status="queued")
            cost = self.admission.estimate_cost(job.request.model, job.request.size, 1)
            self.admission.reserve(job.id, job.guild_id, cost)
            self._enqueue(job, presenter)
            await presenter.queued(job)
            resumed.append(job)
        return resumed

    async def cancel(self, job_id: str) -> bool:
        """Cancel a waiting job (refunding it); False if it already started or is unknown."""
        if not self.queue.cancel(job_id):
            return False
        self.admission.settle(job_id)
        await update_job(self.db, job_id, status="cancelled", finished_at=self.clock())
        presenter = self._presenters.pop(job_id, None)
        job = await get_job(self.db, job_id)
        if presenter is not None and job is not None:
            await presenter.cancelled(job)
        return True

    def position(self, job_id: str) -> int | None:
        return self.queue.position(job_id)

    def wait_estimate(self, job_id: str) -> float | None:
        """Seconds until a waiting job starts, from the queue's recent throughput (None before there is any)."""
        return self.queue.wait_estimate(job_id)

    async def usual_seconds(self, model: str, size: str) -> float | None:
        """The median of recent successful generations for this model and size (None before there are 3)."""
        recent = await recent_latencies_ms(self.db, model=model, size=size, limit=20)
        if len(recent) < 3:
            return None
        return statistics.median(recent) / 1000

    async def aclose(self) -> None:
        for presenter in list(self._presenters.values()):
            await presenter.interrupted()
        await self.queue.aclose()
        # Results being posted get a moment to finish; the bot is closing, so not forever.
        if self._telling:
            await asyncio.wait(self._telling, timeout=5)

    async def wait_told(self) -> None:
        """Until every finished job's member has been told (tests)."""
        while self._telling:
            await asyncio.gather(*self._telling, return_exceptions=True)

    # --- running --------------------------------------------------------------------------------------
    async def _run(self, job: Job, presenter: JobPresenter) -> None:
        started = self.clock()
        job.status, job.started_at = "running", started
        job.queue_ms = (started - job.created_at) * 1000 if job.attempts_started == 0 else job.queue_ms
        job.attempts_started += 1
        await update_job(
            self.db,
            job.id,
            status="running",
            started_at=started,
            queue_ms=job.queue_ms,
            attempts_started=job.attempts_started,
        )
        await presenter.started(job)
        try:
            prepared = await self.conversation.prepare(job)
            context = RequestContext(
                command=job.kind,
                guild_id=job.guild_id,
                channel_id=job.channel_id,
                user_id=job.user_id,
                queue_ms=job.queue_ms,
                job_id=job.id,
                defer_ms=job.defer_ms,
                on_image=lambda image: self._generated(job, presenter, image),
                # Drafts stream only where someone will see them (the server may have turned them off).
                on_preview=presenter.preview if job.request.previews else None,
            )
            result = await self.generation.generate(prepared.request, context)
        except GenerationError as exc:
            self.admission.settle(job.id)  # its row (cost 0) is logged: nothing left to reserve
            await self._fail(job, exc.error_class, str(exc))
            self._after_slot(presenter.failed(job, exc))
            return
        except asyncio.CancelledError:
            # Shutting down: the job stays 'running' in the database and the next start runs it again.
            raise
        except Exception:
            self.admission.settle(job.id)
            log.exception("job %s failed unexpectedly (reference %s)", job.id, job.id)
            await self._fail(job, "internal", None)
            self._after_slot(presenter.failed(job, None))
            return
        finally:
            self._presenters.pop(job.id, None)
        self.admission.settle(job.id)  # its real cost is in the log now
        job.status, job.finished_at = "done", self.clock()
        job.image_key, job.generation_id = result.image_key, result.generation_id
        job.user_turn = prepared.user_turn
        job.model_turn = await self.conversation.model_turn_json(result)
        await update_job(
            self.db,
            job.id,
            status="done",
            finished_at=job.finished_at,
            image_key=job.image_key,
            generation_id=job.generation_id,
            user_turn=job.user_turn,
            model_turn=job.model_turn,
        )
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
        self.queue.release(job.id)
        presenter.prepare(image)

    def _after_slot(self, telling: Coroutine[Any, Any, None]) -> None:
        """Tell the member after the job gives its slot back: posting to Discord needs no provider capacity,
        so the next job in line starts at once instead of waiting for the upload."""
        task = asyncio.create_task(telling)
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    async def _fail(self, job: Job, error_class: str, detail: str | None) -> None:
        job.status, job.error_class, job.error_detail = "failed", error_class, detail
        job.finished_at = self.clock()
        await update_job(
            self.db, job.id, status="failed", error_class=error_class, error_detail=detail, finished_at=job.finished_at
        )
