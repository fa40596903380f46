"""Showing a job on Discord: the status message while it waits and runs, then the result or the error.

A `Surface` is where a job appears: the interaction's own response (`InteractionSurface`, whose token
lasts 15 minutes, after which it posts through the channel and mentions the requester) or a plain
channel message (`ChannelSurface`, for replies in a thread and for jobs resumed after a restart).
`DiscordPresenter` drives a surface through a job's life; it implements `bot.jobs.JobPresenter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import discord

from storage.db import Database
from storage.jobs import Job, get_job, max_version_in_thread, update_job

from .core.errors import BlockedError, GenerationError, NoImageError, RateLimitedError
from .core.models import model_spec
from .core.types import GeneratedImage, Preview
from .i18n import duration, money, t, tn
from .imagework import run_image_work
from .jobs import JobOutcome
from .previews import draft_thumbnail
from .uploads import Upload, fit_upload
from .views import cancel_view, result_view

if TYPE_CHECKING:
    from .client import BananaBot

log = logging.getLogger(__name__)

#: Discord's interaction tokens last 15 minutes; stop using one a little before that.
INTERACTION_TOKEN_LIFETIME = 15 * 60.0
TOKEN_SAFETY_MARGIN = 30.0
#: Discord's default upload limit for a bot, used where no guild says otherwise.
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
THREAD_NAME_LENGTH = 90


class Surface(ABC):
    """Where one job is shown."""

    def __init__(
        self, *, locale: str, channel: discord.abc.Messageable, upload_limit: int, private_locale: str | None = None
    ) -> None:
        #: For what everyone in the channel sees; `private_locale` for what only the requester sees.
        self.locale = locale
        self.private_locale = private_locale or locale
        self.channel = channel
        self.upload_limit = upload_limit
        #: The message that shows the result, once there is one.
        self.message: discord.Message | None = None
        #: The status message's id once known, so a restart can update it.
        self.status_message_id: int | None = None

    @abstractmethod
    async def update(
        self, *, content: str, view: discord.ui.View | None = None, draft: DraftAttachment | None = None
    ) -> None:
        """Show a status line (replacing the previous one), with a new draft image if one is given."""

    @abstractmethod
    async def result(
        self, *, content: str, embed: discord.Embed, file: discord.File, view: discord.ui.View
    ) -> discord.Message:
        """Replace the status with the finished image."""

    @abstractmethod
    async def error(self, text: str) -> None:
        """Tell the requester what went wrong (privately where Discord allows)."""

    @property
    def can_thread(self) -> bool:
        """Whether the result should get its own thread (not in a thread or a DM already)."""
        return isinstance(self.channel, discord.TextChannel)


class InteractionSurface(Surface):
    """The deferred interaction's response; falls back to the channel once the token is about to expire."""

    def __init__(self, interaction: discord.Interaction, *, received_at: float | None = None) -> None:
        channel = interaction.channel
        assert isinstance(channel, discord.abc.Messageable)
        super().__init__(
            locale=public_locale(interaction),
            private_locale=str(interaction.locale),
            channel=channel,
            upload_limit=interaction.filesize_limit,
        )
        self.interaction = interaction
        self.received_at = received_at if received_at is not None else time.monotonic()
        self.requester = interaction.user

    @property
    def token_fresh(self) -> bool:
        return time.monotonic() - self.received_at < INTERACTION_TOKEN_LIFETIME - TOKEN_SAFETY_MARGIN

    async def update(
        self, *, content: str, view: discord.ui.View | None = None, draft: DraftAttachment | None = None
    ) -> None:
        if self.token_fresh:
            # Fields left out of an edit stay as they are: a shown draft survives the ticking status.
            extra: dict[str, Any] = {"embed": draft.embed, "attachments": [draft.file()]} if draft else {}
            message = await self.interaction.edit_original_response(content=content, view=view, **extra)
            self.status_message_id = message.id

    async def result(
        self, *, content: str, embed: discord.Embed, file: discord.File, view: discord.ui.View
    ) -> discord.Message:
        if self.token_fresh:
            self.message = await self.interaction.edit_original_response(
                content=content or None, embed=embed, attachments=[file], view=view
            )
        else:
            late = t(self.locale, "result.late", mention=self.requester.mention)
            self.message = await self.channel.send(
                content=f"{late}\n{content}".strip(),
                embed=embed,
                file=file,
                view=view,
                allowed_mentions=discord.AllowedMentions(users=[self.requester]),
            )
        return self.message

    async def error(self, text: str) -> None:
        if self.token_fresh:
            with contextlib.suppress(discord.NotFound):
                await self.interaction.delete_original_response()
            await self.interaction.followup.send(text, ephemeral=True)
        else:
            await self.channel.send(
                f"{self.requester.mention} {text}", allowed_mentions=discord.AllowedMentions(users=[self.requester])
            )


