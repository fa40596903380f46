"""The Discord client. Commands arrive as cogs in ``cogs/``; this class owns start-up and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import discord
from discord.ext import commands

from .config import Settings
from .runtime import Runtime

log = logging.getLogger(__name__)

#: ``banana-bot health`` (the container's health check) treats an older heartbeat as unhealthy.
HEARTBEAT_INTERVAL = 30.0
HEARTBEAT_MAX_AGE = 120.0


def heartbeat_path(settings: Settings) -> Path:
    return settings.data_dir / "heartbeat"


class BananaBot(commands.Bot):
    runtime: Runtime

    def __init__(self, settings: Settings) -> None:
        # No privileged intents: slash commands, and replies/mentions carry their own content.
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default(), help_command=None)
        self.settings = settings

    async def setup_hook(self) -> None:
        self.runtime = await Runtime.open(self.settings)
        self._heartbeat = asyncio.create_task(self._beat(), name="heartbeat")
        log.info("generation service ready: providers %s", ", ".join(self.settings.configured_providers))

    async def _beat(self) -> None:
        """Touch a file while connected to Discord, so a supervisor can tell a live bot from a stuck one."""
        path = heartbeat_path(self.settings)
        while True:
            if self.is_ready() and not self.is_closed():
                await asyncio.to_thread(path.write_text, f"{time.time():.0f}\n")
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def close(self) -> None:
        if hasattr(self, "_heartbeat"):
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await super().close()
        if hasattr(self, "runtime"):
            await self.runtime.aclose()
