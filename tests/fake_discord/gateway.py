"""The gateway websocket: HELLO, heartbeats, IDENTIFY -> READY + GUILD_CREATE, RESUME with replay.

A session is one shard: IDENTIFY's ``shard`` [shard_id, shard_count] (absent: [0, 1]) decides which guilds its
READY lists and which events it gets (``GatewaySession.owns``); an impossible pair closes with 4010.

Frames are plain JSON text: discord.py asks for zlib/zstd streams but only decompresses binary frames.
Each session keeps a log of its numbered dispatches; a writer task sends whatever the client has not
seen, so dispatching is synchronous for the rest of the fake and a RESUME replays from the client's seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .models import FakeGuild, shard_of
from .payloads import guild_json, user_json

if TYPE_CHECKING:
    from .server import FakeDiscord

log = logging.getLogger("tests.fake_discord.gateway")

HEARTBEAT_INTERVAL_MS = 41250
INVALID_TOKEN_CLOSE = 4004
INVALID_SHARD_CLOSE = 4010


@dataclass(eq=False)
class GatewaySession:
    session_id: str
    intents: int
    shard: tuple[int, int] = (0, 1)  # (shard_id, shard_count); a client that sends none is the only shard
    sent_shard: bool = False  # IDENTIFY carried ``shard`` (READY then carries it back)
    log: list[tuple[int, str]] = field(default_factory=list)  # (seq, frame)
    sent_upto: int = 0  # highest seq written to the socket
    ws: web.WebSocketResponse | None = None
    ready: bool = False  # READY and every GUILD_CREATE are in the log
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def seq(self) -> int:
        return self.log[-1][0] if self.log else 0

    @property
    def live(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def owns(self, guild_id: int | None) -> bool:
        """Whether this shard gets the guild's events (``None``: a DM, which shard 0 gets)."""
        shard_id, shard_count = self.shard
        return shard_of(guild_id, shard_count) == shard_id

    def enqueue(self, event: str, data: dict[str, Any]) -> int:
        seq = self.seq + 1
        self.log.append((seq, json.dumps({"op": 0, "t": event, "s": seq, "d": data})))
        self.wakeup.set()
        return seq


async def _send(session: GatewaySession | None, ws: web.WebSocketResponse, payload: dict[str, Any]) -> None:
    lock = session.send_lock if session is not None else asyncio.Lock()
    async with lock:
        await ws.send_str(json.dumps(payload))


async def _writer(fake: FakeDiscord, session: GatewaySession, ws: web.WebSocketResponse) -> None:
    """Send the session's log past ``sent_upto`` while this socket is the session's socket."""
    while session.ws is ws and not ws.closed:
        session.wakeup.clear()
        pending = [(s, f) for s, f in session.log if s > session.sent_upto]
        for seq, frame in pending:
            try:
                async with session.send_lock:
                    await ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return  # the socket went away mid-send; a RESUME replays from the client's seq
            session.sent_upto = seq
        if pending:
            fake._bump()
        await session.wakeup.wait()


def _guilds_of(fake: FakeDiscord, session: GatewaySession) -> list[FakeGuild]:
    """The guilds the bot is in that this session's shard owns, for READY and the GUILD_CREATEs after it."""
    return [g for g in fake.guilds.values() if g.bot_installed and session.owns(g.id)]


def _ready_payload(fake: FakeDiscord, session: GatewaySession) -> dict[str, Any]:
    ready: dict[str, Any] = {
        "v": 10,
        "user": {**user_json(fake.bot_user), "verified": True, "mfa_enabled": False, "flags": 0},
        "guilds": [{"id": str(g.id), "unavailable": True} for g in _guilds_of(fake, session)],
        "session_id": session.session_id,
        "resume_gateway_url": fake.gateway_url,
        "application": {"id": str(fake.application_id), "flags": 0},
        "private_channels": [],
        "relationships": [],
    }
    if session.sent_shard:
        ready["shard"] = list(session.shard)  # Discord echoes the pair only to a client that sent one
    return ready


def _shard(data: dict[str, Any]) -> tuple[int, int] | None:
    """IDENTIFY's ``shard`` as (shard_id, shard_count), (0, 1) when absent, None when Discord would refuse it."""
    raw = data.get("shard")
    if raw is None:
        return (0, 1)
    if not (isinstance(raw, list) and len(raw) == 2 and all(type(n) is int for n in raw)):
        return None
    shard_id, shard_count = raw
    return (shard_id, shard_count) if 0 <= shard_id < shard_count else None


async def handle_gateway(fake: FakeDiscord, request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
    await ws.prepare(request)
    fake._sockets.add(ws)
    session: GatewaySession | None = None
    writer: asyncio.Task[None] | None = None
    try:
        await _send(None, ws, {"op": 10, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue  # binary frames would only be zlib-compressed JSON, which discord.py never sends
            payload = json.loads(msg.data)
            op, data = payload.get("op"), payload.get("d")
            if op == 1:
                await _send(session, ws, {"op": 11})
            elif op in (2, 6) and data.get("token") != fake.token:
                await ws.close(code=INVALID_TOKEN_CLOSE, message=b"Authentication failed.")
            elif op == 2:
                shard = _shard(data)
                if shard is None:
                    await ws.close(code=INVALID_SHARD_CLOSE, message=b"Invalid shard.")
                    continue
                session = GatewaySession(secrets.token_hex(16), int(data.get("intents", 0)), shard, ws=ws)
                session.sent_shard = "shard" in data
                fake._sessions[session.session_id] = session
                fake.identified_intents.append(session.intents)
                fake.identified_shards.append(shard)
                fake.session_starts.append(time.monotonic())
                session.enqueue("READY", _ready_payload(fake, session))
                for guild in _guilds_of(fake, session):
                    session.enqueue("GUILD_CREATE", guild_json(fake, guild))
                session.ready = True
                writer = asyncio.create_task(_writer(fake, session, ws))
            elif op == 6:
                resumed = fake._sessions.get(data.get("session_id", ""))
                if resumed is None:
                    await _send(None, ws, {"op": 9, "d": False})
                    continue
                session, session.ws = resumed, ws
                session.sent_upto = min(int(data.get("seq") or 0), session.seq)
                session.enqueue("RESUMED", {})
                fake.resumes += 1
                writer = asyncio.create_task(_writer(fake, session, ws))
            # op 3 (presence), 4 (voice) and 8 (member chunks) need no answer in these tests
    finally:
        fake._sockets.discard(ws)
        if session is not None and session.ws is ws:
            session.ws = None
            session.wakeup.set()
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        fake._bump()
    return ws
