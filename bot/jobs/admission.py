"""Admission: whether new jobs may be queued (limits, daily quotas, the monthly budget), and what they reserve.

A job reserves its quota by existing (storage counts queued, running and done jobs) and its estimated cost
in its row, until its real cost is in the usage log. Checking and reserving happen in one transaction that
holds the locks of the guilds and members it counts (every limit counts one or the other), so a burst can't
slip past a limit together, whichever processes it arrives at, while other guilds and members are admitted
meanwhile.

Requests that arrive while a transaction is at work are admitted together in the next one (group commit):
checked one after another in arrival order, each seeing what the ones before it reserved, and stored in one
round trip. A burst of requests then costs the event loop and the database a few statements in all instead
of seven or eight each, and one request alone goes straight through.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from bot.core.batches import BATCH_PRICE_FACTOR
from bot.core.service import GenerationService
from bot.core.types import ImageRequest
from bot.jobs.limits import QueueLimits
from storage.db import LOCK_GUILD, LOCK_MEMBER, LOCK_USER_INSTALLS, Database, IntegrityError
from storage.guild_settings import GuildSettings, spent_since
from storage.jobs import Job, insert_jobs
from storage.queue import ADMISSION_SETTINGS, AdmissionCounts, admission_counts, cancel_queued

#: Requests admitted in one transaction at most. One transaction at a time, taking all that waits, admits a
#: burst soonest (bench/bench_scale.py, 200 at once: p50 8-11 ms; 14-36 ms in transactions of 32 one after
#: another; 28-50 ms in two or four transactions side by side, which wait for the same guilds' locks).
BATCH_LIMIT = 128


class BudgetExceeded(Exception):
    """The guild's monthly budget can't cover the job's estimated cost."""

    def __init__(self, *, budget: float, left: float, needed: float, resets_at: float) -> None:
        super().__init__(f"budget of ${budget:.2f} would be exceeded")
        self.budget, self.left, self.needed, self.resets_at = budget, left, needed, resets_at


class LimitExceeded(Exception):
    """A quota refuses a new job. `limit` names it; `resets_at` is a unix time, or None (frees when a job ends)."""

    def __init__(self, limit: str, allowed: int, resets_at: float | None, *, needed: int = 1, used: int = 0) -> None:
        super().__init__(f"{limit} limit of {allowed} reached")
        self.limit = limit
        self.allowed = allowed
        self.resets_at = resets_at
        #: Images the refused request needed, and how many of the allowance are already used.
        self.needed = needed
        self.used = used


#: The queue limits a guild may set for itself (/settings): what admission applies besides its budget.
_LIMITS = tuple(name for name in ADMISSION_SETTINGS if name != "monthly_budget_usd")

#: Every refusal admission can give.
Refused = LimitExceeded | BudgetExceeded


