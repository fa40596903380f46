"""Picking jobs up after a restart: each interrupted job gets a presenter that posts through its channel
(the interaction token is gone), editing the old status message where there is one."""

from __future__ import annotations

import contextlib
import logging

import discord

from bot.i18n import t
from bot.jobs.presenting import JobPresenter
from bot.ui.context import Services
from bot.ui.errors import clip
from bot.ui.grid import GridPresenter, resumed_grid_presenter
from bot.ui.presenter import DiscordPresenter
from bot.ui.surfaces import DEFAULT_UPLOAD_LIMIT, ChannelSurface, send_dm
from storage.grids import get_grid
from storage.jobs import Job

log = logging.getLogger(__name__)


class Resumer:
    """Presenters for the jobs one start picks up; a grid's tiles share one, as they did before."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._grids: dict[str, GridPresenter] = {}

    async def presenter_for(self, job: Job) -> JobPresenter | None:
        """None if the job's channel is gone (the member is told by DM, where their DMs are open)."""
        surface = await self._surface(job)
        if surface is None:
            return None
        if job.grid_id is None:
            return DiscordPresenter(self.services, surface, job, resumed=True)
        # Grids whose tiles have all ended are posted: their presenters are let go (relax grids come every day).
        self._grids = {grid_id: grid for grid_id, grid in self._grids.items() if grid.pending}
        grid = self._grids.get(job.grid_id)
        if grid is None:
            stored = await get_grid(self.services.db, job.grid_id)
            if stored is None:
                return DiscordPresenter(self.services, surface, job, resumed=True)
            grid = await resumed_grid_presenter(self.services, stored, surface)
            self._grids[job.grid_id] = grid
        return grid.for_tile(job)

    async def _surface(self, job: Job) -> ChannelSurface | None:
        channel = await self.services.resolve_channel(job.channel_id)
        if not isinstance(channel, discord.abc.Messageable) and job.user_install and job.guild_id is not None:
            # Made through the member's own install in a server without the bot: the result goes to their DMs.
            with contextlib.suppress(discord.HTTPException):
                channel = await self.services.client.create_dm(discord.Object(job.user_id))
        if not isinstance(channel, discord.abc.Messageable):
            key = "job.channel_gone"
            if job.speed == "relax":  # no restart involved; a delivered relax image is paid for
                key = "job.channel_gone_relax_done" if job.status == "done" else "job.channel_gone_relax"
            text = t(job.locale, key, prompt=clip(job.request.prompt, 200))
            await send_dm(self.services.client, job.user_id, text)
            return None
        guild = getattr(channel, "guild", None)
        status = None
        if job.status_message_id is not None:
            status = channel.get_partial_message(job.status_message_id)
        return ChannelSurface(
            channel,
            locale=job.locale,
            upload_limit=guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT,
            status_message=status,
            mention=discord.Object(job.user_id),
        )
