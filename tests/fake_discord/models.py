"""The fake's state: users, guilds, channels, threads, messages, interactions and recorded calls."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import FakeDiscord

DISCORD_EPOCH_MS = 1420070400000
MIB = 1 << 20
DM_FILESIZE_LIMIT = 10 * MIB
# Upload limit by premium tier, as Discord (and discord.py's Guild.filesize_limit) has it.
FILESIZE_LIMITS = {0: 10 * MIB, 1: 10 * MIB, 2: 50 * MIB, 3: 100 * MIB}

# Permission bits used by the fake (values from Discord's documented bitfield).
ADD_REACTIONS = 1 << 6
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_EXTERNAL_EMOJIS = 1 << 18
USE_APPLICATION_COMMANDS = 1 << 31
CREATE_PUBLIC_THREADS = 1 << 35
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 53) - 1

# What an ordinary member may do: talk, attach, react, use commands and threads; no moderation, no admin.
_TALK = VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | READ_MESSAGE_HISTORY | ADD_REACTIONS
MEMBER_PERMISSIONS = (
    _TALK | USE_EXTERNAL_EMOJIS | USE_APPLICATION_COMMANDS | CREATE_PUBLIC_THREADS | SEND_MESSAGES_IN_THREADS
)
# The bot's managed role: what an image bot needs in a channel, so channel.permissions_for(guild.me) passes.
BOT_PERMISSIONS = MEMBER_PERMISSIONS
#: What a user-installed app may do in a channel: answer its interactions (Discord's app_permissions there).
USER_INSTALL_PERMISSIONS = SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | USE_APPLICATION_COMMANDS
GUILD_MEMBERS_INTENT = 1 << 1
MESSAGE_CONTENT_INTENT = 1 << 15
PRIVILEGED_INTENTS = GUILD_MEMBERS_INTENT | (1 << 8) | MESSAGE_CONTENT_INTENT  # members, presences, message content

EPHEMERAL = 1 << 6
LOADING = 1 << 7

_counter = itertools.count()


def snowflake() -> int:
    """A new, unique, time-ordered snowflake (so discord.py's created_at is sensible)."""
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (next(_counter) & 0x3FFFFF)


def guild_snowflake(previous: int | None = None, shard: tuple[int, int] | None = None) -> int:
    """A new guild id, in a later millisecond than ``previous`` (the newest guild id so far).

    A guild belongs to shard ``(guild_id >> 22) % shard_count`` and ``guild_id >> 22`` is the id's millisecond,
    so guilds made within one millisecond would all land on one shard: a millisecond each spreads them, as
    guilds created over time are. With ``shard`` (shard_id, shard_count) the millisecond moves on (by less than
    shard_count) until the guild belongs to that shard. Still unique (the low bits count) and time-ordered.
    """
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    if previous is not None:
        ms = max(ms, (previous >> 22) + 1)
    if shard is not None:
        shard_id, shard_count = shard
        assert 0 <= shard_id < shard_count, f"fake Discord: no shard {shard_id} of {shard_count}"
        ms += (shard_id - ms) % shard_count
    return (ms << 22) | (next(_counter) & 0x3FFFFF)


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard that gets a guild's events: Discord's ``(guild_id >> 22) % shard_count``; DMs go to shard 0."""
    return 0 if guild_id is None else (guild_id >> 22) % shard_count


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(slots=True, eq=False)
class FakeUser:
    id: int
    name: str
    bot: bool = False


@dataclass(slots=True, eq=False)
class FakeRole:
    """A named role made with ``FakeGuild.add_role`` (the @everyone, bot and per-member roles are implicit)."""

    id: int
    guild_id: int
    name: str
    permissions: int = 0
    position: int = 1


@dataclass(slots=True, eq=False)
class FakeMember:
    user: FakeUser
    guild_id: int
    permissions: int
    role_id: int  # every member gets its own role carrying its permissions
    joined_at: str = field(default_factory=iso_now)
    role_ids: list[int] = field(default_factory=list)  # named roles given with FakeGuild.give_role, in order


@dataclass(slots=True, eq=False)
class FakeChannel:
    id: int
    name: str
    guild_id: int | None  # None for a DM
    type: int = 0  # 0 text, 1 DM
    recipient: FakeUser | None = None
    nsfw: bool = False  # age-restricted
    overwrites: list[dict[str, Any]] = field(default_factory=list)  # permission_overwrites as Discord sends them


@dataclass(slots=True, eq=False)
class FakeThread:
    id: int
    parent_id: int
    name: str
    starter_message_id: int | None
    guild_id: int
    owner_id: int
    auto_archive_duration: int = 1440
    message_count: int = 0


@dataclass(slots=True, eq=False)
class FakeGuild:
    id: int
    name: str
    premium_tier: int
    preferred_locale: str
    owner: FakeUser
    channel_id: int  # the "general" text channel
    bot_role_id: int
    everyone_permissions: int = 0
    #: False for a server that hasn't added the bot: members who added it to their account still use it
    #: there (a user install), but the bot gets no events from it and may not call its channels.
    bot_installed: bool = True
    members: dict[int, FakeMember] = field(default_factory=dict)
    channel_ids: list[int] = field(default_factory=list)
    roles: dict[int, FakeRole] = field(default_factory=dict)  # named roles, by id
    _fake: FakeDiscord | None = field(default=None, repr=False)

    @property
    def filesize_limit(self) -> int:
        return FILESIZE_LIMITS.get(self.premium_tier, FILESIZE_LIMITS[0])

    def add_member(self, name: str, *, permissions: int = MEMBER_PERMISSIONS) -> FakeUser:
        assert self._fake is not None
        return self._fake.add_member(self.id, name, permissions=permissions)

    def join(self, user: FakeUser, *, permissions: int = MEMBER_PERMISSIONS) -> FakeUser:
        """`user`, a member of another guild, joins this one too."""
        assert self._fake is not None
        return self._fake.join_guild(self.id, user, permissions=permissions)

    def add_channel(self, name: str, *, nsfw: bool = False) -> int:
        assert self._fake is not None
        return self._fake.add_channel(self.id, name, nsfw=nsfw)

    def add_role(self, name: str, *, permissions: int = 0) -> FakeRole:
        assert self._fake is not None
        return self._fake.add_role(self.id, name, permissions=permissions)

    def give_role(self, user: FakeUser, role: FakeRole) -> None:
        assert self._fake is not None
        self._fake.give_role(self.id, user, role)

    def take_role(self, user: FakeUser, role: FakeRole) -> None:
        assert self._fake is not None
        self._fake.take_role(self.id, user, role)

    def delete_role(self, role: FakeRole) -> None:
        assert self._fake is not None
        self._fake.delete_role(self.id, role)


@dataclass(slots=True)
class UploadedFile:
    filename: str
    data: bytes
    content_type: str


@dataclass(slots=True)
class RecordedCall:
    """One REST request as the fake saw it (``json`` is ``payload_json`` for multipart bodies)."""

    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    json: Any = None
    files: list[UploadedFile] = field(default_factory=list)
    at: float = 0.0  # time.monotonic() when received
    status: int = 0
    response: Any = None  # the JSON body answered (None for 204), e.g. {"code": 10003, "message": "Unknown Channel"}


@dataclass(slots=True, eq=False)
class FakeMessage:
    """A message as Discord stores it. ``components``/``embeds`` are as sent; ``files`` hold the raw bytes."""

    id: int
    channel_id: int
    guild_id: int | None
    author_id: int
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    files: list[UploadedFile] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    message_reference: dict[str, Any] | None = None
    mention_ids: list[int] = field(default_factory=list)
    webhook_id: int | None = None
    interaction_id: int | None = None
    timestamp: str = field(default_factory=iso_now)
    edited_timestamp: str | None = None
    edits: list[dict[str, Any]] = field(default_factory=list)  # each edit's request payload, in order
    deleted: bool = False
    thread_id: int | None = None

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)


@dataclass(slots=True, eq=False)
class FakeInteraction:
    id: int
    token: str
    type: int
    guild_id: int | None
    channel_id: int
    user: FakeUser
    payload: dict[str, Any]
    message_id: int | None = None  # the clicked message (components) or the target (context menus)
    dispatched_at: float = 0.0  # time.monotonic()
    callbacks: list[RecordedCall] = field(default_factory=list)
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    modal: dict[str, Any] | None = None  # the data of a type 9 callback
    _fake: FakeDiscord | None = field(default=None, repr=False)

    @property
    def deferred_at(self) -> float | None:
        """Seconds from dispatch to the first callback, or None if none arrived yet."""
        return self.callbacks[0].at - self.dispatched_at if self.callbacks else None

    @property
    def responded(self) -> bool:
        return any(0 < c.status < 300 for c in self.callbacks)

    def original(self) -> FakeMessage | None:
        assert self._fake is not None
        return self._fake.messages.get(self.original_id) if self.original_id else None

    def followups(self) -> list[FakeMessage]:
        assert self._fake is not None
        return [self._fake.messages[i] for i in self.followup_ids]

    async def wait_callback(self, timeout: float = 5) -> RecordedCall:  # noqa: ASYNC109
        assert self._fake is not None
        return await self._fake._wait_until(
            lambda: self.callbacks[0] if self.callbacks else None,
            f"the callback of interaction {self.id} ({self.payload.get('data', {}).get('name', self.type)})",
            timeout,
        )

    async def wait_followup(
        self,
        timeout: float = 10,  # noqa: ASYNC109 - the documented API; each wait is bounded by it
        *,
        predicate: Callable[[FakeMessage], bool] | None = None,
    ) -> FakeMessage:
        """The first follow-up (POST /webhooks/{app}/{token}) matching ``predicate``, as it is now."""
        assert self._fake is not None

        def found() -> FakeMessage | None:
            return next((m for m in self.followups() if predicate is None or predicate(m)), None)

        return await self._fake._wait_until(found, f"a follow-up to interaction {self.id}", timeout)
