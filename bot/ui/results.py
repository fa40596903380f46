"""The result message: the image with its embed (prompt, model, size, time, cost, notes) and buttons, its
version number in the thread, and the thread it opens. Single images and grids are built here alike."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from dataclasses import dataclass, field

import discord

from bot.core.imaging import image_size, sniff_mime
from bot.core.models import model_spec
from bot.i18n import duration, money, t, tn
from bot.jobs.presenting import JobOutcome
from bot.media.grids import compose_preview
from bot.media.pool import run_image_work
from bot.media.uploads import Upload, fit_upload
from bot.ui.errors import clip, or_list, short_reason
from bot.ui.surfaces import Surface
from bot.ui.views import grid_view, result_view
from storage.db import Database
from storage.generations import get_generation
from storage.grids import Grid, grid_jobs
from storage.images import ImageStore
from storage.jobs import InputNote, Job, get_job, max_version_in_thread, update_job

log = logging.getLogger(__name__)
THREAD_NAME_LENGTH = 90
#: The providers the catalogue names (bot/config.py accepts no others).
PROVIDER_NAMES = ("gemini", "openai")


@dataclass
class ResultFacts:
    """What a result message says about an image (from a fresh result, or from the usage log later)."""

    prompt: str
    model: str
    size: str
    aspect: str
    #: The image's pixels, where there is one image (a grid's preview has none of its own).
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    cost_usd: float | None = None
    model_text: str | None = None
    dropped_turns: int = 0
    character_images_left_out: int = 0
    notes: list[str] = field(default_factory=list)
    #: Reference images that were downscaled on the way in (ui/intake.py).
    input_notes: tuple[InputNote, ...] = ()
    #: The provider that made the image, and those that failed before it (a failover), if known.
    provider: str | None = None
    failed_over_from: tuple[str, ...] = ()

    @classmethod
    def from_outcome(cls, job: Job, outcome: JobOutcome) -> ResultFacts:
        result = outcome.result
        return cls(
            prompt=job.request.prompt,
            model=result.model,
            size=result.size,
            aspect=result.aspect_ratio or job.request.aspect_ratio or "1:1",
            width=result.image.width,
            height=result.image.height,
            seconds=result.timing.total_ms / 1000,
            cost_usd=result.usage.cost_usd,
            model_text=result.text,
            dropped_turns=outcome.dropped_turns,
            character_images_left_out=outcome.character_images_left_out,
            input_notes=job.request.input_notes,
            provider=result.provider,
            failed_over_from=tuple(dict.fromkeys(name for name, _ in result.failed_over_from)),
        )


def model_label(model: str) -> str:
    """'Nano Banana Pro' for a model we know, else the id as the provider named it."""
    return model_spec(model).label if model else model


def provider_label(locale: str, provider: str) -> str:
    """A configured provider ('gemini', 'openai') as members read it."""
    return t(locale, f"provider.{provider}") if provider in PROVIDER_NAMES else provider


def result_embed(locale: str, facts: ResultFacts, *, footer: str, image_url: str) -> discord.Embed:
    """The embed under a result: what was asked, how it was made, and any notes (`facts.notes` first)."""
    embed = discord.Embed(description=clip(facts.prompt, 4000), colour=discord.Colour.gold())
    model = model_label(facts.model)
    served = provider_label(locale, facts.provider) if facts.provider is not None else None
    failed_over = served is not None and bool(facts.failed_over_from)
    if failed_over:  # not the provider it would normally be: say which one made it
        model = t(locale, "result.model_via", model=model, provider=served)
    embed.add_field(name=t(locale, "result.model"), value=model, inline=True)
    if facts.width is not None and facts.height is not None:
        size_text = t(
            locale, "result.size_value", size=facts.size, aspect=facts.aspect, width=facts.width, height=facts.height
        )
    else:
        size_text = f"{facts.size} · {facts.aspect}"
    embed.add_field(name=t(locale, "result.size"), value=size_text, inline=True)
    if facts.seconds is not None:
        embed.add_field(name=t(locale, "result.time"), value=duration(locale, facts.seconds), inline=True)
    if facts.cost_usd is not None:
        embed.add_field(name=t(locale, "result.cost"), value=money(locale, facts.cost_usd), inline=True)
    notes = list(facts.notes)
    if failed_over:
        failed = or_list(locale, (provider_label(locale, name) for name in facts.failed_over_from))
        notes.append(t(locale, "result.failed_over", provider=served, failed=failed))
    for note in facts.input_notes:
        sizes = {"before": "×".join(map(str, note.before)), "after": "×".join(map(str, note.after))}
        notes.append(t(locale, "input.downscaled", option=note.option, **sizes))
    if facts.dropped_turns:
        notes.append(tn(locale, "result.context_dropped", facts.dropped_turns))
    if facts.character_images_left_out:
        notes.append(tn(locale, "result.character_images_left_out", facts.character_images_left_out))
    if facts.model_text:
        notes.append(t(locale, "result.model_said", text=clip(facts.model_text, 500)))
    if notes:
        embed.add_field(name=t(locale, "result.notes"), value=clip("\n".join(notes), 1024), inline=False)
    embed.set_image(url=image_url)
    embed.set_footer(text=footer)
    return embed


async def post_result(
    db: Database,
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
    locale = surface.locale
    if upload is None:
        assert facts.width is not None and facts.height is not None
        upload = await run_image_work(fit_upload, data, mime, facts.width, facts.height, surface.upload_limit)
    if job.thread_id is not None:
        job.version = await max_version_in_thread(db, job.thread_id) + 1
        await update_job(db, job.id, version=job.version, thread_id=job.thread_id)
    if upload.change is not None:
        facts.notes.append(upload_note(locale, upload))
    file = discord.File(fp=io.BytesIO(upload.data), filename=f"banana-{job.id}.{upload.extension}")
    footer = await result_footer(db, job, locale)
    embed = result_embed(locale, facts, footer=footer, image_url=f"attachment://{file.filename}")
    view = result_view(job, locale, model=facts.model)
    message = await surface.result(content="", embed=embed, file=file, view=view)
    job.result_message_id = message.id
    await update_job(db, job.id, result_message_id=message.id)
    if job.thread_id is None and surface.can_thread:
        thread = await open_thread(surface, job.request.prompt, message)
        if thread is not None:
            job.thread_id = thread.id
            await update_job(db, job.id, thread_id=thread.id)
            await send_thread_hint(thread, locale)
    return message


def upload_note(locale: str, upload: Upload) -> str:
    """What was done to fit the upload limit (a JPEG, downscaled): the original stays in the image store."""
    mb = f"{len(upload.data) / 2**20:.1f}"
    return t(locale, f"result.{upload.change}", width=upload.width, height=upload.height, mb=mb)


async def result_footer(db: Database, job: Job, locale: str) -> str:
    """'Version 3 · from version 2 · <job id>': its place in the thread, and the id /show takes."""
    footer = t(locale, "result.version", version=job.version)
    parent_version = await _parent_version(db, job)
    if parent_version is not None:
        footer += " · " + t(locale, "result.from_version", version=parent_version)
    return f"{footer} · {job.id}"


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


@dataclass
class ResultCopy:
    """A past result, ready to be shown again (/show): the image, its embed and its live buttons."""

    embed: discord.Embed
    file: discord.File
    view: discord.ui.View
    thread_id: int | None
    created_at: float


async def job_copy(
    db: Database,
    images: ImageStore,
    job: Job,
    locale: str,
    *,
    upload_limit: int,
    default_model: str,
    deletable: bool,
) -> ResultCopy:
    """`job`'s image as its result showed it, fitted to `upload_limit`, with its buttons.

    Raises FileNotFoundError when the image is no longer stored."""
    if job.image_key is None:
        raise FileNotFoundError(f"job {job.id} has no image")
    data = await images.get(job.image_key)
    mime = sniff_mime(data) or "image/png"
    width, height = await asyncio.to_thread(image_size, data)
    row = await get_generation(db, job.generation_id) if job.generation_id is not None else None
    request = job.request
    facts = ResultFacts(
        prompt=request.prompt,
        model=row.model if row is not None else request.model or default_model,
        size=row.size if row is not None else request.size,
        aspect=(row.aspect_ratio if row is not None else None) or request.aspect_ratio or "1:1",
        width=width,
        height=height,
        seconds=row.total_ms / 1000 if row is not None and row.total_ms is not None else None,
        cost_usd=row.cost_usd if row is not None else None,
        input_notes=request.input_notes,
    )
    if job.kind == "tile" and job.tile is not None:
        facts.notes.append(t(locale, "grid.cut_from", tile=job.tile))
    upload = await run_image_work(fit_upload, data, mime, width, height, upload_limit)
    if upload.change is not None:
        facts.notes.append(upload_note(locale, upload))
    file = discord.File(fp=io.BytesIO(upload.data), filename=f"banana-{job.id}.{upload.extension}")
    embed = result_embed(
        locale, facts, footer=await result_footer(db, job, locale), image_url=f"attachment://{file.filename}"
    )
    view = result_view(job, locale, model=facts.model, deletable=deletable)
    return ResultCopy(embed, file, view, job.thread_id, job.created_at)


async def grid_copy(db: Database, images: ImageStore, grid: Grid, locale: str, *, default_model: str) -> ResultCopy:
    """A grid's 2x2 preview drawn again from its stored tiles, with U1-U4, V1-V4 and Reroll.

    Raises FileNotFoundError when none of its tiles is stored any more."""
    keys = grid.tile_keys or []
    tiles: list[bytes | None] = []
    for key in keys:
        try:
            tiles.append(await images.get(key) if key is not None else None)
        except FileNotFoundError:
            tiles.append(None)
    if not any(tile is not None for tile in tiles):
        raise FileNotFoundError(f"grid {grid.id} has no stored tile")
    preview = await run_image_work(compose_preview, tiles)
    jobs = await grid_jobs(db, grid.id)
    made = []
    for job in jobs:
        row = await get_generation(db, job.generation_id) if job.generation_id is not None else None
        if job.status == "done" and row is not None:
            made.append(row)
    notes = [
        t(locale, "grid.tile_failed", tile=tile, reason=short_reason(locale, job.error_class or job.status))
        for job in jobs
        if job.status in ("failed", "cancelled")
        for tile in ([job.tile] if job.tile is not None else range(1, len(keys) + 1))
    ]
    if notes:
        notes.append(t(locale, "grid.failed_not_charged"))
    notes.append(t(locale, "grid.how_to"))
    request = grid.request
    facts = ResultFacts(
        prompt=request.prompt,
        model=made[0].model if made else request.model or default_model,
        size=request.size,
        aspect=request.aspect_ratio or "1:1",
        cost_usd=sum(row.cost_usd for row in made),
        notes=notes,
    )
    file = discord.File(io.BytesIO(preview), filename=f"grid-{grid.id}.jpg")
    embed = result_embed(locale, facts, footer=grid.id, image_url=f"attachment://{file.filename}")
    return ResultCopy(embed, file, grid_view(grid.id, keys, locale), grid.thread_id, grid.created_at)
