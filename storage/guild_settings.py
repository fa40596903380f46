"""Per-guild settings: what a server's admins changed from the bot-wide defaults (migrations 0005, 0007-0012).

Every field is None where the guild uses the default, so the bot-wide settings (.env) keep applying until
an admin changes one here.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storage.db import Database, Queryable


@dataclass(frozen=True, slots=True)
class GuildSettings:
    guild_id: int
    grid_mode: str | None = None
    monthly_budget_usd: float | None = None
    #: A Gemini model id from the bot's table; requests then go to Gemini only (see bot.intake).
    default_model: str | None = None
    default_size: str | None = None
    default_aspect_ratio: str | None = None
    default_thinking: str | None = None
    guild_concurrency: int | None = None
    user_concurrency: int | None = None
    user_pending: int | None = None
    user_daily: int | None = None
    guild_daily: int | None = None
    #: Channels where the bot may be used; None = everywhere.
    allowed_channels: tuple[int, ...] | None = None
    #: 'creators' (a character's creator or Manage Server) or 'admins' (Manage Server only); None = creators.
    character_managers: str | None = None
    #: Whether status messages show the model's drafts while an image renders; None = yes.
    previews: bool | None = None
    #: The language of the bot's public messages here (a Discord locale); None = the server's Discord language.
    locale: str | None = None
    #: Roles whose members may use the bot; None = everyone.
    access_roles: tuple[int, ...] | None = None
    #: Whether the bot answers only in age-restricted channels (and their threads); None = no.
    nsfw_only: bool | None = None
    #: The moderators' log channel; None = no log.
    log_channel_id: int | None = None
    #: An admin's regular expression refused in prompts, besides the banned words; checked when set.
    banned_pattern: str | None = None
    #: Why the log channel could not be posted to last ('gone' or 'forbidden'); None = no problem.
    log_problem: str | None = None
    #: 'fast' or 'relax' when a member doesn't choose (None = fast); relax only refuses fast (migration 0017).
    default_speed: str | None = None
    relax_only: bool | None = None


_FIELDS = tuple(f.name for f in dataclasses.fields(GuildSettings) if f.name != "guild_id")
#: Fields holding a list of ids, stored as JSON text.
_ID_LISTS = {"allowed_channels": "allowed_channels_json", "access_roles": "access_roles_json"}
_COLUMNS = tuple(_ID_LISTS.get(name, name) for name in _FIELDS)


def _encode(name: str, value: Any) -> Any:
    if name in _ID_LISTS:
        return None if value is None else json.dumps([int(v) for v in value])
    return value


async def get_guild_settings(db: Queryable, guild_id: int) -> GuildSettings:
    sql = f"SELECT {', '.join(_COLUMNS)} FROM guild_settings WHERE guild_id = ?"
    row = await db.fetchone(sql, (guild_id,))
    return GuildSettings(guild_id) if row is None else _settings(guild_id, row)


def _settings(guild_id: int, row: Sequence[Any]) -> GuildSettings:
    values = dict(zip(_FIELDS, row, strict=True))
    for flag in ("previews", "nsfw_only", "relax_only"):
        if values[flag] is not None:
            values[flag] = bool(values[flag])
    for name in _ID_LISTS:
        if values[name] is not None:
            values[name] = tuple(json.loads(values[name]))
    return GuildSettings(guild_id, **values)


async def update_guild_settings(db: Database, guild_id: int, *, updated_by: int, **values: Any) -> None:
    """Set some of a guild's settings (None puts one back to the default)."""
    unknown = set(values) - set(_FIELDS)
    if unknown:
        raise ValueError(f"unknown guild settings: {sorted(unknown)}")
    if not values:
        return
    columns = [_COLUMNS[_FIELDS.index(name)] for name in values]
    sql = (
        f"INSERT INTO guild_settings (guild_id, {', '.join(columns)}, updated_at, updated_by) "
        f"VALUES (?, {', '.join('?' for _ in columns)}, ?, ?) "
        f"ON CONFLICT (guild_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns)}, "
        "updated_at = excluded.updated_at, updated_by = excluded.updated_by"
    )
    encoded = [_encode(name, value) for name, value in values.items()]
    async with db.transaction() as conn:
        await conn.execute(sql, (guild_id, *encoded, time.time(), updated_by))


async def set_log_problem(db: Database, guild_id: int, log_channel_id: int, problem: str | None) -> bool:
    """Note why the log channel can't be posted to (None: it can), if it is still the guild's log channel.
    Leaves who last changed the settings alone: this is the bot's observation, not an admin's change.
    True if the note changed."""
    sql = (
        "UPDATE guild_settings SET log_problem = ? "
        "WHERE guild_id = ? AND log_channel_id = ? AND log_problem IS DISTINCT FROM ?"
    )
    return await db.execute(sql, (problem, guild_id, log_channel_id, problem)) > 0


async def pinned_locales(db: Database) -> dict[int, str]:
    """Every guild whose admins pinned a language, with that language."""
    rows = await db.fetchall("SELECT guild_id, locale FROM guild_settings WHERE locale IS NOT NULL")
    return {int(guild_id): str(locale) for guild_id, locale in rows}


async def spent_since(db: Queryable, guild_id: int, since: float) -> float:
    """The guild's logged cost since `since` (served by the report index)."""
    sql = "SELECT coalesce(sum(cost_usd), 0) FROM generations WHERE guild_id = ? AND created_at >= ?"
    row = await db.fetchone(sql, (guild_id, since))
    return float(row[0]) if row else 0.0