class ChannelSurface(Surface):
    """A status message in a channel or thread (a reply to the member's message when there is one)."""

    def __init__(
        self,
        channel: discord.abc.Messageable,
        *,
        locale: str,
        upload_limit: int,
        reply_to: discord.Message | discord.PartialMessage | None = None,
        status_message: discord.Message | discord.PartialMessage | None = None,
        mention: discord.abc.Snowflake | None = None,
        private_locale: str | None = None,
    ) -> None:
        super().__init__(locale=locale, channel=channel, upload_limit=upload_limit, private_locale=private_locale)
        self.reply_to = reply_to
        self.status_message = status_message
        self.status_message_id = status_message.id if status_message is not None else None
        #: Who to ping in the first status line (jobs resumed after a restart have no reply to hang on).
        self.mention = mention

    async def _send(self, content: str | None, **fields: Any) -> discord.Message:
        # Only a reply pings, and only the requester: never @everyone or roles from a prompt.
        users = [self.mention] if self.mention is not None else []
        fields["allowed_mentions"] = discord.AllowedMentions(users=users, replied_user=True)
        if self.reply_to is not None:
            fields["reference"] = self.reply_to
        return await self.channel.send(content, **{k: v for k, v in fields.items() if v is not None})

    def _prefix(self) -> str:
        return f"<@{self.mention.id}> " if self.mention is not None else ""

    async def update(
        self, *, content: str, view: discord.ui.View | None = None, draft: DraftAttachment | None = None
    ) -> None:
        if self.status_message is not None:
            extra: dict[str, Any] = {"embed": draft.embed, "attachments": [draft.file()]} if draft else {}
            try:
                await self.status_message.edit(content=self._prefix() + content, view=view, **extra)
                return
            except discord.NotFound:
                self.status_message = None  # deleted by someone: post a new one
        sent = {"embed": draft.embed, "file": draft.file()} if draft else {}
        self.status_message = await self._send(self._prefix() + content, view=view, **sent)
        self.status_message_id = self.status_message.id

    async def result(
        self, *, content: str, embed: discord.Embed, file: discord.File, view: discord.ui.View
    ) -> discord.Message:
        # A fresh message rather than an edit: members get notified of the reply, and the status goes away.
        self.message = await self._send(self._prefix() + content, embed=embed, file=file, view=view)
        await self._drop_status()
        return self.message

    async def error(self, text: str) -> None:
        await self._send(self._prefix() + text)
        await self._drop_status()

    async def _drop_status(self) -> None:
        if self.status_message is not None:
            with contextlib.suppress(discord.HTTPException):
                await self.status_message.delete()
            self.status_message = None


@dataclass(frozen=True)
class DraftAttachment:
    """A draft for the status message: a labelled embed showing a small JPEG."""

    embed: discord.Embed
    data: bytes
    filename: str

    def file(self) -> discord.File:
        return discord.File(fp=io.BytesIO(self.data), filename=self.filename)

    @classmethod
    def build(cls, locale: str, number: int, data: bytes) -> DraftAttachment:
        filename = f"draft-{number}.jpg"
        embed = discord.Embed(
            title=t(locale, "status.draft_title", number=number),
            description=t(locale, "status.draft_note"),
            colour=discord.Colour.light_grey(),
        )
        embed.set_image(url=f"attachment://{filename}")
        return cls(embed=embed, data=data, filename=filename)