def utc_day_start(now: float) -> float:
    day = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def month_bounds(now: float) -> tuple[float, float]:
    """The start of this UTC month and of the next."""
    start = dt.datetime.fromtimestamp(now, dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (
        start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    )
    return start.timestamp(), following.timestamp()


@dataclass(slots=True)
class _Request:
    """One request waiting for admission: its jobs, what counts it, and where its answer goes."""

    jobs: Sequence[Job]
    guild_id: int | None  # the guild whose limits apply (None for DMs and user installs)
    cost: float  # of one image
    member_daily: int | None
    held_by: str | None
    hold: float | None  # seconds
    answer: asyncio.Future[float]  # cancelled if the caller stops waiting

    @property
    def first(self) -> Job:
        return self.jobs[0]


class Admission:
    """Checks and reserves in one database transaction that holds the locks of the guilds and members counted,
    so two admissions (in this process or another) can't both take the last image of a quota or the last
    cents of a budget."""

    def __init__(
        self,
        *,
        db: Database,
        generation: GenerationService,
        limits: QueueLimits,
        clock: Callable[[], float],
    ) -> None:
        self.db = db
        self.generation = generation
        self.limits = limits
        self.clock = clock
        self._waiting: list[_Request] = []
        self._admitting: asyncio.Task[None] | None = None
        self._undoing: set[asyncio.Task[None]] = set()

    async def admit(
        self,
        jobs: Sequence[Job],
        *,
        member_daily: int | None = None,
        held_by: str | None = None,
        hold: float | None = None,
    ) -> float:
        """Check every limit for the jobs of one request (a grid's tiles: all of them or none) and store them
        queued, each reserving the estimated cost of its image, which is returned. Raises LimitExceeded or
        BudgetExceeded, with nothing stored, when over a limit.

        The jobs share their member, guild, speed and install. `member_daily` is the member's own daily limit
        from their roles, in place of the server's. A job made through the member's own install answers to no
        server: only the bot-wide limits and the daily cap on user installs apply. A relax job reserves the
        batch price. A job `held_by` a process is claimed by no other for `hold` seconds (storage/queue.py)."""
        first = jobs[0]
        request = _Request(
            jobs=jobs,
            guild_id=None if first.user_install else first.guild_id,
            cost=self.estimate_cost(first.request.model, first.request.size, 1, speed=first.speed),
            member_daily=member_daily,
            held_by=held_by,
            hold=hold,
            answer=asyncio.get_running_loop().create_future(),
        )
        self._waiting.append(request)
        if self._admitting is None or self._admitting.done():
            self._admitting = asyncio.create_task(self._admit_waiting(), name="admission")
        # A caller that stops waiting (its interaction or its process going away) cancels the answer: its
        # request is left out of the next transaction, or undone if one admitted it meanwhile.
        return await request.answer

    def _undo(self, request: _Request) -> None:
        """Cancel (refunding) the jobs of an admitted request whose caller stopped waiting: it believes nothing
        was queued."""

        async def cancel_jobs() -> None:
            for job in request.jobs:
                await cancel_queued(self.db, job.id, self.clock())

        task = asyncio.create_task(cancel_jobs(), name="admission-undo")
        self._undoing.add(task)
        task.add_done_callback(self._undoing.discard)

    async def _admit_waiting(self) -> None:
        """Admit what is waiting, all of it at a time (up to BATCH_LIMIT), until nothing is."""
        try:
            while self._waiting:
                batch = [r for r in self._waiting[:BATCH_LIMIT] if not r.answer.done()]
                del self._waiting[:BATCH_LIMIT]
                if batch:
                    await self._answer(batch)
        finally:
            self._admitting = None
            for request in self._waiting:  # left only if this task was cancelled: the process is stopping
                request.answer.cancel()

    async def _answer(self, batch: list[_Request]) -> None:
        try:
            outcomes: list[float | BaseException] = list(await self._admit_together(batch))
        except IntegrityError as error:
            if len(batch) > 1:
                # One request's bad row (a job stored twice) must not refuse the others: each on its own.
                for request in batch:
                    if not request.answer.done():  # its caller still waits
                        await self._answer([request])
                return
            outcomes = [error]
        except Exception as error:  # the database failed: nothing was stored
            outcomes = [error] * len(batch)
        except BaseException:
            for request in batch:
                request.answer.cancel()
            raise
        for request, outcome in zip(batch, outcomes, strict=True):
            if request.answer.done():  # its caller gave up meanwhile
                if not isinstance(outcome, BaseException):
                    self._undo(request)
                continue
            if isinstance(outcome, BaseException):
                request.answer.set_exception(outcome)
            else:
                request.answer.set_result(outcome)

    async def _admit_together(self, batch: list[_Request]) -> list[float | Refused]:
        """One transaction: lock what the batch counts, read the counts, check each request in turn, store the
        admitted ones. Each request's outcome: the cost of one image, or why it was refused."""
        guilds = {r.guild_id for r in batch if r.guild_id is not None}
        # Every guild and member counted is locked, in one order everywhere (storage/db.py's transaction): user
        # installs, guilds, members.
        keys = [(LOCK_USER_INSTALLS, 0)] if any(r.first.user_install for r in batch) else []
        keys += [(LOCK_GUILD, g) for g in guilds]
        keys += [(LOCK_MEMBER, r.first.user_id) for r in batch]
        now = self.clock()
        day_start = utc_day_start(now)
        month_start, month_end = month_bounds(now)
        outcomes: list[float | Refused] = []
        # The counts' statement has its time bounds written in (storage/queue.py): one plan serves every batch.
        async with self.db.transaction(locks=keys, generic_plans=True) as tx:
            counts = await admission_counts(
                tx,
                members={r.first.user_id for r in batch},
                guilds=guilds,
                day_start=day_start,
                month_start=month_start,
                user_installs=any(r.first.user_install for r in batch),
            )
            guild_limits = {g: self._with_overrides(counts.guild_settings.get(g)) for g in guilds}
            admitted: list[_Request] = []
            for request in batch:
                limits = guild_limits[request.guild_id] if request.guild_id is not None else self.limits
                if request.member_daily is not None:
                    limits = replace(limits, user_daily=request.member_daily)
                refused = self._refusal(request, limits, counts, day_start, month_end)
                if refused is not None:
                    outcomes.append(refused)
                    continue
                for job in request.jobs:
                    job.status, job.reserved_usd = "queued", request.cost
                counts.add(request.jobs, day_start)
                admitted.append(request)
                outcomes.append(request.cost)
            # One statement per holder (in practice one: this process), the rows in arrival order.
            holders: dict[tuple[str | None, float | None], list[Job]] = {}
            for request in admitted:
                holders.setdefault((request.held_by, request.hold), []).extend(request.jobs)
            stored_at = self.clock()
            for (held_by, hold), jobs in holders.items():
                held_until = stored_at + hold if hold is not None else None
                await insert_jobs(tx, jobs, held_by=held_by, held_until=held_until)
        return outcomes

    def _refusal(
        self,
        request: _Request,
        limits: QueueLimits,
        counts: AdmissionCounts,
        day_start: float,
        month_end: float,
    ) -> Refused | None:
        """Why the request may not be queued on top of `counts`, or None."""
        first, images, guild_id = request.first, len(request.jobs), request.guild_id
        resets_at = day_start + 86400
        if first.user_install:
            cap = self.limits.user_install_daily
            if cap == 0:
                return LimitExceeded("user_install_off", 0, None)
            used = counts.user_installs_today
            if used + images > cap:
                return LimitExceeded("user_install_daily", cap, resets_at, needed=images, used=used)
        if counts.pending.get((first.user_id, first.speed), 0) >= limits.user_pending:
            return LimitExceeded("user_pending", limits.user_pending, None)
        member_today = counts.member_today.get(first.user_id, 0)
        if limits.user_daily and member_today + images > limits.user_daily:
            return LimitExceeded("user_daily", limits.user_daily, resets_at, needed=images, used=member_today)
        if guild_id is None:
            return None
        guild_today = counts.guild_today.get(guild_id, 0)
        if limits.guild_daily and guild_today + images > limits.guild_daily:
            return LimitExceeded("guild_daily", limits.guild_daily, resets_at, needed=images, used=guild_today)
        budget = counts.guild_settings.get(guild_id, {}).get("monthly_budget_usd")
        if budget is not None:
            committed = counts.guild_spent.get(guild_id, 0.0) + counts.guild_reserved.get(guild_id, 0.0)
            cost = request.cost * images
            if committed + cost > budget + 1e-9:
                left = max(0.0, budget - committed)
                return BudgetExceeded(budget=budget, left=left, needed=cost, resets_at=month_end)
        return None

    def limits_for(self, settings: GuildSettings | None) -> QueueLimits:
        """The bot-wide limits with the guild's own (from /settings) in their place."""
        if settings is None:
            return self.limits
        return self._with_overrides({name: getattr(settings, name) for name in _LIMITS})

    def _with_overrides(self, values: Mapping[str, float | int | None] | None) -> QueueLimits:
        overrides = {name: int(value) for name in _LIMITS if values and (value := values.get(name)) is not None}
        return replace(self.limits, **overrides) if overrides else self.limits

    def estimate_cost(self, model: str | None, size: str, images: int, *, speed: str = "fast") -> float:
        """What `images` images at `size` should cost, from the price table (the image tokens; the prompt's
        few hundred input tokens add well under a cent); relax images at the batch price."""
        provider, factor = self.generation.providers[0], 1.0
        if speed == "relax":  # made by the provider that takes batches, at its batch price
            provider, factor = self.generation.batch_provider() or provider, BATCH_PRICE_FACTOR
        spec = self.generation.spec_for(provider, ImageRequest(prompt="", model=model, size=size))
        return spec.pricing.image_price(size) * images * factor

    async def spent_this_month(self, guild_id: int) -> float:
        start, _ = month_bounds(self.clock())
        return await spent_since(self.db, guild_id, start)
