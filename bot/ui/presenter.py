"""One job on Discord: its status while it waits and runs (place in line, seconds, the model's latest draft),
then the result or what went wrong. `DiscordPresenter` implements `bot.jobs.runner.JobPresenter`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import discord

from bot.core.errors import BlockedError, GenerationError
from bot.core.types import GeneratedImage, Preview
from bot.i18n import duration, money, t
from bot.jobs.presenting import JobOutcome
from bot.media.drafts import draft_thumbnail
from bot.media.pool import run_image_work
from bot.media.uploads import Upload, fit_upload
from bot.ui.context import Services
from bot.ui.errors import error_text
from bot.ui.results import ResultFacts, model_label, post_result
from bot.ui.status import Status, StatusTicker
from bot.ui.surfaces import DraftAttachment, Surface
from bot.ui.views import cancel_view
from storage.jobs import Job, update_job

log = logging.getLogger(__name__)


class DiscordPresenter:
    def __init__(self, services: Services, surface: Surface, job: Job, *, resumed: bool = False) -> None:
        self.services = services
        self.surface = surface
        self.job = job
        #: Picked up again after a restart: the status says so.
        self.resumed = resumed
        self.locale = surface.locale
        self.ticker = StatusTicker(
            surface,
            self._status,
            interval=services.settings.status_interval,
            before_edit=self._shrink_newest_draft,
            on_shown=self._remember_status_message,
            name=f"status-{job.id}",
        )
        self._queued_at = time.monotonic()
        self._started_at: float | None = None
        self._estimate: float | None = None
        self._upload: asyncio.Task[Upload] | None = None
        self._headline: str | None = None
        self._drafts = 0
        #: The newest draft as the model sent it, shrunk only when an edit is due (a draft that a newer
        #: one replaces before then costs nothing), and that draft shrunk, waiting to be shown.
        self._raw_draft: tuple[int, GeneratedImage] | None = None
        self._draft: DraftAttachment | None = None
        #: A relax job's status, shown once: it waits for its batch, maybe for hours.
        self._relax_text: str | None = None

    # --- the JobPresenter protocol ----------------------------------------------------------------------
    async def queued(self, job: Job) -> None:
        if job.speed == "relax":
            self._relax_text = await relax_status(self.services, job, self.locale)
            await self.ticker.refresh()
            return
        await self.ticker.refresh()
        self.ticker.start()

    async def started(self, job: Job) -> None:
        if job.speed == "relax":  # its batch went to the provider: said once; the result comes hours later maybe
            self._relax_text = await relax_status(self.services, job, self.locale)
            await self.ticker.refresh()
            return
        self._started_at = time.monotonic()
        self._estimate = await self.services.jobs.usual_seconds(
            job.request.model or self.services.default_model, job.request.size
        )
        await self.ticker.refresh()

    def preview(self, preview: Preview) -> None:
        if self.ticker.closed:
            return
        if preview.headline:
            self._headline = preview.headline
        if preview.draft is not None:
            self._drafts += 1
            self._raw_draft = (self._drafts, preview.draft)
        self.ticker.poke()

    def prepare(self, image: GeneratedImage) -> None:
        """Fit the image to the upload limit while the job stores and logs it (a 4K re-encode takes a few
        hundred ms of CPU: on another core, it costs the member no time)."""
        limit = self.surface.upload_limit
        self._upload = asyncio.create_task(
            run_image_work(fit_upload, image.data, image.mime, image.width, image.height, limit)
        )

    async def finished(self, job: Job, outcome: JobOutcome) -> None:
        await self.ticker.close()
        try:
            image = outcome.result.image
            upload = await self._upload if self._upload is not None else None
            facts = ResultFacts.from_outcome(job, outcome)
            message = await post_result(
                self.services.db, self.surface, job, facts, image.data, image.mime, upload=upload
            )
            self.services.modlog.result(
                job, message, model=model_label(facts.model), size=facts.size, cost=facts.cost_usd, image=image.data
            )
        except Exception:
            # The image is stored and the job is done; say so rather than leave "Generating…" forever.
            log.exception("could not post the result of job %s (reference %s)", job.id, job.id)
            with contextlib.suppress(discord.HTTPException):
                await self.surface.error(t(self.surface.private_locale, "error.internal", reference=job.id))

    async def failed(self, job: Job, error: GenerationError | None) -> None:
        await self.ticker.close()
        if isinstance(error, BlockedError):
            self.services.modlog.safety_block(job, error.reason)
        with contextlib.suppress(discord.HTTPException):
            await self.surface.error(error_text(self.surface.private_locale, error, job.id))

    async def cancelled(self, job: Job) -> None:
        await self.ticker.close()
        with contextlib.suppress(discord.HTTPException):
            await self.surface.update(content=t(self.locale, "status.cancelled"), view=None)

    async def interrupted(self) -> None:
        await self.ticker.close()  # the next start shows it again (ui/resume.py)

    # --- status -----------------------------------------------------------------------------------------
    def status_text(self) -> str:
        job, locale, now = self.job, self.locale, time.monotonic()
        if self._relax_text is not None:
            return self._relax_text
        if self._started_at is None:
            position = self.services.jobs.position(job.id)
            elapsed = duration(locale, now - self._queued_at, threshold=3)
            if position is None:
                text = t(locale, "status.starting")
            else:
                text = t(locale, "status.queued", position=position, elapsed=elapsed)
                text += wait_text(locale, self.services.jobs.wait_estimate(job.id))
            return t(locale, "status.resumed") + " " + text if self.resumed else text
        size = job.request.size
        elapsed = duration(locale, now - self._started_at, threshold=3)
        text = t(locale, "status.generating", size=size, elapsed=elapsed)
        if self._estimate is not None:
            text += " " + t(locale, "status.estimate", estimate=duration(locale, self._estimate), size=size)
        if self._headline:
            headline = discord.utils.escape_mentions(discord.utils.escape_markdown(self._headline))
            text += "\n" + t(locale, "status.thinking", headline=headline)
        return text

    def _status(self) -> Status:
        draft, self._draft = self._draft, None
        view = cancel_view(self.job, self.locale) if self._started_at is None else None
        return Status(self.status_text(), view=view, draft=draft)

    async def _shrink_newest_draft(self) -> None:
        """Decode and shrink the newest draft for the edit that is about to happen (off the loop)."""
        if self._raw_draft is None:
            return
        (number, draft), self._raw_draft = self._raw_draft, None
        try:
            data = await run_image_work(draft_thumbnail, draft.data)
        except Exception:  # an odd draft is not worth a word to anyone
            log.debug("could not shrink a draft", exc_info=True)
            return
        self._draft = DraftAttachment.build(self.locale, number, data)

    async def _remember_status_message(self, message_id: int) -> None:
        if self.job.status_message_id != message_id:
            self.job.status_message_id = message_id
            await update_job(self.services.db, self.job.id, status_message_id=message_id)


async def relax_status(services: Services, job: Job, locale: str, *, images: int = 1) -> str:
    """A relax job's status: its price against the fast one, its place for the next batch (or that its batch was
    sent), and how long relax results usually take here (from the bot's own log of batches)."""
    fast = services.jobs.admission.estimate_cost(job.request.model, job.request.size, images)
    text = t(
        locale,
        "status.relax",
        price=money(locale, job.reserved_usd * images),
        fast_price=money(locale, fast),
    )
    if job.batch_id is not None:
        text += " · " + t(locale, "status.relax_sent")
    elif (place := await services.jobs.relax_place(job.id)) is not None:
        text += " · " + t(locale, "status.relax_place", place=place)
    turnaround = await services.jobs.relax_turnaround()
    if turnaround is None:
        text += "\n" + t(locale, "status.relax_usual_unknown")
    else:
        text += "\n" + t(locale, "status.relax_usual", turnaround=duration(locale, turnaround))
    return text


def wait_text(locale: str, seconds: float | None) -> str:
    """' · starts in about 2 min' for a status line, or nothing before the queue has an estimate."""
    if seconds is None:
        return ""
    return " " + t(locale, "status.wait_estimate", estimate=duration(locale, max(seconds, 1.0)))
