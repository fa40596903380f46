"""A grid on Discord: four variations run as jobs, one status message, then one 2x2 preview with U/V buttons.

In 'tiles' mode each tile is its own job (four images of quota and cost, run side by side); in 'sliced'
mode one job asks the model for a 2x2 image and the preview's tiles are cut from it. Tiles that fail are
drawn as a cross, named in the preview with the reason, and refunded (a failed job holds no quota).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import time

import discord

from bot.core.errors import BlockedError, GenerationError
from bot.core.imaging import sniff_mime
from bot.core.types import GeneratedImage, Preview
from bot.i18n import duration, t
from bot.jobs.admission import BudgetExceeded, LimitExceeded
from bot.jobs.presenting import JobOutcome
from bot.media.grids import SLICED_PROMPT, compose_preview, slice_grid
from bot.media.pool import run_image_work
from bot.ui.context import Services
from bot.ui.errors import limit_text, short_reason
from bot.ui.presenter import relax_status, wait_text
from bot.ui.results import ResultFacts, model_label, open_thread, result_embed, send_thread_hint
from bot.ui.status import Status, StatusTicker
from bot.ui.surfaces import Surface
from bot.ui.views import grid_cancel_view, grid_view
from storage.grids import Grid, grid_jobs, insert_grid, update_grid
from storage.guild_settings import get_guild_settings
from storage.jobs import Job, JobRequest, update_job

log = logging.getLogger(__name__)
TILES = 4


async def grid_mode_for(services: Services, guild_id: int | None) -> str:
    """The guild's /grid mode (set with /settings), or the bot-wide default (BANANA_GRID_MODE)."""
    if guild_id is None:
        return services.settings.grid_mode
    return (await get_guild_settings(services.db, guild_id)).grid_mode or services.settings.grid_mode


async def start_grid(
    services: Services,
    surface: Surface,
    *,
    guild_id: int | None,
    channel_id: int,
    user_id: int,
    request: JobRequest,
    mode: str,
    parents: list[str | None] | None = None,
    model_prompt: str | None = None,
    defer_ms: float | None = None,
    member_daily: int | None = None,
    speed: str = "fast",
) -> bool:
    """Queue a grid's jobs behind one presenter; False (and the member told) when a limit refuses it.

    `request` is what the member asked (shown on the preview); `model_prompt`, if given, is what the tiles
    send instead (V buttons ask for variations of an image)."""
    grid = Grid(guild_id=guild_id, channel_id=channel_id, user_id=user_id, mode=mode, request=request)
    thread_id = surface.channel.id if isinstance(surface.channel, discord.Thread) else None

    def job(tile: int | None, prompt: str, parent: str | None) -> Job:
        return Job(
            guild_id=guild_id,
            channel_id=channel_id,
            user_id=user_id,
            kind="grid",
            locale=surface.locale,
            request=dataclasses.replace(request, prompt=prompt),
            parent_id=parent,
            thread_id=thread_id,
            defer_ms=defer_ms,
            grid_id=grid.id,
            tile=tile,
            version=0,  # numbered in the thread only once a U button posts it
            speed=speed,
        )

    prompt = model_prompt or request.prompt
    if mode == "sliced":
        jobs = [job(None, SLICED_PROMPT.format(prompt=prompt), (parents or [None])[0])]
    else:
        jobs = [job(n, prompt, (parents or [None] * TILES)[n - 1]) for n in range(1, TILES + 1)]
    await insert_grid(services.db, grid)
    presenter = GridPresenter(services, surface, grid, jobs)
    try:
        await services.jobs.submit_group([(j, presenter.for_tile(j)) for j in jobs], member_daily=member_daily)
    except (LimitExceeded, BudgetExceeded) as refused:
        await surface.error(limit_text(surface.private_locale, refused))
        return False
    return True


class TilePresenter:
    """One tile's view of the shared grid presenter (the runner talks to presenters one job at a time)."""

    def __init__(self, grid: GridPresenter) -> None:
        self.grid = grid

    async def queued(self, job: Job) -> None:
        await self.grid.tile_queued(job)

    async def started(self, job: Job) -> None:
        await self.grid.tile_started(job)

    def preview(self, preview: Preview) -> None:
        """Four tiles' drafts would fight over one status message: a grid shows none."""

    def prepare(self, image: GeneratedImage) -> None:
        """The preview is composed once every tile is in."""

    async def finished(self, job: Job, outcome: JobOutcome) -> None:
        await self.grid.tile_finished(job, outcome)

    async def failed(self, job: Job, error: GenerationError | None) -> None:
        if isinstance(error, BlockedError):
            self.grid.services.modlog.safety_block(job, error.reason)
        await self.grid.tile_failed(job, error.error_class if error else "internal")

    async def cancelled(self, job: Job) -> None:
        await self.grid.tile_failed(job, "cancelled")

    async def interrupted(self) -> None:
        await self.grid.ticker.close()


