"""A fair queue: which job runs next, within the concurrency caps.

Guilds take turns (round-robin), so one busy guild can't starve the others; within a guild, jobs run
first come, first served, skipping a member who already has as many jobs running as they may. Nothing
here knows about Discord or the image API: a job is a coroutine function and a few ids.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bot.jobs.limits import QueueLimits

log = logging.getLogger(__name__)

#: How many recent jobs the wait estimate averages: enough to smooth out one slow 4K image, few enough to
#: follow the service when it speeds up or slows down.
THROUGHPUT_WINDOW = 20
#: No estimate before this many jobs have run: a guess from one job would be a promise we can't keep.
THROUGHPUT_MIN_JOBS = 3


@dataclass(eq=False)
class Ticket:
    job_id: str
    #: The guild's id; a DM gets its own lane keyed by the member, so DMs are served fairly too.
    lane: int
    user_id: int
    run: Callable[[], Awaitable[None]]
    #: Jobs of one request (the four tiles of a grid) share a group: a member's caps count requests,
    #: so a grid's tiles run side by side; the guild and global caps still count every job.
    group: str = ""
    enqueued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    task: asyncio.Task[None] | None = None


class FairQueue:
    def __init__(self, limits: QueueLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        #: When jobs start and give their slot back (the wait estimate's clock).
        self._clock = clock
        # lane -> waiting tickets in arrival order.
        self._waiting: dict[int, deque[Ticket]] = {}
        # lane -> when it was last served (a counter). The least recently served lane goes next, so a guild
        # that just arrived, or has waited longest, is served before one that was just served.
        self._last_served: dict[int, int] = {}
        self._serve_count = 0
        self._running: dict[str, Ticket] = {}
        # Jobs that gave their slot back (their provider call is over) but are still storing and logging:
        # they hold no capacity, yet they are not done, so a member's or guild's pending work includes them.
        self._finishing: dict[str, Ticket] = {}
        self._running_by_lane: dict[int, int] = {}
        # user -> group -> running jobs of that group
        self._running_by_user: dict[int, dict[str, int]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        #: A guild's own caps (its /settings), where they differ from `limits`; keyed by lane.
        self.lane_limits: dict[int, QueueLimits] = {}
        # Seconds each recent job held its slot (started to released): the queue's throughput, in memory.
        self._held: deque[float] = deque(maxlen=THROUGHPUT_WINDOW)

    # --- what callers ask -------------------------------------------------------------------------
    def pending_for_user(self, user_id: int) -> int:
        """Requests (groups) the member has waiting, running or finishing (storing and logging)."""
        groups = {t.group for lane in self._waiting.values() for t in lane if t.user_id == user_id}
        groups |= {t.group for t in self._finishing.values() if t.user_id == user_id}
        return len(groups | set(self._running_by_user.get(user_id, {})))

    def pending_in_lane(self, lane: int) -> int:
        """Jobs of this guild waiting, running or finishing."""
        finishing = sum(1 for t in self._finishing.values() if t.lane == lane)
        return len(self._waiting.get(lane, ())) + self._running_by_lane.get(lane, 0) + finishing

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def waiting_count(self) -> int:
        return sum(len(lane) for lane in self._waiting.values())

    def position(self, job_id: str) -> int | None:
        """1-based place in line (the order in which waiting jobs would start), None if not waiting."""
        for place, ticket in enumerate(self._dispatch_order(), start=1):
            if ticket.job_id == job_id:
                return place
        return None

    def wait_estimate(self, job_id: str) -> float | None:
        """Seconds until a waiting job starts, from the recent throughput: the running jobs free a slot every
        (mean slot time / running jobs) seconds, and the jobs ahead of this one take the next ones. None if
        the job isn't waiting, or before THROUGHPUT_MIN_JOBS jobs have run."""
        position = self.position(job_id)
        if position is None or len(self._held) < THROUGHPUT_MIN_JOBS:
            return None
        slots = max(1, len(self._running))
        return position * statistics.fmean(self._held) / slots

    # --- changes ----------------------------------------------------------------------------------
    def submit(self, ticket: Ticket) -> None:
        ticket.group = ticket.group or ticket.job_id
        self._waiting.setdefault(ticket.lane, deque()).append(ticket)
        self._idle.clear()
        self._dispatch()

    def cancel(self, job_id: str) -> bool:
        """Remove a waiting job; a running one can't be taken back (the provider is already paid)."""
        for lane, tickets in self._waiting.items():
            for ticket in tickets:
                if ticket.job_id == job_id:
                    tickets.remove(ticket)
                    if not tickets:
                        del self._waiting[lane]
                    self._check_idle()
                    return True
        return False

    def release(self, job_id: str) -> None:
        """Give a running job's slot to the next in line before the job returns: its provider call is over
        and what is left (storing the image, logging) needs no provider capacity. The job still counts as
        pending until it returns. A no-op for a job that isn't running."""
        ticket = self._running.pop(job_id, None)
        if ticket is None:
            return
        if ticket.started_at is not None:
            self._held.append(self._clock() - ticket.started_at)
        self._finishing[job_id] = ticket
        self._decrement(self._running_by_lane, ticket.lane)
        groups = self._running_by_user[ticket.user_id]
        self._decrement(groups, ticket.group)
        if not groups:
            del self._running_by_user[ticket.user_id]
        self._dispatch()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def aclose(self) -> None:
        """Cancel running jobs and forget waiting ones (they stay queued in the database for the next start)."""
        self._waiting.clear()
        tickets = [*self._running.values(), *self._finishing.values()]
        tasks = [t.task for t in tickets if t.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- scheduling -------------------------------------------------------------------------------
    def _may_start(self, ticket: Ticket) -> bool:
        limits = self.lane_limits.get(ticket.lane, self.limits)
        if self._running_by_lane.get(ticket.lane, 0) >= limits.guild_concurrency:
            return False
        running_groups = self._running_by_user.get(ticket.user_id, {})
        return ticket.group in running_groups or len(running_groups) < limits.user_concurrency

    def _lanes_in_turn(self) -> list[int]:
        return sorted(self._waiting, key=lambda lane: self._last_served.get(lane, -1))

    def _pick(self) -> Ticket | None:
        """The next ticket to start now: from the least recently served lane that may start one."""
        if len(self._running) >= self.limits.global_concurrency:
            return None
        for lane in self._lanes_in_turn():
            tickets = self._waiting[lane]
            for ticket in tickets:
                if self._may_start(ticket):
                    tickets.remove(ticket)
                    if not tickets:
                        del self._waiting[lane]
                    self._serve_count += 1
                    self._last_served[lane] = self._serve_count
                    return ticket
        return None

    def _dispatch_order(self) -> list[Ticket]:
        """Waiting tickets in the order they would start if slots freed one at a time: lanes in turn."""
        lanes = [list(self._waiting[lane]) for lane in self._lanes_in_turn()]
        order: list[Ticket] = []
        depth = 0
        while any(depth < len(lane) for lane in lanes):
            order.extend(lane[depth] for lane in lanes if depth < len(lane))
            depth += 1
        return order

    def _dispatch(self) -> None:
        while (ticket := self._pick()) is not None:
            self._running[ticket.job_id] = ticket
            self._running_by_lane[ticket.lane] = self._running_by_lane.get(ticket.lane, 0) + 1
            groups = self._running_by_user.setdefault(ticket.user_id, {})
            groups[ticket.group] = groups.get(ticket.group, 0) + 1
            ticket.started_at = self._clock()
            ticket.task = asyncio.create_task(self._run(ticket), name=f"job-{ticket.job_id}")

    async def _run(self, ticket: Ticket) -> None:
        try:
            await ticket.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The job's own code reports failures to the member; this is the last line of defence.
            log.exception("job %s raised", ticket.job_id)
        finally:
            # Every path, exceptions and cancellation included, gives the slot back (unless it did already).
            self.release(ticket.job_id)
            del self._finishing[ticket.job_id]
            self._check_idle()

    @staticmethod
    def _decrement(counts: dict[Any, int], key: Any) -> None:
        counts[key] -= 1
        if counts[key] == 0:
            del counts[key]

    def _check_idle(self) -> None:
        if not self._running and not self._finishing and not self._waiting:
            self._idle.set()
