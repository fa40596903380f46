"""A cog whose slash command is built when it loads, from the configured model's capabilities.

discord.py reads a command's choices from decorators when the class is defined, before the settings are
known; these cogs build theirs in `build` (so /imagine offers only the sizes and ratios the model takes)
and add it to the tree themselves.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

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


F = TypeVar("F", bound=Callable[..., Any])


def offered(
    callback: F,
    *,
    descriptions: Mapping[str, str],
    choices: Mapping[str, Sequence[app_commands.Choice[str]]],
    leave_out: Collection[str] = (),
) -> F:
    """`callback` as discord.py will read it: without the options in `leave_out` (what this bot can't do; their
    defaults apply when the command runs), and with the descriptions and choices of the rest."""
    if leave_out:
        # discord.py reads a command's options from inspect.signature, which honours __signature__.
        signature = inspect.signature(callback)
        kept = [parameter for name, parameter in signature.parameters.items() if name not in leave_out]
        setattr(callback, "__signature__", signature.replace(parameters=kept))  # noqa: B010
    callback = app_commands.describe(**{k: v for k, v in descriptions.items() if k not in leave_out})(callback)
    return app_commands.choices(**{k: list(v) for k, v in choices.items() if k not in leave_out})(callback)


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
