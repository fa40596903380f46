"""What a server's moderators set about people and words (migration 0012): per-role daily limits, blocked
members, the ban list, and the log of refused requests behind /usage's refusal counts."""

from __future__ import annotations

import time
from dataclasses import dataclass

from storage.db import Database


@dataclass(frozen=True, slots=True)
class Block:
    guild_id: int
    user_id: int
    reason: str
    blocked_by: int
    blocked_at: float


@dataclass(frozen=True, slots=True)
class BannedPhrase:
    #: The phrase as it is matched (case and accents folded), and as the admin typed it.
    key: str
    phrase: str


# --- per-role daily limits --------------------------------------------------------------------------------
async def set_role_limit(db: Database, guild_id: int, role_id: int, daily: int | None) -> None:
    """Images per day for members with the role; None removes the role's limit."""
    async with db.transaction() as conn:
        if daily is None:
            await conn.execute("DELETE FROM role_limits WHERE guild_id = ? AND role_id = ?", (guild_id, role_id))
        else:
            await conn.execute(
                "INSERT INTO role_limits (guild_id, role_id, daily) VALUES (?, ?, ?) "
                "ON CONFLICT (guild_id, role_id) DO UPDATE SET daily = excluded.daily",
                (guild_id, role_id, daily),
            )


async def role_limits(db: Database, guild_id: int) -> dict[int, int]:
    """Role id -> images per day, for the roles that have a limit here."""
    sql = "SELECT role_id, daily FROM role_limits WHERE guild_id = ? ORDER BY role_id"
    rows = await db.fetchall(sql, (guild_id,))
    return {int(role_id): int(daily) for role_id, daily in rows}


# --- blocked members --------------------------------------------------------------------------------------
async def block_member(db: Database, guild_id: int, user_id: int, *, reason: str, blocked_by: int) -> None:
    sql = (
        "INSERT INTO blocked_members (guild_id, user_id, reason, blocked_by, blocked_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (guild_id, user_id) DO UPDATE SET reason = excluded.reason, blocked_by = excluded.blocked_by, "
        "blocked_at = excluded.blocked_at"
    )
    await db.execute(sql, (guild_id, user_id, reason, blocked_by, time.time()))


async def unblock_member(db: Database, guild_id: int, user_id: int) -> bool:
    """False if the member wasn't blocked."""
    return await db.execute("DELETE FROM blocked_members WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)) > 0


async def get_block(db: Database, guild_id: int, user_id: int) -> Block | None:
    sql = (
        "SELECT guild_id, user_id, reason, blocked_by, blocked_at FROM blocked_members "
        "WHERE guild_id = ? AND user_id = ?"
    )
    row = await db.fetchone(sql, (guild_id, user_id))
    return Block(int(row[0]), int(row[1]), str(row[2]), int(row[3]), float(row[4])) if row else None


async def blocked_members(db: Database, guild_id: int) -> list[Block]:
    sql = (
        "SELECT guild_id, user_id, reason, blocked_by, blocked_at FROM blocked_members "
        "WHERE guild_id = ? ORDER BY blocked_at"
    )
    rows = await db.fetchall(sql, (guild_id,))
    return [Block(int(g), int(u), str(r), int(b), float(a)) for g, u, r, b, a in rows]


# --- the ban list -----------------------------------------------------------------------------------------
async def add_banned_phrase(db: Database, guild_id: int, phrase: BannedPhrase, *, added_by: int) -> bool:
    """False if the server already bans that phrase."""
    sql = (
        "INSERT INTO banned_phrases (guild_id, phrase_key, phrase, added_by, added_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (guild_id, phrase_key) DO NOTHING"
    )
    return await db.execute(sql, (guild_id, phrase.key, phrase.phrase, added_by, time.time())) > 0


async def remove_banned_phrase(db: Database, guild_id: int, key: str) -> bool:
    """False if the server didn't ban that phrase."""
    return await db.execute("DELETE FROM banned_phrases WHERE guild_id = ? AND phrase_key = ?", (guild_id, key)) > 0


async def banned_phrases(db: Database, guild_id: int) -> list[BannedPhrase]:
    sql = "SELECT phrase_key, phrase FROM banned_phrases WHERE guild_id = ? ORDER BY added_at, phrase_key"
    rows = await db.fetchall(sql, (guild_id,))
    return [BannedPhrase(str(key), str(phrase)) for key, phrase in rows]


# --- refusals ---------------------------------------------------------------------------------------------
async def log_refusal(db: Database, guild_id: int, user_id: int, rule: str) -> None:
    await db.execute(
        "INSERT INTO refusals (guild_id, user_id, rule, created_at) VALUES (?, ?, ?, ?)",
        (guild_id, user_id, rule, time.time()),
    )


async def refusals_by_rule(
    db: Database, guild_id: int, since: float, until: float, *, user_id: int | None = None
) -> dict[str, int]:
    """How many requests each rule refused in [since, until), in the guild (or from one member there)."""
    sql = "SELECT rule, count(*) FROM refusals WHERE guild_id = ? AND created_at >= ? AND created_at < ?"
    params: tuple[int | float, ...] = (guild_id, since, until)
    if user_id is not None:
        sql += " AND user_id = ?"
        params += (user_id,)
    rows = await db.fetchall(sql + " GROUP BY rule ORDER BY rule", params)
    return {str(rule): int(count) for rule, count in rows}
