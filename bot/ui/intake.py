"""From Discord input to a queued job: the member's choices resolved against the model and the server's
settings, attachments read and checked before anything is spent, and a clear answer when a limit refuses
the job. Shared by every command, button and thread reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import discord
from discord import app_commands

from bot.core.errors import InvalidRequest
from bot.core.imaging import prepare_reference, shrink_reference
from bot.core.models import ModelSpec
from bot.core.service import validate
from bot.core.types import ImageInput, ImageRequest
from bot.i18n import t
from bot.jobs.admission import BudgetExceeded, LimitExceeded
from bot.ui.context import Services
from bot.ui.errors import clip, input_error_text, limit_text, request_problem_text, too_large_text, unreadable_text
from bot.ui.presenter import DiscordPresenter
from bot.ui.rules import Requester, admit, admit_character
from bot.ui.surfaces import ChannelSurface, InteractionSurface, Surface
from storage.characters import get_character, list_characters
from storage.guild_settings import GuildSettings, get_guild_settings
from storage.images import ImageStore
from storage.jobs import DEFAULT_SIZE, InputNote, Job, JobRequest

log = logging.getLogger(__name__)
Autocomplete = Callable[[discord.Interaction, str], Coroutine[Any, Any, list[app_commands.Choice[str]]]]


class InputError(Exception):
    """Bad input from a member, already worded for them."""


#: What an image is called when Discord gave no content type.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".heic", ".heif")
#: Attachments larger than this aren't even downloaded (bigger ones would be downscaled anyway).
DOWNLOAD_LIMIT = 50 * 1024 * 1024


async def read_references(
    images: ImageStore, attachments: Sequence[tuple[str, discord.Attachment]], locale: str
) -> tuple[list[str], list[InputNote]]:
    """Download, check, shrink if needed and store each attachment.

    Returns the image-store keys and a note for each downscaled image (shown with the result).
    Raises InputError naming the option."""
    keys, notes = [], []
    for option, attachment in attachments:
        if attachment.size > DOWNLOAD_LIMIT:
            raise InputError(too_large_text(locale, option, DOWNLOAD_LIMIT // 2**20))
        try:
            data = await attachment.read()
        except discord.HTTPException as exc:
            raise InputError(unreadable_text(locale, option)) from exc
        try:
            image = await asyncio.to_thread(prepare_reference, data, name=option, max_bytes=DOWNLOAD_LIMIT)
        except InvalidRequest as exc:
            raise InputError(input_error_text(locale, option, exc)) from exc
        sent = await asyncio.to_thread(shrink_reference, image)
        if sent is not image:
            notes.append(InputNote(option, before=(image.width, image.height), after=(sent.width, sent.height)))
        keys.append(await images.put(sent.data, sent.mime, width=sent.width, height=sent.height))
    return keys, notes


def check_request(spec: ModelSpec, request: JobRequest, reference_count: int, locale: str) -> None:
    """The model's own limits (size, ratio, thinking, reference count), checked before anything is queued."""
    probe = ImageRequest(
        prompt=request.prompt,
        aspect_ratio=request.aspect_ratio,
        size=request.size,
        thinking=request.thinking,
        references=tuple(ImageInput(b"", "image/png") for _ in range(reference_count)),
    )
    try:
        validate(probe, spec)
    except InvalidRequest as exc:
        raise InputError(request_problem_text(locale, spec, probe)) from exc


def character_autocomplete(services: Services) -> Autocomplete:
    """The `character` option's autocomplete: the guild's characters whose name starts with what was typed."""

    async def complete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        if interaction.guild_id is None:
            return []
        found = await list_characters(services.db, interaction.guild_id, current, limit=25)
        return [app_commands.Choice(name=c.name, value=c.name) for c in found]

    return complete


async def take_inputs(
    services: Services,
    surface: Surface,
    request: JobRequest,
    attached: Sequence[tuple[str, discord.Attachment]],
    *,
    guild_id: int | None,
    size: str | None = None,
    character: str | None = None,
    left_out: list[str] | None = None,
) -> JobRequest | None:
    """The request resolved and checked, with its attachments read into it; None, with the member told why,
    when something is wrong (nothing is spent).

    `size` is the member's choice (None: the server's default, else the model's); `character` the name of a
    character the member picked. Attachments beyond the model's image limit are left out before any is read,
    and the member is told which: here and now (a thread reply), or, when the caller passes a `left_out` list
    for the note, by the caller once the job is queued (an interaction: see start_job)."""
    try:
        request = await resolve_request(services, request, guild_id, surface, size=size)
        spec = services.spec_for(request.model)
        room = max(0, spec.max_reference_images - len(request.reference_keys))
        attached, dropped = list(attached[:room]), list(attached[room:])
        count = len(request.reference_keys) + len(attached)
        check_request(spec, request, count, surface.private_locale)
        if character:
            request = await resolve_character(services, request, guild_id, character, surface.private_locale)
        keys, notes = await read_references(services.images, attached, surface.private_locale)
    except InputError as exc:
        await surface.error(str(exc))
        return None
    if dropped:
        note = left_out_text(surface.private_locale, spec, [name for name, _ in dropped])
        if left_out is not None:
            left_out.append(note)
        else:
            await tell(surface, note)
    return dataclasses.replace(
        request, reference_keys=(*request.reference_keys, *keys), input_notes=(*request.input_notes, *notes)
    )