class DiscordPresenter:
    """Keeps one job's surface current: queued with position, generating with elapsed seconds and the
    model's latest draft, then the result.

    Every status edit happens under one lock and stops for good once the job ends, so a late edit can
    never land on top of the result.
    """

    def __init__(self, bot: BananaBot, surface: Surface, *, resumed: bool = False) -> None:
        self.bot = bot
        self.surface = surface
        #: Picked up again after a restart: the status says so.
        self.resumed = resumed
        self.locale = surface.locale
        self._ticker: asyncio.Task[None] | None = None
        self._started_at: float | None = None
        self._queued_at = time.monotonic()
        self._shown: str | None = None
        self._estimate: float | None = None
        self._upload: asyncio.Task[Upload] | None = None
        self._edit_lock = asyncio.Lock()
        self._closed = False
        #: Set when there is news (a draft, a headline) worth an edit before the next tick.
        self._news = asyncio.Event()
        self._last_edit = 0.0
        self._headline: str | None = None
        self._drafts = 0
        #: The newest draft as the model sent it, shrunk only when an edit is due (a draft that a newer
        #: one replaces before then costs nothing), and that draft shrunk, waiting to be shown.
        self._raw_draft: tuple[int, GeneratedImage] | None = None
        self._draft: DraftAttachment | None = None

    # --- the JobPresenter protocol ----------------------------------------------------------------------
    def prepare(self, image: GeneratedImage) -> None:
        """Start fitting the image to the upload limit while the job stores and logs it (a 4K re-encode
        takes a few hundred ms of CPU: on the other core, it costs the member no time)."""
        limit = self.surface.upload_limit
        self._upload = asyncio.create_task(
            run_image_work(fit_upload, image.data, image.mime, image.width, image.height, limit)
        )

    def preview(self, preview: Preview) -> None:
        """The model's latest thought headline or draft (called between stream reads: only hands off)."""
        if self._closed:
            return
        if preview.headline:
            self._headline = preview.headline
        if preview.draft is None:
            self._news.set()
            return
        self._drafts += 1
        self._raw_draft = (self._drafts, preview.draft)
        self._news.set()

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

    async def queued(self, job: Job) -> None:
        await self._refresh(job)
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(job), name=f"status-{job.id}")

    async def started(self, job: Job) -> None:
        self._started_at = time.monotonic()
        request = job.request
        model = request.get("model") or self.bot.default_model
        self._estimate = await self.bot.jobs.estimate_seconds(model, request.get("size", "1K"))
        await self._refresh(job)

    async def finished(self, job: Job, outcome: JobOutcome) -> None:
        await self._stop_ticker()
        try:
            await self._show_result(job, outcome)
        except Exception:
            # The image is stored and the job is done; say so rather than leave "Generating…" forever.
            log.exception("could not post the result of job %s (reference %s)", job.id, job.id)
            with contextlib.suppress(discord.HTTPException):
                await self.surface.error(t(self.surface.private_locale, "error.internal", reference=job.id))

    async def failed(self, job: Job, error: GenerationError | None) -> None:
        await self._stop_ticker()
        with contextlib.suppress(discord.HTTPException):
            await self.surface.error(error_text(self.surface.private_locale, job, error))

    async def interrupted(self) -> None:
        await self._stop_ticker()  # the next start shows it again (resumed_presenter)

    async def cancelled(self, job: Job) -> None:
        await self._stop_ticker()
        with contextlib.suppress(discord.HTTPException):
            await self.surface.update(content=t(self.locale, "status.cancelled"), view=None)

    # --- status -----------------------------------------------------------------------------------------
    def status_text(self, job: Job) -> str:
        now = time.monotonic()
        size = job.request.get("size", "1K")
        if self._started_at is None:
            position = self.bot.jobs.position(job.id)
            elapsed = duration(self.locale, now - self._queued_at, threshold=3)
            if position is None:
                text = t(self.locale, "status.starting")
            else:
                text = t(self.locale, "status.queued", position=position, elapsed=elapsed)
            return t(self.locale, "status.resumed") + " " + text if self.resumed else text
        elapsed = duration(self.locale, now - self._started_at, threshold=3)
        text = t(self.locale, "status.generating", size=size, elapsed=elapsed)
        if self._estimate is not None:
            text += " " + t(self.locale, "status.estimate", estimate=duration(self.locale, self._estimate), size=size)
        if self._headline:
            headline = discord.utils.escape_mentions(discord.utils.escape_markdown(self._headline))
            text += "\n" + t(self.locale, "status.thinking", headline=headline)
        return text

    async def _refresh(self, job: Job) -> None:
        async with self._edit_lock:
            if not self._closed:
                await self._edit(job)

    async def _edit(self, job: Job) -> None:
        text = self.status_text(job)
        draft, self._draft = self._draft, None
        if text == self._shown and draft is None:
            return
        self._shown = text
        self._last_edit = time.monotonic()
        view = cancel_view(job, self.locale) if self._started_at is None else None
        try:
            await self.surface.update(content=text, view=view, draft=draft)
            shown_in = self.surface.status_message_id
            if shown_in is not None and job.status_message_id != shown_in:
                job.status_message_id = shown_in
                await update_job(self.bot.jobs.db, job.id, status_message_id=shown_in)
        except discord.HTTPException as exc:
            log.warning("could not update the status of job %s: %s", job.id, exc)
        except RuntimeError as exc:  # the HTTP session closed under us: the bot is shutting down
            log.debug("status of job %s not updated: %s", job.id, exc)

    async def _tick(self, job: Job) -> None:
        # An edit per interval, sooner when a draft arrives, but never two within a third of the interval:
        # Discord rate-limits message edits (about 5 per 5 s per channel, shared by every job there).
        interval = self.bot.settings.status_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._news.wait()
            self._news.clear()
            await asyncio.sleep(max(0.0, self._last_edit + interval / 3 - time.monotonic()))
            await self._shrink_newest_draft()
            await self._refresh(job)

    async def _stop_ticker(self) -> None:
        """No status edit after this: one in flight finishes first, so the result is always the last word."""
        async with self._edit_lock:
            self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    # --- the result -------------------------------------------------------------------------------------
    async def _show_result(self, job: Job, outcome: JobOutcome) -> None:
        image = outcome.result.image
        facts = ResultFacts.from_outcome(job, outcome)
        upload = await self._upload if self._upload is not None else None
        await post_result(self.bot, self.surface, job, facts, image.data, image.mime, upload=upload)


