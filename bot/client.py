"""The Discord client. Commands arrive as cogs in ``cogs/``; this class owns start-up and shutdown."""

from __future__ import annotations

import logging

import discord
from discord.ext import commands

from .config import Settings
from .runtime import Runtime

log = logging.getLogger(__name__)


class BananaBot(commands.Bot):
    runtime: Runtime

    def __init__(self, settings: Settings) -> None:
        # No privileged intents: slash commands, and replies/mentions carry their own content.
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default(), help_command=None)
        self.settings = settings

    async def setup_hook(self) -> None:
        self.runtime = await Runtime.open(self.settings)
        log.info("generation service ready: providers %s", ", ".join(self.settings.configured_providers))

    async def close(self) -> None:
        await super().close()
        if hasattr(self, "runtime"):
            await self.runtime.aclose()
