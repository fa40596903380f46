"""FakeDiscord: the state, the server's lifetime, and the user-side actions tests drive."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import mimetypes
import secrets
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import discord.gateway
import discord.http
import yarl
from aiohttp import web
from PIL import Image

from . import gateway, rest
from .models import (
    BOT_PERMISSIONS,
    DM_FILESIZE_LIMIT,
    GUILD_MEMBERS_INTENT,
    MEMBER_PERMISSIONS,
    MESSAGE_CONTENT_INTENT,
    USER_INSTALL_PERMISSIONS,
    VIEW_CHANNEL,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeThread,
    FakeUser,
    RecordedCall,
    UploadedFile,
    guild_snowflake,
    snowflake,
)
from .options import ATTACHMENT, OptionBuilder
from .payloads import (
    channel_json,
    gateway_message_json,
    guild_json,
    member_json,
    member_permissions,
    member_role_json,
    message_json,
    named_role_json,
    thread_json,
    user_json,
)
from .validation import LABEL, STRING_SELECT, TEXT_INPUT, FormErrors

T = TypeVar("T")
#: Files one message may carry (Discord's limit for members and bots alike).
MAX_ATTACHMENTS = 10


class FakeTimeout(AssertionError, TimeoutError):
    """A wait on the fake ran out; the message names what was awaited."""


def sniff_content_type(filename: str, data: bytes, declared: str) -> tuple[str, tuple[int, int] | None]:
    """Discord detects the type itself (discord.py uploads everything as application/octet-stream)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return Image.MIME.get(img.format or "", declared), img.size
    except Exception:  # not an image Pillow knows: keep the declared or guessed type
        guessed = mimetypes.guess_type(filename)[0]
        return (guessed if declared == "application/octet-stream" and guessed else declared), None


