"""/show: a past result posted again with its live buttons and a link to its thread.

The member names the result by the id at the end of its footer, by a link to its message, or picks one of
their own from the autocomplete. Only the member sees it unless they ask for `public`. A result is shown
only in the server it was made in; a grid comes back as its 2x2 preview with U and V buttons.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import t
from bot.ui.commands import user_installable
from bot.ui.context import Services
from bot.ui.errors import clip
from bot.ui.intake import InputError, check_channel
from bot.ui.results import ResultCopy, grid_copy, job_copy
from bot.ui.rules import Requester, admit
from bot.ui.surfaces import InteractionSurface
from storage.grids import Grid, get_grid
from storage.guild_settings import get_guild_settings
from storage.jobs import Job, ShownResult, get_job, recent_results, result_for_message

#: A link to a message, as "Copy Message Link" gives it.
MESSAGE_LINK = re.compile(
    r"https?://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(?:\d+|@me)/\d+/(?P<message>\d+)"
)
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
#: How many of a member's newest results the autocomplete searches.
RECENT = 200


class Show(commands.Cog):
    def __init__(self, bot: commands.Bot | commands.AutoShardedBot, services: Services) -> None:
        self.bot = bot
        self.services = services
        # Also through members' own installs, like /imagine and /edit (settings decide, so set here).
        for name, value in user_installable(services).items():
            setattr(self.show, name, value)

    @app_commands.command(name="show", description="Show one of the bot's results again, with its buttons.")
    @app_commands.describe(
        job="The id at the end of a result, a link to its message, or one of yours from the list.",
        public="Show it to everyone in this channel (default: only you).",
    )
    async def show(
        self, interaction: discord.Interaction, job: app_commands.Range[str, 1, 200], public: bool = False
    ) -> None:
        received = time.monotonic()
        await interaction.response.defer(ephemeral=not public, thinking=True)
        locale = self.services.public_locale(interaction) if public else str(interaction.locale)
        surface = InteractionSurface(interaction, locale=locale, received_at=received)
        try:
            copy = await self._copy(interaction, job, surface, public=public)
        except InputError as exc:
            await surface.error(str(exc))
            return
        if copy is None:  # refused by the server's rules, and told so
            return
        when = f"<t:{int(copy.created_at)}:R>"
        mention = interaction.user.mention
        lines = [t(locale, "show.shared", member=mention, when=when) if public else t(locale, "show.from", when=when)]
        if copy.thread_id is not None:
            lines.append(t(locale, "show.thread", thread=f"<#{copy.thread_id}>"))
        await surface.result(content="\n".join(lines), embed=copy.embed, file=copy.file, view=copy.view)

    async def _check_origin(self, interaction: discord.Interaction, found: Found, private: str) -> None:
        """A result from an age-restricted channel is shown only in one, and only to members who can see the
        channel it was made in. Raises InputError."""
        if found.grid is not None:
            origin_id = found.grid.channel_id
        elif found.job is not None:
            origin_id = found.job.channel_id
        else:
            return
        origin = await self.services.resolve_channel(origin_id)
        if origin is None:
            return  # the channel is gone: nothing left to protect
        here = interaction.channel
        origin_nsfw = isinstance(origin, discord.TextChannel | discord.Thread) and origin.is_nsfw()
        here_nsfw = isinstance(here, discord.TextChannel | discord.Thread) and here.is_nsfw()
        if origin_nsfw and not here_nsfw:
            raise InputError(t(private, "show.nsfw_origin"))
        member = interaction.user
        hidden = (
            isinstance(member, discord.Member)
            and isinstance(origin, discord.abc.GuildChannel | discord.Thread)
            and not origin.permissions_for(member).view_channel
        )
        if hidden:
            raise InputError(t(private, "show.not_found"))

    async def _copy(
        self, interaction: discord.Interaction, asked: str, surface: InteractionSurface, *, public: bool
    ) -> ResultCopy | None:
        """The result `asked` names, ready to post; None if the server's rules refuse the member (they were
        told). Raises InputError saying what is wrong, before anything is read."""
        services, private, locale = self.services, surface.private_locale, surface.locale
        found = await find_result(services, asked)
        if found is None or (found.guild_id is None and found.user_id != interaction.user.id):
            raise InputError(t(private, "show.not_found"))
        if found.guild_id != interaction.guild_id:
            raise InputError(t(private, "show.other_server"))
        if found.status in ("queued", "running"):
            raise InputError(t(private, "show.not_ready"))
        if found.status != "done":
            raise InputError(t(private, "show.no_image"))
        if await admit(services, Requester.of_interaction(interaction), [found.prompt], surface) is None:
            return None
        if found.guild_id is not None:
            check_channel(await get_guild_settings(services.db, found.guild_id), interaction.channel, private)
            await self._check_origin(interaction, found, private)
        try:
            if found.grid is not None:
                return await grid_copy(
                    services.db, services.images, found.grid, locale, default_model=services.default_model
                )
            assert found.job is not None
            return await job_copy(
                services.db,
                services.images,
                found.job,
                locale,
                upload_limit=interaction.filesize_limit,
                default_model=services.default_model,
                deletable=public,
            )
        except FileNotFoundError:
            raise InputError(t(private, "show.image_gone")) from None

    @show.autocomplete("job")
    async def complete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """The member's own recent results in this server, newest first, matching what they typed."""
        locale = str(interaction.locale)
        needle = current.strip().casefold()
        results = await recent_results(self.services.db, interaction.guild_id, interaction.user.id, limit=RECENT)
        matching = [r for r in results if needle in r.prompt.casefold() or r.id.casefold().startswith(needle)]
        return [app_commands.Choice(name=choice_name(locale, r), value=r.id) for r in matching[:25]]