class GridPresenter:
    def __init__(
        self, services: Services, surface: Surface, grid: Grid, jobs: list[Job], *, resumed: bool = False
    ) -> None:
        self.services = services
        self.surface = surface
        self.grid = grid
        self.jobs = {j.id: j for j in jobs}
        self.pending = {j.id for j in jobs if j.status in ("queued", "running")}
        self.tiles: list[bytes | None] = [None] * TILES
        self.failures: dict[int, str] = {}  # tile -> error class
        self.cost = 0.0
        #: The provider that made the tiles, and any that failed before it (shown after a failover).
        self.provider: str | None = None
        self.failed_over_from: dict[str, None] = {}
        self.model = ""
        self.resumed = resumed
        self.ticker = StatusTicker(
            surface, self._status, interval=services.settings.status_interval, name=f"grid-status-{grid.id}"
        )
        self._queued_at = time.monotonic()
        self._started_at: float | None = None
        #: A relax grid's status, shown when queued and when its batch is sent: it waits, maybe for hours.
        self._relax_text: str | None = None
        self._relax_sent = False

    def for_tile(self, job: Job) -> TilePresenter:
        return TilePresenter(self)

    # --- tiles report in ---------------------------------------------------------------------------------
    async def tile_queued(self, job: Job) -> None:
        if job.speed == "relax":
            if self._relax_text is None:
                self._relax_text = await relax_status(self.services, job, self.surface.locale, images=len(self.jobs))
                await self.ticker.refresh()
            return
        await self.ticker.refresh()
        self.ticker.start()

    async def tile_started(self, job: Job) -> None:
        if job.speed == "relax":  # the grid's batch went to the provider: said once
            if job.batch_id is not None and not self._relax_sent:
                self._relax_sent = True
                self._relax_text = await relax_status(self.services, job, self.surface.locale, images=len(self.jobs))
                await self.ticker.refresh()
            return
        if self._started_at is None:
            self._started_at = time.monotonic()
            await self.ticker.refresh()

    async def tile_finished(self, job: Job, outcome: JobOutcome) -> None:
        result = outcome.result
        self.cost += result.usage.cost_usd
        self.model = result.model
        self.provider = result.provider
        self.failed_over_from.update(dict.fromkeys(name for name, _ in result.failed_over_from))
        if self.grid.mode == "sliced":
            self.tiles = list(await run_image_work(slice_grid, result.image.data))
        else:
            assert job.tile is not None
            self.tiles[job.tile - 1] = result.image.data
        await self._settle(job.id)

    async def tile_failed(self, job: Job, error_class: str) -> None:
        for tile in [job.tile] if job.tile is not None else range(1, TILES + 1):
            self.failures[tile] = error_class
        await self._settle(job.id)

    async def load_settled(self) -> None:
        """After a restart: what the grid's already-finished jobs produced."""
        for job in self.jobs.values():
            if job.status == "done" and job.image_key is not None:
                data = await self.services.images.get(job.image_key)
                if self.grid.mode == "sliced":
                    self.tiles = list(await run_image_work(slice_grid, data))
                elif job.tile is not None:
                    self.tiles[job.tile - 1] = data
            elif job.status in ("failed", "cancelled"):
                for tile in [job.tile] if job.tile is not None else range(1, TILES + 1):
                    self.failures[tile] = job.error_class or job.status

    # --- status ------------------------------------------------------------------------------------------
    def status_text(self) -> str:
        locale = self.surface.locale
        now = time.monotonic()
        if self._relax_text is not None:
            return self._relax_text
        if self._started_at is None:
            positions = [p for j in self.pending if (p := self.services.jobs.position(j)) is not None]
            elapsed = duration(locale, now - self._queued_at, threshold=3)
            text = (
                t(locale, "status.queued", position=min(positions), elapsed=elapsed)
                if positions
                else t(locale, "status.starting")
            )
            waits = [w for j in self.pending if (w := self.services.jobs.wait_estimate(j)) is not None]
            if positions and waits:  # the first tile to start ends the wait
                text += wait_text(locale, min(waits))
        else:
            done = TILES - len(self.pending) if self.grid.mode == "tiles" else 0
            elapsed = duration(locale, now - self._started_at, threshold=3)
            text = t(locale, "grid.generating", size=self.grid.request.size, done=done, elapsed=elapsed)
        return t(locale, "status.resumed") + " " + text if self.resumed else text

    def _status(self) -> Status:
        view = grid_cancel_view(self.grid.id, self.surface.locale) if self._started_at is None else None
        return Status(self.status_text(), view=view)

    # --- the preview -------------------------------------------------------------------------------------
    async def _settle(self, job_id: str) -> None:
        self.pending.discard(job_id)
        if self.pending:
            await self.ticker.refresh()
            return
        await self.ticker.close()
        try:
            await self._post_preview()
        except Exception:
            log.exception("could not post grid %s (reference %s)", self.grid.id, self.grid.id)
            with contextlib.suppress(discord.HTTPException):
                await self.surface.error(t(self.surface.private_locale, "error.internal", reference=self.grid.id))

    async def _post_preview(self) -> None:
        locale = self.surface.locale
        db = self.services.db
        if self.failures and all(f == "cancelled" for f in self.failures.values()):
            with contextlib.suppress(discord.HTTPException):
                await self.surface.update(content=t(locale, "status.cancelled"), view=None)
            return
        if all(tile is None for tile in self.tiles):
            error_class = next(iter(self.failures.values()), "internal")
            private = self.surface.private_locale
            text = t(private, "grid.all_failed", reason=short_reason(locale, error_class))
            await self.surface.error(text + "\n" + t(private, "error.not_charged"))
            return
        keys: list[str | None] = []
        for tile in self.tiles:
            mime = sniff_mime(tile) or "image/png" if tile is not None else ""
            keys.append(await self.services.images.put(tile, mime) if tile is not None else None)
        preview = await run_image_work(compose_preview, self.tiles)
        file = discord.File(io.BytesIO(preview), filename=f"grid-{self.grid.id}.jpg")
        message = await self.surface.result(
            content="", embed=self._embed(file.filename), file=file, view=grid_view(self.grid.id, keys, locale)
        )
        self.grid.message_id, self.grid.tile_keys = message.id, keys
        await update_grid(db, self.grid.id, message_id=message.id, tile_keys=keys)
        first = next(iter(self.jobs.values()))
        self.services.modlog.result(
            first, message, model=model_label(self.model), size=self.grid.request.size, cost=self.cost, image=preview
        )
        thread: discord.Thread | None = None
        thread_id = self.grid.thread_id or (
            self.surface.channel.id if isinstance(self.surface.channel, discord.Thread) else None
        )
        if thread_id is None and self.surface.can_thread:
            thread = await open_thread(self.surface, self.grid.request.prompt, message)
            thread_id = thread.id if thread is not None else None
        if thread_id is not None:
            self.grid.thread_id = thread_id
            await update_grid(db, self.grid.id, thread_id=thread_id)
            for job in self.jobs.values():
                await update_job(db, job.id, thread_id=thread_id)
        if thread is not None:
            await send_thread_hint(thread, locale)

    def _embed(self, filename: str) -> discord.Embed:
        locale = self.surface.locale
        request = self.grid.request
        notes = [
            t(locale, "grid.tile_failed", tile=tile, reason=short_reason(locale, error_class))
            for tile, error_class in sorted(self.failures.items())
        ]
        if notes:
            notes.append(t(locale, "grid.failed_not_charged"))
        notes.append(t(locale, "grid.how_to"))
        facts = ResultFacts(
            prompt=request.prompt,
            model=self.model,
            size=request.size,
            aspect=request.aspect_ratio or "1:1",
            seconds=time.monotonic() - self._started_at if self._started_at is not None else None,
            cost_usd=self.cost,
            notes=notes,
            provider=self.provider,
            failed_over_from=tuple(self.failed_over_from),
        )
        return result_embed(locale, facts, footer=self.grid.id, image_url=f"attachment://{filename}")


async def resumed_grid_presenter(services: Services, grid: Grid, surface: Surface) -> GridPresenter:
    """The presenter a restart rebuilds for a grid with unfinished tiles."""
    jobs = await grid_jobs(services.db, grid.id)
    presenter = GridPresenter(services, surface, grid, jobs, resumed=True)
    await presenter.load_settled()
    return presenter