@dataclass
class ResultFacts:
    """What a result message says about an image (from a fresh result, or from the usage log later)."""

    prompt: str
    model: str
    size: str
    aspect: str
    width: int
    height: int
    seconds: float | None = None
    cost_usd: float | None = None
    model_text: str | None = None
    dropped_turns: int = 0
    character_images_left_out: int = 0
    notes: list[str] = field(default_factory=list)
    #: Reference images that were downscaled on the way in (intake.read_references).
    input_notes: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_outcome(cls, job: Job, outcome: JobOutcome) -> ResultFacts:
        result = outcome.result
        return cls(
            prompt=job.request["prompt"],
            model=result.model,
            size=result.size,
            aspect=result.aspect_ratio or job.request.get("aspect_ratio") or "1:1",
            width=result.image.width,
            height=result.image.height,
            seconds=result.timing.total_ms / 1000,
            cost_usd=result.usage.cost_usd,
            model_text=result.text,
            dropped_turns=outcome.dropped_turns,
            character_images_left_out=outcome.character_images_left_out,
            input_notes=list(job.request.get("input_notes") or []),
        )


async def post_result(
    bot: BananaBot,
    surface: Surface,
    job: Job,
    facts: ResultFacts,
    data: bytes,
    mime: str,
    *,
    upload: Upload | None = None,
) -> discord.Message:
    """Show `job`'s image on `surface` with its embed and buttons, number it in its thread, open a thread.

    `upload` is the image already fitted to the surface's upload limit, if the caller prepared it."""
    db = bot.jobs.db
    if upload is None:
        upload = await run_image_work(fit_upload, data, mime, facts.width, facts.height, surface.upload_limit)
    if job.thread_id is not None:
        job.version = await max_version_in_thread(db, job.thread_id) + 1
        await update_job(db, job.id, version=job.version, thread_id=job.thread_id)
    parent_version = await _parent_version(db, job)
    embed = result_embed(surface.locale, job, facts, upload, parent_version)
    file = discord.File(fp=io.BytesIO(upload.data), filename=f"banana-{job.id}.{upload.extension}")
    embed.set_image(url=f"attachment://{file.filename}")
    view = result_view(job, surface.locale, model=facts.model)
    message = await surface.result(content="", embed=embed, file=file, view=view)
    job.result_message_id = message.id
    await update_job(db, job.id, result_message_id=message.id)
    if job.thread_id is None and surface.can_thread:
        thread = await open_thread(surface, job.request["prompt"], message)
        if thread is not None:
            job.thread_id = thread.id
            await update_job(db, job.id, thread_id=thread.id)
            await send_thread_hint(thread, surface.locale)
    return message


