"""/settings: what a server's admins (Manage Server) can change about the bot there. Every change applies
from the next request, without a restart.

`/settings general` holds the defaults, limits, budget, channels and language; the other subcommands are
moderation: who may use the bot (`access`, `role-limit`, `block`, `unblock`), what may be asked
(`banned-words`, `nsfw-only`) and the moderators' log (`log-channel`).

Discord hides the commands from members without Manage Server (default permissions); the handlers check
again, because server admins can change who sees a command.
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.app_commands import locale_str

from bot.core.models import MODELS, ModelSpec, model_spec
from bot.i18n import available_locales, money, t, tn
from bot.jobs.moderation import MAX_PHRASE, PatternProblem, banned_phrase, check_pattern
from bot.ui.commands import ModelCommandCog, offered
from bot.ui.intake import SPEEDS, default_size, ratio_choices, size_choices, thinking_choice
from storage.guild_settings import GuildSettings, get_guild_settings, update_guild_settings
from storage.jobs import queued_job_ids
from storage.moderation import (
    add_banned_phrase,
    banned_phrases,
    block_member,
    blocked_members,
    remove_banned_phrase,
    role_limits,
    set_role_limit,
    unblock_member,
)

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
    "default_speed": "fast or relax (half price, delivered later) when a member doesn't choose.",
    "relax_only": "Allow relax only: every image at half price, delivered later.",
}


class ServerSettings(ModelCommandCog):
    def build(self, spec: ModelSpec) -> app_commands.Group:
        return build_group(self, spec)

    async def allowed(self, interaction: discord.Interaction) -> bool:
        """Manage Server, or the member is told it takes that."""
        if interaction.permissions.manage_guild:
            return True
        await interaction.response.send_message(t(str(interaction.locale), "settings.not_allowed"), ephemeral=True)
        return False

    def log_change(self, interaction: discord.Interaction, what: str) -> None:
        assert interaction.guild_id is not None
        self.services.modlog.change(interaction.guild_id, interaction.user.id, what)

    async def settings(self, interaction: discord.Interaction, changes: dict[str, Any]) -> None:
        locale = str(interaction.locale)
        assert interaction.guild_id is not None
        if not await self.allowed(interaction):
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
        if values:
            server = self.services.modlog.locale_for(interaction.guild_id)
            self.log_change(
                interaction, "\n".join(describe_change(server, name, value) for name, value in values.items())
            )
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
        """A sentence on what is accepted, for a thinking level the (new) model doesn't take, or relax mode on a
        bot without a provider for it."""
        wants_relax = changes.get("relax_only") is True or changes.get("default_speed") == "relax"
        if wants_relax and not self.services.jobs.relax.available:
            return t(locale, "speed.relax_unavailable")
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
        if self.services.jobs.relax.available:
            speed = "relax" if current.relax_only else current.default_speed or "fast"
            speed_text = t(locale, f"speed.{speed}")
            if current.relax_only:
                speed_text += " · " + t(locale, "settings.relax_only_on")
            embed.add_field(name=t(locale, "settings.default_speed"), value=speed_text)
        budget = current.monthly_budget_usd
        if budget is None:
            budget_text = t(locale, "settings.no_budget")
        else:
            spent = await self.services.jobs.admission.spent_this_month(current.guild_id)
            budget_text = t(locale, "settings.budget_value", spent=money(locale, spent), budget=money(locale, budget))
        embed.add_field(name=t(locale, "settings.budget"), value=budget_text, inline=False)
        embed.add_field(
            name=t(locale, "settings.moderation"), value=await self.moderation_text(locale, current), inline=False
        )
        estimate = self.services.jobs.admission.estimate_cost(None, size, 1)
        embed.add_field(
            name=t(locale, "settings.estimate"),
            value=t(locale, "settings.estimate_value", size=size, cost=money(locale, estimate)),
            inline=False,
        )
        return embed

    async def moderation_text(self, locale: str, current: GuildSettings) -> str:
        """Access, role limits, blocks, the ban list, nsfw-only and the log channel, one line each."""
        db, guild_id = self.services.db, current.guild_id
        roles = " ".join(f"<@&{r}>" for r in current.access_roles or ())
        lines = [t(locale, "settings.access_roles", roles=roles) if roles else t(locale, "settings.access_everyone")]
        limits = await role_limits(db, guild_id)
        if limits:
            shown = ", ".join(f"<@&{role}>: {daily}" for role, daily in limits.items())
            lines.append(t(locale, "settings.role_limits", limits=shown))
        lines.append(tn(locale, "settings.blocked_count", len(await blocked_members(db, guild_id))))
        lines.append(tn(locale, "settings.banned_count", len(await banned_phrases(db, guild_id))))
        if current.banned_pattern:
            lines.append(t(locale, "settings.pattern_set"))
        if current.nsfw_only:
            lines.append(t(locale, "settings.nsfw_only_on"))
        if current.log_channel_id is None:
            lines.append(t(locale, "settings.no_log"))
        else:
            lines.append(t(locale, "settings.log_in", channel=f"<#{current.log_channel_id}>"))
            if current.log_problem:
                lines.append("⚠️ " + t(locale, f"settings.log_problem.{current.log_problem}"))
        return "\n".join(lines)[:1024]

    # --- moderation ---------------------------------------------------------------------------------------
    async def access(
        self,
        interaction: discord.Interaction,
        allow: discord.Role | None,
        disallow: discord.Role | None,
        everyone: bool | None,
    ) -> None:
        if not await self.allowed(interaction):
            return
        assert interaction.guild_id is not None
        locale = str(interaction.locale)
        current = await get_guild_settings(self.services.db, interaction.guild_id)
        roles = list(current.access_roles or ())
        if everyone:
            roles = []
        if allow is not None and allow.id not in roles:
            roles.append(allow.id)
        if disallow is not None and disallow.id in roles:
            roles.remove(disallow.id)
        await update_guild_settings(
            self.services.db, interaction.guild_id, updated_by=interaction.user.id, access_roles=tuple(roles) or None
        )
        shown = " ".join(f"<@&{r}>" for r in roles)
        text = t(locale, "settings.access_roles", roles=shown) if roles else t(locale, "settings.access_everyone")
        self.log_change(interaction, text)
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

    async def role_limit(self, interaction: discord.Interaction, role: discord.Role, daily: int) -> None:
        if not await self.allowed(interaction):
            return
        assert interaction.guild_id is not None
        locale = str(interaction.locale)
        await set_role_limit(self.services.db, interaction.guild_id, role.id, daily or None)
        text = (
            t(locale, "settings.role_limit_set", role=role.mention, daily=daily)
            if daily
            else t(locale, "settings.role_limit_removed", role=role.mention)
        )
        self.log_change(interaction, text)
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

    async def block(self, interaction: discord.Interaction, member: discord.Member | discord.User, reason: str) -> None:
        if not await self.allowed(interaction):
            return
        assert interaction.guild_id is not None
        await self.block_in(interaction.guild_id, interaction, member.id, reason)

    async def block_in(self, guild_id: int, interaction: discord.Interaction, user_id: int, reason: str) -> None:
        """Block a member here (also from the moderators' log)."""
        locale = str(interaction.locale)
        await block_member(self.services.db, guild_id, user_id, reason=reason, blocked_by=interaction.user.id)
        # What they have waiting goes too (refunded); a job already generating can't be taken back.
        for job_id in await queued_job_ids(self.services.db, guild_id, user_id):
            await self.services.jobs.cancel(job_id)
        text = t(locale, "settings.blocked", member=f"<@{user_id}>", reason=reason)
        self.log_change(interaction, text)
        await self.answer(interaction, text)

    async def unblock(self, interaction: discord.Interaction, member: discord.Member | discord.User) -> None:
        if not await self.allowed(interaction):
            return
        assert interaction.guild_id is not None
        locale = str(interaction.locale)
        was = await unblock_member(self.services.db, interaction.guild_id, member.id)
        text = t(locale, "settings.unblocked" if was else "settings.not_blocked", member=member.mention)
        if was:
            self.log_change(interaction, text)
        await self.answer(interaction, text)

    async def banned_words(
        self,
        interaction: discord.Interaction,
        add: str | None,
        remove: str | None,
        pattern: str | None,
        clear_pattern: bool | None,
    ) -> None:
        if not await self.allowed(interaction):
            return
        assert interaction.guild_id is not None
        guild_id, locale, db = interaction.guild_id, str(interaction.locale), self.services.db
        await interaction.response.defer(ephemeral=True, thinking=True)
        lines: list[str] = []
        for phrase in (p.strip() for p in (add or "").split(",")):
            if not phrase:
                continue
            try:
                entry = banned_phrase(phrase)
            except ValueError:
                lines.append(t(locale, "settings.phrase_bad", max=MAX_PHRASE))
                continue
            added = await add_banned_phrase(db, guild_id, entry, added_by=interaction.user.id)
            lines.append(t(locale, "settings.phrase_added" if added else "settings.phrase_known", phrase=entry.phrase))
        for phrase in (p.strip() for p in (remove or "").split(",")):
            if not phrase:
                continue
            try:
                key = banned_phrase(phrase).key
            except ValueError:
                key = ""
            removed = bool(key) and await remove_banned_phrase(db, guild_id, key)
            lines.append(t(locale, "settings.phrase_removed" if removed else "settings.phrase_unknown", phrase=phrase))
        if pattern:
            try:
                await check_pattern(pattern)
            except PatternProblem as problem:
                lines.append(t(locale, f"settings.pattern_{problem.kind}"))
            else:
                await update_guild_settings(db, guild_id, updated_by=interaction.user.id, banned_pattern=pattern)
                lines.append(t(locale, "settings.pattern_saved"))
        elif clear_pattern:
            await update_guild_settings(db, guild_id, updated_by=interaction.user.id, banned_pattern=None)
            lines.append(t(locale, "settings.pattern_cleared"))
        if lines:
            self.log_change(interaction, "\n".join(lines))
        listed = ", ".join(p.phrase for p in await banned_phrases(db, guild_id)) or "-"
        lines.append(t(locale, "settings.banned_list", phrases=listed))
        await interaction.followup.send("\n".join(lines)[:2000], ephemeral=True)

    async def nsfw_only(self, interaction: discord.Interaction, enabled: bool) -> None:
        if not await self.allowed(interaction):
            return
        assert interaction.guild_id is not None
        locale = str(interaction.locale)
        await update_guild_settings(
            self.services.db, interaction.guild_id, updated_by=interaction.user.id, nsfw_only=enabled or None
        )
        text = t(locale, "settings.nsfw_only_on" if enabled else "settings.nsfw_only_off")
        self.log_change(interaction, text)
        await interaction.response.send_message(text, ephemeral=True)

    async def log_channel(
        self, interaction: discord.Interaction, channel: discord.TextChannel | None, off: bool | None
    ) -> None:
        if not await self.allowed(interaction):
            return
        assert interaction.guild_id is not None
        locale = str(interaction.locale)
        if channel is None and not off:
            current = await get_guild_settings(self.services.db, interaction.guild_id)
            await interaction.response.send_message(await self.moderation_text(locale, current), ephemeral=True)
            return
        channel_id = None if off or channel is None else channel.id
        before = (await get_guild_settings(self.services.db, interaction.guild_id)).log_channel_id
        await update_guild_settings(
            self.services.db,
            interaction.guild_id,
            updated_by=interaction.user.id,
            log_channel_id=channel_id,
            log_problem=None,
        )
        text = t(locale, "settings.log_in", channel=f"<#{channel_id}>") if channel_id else t(locale, "settings.no_log")
        self.log_change(interaction, text)
        if before is not None and before != channel_id:  # the old log says where it went, or that it stopped
            self.services.modlog.change(interaction.guild_id, interaction.user.id, text, to_channel=before)
        await interaction.response.send_message(text, ephemeral=True)

    @staticmethod
    async def answer(interaction: discord.Interaction, text: str) -> None:
        mentions = discord.AllowedMentions.none()
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=mentions)
        else:
            await interaction.response.send_message(text, ephemeral=True, allowed_mentions=mentions)


