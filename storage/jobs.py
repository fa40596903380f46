"""Jobs: what members asked the bot for, where it stands, and the conversation it continues.

A job holds its quota reservation while it is queued, running or done; failing or being cancelled
refunds it, so the daily counts are plain counts over this table.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from storage.db import Connection, Database, Queryable

#: The size of a request that names none (and of requests stored before sizes were always recorded).
DEFAULT_SIZE = "1K"
#: Bumped when JobRequest's stored form changes; `request_from_json` reads every earlier version.
REQUEST_VERSION = 2

#: Statuses that hold a quota reservation. Jobs of kind 'tile' (a panel cut from a paid grid image) never do.
RESERVED = ("queued", "running", "done")
#: Statuses a restart must pick up again.
UNFINISHED = ("queued", "running")


def new_job_id() -> str:
    """12 url-safe characters: unguessable enough that a crafted custom id can't hit someone else's job."""
    return secrets.token_urlsafe(9)


@dataclass(frozen=True, slots=True)
class InputNote:
    """A member's image that was downscaled on the way in: which option, and its size before and after."""

    option: str
    before: tuple[int, int]
    after: tuple[int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRequest:
    """What a member asked for, resolved against the model and the server's defaults (ui/intake.py).

    Frozen: a reroll, a reply or an edit makes a new one with `dataclasses.replace`."""

    prompt: str
    size: str = DEFAULT_SIZE
    aspect_ratio: str | None = None
    thinking: str | None = None
    #: A model (and the provider that serves it) the server pinned; None is the bot's default.
    model: str | None = None
    provider: str | None = None
    #: Image-store keys of the member's own reference images, in order.
    reference_keys: tuple[str, ...] = ()
    input_notes: tuple[InputNote, ...] = ()
    #: A character applied when the job runs.
    character_id: int | None = None
    character_name: str | None = None
    #: The character's version the job used, recorded when it runs (None until then: the current one), so that
    #: a reroll, which copies the request, uses that same version.
    character_version: int | None = None
    #: Whether the model's drafts are streamed to the status message.
    previews: bool = True


def request_to_json(request: JobRequest) -> dict[str, Any]:
    """The stored form, with its version. `reference_keys` keeps its name: storage/forget.py finds images by it."""
    stored: dict[str, Any] = {"v": REQUEST_VERSION, "prompt": request.prompt, "size": request.size}
    for name in (
        "aspect_ratio",
        "thinking",
        "model",
        "provider",
        "character_id",
        "character_name",
        "character_version",
    ):
        if (value := getattr(request, name)) is not None:
            stored[name] = value
    if request.reference_keys:
        stored["reference_keys"] = list(request.reference_keys)
    if request.input_notes:
        stored["input_notes"] = [
            {"option": n.option, "from": list(n.before), "to": list(n.after)} for n in request.input_notes
        ]
    if not request.previews:
        stored["previews"] = False
    return stored


def request_from_json(stored: dict[str, Any]) -> JobRequest:
    """A stored request of any version. Version 0 (no "v") is the plain dict of earlier releases: the same
    keys, any of them missing, "size" possibly absent or null, and leftovers such as "character". Before
    version 2 no character version was recorded: such a job uses the character's current one."""
    version = stored.get("v", 0)
    if not isinstance(version, int) or version > REQUEST_VERSION:
        raise ValueError(f"job request version {version!r} is newer than this release reads ({REQUEST_VERSION})")
    notes = tuple(
        InputNote(
            option=str(n["option"]),
            before=(int(n["from"][0]), int(n["from"][1])),
            after=(int(n["to"][0]), int(n["to"][1])),
        )
        for n in stored.get("input_notes") or ()
    )
    character_id = stored.get("character_id")
    character_version = stored.get("character_version")
    return JobRequest(
        prompt=str(stored["prompt"]),
        size=stored.get("size") or DEFAULT_SIZE,
        aspect_ratio=stored.get("aspect_ratio"),
        thinking=stored.get("thinking"),
        model=stored.get("model"),
        provider=stored.get("provider"),
        reference_keys=tuple(stored.get("reference_keys") or ()),
        input_notes=notes,
        character_id=int(character_id) if character_id is not None else None,
        character_name=stored.get("character_name"),
        character_version=int(character_version) if character_version is not None else None,
        previews=stored.get("previews", True) is not False,
    )


@dataclass(slots=True, kw_only=True)
class Job:
    id: str = field(default_factory=new_job_id)
    created_at: float = field(default_factory=time.time)
    guild_id: int | None
    channel_id: int
    user_id: int
    kind: str
    locale: str = "en-US"
    status: str = "queued"
    request: JobRequest
    parent_id: str | None = None
    version: int = 1
    thread_id: int | None = None
    status_message_id: int | None = None
    result_message_id: int | None = None
    user_turn: dict[str, Any] | None = None
    model_turn: dict[str, Any] | None = None
    image_key: str | None = None
    generation_id: int | None = None
    error_class: str | None = None
    error_detail: str | None = None
    defer_ms: float | None = None
    queue_ms: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempts_started: int = 0
    #: The grid this job is a tile of, and which tile (1-4); see migration 0003.
    grid_id: str | None = None
    tile: int | None = None
    #: Made through the member's own install of the app (migration 0013): no server's settings apply.
    user_install: bool = False
    #: What the monthly budget counts for this job until its real cost is logged (migration 0015).
    reserved_usd: float = 0.0
    #: 'fast' (now) or 'relax' (gathered into a provider batch at half price), and that batch (migration 0017).
    speed: str = "fast"
    batch_id: str | None = None
    #: The member cancelled a relax job after its batch was sent: it is paid for but not posted.
    delivery_cancelled: bool = False

    @property
    def lane(self) -> int:
        """Where the job waits its turn: its server's lane, or the member's own (DMs, user installs)."""
        return self.guild_id if self.guild_id is not None and not self.user_install else -self.user_id

    @property
    def job_group(self) -> str:
        """The request it belongs to: a grid's tiles are one request."""
        return self.grid_id or self.id


# Python field -> column. The JSON-valued fields are stored as text in *_json columns.
_JSON_FIELDS = {"request": "request_json", "user_turn": "user_turn_json", "model_turn": "model_turn_json"}
_FIELDS = tuple(f.name for f in dataclasses.fields(Job))
_COLUMNS = tuple(_JSON_FIELDS.get(name, name) for name in _FIELDS)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM jobs"


def _dump(name: str, value: Any) -> Any:
    if value is None or name not in _JSON_FIELDS:
        return value
    if name == "request":
        value = request_to_json(value)
    return orjson.dumps(value).decode()


_values_of = operator.attrgetter(*_FIELDS)
_JSON_AT = tuple((n, name) for n, name in enumerate(_FIELDS) if name in _JSON_FIELDS)


def _to_row(job: Job) -> list[Any]:
    # All the fields in one call, then the few JSON ones dumped: a burst's admission stores 100 jobs at a time.
    row = list(_values_of(job))
    for n, name in _JSON_AT:
        row[n] = _dump(name, row[n])
    return row


def _from_row(row: Any) -> Job:
    values = dict(zip(_FIELDS, row, strict=True))
    for name in _JSON_FIELDS:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    values["request"] = request_from_json(values["request"])
    values["user_install"] = bool(values["user_install"])
    values["delivery_cancelled"] = bool(values["delivery_cancelled"])
    return Job(**values)


_INSERT_COLUMNS = (*_COLUMNS, "lane", "job_group", "lease_owner", "lease_expires")
_INSERT = f"INSERT INTO jobs ({', '.join(_INSERT_COLUMNS)}) VALUES ({', '.join('?' for _ in _INSERT_COLUMNS)})"


async def insert_job(db: Queryable, job: Job, *, held_by: str | None = None, held_until: float | None = None) -> None:
    """Store a job (in its own transaction on a Database, or in the caller's). A job `held_by` a process is
    claimed by no other until `held_until` (storage/queue.py)."""
    await db.execute(_INSERT, _insert_row(job, held_by, held_until))


async def insert_jobs(
    tx: Connection, jobs: Sequence[Job], *, held_by: str | None = None, held_until: float | None = None
) -> None:
    """`insert_job` for many jobs in one go, inside the caller's transaction."""
    await tx.insert_rows("jobs", _INSERT_COLUMNS, [_insert_row(job, held_by, held_until) for job in jobs])


def _insert_row(job: Job, held_by: str | None, held_until: float | None) -> list[Any]:
    return [*_to_row(job), job.lane, job.job_group, held_by, held_until]


#: Columns of the job queue (storage/queue.py) that are not fields of `Job`.
_QUEUE_COLUMNS = ("holds_slot", "lease_owner", "lease_expires")


def columns_and_values(changes: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """Job fields (and the queue's own columns) as column names and stored values."""
    unknown = set(changes) - set(_FIELDS) - set(_QUEUE_COLUMNS)
    if unknown:
        raise ValueError(f"unknown job fields: {sorted(unknown)}")
    return [_JSON_FIELDS.get(name, name) for name in changes], [_dump(name, v) for name, v in changes.items()]


async def update_job(db: Database, job_id: str, **changes: Any) -> None:
    """Set some fields of one job (field names as on `Job`)."""
    columns, values = columns_and_values(changes)
    sql = f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?"
    await db.execute(sql, [*values, job_id])


async def get_job(db: Database, job_id: str) -> Job | None:
    row = await db.fetchone(f"{_SELECT} WHERE id = ?", (job_id,))
    return _from_row(row) if row else None


async def job_for_message(db: Database, message_id: int) -> Job | None:
    """The job whose result (or status) is shown by this message."""
    sql = f"{_SELECT} WHERE result_message_id = ? OR status_message_id = ? ORDER BY created_at DESC LIMIT 1"
    row = await db.fetchone(sql, (message_id, message_id))
    return _from_row(row) if row else None


async def latest_done_job_in_thread(db: Database, thread_id: int) -> Job | None:
    sql = f"{_SELECT} WHERE thread_id = ? AND status = 'done' ORDER BY created_at DESC LIMIT 1"
    row = await db.fetchone(sql, (thread_id,))
    return _from_row(row) if row else None


async def max_version_in_thread(db: Database, thread_id: int) -> int:
    sql = "SELECT max(version) FROM jobs WHERE thread_id = ? AND status = 'done'"
    row = await db.fetchone(sql, (thread_id,))
    return int(row[0]) if row and row[0] is not None else 0


async def jobs_where(db: Queryable, condition: str, params: tuple[Any, ...]) -> list[Job]:
    """Jobs matching a WHERE clause written in this package (never from user input; values go in `params`)."""
    rows = await db.fetchall(f"{_SELECT} WHERE {condition}", params)
    return [_from_row(r) for r in rows]


async def unfinished_jobs(db: Database) -> list[Job]:
    """Queued and running jobs, oldest first: what a restart has to pick up."""
    # The statuses written in: PostgreSQL's partial index of the active jobs answers only for known values.
    sql = f"{_SELECT} WHERE status IN ({', '.join(repr(s) for s in UNFINISHED)}) ORDER BY created_at, id"
    rows = await db.fetchall(sql)
    return [_from_row(r) for r in rows]


async def count_reserved_since(
    db: Queryable, since: float, *, user_id: int | None = None, guild_id: int | None = None
) -> int:
    """Jobs holding a quota reservation created at or after `since`, for one user or one guild."""
    if (user_id is None) == (guild_id is None):
        raise ValueError("give exactly one of user_id and guild_id")
    column, value = ("user_id", user_id) if user_id is not None else ("guild_id", guild_id)
    sql = (
        f"SELECT count(*) FROM jobs WHERE {column} = ? AND created_at >= ? "
        f"AND status IN ({', '.join('?' for _ in RESERVED)}) AND kind != 'tile'"
    )
    row = await db.fetchone(sql, (value, since, *RESERVED))
    return int(row[0]) if row else 0


async def queued_job_ids(db: Database, guild_id: int, user_id: int) -> list[str]:
    """A member's jobs still waiting in a guild, oldest first."""
    sql = "SELECT id FROM jobs WHERE guild_id = ? AND user_id = ? AND status = 'queued' ORDER BY created_at, id"
    return [str(row[0]) for row in await db.fetchall(sql, (guild_id, user_id))]


async def count_user_installs_since(db: Queryable, since: float) -> int:
    """Jobs made through members' own installs, over the whole bot, holding a reservation since `since`."""
    sql = (
        f"SELECT count(*) FROM jobs WHERE user_install = 1 AND created_at >= ? "
        f"AND status IN ({', '.join('?' for _ in RESERVED)})"
    )
    row = await db.fetchone(sql, (since, *RESERVED))
    return int(row[0]) if row else 0


async def get_state(db: Database, key: str) -> str | None:
    row = await db.fetchone("SELECT value FROM bot_state WHERE key = ?", (key,))
    return str(row[0]) if row else None


async def set_state(db: Database, key: str, value: str) -> None:
    sql = "INSERT INTO bot_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    await db.execute(sql, (key, value))


@dataclass(frozen=True, slots=True)
class ShownResult:
    """A result a member can see again (/show): one image (a job) or a grid's 2x2 preview."""

    kind: str  # "job" or "grid"
    id: str
    prompt: str
    created_at: float


def _shown(row: Any) -> ShownResult:
    kind, result_id, request, created_at = row
    return ShownResult(str(kind), str(result_id), request_from_json(json.loads(request)).prompt, float(created_at))


async def recent_results(db: Database, guild_id: int | None, user_id: int, *, limit: int = 200) -> list[ShownResult]:
    """A member's newest results in one server (in DMs when `guild_id` is None), newest first: images that
    were posted, and grids whose preview was."""
    sql = """
        SELECT 'job', id, request_json, created_at FROM jobs
         WHERE user_id = ? AND guild_id IS NOT DISTINCT FROM ? AND status = 'done' AND result_message_id IS NOT NULL
        UNION ALL
        SELECT 'grid', id, request_json, created_at FROM grids
         WHERE user_id = ? AND guild_id IS NOT DISTINCT FROM ? AND message_id IS NOT NULL
        ORDER BY 4 DESC LIMIT ?
    """
    rows = await db.fetchall(sql, (user_id, guild_id, user_id, guild_id, limit))
    return [_shown(r) for r in rows]


async def result_for_message(db: Database, message_id: int) -> ShownResult | None:
    """The image or grid a result message shows (what a link to that message points at)."""
    sql = """
        SELECT 'job', id, request_json, created_at FROM jobs WHERE result_message_id = ?
        UNION ALL
        SELECT 'grid', id, request_json, created_at FROM grids WHERE message_id = ?
        ORDER BY 4 DESC LIMIT 1
    """
    row = await db.fetchone(sql, (message_id, message_id))
    return _shown(row) if row else None
