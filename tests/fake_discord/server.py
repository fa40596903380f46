"""FakeDiscord: the state, the server's lifetime, and the user-side actions tests drive."""

from __future__ import annotations

import asyncio
import contextlib
import io
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
    MEMBER_PERMISSIONS,
    MESSAGE_CONTENT_INTENT,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    FakeThread,
    FakeUser,
    RecordedCall,
    UploadedFile,
    snowflake,
)
from .payloads import (
    channel_json,
    gateway_message_json,
    guild_json,
    member_json,
    member_permissions,
    message_json,
    thread_json,
    user_json,
)

T = TypeVar("T")
OPTION_TYPES: dict[type, int] = {bool: 5, int: 4, float: 10, str: 3}  # bool before int: bool is an int


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

    def __init__(self, *, token: str | None = None, token_lifetime: float = 15 * 60, ack_deadline: float = 3.0) -> None:
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
        self.gateway_events: list[tuple[str, dict[str, Any]]] = []
        self.identified_intents: list[int] = []
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

    async def wait_ready(self, timeout: float = 10) -> None:  # noqa: ASYNC109
        """A client identified (or resumed) and READY plus every GUILD_CREATE reached its socket."""
        await self._wait_until(
            lambda: True if self._live_session(caught_up=True) else None, "a bot to connect and get READY", timeout
        )

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
        self, name: str = "Fake Guild", *, premium_tier: int = 0, preferred_locale: str = "en-US"
    ) -> FakeGuild:
        owner = FakeUser(snowflake(), f"{name} owner")
        self.users[owner.id] = owner
        guild = FakeGuild(snowflake(), name, premium_tier, preferred_locale, owner, 0, snowflake(), _fake=self)
        self.guilds[guild.id] = guild
        guild.members[self.bot_user.id] = FakeMember(self.bot_user, guild.id, BOT_PERMISSIONS, guild.bot_role_id)
        guild.members[owner.id] = FakeMember(owner, guild.id, MEMBER_PERMISSIONS, snowflake())
        guild.channel_id = self.add_channel(guild.id, "general", announce=False)
        if self._ready_sessions():
            self.dispatch("GUILD_CREATE", guild_json(self, guild))
        return guild

    def add_member(self, guild_id: int, name: str, *, permissions: int = MEMBER_PERMISSIONS) -> FakeUser:
        guild = self.guilds[guild_id]
        user = FakeUser(snowflake(), name)
        self.users[user.id] = user
        member = FakeMember(user, guild_id, permissions, snowflake())
        guild.members[user.id] = member
        role = {"id": str(member.role_id), "name": name, "permissions": str(permissions), "position": 1}
        self.dispatch("GUILD_ROLE_CREATE", {"guild_id": str(guild_id), "role": role})
        self.dispatch("GUILD_MEMBER_ADD", {**member_json(member), "guild_id": str(guild_id)})
        return user

    def add_channel(self, guild_id: int, name: str, *, announce: bool = True) -> int:
        channel = FakeChannel(snowflake(), name, guild_id)
        self.channels[channel.id] = channel
        self.guilds[guild_id].channel_ids.append(channel.id)
        if announce:
            self.dispatch("CHANNEL_CREATE", channel_json(channel, len(self.guilds[guild_id].channel_ids) - 1))
        return channel.id

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

    def _live_session(self, *, caught_up: bool = False) -> gateway.GatewaySession | None:
        """The newest connected session (``caught_up``: it has been sent everything queued for it)."""
        live = [s for s in self._ready_sessions() if s.live and (s.sent_upto >= s.seq or not caught_up)]
        return live[-1] if live else None

    def dispatch(
        self,
        event: str,
        data: dict[str, Any],
        *,
        per_session: Callable[[gateway.GatewaySession], dict[str, Any]] | None = None,
        only: gateway.GatewaySession | None = None,
    ) -> int:
        """Send an event to every identified session (or ``only`` one); a disconnected one gets it on RESUME.

        ``per_session`` tailors ``d`` to a session (the message content intent); ``gateway_events`` keeps
        ``data``. Returns the last sequence number assigned.
        """
        self.gateway_events.append((event, data))
        seq = 0
        for session in [only] if only is not None else self._ready_sessions():
            seq = session.enqueue(event, per_session(session) if per_session else data)
        return seq

    def dispatch_message(self, event: str, msg: FakeMessage) -> None:
        if msg.ephemeral:
            return  # only the user who triggered the interaction sees it; bots get no event
        self.dispatch(
            event,
            gateway_message_json(self, msg, message_content=True),
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
    ) -> FakeInteraction:
        session = self._live_session()
        if session is None:
            raise AssertionError("fake Discord: no bot is connected and READY to receive the interaction")
        guild = self.guild_of(channel_id)
        channel = self.channel_payload(channel_id)
        if channel is None:
            raise AssertionError(f"fake Discord: unknown channel {channel_id}")
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
            "app_permissions": str(BOT_PERMISSIONS),
            "attachment_size_limit": self.filesize_limit(channel_id),
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id) if guild else "0"},
            "context": 0 if guild else 1,
        }
        if guild is not None:
            if user.id not in guild.members:
                raise AssertionError(f"fake Discord: {user.name} is not a member of {guild.name}")
            perms = member_permissions(guild, user.id)
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
        seq = self.dispatch("INTERACTION_CREATE", payload, only=session)  # Discord picks one session
        await self._wait_until(
            lambda: True if session.sent_upto >= seq else None, "the INTERACTION_CREATE to reach the bot", 5
        )
        return inter

    def _options(
        self,
        spec: list[dict[str, Any]],
        values: dict[str, object],
        resolved: dict[str, dict[str, Any]],
        guild: FakeGuild | None = None,
    ) -> list[dict[str, Any]]:
        types = {o["name"]: o.get("type") for o in spec}
        out: list[dict[str, Any]] = []
        for name, value in values.items():
            if isinstance(value, FakeUser):
                resolved.setdefault("users", {})[str(value.id)] = user_json(value)
                member = guild.members.get(value.id) if guild is not None else None
                if member is not None:  # in a guild Discord resolves the member too (without its user)
                    permissions = member_permissions(guild, value.id)
                    resolved.setdefault("members", {})[str(value.id)] = member_json(
                        member, with_user=False, permissions=permissions
                    )
                out.append({"name": name, "type": 6, "value": str(value.id)})
                continue
            otype = types.get(name) or OPTION_TYPES.get(type(value), 3)
            if otype == 7:  # a channel option: Discord resolves the channel, with the invoker's permissions
                channel = self.channel_payload(int(value))  # type: ignore[call-overload]
                assert channel is not None, f"fake Discord: unknown channel {value} for option {name!r}"
                resolved.setdefault("channels", {})[str(value)] = {**channel, "permissions": str(BOT_PERMISSIONS)}
                value = str(value)
            out.append({"name": name, "type": otype, "value": value})
        return out

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
    ) -> FakeInteraction:
        """A chat-input command as a user invokes it; option types come from the synced command.

        ``guild_locale`` defaults to the guild's preferred locale; ``focused`` makes it an autocomplete.
        """
        assert guild_id == self._guild_id(channel_id), f"channel {channel_id} is not in guild {guild_id}"
        cmd, scope = self.find_command(name, guild_id)
        spec = (cmd or {}).get("options", [])
        path = subcommand.split() if subcommand else []
        for part in path:  # descend into the group / subcommand to find the options' types
            spec = next((o.get("options", []) for o in spec if o["name"] == part), [])
        resolved: dict[str, dict[str, Any]] = {}
        opts = self._options(spec, options or {}, resolved, self.guilds.get(guild_id) if guild_id else None)
        for opt_name, (filename, raw, content_type) in (attachments or {}).items():
            att = self.store_file(channel_id, UploadedFile(filename, raw, content_type), ephemeral=True)
            resolved.setdefault("attachments", {})[att["id"]] = att
            opts.append({"name": opt_name, "type": 11, "value": att["id"]})
        if focused is not None:
            for opt in opts:
                if opt["name"] == focused:
                    opt["focused"] = True
        kinds = [2, 1][2 - len(path) :]  # "group sub" -> group (2) wrapping subcommand (1)
        for part, kind in reversed(list(zip(path, kinds, strict=True))):
            opts = [{"name": part, "type": kind, "options": opts}]
        data: dict[str, Any] = {"id": str(cmd["id"]) if cmd else str(snowflake()), "name": name, "type": 1}
        data["options"] = opts
        if resolved:
            data["resolved"] = resolved
        if scope is not None:
            data["guild_id"] = str(scope)
        itype = 4 if focused is not None else 2
        return await self._interact(itype, channel_id, user, data, locale=locale, guild_locale=guild_locale)

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
        if msg is None or msg.deleted:
            raise AssertionError(f"fake Discord: no message {message_id} to interact with")
        ids = [c.get("custom_id") for row in msg.components for c in row.get("components", [])]
        if custom_id not in ids:
            raise AssertionError(f"fake Discord: message {message_id} has no component {custom_id!r} (has {ids})")
        return msg.channel_id

    async def click(
        self, message_id: int, custom_id: str, user: FakeUser, *, channel_id: int | None = None, locale: str = "en-US"
    ) -> FakeInteraction:
        """A button press on a stored message (which must carry a button with ``custom_id``)."""
        channel = self._component_channel(message_id, custom_id)
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(3, channel_id or channel, user, data, message_id=message_id, locale=locale)

    async def select(
        self, message_id: int, custom_id: str, user: FakeUser, values: list[str], *, locale: str = "en-US"
    ) -> FakeInteraction:
        channel = self._component_channel(message_id, custom_id)
        data = {"custom_id": custom_id, "component_type": 3, "values": values}
        return await self._interact(3, channel, user, data, message_id=message_id, locale=locale)

    async def submit_modal(
        self,
        custom_id: str,
        fields: dict[str, str],
        user: FakeUser,
        *,
        channel_id: int,
        message_id: int | None = None,
        guild_id: int | None = None,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Submit a modal the bot showed to ``user`` (a type 9 callback with this custom_id must exist)."""
        assert guild_id in (None, self._guild_id(channel_id)), f"channel {channel_id} is not in guild {guild_id}"
        shown = [i.modal for i in self.interactions.values() if i.modal and i.user is user]
        if not any(m.get("custom_id") == custom_id for m in shown):
            raise AssertionError(f"fake Discord: the bot never showed {user.name} a modal {custom_id!r}")
        rows = [{"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in fields.items()]
        data = {"custom_id": custom_id, "components": rows}
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
    ) -> int:
        """A user posts a message (MESSAGE_CREATE); a reply pings the replied-to author, as clients do."""
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
            if target.author_id not in msg.mention_ids:
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
