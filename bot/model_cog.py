"""A cog whose slash command is built when it loads, from the configured model's capabilities.

discord.py reads a command's choices from decorators when the class is defined, before the settings are
known; these cogs build theirs in `build` (so /imagine offers only the sizes and ratios the model takes)
and add it to the tree themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from discord import app_commands
from discord.ext import commands

from .core.models import ModelSpec

if TYPE_CHECKING:
    from .client import BananaBot


class ModelCommandCog(commands.Cog):
    command: app_commands.Command[Any, ..., None]

    def __init__(self, bot: BananaBot) -> None:
        self.bot = bot
        self.command = self.build(bot.default_spec)

    def build(self, spec: ModelSpec) -> app_commands.Command[Any, ..., None]:
        raise NotImplementedError

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.command)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.command.name)