def left_out_text(locale: str, spec: ModelSpec, names: list[str]) -> str:
    """Which of the member's images were not sent, and why."""
    text = t(locale, "input.left_out", model=spec.label, limit=spec.max_reference_images, images=", ".join(names))
    return clip(text, 2000)


async def tell(surface: Surface, text: str) -> None:
    """A note for the requester: an ephemeral follow-up to their interaction (once its response shows the
    job), or a reply to their message in the channel."""
    with contextlib.suppress(discord.HTTPException):
        if isinstance(surface, InteractionSurface) and surface.token_fresh:
            await surface.interaction.followup.send(text, ephemeral=True)
        elif isinstance(surface, ChannelSurface) and surface.reply_to is not None:
            await surface.reply_to.reply(text, mention_author=False, allowed_mentions=discord.AllowedMentions.none())
        else:
            await surface.channel.send(text, allowed_mentions=discord.AllowedMentions.none())


async def resolve_request(
    services: Services, request: JobRequest, guild_id: int | None, surface: Surface, *, size: str | None
) -> JobRequest:
    """Whether the bot may be used here, and the server's and the model's defaults for what the member left
    out. Raises InputError."""
    settings = await get_guild_settings(services.db, guild_id) if guild_id is not None else None
    changes: dict[str, Any] = {}
    if settings is not None:
        check_channel(settings, surface.channel, surface.private_locale)
        if settings.default_model and request.model is None:
            # A server's own model is a Gemini model: such requests don't fail over to the other provider,
            # which wouldn't know that model id.
            changes["model"], changes["provider"] = settings.default_model, "gemini"
    spec = services.spec_for(changes.get("model", request.model))
    if size is None and settings is not None and settings.default_size in spec.sizes:
        size = settings.default_size
    changes["size"] = size or default_size(spec)
    if settings is not None:
        if request.aspect_ratio is None and settings.default_aspect_ratio in spec.aspect_ratios:
            changes["aspect_ratio"] = settings.default_aspect_ratio
        if request.thinking is None and settings.default_thinking in spec.thinking_levels:
            changes["thinking"] = settings.default_thinking
        # Set on every request (a reply copies its parent's), so a change applies from the next one.
        changes["previews"] = settings.previews is not False
    return dataclasses.replace(request, **changes)


def check_channel(settings: GuildSettings, channel: object, locale: str) -> None:
    """Whether the server's admins let the bot be used in `channel` (a thread counts as its channel). Raises
    InputError naming the channels it may be used in."""
    allowed = settings.allowed_channels
    here = {getattr(channel, "id", None), getattr(channel, "parent_id", None)}
    if allowed and not here & set(allowed):
        channels = " ".join(f"<#{c}>" for c in allowed)
        raise InputError(t(locale, "settings.channel_not_allowed", channels=channels))


async def resolve_character(
    services: Services, request: JobRequest, guild_id: int | None, name: str, locale: str
) -> JobRequest:
    """A character's name -> its id and current version on the request. Its sheet and images are added when
    the job runs (bot/jobs/conversation.py), from that version: a reroll, or a grid's Reroll and V buttons,
    make the same character again even after it changed."""
    character = await get_character(services.db, guild_id, name) if guild_id is not None else None
    if character is None:
        raise InputError(t(locale, "input.character_unknown", name=name))
    return dataclasses.replace(
        request, character_id=character.id, character_name=character.name, character_version=character.version
    )


