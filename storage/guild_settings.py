"""Per-guild settings: what a server's admins changed from the bot-wide defaults (see migration 0005)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from storage.db import Database


@dataclass(frozen=True, slots=True)
class GuildSettings:
    guild_id: int
    #: None: the bot-wide default (BANANA_GRID_MODE).
    grid_mode: str | None = None


async def get_guild_settings(db: Database, guild_id: int) -> GuildSettings:
    async with db.conn.execute("SELECT grid_mode FROM guild_settings WHERE guild_id = ?", (guild_id,)) as cursor:
        row = await cursor.fetchone()
    return GuildSettings(guild_id, row[0]) if row else GuildSettings(guild_id)


async def set_grid_mode(db: Database, guild_id: int, grid_mode: str | None, *, updated_by: int) -> None:
    sql = (
        "INSERT INTO guild_settings (guild_id, grid_mode, updated_at, updated_by) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (guild_id) DO UPDATE SET grid_mode = excluded.grid_mode, "
        "updated_at = excluded.updated_at, updated_by = excluded.updated_by"
    )
    async with db.transaction() as conn:
        await conn.execute(sql, (guild_id, grid_mode, time.time(), updated_by))
