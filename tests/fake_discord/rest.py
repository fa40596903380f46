"""REST under /api/v10 and the CDN under /cdn: routing, recording, and Discord's behaviour per route."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from .models import (
    EPHEMERAL,
    LOADING,
    FakeInteraction,
    FakeMessage,
    FakeThread,
    RecordedCall,
    UploadedFile,
    iso_now,
    snowflake,
)
from .payloads import member_json, message_json, thread_json, user_json
from .validation import (
    ApiError,
    check_choices,
    check_message,
    check_modal,
    missing_access,
    too_large,
    unknown_channel,
    unknown_message,
)

if TYPE_CHECKING:
    from .server import FakeDiscord

log = logging.getLogger("tests.fake_discord.rest")
Reply = tuple[int, Any]  # (status, JSON body or None for 204)
Handler = Callable[..., Awaitable[Reply]]
API_PREFIX = "/api/v10"
DIGITS = re.compile(r"\d+")
ID = r"(?P<{}>\d+)"
ROUTES: list[tuple[str, str, str]] = [  # method, path pattern, handler method name
    ("GET", r"/users/@me", "users_me"),
    ("POST", r"/users/@me/channels", "create_dm"),
    ("GET", r"/oauth2/applications/@me", "application_me"),
    ("GET", r"/gateway", "get_gateway"),
    ("GET", r"/gateway/bot", "get_gateway_bot"),
    ("GET|PUT", rf"/applications/{ID.format('app')}(?:/guilds/{ID.format('guild')})?/commands", "commands"),
    ("POST", rf"/interactions/{ID.format('iid')}/(?P<token>[^/]+)/callback", "interaction_callback"),
    ("POST", rf"/webhooks/{ID.format('app')}/(?P<token>[^/]+)", "webhook_execute"),
    (
        "GET|PATCH|DELETE",
        rf"/webhooks/{ID.format('app')}/(?P<token>[^/]+)/messages/(?P<mid>@original|\d+)",
        "webhook_msg",
    ),
    ("GET", rf"/channels/{ID.format('cid')}", "get_channel"),
    ("GET|POST", rf"/channels/{ID.format('cid')}/messages", "channel_messages"),
    ("GET|PATCH|DELETE", rf"/channels/{ID.format('cid')}/messages/{ID.format('mid')}", "channel_message"),
    ("POST", rf"/channels/{ID.format('cid')}/messages/{ID.format('mid')}/threads", "thread_from_message"),
    ("POST", rf"/channels/{ID.format('cid')}/threads", "thread_without_message"),
    ("PUT|DELETE", rf"/channels/{ID.format('cid')}/messages/{ID.format('mid')}/reactions/[^/]+/[^/]+", "no_content"),
    ("POST", rf"/channels/{ID.format('cid')}/typing", "no_content"),
    ("GET", rf"/guilds/{ID.format('guild')}/members/{ID.format('user')}", "guild_member"),
]
NO_AUTH = ("/interactions/", "/webhooks/")  # authorised by the interaction token in the path
SESSION_START_WINDOW = 24 * 3600.0  # seconds: session starts count against the daily limit this long


def _ratelimit_headers(method: str, path: str) -> dict[str, str]:
    # Generous limits on every answer so discord.py's limiter never waits.
    template = DIGITS.sub("id", path)
    bucket = hashlib.md5(f"{method} {template}".encode()).hexdigest()[:16]
    return {
        "X-RateLimit-Limit": "10000",
        "X-RateLimit-Remaining": "9999",
        "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
        "X-RateLimit-Reset-After": "1.000",
        "X-RateLimit-Bucket": bucket,
    }


async def _read_body(request: web.Request) -> tuple[Any, list[UploadedFile]]:
    if request.content_type == "multipart/form-data":
        payload: Any = None
        files: list[UploadedFile] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "payload_json":
                payload = json.loads(await part.text())
            elif part.filename is not None:
                declared = part.headers.get("Content-Type", "application/octet-stream")
                files.append(UploadedFile(part.filename, bytes(await part.read()), declared))
        return payload, files
    raw = await request.read()
    return (json.loads(raw) if raw else None), []


class Rest:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.routes: list[tuple[set[str], re.Pattern[str], Handler]] = [
            (set(m.split("|")), re.compile(p + "$"), getattr(self, h)) for m, p, h in ROUTES
        ]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/cdn/attachments/"):
            return self.cdn(request)
        path = request.path.removeprefix(API_PREFIX)
        call = RecordedCall(request.method, path, dict(request.query), at=time.monotonic())
        try:
            call.json, call.files = await _read_body(request)
            status, body = await self._route(request, call)
        except ApiError as exc:
            status, body = exc.status, exc.body
        except Exception as exc:
            # A bug in the fake: answer 400 (a 5xx would make discord.py retry with sleeps) and keep it for tests.
            log.exception("fake Discord failed on %s %s", request.method, path)
            self.fake.internal_errors.append(exc)
            status, body = 400, {"code": 0, "message": f"fake Discord internal error: {exc!r}"}
        call.status, call.response = status, body
        self.fake.calls.append(call)
        self.fake._bump()
        headers = _ratelimit_headers(request.method, path)
        if body is None:
            return web.Response(status=status, headers=headers)
        # Exactly "application/json": discord.py compares the header literally (no charset).
        headers["Content-Type"] = "application/json"
        return web.Response(status=status, body=json.dumps(body).encode(), headers=headers)

    async def _route(self, request: web.Request, call: RecordedCall) -> Reply:
        if request.path.startswith(API_PREFIX):
            for methods, pattern, handler in self.routes:
                match = pattern.match(call.path)
                if match and request.method in methods:
                    if not call.path.startswith(NO_AUTH) and request.headers.get("Authorization") != (
                        f"Bot {self.fake.token}"
                    ):
                        raise ApiError(401, 0, "401: Unauthorized")
                    return await handler(call, **match.groupdict())
        self.fake.unknown_routes.append(call)
        raise ApiError(404, 0, "404: Not Found")

    def cdn(self, request: web.Request) -> web.Response:
        parts = request.path.split("/")  # ['', 'cdn', 'attachments', channel, id, filename]
        stored = self.fake.cdn.get(int(parts[4])) if len(parts) == 6 and parts[4].isdigit() else None
        self.fake.cdn_requests.append(request.path)
        if stored is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=stored.data, headers={"Content-Type": stored.content_type})

    # ----- session, application, commands -----

    async def users_me(self, call: RecordedCall) -> Reply:
        return 200, {**user_json(self.fake.bot_user), "verified": True, "mfa_enabled": False, "flags": 0}

    async def application_me(self, call: RecordedCall) -> Reply:
        owner = {"id": "1", "username": "owner", "discriminator": "0", "avatar": None, "global_name": "owner"}
        return 200, {
            "id": str(self.fake.application_id),
            "name": self.fake.bot_user.name,
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": owner,
            "verify_key": "0" * 64,
            "flags": 0,
            "bot": user_json(self.fake.bot_user),
        }

    async def get_gateway(self, call: RecordedCall) -> Reply:
        return 200, {"url": self.fake.gateway_url.rstrip("/")}

    async def get_gateway_bot(self, call: RecordedCall) -> Reply:
        """The recommended shard count and the session start limit: IDENTIFYs allowed per day, of which those
        in the last 24 hours are used up; ``reset_after`` (ms) is when the oldest of them stops counting."""
        fake = self.fake
        now = time.monotonic()
        recent = [t for t in fake.session_starts if now - t < SESSION_START_WINDOW]
        reset_after = int((recent[0] + SESSION_START_WINDOW - now) * 1000) if recent else 0
        limit = {
            "total": fake.session_start_total,
            "remaining": max(0, fake.session_start_total - len(recent)),
            "reset_after": reset_after,
            "max_concurrency": fake.max_concurrency,
        }
        url = fake.gateway_url.rstrip("/")
        return 200, {"url": url, "shards": fake.recommended_shards, "session_start_limit": limit}

    async def commands(self, call: RecordedCall, app: str, guild: str | None) -> Reply:
        if int(app) != self.fake.application_id:
            raise ApiError(403, 50001, "Missing Access")
        scope = int(guild) if guild else None
        if call.method == "GET":
            return 200, self.fake.synced_commands.get(scope, [])
        old = {(c["name"], c.get("type", 1)): c["id"] for c in self.fake.synced_commands.get(scope, [])}
        stored = []
        for cmd in call.json or []:
            ctype = cmd.get("type", 1)
            name = cmd.get("name") or ""
            if not 1 <= len(name) <= 32 or (ctype == 1 and not 1 <= len(cmd.get("description") or "") <= 100):
                raise ApiError(
                    400, 50035, "Invalid Form Body", {"name": {"_errors": [{"code": "BASE_TYPE_BAD_LENGTH"}]}}
                )
            problem = localization_problem(cmd, chat_input=ctype == 1)
            if problem is not None:
                raise ApiError(400, 50035, "Invalid Form Body", {"name_localizations": {"_errors": [problem]}})
            entry = {"description": "", "options": [], "default_member_permissions": None, "nsfw": False, **cmd}
            entry.update(id=str(old.get((name, ctype), snowflake())), application_id=app, type=ctype)
            entry["version"] = str(snowflake())
            if scope is not None:
                entry["guild_id"] = str(scope)
            stored.append(entry)
        self.fake.synced_commands[scope] = stored
        return 200, stored

    async def create_dm(self, call: RecordedCall) -> Reply:
        user = self.fake.users.get(int((call.json or {}).get("recipient_id", 0)))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return 200, self.fake.channel_payload(self.fake.open_dm(user))

    # ----- messages: shared by interactions, webhooks and channels -----

    def _check_upload(self, channel_id: int, files: list[UploadedFile]) -> None:
        if sum(len(f.data) for f in files) > self.fake.filesize_limit(channel_id):
            raise too_large()

    def _attach(self, msg: FakeMessage, payload: dict[str, Any], files: list[UploadedFile], *, edit: bool) -> None:
        """Apply ``attachments`` + uploaded ``files[n]``: keep listed existing ones by id, add the new ones."""
        spec = payload.get("attachments")
        if spec is None and not files and edit:
            return
        existing = {a["id"]: (a, f) for a, f in zip(msg.attachments, msg.files, strict=True)}
        kept = [] if spec is not None or not edit else list(existing.values())
        described: dict[int, dict[str, Any]] = {}
        for entry in spec or []:
            key = str(entry.get("id"))
            if key in existing:
                kept.append(existing[key])
            elif key.isdigit() and int(key) < len(files):
                described[int(key)] = entry
        for i, file in enumerate(files):
            att = self.fake.store_file(msg.channel_id, file, ephemeral=msg.ephemeral)
            if described.get(i, {}).get("description"):
                att["description"] = described[i]["description"]
            kept.append((att, self.fake.cdn[int(att["id"])]))
        msg.attachments = [a for a, _ in kept]
        msg.files = [f for _, f in kept]

    def _new_message(
        self, channel_id: int, payload: dict[str, Any], files: list[UploadedFile], *, flags: int = 0, **extra: Any
    ) -> FakeMessage:
        if self.fake.is_gone(channel_id):
            raise unknown_channel()  # interaction responses and follow-ups cannot post there either
        check_message(payload, creating=True, n_files=len(files))
        self._check_upload(channel_id, files)
        guild = self.fake.guild_of(channel_id)
        msg = FakeMessage(snowflake(), channel_id, guild.id if guild else None, self.fake.bot_user.id, **extra)
        msg.flags = flags | (int(payload.get("flags") or 0) & ~LOADING)
        self._fill(msg, payload)
        for user_id in content_mentions(msg.content, payload.get("allowed_mentions")):
            if user_id not in msg.mention_ids:
                msg.mention_ids.append(user_id)
        self._attach(msg, payload, files, edit=False)
        self.fake.add_message(msg)
        self.fake.dispatch_message("MESSAGE_CREATE", msg)
        return msg

    @staticmethod
    def _fill(msg: FakeMessage, payload: dict[str, Any]) -> None:
        for key, cleared in (("content", ""), ("embeds", []), ("components", [])):
            if key in payload:  # an explicit null clears the field, as in an edit with content=None
                setattr(msg, key, cleared if payload[key] is None else payload[key])

    def _edit(
        self, msg: FakeMessage, payload: dict[str, Any], files: list[UploadedFile], *, record: bool = True
    ) -> None:
        check_message(payload, creating=False, n_files=len(files))
        self._check_upload(msg.channel_id, files)
        self._fill(msg, payload)
        self._attach(msg, payload, files, edit=True)
        msg.flags &= ~LOADING  # the "thinking…" placeholder becomes a real message on its first edit
        if record:
            msg.edits.append({**payload, "files": [f.filename for f in files]})
            msg.edited_timestamp = iso_now()
        self.fake._bump()
        self.fake.dispatch_message("MESSAGE_UPDATE", msg)

    def _delete(self, msg: FakeMessage) -> None:
        msg.deleted = True
        self.fake._bump()
        if not msg.ephemeral:
            data = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
            if msg.guild_id:
                data["guild_id"] = str(msg.guild_id)
            self.fake.dispatch("MESSAGE_DELETE", data, guild_id=msg.guild_id)

    # ----- interactions -----

    async def interaction_callback(self, call: RecordedCall, iid: str, token: str) -> Reply:
        inter = self.fake.interactions.get(int(iid))
        if inter is None or inter.token != token:
            raise ApiError(404, 10062, "Unknown interaction")
        inter.callbacks.append(call)
        if any(c.status < 300 for c in inter.callbacks[:-1]):
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if call.at - inter.dispatched_at > self.fake.ack_deadline:
            raise ApiError(404, 10062, "Unknown interaction")  # Discord forgets unanswered interactions after 3 s
        body = call.json or {}
        kind, data = body.get("type"), body.get("data") or {}
        msg: FakeMessage | None = None
        if kind == 4:
            msg = self._new_message(inter.channel_id, data, call.files, webhook_id=self.fake.application_id)
            msg.interaction_id, inter.original_id = inter.id, msg.id
        elif kind == 5:
            if self.fake.is_gone(inter.channel_id):
                raise unknown_channel()
            flags = LOADING | (int(data.get("flags") or 0) & EPHEMERAL)
            guild_id = inter.guild_id
            msg = FakeMessage(snowflake(), inter.channel_id, guild_id, self.fake.bot_user.id, flags=flags)
            msg.webhook_id, msg.interaction_id, inter.original_id = self.fake.application_id, inter.id, msg.id
            self.fake.add_message(msg)
            self.fake.dispatch_message("MESSAGE_CREATE", msg)
        elif kind == 7:
            if inter.message_id is None:
                raise ApiError(400, 40043, "Interaction response type is invalid for this interaction")
            msg = self.fake.messages[inter.message_id]
            self._edit(msg, data, call.files)
        elif kind == 8:
            check_choices(data)
        elif kind == 9:
            check_modal(data)
            inter.modal = data
        elif kind not in (1, 6):
            raise ApiError(400, 50035, "Invalid Form Body", {"type": {"_errors": [{"code": "BASE_TYPE_CHOICES"}]}})
        self.fake._bump()
        if call.query.get("with_response") not in ("1", "true", "True"):
            return 204, None
        summary: dict[str, Any] = {"id": iid, "type": inter.type}
        if msg is not None:
            summary["response_message_id"] = str(msg.id)
            summary["response_message_loading"] = kind == 5
            summary["response_message_ephemeral"] = msg.ephemeral
        resource: dict[str, Any] = {"type": kind}
        if msg is not None and kind in (4, 7):
            resource["message"] = message_json(self.fake, msg)
        return 200, {"interaction": summary, "resource": resource}

    def _token_interaction(self, app: str, token: str) -> FakeInteraction:
        if int(app) != self.fake.application_id:
            raise ApiError(404, 10015, "Unknown Webhook")
        inter = next((i for i in self.fake.interactions.values() if i.token == token), None)
        if inter is None or time.monotonic() - inter.dispatched_at > self.fake.token_lifetime:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        if not inter.responded:
            raise ApiError(404, 10015, "Unknown Webhook")  # follow-ups need an acknowledged interaction
        return inter

    async def webhook_execute(self, call: RecordedCall, app: str, token: str) -> Reply:
        inter = self._token_interaction(app, token)
        payload = call.json or {}
        original = inter.original()
        if original is not None and original.loading and not original.deleted:
            # Discord turns the first follow-up after a "thinking" defer into the deferred message itself.
            check_message(payload, creating=True, n_files=len(call.files))
            self._edit(original, payload, call.files, record=False)
            msg = original
        else:
            msg = self._new_message(inter.channel_id, payload, call.files, webhook_id=self.fake.application_id)
            msg.interaction_id = inter.id
        inter.followup_ids.append(msg.id)
        self.fake._bump()
        wait = call.query.get("wait") in ("1", "true", "True")
        return (200, message_json(self.fake, msg)) if wait else (204, None)

    async def webhook_msg(self, call: RecordedCall, app: str, token: str, mid: str) -> Reply:
        inter = self._token_interaction(app, token)
        msg_id = inter.original_id if mid == "@original" else int(mid)
        msg = self.fake.messages.get(msg_id) if msg_id else None
        if msg is None or msg.deleted or msg.interaction_id != inter.id or self.fake.is_gone(msg.channel_id):
            raise unknown_message()  # messages go with their channel
        if call.method == "PATCH":
            self._edit(msg, call.json or {}, call.files)
        elif call.method == "DELETE":
            self._delete(msg)
            return 204, None
        return 200, message_json(self.fake, msg)

    # ----- channels -----

    def _channel(self, cid: str) -> int:
        channel_id = int(cid)
        if channel_id not in self.fake.channels and channel_id not in self.fake.threads:
            raise unknown_channel()
        if self.fake.is_gone(channel_id):
            raise unknown_channel()
        if self.fake.is_revoked(channel_id):
            raise missing_access()  # no View Channel: Discord answers 403 on every route of the channel
        return channel_id

    def _message(self, channel_id: int, mid: str) -> FakeMessage:
        msg = self.fake.messages.get(int(mid))
        if msg is None or msg.deleted or msg.channel_id != channel_id or msg.ephemeral:
            raise unknown_message()
        return msg

    async def get_channel(self, call: RecordedCall, cid: str) -> Reply:
        return 200, self.fake.channel_payload(self._channel(cid))

    async def channel_messages(self, call: RecordedCall, cid: str) -> Reply:
        channel_id = self._channel(cid)
        if call.method == "GET":
            history = [m for m in self.fake.channel_messages(channel_id) if not m.ephemeral]
            if "before" in call.query:
                history = [m for m in history if m.id < int(call.query["before"])]
            if "after" in call.query:
                history = [m for m in history if m.id > int(call.query["after"])]
            limit = min(int(call.query.get("limit", 50)), 100)
            newest_first = sorted(history, key=lambda m: m.id, reverse=True)
            if "after" in call.query:  # Discord returns the messages just after, still newest first
                newest_first = newest_first[-limit:]
            return 200, [message_json(self.fake, m) for m in newest_first[:limit]]
        payload = call.json or {}
        dm = self.fake.channels.get(channel_id)
        if dm is not None and dm.recipient is not None and dm.recipient.id in self.fake.closed_dms:
            raise ApiError(403, 50007, "Cannot send messages to this user")
        extra: dict[str, Any] = {}
        ref = payload.get("message_reference")
        if ref:
            target = self.fake.messages.get(int(ref.get("message_id", 0)))
            if target is None or target.deleted:
                if ref.get("fail_if_not_exists", True):
                    err = {"_errors": [{"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "message": "Unknown message"}]}
                    raise ApiError(400, 50035, "Invalid Form Body", {"message_reference": err})
            else:
                extra["type"] = 19
                extra["message_reference"] = {"type": 0, "message_id": str(target.id)}
                extra["message_reference"]["channel_id"] = str(target.channel_id)
                if target.guild_id:
                    extra["message_reference"]["guild_id"] = str(target.guild_id)
                if (payload.get("allowed_mentions") or {}).get("replied_user", True):
                    extra["mention_ids"] = [target.author_id]
        msg = self._new_message(channel_id, payload, call.files, **extra)
        return 200, message_json(self.fake, msg)

    async def channel_message(self, call: RecordedCall, cid: str, mid: str) -> Reply:
        msg = self._message(self._channel(cid), mid)
        if call.method == "PATCH":
            if msg.author_id != self.fake.bot_user.id:
                raise ApiError(403, 50005, "Cannot edit a message authored by another user")
            self._edit(msg, call.json or {}, call.files)
        elif call.method == "DELETE":
            if msg.author_id != self.fake.bot_user.id:
                raise ApiError(403, 50013, "Missing Permissions")  # the bot has no Manage Messages
            self._delete(msg)
            return 204, None
        return 200, message_json(self.fake, msg)

    def _new_thread(self, parent_id: int, thread_id: int, starter: int | None, payload: dict[str, Any]) -> Reply:
        if parent_id in self.fake.threads:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        name = str(payload.get("name") or "")
        if not 1 <= len(name) <= 100:
            err = {"name": {"_errors": [{"code": "BASE_TYPE_BAD_LENGTH", "message": "Must be between 1 and 100"}]}}
            raise ApiError(400, 50035, "Invalid Form Body", err)
        guild = self.fake.guild_of(parent_id)
        assert guild is not None, "threads need a guild channel"
        thread = FakeThread(thread_id, parent_id, name, starter, guild.id, self.fake.bot_user.id)
        thread.auto_archive_duration = int(payload.get("auto_archive_duration") or 1440)
        self.fake.threads[thread.id] = thread
        self.fake._bump()
        self.fake.dispatch("THREAD_CREATE", {**thread_json(thread), "newly_created": True}, guild_id=guild.id)
        return 201, thread_json(thread)

    async def thread_from_message(self, call: RecordedCall, cid: str, mid: str) -> Reply:
        channel_id = self._channel(cid)
        msg = self._message(channel_id, mid)
        if msg.thread_id is not None:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        reply = self._new_thread(channel_id, msg.id, msg.id, call.json or {})  # the thread id is the message id
        msg.thread_id = msg.id
        return reply

    async def thread_without_message(self, call: RecordedCall, cid: str) -> Reply:
        return self._new_thread(self._channel(cid), snowflake(), None, call.json or {})

    async def guild_member(self, call: RecordedCall, guild: str, user: str) -> Reply:
        found = self.fake.guilds.get(int(guild))
        if found is None:
            raise ApiError(404, 10004, "Unknown Guild")
        member = found.members.get(int(user))
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return 200, member_json(member)

    async def no_content(self, call: RecordedCall, cid: str, mid: str | None = None) -> Reply:
        channel_id = self._channel(cid)
        if mid is not None:
            self._message(channel_id, mid)
        return 204, None


def content_mentions(content: str, allowed: dict[str, Any] | None) -> list[int]:
    """User mentions in the content that ping, as Discord decides: all of them unless allowed_mentions narrows it."""
    found = [int(m) for m in re.findall(r"<@!?(\d+)>", content or "")]
    if allowed is None:
        return found
    if "users" in (allowed.get("parse") or []):
        return found
    listed = {int(u) for u in allowed.get("users") or []}
    return [u for u in found if u in listed]


#: The locales Discord accepts in ``*_localizations`` (discord.com/developers/docs/reference#locales).
DISCORD_LOCALES = frozenset(
    {
        "id",
        "da",
        "de",
        "en-GB",
        "en-US",
        "es-ES",
        "es-419",
        "fr",
        "hr",
        "it",
        "lt",
        "hu",
        "nl",
        "no",
        "pl",
        "pt-BR",
        "ro",
        "fi",
        "sv-SE",
        "vi",
        "tr",
        "cs",
        "el",
        "bg",
        "ru",
        "uk",
        "hi",
        "th",
        "zh-CN",
        "ja",
        "zh-TW",
        "ko",
    }
)
#: Names of chat-input commands and options, localised or not (Discord's regex; Python's \w is \p{L}\p{N}_).
CHAT_INPUT_NAME = re.compile(r"^[-_\w]{1,32}$")


def localization_problem(item: dict[str, Any], *, chat_input: bool) -> dict[str, str] | None:
    """What Discord would refuse in a command's (or option's, or choice's) localisations, recursively."""
    names = item.get("name_localizations") or {}
    descriptions = item.get("description_localizations") or {}
    for locale in (*names, *descriptions):
        if locale not in DISCORD_LOCALES:
            return {"code": "LOCALE_INVALID", "message": f"{locale!r} is not a valid locale"}
    for locale, name in names.items():
        if "value" in item:  # a choice: any text of 1-100 characters
            if not 1 <= len(name) <= 100:
                return {"code": "BASE_TYPE_BAD_LENGTH", "message": f"choice {locale}: {name!r}"}
        elif chat_input and (not CHAT_INPUT_NAME.match(name) or name != name.lower()):
            return {"code": "APPLICATION_COMMAND_INVALID_NAME", "message": f"{locale}: {name!r}"}
        elif not 1 <= len(name) <= 32:
            return {"code": "BASE_TYPE_BAD_LENGTH", "message": f"{locale}: {name!r}"}
    for locale, text in descriptions.items():
        if not 1 <= len(text) <= 100:
            return {"code": "BASE_TYPE_BAD_LENGTH", "message": f"description {locale}: {text!r}"}
    for child in (*(item.get("options") or []), *(item.get("choices") or [])):
        problem = localization_problem(child, chat_input=chat_input)
        if problem is not None:
            return problem
    return None