class FakeDiscord:
    """A wire-level fake Discord on 127.0.0.1 for the real discord.py client. See the package docstring."""

    def __init__(
        self,
        *,
        token: str | None = None,
        token_lifetime: float = 15 * 60,
        ack_deadline: float = 3.0,
        shards: int = 1,
        max_concurrency: int = 1,
    ) -> None:
        self.token = token or f"fake.{secrets.token_urlsafe(24)}"
        self.application_id = snowflake()
        self.bot_user_id = self.application_id  # true of every application created since 2019
        self.bot_user = FakeUser(self.bot_user_id, "Banana Bot", bot=True)
        self.token_lifetime = token_lifetime  # interaction tokens: webhook calls answer 401 after this
        self.ack_deadline = ack_deadline  # interaction callbacks later than this answer 404 Unknown interaction
        self.url = ""
        self.gateway_url = ""
        self.users: dict[int, FakeUser] = {self.bot_user.id: self.bot_user}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.threads: dict[int, FakeThread] = {}
        self.messages: dict[int, FakeMessage] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self.cdn: dict[int, UploadedFile] = {}  # attachment id -> bytes served under /cdn/attachments
        self.calls: list[RecordedCall] = []
        self.unknown_routes: list[RecordedCall] = []
        self.internal_errors: list[Exception] = []  # bugs in the fake itself, answered with a 400
        self.cdn_requests: list[str] = []  # paths the bot downloaded from the CDN
        self.synced_commands: dict[int | None, list[dict[str, Any]]] = {}
        self.deleted_channels: set[int] = set()  # channels and threads gone (delete_channel): REST answers 10003
        self.revoked_channels: set[int] = set()  # channels the bot may not view (revoke_access): REST answers 50001
        self.closed_dms: set[int] = set()  # users who take no DMs from the bot: sending them one answers 50007
        #: Users who added the app to their account (install_for_user).
        self.user_installs: set[int] = set()
        self.gateway_events: list[tuple[str, dict[str, Any]]] = []
        self.identified_intents: list[int] = []
        #: (shard_id, shard_count) of each IDENTIFY, in order; (0, 1) for a client that sent no ``shard``.
        self.identified_shards: list[tuple[int, int]] = []
        #: What GET /gateway/bot recommends: ``shards``, and ``max_concurrency`` (IDENTIFYs per 5 s bucket).
        self.recommended_shards = shards
        self.max_concurrency = max_concurrency
        #: Session starts allowed per day, and when each IDENTIFY came (time.monotonic()): /gateway/bot's
        #: ``session_start_limit.remaining`` counts those of the last 24 hours down from the total.
        self.session_start_total = 1000
        self.session_starts: list[float] = []
        self.resumes = 0
        self._sessions: dict[str, gateway.GatewaySession] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._saved: tuple[str, yarl.URL] | None = None

    # ----- lifetime -----

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application(client_max_size=256 << 20)
        app.router.add_get("/gateway/", self._gateway)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/{tail:.*}", rest.Rest(self).handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        # A deep accept queue, like a real front end: discord.py opens a connection per concurrent request,
        # and 200 at once overflow the default backlog of 128 (the rest would wait out a 1 s SYN retry).
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.gateway_url = f"ws://127.0.0.1:{port}/gateway/"
        self._saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        discord.http.Route.BASE = f"{self.url}/api/v10"
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._saved is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved
        await self.drop_gateway(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        return await gateway.handle_gateway(self, request)

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close every gateway socket; with a resumable code (4000) discord.py reconnects and RESUMEs."""
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=code, message=b"fake: dropped")

    def disconnect_clients(self) -> None:
        asyncio.get_running_loop().create_task(self.drop_gateway())

    # ----- waiting -----

    def _bump(self) -> None:
        """Wake every waiter: some state changed."""
        self._changed.set()
        self._changed = asyncio.Event()

    # The waits take a timeout argument (ASYNC109) because tests pass per-call bounds; all end in FakeTimeout.
    async def _wait_until(self, check: Callable[[], T | None], what: str, timeout: float) -> T:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (result := check()) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise FakeTimeout(f"fake Discord: timed out after {timeout}s waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return result

    async def wait_ready(
        self,
        timeout: float = 10,  # noqa: ASYNC109
        *,
        sessions: int = 1,
        shard: tuple[int, int] | None = None,
    ) -> None:
        """A client identified (or resumed) and READY plus every GUILD_CREATE reached its socket.

        ``sessions``: at least that many connected sessions have (each shard of a sharded client is one);
        ``shard``: only sessions that identified as this (shard_id, shard_count) count.
        """

        def enough() -> bool | None:
            live = [s for s in self._live_sessions(caught_up=True) if shard is None or s.shard == shard]
            return True if len(live) >= sessions else None

        what = f"{sessions} session(s){f' of shard {list(shard)}' if shard else ''} to connect and get READY"
        await self._wait_until(enough, what, timeout)

    async def wait_for_call(self, predicate: Callable[[RecordedCall], bool], timeout: float = 10) -> RecordedCall:  # noqa: ASYNC109
        return await self._wait_until(
            lambda: next((c for c in self.calls if predicate(c)), None), "a matching REST call", timeout
        )

    async def wait_for_message(self, predicate: Callable[[FakeMessage], bool], timeout: float = 10) -> FakeMessage:  # noqa: ASYNC109
        """The first stored message (created, or edited until it does) that satisfies ``predicate``."""
        return await self._wait_until(
            lambda: next((m for m in list(self.messages.values()) if predicate(m)), None),
            "a matching message",
            timeout,
        )

    # ----- state set-up -----

    def add_guild(
        self,
        name: str = "Fake Guild",
        *,
        premium_tier: int = 0,
        preferred_locale: str = "en-US",
        bot_installed: bool = True,
        shard: tuple[int, int] | None = None,
    ) -> FakeGuild:
        """A server; with ``bot_installed=False`` one that hasn't added the bot (see `install_for_user`).

        ``shard`` (shard_id, shard_count) picks an id that shard owns; without it guilds made in a row get ids
        in successive milliseconds, so they spread over the shards.
        """
        owner = FakeUser(snowflake(), f"{name} owner")
        self.users[owner.id] = owner
        guild = FakeGuild(
            guild_snowflake(max(self.guilds, default=None), shard),
            name,
            premium_tier,
            preferred_locale,
            owner,
            0,
            snowflake(),
            bot_installed=bot_installed,
            _fake=self,
        )
        self.guilds[guild.id] = guild
        if bot_installed:
            guild.members[self.bot_user.id] = FakeMember(self.bot_user, guild.id, BOT_PERMISSIONS, guild.bot_role_id)
        guild.members[owner.id] = FakeMember(owner, guild.id, MEMBER_PERMISSIONS, snowflake())
        guild.channel_id = self.add_channel(guild.id, "general", announce=False)
        if bot_installed and self._ready_sessions():
            self.dispatch("GUILD_CREATE", guild_json(self, guild), guild_id=guild.id)
        return guild

    def install_for_user(self, user: FakeUser) -> None:
        """The user adds the app to their account: its user-installable commands follow them into servers that
        haven't added the bot, where interactions carry ``authorizing_integration_owners`` {"1": user id}."""
        self.user_installs.add(user.id)

    def add_member(self, guild_id: int, name: str, *, permissions: int = MEMBER_PERMISSIONS) -> FakeUser:
        guild = self.guilds[guild_id]
        user = FakeUser(snowflake(), name)
        self.users[user.id] = user
        member = FakeMember(user, guild_id, permissions, snowflake())
        guild.members[user.id] = member
        if not guild.bot_installed:
            return user  # a server without the bot sends it nothing
        self.dispatch(
            "GUILD_ROLE_CREATE", {"guild_id": str(guild_id), "role": member_role_json(member)}, guild_id=guild_id
        )
        # Member events need the privileged members intent (Discord sends none to a bot without it).
        data = {**member_json(member), "guild_id": str(guild_id)}
        self.dispatch("GUILD_MEMBER_ADD", data, guild_id=guild_id, intent=GUILD_MEMBERS_INTENT)
        return user

    def join_guild(self, guild_id: int, user: FakeUser, *, permissions: int = MEMBER_PERMISSIONS) -> FakeUser:
        """A user of another guild joins this one too (one account, a member of each)."""
        guild = self.guilds[guild_id]
        assert user.id not in guild.members, f"fake Discord: {user.name} is already a member of {guild.name}"
        member = FakeMember(user, guild_id, permissions, snowflake())
        guild.members[user.id] = member
        self.dispatch(
            "GUILD_ROLE_CREATE", {"guild_id": str(guild_id), "role": member_role_json(member)}, guild_id=guild_id
        )
        data = {**member_json(member), "guild_id": str(guild_id)}
        self.dispatch("GUILD_MEMBER_ADD", data, guild_id=guild_id, intent=GUILD_MEMBERS_INTENT)
        return user

    def add_role(self, guild_id: int, name: str, *, permissions: int = 0) -> FakeRole:
        """A named role (GUILD_ROLE_CREATE), stacked above the roles made before it."""
        guild = self.guilds[guild_id]
        position = max([1, *(r.position for r in guild.roles.values())]) + 1  # above the member and bot roles (1)
        role = FakeRole(snowflake(), guild_id, name, permissions, position=position)
        guild.roles[role.id] = role
        data = {"guild_id": str(guild_id), "role": named_role_json(role)}
        self.dispatch("GUILD_ROLE_CREATE", data, guild_id=guild_id)
        return role

    def _guild_role_member(self, guild_id: int, user: FakeUser, role: FakeRole) -> FakeMember:
        guild = self.guilds[guild_id]
        assert guild.roles.get(role.id) is role, f"fake Discord: role {role.name!r} is not in {guild.name}"
        assert user.id in guild.members, f"fake Discord: {user.name} is not a member of {guild.name}"
        return guild.members[user.id]

    def give_role(self, guild_id: int, user: FakeUser, role: FakeRole) -> None:
        member = self._guild_role_member(guild_id, user, role)
        if role.id not in member.role_ids:
            member.role_ids.append(role.id)
            self._member_update(member)

    def take_role(self, guild_id: int, user: FakeUser, role: FakeRole) -> None:
        member = self._guild_role_member(guild_id, user, role)
        if role.id in member.role_ids:
            member.role_ids.remove(role.id)
            self._member_update(member)

    def delete_role(self, guild_id: int, role: FakeRole) -> None:
        """GUILD_ROLE_DELETE; members lose the role (Discord sends no member updates for that)."""
        guild = self.guilds[guild_id]
        assert guild.roles.pop(role.id, None) is role, f"fake Discord: role {role.name!r} is not in {guild.name}"
        for member in guild.members.values():
            if role.id in member.role_ids:
                member.role_ids.remove(role.id)
        self.dispatch("GUILD_ROLE_DELETE", {"guild_id": str(guild_id), "role_id": str(role.id)}, guild_id=guild_id)

    def _member_update(self, member: FakeMember) -> None:
        # GUILD_MEMBER_UPDATE needs the members intent, except for the bot's own member, which every session gets.
        data = {**member_json(member), "guild_id": str(member.guild_id)}
        intent = None if member.user.bot else GUILD_MEMBERS_INTENT
        self.dispatch("GUILD_MEMBER_UPDATE", data, guild_id=member.guild_id, intent=intent)
        self._bump()

    def add_channel(self, guild_id: int, name: str, *, nsfw: bool = False, announce: bool = True) -> int:
        channel = FakeChannel(snowflake(), name, guild_id, nsfw=nsfw)
        self.channels[channel.id] = channel
        self.guilds[guild_id].channel_ids.append(channel.id)
        if announce and self.guilds[guild_id].bot_installed:
            position = len(self.guilds[guild_id].channel_ids) - 1
            self.dispatch("CHANNEL_CREATE", channel_json(channel, position), guild_id=guild_id)
        return channel.id

    def delete_channel(self, channel_id: int) -> None:
        """A guild channel (CHANNEL_DELETE, its threads go with it) or a thread (THREAD_DELETE) is deleted.

        From then on REST calls on it, or on a thread in it, answer 404 ``{"code": 10003, "message": "Unknown
        Channel"}``, and so does anything that would post a message there (interaction responses included).
        """
        assert not self.is_gone(channel_id), f"fake Discord: channel {channel_id} is already gone"
        thread = self.threads.get(channel_id)
        if thread is not None:
            data = {"id": str(thread.id), "guild_id": str(thread.guild_id), "parent_id": str(thread.parent_id)}
            self.deleted_channels.add(channel_id)
            self.dispatch("THREAD_DELETE", {**data, "type": 11}, guild_id=thread.guild_id)
        else:
            channel = self.channels.get(channel_id)
            assert channel is not None and channel.guild_id is not None, f"fake Discord: no guild channel {channel_id}"
            guild = self.guilds[channel.guild_id]
            data = channel_json(channel, guild.channel_ids.index(channel_id))
            guild.channel_ids.remove(channel_id)  # a later GUILD_CREATE no longer lists it
            self.deleted_channels.add(channel_id)
            self.dispatch("CHANNEL_DELETE", data, guild_id=guild.id)
        self._bump()

    def revoke_access(self, channel_id: int) -> None:
        """The bot loses View Channel in a guild text channel (and so in its threads).

        Discord's way: a member overwrite denying View Channel (CHANNEL_UPDATE), so discord.py's
        ``channel.permissions_for(guild.me)`` agrees. REST calls on the channel or its threads then answer 403
        ``{"code": 50001, "message": "Missing Access"}``; its messages no longer reach the bot; interactions
        there still do (their responses need no channel permission) with ``app_permissions`` 0.
        """
        channel = self.channels.get(channel_id)
        assert channel is not None and channel.guild_id is not None, f"fake Discord: no guild channel {channel_id}"
        assert channel_id not in self.revoked_channels, f"fake Discord: access to {channel_id} is already revoked"
        deny = {"id": str(self.bot_user.id), "type": 1, "allow": "0", "deny": str(VIEW_CHANNEL)}
        channel.overwrites = [*channel.overwrites, deny]
        self.revoked_channels.add(channel_id)
        self._channel_update(channel)

    def restore_access(self, channel_id: int) -> None:
        """Undo ``revoke_access`` (CHANNEL_UPDATE without the overwrite)."""
        channel = self.channels[channel_id]
        assert channel_id in self.revoked_channels, f"fake Discord: access to {channel_id} was not revoked"
        channel.overwrites = [o for o in channel.overwrites if o["id"] != str(self.bot_user.id)]
        self.revoked_channels.discard(channel_id)
        self._channel_update(channel)

    def _channel_update(self, channel: FakeChannel) -> None:
        assert channel.guild_id is not None
        position = self.guilds[channel.guild_id].channel_ids.index(channel.id)
        self.dispatch("CHANNEL_UPDATE", channel_json(channel, position), guild_id=channel.guild_id)
        self._bump()

    def open_dm(self, user: FakeUser) -> int:
        """The DM channel between ``user`` and the bot (created on first use, as POST /users/@me/channels does)."""
        for channel in self.channels.values():
            if channel.guild_id is None and channel.recipient is user:
                return channel.id
        channel = FakeChannel(snowflake(), "", None, type=1, recipient=user)
        self.channels[channel.id] = channel
        return channel.id

    # ----- lookups -----

    def channel_messages(self, channel_id: int) -> list[FakeMessage]:
        """Messages in a channel or thread, oldest first, ephemeral ones included, deleted ones not."""
        return [m for m in self.messages.values() if m.channel_id == channel_id and not m.deleted]

    def _parent_or_self(self, channel_id: int) -> int:
        thread = self.threads.get(channel_id)
        return thread.parent_id if thread is not None else channel_id

    def is_gone(self, channel_id: int) -> bool:
        """The channel or thread was deleted (delete_channel), or the thread's parent was."""
        return channel_id in self.deleted_channels or self._parent_or_self(channel_id) in self.deleted_channels

    def is_revoked(self, channel_id: int) -> bool:
        """The bot may not view the channel, or the thread's parent (revoke_access), or it is in a server that
        hasn't added the bot."""
        guild = self.guild_of(channel_id)
        if guild is not None and not guild.bot_installed:
            return True
        return self._parent_or_self(channel_id) in self.revoked_channels

    def guild_of(self, channel_id: int) -> FakeGuild | None:
        if channel_id in self.threads:
            return self.guilds[self.threads[channel_id].guild_id]
        channel = self.channels.get(channel_id)
        return self.guilds.get(channel.guild_id) if channel and channel.guild_id else None

    def filesize_limit(self, channel_id: int) -> int:
        guild = self.guild_of(channel_id)
        return guild.filesize_limit if guild else DM_FILESIZE_LIMIT

    def _guild_id(self, channel_id: int) -> int | None:
        guild = self.guild_of(channel_id)
        return guild.id if guild else None

    def channel_payload(self, channel_id: int) -> dict[str, Any] | None:
        if channel_id in self.threads:
            return thread_json(self.threads[channel_id])
        channel = self.channels.get(channel_id)
        return channel_json(channel) if channel else None

    def store_file(self, channel_id: int, file: UploadedFile, *, ephemeral: bool = False) -> dict[str, Any]:
        """Put bytes on the CDN and return the attachment object Discord would."""
        att_id = snowflake()
        content_type, size = sniff_content_type(file.filename, file.data, file.content_type)
        self.cdn[att_id] = UploadedFile(file.filename, file.data, content_type)
        url = f"{self.url}/cdn/attachments/{channel_id}/{att_id}/{file.filename}"
        att: dict[str, Any] = {
            "id": str(att_id),
            "filename": file.filename,
            "size": len(file.data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }
        if size is not None:
            att["width"], att["height"] = size
        if ephemeral:
            att["ephemeral"] = True
        return att

    # ----- gateway dispatch -----

    def _ready_sessions(self) -> list[gateway.GatewaySession]:
        return [s for s in self._sessions.values() if s.ready]

    def _live_sessions(self, *, caught_up: bool = False) -> list[gateway.GatewaySession]:
        """Connected sessions, oldest first (``caught_up``: each has been sent everything queued for it)."""
        return [s for s in self._ready_sessions() if s.live and (s.sent_upto >= s.seq or not caught_up)]

    def _owning_session(self, guild_id: int | None) -> gateway.GatewaySession | None:
        """The newest connected session of the shard that owns the guild (``None``: a DM, shard 0's)."""
        live = [s for s in self._live_sessions() if s.owns(guild_id)]
        return live[-1] if live else None

    def session_events(self, shard: tuple[int, int] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """The dispatches queued for the newest identified session (of ``shard``, if given), as it gets them
        (after its intents and the guilds its shard owns)."""
        sessions = [s for s in self._ready_sessions() if shard is None or s.shard == shard]
        if not sessions:
            return []
        frames = [json.loads(frame) for _, frame in sessions[-1].log]
        return [(f["t"], f["d"]) for f in frames]

    def dispatch(
        self,
        event: str,
        data: dict[str, Any],
        *,
        guild_id: int | None,
        per_session: Callable[[gateway.GatewaySession], dict[str, Any]] | None = None,
        only: gateway.GatewaySession | None = None,
        intent: int | None = None,
    ) -> int:
        """Send an event to every identified session of the shard that owns ``guild_id`` (``None``: a DM, shard
        0), or to ``only`` one; a disconnected session gets it on RESUME.

        ``per_session`` tailors ``d`` to a session (the message content intent); ``intent`` limits the event to
        sessions that identified with it; ``gateway_events`` keeps ``data``. Returns the last sequence number.
        """
        self.gateway_events.append((event, data))
        seq = 0
        targets = [only] if only is not None else [s for s in self._ready_sessions() if s.owns(guild_id)]
        for session in targets:
            if intent is None or session.intents & intent:
                seq = session.enqueue(event, per_session(session) if per_session else data)
        return seq

    def dispatch_message(self, event: str, msg: FakeMessage) -> None:
        if msg.ephemeral:
            return  # only the user who triggered the interaction sees it; bots get no event
        if self.is_revoked(msg.channel_id):
            return  # the gateway sends no events from channels the bot cannot view
        self.dispatch(
            event,
            gateway_message_json(self, msg, message_content=True),
            guild_id=msg.guild_id,
            per_session=lambda s: gateway_message_json(
                self, msg, message_content=bool(s.intents & MESSAGE_CONTENT_INTENT)
            ),
        )

    # ----- user-side actions -----

    def find_command(
        self, name: str, guild_id: int | None, cmd_type: int = 1
    ) -> tuple[dict[str, Any] | None, int | None]:
        """The synced command a user would invoke: guild commands first, then global ones."""
        for scope in dict.fromkeys((guild_id, None)):
            for cmd in self.synced_commands.get(scope, []):
                if cmd["name"] == name and cmd.get("type", 1) == cmd_type:
                    return cmd, scope
        return None, None

    async def _interact(
        self,
        itype: int,
        channel_id: int,
        user: FakeUser,
        data: dict[str, Any],
        *,
        message_id: int | None = None,
        locale: str = "en-US",
        guild_locale: str | None = None,
        via_user_install: bool = False,
    ) -> FakeInteraction:
        guild = self.guild_of(channel_id)
        # Discord gives an interaction to the shard of its guild; DMs, and servers without the bot (used through a
        # member's own install), to shard 0. Of several sessions of that shard, the newest connected one.
        owner = guild.id if guild is not None and guild.bot_installed else None
        session = self._owning_session(owner)
        if session is None:
            where = f"guild {owner} (shard (id >> 22) % shard_count)" if owner else "a DM or user install (shard 0)"
            raise AssertionError(f"fake Discord: no connected, READY bot session owns {where} for the interaction")
        channel = self.channel_payload(channel_id)
        if channel is None or self.is_gone(channel_id):
            raise AssertionError(f"fake Discord: unknown channel {channel_id}")
        # Used through a member's own install, in a server that hasn't added the bot, or in a DM when asked.
        by_user = via_user_install or (guild is not None and not guild.bot_installed)
        if by_user and user.id not in self.user_installs:
            raise AssertionError(f"fake Discord: {user.name} hasn't added the app to their account")
        # Without View Channel every other channel permission is implicitly denied too. A user install gets what
        # an interaction's responses need in the channel.
        app_permissions = 0 if self.is_revoked(channel_id) and not by_user else BOT_PERMISSIONS
        if by_user:
            app_permissions = USER_INSTALL_PERMISSIONS
        iid = snowflake()
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "token": f"aW50ZXJhY3Rpb24.{secrets.token_urlsafe(48)}",
            "version": 1,
            "data": data,
            "channel": channel,
            "channel_id": str(channel_id),
            "locale": locale,
            "app_permissions": str(app_permissions),
            "attachment_size_limit": self.filesize_limit(channel_id),
            "entitlements": [],
            "authorizing_integration_owners": (
                {"1": str(user.id)} if by_user else {"0": str(guild.id) if guild else "0"}
            ),
            "context": 0 if guild else 1,
        }
        if guild is not None:
            if user.id not in guild.members:
                raise AssertionError(f"fake Discord: {user.name} is not a member of {guild.name}")
            perms = member_permissions(guild, user.id)
            channel["permissions"] = str(perms)  # the partial channel carries the member's permissions in it
            payload["guild_id"] = str(guild.id)
            payload["guild"] = {"id": str(guild.id), "locale": guild.preferred_locale, "features": []}
            payload["guild_locale"] = guild_locale or guild.preferred_locale
            payload["member"] = member_json(guild.members[user.id], permissions=perms)
        else:
            payload["user"] = user_json(user)
        if message_id is not None and itype in (3, 5):
            payload["message"] = message_json(self, self.messages[message_id])
        inter = FakeInteraction(
            iid, payload["token"], itype, guild.id if guild else None, channel_id, user, payload, message_id, _fake=self
        )
        self.interactions[iid] = inter
        inter.dispatched_at = time.monotonic()
        seq = self.dispatch("INTERACTION_CREATE", payload, guild_id=owner, only=session)  # Discord picks one
        await self._wait_until(
            lambda: True if session.sent_upto >= seq else None, "the INTERACTION_CREATE to reach the bot", 5
        )
        return inter

    async def slash(
        self,
        guild_id: int | None,
        channel_id: int,
        user: FakeUser,
        name: str,
        options: dict[str, object] | None = None,
        *,
        subcommand: str | None = None,
        attachments: dict[str, tuple[str, bytes, str]] | None = None,
        locale: str = "en-US",
        guild_locale: str | None = None,
        focused: str | None = None,
        via_user_install: bool = False,
    ) -> FakeInteraction:
        """A chat-input command as a user invokes it; option types and checks come from the synced command.

        In a server that hasn't added the bot, or with ``via_user_install`` in a DM, the command is used through
        the user's own install (`install_for_user`): Discord offers it only if its ``integration_types`` has
        user installs (1) and its ``contexts`` has this kind of place.

        ``subcommand`` is "sub" or "group sub". Option values: str, int, float, bool; a FakeUser (or user id)
        for USER, a channel or thread id for CHANNEL, a FakeRole (or role id, the guild id for @everyone) for
        ROLE, a FakeUser or FakeRole for MENTIONABLE; ``attachments`` fills ATTACHMENT options. What Discord
        would refuse raises ``ApiError`` 400/50035 (see options.py). ``guild_locale`` defaults to the guild's
        preferred locale; ``focused`` makes it an autocomplete.
        """
        assert guild_id == self._guild_id(channel_id), f"channel {channel_id} is not in guild {guild_id}"
        cmd, scope = self.find_command(name, guild_id)
        path = subcommand.split() if subcommand else []
        guild = self.guilds.get(guild_id) if guild_id else None
        by_user = via_user_install or (guild is not None and not guild.bot_installed)
        if by_user:
            assert cmd is not None and scope is None, f"fake Discord: /{name} is not a global command"
            context = 0 if guild is not None else 1
            if 1 not in (cmd.get("integration_types") or [0]) or context not in (cmd.get("contexts") or [0, 1, 2]):
                raise AssertionError(f"fake Discord: /{name} is not offered to user installs here")
        builder = OptionBuilder(self, guild, user, channel_id)
        spec, kinds = builder.descend(cmd, path)
        opts = builder.build(spec, options or {}, depth=len(path), attachments=list(attachments or {}), focused=focused)
        for opt_name, (filename, raw, content_type) in (attachments or {}).items():
            att = self.store_file(channel_id, UploadedFile(filename, raw, content_type), ephemeral=True)
            builder.resolved.setdefault("attachments", {})[att["id"]] = att
            opts.append({"name": opt_name, "type": ATTACHMENT, "value": att["id"]})
        builder.errors.raise_if_any()
        for part, kind in reversed(list(zip(path, kinds, strict=True))):  # group (2) wraps subcommand (1)
            opts = [{"name": part, "type": kind, "options": opts}]
        data: dict[str, Any] = {"id": str(cmd["id"]) if cmd else str(snowflake()), "name": name, "type": 1}
        data["options"] = opts
        if builder.resolved:
            data["resolved"] = builder.resolved
        if scope is not None:
            data["guild_id"] = str(scope)
        itype = 4 if focused is not None else 2
        return await self._interact(
            itype, channel_id, user, data, locale=locale, guild_locale=guild_locale, via_user_install=by_user
        )

    async def autocomplete(
        self,
        guild_id: int | None,
        channel_id: int,
        user: FakeUser,
        name: str,
        options: dict[str, object],
        focused: str,
        *,
        subcommand: str | None = None,
        timeout: float = 5,  # noqa: ASYNC109
    ) -> list[dict[str, Any]]:
        """A type 4 interaction with ``focused`` marked; returns the choices of the type 8 callback."""
        inter = await self.slash(guild_id, channel_id, user, name, options, subcommand=subcommand, focused=focused)
        call = await inter.wait_callback(timeout)
        assert call.json.get("type") == 8, f"autocomplete answered with callback type {call.json.get('type')}"
        return list(call.json.get("data", {}).get("choices", []))

    def _component_channel(self, message_id: int, custom_id: str) -> int:
        msg = self.messages.get(message_id)
        if msg is None or msg.deleted or self.is_gone(msg.channel_id):
            raise AssertionError(f"fake Discord: no message {message_id} to interact with")
        ids = [c.get("custom_id") for row in msg.components for c in row.get("components", [])]
        if custom_id not in ids:
            raise AssertionError(f"fake Discord: message {message_id} has no component {custom_id!r} (has {ids})")
        return msg.channel_id

    async def click(
        self,
        message_id: int,
        custom_id: str,
        user: FakeUser,
        *,
        channel_id: int | None = None,
        locale: str = "en-US",
        via_user_install: bool = False,
    ) -> FakeInteraction:
        """A button press on a stored message (which must carry a button with ``custom_id``)."""
        channel = self._component_channel(message_id, custom_id)
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(
            3,
            channel_id or channel,
            user,
            data,
            message_id=message_id,
            locale=locale,
            via_user_install=via_user_install,
        )

    async def select(
        self, message_id: int, custom_id: str, user: FakeUser, values: list[str], *, locale: str = "en-US"
    ) -> FakeInteraction:
        channel = self._component_channel(message_id, custom_id)
        data = {"custom_id": custom_id, "component_type": 3, "values": values}
        return await self._interact(3, channel, user, data, message_id=message_id, locale=locale)

    async def submit_modal(
        self,
        custom_id: str,
        fields: dict[str, str] | dict[str, str | list[str]],
        user: FakeUser,
        *,
        channel_id: int,
        message_id: int | None = None,
        guild_id: int | None = None,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Submit a modal the bot showed to ``user`` (a type 9 callback with this custom_id must exist).

        ``fields`` maps an input's custom_id to its text, or a select's to the values picked. A modal built of
        Labels is answered the way Discord does, one Label per input in the modal's order (an input left out
        of ``fields`` is sent empty); what Discord's client would not let the member submit (a required input
        left empty, a value that is not one of the select's options, too many values) raises ``ApiError``
        400/50035. A modal of action rows gets one row per given field.
        """
        assert guild_id in (None, self._guild_id(channel_id)), f"channel {channel_id} is not in guild {guild_id}"
        shown = [i.modal for i in self.interactions.values() if i.modal and i.user is user]
        modal = next((m for m in reversed(shown) if m.get("custom_id") == custom_id), None)
        if modal is None:
            raise AssertionError(f"fake Discord: the bot never showed {user.name} a modal {custom_id!r}")
        if any(c.get("type") == LABEL for c in modal.get("components") or []):
            components = labelled_answers(modal, fields)
        else:
            components = [
                {"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in fields.items()
            ]
        data = {"custom_id": custom_id, "components": components}
        return await self._interact(5, channel_id, user, data, message_id=message_id, locale=locale)

    async def context_menu(
        self, guild_id: int | None, channel_id: int, user: FakeUser, name: str, message_id: int
    ) -> FakeInteraction:
        """A message command (application command type 3) on a stored message."""
        cmd, scope = self.find_command(name, guild_id, 3)
        data: dict[str, Any] = {
            "id": str(cmd["id"]) if cmd else str(snowflake()),
            "name": name,
            "type": 3,
            "target_id": str(message_id),
            "resolved": {"messages": {str(message_id): message_json(self, self.messages[message_id])}},
        }
        if scope is not None:
            data["guild_id"] = str(scope)
        return await self._interact(2, channel_id, user, data)

    async def user_message(
        self,
        channel_id: int,
        user: FakeUser,
        content: str,
        *,
        reply_to: int | None = None,
        mention_bot: bool = False,
        attachments: list[tuple[str, bytes, str]] | None = None,
        ping: bool = True,
    ) -> int:
        """A user posts a message (MESSAGE_CREATE); a reply pings the replied-to author, as clients do, unless
        `ping` is False (the member turned "@ON" off in the reply bar).

        The bot gets no event for a message in a channel it may not view (``revoke_access``).
        """
        if self.is_gone(channel_id) or (channel_id not in self.channels and channel_id not in self.threads):
            raise AssertionError(f"fake Discord: no channel {channel_id} to post in")
        if len(attachments or []) > MAX_ATTACHMENTS:
            raise AssertionError(f"fake Discord: a message carries at most {MAX_ATTACHMENTS} attachments")
        guild = self.guild_of(channel_id)
        msg = FakeMessage(snowflake(), channel_id, guild.id if guild else None, user.id)
        if mention_bot:
            mention = f"<@{self.bot_user.id}>"
            content = content if mention in content else f"{mention} {content}"
            msg.mention_ids.append(self.bot_user.id)
        msg.content = content
        if reply_to is not None:
            target = self.messages[reply_to]
            msg.type = 19
            msg.message_reference = {"type": 0, "message_id": str(reply_to), "channel_id": str(target.channel_id)}
            if guild is not None:
                msg.message_reference["guild_id"] = str(guild.id)
            if ping and target.author_id not in msg.mention_ids:
                msg.mention_ids.append(target.author_id)
        for filename, raw, content_type in attachments or []:
            att = self.store_file(channel_id, UploadedFile(filename, raw, content_type))
            msg.attachments.append(att)
            msg.files.append(self.cdn[int(att["id"])])
        self.add_message(msg)
        self.dispatch_message("MESSAGE_CREATE", msg)
        return msg.id

    def add_message(self, msg: FakeMessage) -> None:
        self.messages[msg.id] = msg
        if msg.channel_id in self.threads and not msg.ephemeral:
            self.threads[msg.channel_id].message_count += 1
        self._bump()


def labelled_answers(
    modal: dict[str, Any], fields: dict[str, str] | dict[str, str | list[str]]
) -> list[dict[str, Any]]:
    """A Label modal's submission (docs: components/reference#label-label-interaction-response-structure)."""
    err = FormErrors()
    inputs = {
        (c.get("component") or {}).get("custom_id") for c in modal.get("components") or [] if c.get("type") == LABEL
    }
    unknown = set(fields) - inputs
    assert not unknown, f"fake Discord: the modal has no inputs {sorted(unknown)} (has {sorted(map(str, inputs))})"
    answers: list[dict[str, Any]] = []
    for i, label in enumerate(modal.get("components") or []):
        if label.get("type") != LABEL:
            continue  # a Text Display shows text and sends nothing back
        child = label["component"]
        path: list[str | int] = ["data", "components", i, "component"]
        given = fields.get(child["custom_id"])
        answer: dict[str, Any] = {"type": child["type"], "custom_id": child["custom_id"]}
        if "id" in child:
            answer["id"] = child["id"]
        if child["type"] == TEXT_INPUT:
            value = given if isinstance(given, str) else ""
            if child.get("required", True) and not value.strip():
                err.add(path, "BASE_TYPE_REQUIRED", "This field is required")
            err.max_length(path, value, int(child.get("max_length") or 4000))
            answer["value"] = value
        elif child["type"] == STRING_SELECT:
            values = [given] if isinstance(given, str) else list(given or [])
            offered = {o["value"] for o in child.get("options") or []}
            if set(values) - offered:
                err.add(path, "COMPONENT_SELECT_OPTION_INVALID", f"Values must be among {sorted(offered)}")
            if values or child.get("required", True):
                low, high = int(child.get("min_values", 1)), int(child.get("max_values", 1))
                if not low <= len(values) <= high:
                    err.add(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")
            answer["values"] = values
        else:
            raise AssertionError(f"fake Discord: submitting a {child['type']} component is not supported yet")
        wrapped: dict[str, Any] = {"type": LABEL, "component": answer}
        if "id" in label:
            wrapped["id"] = label["id"]
        answers.append(wrapped)
    err.raise_if_any()
    return answers
