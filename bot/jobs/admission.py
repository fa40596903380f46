"""Admission: whether a new job may be queued (limits, daily quotas, the monthly budget), and what it reserves.

A job reserves its quota by existing (storage counts queued, running and done jobs) and its estimated cost
in its row, until its real cost is in the usage log. Checking and reserving happen in one transaction that
holds the guild's and the member's locks (every limit counts one or the other), so a burst can't slip past
a limit together, whichever processes it arrives at, while other guilds and members are admitted meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

from bot.core.batches import BATCH_PRICE_FACTOR
from bot.core.service import GenerationService
from bot.core.types import ImageRequest
from bot.jobs.limits import QueueLimits
from storage.db import LOCK_GUILD, LOCK_MEMBER, LOCK_USER_INSTALLS, Connection, Database
from storage.guild_settings import GuildSettings, get_guild_settings, spent_since
from storage.jobs import JobRequest, count_user_installs_since
from storage.queue import admission_counts


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


class LocalLocks:
    """In-process locks by the same keys as the database's advisory locks, taken in the order given (the same
    order everywhere, so no two admissions wait for each other in a circle)."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[tuple[int, int], asyncio.Lock] = weakref.WeakValueDictionary()

    @asynccontextmanager
    async def hold(self, keys: list[tuple[int, int]]) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for key in keys:
                lock = self._locks.get(key)
                if lock is None:
                    lock = self._locks[key] = asyncio.Lock()
                await stack.enter_async_context(lock)
            yield


class Admission:
    """Checks and reserves in one database transaction that holds the guild's and the member's locks, so two
    admissions (in this process or another) can't both take the last image of a quota or the last cents of a
    budget."""

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
        self._turns = LocalLocks()

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
        speed: str = "fast",
    ) -> AsyncIterator[tuple[Connection, float]]:
        """Check every limit for `images` images of `request`, inside a transaction in which the caller stores
        the jobs (with the cost as their reservation). Yields the transaction and the estimated cost of one
        image. Raises LimitExceeded or BudgetExceeded, with nothing stored, when over a limit.

        `member_daily` is the member's own daily limit from their roles, in place of the server's. A job made
        through the member's own install (`user_install`) answers to no server: only the bot-wide limits and
        the daily cap on user installs apply. A relax job (`speed`) reserves the batch price."""
        cost = self.estimate_cost(request.model, request.size, 1, speed=speed)
        if user_install:
            guild_id = None
        # Read before the locks: a guild's settings change rarely, and an admission holds its locks briefly.
        settings = await get_guild_settings(self.db, guild_id) if guild_id is not None else None
        # The guild and the member this request counts against, in that order (user installs first of all, whose
        # cap is bot-wide): admissions for other guilds and members go on side by side, in any process. The guild
        # only where it has a cap to guard (a daily limit or a budget): otherwise its members' admissions have
        # nothing to wait for one another about.
        keys = [(LOCK_USER_INSTALLS, 0)] if user_install else []
        if guild_id is not None and self._guild_capped(settings):
            keys.append((LOCK_GUILD, guild_id))
        keys.append((LOCK_MEMBER, user_id))
        # Admissions in this process wait for their turn before taking a pooled connection, so a burst in one guild
        # doesn't hold the pool while it queues on that guild's lock, and the others' admissions go on.
        async with self._turns.hold(keys), self.db.transaction() as tx:
            await self.db.lock_all(tx, keys)
            if user_install:
                await self._check_user_installs(tx, images)
            await self._check(
                tx,
                user_id,
                guild_id,
                settings,
                images=images,
                cost=cost * images,
                member_daily=member_daily,
                speed=speed,
            )
            yield tx, cost

    def _guild_capped(self, settings: GuildSettings | None) -> bool:
        limits = self.limits_for(settings)
        return bool(limits.guild_daily) or (settings is not None and settings.monthly_budget_usd is not None)

    async def _check_user_installs(self, tx: Connection, images: int) -> None:
        cap = self.limits.user_install_daily
        if cap == 0:
            raise LimitExceeded("user_install_off", 0, None)
        day_start = utc_day_start(self.clock())
        used = await count_user_installs_since(tx, day_start)
        if used + images > cap:
            raise LimitExceeded("user_install_daily", cap, day_start + 86400, needed=images, used=used)

    async def _check(
        self,
        tx: Connection,
        user_id: int,
        guild_id: int | None,
        settings: GuildSettings | None,
        *,
        images: int,
        cost: float,
        member_daily: int | None,
        speed: str,
    ) -> None:
        limits = self.limits_for(settings)
        if member_daily is not None:
            limits = replace(limits, user_daily=member_daily)
        now = self.clock()
        day_start = utc_day_start(now)
        month_start, month_end = month_bounds(now)
        counts = await admission_counts(
            tx, user_id=user_id, guild_id=guild_id, day_start=day_start, month_start=month_start, speed=speed
        )
        if counts.pending >= limits.user_pending:
            raise LimitExceeded("user_pending", limits.user_pending, None)
        resets_at = day_start + 86400
        if limits.user_daily and counts.member_today + images > limits.user_daily:
            raise LimitExceeded("user_daily", limits.user_daily, resets_at, needed=images, used=counts.member_today)
        if limits.guild_daily and guild_id is not None and counts.guild_today + images > limits.guild_daily:
            raise LimitExceeded("guild_daily", limits.guild_daily, resets_at, needed=images, used=counts.guild_today)
        if settings is not None and settings.monthly_budget_usd is not None:
            budget = settings.monthly_budget_usd
            committed = counts.guild_spent + counts.guild_reserved
            if committed + cost > budget + 1e-9:
                left = max(0.0, budget - committed)
                raise BudgetExceeded(budget=budget, left=left, needed=cost, resets_at=month_end)

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
