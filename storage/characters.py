"""Characters: a guild's saved character sheets, their reference images, and every version of both (see
migrations 0004 and 0014).

Each change (create, edit, an added result, a restore) writes a new numbered version with the whole sheet and
reference set, in the transaction that makes it current; earlier versions are never changed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storage.db import Connection, Database, IntegrityError

_COLUMNS = "id, guild_id, name, description, created_by, created_at, updated_at, version"
_VERSION_COLUMNS = "character_id, version, description, change, restored_from, changed_by, changed_at"

#: `Character.created_by` once the creator has used /forget-me: nobody, so only Manage Server may change it.
FORGOTTEN = 0
#: What made a version ('kept': the version a character had when history began to be kept).
CHANGES = ("create", "edit", "add_image", "restore", "kept")


class DuplicateName(Exception):
    """The guild already has a character with this name."""


class CharacterGone(LookupError):
    """The character was deleted meanwhile."""


class UnknownVersion(LookupError):
    """The character has no such version."""

    def __init__(self, version: int, latest: int) -> None:
        super().__init__(f"no version {version} (the latest is {latest})")
        self.version, self.latest = version, latest


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


@dataclass(frozen=True, slots=True)
class CharacterVersion:
    character_id: int
    version: int
    description: str
    change: str  # one of CHANGES
    restored_from: int | None
    changed_by: int | None  # None: not recorded, or that member has used /forget-me
    changed_at: float
    #: Image-store keys of the references, oldest first.
    image_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Saved:
    """The outcome of a change: the character as it is now, and the references it dropped."""

    character: Character
    #: False when the change would have left the sheet and references as they were: no version was written.
    changed: bool
    dropped: tuple[str, ...] = ()


def name_key(name: str) -> str:
    return name.strip().casefold()


def combine(current: Sequence[str], added: Sequence[str], max_images: int) -> list[str]:
    """The reference set after adding images: an image added again moves to the newest place rather than
    counting twice, and the oldest go beyond `max_images`."""
    newest = list(dict.fromkeys(reversed(added)))[::-1]  # the last mention of a repeated key counts
    merged = [key for key in current if key not in newest] + newest
    return merged[-max_images:] if max_images > 0 else []


async def create_character(
    db: Database,
    *,
    guild_id: int,
    name: str,
    description: str,
    created_by: int,
    image_keys: Sequence[str] = (),
    max_images: int | None = None,
) -> Character:
    """A new character, its version 1 holding the sheet and references (the newest `max_images` of them)."""
    now = time.time()
    keys = combine([], image_keys, len(image_keys) if max_images is None else max_images)
    sql = (
        "INSERT INTO characters (guild_id, name, name_key, description, created_by, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    try:
        async with db.transaction() as conn:
            character_id = int(
                await conn.fetchval(
                    sql + " RETURNING id", (guild_id, name.strip(), name_key(name), description, created_by, now, now)
                )
            )
            await _write_version(conn, character_id, 1, description, keys, "create", created_by, now)
    except IntegrityError as exc:
        raise DuplicateName(name) from exc
    return Character(character_id, guild_id, name.strip(), description, created_by, now, now, 1)


async def get_character(db: Database, guild_id: int, name: str) -> Character | None:
    """By name, ignoring case, within one guild only."""
    sql = f"SELECT {_COLUMNS} FROM characters WHERE guild_id = ? AND name_key = ?"
    row = await db.fetchone(sql, (guild_id, name_key(name)))
    return Character(*row) if row else None


async def get_character_by_id(db: Database, character_id: int) -> Character | None:
    row = await db.fetchone(f"SELECT {_COLUMNS} FROM characters WHERE id = ?", (character_id,))
    return Character(*row) if row else None


async def list_characters(db: Database, guild_id: int, prefix: str = "", limit: int = 25) -> list[Character]:
    """The guild's characters whose name starts with `prefix` (any case), by name."""
    escaped = name_key(prefix).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    sql = (
        f"SELECT {_COLUMNS} FROM characters WHERE guild_id = ? AND name_key LIKE ? ESCAPE '\\' "
        "ORDER BY name_key LIMIT ?"
    )
    rows = await db.fetchall(sql, (guild_id, escaped + "%", limit))
    return [Character(*r) for r in rows]


async def change_character(
    db: Database,
    character_id: int,
    *,
    changed_by: int,
    change: str,
    max_images: int,
    description: str | None = None,
    add_keys: Sequence[str] = (),
) -> Saved:
    """A new version with a new sheet (None keeps it) and/or more references, the oldest dropped beyond
    `max_images`. Raises CharacterGone if the character was deleted meanwhile."""
    if change not in ("edit", "add_image"):
        raise ValueError(f"not a change a member makes by editing: {change!r}")
    async with db.transaction() as conn:
        character = await _current(conn, character_id)
        keys = await _keys_of(conn, character_id, character.version)
        new_keys = combine(keys, add_keys, max_images) if add_keys else keys
        text = character.description if description is None else description
        if text == character.description and new_keys == keys:
            return Saved(character, changed=False)
        saved = await _save(conn, character, text, new_keys, change, changed_by)
    return Saved(saved, changed=True, dropped=tuple(k for k in keys if k not in new_keys))


async def restore_version(db: Database, character_id: int, version: int, *, changed_by: int) -> Saved:
    """Make an old version current again, as a new version (the history keeps going forward).

    Raises UnknownVersion (nothing changes) or CharacterGone. A version that is already what the character
    is writes nothing."""
    async with db.transaction() as conn:
        character = await _current(conn, character_id)
        old = await _version(conn, character_id, version)
        if old is None:
            raise UnknownVersion(version, character.version)
        keys = await _keys_of(conn, character_id, character.version)
        if old.description == character.description and list(old.image_keys) == keys:
            return Saved(character, changed=False)
        saved = await _save(
            conn, character, old.description, list(old.image_keys), "restore", changed_by, restored_from=version
        )
    return Saved(saved, changed=True, dropped=tuple(k for k in keys if k not in old.image_keys))


