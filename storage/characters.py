"""Characters: a guild's saved character sheets and their reference images (see migration 0004)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from storage.db import Database

_COLUMNS = "id, guild_id, name, description, created_by, created_at, updated_at, version"


class DuplicateName(Exception):
    """The guild already has a character with this name."""


@dataclass(frozen=True, slots=True)
class Character:
    id: int
    guild_id: int
    name: str
    description: str
    created_by: int
    created_at: float
    updated_at: float
    version: int


def name_key(name: str) -> str:
    return name.strip().casefold()


async def create_character(db: Database, *, guild_id: int, name: str, description: str, created_by: int) -> Character:
    now = time.time()
    sql = (
        "INSERT INTO characters (guild_id, name, name_key, description, created_by, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    try:
        async with (
            db.transaction() as conn,
            conn.execute(sql, (guild_id, name.strip(), name_key(name), description, created_by, now, now)) as cursor,
        ):
            character_id = cursor.lastrowid
    except sqlite3.IntegrityError as exc:
        raise DuplicateName(name) from exc
    assert character_id is not None
    return Character(character_id, guild_id, name.strip(), description, created_by, now, now, 1)


async def get_character(db: Database, guild_id: int, name: str) -> Character | None:
    """By name, ignoring case, within one guild only."""
    sql = f"SELECT {_COLUMNS} FROM characters WHERE guild_id = ? AND name_key = ?"
    async with db.conn.execute(sql, (guild_id, name_key(name))) as cursor:
        row = await cursor.fetchone()
    return Character(*row) if row else None


async def get_character_by_id(db: Database, character_id: int) -> Character | None:
    async with db.conn.execute(f"SELECT {_COLUMNS} FROM characters WHERE id = ?", (character_id,)) as cursor:
        row = await cursor.fetchone()
    return Character(*row) if row else None


async def list_characters(db: Database, guild_id: int, prefix: str = "", limit: int = 25) -> list[Character]:
    """The guild's characters whose name starts with `prefix` (any case), by name."""
    escaped = name_key(prefix).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    sql = (
        f"SELECT {_COLUMNS} FROM characters WHERE guild_id = ? AND name_key LIKE ? ESCAPE '\\' "
        "ORDER BY name_key LIMIT ?"
    )
    async with db.conn.execute(sql, (guild_id, escaped + "%", limit)) as cursor:
        rows = await cursor.fetchall()
    return [Character(*r) for r in rows]


async def update_description(db: Database, character_id: int, description: str) -> None:
    sql = "UPDATE characters SET description = ?, updated_at = ?, version = version + 1 WHERE id = ?"
    async with db.transaction() as conn:
        await conn.execute(sql, (description, time.time(), character_id))


async def delete_character(db: Database, character_id: int) -> None:
    async with db.transaction() as conn:
        await conn.execute("DELETE FROM character_images WHERE character_id = ?", (character_id,))
        await conn.execute("DELETE FROM characters WHERE id = ?", (character_id,))


async def character_images(db: Database, character_id: int) -> list[str]:
    """Image-store keys of the character's references, oldest first."""
    sql = "SELECT image_key FROM character_images WHERE character_id = ? ORDER BY added_at, rowid"
    async with db.conn.execute(sql, (character_id,)) as cursor:
        rows = await cursor.fetchall()
    return [str(r[0]) for r in rows]


async def count_images(db: Database, character_id: int) -> int:
    sql = "SELECT count(*) FROM character_images WHERE character_id = ?"
    async with db.conn.execute(sql, (character_id,)) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def add_character_images(db: Database, character_id: int, image_keys: list[str], max_images: int) -> list[str]:
    """Add references as a new version of the character, dropping the oldest beyond `max_images`.

    Returns the dropped keys."""
    now = time.time()
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE characters SET version = version + 1, updated_at = ? WHERE id = ?", (now, character_id)
        )
        async with conn.execute("SELECT version FROM characters WHERE id = ?", (character_id,)) as cursor:
            row = await cursor.fetchone()
        assert row is not None
        for offset, key in enumerate(image_keys):
            # The same image again moves to the newest place rather than counting twice.
            await conn.execute(
                "INSERT INTO character_images (character_id, image_key, version, added_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (character_id, image_key) DO UPDATE SET version = excluded.version, "
                "added_at = excluded.added_at",
                (character_id, key, row[0], now + offset * 1e-6),
            )
        async with conn.execute(
            "SELECT image_key FROM character_images WHERE character_id = ? ORDER BY added_at DESC, rowid DESC",
            (character_id,),
        ) as cursor:
            newest_first = [str(r[0]) for r in await cursor.fetchall()]
        dropped = newest_first[max_images:]
        await conn.executemany(
            "DELETE FROM character_images WHERE character_id = ? AND image_key = ?",
            [(character_id, key) for key in dropped],
        )
    return dropped