async def _parent_version(db: Database, job: Job) -> int | None:
    if job.parent_id is None:
        return None
    parent = await get_job(db, job.parent_id)
    return parent.version if parent is not None and parent.thread_id == job.thread_id else None


async def open_thread(surface: Surface, prompt: str, message: discord.Message) -> discord.Thread | None:
    """A thread on the result message, named after the prompt; None if the bot may not create one."""
    channel = surface.channel
    assert isinstance(channel, discord.TextChannel)
    name = prompt.strip().replace("\n", " ")[:THREAD_NAME_LENGTH] or "Banana"
    try:
        thread = await channel.create_thread(name=name, message=message, auto_archive_duration=1440)
    except discord.HTTPException as exc:
        # Missing "Create Public Threads": the image is still there, just without a thread.
        log.warning("could not open a thread on message %s: %s", message.id, exc)
        return None
    return thread


async def send_thread_hint(thread: discord.Thread, locale: str) -> None:
    """How to continue in the thread. Sent after the thread is recorded, so a quick reply finds it."""
    with contextlib.suppress(discord.HTTPException):
        await thread.send(t(locale, "result.thread_hint"))


async def resumed_presenter(bot: BananaBot, job: Job) -> DiscordPresenter | None:
    """A presenter for a job picked up after a restart: it posts through the job's channel (the interaction
    token is gone), editing the old status message where there is one. None if the channel is gone."""
    channel = await bot.resolve_channel(job.channel_id)
    if not isinstance(channel, discord.abc.Messageable):
        await tell_requester_directly(
            bot, job, t(job.locale, "job.channel_gone", prompt=_clip(job.request["prompt"], 200))
        )
        return None
    guild = getattr(channel, "guild", None)
    status = None
    if job.status_message_id is not None:
        status = channel.get_partial_message(job.status_message_id)
    surface = ChannelSurface(
        channel,
        locale=job.locale,
        upload_limit=guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT,
        status_message=status,
        mention=discord.Object(job.user_id),
    )
    return DiscordPresenter(bot, surface, resumed=True)


async def tell_requester_directly(bot: BananaBot, job: Job, text: str) -> None:
    """A DM to the member who asked, for news that has nowhere else to go; silent if their DMs are closed."""
    try:
        channel = await bot.create_dm(discord.Object(id=job.user_id))
        await channel.send(text)
    except discord.HTTPException as exc:
        log.info("could not tell member %s about job %s: %s", job.user_id, job.id, exc)


