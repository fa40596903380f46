"""/settings: what a server's admins (Manage Server) can change about the bot there.

Discord hides the command from members without Manage Server (default permissions); the handler checks
again, because server admins can change who sees a command.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import BananaBot
from bot.i18n import money, t
from storage.guild_settings import get_guild_settings, update_guild_settings

GRID_MODES = [
    app_commands.Choice(name="tiles: four requests, most reliable", value="tiles"),
    app_commands.Choice(name="sliced: one 2x2 request, about a quarter of the cost", value="sliced"),
    app_commands.Choice(name="default: the bot's setting", value="default"),
]


class Settings(commands.Cog):
    def __init__(self, bot: BananaBot) -> None:
        self.bot = bot

    @app_commands.command(name="settings", description="See or change how Banana Bot works in this server.")
    @app_commands.describe(
        grid_mode="How /grid makes its four variations.",
        monthly_budget="Most this server may spend per calendar month (UTC), in US dollars; 0 for no budget.",
    )
    @app_commands.choices(grid_mode=GRID_MODES)
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    async def settings(
        self,
        interaction: discord.Interaction,
        grid_mode: str | None = None,
        monthly_budget: app_commands.Range[float, 0, 1_000_000] | None = None,
    ) -> None:
        locale = str(interaction.locale)
        assert interaction.guild_id is not None
        if not interaction.permissions.manage_guild:
            await interaction.response.send_message(t(locale, "settings.not_allowed"), ephemeral=True)
            return
        db = self.bot.jobs.db
        changes: dict[str, object] = {}
        if grid_mode is not None:
            changes["grid_mode"] = None if grid_mode == "default" else grid_mode
        if monthly_budget is not None:
            changes["monthly_budget_usd"] = monthly_budget or None  # 0 removes the budget
        await update_guild_settings(db, interaction.guild_id, updated_by=interaction.user.id, **changes)
        current = await get_guild_settings(db, interaction.guild_id)
        default = self.bot.settings.grid_mode
        embed = discord.Embed(title=t(locale, "settings.title"))
        value = current.grid_mode or t(locale, "settings.default_value", value=default)
        embed.add_field(name=t(locale, "settings.grid_mode"), value=value, inline=False)
        budget = current.monthly_budget_usd
        if budget is None:
            budget_text = t(locale, "settings.no_budget")
        else:
            spent = await self.bot.jobs.spent_this_month(interaction.guild_id)
            budget_text = t(locale, "settings.budget_value", spent=money(locale, spent), budget=money(locale, budget))
        embed.add_field(name=t(locale, "settings.budget"), value=budget_text, inline=False)
        size = "1K" if "1K" in self.bot.default_spec.sizes else self.bot.default_spec.sizes[0]
        estimate = self.bot.jobs.estimate_cost(None, size, 1)
        embed.add_field(
            name=t(locale, "settings.estimate"),
            value=t(locale, "settings.estimate_value", size=size, cost=money(locale, estimate)),
            inline=False,
        )
        content = t(locale, "settings.saved") if changes else None
        await interaction.response.send_message(content, embed=embed, ephemeral=True)


async def setup(bot: BananaBot) -> None:
    await bot.add_cog(Settings(bot))
