"""A server's rules at the door: whether this member may use the bot here and whether what they ask passes
the ban list, checked before anything is downloaded, queued or spent. A refusal is told to the member
privately (with who to ask), counted for /usage, and mirrored to the moderators' log."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import discord

from bot.i18n import t
from bot.jobs.moderation import Refusal, check_member, check_texts, member_daily_limit
from bot.ui.context import Services
from bot.ui.surfaces import InteractionSurface, Surface, send_dm, through_user_install
from storage.characters import get_character_by_id, get_version
from storage.guild_settings import get_guild_settings
from storage.jobs import JobRequest
from storage.moderation import banned_phrases, get_block, log_refusal, role_limits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Requester:
    """Who asks, and where: what the rules look at."""

    user: discord.Member | discord.User
    guild_id: int | None
    channel: object
    #: Manage Server here: passes the role gate.
    is_admin: bool
    #: The interaction they asked with, if any: a refusal is its ephemeral follow-up.
    interaction: discord.Interaction | None = None
    #: Through their own install of the app: no server's rules apply.
    user_install: bool = False

    @classmethod
    def of_interaction(cls, interaction: discord.Interaction) -> Requester:
        return cls(
            interaction.user,
            interaction.guild_id,
            interaction.channel,
            interaction.permissions.manage_guild,
            interaction,
            through_user_install(interaction),
        )

    @classmethod
    def of_message(cls, message: discord.Message) -> Requester:
        author, channel = message.author, message.channel
        admin = isinstance(author, discord.Member) and channel.permissions_for(author).manage_guild
        return cls(author, message.guild.id if message.guild else None, channel, admin)

    @property
    def roles(self) -> frozenset[int]:
        return frozenset(role.id for role in getattr(self.user, "roles", ()))

    @property
    def in_nsfw_channel(self) -> bool:
        channel = self.channel
        return bool(isinstance(channel, discord.TextChannel | discord.Thread) and channel.is_nsfw())


@dataclass(frozen=True)
class Admitted:
    """The member passed; `daily` is their images per day from their roles (None: the server's limit)."""

    daily: int | None = None


async def admit(
    services: Services, requester: Requester, texts: list[str], surface: Surface | None = None
) -> Admitted | None:
    """The member and `texts` (prompt, instruction, sheet) against the server's rules; None after telling the
    member privately why not. In DMs, and through a member's own install, no server's rules apply."""
    guild_id = requester.guild_id
    if guild_id is None or requester.user_install:
        return Admitted()
    db = services.db
    settings = await get_guild_settings(db, guild_id)
    block = await get_block(db, guild_id, requester.user.id)
    refusal = check_member(
        settings, block, requester.roles, in_nsfw_channel=requester.in_nsfw_channel, is_admin=requester.is_admin
    )
    if refusal is None and texts:
        refusal = await check_texts(texts, await banned_phrases(db, guild_id), settings.banned_pattern)
    if refusal is None:
        return Admitted(member_daily_limit(await role_limits(db, guild_id), requester.roles))
    await refuse(services, requester, refusal, surface, access_roles=settings.access_roles or ())
    return None


async def admit_character(
    services: Services, requester: Requester, request: JobRequest, surface: Surface | None = None
) -> bool:
    """A character's sheet goes to the model with the prompt, so the ban list applies to it as it is used: a
    word banned after the character was made still refuses it. False after telling the member why."""
    guild_id = requester.guild_id
    if request.character_id is None or guild_id is None or requester.user_install:
        return True
    character = await get_character_by_id(services.db, request.character_id)
    if character is None:
        return True  # the job itself says the character is gone, with nothing spent
    sheet = character.description
    if request.character_version is not None:
        version = await get_version(services.db, character.id, request.character_version)
        sheet = version.description if version is not None else sheet
    settings = await get_guild_settings(services.db, guild_id)
    refusal = await check_texts(
        [character.name, sheet], await banned_phrases(services.db, guild_id), settings.banned_pattern
    )
    if refusal is None:
        return True
    await refuse(services, requester, refusal, surface)
    return False


async def refuse(
    services: Services,
    requester: Requester,
    refusal: Refusal,
    surface: Surface | None,
    *,
    access_roles: tuple[int, ...] = (),
) -> None:
    assert requester.guild_id is not None
    locale = refusal_locale(services, requester, surface)
    text = refusal_text(locale, refusal, access_roles)
    await log_refusal(services.db, requester.guild_id, requester.user.id, refusal.rule)
    channel_id = getattr(requester.channel, "id", None)
    services.modlog.refusal(requester.guild_id, requester.user.id, channel_id, refusal.rule, refusal.detail)
    await tell_privately(services, requester, text, surface)


def refusal_locale(services: Services, requester: Requester, surface: Surface | None) -> str:
    """The member's own language where Discord tells it (an interaction), else the server's."""
    if surface is not None:
        return surface.private_locale
    if requester.interaction is not None:
        return str(requester.interaction.locale)
    guild = getattr(requester.channel, "guild", None)
    return services.guild_locale(guild) if isinstance(guild, discord.Guild) else "en-US"


async def tell_privately(services: Services, requester: Requester, text: str, surface: Surface | None) -> None:
    """Only the member sees it: an ephemeral answer to their interaction, else a DM."""
    try:
        if isinstance(surface, InteractionSurface) and surface.token_fresh:
            await surface.error(text)  # replaces the "thinking…" response
            return
        interaction = requester.interaction
        if interaction is not None and not interaction.is_expired():
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
            return
    except discord.HTTPException as exc:
        log.info("could not answer a refused interaction: %s", exc)
    await send_dm(services.client, requester.user.id, text)


def refusal_text(locale: str, refusal: Refusal, access_roles: tuple[int, ...] = ()) -> str:
    """Why, in the member's language, and who to ask. The matched word is named only to them."""
    if refusal.rule == "blocked":
        return t(locale, "refused.blocked", reason=refusal.detail or "-")
    if refusal.rule == "access":
        return t(locale, "refused.access", roles=" ".join(f"<@&{r}>" for r in access_roles))
    if refusal.rule == "banned_word":
        return t(locale, "refused.banned_word", word=refusal.detail or "")
    return t(locale, f"refused.{refusal.rule}")