def public_locale(interaction: discord.Interaction) -> str:
    """The language for messages everyone in the channel reads: the one the server's admins pinned, else the
    server's Discord language, else the member's."""
    pinned = cast("BananaBot", interaction.client).pinned_locales.get(interaction.guild_id or 0)
    return pinned or str(interaction.guild_locale or interaction.locale)


def result_embed(
    locale: str, job: Job, facts: ResultFacts, upload: Upload, parent_version: int | None
) -> discord.Embed:
    embed = discord.Embed(description=_clip(facts.prompt, 4000), colour=discord.Colour.gold())
    embed.add_field(name=t(locale, "result.model"), value=model_label(facts.model), inline=True)
    size_text = t(
        locale, "result.size_value", size=facts.size, aspect=facts.aspect, width=facts.width, height=facts.height
    )
    embed.add_field(name=t(locale, "result.size"), value=size_text, inline=True)
    if facts.seconds is not None:
        embed.add_field(name=t(locale, "result.time"), value=duration(locale, facts.seconds), inline=True)
    if facts.cost_usd is not None:
        embed.add_field(name=t(locale, "result.cost"), value=money(locale, facts.cost_usd), inline=True)
    notes = list(facts.notes)
    for note in facts.input_notes:
        sizes = {"before": "×".join(map(str, note["from"])), "after": "×".join(map(str, note["to"]))}
        notes.append(t(locale, "input.downscaled", option=note["option"], **sizes))
    if upload.change is not None:
        mb = f"{len(upload.data) / 2**20:.1f}"
        notes.append(t(locale, f"result.{upload.change}", width=upload.width, height=upload.height, mb=mb))
    if facts.dropped_turns:
        notes.append(tn(locale, "result.context_dropped", facts.dropped_turns))
    if facts.character_images_left_out:
        notes.append(tn(locale, "result.character_images_left_out", facts.character_images_left_out))
    if facts.model_text:
        notes.append(t(locale, "result.model_said", text=_clip(facts.model_text, 500)))
    if notes:
        embed.add_field(name=t(locale, "result.notes"), value=_clip("\n".join(notes), 1024), inline=False)
    footer = t(locale, "result.version", version=job.version)
    if parent_version is not None:
        footer += " · " + t(locale, "result.from_version", version=parent_version)
    embed.set_footer(text=f"{footer} · {job.id}")
    return embed


def model_label(model: str) -> str:
    """'Nano Banana Pro' for a model we know, else the id as the provider named it."""
    return model_spec(model).label if model else model


def error_text(locale: str, job: Job, error: GenerationError | None) -> str:
    """What a member reads when a job fails: specific, actionable, and never a stack trace."""
    if error is None:
        return t(locale, "error.internal", reference=job.id)
    klass = error.error_class
    if isinstance(error, BlockedError):
        text = t(locale, "error.blocked", reason=error.reason)
        if error.model_text:
            text += "\n" + t(locale, "error.model_said", text=_clip(error.model_text, 500))
    elif isinstance(error, NoImageError):
        text = t(locale, "error.no_image")
        if error.model_text:
            text += "\n" + t(locale, "error.model_said", text=_clip(error.model_text, 500))
    elif isinstance(error, RateLimitedError) and error.per_day:
        text = t(locale, "error.quota_day")
    elif klass in ("rate_limited", "unavailable", "timeout", "bad_response"):
        text = t(locale, f"error.{klass}") + " " + tn(locale, "error.attempts", max(error.attempts, 1))
    elif klass in ("auth", "no_keys"):
        text = t(locale, "error.auth")
    elif klass == "invalid_request":
        text = t(locale, "error.invalid", detail=str(error))
    else:
        text = t(locale, "error.internal", reference=job.id)
    return text + "\n" + t(locale, "error.not_charged")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
