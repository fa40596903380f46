"""A cog whose slash command is built when it loads, from the configured model's capabilities.

discord.py reads a command's choices from decorators when the class is defined, before the settings are
known; these cogs build theirs in `build` (so /imagine offers only the sizes and ratios the model takes)
and add it to the tree themselves.
"""

from __future__ import annotations

from typing import Any

from discord import app_commands
from discord.ext import commands

from bot.core.models import ModelSpec
from bot.ui.context import Services


def user_installable(services: Services) -> dict[str, Any]:
    """For a command members may also use through their own install of the app (in DMs with the bot and in
    servers that haven't added it), unless BANANA_USER_INSTALL_DAILY turns user installs off."""
    on = services.settings.limits.user_install_daily > 0
    return {
        "allowed_installs": app_commands.AppInstallationType(guild=True, user=on),
        # Uses outside servers (DMs included) are what the cap counts: with it at 0 they aren't offered.
        "allowed_contexts": app_commands.AppCommandContext(guild=True, dm_channel=on, private_channel=on),
    }


class ModelCommandCog(commands.Cog):
    command: app_commands.Command[Any, ..., None] | app_commands.Group

    def __init__(self, bot: commands.Bot | commands.AutoShardedBot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.command = self.build(services.default_spec)

    def build(self, spec: ModelSpec) -> app_commands.Command[Any, ..., None] | app_commands.Group:
        raise NotImplementedError

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.command)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.command.name)