async def get_version(db: Database, character_id: int, version: int) -> CharacterVersion | None:
    async with db.reading() as conn:
        return await _version(conn, character_id, version)


async def character_versions(db: Database, character_id: int, *, limit: int = 25) -> list[CharacterVersion]:
    """The newest `limit` versions, newest first, each with its references."""
    sql = f"SELECT {_VERSION_COLUMNS} FROM character_versions WHERE character_id = ? ORDER BY version DESC LIMIT ?"
    rows = await db.fetchall(sql, (character_id, limit))
    if not rows:
        return []
    oldest = int(rows[-1][1])
    sql = (
        "SELECT version, image_key FROM character_version_images WHERE character_id = ? AND version >= ? "
        "ORDER BY version, position"
    )
    keys: dict[int, list[str]] = {}
    for version, key in await db.fetchall(sql, (character_id, oldest)):
        keys.setdefault(int(version), []).append(str(key))
    return [_version_of(row, keys.get(int(row[1]), [])) for row in rows]


async def count_versions(db: Database, character_id: int) -> int:
    sql = "SELECT count(*) FROM character_versions WHERE character_id = ?"
    row = await db.fetchone(sql, (character_id,))
    return int(row[0]) if row else 0


async def delete_character(db: Database, character_id: int) -> None:
    """The character and all its versions (their images go when nothing else uses them: retention)."""
    async with db.transaction() as conn:
        for table in ("character_version_images", "character_versions", "character_images"):
            await conn.execute(f"DELETE FROM {table} WHERE character_id = ?", (character_id,))
        await conn.execute("DELETE FROM characters WHERE id = ?", (character_id,))


async def character_images(db: Database, character_id: int) -> list[str]:
    """Image-store keys of the character's current references, oldest first."""
    sql = (
        "SELECT v.image_key FROM character_version_images AS v JOIN characters AS c "
        "ON c.id = v.character_id AND c.version = v.version WHERE c.id = ? ORDER BY v.position"
    )
    rows = await db.fetchall(sql, (character_id,))
    return [str(r[0]) for r in rows]


async def count_images(db: Database, character_id: int) -> int:
    return len(await character_images(db, character_id))


# --- inside a transaction -------------------------------------------------------------------------------


async def _current(conn: Connection, character_id: int) -> Character:
    row = await conn.fetchone(f"SELECT {_COLUMNS} FROM characters WHERE id = ?", (character_id,))
    if row is None:
        raise CharacterGone(character_id)
    return Character(*row)


async def _keys_of(conn: Connection, character_id: int, version: int) -> list[str]:
    sql = "SELECT image_key FROM character_version_images WHERE character_id = ? AND version = ? ORDER BY position"
    return [str(r[0]) for r in await conn.fetchall(sql, (character_id, version))]


async def _version(conn: Connection, character_id: int, version: int) -> CharacterVersion | None:
    sql = f"SELECT {_VERSION_COLUMNS} FROM character_versions WHERE character_id = ? AND version = ?"
    row = await conn.fetchone(sql, (character_id, version))
    if row is None:
        return None
    return _version_of(row, await _keys_of(conn, character_id, version))


def _version_of(row: Any, keys: list[str]) -> CharacterVersion:
    character_id, version, description, change, restored_from, changed_by, changed_at = row
    return CharacterVersion(
        int(character_id),
        int(version),
        str(description),
        str(change),
        restored_from,
        changed_by,
        float(changed_at),
        tuple(keys),
    )


async def _save(
    conn: Connection,
    character: Character,
    description: str,
    keys: list[str],
    change: str,
    changed_by: int,
    *,
    restored_from: int | None = None,
) -> Character:
    now = time.time()
    version = character.version + 1
    await conn.execute(
        "UPDATE characters SET description = ?, version = ?, updated_at = ? WHERE id = ?",
        (description, version, now, character.id),
    )
    await _write_version(conn, character.id, version, description, keys, change, changed_by, now, restored_from)
    return Character(
        character.id,
        character.guild_id,
        character.name,
        description,
        character.created_by,
        character.created_at,
        now,
        version,
    )


async def _write_version(
    conn: Connection,
    character_id: int,
    version: int,
    description: str,
    keys: list[str],
    change: str,
    changed_by: int,
    now: float,
    restored_from: int | None = None,
) -> None:
    await conn.execute(
        f"INSERT INTO character_versions ({_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (character_id, version, description, change, restored_from, changed_by, now),
    )
    await conn.executemany(
        "INSERT INTO character_version_images (character_id, version, position, image_key) VALUES (?, ?, ?, ?)",
        [(character_id, version, position, key) for position, key in enumerate(keys)],
    )
    # The current set, kept for code that reads only that: an image that stays keeps when it was first added.
    sql = "SELECT image_key, version, added_at FROM character_images WHERE character_id = ?"
    before = {str(key): (int(v), float(at)) for key, v, at in await conn.fetchall(sql, (character_id,))}
    await conn.execute("DELETE FROM character_images WHERE character_id = ?", (character_id,))
    await conn.executemany(
        "INSERT INTO character_images (character_id, image_key, version, added_at) VALUES (?, ?, ?, ?)",
        [(character_id, key, *before.get(key, (version, now + position * 1e-6))) for position, key in enumerate(keys)],
    )
