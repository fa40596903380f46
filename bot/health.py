"""`banana-bot health`: is the database reachable, and is the running process connected to Discord on every
one of its shards?

A running bot writes a heartbeat file every HEARTBEAT_INTERVAL seconds (one per set of shards, so several
processes can share a data folder): when it was written and each shard's gateway latency, or null for a
shard that is not connected. It writes a last one marked "stopped" when it closes.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from storage.db import Database, DatabaseError, MigrationError

from .config import Settings

#: Seconds between heartbeats; an older one than HEARTBEAT_MAX_AGE is unhealthy.
HEARTBEAT_INTERVAL = 30.0
HEARTBEAT_MAX_AGE = 120.0
DATABASE_TIMEOUT = 10.0


def heartbeat_path(settings: Settings) -> Path:
    if settings.shard_ids is None:
        return settings.data_dir / "heartbeat"
    return settings.data_dir / f"heartbeat-shards-{'-'.join(str(s) for s in settings.shard_ids)}"


def heartbeat_text(shards: Iterable[tuple[int, bool, float]], *, stopped: bool = False) -> str:
    """The file's content: now, and each shard (id, connected, latency in s; infinite until first measured)."""
    state = {
        str(shard): {"connected": connected, "latency_ms": round(latency * 1000, 1) if math.isfinite(latency) else None}
        for shard, connected, latency in shards
    }
    return json.dumps({"at": time.time(), "pid": os.getpid(), "stopped": stopped, "shards": state}) + "\n"


@dataclass
class Health:
    healthy: bool
    lines: list[str]


def check(settings: Settings) -> Health:
    lines: list[str] = []
    database_ok = _check_database(settings, lines)
    gateway_ok = _check_heartbeat(settings, lines)
    return Health(database_ok and gateway_ok, lines)


def _check_database(settings: Settings, lines: list[str]) -> bool:
    if settings.database_url is None and not settings.database_path.is_file():
        lines.append(f"database: none yet at {settings.database_path} (the bot creates it when it starts)")
        return False

    async def probe() -> None:
        db = await asyncio.wait_for(Database.open(settings.database_target), DATABASE_TIMEOUT)
        try:
            await asyncio.wait_for(db.fetchval("SELECT 1"), DATABASE_TIMEOUT)
        finally:
            await db.close()

    try:
        asyncio.run(probe())
    except TimeoutError:
        lines.append(f"database: no answer within {DATABASE_TIMEOUT:g} s")
        return False
    except (DatabaseError, MigrationError, OSError, sqlite3.Error) as exc:
        lines.append(f"database: {exc}")
        return False
    lines.append("database: ok (PostgreSQL)" if settings.database_url is not None else "database: ok (SQLite)")
    return True


def _check_heartbeat(settings: Settings, lines: list[str]) -> bool:
    path = heartbeat_path(settings)
    try:
        beat = json.loads(path.read_text())
        age = time.time() - float(beat["at"])
        shards = {int(s): (bool(v["connected"]), v["latency_ms"]) for s, v in dict(beat["shards"]).items()}
    except (OSError, ValueError, KeyError, TypeError):
        lines.append("gateway: the bot has not connected to Discord yet")
        return False
    if beat.get("stopped"):
        lines.append(f"gateway: the bot stopped {age:.0f} s ago")
        return False
    if age > HEARTBEAT_MAX_AGE:
        lines.append(f"gateway: last heartbeat {age:.0f} s ago (the process is stuck or gone)")
        return False
    if not shards:
        lines.append("gateway: not connected to Discord yet")
        return False
    shown = ", ".join(
        f"{s} ({'down' if not up else 'up' if ms is None else f'{ms:.0f} ms'})"
        for s, (up, ms) in sorted(shards.items())
    )
    lines.append(f"gateway: shards {shown}; last heartbeat {age:.0f} s ago")
    down = [str(s) for s, (up, _) in sorted(shards.items()) if not up]
    if down:
        lines.append(f"gateway: shard {', '.join(down)} not connected")
        return False
    return True
