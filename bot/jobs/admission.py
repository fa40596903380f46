"""Admission: whether a new job may be queued (limits, daily quotas, the monthly budget), and what it reserves.

A job reserves its quota by existing (storage counts queued, running and done jobs) and its estimated cost
here, until its real cost is in the usage log. Checking and reserving happen under one lock, so a burst
can't slip past a limit together.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

from bot.core.service import GenerationService
from bot.core.types import ImageRequest
from bot.jobs.limits import QueueLimits
from bot.jobs.queue import FairQueue
from storage.db import Database
from storage.guild_settings import GuildSettings, get_guild_settings, spent_since
from storage.jobs import JobRequest, count_reserved_since, count_user_installs_since


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


class Admission:
    def __init__(
        self,
        *,
        db: Database,
        generation: GenerationService,
        queue: FairQueue,
        limits: QueueLimits,
        clock: Callable[[], float],
    ) -> None:
        self.db = db
        self.generation = generation
        self.queue = queue
        self.limits = limits
        self.clock = clock
        self._lock = asyncio.Lock()
        #: job id -> (guild id, estimated cost) of admitted jobs whose cost is not logged yet: what a budget
        #: must count besides the month's spending, so concurrent jobs can't overshoot it together.
        self._reserved_cost: dict[str, tuple[int | None, float]] = {}

    @asynccontextmanager
    async def admitting(
        self,
        user_id: int,
        guild_id: int | None,
        request: JobRequest,
        *,
        images: int,
        member_daily: int | None = None,
        user_install: bool = False,
    ) -> AsyncIterator[float]:
        """Check every limit for `images` images of `request` and hold the admission lock while the caller
        stores the jobs (then `reserve`s each). Yields the estimated cost of one image. Raises LimitExceeded
        or BudgetExceeded, with nothing reserved, when over a limit.

        `member_daily` is the member's own daily limit from their roles, in place of the server's. A job made
        through the member's own install (`user_install`) answers to no server: only the bot-wide limits and
        the daily cap on user installs apply."""
        cost = self.estimate_cost(request.model, request.size, 1)
        async with self._lock:
            if user_install:
                await self._check_user_installs(images)
                guild_id = None
            await self._check(user_id, guild_id, images=images, cost=cost * images, member_daily=member_daily)
            yield cost

    async def _check_user_installs(self, images: int) -> None:
        cap = self.limits.user_install_daily
        if cap == 0:
            raise LimitExceeded("user_install_off", 0, None)
        day_start = utc_day_start(self.clock())
        used = await count_user_installs_since(self.db, day_start)
        if used + images > cap:
            raise LimitExceeded("user_install_daily", cap, day_start + 86400, needed=images, used=used)

    def reserve(self, job_id: str, guild_id: int | None, cost: float) -> None:
        self._reserved_cost[job_id] = (guild_id, cost)

    def settle(self, job_id: str) -> None:
        """The job's cost is logged (or it failed, or was cancelled): nothing is left to reserve for it."""
        self._reserved_cost.pop(job_id, None)

    async def _check(
        self, user_id: int, guild_id: int | None, *, images: int, cost: float, member_daily: int | None
    ) -> None:
        settings = await get_guild_settings(self.db, guild_id) if guild_id is not None else None
        limits = self.limits_for(settings)
        if member_daily is not None:
            limits = replace(limits, user_daily=member_daily)
        if guild_id is not None:
            # The guild's caps apply from this job on, in the queue as in admission.
            self.queue.lane_limits[guild_id] = limits
        if self.queue.pending_for_user(user_id) >= limits.user_pending:
            raise LimitExceeded("user_pending", limits.user_pending, None)
        day_start = utc_day_start(self.clock())
        resets_at = day_start + 86400
        if limits.user_daily:
            used = await count_reserved_since(self.db, day_start, user_id=user_id)
            if used + images > limits.user_daily:
                raise LimitExceeded("user_daily", limits.user_daily, resets_at, needed=images, used=used)
        if limits.guild_daily and guild_id is not None:
            used = await count_reserved_since(self.db, day_start, guild_id=guild_id)
            if used + images > limits.guild_daily:
                raise LimitExceeded("guild_daily", limits.guild_daily, resets_at, needed=images, used=used)
        if settings is not None and settings.monthly_budget_usd is not None:
            await self._check_budget(settings.guild_id, settings.monthly_budget_usd, cost)

    def limits_for(self, settings: GuildSettings | None) -> QueueLimits:
        """The bot-wide limits with the guild's own (from /settings) in their place."""
        if settings is None:
            return self.limits
        overrides = {
            name: value
            for name in ("guild_concurrency", "user_concurrency", "user_pending", "user_daily", "guild_daily")
            if (value := getattr(settings, name)) is not None
        }
        return replace(self.limits, **overrides)

    async def _check_budget(self, guild_id: int, budget: float, cost: float) -> None:
        reserved = sum(c for g, c in self._reserved_cost.values() if g == guild_id)
        committed = await self.spent_this_month(guild_id) + reserved
        if committed + cost > budget + 1e-9:
            _, resets_at = month_bounds(self.clock())
            raise BudgetExceeded(budget=budget, left=max(0.0, budget - committed), needed=cost, resets_at=resets_at)

    def estimate_cost(self, model: str | None, size: str, images: int) -> float:
        """What `images` images at `size` should cost, from the price table (the image tokens; the prompt's
        few hundred input tokens add well under a cent)."""
        spec = self.generation.spec_for(self.generation.providers[0], ImageRequest(prompt="", model=model, size=size))
        return spec.pricing.image_price(size) * images

    async def spent_this_month(self, guild_id: int) -> float:
        start, _ = month_bounds(self.clock())
        return await spent_since(self.db, guild_id, start)
