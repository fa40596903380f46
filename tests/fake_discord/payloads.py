"""Discord-shaped JSON for the fake's state (snowflakes as strings, as Discord sends them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .models import (
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    BOT_PERMISSIONS,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeThread,
    FakeUser,
    iso_now,
)

if TYPE_CHECKING:
    from .server import FakeDiscord


def user_json(user: FakeUser) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "username": user.name,
        "global_name": None if user.bot else user.name,
        "discriminator": "0",
        "avatar": None,
        "bot": user.bot,
        "public_flags": 0,
    }


def role_json(role_id: int, name: str, permissions: int, position: int, **extra: Any) -> dict[str, Any]:
    """A role object as Discord sends it (GUILD_CREATE, GUILD_ROLE_CREATE, ``resolved.roles``)."""
    colors = {"primary_color": 0, "secondary_color": None, "tertiary_color": None}
    data: dict[str, Any] = {"id": str(role_id), "name": name, "color": 0, "colors": colors, "hoist": False}
    data.update(icon=None, unicode_emoji=None, position=position, permissions=str(permissions))
    data.update(managed=False, mentionable=False, flags=0)
    return {**data, **extra}


def named_role_json(role: FakeRole) -> dict[str, Any]:
    return role_json(role.id, role.name, role.permissions, role.position)


def member_role_json(member: FakeMember) -> dict[str, Any]:
    """The role every fake member gets, carrying the ``permissions=`` it was added with."""
    return role_json(member.role_id, member.user.name, member.permissions, 1)


def member_json(member: FakeMember, *, with_user: bool = True, permissions: int | None = None) -> dict[str, Any]:
    # Discord lists every role but @everyone: here the member's own role, then the named roles it was given.
    roles = [str(member.role_id), *(str(r) for r in member.role_ids)]
    data: dict[str, Any] = {"roles": roles, "joined_at": member.joined_at, "nick": None, "flags": 0}
    data.update(dict.fromkeys(("deaf", "mute", "pending"), False))
    data.update(dict.fromkeys(("avatar", "banner", "premium_since", "communication_disabled_until")))
    if with_user:
        data["user"] = user_json(member.user)
    if permissions is not None:
        data["permissions"] = str(permissions)
    return data


def member_permissions(guild: FakeGuild, user_id: int) -> int:
    """Discord's base permissions: the owner has all; else @everyone OR every role's; Administrator means all."""
    if user_id == guild.owner.id:
        return ALL_PERMISSIONS
    member = guild.members.get(user_id)
    perms = guild.everyone_permissions
    if member is not None:
        perms |= member.permissions
        for role_id in member.role_ids:
            perms |= guild.roles[role_id].permissions
    return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms


def channel_json(channel: FakeChannel, position: int = 0) -> dict[str, Any]:
    if channel.guild_id is None:
        assert channel.recipient is not None
        return {"id": str(channel.id), "type": 1, "recipients": [user_json(channel.recipient)], "last_message_id": None}
    return {
        "id": str(channel.id),
        "type": channel.type,
        "guild_id": str(channel.guild_id),
        "name": channel.name,
        "position": position,
        "permission_overwrites": channel.overwrites,
        "nsfw": channel.nsfw,
        "topic": None,
        "parent_id": None,
        "rate_limit_per_user": 0,
        "last_message_id": None,
    }


def thread_json(thread: FakeThread) -> dict[str, Any]:
    return {
        "id": str(thread.id),
        "guild_id": str(thread.guild_id),
        "parent_id": str(thread.parent_id),
        "owner_id": str(thread.owner_id),
        "name": thread.name,
        "type": 11,
        "message_count": thread.message_count,
        "total_message_sent": thread.message_count,
        "member_count": 1,
        "rate_limit_per_user": 0,
        "flags": 0,
        "last_message_id": None,
        "thread_metadata": {
            "archived": False,
            "locked": False,
            "auto_archive_duration": thread.auto_archive_duration,
            "archive_timestamp": iso_now(),
        },
    }


def guild_json(fake: FakeDiscord, guild: FakeGuild) -> dict[str, Any]:
    bot_tags = {"bot_id": str(fake.bot_user.id)}
    roles = [
        role_json(guild.id, "@everyone", guild.everyone_permissions, 0),
        role_json(guild.bot_role_id, fake.bot_user.name, BOT_PERMISSIONS, 1, managed=True, tags=bot_tags),
    ]
    roles += [member_role_json(m) for m in guild.members.values() if m.role_id != guild.bot_role_id]
    roles += [named_role_json(r) for r in guild.roles.values()]
    channels = [fake.channels[c] for c in guild.channel_ids]
    zero = ("verification_level", "default_message_notifications", "explicit_content_filter", "mfa_level", "nsfw_level")
    empty = ("features", "emojis", "stickers", "presences", "voice_states", "stage_instances", "guild_scheduled_events")
    return {
        **dict.fromkeys(zero, 0),
        **{key: [] for key in (*empty, "soundboard_sounds")},
        "id": str(guild.id),
        "name": guild.name,
        "unavailable": False,
        "large": False,
        "icon": None,
        "owner_id": str(guild.owner.id),
        "premium_tier": guild.premium_tier,
        "premium_subscription_count": 0,
        "preferred_locale": guild.preferred_locale,
        "member_count": len(guild.members),
        "joined_at": iso_now(),
        "system_channel_id": None if fake.is_gone(guild.channel_id) else str(guild.channel_id),
        "afk_timeout": 300,
        "roles": roles,
        "channels": [channel_json(c, i) for i, c in enumerate(channels)],
        "threads": [thread_json(t) for t in fake.threads.values() if t.guild_id == guild.id and not fake.is_gone(t.id)],
        "members": [member_json(m) for m in guild.members.values()],
    }


def message_json(fake: FakeDiscord, msg: FakeMessage, *, with_reference: bool = True) -> dict[str, Any]:
    author = fake.users[msg.author_id]
    data: dict[str, Any] = {
        "id": str(msg.id),
        "channel_id": str(msg.channel_id),
        "author": user_json(author),
        "content": msg.content,
        "timestamp": msg.timestamp,
        "edited_timestamp": msg.edited_timestamp,
        **dict.fromkeys(("tts", "mention_everyone", "pinned"), False),
        "mentions": [user_json(fake.users[u]) for u in msg.mention_ids],
        "mention_roles": [],
        "attachments": msg.attachments,
        "embeds": msg.embeds,
        "components": msg.components,
        "type": msg.type,
        "flags": msg.flags,
    }
    if msg.guild_id is not None:
        data["guild_id"] = str(msg.guild_id)
    if msg.webhook_id is not None:
        data["webhook_id"] = str(msg.webhook_id)
        data["application_id"] = str(msg.webhook_id)
    if msg.message_reference is not None:
        data["message_reference"] = msg.message_reference
        if with_reference:
            ref = fake.messages.get(int(msg.message_reference["message_id"]))
            # Discord sends null for a deleted referenced message
            data["referenced_message"] = None
            if ref is not None and not ref.deleted:
                data["referenced_message"] = message_json(fake, ref, with_reference=False)
    if msg.thread_id is not None and msg.thread_id in fake.threads:
        data["thread"] = thread_json(fake.threads[msg.thread_id])
    return data


def gateway_message_json(fake: FakeDiscord, msg: FakeMessage, *, message_content: bool) -> dict[str, Any]:
    """MESSAGE_CREATE/UPDATE ``d``: adds ``member``, and blanks what the message content intent guards."""
    data = message_json(fake, msg)
    guild = fake.guilds.get(msg.guild_id) if msg.guild_id else None
    if guild is not None and msg.author_id in guild.members:
        data["member"] = member_json(guild.members[msg.author_id], with_user=False)
    if not message_content:
        _strip_content(fake, data)
        if data.get("referenced_message"):
            _strip_content(fake, data["referenced_message"])
    return data


def _strip_content(fake: FakeDiscord, data: dict[str, Any]) -> None:
    # Discord sends content, embeds, attachments and components without the privileged intent only for the
    # bot's own messages, messages mentioning it, and DMs.
    bot_id = str(fake.bot_user.id)
    if data["author"]["id"] == bot_id or "guild_id" not in data:
        return
    if any(u["id"] == bot_id for u in data.get("mentions", [])):
        return
    data.update(content="", embeds=[], attachments=[], components=[])
