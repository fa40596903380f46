"""Admission: whether a new job may be queued (limits, daily quotas, the monthly budget), and what it reserves.

A job reserves its quota by existing (storage counts queued, running and done jobs) and its estimated cost
in its row, until its real cost is in the usage log. Checking and reserving happen in one transaction under
the jobs lock, so a burst can't slip past a limit together, whichever processes it arrives at.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

from bot.core.service import GenerationService
from bot.core.types import ImageRequest
from bot.jobs.limits import QueueLimits
from storage.db import LOCK_JOBS, Connection, Database
from storage.guild_settings import GuildSettings, get_guild_settings, spent_since
from storage.jobs import JobRequest, count_reserved_since, count_user_installs_since
from storage.queue import pending_requests, reserved_usd


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
    """Checks and reserves in one database transaction that holds the jobs lock, so two admissions (in this
    process or another) can't both take the last image of a quota or the last cents of a budget."""

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
    ) -> AsyncIterator[tuple[Connection, float]]:
        """Check every limit for `images` images of `request`, inside a transaction in which the caller stores
        the jobs (with the cost as their reservation). Yields the transaction and the estimated cost of one
        image. Raises LimitExceeded or BudgetExceeded, with nothing stored, when over a limit.

        `member_daily` is the member's own daily limit from their roles, in place of the server's. A job made
        through the member's own install (`user_install`) answers to no server: only the bot-wide limits and
        the daily cap on user installs apply."""
        cost = self.estimate_cost(request.model, request.size, 1)
        async with self.db.transaction() as tx:
            await self.db.lock(tx, LOCK_JOBS)
            if user_install:
                await self._check_user_installs(tx, images)
                guild_id = None
            await self._check(tx, user_id, guild_id, images=images, cost=cost * images, member_daily=member_daily)
            yield tx, cost

    async def _check_user_installs(self, tx: Connection, images: int) -> None:
        cap = self.limits.user_install_daily
        if cap == 0:
            raise LimitExceeded("user_install_off", 0, None)
        day_start = utc_day_start(self.clock())
        used = await count_user_installs_since(tx, day_start)
        if used + images > cap:
            raise LimitExceeded("user_install_daily", cap, day_start + 86400, needed=images, used=used)

    async def _check(
        self, tx: Connection, user_id: int, guild_id: int | None, *, images: int, cost: float, member_daily: int | None
    ) -> None:
        settings = await get_guild_settings(tx, guild_id) if guild_id is not None else None
        limits = self.limits_for(settings)
        if member_daily is not None:
            limits = replace(limits, user_daily=member_daily)
        if await pending_requests(tx, user_id) >= limits.user_pending:
            raise LimitExceeded("user_pending", limits.user_pending, None)
        day_start = utc_day_start(self.clock())
        resets_at = day_start + 86400
        if limits.user_daily:
            used = await count_reserved_since(tx, day_start, user_id=user_id)
            if used + images > limits.user_daily:
                raise LimitExceeded("user_daily", limits.user_daily, resets_at, needed=images, used=used)
        if limits.guild_daily and guild_id is not None:
            used = await count_reserved_since(tx, day_start, guild_id=guild_id)
            if used + images > limits.guild_daily:
                raise LimitExceeded("guild_daily", limits.guild_daily, resets_at, needed=images, used=used)
        if settings is not None and settings.monthly_budget_usd is not None:
            await self._check_budget(tx, settings.guild_id, settings.monthly_budget_usd, cost)

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

    async def _check_budget(self, tx: Connection, guild_id: int, budget: float, cost: float) -> None:
        start, resets_at = month_bounds(self.clock())
        committed = await spent_since(tx, guild_id, start) + await reserved_usd(tx, guild_id)
        if committed + cost > budget + 1e-9:
            raise BudgetExceeded(budget=budget, left=max(0.0, budget - committed), needed=cost, resets_at=resets_at)

    def estimate_cost(self, model: str | None, size: str, images: int) -> float:
        """What `images` images at `size` should cost, from the price table (the image tokens; the prompt's
        few hundred input tokens add well under a cent)."""
        spec = self.generation.spec_for(self.generation.providers[0], ImageRequest(prompt="", model=model, size=size))
        return spec.pricing.image_price(size) * images

    async def spent_this_month(self, guild_id: int) -> float:
        start, _ = month_bounds(self.clock())
        return await spent_since(self.db, guild_id, start)
