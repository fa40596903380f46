"""Per-guild settings: what a server's admins changed from the bot-wide defaults (see migration 0005)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from storage.db import Database


@dataclass(frozen=True, slots=True)
class GuildSettings:
    guild_id: int
    #: None: the bot-wide default (BANANA_GRID_MODE).
    grid_mode: str | None = None
    #: None: no budget.
    monthly_budget_usd: float | None = None


async def get_guild_settings(db: Database, guild_id: int) -> GuildSettings:
    sql = "SELECT grid_mode, monthly_budget_usd FROM guild_settings WHERE guild_id = ?"
    async with db.conn.execute(sql, (guild_id,)) as cursor:
        row = await cursor.fetchone()
    return GuildSettings(guild_id, row[0], row[1]) if row else GuildSettings(guild_id)


_SETTABLE = ("grid_mode", "monthly_budget_usd")


async def update_guild_settings(db: Database, guild_id: int, *, updated_by: int, **values: Any) -> None:
    """Set some of a guild's settings (None puts one back to the default)."""
    unknown = set(values) - set(_SETTABLE)
    if unknown:
        raise ValueError(f"unknown guild settings: {sorted(unknown)}")
    if not values:
        return
    columns = list(values)
    sql = (
        f"INSERT INTO guild_settings (guild_id, {', '.join(columns)}, updated_at, updated_by) "
        f"VALUES (?, {', '.join('?' for _ in columns)}, ?, ?) "
        f"ON CONFLICT (guild_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns)}, "
        "updated_at = excluded.updated_at, updated_by = excluded.updated_by"
    )
    async with db.transaction() as conn:
        await conn.execute(sql, (guild_id, *values.values(), time.time(), updated_by))


async def spent_since(db: Database, guild_id: int, since: float) -> float:
    """The guild's logged cost since `since` (served by the report index)."""
    sql = "SELECT coalesce(sum(cost_usd), 0) FROM generations WHERE guild_id = ? AND created_at >= ?"
    async with db.conn.execute(sql, (guild_id, since)) as cursor:
        row = await cursor.fetchone()
    return float(row[0]) if row else 0.0
