"""The result message: the image with its embed (prompt, model, size, time, cost, notes) and buttons, its
version number in the thread, and the thread it opens. Single images and grids are built here alike."""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field

import discord

from bot.core.models import model_spec
from bot.i18n import duration, money, t, tn
from bot.jobs.runner import JobOutcome
from bot.media.pool import run_image_work
from bot.media.uploads import Upload, fit_upload
from bot.ui.errors import clip, or_list
from bot.ui.surfaces import Surface
from bot.ui.views import result_view
from storage.db import Database
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
        mb = f"{len(upload.data) / 2**20:.1f}"
        facts.notes.append(t(locale, f"result.{upload.change}", width=upload.width, height=upload.height, mb=mb))
    footer = t(locale, "result.version", version=job.version)
    parent_version = await _parent_version(db, job)
    if parent_version is not None:
        footer += " · " + t(locale, "result.from_version", version=parent_version)
    file = discord.File(fp=io.BytesIO(upload.data), filename=f"banana-{job.id}.{upload.extension}")
    embed = result_embed(locale, facts, footer=f"{footer} · {job.id}", image_url=f"attachment://{file.filename}")
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