async def submit(
    services: Services,
    job: Job,
    surface: Surface,
    *,
    member_daily: int | None = None,
    server_speed: bool = False,
) -> bool:
    """Queue the job behind a presenter for `surface`; on a refused quota, tell the member. True if queued.
    `member_daily` is the member's daily limit from their roles (ui/rules.py), if any. With `server_speed` (a
    button's job: no speed was asked for) the job takes the server's default speed."""
    if server_speed:
        try:
            job.speed = await choose_speed(
                services, None if job.user_install else job.guild_id, None, surface.private_locale
            )
        except InputError as exc:
            await surface.error(str(exc))
            return False
    try:
        await services.jobs.submit(job, DiscordPresenter(services, surface, job), member_daily=member_daily)
    except (LimitExceeded, BudgetExceeded) as refused:
        await surface.error(limit_text(surface.private_locale, refused))
        return False
    return True


async def choose_speed(services: Services, guild_id: int | None, asked: str | None, locale: str) -> str:
    """'fast' or 'relax': the member's choice, else the server's default. Raises InputError where the server
    allows relax only and fast was asked for, or relax is asked for and the bot has no provider for it."""
    settings = await get_guild_settings(services.db, guild_id) if guild_id is not None else None
    relax_only = settings is not None and settings.relax_only is True
    default = "relax" if relax_only else (settings.default_speed if settings is not None else None) or "fast"
    speed = asked or default
    if relax_only and speed != "relax":
        raise InputError(t(locale, "speed.relax_only"))
    if speed == "relax" and not services.jobs.relax.available:
        raise InputError(t(locale, "speed.relax_unavailable"))
    return speed


async def start_job(
    services: Services,
    interaction: discord.Interaction,
    surface: Surface,
    request: JobRequest,
    attached: Sequence[tuple[str, discord.Attachment]],
    *,
    kind: str,
    defer_ms: float,
    size: str | None,
    character: str | None,
    speed: str | None = None,
) -> None:
    """A command's one job: the server's rules, then inputs checked and read, then queued in this channel (in
    its thread if it is one). `speed` is the member's choice of fast or relax (None: the server's default)."""
    requester = Requester.of_interaction(interaction)
    admitted = await admit(services, requester, [request.prompt], surface)
    if admitted is None:
        return
    # Through a member's own install no server's settings (or characters) apply.
    guild_id = None if requester.user_install else interaction.guild_id
    try:
        chosen_speed = await choose_speed(services, guild_id, speed, surface.private_locale)
    except InputError as exc:
        await surface.error(str(exc))
        return
    left_out: list[str] = []
    taken = await take_inputs(
        services,
        surface,
        request,
        attached,
        guild_id=guild_id,
        size=size,
        character=character,
        left_out=left_out,
    )
    if taken is None or not await admit_character(services, requester, taken, surface):
        return
    channel = interaction.channel
    assert channel is not None
    job = Job(
        guild_id=interaction.guild_id,
        channel_id=channel.id,
        user_id=interaction.user.id,
        kind=kind,
        locale=surface.locale,
        request=taken,
        thread_id=channel.id if isinstance(channel, discord.Thread) and not requester.user_install else None,
        defer_ms=defer_ms,
        user_install=requester.user_install,
        speed=chosen_speed,
    )
    # After the job's status is shown: a follow-up before it would take the place of "thinking…".
    if await submit(services, job, surface, member_daily=admitted.daily) and left_out:
        await tell(surface, "\n".join(left_out))


def default_size(spec: ModelSpec) -> str:
    return DEFAULT_SIZE if DEFAULT_SIZE in spec.sizes else spec.sizes[0]


#: The speed option of the commands that make images.
SPEEDS = [
    app_commands.Choice(name=app_commands.locale_str("fast", key="choice.speed.fast"), value="fast"),
    app_commands.Choice(
        name=app_commands.locale_str("relax (half price, later)", key="choice.speed.relax"), value="relax"
    ),
]


def ratio_choices(spec: ModelSpec) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=r, value=r) for r in spec.aspect_ratios][:25]  # Discord's limit


def size_choices(spec: ModelSpec) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=s, value=s) for s in spec.sizes]


def thinking_choice(level: str) -> app_commands.Choice[str]:
    """A thinking level, named in the member's language (see bot/ui/translator.py)."""
    return app_commands.Choice(name=app_commands.locale_str(level, key=f"choice.thinking.{level}"), value=level)


def message_images(message: discord.Message) -> list[discord.Attachment]:
    """The images attached to a message (by content type, or by file name where Discord gave none)."""
    return [
        a
        for a in message.attachments
        if (a.content_type or "").startswith("image/") or a.filename.lower().endswith(IMAGE_SUFFIXES)
    ]


def attached_only(options: Sequence[tuple[str, discord.Attachment | None]]) -> list[tuple[str, discord.Attachment]]:
    """The attachment options the member filled in, with their names (errors name the option)."""
    return [(name, a) for name, a in options if a is not None]


def elapsed_ms(since: float) -> float:
    return (time.monotonic() - since) * 1000