def choice_name(locale: str, result: ShownResult) -> str:
    """'a lighthouse at dusk · AbC123' (a grid says so): at most 100 characters, Discord's limit."""
    key = "show.choice_grid" if result.kind == "grid" else "show.choice"
    room = 100 - len(t(locale, key, prompt="", id=result.id))
    prompt = " ".join(result.prompt.split())
    return t(locale, key, prompt=clip(prompt, max(room, 1)), id=result.id)[:100]


@dataclass(frozen=True)
class Found:
    """The result a member named: one job's image, or a grid's preview."""

    job: Job | None = None
    grid: Grid | None = None

    @property
    def guild_id(self) -> int | None:
        return self.grid.guild_id if self.grid is not None else self.job.guild_id if self.job is not None else None

    @property
    def user_id(self) -> int:
        made = self.grid or self.job
        assert made is not None
        return made.user_id

    @property
    def prompt(self) -> str:
        made = self.grid or self.job
        assert made is not None
        return made.request.prompt

    @property
    def status(self) -> str:
        if self.grid is not None:  # its preview is posted once every tile is in
            return "done" if self.grid.tile_keys else "running"
        assert self.job is not None
        return self.job.status


async def find_result(services: Services, asked: str) -> Found | None:
    """The result for what the member typed: a link to a result's message, a job or grid id, or a footer
    copied whole ('Version 2 · AbC123': the id comes last)."""
    db = services.db
    text = asked.strip()
    link = MESSAGE_LINK.search(text)
    if link is not None:
        shown = await result_for_message(db, int(link["message"]))
        if shown is None:
            return None
        if shown.kind == "grid":
            grid = await get_grid(db, shown.id)
            return Found(grid=grid) if grid is not None else None
        text = shown.id
    words = text.split()
    candidate = words[-1] if words else ""
    if not JOB_ID.fullmatch(candidate):
        return None
    job = await get_job(db, candidate)
    if job is not None:
        return Found(job=job)
    grid = await get_grid(db, candidate)
    return Found(grid=grid) if grid is not None else None