#: A setting -> the catalogue's name for it, as the moderators' log describes a change.
CHANGE_LABELS = {
    "grid_mode": "settings.grid_mode",
    "monthly_budget_usd": "settings.budget",
    "default_size": "settings.default_size",
    "default_aspect_ratio": "settings.default_aspect_ratio",
    "user_daily": "settings.change.member_daily",
    "guild_daily": "settings.change.server_daily",
    "guild_concurrency": "settings.change.server_at_once",
    "user_concurrency": "settings.change.member_at_once",
    "user_pending": "settings.change.member_waiting",
    "allowed_channels": "settings.channels",
    "character_managers": "settings.character_managers",
    "default_model": "settings.default_model",
    "default_thinking": "settings.default_thinking",
    "previews": "settings.previews",
    "locale": "settings.language",
    "default_speed": "settings.default_speed",
    "relax_only": "settings.relax_only",
}


def describe_change(locale: str, name: str, value: Any) -> str:
    """One changed setting in words, for the moderators' log."""
    if value is None:
        shown = t(locale, "settings.change.default")
    elif name == "allowed_channels":
        shown = " ".join(f"<#{c}>" for c in value)
    elif isinstance(value, bool):
        shown = t(locale, "settings.change.on" if value else "settings.change.off")
    elif name == "monthly_budget_usd":
        shown = money(locale, value)
    elif name == "locale":
        shown = t(value, "language.name")
    elif name == "default_model":
        shown = model_spec(value).label
    elif name == "character_managers":
        shown = t(locale, f"settings.managers.{value}")
    elif name == "default_speed":
        shown = t(locale, f"speed.{value}")
    else:
        shown = str(value)
    return f"{t(locale, CHANGE_LABELS[name])}: {shown}"


