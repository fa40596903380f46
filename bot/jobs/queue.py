"""This process's share of the job queue, which lives in the database (storage/queue.py).

The queue claims jobs whenever it has a free slot (guilds in turn, FIFO within a guild, within every cap,
whichever process admitted them), runs them as tasks, renews their leases while they run, and gives a slot
back as soon as a job's provider call is over. It wakes when this process queues a job or frees a slot, when
another process says so (PostgreSQL's NOTIFY), and every `poll` seconds in any case. Nothing here knows
about Discord or the image API: a claimed job is handed to `run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable

from bot.jobs.limits import QueueLimits
from storage.db import Database
from storage.jobs import Job
from storage.queue import (
    LEASE_SECONDS,
    Caps,
    claim_jobs,
    count_by_state,
    give_back_slot,
    renew_leases,
    requeue_all_running,
    requeue_owned,
    retire_claimer,
    waiting_order,
)

log = logging.getLogger(__name__)

#: How many recent jobs the wait estimate averages: enough to smooth out one slow 4K image, few enough to
#: follow the service when it speeds up or slows down.
THROUGHPUT_WINDOW = 20
#: No estimate before this many jobs have run: a guess from one job would be a promise we can't keep.
THROUGHPUT_MIN_JOBS = 3
#: Seconds between claims when nothing wakes the queue (another process's job could have freed a slot).
POLL_SECONDS = 1.0


class JobQueue:
    def __init__(
        self,
        db: Database,
        limits: QueueLimits,
        *,
        owner: str,
        run: Callable[[Job], Awaitable[None]],
        clock: Callable[[], float] = time.time,
        poll: float = POLL_SECONDS,
        lease: float = LEASE_SECONDS,
        on_claim: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self.db = db
        #: Told how long each claim transaction took (the runner's metrics).
        self._on_claim = on_claim
        self.limits = limits
        self.owner = owner
        self._run_job = run
        self._clock = clock
        self._poll = poll
        #: Seconds a claimed job's lease lasts: how long a dead process's jobs wait before another takes them.
        self.lease = lease
        self._wake = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: Running here and holding a provider slot (their call is not over).
        self._holding: set[str] = set()
        self._claiming = False
        self._loops: list[asyncio.Task[None]] = []
        #: The queued jobs in start order, as of the last look (all processes): positions in line.
        self._order: list[str] = []
        self._counts = {"queued": 0, "running": 0, "holding": 0}
        self._changed = asyncio.Event()
        #: Seconds each recent job held its slot here (claimed to provider answered): the wait estimate.
        self._held: deque[float] = deque(maxlen=THROUGHPUT_WINDOW)
        self._claimed_at: dict[str, float] = {}
        #: Called after each look at the queue with the ids still waiting (the runner lets go of jobs that
        #: another process took).
        self.on_refresh: Callable[[set[str], float], Awaitable[None]] | None = None
        #: Claims begun and claims done: a look at the queue that overlapped a claim of ours can't tell a job
        #: another process took from one this process is taking (committed, its task not made yet).
        self._claims_begun = 0
        self._claims_done = 0
        self._notify_wanted = False
        self._notifying: asyncio.Task[None] | None = None
        self._closed = False
        #: Held by a claim, and by retiring, so that no claim under way says this process claims after it
        #: retired.
        self._claim_lock = asyncio.Lock()

    # --- life -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start claiming. The same process starting again takes back at once what it left running."""
        if self.db.dialect == "sqlite":
            # SQLite serves one process: whatever a previous run left running is this process's to take back.
            taken_back = await requeue_all_running(self.db)
        else:
            taken_back = await requeue_owned(self.db, self.owner)
        if taken_back:
            log.info("took back %d jobs this process left running", taken_back)
        self._claiming = True
        await self.db.listen(self.wake)
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="job-claims"),
            asyncio.create_task(self._lease_loop(), name="job-leases"),
        ]

    def wake(self) -> None:
        self._wake.set()

    async def stop_claiming(self) -> None:
        self._claiming = False
        self._wake.set()
        await self._retire()

    async def _retire(self) -> None:
        """Count no more in how claims share jobs out, once a claim under way is done (it says this process
        claims): the other processes take them all from now on, and are told at once."""
        async with self._claim_lock:
            with contextlib.suppress(Exception):  # the database may already be gone on a failed start
                await retire_claimer(self.db, self.owner, self._clock())
                await self.db.notify()

    async def drain(self, grace: float) -> int:
        """Stop claiming, give running jobs `grace` seconds to finish, then cancel the rest and give their jobs
        back to the queue (another process, or the next start, takes them over at once). How many were given
        back."""
        await self.stop_claiming()
        running = list(self._tasks.values())
        if running:
            await asyncio.wait(running, timeout=grace)
        return await self.aclose()

    async def aclose(self) -> int:
        self._claiming = False
        self._closed = True
        loops = [*self._loops, *([self._notifying] if self._notifying is not None else [])]
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        self._notifying = None
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._retire()
        given_back = 0
        with contextlib.suppress(Exception):  # the database may already be gone on a failed start
            given_back = await requeue_owned(self.db, self.owner)
            if given_back:
                await self.db.notify()  # the other processes take them over now, not at their next look
        return given_back

    # --- what callers ask -----------------------------------------------------------------------------
    @property
    def running_here(self) -> int:
        return len(self._tasks)

    def runs(self, job_id: str) -> bool:
        """Whether the job is running in this process."""
        return job_id in self._tasks

    @property
    def counts(self) -> dict[str, int]:
        """Queued, running and slot-holding jobs in every process, as of the last look."""
        return dict(self._counts)

    def queued_here(self, job_ids: list[str]) -> None:
        """Jobs this process just queued: in line (at the end) until the next look says where exactly."""
        self._order.extend(job_id for job_id in job_ids if job_id not in self._order)
        self._counts["queued"] += len(job_ids)

    @property
    def running_count(self) -> int:
        """Jobs running, in every process, as of the last look."""
        return self._counts["running"]

    @property
    def waiting_count(self) -> int:
        return self._counts["queued"]

    def position(self, job_id: str) -> int | None:
        """1-based place in line (the order in which waiting jobs would start), None if not waiting."""
        try:
            return self._order.index(job_id) + 1
        except ValueError:
            return None

    def wait_estimate(self, job_id: str) -> float | None:
        """Seconds until a waiting job starts, from the recent throughput: the running jobs free a slot every
        (mean slot time / running jobs) seconds, and the jobs ahead of this one take the next ones. None if the
        job isn't waiting, or before THROUGHPUT_MIN_JOBS jobs have run here."""
        position = self.position(job_id)
        if position is None or len(self._held) < THROUGHPUT_MIN_JOBS:
            return None
        slots = max(1, self._counts["holding"])
        return position * statistics.fmean(self._held) / slots

    async def refresh(self) -> None:
        """Look at the queue again (positions, counts)."""
        as_of, begun, done = time.monotonic(), self._claims_begun, self._claims_done
        self._order = await waiting_order(self.db)
        self._counts = await count_by_state(self.db)
        self._changed.set()
        no_claim_overlapped = begun == done == self._claims_begun
        if self.on_refresh is not None and no_claim_overlapped:
            await self.on_refresh(set(self._order), as_of)

    async def wait_idle(self, timeout: float = 30) -> None:  # noqa: ASYNC109
        """Until no job is queued or running anywhere (tests)."""
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                await self.refresh()
                if not self._counts["queued"] and not self._counts["running"] and not self._tasks:
                    return
                await self._wait(self._changed)

    # --- changes --------------------------------------------------------------------------------------
    def submitted(self) -> None:
        """This process queued jobs: claim now, and tell the other processes."""
        self._wake.set()
        self._tell_others()

    def _tell_others(self) -> None:
        """NOTIFY the other processes soon: changes made meanwhile (a burst of admissions, of slots given back)
        share one notification, sent after all of them."""
        self._notify_wanted = True
        if self._closed:
            return  # the database is going away; the others look every `poll` seconds anyway
        if self._notifying is None or self._notifying.done():
            self._notifying = asyncio.create_task(self._notify(), name="job-notify")

    async def _notify(self) -> None:
        try:
            while self._notify_wanted:
                self._notify_wanted = False  # what is changed from here on needs the next notification
                try:
                    await self.db.notify()
                except Exception:  # the others also look every `poll` seconds
                    log.warning("telling the other processes about the queue failed", exc_info=True)
        finally:
            self._notifying = None

    async def release(self, job_id: str) -> None:
        """Give a running job's slot back before the job returns: its provider call is over and what is left
        (storing the image, posting) needs no provider capacity."""
        if job_id not in self._holding:
            return
        self._holding.discard(job_id)
        if (claimed := self._claimed_at.pop(job_id, None)) is not None:
            self._held.append(self._clock() - claimed)
        await give_back_slot(self.db, job_id)
        self._wake.set()
        self._tell_others()

    # --- the loops ------------------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                if self._claiming:
                    await self._claim()
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("claiming jobs failed; trying again")
            await self._wait(self._wake)

    async def _claim(self) -> None:
        caps = Caps(
            global_concurrency=self.limits.global_concurrency,
            guild_concurrency=self.limits.guild_concurrency,
            user_concurrency=self.limits.user_concurrency,
        )
        want = self.limits.global_concurrency - len(self._holding)
        self._claims_begun += 1
        try:
            async with self._claim_lock:
                if not self._claiming:  # it retired meanwhile
                    return
                began = time.perf_counter()
                claimed = await claim_jobs(
                    self.db,
                    owner=self.owner,
                    want=want,
                    caps=caps,
                    now=self._clock(),
                    lease=self.lease,
                )
                self._on_claim(time.perf_counter() - began)
            for job in claimed:
                self._holding.add(job.id)
                self._claimed_at[job.id] = self._clock()
                self._tasks[job.id] = asyncio.create_task(self._run(job), name=f"job-{job.id}")
            if claimed:
                # Out of line at once: a status shown before the next look must not count them ahead of others.
                taken = {job.id for job in claimed}
                self._order = [job_id for job_id in self._order if job_id not in taken]
        finally:
            self._claims_done += 1

    async def _run(self, job: Job) -> None:
        try:
            await self._run_job(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The job's own code reports failures to the member; this is the last line of defence.
            log.exception("job %s raised", job.id)
        finally:
            self._tasks.pop(job.id, None)
            if job.id in self._holding:
                self._holding.discard(job.id)
                self._claimed_at.pop(job.id, None)
            # A slot given back, or one job fewer in hand here: claims may take more (storage/queue.py).
            self._wake.set()
            self._changed.set()

    async def _wait(self, event: asyncio.Event) -> None:
        """Until `event` is set or `poll` seconds pass. (Not asyncio.wait_for: on Python 3.11 it can swallow the
        cancellation that stops the loop when the event is set at the same moment.)"""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._poll):
                await event.wait()

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            if self._tasks:
                try:
                    await renew_leases(self.db, self.owner, self._clock(), self.lease)
                except Exception:
                    log.exception("renewing job leases failed; trying again")
