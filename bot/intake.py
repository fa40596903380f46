"""From Discord input to a queued job: reading attachments, checking them before anything is spent,
and telling the member when a limit refuses the job. Shared by every command, button and thread reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import discord
from discord import app_commands

from storage.characters import get_character, list_characters
from storage.guild_settings import get_guild_settings
from storage.jobs import Job

from .core.errors import InvalidRequest
from .core.imaging import prepare_reference, shrink_reference
from .core.models import ModelSpec, model_spec
from .core.service import validate
from .core.types import ImageInput, ImageRequest
from .i18n import money, t, tn
from .jobs import BudgetExceeded, LimitExceeded
from .presenter import DiscordPresenter, Surface

if TYPE_CHECKING:
    from .client import BananaBot

log = logging.getLogger(__name__)


class InputError(Exception):
    """Bad input from a member, already worded for them."""


#: Attachments larger than this aren't even downloaded (bigger ones would be downscaled anyway).
DOWNLOAD_LIMIT = 50 * 1024 * 1024


async def read_references(
    bot: BananaBot, attachments: Sequence[tuple[str, discord.Attachment]], locale: str
) -> tuple[list[str], list[dict[str, Any]]]:
    """Download, check, shrink if needed and store each attachment.

    Returns the image-store keys and a note for each downscaled image (shown with the result).
    Raises InputError naming the option."""
    keys, notes = [], []
    for option, attachment in attachments:
        if attachment.size > DOWNLOAD_LIMIT:
            raise InputError(t(locale, "input.too_large", option=option, mb=f"{DOWNLOAD_LIMIT / 2**20:.0f}"))
        try:
            data = await attachment.read()
        except discord.HTTPException as exc:
            raise InputError(t(locale, "input.unreadable", option=option)) from exc
        try:
            image = await asyncio.to_thread(prepare_reference, data, name=option, max_bytes=DOWNLOAD_LIMIT)
        except InvalidRequest as exc:
            raise InputError(t(locale, "input.not_image", option=option, detail=str(exc))) from exc
        sent = await asyncio.to_thread(shrink_reference, image)
        if sent is not image:
            notes.append({"option": option, "from": [image.width, image.height], "to": [sent.width, sent.height]})
        keys.append(await bot.runtime.images.put(sent.data, sent.mime, width=sent.width, height=sent.height))
    return keys, notes


def check_request(spec: ModelSpec, request: dict[str, Any], reference_count: int, locale: str) -> None:
    """The model's own limits (size, ratio, thinking, reference count), checked before anything is queued."""
    probe = ImageRequest(
        prompt=request["prompt"],
        aspect_ratio=request.get("aspect_ratio"),
        size=request.get("size") or "1K",
        thinking=request.get("thinking"),
        references=tuple(ImageInput(b"", "image/png") for _ in range(reference_count)),
    )
    try:
        validate(probe, spec)
    except InvalidRequest as exc:
        raise InputError(t(locale, "error.invalid", detail=str(exc))) from exc


async def character_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """The `character` option: the guild's characters whose name starts with what the member typed."""
    if interaction.guild_id is None:
        return []
    bot = cast("BananaBot", interaction.client)
    found = await list_characters(bot.jobs.db, interaction.guild_id, current, limit=25)
    return [app_commands.Choice(name=c.name, value=c.name) for c in found]


async def take_inputs(
    bot: BananaBot,
    surface: Surface,
    request: dict[str, Any],
    attached: Sequence[tuple[str, discord.Attachment]],
    *,
    guild_id: int | None = None,
) -> bool:
    """Check the request against the model and read its attachments into it (``reference_keys``,
    ``input_notes``). False, with the member told why, when something is wrong; nothing is spent."""
    try:
        if guild_id is not None:
            await apply_guild_settings(bot, request, guild_id, surface)
        spec = model_spec(request.get("model") or bot.default_model, price_overrides=bot.settings.price_overrides)
        request["size"] = request.get("size") or default_size(spec)
        count = len(request.get("reference_keys", [])) + len(attached)
        check_request(spec, request, count, surface.private_locale)
        await resolve_character(bot, request, guild_id, surface.private_locale)
        keys, notes = await read_references(bot, attached, surface.private_locale)
    except InputError as exc:
        await surface.error(str(exc))
        return False
    request["reference_keys"] = [*request.get("reference_keys", []), *keys]
    if notes:
        request["input_notes"] = notes
    return True


