"""/settings: what a server's admins (Manage Server) can change about the bot there. Every change applies
from the next request, without a restart.

Discord hides the command from members without Manage Server (default permissions); the handler checks
again, because server admins can change who sees a command.
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.app_commands import locale_str

from bot.core.models import MODELS, ModelSpec, model_spec
from bot.i18n import available_locales, money, t
from bot.ui.commands import ModelCommandCog
from bot.ui.intake import default_size, ratio_choices, size_choices, thinking_choice
from storage.guild_settings import GuildSettings, get_guild_settings, update_guild_settings

DEFAULT = "default"
GRID_MODES = [
    app_commands.Choice(
        name=locale_str("tiles: four requests, most reliable", key="choice.grid_mode.tiles"), value="tiles"
    ),
    app_commands.Choice(
        name=locale_str("sliced: one 2x2 request, about a quarter of the cost", key="choice.grid_mode.sliced"),
        value="sliced",
    ),
    app_commands.Choice(name=locale_str("default: the bot's setting", key="choice.grid_mode.default"), value=DEFAULT),
]
CHARACTER_MANAGERS = [
    app_commands.Choice(
        name=locale_str("creators: a character's creator, and Manage Server", key="choice.managers.creators"),
        value="creators",
    ),
    app_commands.Choice(
        name=locale_str("admins: members with Manage Server only", key="choice.managers.admins"), value="admins"
    ),
]
DESCRIPTIONS = {
    "grid_mode": "How /grid makes its four variations.",
    "monthly_budget": "Most this server may spend per calendar month (UTC), in US dollars; 0 for no budget.",
    "default_size": "Size when a member doesn't pick one.",
    "default_aspect_ratio": "Aspect ratio when a member doesn't pick one.",
    "member_daily": "Images per member per day (0: no limit).",
    "server_daily": "Images for the whole server per day (0: no limit).",
    "server_at_once": "Images this server may have generating at once.",
    "member_at_once": "Images one member may have generating at once.",
    "member_waiting": "Requests one member may have waiting or running.",
    "only_in": "Allow the bot in this channel (repeat to add more; then it works only in those).",
    "everywhere": "Allow the bot in every channel again.",
    "character_managers": "Who may change or delete characters.",
    "default_model": "The Gemini model this server uses (requests then don't fail over to another provider).",
    "default_thinking": "Thinking level when a member doesn't pick one (models that take one).",
    "previews": "Show the model's drafts in the status message while an image renders.",
    "language": "The language of the bot's messages everyone here sees (members' own replies follow their app).",
}


class ServerSettings(ModelCommandCog):
    def build(self, spec: ModelSpec) -> app_commands.Command[Any, ..., None]:
        return build_command(self, spec)

    async def settings(self, interaction: discord.Interaction, changes: dict[str, Any]) -> None:
        locale = str(interaction.locale)
        assert interaction.guild_id is not None
        if not interaction.permissions.manage_guild:
            await interaction.response.send_message(t(locale, "settings.not_allowed"), ephemeral=True)
            return
        db = self.services.db
        current = await get_guild_settings(db, interaction.guild_id)
        problem = self.problem(changes, current, locale)
        if problem is not None:
            await interaction.response.send_message(problem, ephemeral=True)
            return
        values: dict[str, Any] = {}
        for name, value in changes.items():
            if value is None:
                continue
            if name == "monthly_budget_usd":
                values[name] = value or None  # 0 removes the budget
            elif name == "only_in":
                values["allowed_channels"] = tuple(dict.fromkeys((*(current.allowed_channels or ()), value.id)))
            elif name == "everywhere":
                if value:
                    values["allowed_channels"] = None
            else:
                values[name] = None if value == DEFAULT else value
        await update_guild_settings(db, interaction.guild_id, updated_by=interaction.user.id, **values)
        current = await get_guild_settings(db, interaction.guild_id)
        if current.locale:
            self.services.pinned_locales[current.guild_id] = current.locale
        else:
            self.services.pinned_locales.pop(current.guild_id, None)
        embed = await self.embed(locale, current)
        await interaction.response.send_message(
            t(locale, "settings.saved") if values else None, embed=embed, ephemeral=True
        )

    def problem(self, changes: dict[str, Any], current: GuildSettings, locale: str) -> str | None:
        """A sentence on what is accepted, for a thinking level the (new) model doesn't take."""
        thinking = changes.get("default_thinking")
        if thinking in (None, DEFAULT):
            return None
        chosen = changes.get("default_model")
        model = (
            self.services.default_model
            if chosen == DEFAULT
            else chosen or current.default_model or self.services.default_model
        )
        spec = model_spec(model)
        if thinking not in spec.thinking_levels:
            accepted = ", ".join(spec.thinking_levels) or t(locale, "settings.no_thinking")
            return t(locale, "settings.bad_thinking", value=thinking, model=spec.label, accepted=accepted)
        return None

    async def embed(self, locale: str, current: GuildSettings) -> discord.Embed:
        bot_settings, spec = self.services.settings, self.services.default_spec
        limits = self.services.jobs.admission.limits_for(current)

        def shown(value: object, default: object) -> str:
            return str(value) if value is not None else t(locale, "settings.default_value", value=default)

        embed = discord.Embed(title=t(locale, "settings.title"), colour=discord.Colour.gold())
        model = model_spec(current.default_model or self.services.default_model)
        embed.add_field(
            name=t(locale, "settings.default_model"),
            value=model.label if current.default_model else t(locale, "settings.default_value", value=model.label),
        )
        embed.add_field(
            name=t(locale, "settings.default_thinking"),
            value=shown(current.default_thinking, "-"),
        )
        embed.add_field(name=t(locale, "settings.grid_mode"), value=shown(current.grid_mode, bot_settings.grid_mode))
        size = current.default_size or default_size(spec)
        embed.add_field(name=t(locale, "settings.default_size"), value=shown(current.default_size, default_size(spec)))
        embed.add_field(
            name=t(locale, "settings.default_aspect_ratio"), value=shown(current.default_aspect_ratio, "1:1")
        )
        embed.add_field(
            name=t(locale, "settings.limits"),
            value=t(
                locale,
                "settings.limits_value",
                member_daily=limits.user_daily or "∞",
                server_daily=limits.guild_daily or "∞",
                server_at_once=limits.guild_concurrency,
                member_at_once=limits.user_concurrency,
                member_waiting=limits.user_pending,
            ),
            inline=False,
        )
        channels = " ".join(f"<#{c}>" for c in current.allowed_channels or ()) or t(locale, "settings.everywhere")
        embed.add_field(name=t(locale, "settings.channels"), value=channels, inline=False)
        managers = current.character_managers or "creators"
        embed.add_field(name=t(locale, "settings.character_managers"), value=t(locale, f"settings.managers.{managers}"))
        language = t(current.locale, "language.name") if current.locale else t(locale, "settings.language_default")
        embed.add_field(name=t(locale, "settings.language"), value=language)
        embed.add_field(
            name=t(locale, "settings.previews"),
            value=t(locale, "settings.previews_on" if current.previews is not False else "settings.previews_off"),
        )
        budget = current.monthly_budget_usd
        if budget is None:
            budget_text = t(locale, "settings.no_budget")
        else:
            spent = await self.services.jobs.admission.spent_this_month(current.guild_id)
            budget_text = t(locale, "settings.budget_value", spent=money(locale, spent), budget=money(locale, budget))
        embed.add_field(name=t(locale, "settings.budget"), value=budget_text, inline=False)
        estimate = self.services.jobs.admission.estimate_cost(None, size, 1)
        embed.add_field(
            name=t(locale, "settings.estimate"),
            value=t(locale, "settings.estimate_value", size=size, cost=money(locale, estimate)),
            inline=False,
        )
        return embed


