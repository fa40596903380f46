"""What the Discord-facing code needs from the running bot, handed over by ``bot/client.py``.

Cogs and the UI receive this instead of the bot itself, so nothing here reaches through the client for
its parts, and ``bot/client.py`` stays the one place that wires things together.
"""

from __future__ import annotations

from dataclasses import dataclass

import discord

from bot.config import Settings
from bot.core.models import ModelSpec, model_spec
from bot.jobs.runner import JobRunner
from bot.ui.modlog import ModLog
from storage.db import Database
from storage.images import ImageStore

Channel = discord.abc.GuildChannel | discord.Thread | discord.abc.PrivateChannel


@dataclass
class Services:
    settings: Settings
    db: Database
    images: ImageStore
    jobs: JobRunner
    #: The first provider's model: what a request that names none is made with.
    default_model: str
    #: Guilds whose admins pinned a language for public messages (/settings language), kept in memory
    #: because every status message needs it.
    pinned_locales: dict[int, str]
    #: The connection to Discord, for channels and DMs a job needs outside an interaction.
    client: discord.Client
    #: The moderators' log of each server that has one.
    modlog: ModLog

    @property
    def default_spec(self) -> ModelSpec:
        return self.spec_for(None)

    def spec_for(self, model: str | None) -> ModelSpec:
        return model_spec(model or self.default_model, price_overrides=self.settings.price_overrides)

    def public_locale(self, interaction: discord.Interaction) -> str:
        """The language for messages everyone in the channel reads: the one the server's admins pinned, else
        the server's Discord language, else the member's."""
        pinned = self.pinned_locales.get(interaction.guild_id or 0)
        return pinned or str(interaction.guild_locale or interaction.locale)

    def guild_locale(self, guild: discord.Guild) -> str:
        return self.pinned_locales.get(guild.id) or str(guild.preferred_locale)

    async def resolve_channel(self, channel_id: int) -> Channel | None:
        channel = self.client.get_channel(channel_id)
        if channel is not None:
            return channel
        try:
            return await self.client.fetch_channel(channel_id)
        except discord.HTTPException:
            return None
