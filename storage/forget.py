"""Deleting people's data: one member's everywhere (/forget-me), or one guild's (an admin's purge).

Images are content-addressed and can be shared (a tile someone else took further, a result added to a
character): an image goes only when nothing that remains refers to it, any version of a character included.

A member's /forget-me leaves the server's characters (other members use them), with every version and its
images, but takes the member off them: a character they created has no creator any more (only Manage Server
may change it), and the versions they made say no one made them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.characters import FORGOTTEN
from storage.db import Connection, Database
from storage.images import ImageStore

_KEY_FIELDS = ("request_json", "user_turn_json", "model_turn_json")


@dataclass(frozen=True)
class Forgotten:
    jobs: int
    generations: int
    images: int
    characters: int = 0


async def forget_user(db: Database, images: ImageStore, user_id: int) -> Forgotten:
    """Everything the member asked for, in every guild: jobs, usage rows, grids, and their images."""
    async with db.transaction() as conn:
        candidates = await _image_keys(conn, "user_id = ?", (user_id,))
        candidates |= await _generation_keys(conn, "user_id = ?", (user_id,))
        jobs = await _delete_jobs(conn, "user_id = ?", (user_id,))
        generations = await _delete(conn, "DELETE FROM generations WHERE user_id = ?", (user_id,))
        await _delete_grids(conn, "user_id = ?", (user_id,))
        # What was refused is theirs too; a block is the server's decision about them, and stays.
        await conn.execute("DELETE FROM refusals WHERE user_id = ?", (user_id,))
        await conn.execute("UPDATE characters SET created_by = ? WHERE created_by = ?", (FORGOTTEN, user_id))
        await conn.execute("UPDATE character_versions SET changed_by = NULL WHERE changed_by = ?", (user_id,))
        orphans = await _unreferenced(conn, candidates)
    removed = await images.delete(orphans)
    return Forgotten(jobs=jobs, generations=generations, images=removed)


async def purge_guild(db: Database, images: ImageStore, guild_id: int) -> Forgotten:
    """Everything the bot keeps about one guild: jobs, usage rows, grids, characters, settings, images."""
    async with db.transaction() as conn:
        candidates = await _image_keys(conn, "guild_id = ?", (guild_id,))
        candidates |= await _generation_keys(conn, "guild_id = ?", (guild_id,))
        for table in ("character_images", "character_version_images"):
            sql = f"SELECT image_key FROM {table} WHERE character_id IN (SELECT id FROM characters WHERE guild_id = ?)"
            candidates |= {str(r[0]) for r in await conn.fetchall(sql, (guild_id,))}
        jobs = await _delete_jobs(conn, "guild_id = ?", (guild_id,))
        generations = await _delete(conn, "DELETE FROM generations WHERE guild_id = ?", (guild_id,))
        await _delete_grids(conn, "guild_id = ?", (guild_id,))
        for table in ("character_version_images", "character_versions", "character_images"):
            await conn.execute(
                f"DELETE FROM {table} WHERE character_id IN (SELECT id FROM characters WHERE guild_id = ?)",
                (guild_id,),
            )
        characters = await _delete(conn, "DELETE FROM characters WHERE guild_id = ?", (guild_id,))
        await conn.execute("DELETE FROM guild_settings WHERE guild_id = ?", (guild_id,))
        for table in ("role_limits", "blocked_members", "banned_phrases", "refusals"):
            await conn.execute(f"DELETE FROM {table} WHERE guild_id = ?", (guild_id,))
        orphans = await _unreferenced(conn, candidates)
    removed = await images.delete(orphans)
    return Forgotten(jobs=jobs, generations=generations, images=removed, characters=characters)


# The WHERE clauses below are this module's own literals; values always go in as parameters.


async def _delete(conn: Connection, sql: str, params: tuple[Any, ...]) -> int:
    return await conn.execute(sql, params)


async def _delete_jobs(conn: Connection, where: str, params: tuple[Any, ...]) -> int:
    # Other members' edits that continued from these images lose that link, not their own rows.
    await conn.execute(
        f"UPDATE jobs SET parent_id = NULL WHERE parent_id IN (SELECT id FROM jobs WHERE {where})", params
    )
    return await _delete(conn, f"DELETE FROM jobs WHERE {where}", params)


async def _delete_grids(conn: Connection, where: str, params: tuple[Any, ...]) -> None:
    await conn.execute(f"UPDATE jobs SET grid_id = NULL WHERE grid_id IN (SELECT id FROM grids WHERE {where})", params)
    await conn.execute(f"DELETE FROM grids WHERE {where}", params)


async def _image_keys(conn: Connection, where: str, params: tuple[Any, ...]) -> set[str]:
    """Every image key the matching jobs and grids mention: results, references, conversation turns, tiles."""
    keys: set[str] = set()
    for image_key, *texts in await conn.fetchall(
        f"SELECT image_key, {', '.join(_KEY_FIELDS)} FROM jobs WHERE {where}", params
    ):
        if image_key:
            keys.add(str(image_key))
        for text in texts:
            if text:
                keys |= _keys_in(json.loads(text))
    for (text,) in await conn.fetchall(f"SELECT tile_keys_json FROM grids WHERE {where}", params):
        if text:
            keys |= {k for k in json.loads(text) if k}
    return keys


async def _generation_keys(conn: Connection, where: str, params: tuple[Any, ...]) -> set[str]:
    sql = f"SELECT image_key FROM generations WHERE {where} AND image_key IS NOT NULL"
    return {str(r[0]) for r in await conn.fetchall(sql, params)}


def _keys_in(value: Any) -> set[str]:
    """Image keys anywhere in a stored JSON value ({"image": key}, "reference_keys": [...])."""
    if isinstance(value, dict):
        found = set()
        for name, item in value.items():
            if name == "image" and isinstance(item, str):
                found.add(item)
            elif name == "reference_keys" and isinstance(item, list):
                found |= {k for k in item if isinstance(k, str)}
            else:
                found |= _keys_in(item)
        return found
    if isinstance(value, list):
        return set().union(*(_keys_in(v) for v in value)) if value else set()
    return set()


async def _unreferenced(conn: Connection, keys: set[str]) -> list[str]:
    """The keys nothing that remains refers to."""
    orphans = []
    for key in sorted(keys):
        pattern = f'%"{key}"%'
        checks = (
            ("SELECT 1 FROM jobs WHERE image_key = ? LIMIT 1", (key,)),
            ("SELECT 1 FROM generations WHERE image_key = ? LIMIT 1", (key,)),
            ("SELECT 1 FROM character_images WHERE image_key = ? LIMIT 1", (key,)),
            ("SELECT 1 FROM character_version_images WHERE image_key = ? LIMIT 1", (key,)),
            ("SELECT 1 FROM grids WHERE tile_keys_json LIKE ? LIMIT 1", (pattern,)),
            (
                "SELECT 1 FROM jobs WHERE request_json LIKE ? OR user_turn_json LIKE ? "
                "OR model_turn_json LIKE ? LIMIT 1",
                (pattern, pattern, pattern),
            ),
        )
        used = False
        for sql, params in checks:
            if await conn.fetchone(sql, params) is not None:
                used = True
                break
        if not used:
            orphans.append(key)
    return orphans