def build_command(cog: ServerSettings, spec: ModelSpec) -> app_commands.Command[Any, ..., None]:
    """/settings with the configured model's sizes and ratios as the choices for the defaults."""
    default_choice = app_commands.Choice(name=locale_str("default", key="choice.default"), value=DEFAULT)
    sizes = [*size_choices(spec), default_choice]
    ratios = [*ratio_choices(spec)[:24], default_choice]

    models = [app_commands.Choice(name=m.label, value=m.model_id) for m in MODELS.values()] + [default_choice]
    levels = sorted({level for m in MODELS.values() for level in m.thinking_levels})
    thinking = [thinking_choice(level) for level in levels] + [default_choice]
    # Each language by its own name, as its speakers would look for it.
    languages = [app_commands.Choice(name=t(code, "language.name"), value=code) for code in available_locales()]

    @app_commands.describe(**DESCRIPTIONS)
    @app_commands.choices(
        grid_mode=GRID_MODES,
        default_size=sizes,
        default_aspect_ratio=ratios,
        character_managers=CHARACTER_MANAGERS,
        default_model=models,
        default_thinking=thinking,
        language=[*languages, default_choice],
    )
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    async def settings(
        interaction: discord.Interaction,
        grid_mode: str | None = None,
        monthly_budget: app_commands.Range[float, 0, 1_000_000] | None = None,
        default_size: str | None = None,
        default_aspect_ratio: str | None = None,
        member_daily: app_commands.Range[int, 0, 100_000] | None = None,
        server_daily: app_commands.Range[int, 0, 1_000_000] | None = None,
        server_at_once: app_commands.Range[int, 1, 64] | None = None,
        member_at_once: app_commands.Range[int, 1, 16] | None = None,
        member_waiting: app_commands.Range[int, 1, 64] | None = None,
        only_in: discord.TextChannel | None = None,
        everywhere: bool | None = None,
        character_managers: str | None = None,
        default_model: str | None = None,
        default_thinking: str | None = None,
        previews: bool | None = None,
        language: str | None = None,
    ) -> None:
        await cog.settings(
            interaction,
            {
                "default_model": default_model,
                "default_thinking": default_thinking,
                "grid_mode": grid_mode,
                "monthly_budget_usd": monthly_budget,
                "default_size": default_size,
                "default_aspect_ratio": default_aspect_ratio,
                "user_daily": member_daily,
                "guild_daily": server_daily,
                "guild_concurrency": server_at_once,
                "user_concurrency": member_at_once,
                "user_pending": member_waiting,
                "only_in": only_in,
                "everywhere": everywhere,
                "character_managers": character_managers,
                "previews": previews,
                "locale": language,
            },
        )

    return app_commands.Command(
        name="settings", description="See or change how Banana Bot works in this server.", callback=settings
    )