async def apply_guild_settings(bot: BananaBot, request: dict[str, Any], guild_id: int, surface: Surface) -> None:
    """Where the bot may be used in this guild, and its defaults for what the member left out."""
    settings = await get_guild_settings(bot.jobs.db, guild_id)
    allowed = settings.allowed_channels
    channel = surface.channel
    here = {getattr(channel, "id", None), getattr(channel, "parent_id", None)}  # a thread counts as its channel
    if allowed and not here & set(allowed):
        channels = " ".join(f"<#{c}>" for c in allowed)
        raise InputError(t(surface.private_locale, "settings.channel_not_allowed", channels=channels))
    if settings.default_model and not request.get("model"):
        # A server's own model is a Gemini model: such requests don't fail over to the other provider,
        # which wouldn't know that model id.
        request["model"], request["provider"] = settings.default_model, "gemini"
    spec = model_spec(request.get("model") or bot.default_model, price_overrides=bot.settings.price_overrides)
    if not request.get("size") and settings.default_size in spec.sizes:
        request["size"] = settings.default_size
    if not request.get("aspect_ratio") and settings.default_aspect_ratio in spec.aspect_ratios:
        request["aspect_ratio"] = settings.default_aspect_ratio
    if not request.get("thinking") and settings.default_thinking in spec.thinking_levels:
        request["thinking"] = settings.default_thinking
    # Set on every request (a reply copies its parent's), so a change applies from the next one.
    request["previews"] = settings.previews is not False


async def resolve_character(bot: BananaBot, request: dict[str, Any], guild_id: int | None, locale: str) -> None:
    """``request["character"]`` (a name the member picked) -> the character's id; its sheet and images are
    added when the job runs (bot.jobs), so a reroll uses the character as it is then."""
    name = request.pop("character", None)
    if not name:
        return
    character = await get_character(bot.jobs.db, guild_id, name) if guild_id is not None else None
    if character is None:
        raise InputError(t(locale, "input.character_unknown", name=name))
    request["character_id"], request["character_name"] = character.id, character.name


async def submit(bot: BananaBot, job: Job, surface: Surface) -> bool:
    """Queue the job behind a presenter for `surface`; on a refused quota, tell the member. True if queued."""
    try:
        await bot.jobs.submit(job, DiscordPresenter(bot, surface))
    except (LimitExceeded, BudgetExceeded) as exc:
        await surface.error(limit_text(surface.private_locale, exc))
        return False
    return True


async def start_job(
    bot: BananaBot,
    interaction: discord.Interaction,
    surface: Surface,
    request: dict[str, Any],
    attached: Sequence[tuple[str, discord.Attachment]],
    *,
    kind: str,
    defer_ms: float,
) -> None:
    """A command's one job: inputs checked and read, then queued in this channel (in its thread if it is one)."""
    if not await take_inputs(bot, surface, request, attached, guild_id=interaction.guild_id):
        return
    channel = interaction.channel
    assert channel is not None
    job = Job(
        guild_id=interaction.guild_id,
        channel_id=channel.id,
        user_id=interaction.user.id,
        kind=kind,
        locale=surface.locale,
        request=request,
        thread_id=channel.id if isinstance(channel, discord.Thread) else None,
        defer_ms=defer_ms,
    )
    await submit(bot, job, surface)


def default_size(spec: ModelSpec) -> str:
    return "1K" if "1K" in spec.sizes else spec.sizes[0]


def ratio_choices(spec: ModelSpec) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=r, value=r) for r in spec.aspect_ratios][:25]  # Discord's limit


def size_choices(spec: ModelSpec) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=s, value=s) for s in spec.sizes]


def thinking_choice(level: str) -> app_commands.Choice[str]:
    """A thinking level, named in the member's language (see bot.translator)."""
    return app_commands.Choice(name=app_commands.locale_str(level, key=f"choice.thinking.{level}"), value=level)


def attached_only(options: Sequence[tuple[str, discord.Attachment | None]]) -> list[tuple[str, discord.Attachment]]:
    """The attachment options the member filled in, with their names (errors name the option)."""
    return [(name, a) for name, a in options if a is not None]


def limit_text(locale: str, exc: LimitExceeded | BudgetExceeded) -> str:
    """Which limit refused the request, and when it frees up."""
    if isinstance(exc, BudgetExceeded):
        return t(
            locale,
            "limit.budget",
            needed=money(locale, exc.needed),
            left=money(locale, exc.left),
            budget=money(locale, exc.budget),
            reset=f"<t:{int(exc.resets_at)}:R>",
        )
    if exc.resets_at is None:
        return tn(locale, f"limit.{exc.limit}", exc.allowed)
    # Discord shows <t:...:R> as "in 5 hours" in each reader's own language and time zone.
    reset = f"<t:{int(exc.resets_at)}:R>"
    if exc.used < exc.allowed:  # some left, but not enough for this request (a grid needs four)
        left = exc.allowed - exc.used
        return tn(locale, f"limit.{exc.limit}_short", exc.needed, left=left, reset=reset)
    return tn(locale, f"limit.{exc.limit}", exc.allowed, reset=reset)


def elapsed_ms(since: float) -> float:
    return (time.monotonic() - since) * 1000
