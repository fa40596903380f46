"""/settings: what a server's admins (Manage Server) can change about the bot there.

Discord hides the command from members without Manage Server (default permissions); the handler checks
again, because server admins can change who sees a command.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import BananaBot
from bot.i18n import t
from storage.guild_settings import get_guild_settings, set_grid_mode

GRID_MODES = [
    app_commands.Choice(name="tiles: four requests, most reliable", value="tiles"),
    app_commands.Choice(name="sliced: one 2x2 request, about a quarter of the cost", value="sliced"),
    app_commands.Choice(name="default: the bot's setting", value="default"),
]


class Settings(commands.Cog):
    def __init__(self, bot: BananaBot) -> None:
        self.bot = bot

    @app_commands.command(name="settings", description="See or change how Banana Bot works in this server.")
    @app_commands.describe(grid_mode="How /grid makes its four variations.")
    @app_commands.choices(grid_mode=GRID_MODES)
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    async def settings(self, interaction: discord.Interaction, grid_mode: str | None = None) -> None:
        locale = str(interaction.locale)
        assert interaction.guild_id is not None
        if not interaction.permissions.manage_guild:
            await interaction.response.send_message(t(locale, "settings.not_allowed"), ephemeral=True)
            return
        db = self.bot.jobs.db
        if grid_mode is not None:
            await set_grid_mode(
                db, interaction.guild_id, None if grid_mode == "default" else grid_mode, updated_by=interaction.user.id
            )
        current = await get_guild_settings(db, interaction.guild_id)
        default = self.bot.settings.grid_mode
        embed = discord.Embed(title=t(locale, "settings.title"))
        value = current.grid_mode or t(locale, "settings.default_value", value=default)
        embed.add_field(name=t(locale, "settings.grid_mode"), value=value, inline=False)
        content = t(locale, "settings.saved") if grid_mode is not None else None
        await interaction.response.send_message(content, embed=embed, ephemeral=True)


async def setup(bot: BananaBot) -> None:
    await bot.add_cog(Settings(bot))
