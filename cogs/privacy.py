"""Data people own: /forget-me deletes a member's generations and images; /purge-server deletes a server's.

Both ask first, with a persistent button only the asker can press. Neither runs while the member's (or the
server's) jobs are still waiting or running, so nothing is written back after the delete.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import t, tn
from bot.ui.context import Services
from bot.ui.views import bound
from storage.forget import forget_user, purge_guild

CONFIRM_ID = re.compile(r"forget:(?P<scope>me|guild):(?P<target>[0-9]{1,20}):(?P<user_id>[0-9]{1,20})")


class ConfirmButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CONFIRM_ID):
    #: Set on the subclass the Privacy cog registers (views.bound).
    handler: ClassVar[Callable[[discord.Interaction, str, int, int], Awaitable[None]]]

    def __init__(self, scope: str, target: int, user_id: int, label: str = "-") -> None:
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.danger, label=label, custom_id=f"forget:{scope}:{target}:{user_id}"
            )
        )
        self.scope, self.target, self.user_id = scope, target, user_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ConfirmButton:
        return cls(match["scope"], int(match["target"]), int(match["user_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await type(self).handler(interaction, self.scope, self.target, self.user_id)


class Privacy(commands.Cog):
    def __init__(self, bot: commands.Bot | commands.AutoShardedBot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.buttons = bound(ConfirmButton, CONFIRM_ID, self.confirmed)

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(self.buttons)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(self.buttons)

    @app_commands.command(name="forget-me", description="Delete everything Banana Bot keeps about your images.")
    async def forget_me(self, interaction: discord.Interaction) -> None:
        locale = str(interaction.locale)
        await self._ask(interaction, "me", interaction.user.id, t(locale, "forget.me_confirm"), locale)

    @app_commands.command(name="purge-server", description="Delete everything Banana Bot keeps about this server.")
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    async def purge_server(self, interaction: discord.Interaction) -> None:
        locale = str(interaction.locale)
        if not interaction.permissions.manage_guild:
            await interaction.response.send_message(t(locale, "settings.not_allowed"), ephemeral=True)
            return
        assert interaction.guild_id is not None
        await self._ask(interaction, "guild", interaction.guild_id, t(locale, "forget.guild_confirm"), locale)

    async def _ask(self, interaction: discord.Interaction, scope: str, target: int, text: str, locale: str) -> None:
        view = discord.ui.View(timeout=None)
        view.add_item(self.buttons(scope, target, interaction.user.id, t(locale, "forget.confirm_button")))
        await interaction.response.send_message(text, view=view, ephemeral=True)

    async def confirmed(self, interaction: discord.Interaction, scope: str, target: int, user_id: int) -> None:
        locale = str(interaction.locale)
        if interaction.user.id != user_id or (scope == "guild" and not interaction.permissions.manage_guild):
            await interaction.response.send_message(t(locale, "forget.not_yours"), ephemeral=True)
            return
        jobs = self.services.jobs
        busy = await jobs.pending_for_user(target) if scope == "me" else await jobs.pending_in_lane(target)
        if busy:
            await interaction.response.send_message(t(locale, "forget.busy"), ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        db, images = self.services.db, self.services.images
        if scope == "me":
            done = await forget_user(db, images, target)
        else:
            done = await purge_guild(db, images, target)
            self.services.pinned_locales.pop(target, None)
        text = t(
            locale,
            "forget.done",
            requests=tn(locale, "forget.requests", done.jobs),
            records=tn(locale, "forget.records", done.generations),
            images=tn(locale, "forget.images", done.images),
        )
        if scope == "guild":
            text += " " + tn(locale, "forget.characters", done.characters)
        await interaction.followup.send(text, ephemeral=True)