def build_group(cog: ServerSettings, spec: ModelSpec) -> app_commands.Group:
    """/settings and its subcommands; `general` offers the configured model's sizes and ratios."""
    group = app_commands.Group(
        name="settings",
        description="See or change how Banana Bot works in this server.",
        default_permissions=discord.Permissions(manage_guild=True),
        guild_only=True,
    )
    group.add_command(build_command(cog, spec))

    @app_commands.describe(
        allow="Let members with this role use the bot (then only listed roles may).",
        disallow="Take this role off the list.",
        everyone="Let everyone use the bot again.",
    )
    async def access(
        interaction: discord.Interaction,
        allow: discord.Role | None = None,
        disallow: discord.Role | None = None,
        everyone: bool | None = None,
    ) -> None:
        await cog.access(interaction, allow, disallow, everyone)

    @app_commands.describe(
        role="The role (@everyone for everyone else).", daily="Images a day for its members; 0 removes the limit."
    )
    async def role_limit(
        interaction: discord.Interaction, role: discord.Role, daily: app_commands.Range[int, 0, 100_000]
    ) -> None:
        await cog.role_limit(interaction, role, daily)

    @app_commands.describe(member="Who to keep off the bot here.", reason="Why (the member is told).")
    async def block(
        interaction: discord.Interaction, member: discord.User, reason: app_commands.Range[str, 1, 300]
    ) -> None:
        await cog.block(interaction, member, reason)

    @app_commands.describe(member="Who may use the bot here again.")
    async def unblock(interaction: discord.Interaction, member: discord.User) -> None:
        await cog.unblock(interaction, member)

    @app_commands.describe(
        add="Words or phrases to refuse, separated by commas.",
        remove="Words or phrases to allow again, separated by commas.",
        pattern="A regular expression to refuse as well (checked for speed first).",
        clear_pattern="Remove the regular expression.",
    )
    async def banned_words(
        interaction: discord.Interaction,
        add: app_commands.Range[str, 1, 1000] | None = None,
        remove: app_commands.Range[str, 1, 1000] | None = None,
        pattern: app_commands.Range[str, 1, 300] | None = None,
        clear_pattern: bool | None = None,
    ) -> None:
        await cog.banned_words(interaction, add, remove, pattern, clear_pattern)

    @app_commands.describe(enabled="Answer only in age-restricted channels (and their threads).")
    async def nsfw_only(interaction: discord.Interaction, enabled: bool) -> None:
        await cog.nsfw_only(interaction, enabled)

    @app_commands.describe(channel="Where moderators see every image and refusal.", off="Stop the log.")
    async def log_channel(
        interaction: discord.Interaction, channel: discord.TextChannel | None = None, off: bool | None = None
    ) -> None:
        await cog.log_channel(interaction, channel, off)

    block_group = app_commands.Group(name="block", description="Keep a member off the bot in this server.")
    unblock_group = app_commands.Group(name="unblock", description="Let a blocked member use the bot again.")
    block_group.add_command(
        app_commands.Command(name="member", description="Keep a member off the bot in this server.", callback=block)
    )
    unblock_group.add_command(
        app_commands.Command(name="member", description="Let a blocked member use the bot again.", callback=unblock)
    )
    subcommands: list[app_commands.Command[Any, ..., None] | app_commands.Group] = [
        app_commands.Command(
            name="access", description="Who may use the bot here: everyone, or given roles.", callback=access
        ),
        app_commands.Command(
            name="role-limit", description="Images a day for members with a role.", callback=role_limit
        ),
        app_commands.Command(
            name="banned-words", description="Words and phrases refused in prompts.", callback=banned_words
        ),
        app_commands.Command(
            name="nsfw-only", description="Answer only in age-restricted channels.", callback=nsfw_only
        ),
        app_commands.Command(
            name="log-channel", description="The moderators' log of every image.", callback=log_channel
        ),
        block_group,
        unblock_group,
    ]
    for command in subcommands:
        group.add_command(command)
    return group


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
        default_speed: str | None = None,
        relax_only: bool | None = None,
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
                "default_speed": default_speed,
                "relax_only": relax_only,
            },
        )

    choices = {
        "grid_mode": GRID_MODES,
        "default_size": sizes,
        "default_aspect_ratio": ratios,
        "character_managers": CHARACTER_MANAGERS,
        "default_model": models,
        "default_thinking": thinking,
        "language": [*languages, default_choice],
        "default_speed": [*SPEEDS, default_choice],
    }
    # Relax needs a provider that takes batches (Gemini): without one, its settings aren't offered.
    leave_out = () if cog.services.jobs.relax.available else ("default_speed", "relax_only")
    callback = offered(settings, descriptions=DESCRIPTIONS, choices=choices, leave_out=leave_out)
    return app_commands.Command(
        name="general", description="Defaults, limits, budget, channels and language.", callback=callback
    )
