"""The job queue in the database, shared by every process: claiming jobs fairly within the caps, leases,
and what admission counts.

A claim is one transaction that holds the jobs lock (PostgreSQL's advisory lock; on SQLite the write lock
that every transaction takes), so the caps it checks hold whichever process runs the job:

- lanes (a guild, or a member's own jobs) take turns: the least recently served lane goes next;
- within a lane, first come, first served, skipping a member who already runs as many requests as they may;
- at most `global_concurrency` jobs hold a slot across all processes, `guild_concurrency` per guild.

A running job carries a lease (its process and an expiry) that its process renews. A lease that runs out
means the process died: the next claim queues the job again, and any process takes it over.

A queued job may be held for a moment by the process that admitted it, until that process has shown the
member its status message and recorded it: a process that takes the job over edits that message rather than
leaving it behind. A hold that is never released (its process died) ends at its expiry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from storage.db import LOCK_JOBS, Connection, Database, Queryable, one_of
from storage.jobs import RESERVED, Job, columns_and_values, jobs_where

#: Seconds a lease lasts by default (BANANA_JOB_LEASE); its process renews it every third of that.
LEASE_SECONDS = 30.0
#: Seconds at most that the admitting process holds a new job for itself (see the module's docstring).
HOLD_SECONDS = 10.0
#: Seconds after its last claim that a process still counts as claiming (it claims every second or so while
#: it runs, whether or not there is anything to take).
CLAIMER_SECONDS = 10.0
#: Queued jobs of one lane a claim looks at: enough to find one whose member may start, however many one
#: member queued ahead of the rest.
CANDIDATES_PER_LANE = 50


@dataclass(frozen=True, slots=True)
class Caps:
    """The bot-wide concurrency caps; a guild's /settings may lower or raise its own two."""

    global_concurrency: int
    guild_concurrency: int
    user_concurrency: int


@dataclass(slots=True)
class _Candidate:
    id: str
    lane: int
    user_id: int
    group: str
    guild_cap: int
    user_cap: int
    held: bool  # held by the claiming process itself: no other may take it yet


def _may_start(job: _Candidate, running_in_lane: dict[int, int], user_groups: dict[int, set[str]]) -> bool:
    if running_in_lane.get(job.lane, 0) >= job.guild_cap:
        return False
    groups = user_groups.get(job.user_id, set())
    return job.group in groups or len(groups) < job.user_cap


async def claim_jobs(
    db: Database,
    *,
    owner: str,
    want: int,
    caps: Caps,
    now: float,
    lease: float = LEASE_SECONDS,
) -> list[Job]:
    """Take up to `want` queued jobs for `owner` to run, fairly and within the caps, and (on PostgreSQL, where
    several processes claim) no more than `owner`'s share of the jobs in hand among the processes claiming,
    besides the jobs it holds itself. Jobs whose lease ran out are queued again first."""
    if want <= 0:
        return []
    async with db.transaction() as tx:
        await db.lock(tx, LOCK_JOBS)
        await _requeue(
            tx, "status = 'running' AND batch_id IS NULL AND (lease_expires IS NULL OR lease_expires < ?)", (now,)
        )
        # Every job running now: those holding a slot (the caps count them), and each process's jobs in hand
        # (from the claim to the result posted: provider call, image work and upload).
        running = await tx.fetchall(
            "SELECT lane, user_id, job_group, holds_slot, lease_owner FROM jobs "
            "WHERE status = 'running' AND (holds_slot = 1 OR batch_id IS NULL)"
        )
        slots = caps.global_concurrency - sum(1 for row in running if row[3])
        free = min(want, slots)
        # On SQLite this process is the only one. Each claim says the process claims, free slots or not.
        claimers = await _claimers(tx, owner, now) if db.dialect == "postgresql" else {owner}
        if free <= 0:
            return []
        others_may_take = free  # jobs not held by `owner` itself that it may take
        if len(claimers) > 1:
            # Each process claiming takes its share of all the jobs in hand once the free slots are taken, so a
            # process with nothing in hand gets work while another is busy, and one slower through its jobs
            # (image work included) gets fewer. Alone, a process takes all the caps allow.
            in_hand = Counter(str(row[4]) for row in running if row[4] in claimers)
            share = -(-(sum(in_hand.values()) + slots) // len(claimers))
            others_may_take = share - in_hand[owner]
        running_in_lane: dict[int, int] = {}
        user_groups: dict[int, set[str]] = {}
        for lane, user_id, group, holds_slot, _ in running:
            if holds_slot:
                running_in_lane[int(lane)] = running_in_lane.get(int(lane), 0) + 1
                user_groups.setdefault(int(user_id), set()).add(str(group))

        lanes, served = await _waiting_lanes(tx, caps, owner, now)
        counter = max(served.values(), default=0)
        picked: list[_Candidate] = []
        while len(picked) < free:
            choice = None
            over_share = sum(1 for c in picked if not c.held) >= others_may_take
            for lane in sorted(lanes, key=lambda lane: served.get(lane, -1)):
                choice = next(
                    (
                        c
                        for c in lanes[lane]
                        if (c.held or not over_share) and _may_start(c, running_in_lane, user_groups)
                    ),
                    None,
                )
                if choice is not None:
                    break
            if choice is None:
                break
            lanes[choice.lane].remove(choice)
            if not lanes[choice.lane]:
                del lanes[choice.lane]
            counter += 1
            served[choice.lane] = counter
            running_in_lane[choice.lane] = running_in_lane.get(choice.lane, 0) + 1
            user_groups.setdefault(choice.user_id, set()).add(choice.group)
            picked.append(choice)
        if not picked:
            return []

        ids = [c.id for c in picked]
        if db.dialect == "postgresql":
            # A row another transaction is cancelling right now is left to it.
            marks = ", ".join("?" for _ in ids)
            free_ids = {
                str(r[0])
                for r in await tx.fetchall(f"SELECT id FROM jobs WHERE id IN ({marks}) FOR UPDATE SKIP LOCKED", ids)
            }
            picked = [c for c in picked if c.id in free_ids]
        claimed = []
        for candidate in picked:
            changed = await tx.execute(
                "UPDATE jobs SET status = 'running', holds_slot = 1, lease_owner = ?, lease_expires = ?, "
                "started_at = ?, "
                "queue_ms = CASE WHEN attempts_started = 0 THEN (? - created_at) * 1000 ELSE queue_ms END, "
                "attempts_started = attempts_started + 1 WHERE id = ? AND status = 'queued'",
                (owner, now + lease, now, now, candidate.id),
            )
            if changed:
                claimed.append(candidate.id)
                await tx.execute(
                    "INSERT INTO lanes (lane, served) VALUES (?, ?) "
                    "ON CONFLICT (lane) DO UPDATE SET served = excluded.served",
                    (candidate.lane, served[candidate.lane]),
                )
        if not claimed:
            return []
        jobs = await jobs_where(tx, f"id IN ({', '.join('?' for _ in claimed)})", tuple(claimed))
    order = {job_id: n for n, job_id in enumerate(claimed)}
    return sorted(jobs, key=lambda job: order[job.id])


async def _claimers(tx: Connection, owner: str, now: float) -> set[str]:
    """The processes claiming now, `owner` among them: it says so in the claim's transaction."""
    await announce_claimer(tx, owner, now)
    rows = await tx.fetchall("SELECT owner FROM claimers WHERE seen_at >= ?", (now - CLAIMER_SECONDS,))
    return {owner} | {str(row[0]) for row in rows}


async def _waiting_lanes(
    tx: Connection, caps: Caps, owner: str, now: float
) -> tuple[dict[int, list[_Candidate]], dict[int, int]]:
    """The first queued jobs of every lane that `owner` may take (not held by another process), in arrival
    order, with each lane's caps; and when each lane was last served."""
    rows = await tx.fetchall(
        """SELECT w.id, w.lane, w.user_id, w.job_group, l.served, s.guild_concurrency, s.user_concurrency, w.held
           FROM (SELECT id, lane, user_id, job_group, created_at,
                        CASE WHEN lease_owner = ? AND lease_expires >= ? THEN 1 ELSE 0 END AS held,
                        row_number() OVER (PARTITION BY lane ORDER BY created_at, id) AS place
                 FROM jobs WHERE status = 'queued' AND speed = 'fast'
                       AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires < ?)) AS w
           LEFT JOIN lanes AS l ON l.lane = w.lane
           LEFT JOIN guild_settings AS s ON s.guild_id = w.lane
           WHERE w.place <= ?
           ORDER BY w.lane, w.created_at, w.id""",
        (owner, now, owner, now, CANDIDATES_PER_LANE),
    )
    lanes: dict[int, list[_Candidate]] = {}
    served: dict[int, int] = {}
    for job_id, lane, user_id, group, lane_served, guild_cap, user_cap, held in rows:
        lanes.setdefault(int(lane), []).append(
            _Candidate(
                str(job_id),
                int(lane),
                int(user_id),
                str(group),
                int(guild_cap) if guild_cap is not None else caps.guild_concurrency,
                int(user_cap) if user_cap is not None else caps.user_concurrency,
                bool(held),
            )
        )
        if lane_served is not None:
            served[int(lane)] = int(lane_served)
    return lanes, served


async def _requeue(q: Queryable, where: str, params: Sequence[Any]) -> int:
    return await q.execute(
        f"UPDATE jobs SET status = 'queued', holds_slot = 0, lease_owner = NULL, lease_expires = NULL WHERE {where}",
        params,
    )


async def requeue_owned(db: Database, owner: str) -> int:
    """Give back the running jobs of `owner` (a process stopping, or the same process starting again), so that
    any process takes them over at once instead of when their leases run out."""
    return await _requeue(db, "status = 'running' AND lease_owner = ?", (owner,))


async def requeue_all_running(db: Database) -> int:
    """SQLite: this process is the only one, so whatever a previous run left running (or held) is queued again."""
    return await _requeue(db, "status IN ('running', 'queued') AND lease_owner IS NOT NULL", ())


async def release_holds(db: Database, job_ids: Sequence[str], owner: str) -> None:
    """The admitting process has shown and recorded the jobs' status: any process may take them now."""
    marks = ", ".join("?" for _ in job_ids)
    await db.execute(
        f"UPDATE jobs SET lease_owner = NULL, lease_expires = NULL "
        f"WHERE id IN ({marks}) AND status = 'queued' AND lease_owner = ?",
        [*job_ids, owner],
    )


async def announce_claimer(db: Queryable, owner: str, now: float) -> None:
    """`owner` claims jobs (each claim says so): it counts in how claims share jobs out for CLAIMER_SECONDS."""
    await db.execute(
        "INSERT INTO claimers (owner, seen_at) VALUES (?, ?) "
        "ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at",
        (owner, now),
    )


async def retire_claimer(db: Database, owner: str, now: float) -> None:
    """`owner` claims no more (it is stopping); rows of processes gone a day or more are dropped too."""
    await db.execute("DELETE FROM claimers WHERE owner = ? OR seen_at < ?", (owner, now - 86400))


async def renew_leases(db: Database, owner: str, now: float, lease: float = LEASE_SECONDS) -> int:
    return await db.execute(
        "UPDATE jobs SET lease_expires = ? WHERE status = 'running' AND lease_owner = ?", (now + lease, owner)
    )


async def give_back_slot(db: Database, job_id: str) -> None:
    """The job's provider call is over: the next job may start while this one stores and posts."""
    await db.execute("UPDATE jobs SET holds_slot = 0 WHERE id = ? AND status = 'running'", (job_id,))


async def finish(db: Database, job_id: str, owner: str, changes: dict[str, Any]) -> bool:
    """Record how a running job ended (its status and results), if `owner` still holds it; False if its lease
    ran out and another process took it over (which then posts it: nothing must be posted twice)."""
    columns = {**changes, "holds_slot": 0, "reserved_usd": 0.0, "lease_owner": None, "lease_expires": None}
    names, values = columns_and_values(columns)
    assignments = ", ".join(f"{name} = ?" for name in names)
    sql = f"UPDATE jobs SET {assignments} WHERE id = ? AND status = 'running' AND lease_owner = ?"
    return await db.execute(sql, [*values, job_id, owner]) > 0


async def cancel_queued(db: Database, job_id: str, now: float) -> bool:
    """Cancel a job that is still waiting (refunding it); False if it started, ended or is unknown."""
    sql = "UPDATE jobs SET status = 'cancelled', finished_at = ?, reserved_usd = 0 WHERE id = ? AND status = 'queued'"
    return await db.execute(sql, (now, job_id)) > 0


async def fail_waiting(db: Database, job_id: str, changes: dict[str, Any]) -> bool:
    """End a job that never started as failed (refunding it); False if it started, ended or is unknown."""
    names, values = columns_and_values({**changes, "reserved_usd": 0.0})
    assignments = ", ".join(f"{name} = ?" for name in names)
    return await db.execute(f"UPDATE jobs SET {assignments} WHERE id = ? AND status = 'queued'", [*values, job_id]) > 0


async def waiting_order(db: Database) -> list[str]:
    """Ids of the queued jobs in the order they would start if slots freed one at a time (lanes in turn)."""
    rows = await db.fetchall(
        "SELECT j.id, j.lane, l.served FROM jobs AS j LEFT JOIN lanes AS l ON l.lane = j.lane "
        "WHERE j.status = 'queued' AND j.speed = 'fast' ORDER BY j.created_at, j.id"
    )
    lanes: dict[int, list[str]] = {}
    served: dict[int, int] = {}
    for job_id, lane, lane_served in rows:
        lanes.setdefault(int(lane), []).append(str(job_id))
        served[int(lane)] = int(lane_served) if lane_served is not None else -1
    in_turn = [lanes[lane] for lane in sorted(lanes, key=lambda lane: served[lane])]
    order: list[str] = []
    depth = 0
    while any(depth < len(ids) for ids in in_turn):
        order.extend(ids[depth] for ids in in_turn if depth < len(ids))
        depth += 1
    return order


async def count_by_state(db: Database) -> dict[str, int]:
    """Queued and running jobs (all processes), and how many of the running hold a provider slot."""
    rows = await db.fetchall(
        "SELECT status, holds_slot, count(*) FROM jobs WHERE status IN ('queued', 'running') AND speed = 'fast' "
        "GROUP BY status, holds_slot"
    )
    counts = {"queued": 0, "running": 0, "holding": 0}
    for status, holds, count in rows:
        counts[str(status)] += int(count)
        if holds:
            counts["holding"] += int(count)
    return counts


# --- what admission counts (inside its transaction) -------------------------------------------------------
@dataclass(slots=True)
class AdmissionCounts:
    """What the members and guilds of a batch of requests hold, and (`add`) what each admitted one adds, so the
    requests of one batch are checked one after another as if each had its own transaction."""

    #: Requests (a grid is one) of each (member, speed) waiting or running, anywhere.
    pending: dict[tuple[int, str], int] = field(default_factory=dict)
    #: Images reserved today (UTC), anywhere, by each member and in each guild.
    member_today: dict[int, int] = field(default_factory=dict)
    guild_today: dict[int, int] = field(default_factory=dict)
    #: Each guild's logged cost this month, and what its admitted jobs may still cost beyond that.
    guild_spent: dict[int, float] = field(default_factory=dict)
    guild_reserved: dict[int, float] = field(default_factory=dict)
    #: Images reserved today through members' own installs, over the whole bot.
    user_installs_today: int = 0
    #: Each guild's own limits and budget (its /settings), where set: field name -> value.
    guild_settings: dict[int, dict[str, float]] = field(default_factory=dict)

    def add(self, jobs: Sequence[Job], day_start: float) -> None:
        """Count jobs just admitted (with their reservation set) as the queries below would count them."""
        for group in {(job.user_id, job.speed, job.job_group) for job in jobs}:
            key = group[0], group[1]
            self.pending[key] = self.pending.get(key, 0) + 1
        for job in jobs:
            if job.kind == "tile":
                continue
            if job.guild_id is not None and not job.user_install and job.reserved_usd > 0:
                reserved = self.guild_reserved.get(job.guild_id, 0.0)
                self.guild_reserved[job.guild_id] = reserved + job.reserved_usd
            if job.created_at < day_start:  # made before midnight (UTC): not today's
                continue
            self.member_today[job.user_id] = self.member_today.get(job.user_id, 0) + 1
            if job.guild_id is not None:
                self.guild_today[job.guild_id] = self.guild_today.get(job.guild_id, 0) + 1
            if job.user_install:
                self.user_installs_today += 1


_HELD = ", ".join(f"'{s}'" for s in RESERVED)
#: The guild settings (storage/guild_settings.py) that admission applies.
ADMISSION_SETTINGS = (
    "monthly_budget_usd",
    "guild_concurrency",
    "user_concurrency",
    "user_pending",
    "user_daily",
    "guild_daily",
)


async def admission_counts(
    q: Queryable,
    *,
    members: Collection[int],
    guilds: Collection[int],
    day_start: float,
    month_start: float,
    user_installs: bool = False,
) -> AdmissionCounts:
    """Everything admission checks for these members and guilds, their guilds' own limits and budgets included,
    in one round trip. A member's fast and relax requests have a pending cap each: waiting hours for a batch
    doesn't stop them making an image now."""
    parts: list[str] = []
    params: list[Any] = []

    def since(moment: float) -> str:
        # On PostgreSQL the day's and the month's start are written into the statement (a new one each day):
        # the planner then knows how few rows they select, so one generic plan of index lookups serves every
        # batch (admission asks for generic plans: 0.13 ms for 100 members, where planning each batch anew
        # took 0.45). As parameters, a generic plan would guess a third of the table and scan it.
        if q.dialect == "postgresql":
            return repr(float(moment))
        params.append(moment)
        return "?"

    number = "CAST({} AS DOUBLE PRECISION)"
    if members:
        member_is, member_ids = one_of(q, "user_id", members)
        params.extend(member_ids)
        parts.append(
            f"SELECT 0, user_id, speed, {number.format('count(DISTINCT job_group)')} FROM jobs "
            f"WHERE {member_is} AND status IN ('queued', 'running') GROUP BY user_id, speed"
        )
        params.extend(member_ids)
        parts.append(
            f"SELECT 1, user_id, NULL, {number.format('count(*)')} FROM jobs WHERE {member_is} "
            f"AND created_at >= {since(day_start)} AND status IN ({_HELD}) AND kind != 'tile' GROUP BY user_id"
        )
    if guilds:
        guild_is, guild_ids = one_of(q, "guild_id", guilds)
        params.extend(guild_ids)
        parts.append(
            f"SELECT 2, guild_id, NULL, {number.format('count(*)')} FROM jobs WHERE {guild_is} "
            f"AND created_at >= {since(day_start)} AND status IN ({_HELD}) AND kind != 'tile' GROUP BY guild_id"
        )
        params.extend(guild_ids)
        parts.append(
            f"SELECT 3, guild_id, NULL, {number.format('sum(cost_usd)')} FROM generations "
            f"WHERE {guild_is} AND created_at >= {since(month_start)} GROUP BY guild_id"
        )
        # Only jobs not yet finished reserve anything (migration 0019 indexes just those).
        params.extend(guild_ids)
        parts.append(
            f"SELECT 4, guild_id, NULL, {number.format('sum(reserved_usd)')} FROM jobs "
            f"WHERE {guild_is} AND reserved_usd > 0 AND user_install = 0 GROUP BY guild_id"
        )
        # The guilds' own settings, one row per guild and setting (a NULL value: the guild has none): the guild
        # ids bound once more, not once per setting (SQLite before 3.32 takes 999 parameters in all).
        params.extend(guild_ids)
        choice = " ".join(f"WHEN '{name}' THEN {name}" for name in ADMISSION_SETTINGS)
        parts.append(
            f"SELECT 6, guild_id, setting.name, {number.format(f'CASE setting.name {choice} END')} "
            f"FROM guild_settings, setting WHERE {guild_is}"
        )
    if user_installs:
        parts.append(
            f"SELECT 5, 0, NULL, {number.format('count(*)')} FROM jobs "
            f"WHERE user_install = 1 AND created_at >= {since(day_start)} AND status IN ({_HELD})"
        )
    counts = AdmissionCounts()
    if not parts:
        return counts
    sql = " UNION ALL ".join(parts)
    if guilds:
        sql = f"WITH setting(name) AS (VALUES {', '.join(f'({name!r})' for name in ADMISSION_SETTINGS)}) {sql}"
    for kind, key, speed, value in await q.fetchall(sql, params):
        kind, key = int(kind), int(key)
        if kind == 0:
            counts.pending[(key, str(speed))] = int(value)
        elif kind == 1:
            counts.member_today[key] = int(value)
        elif kind == 2:
            counts.guild_today[key] = int(value)
        elif kind == 3:
            counts.guild_spent[key] = float(value or 0)
        elif kind == 4:
            counts.guild_reserved[key] = float(value or 0)
        elif kind == 6:
            if value is not None:
                counts.guild_settings.setdefault(key, {})[str(speed)] = float(value)
        else:
            counts.user_installs_today = int(value)
    return counts


async def pending_requests(q: Queryable, user_id: int) -> int:
    """Requests (a grid is one) the member has waiting or running, anywhere."""
    sql = "SELECT count(DISTINCT job_group) FROM jobs WHERE user_id = ? AND status IN ('queued', 'running')"
    return int(await q.fetchval(sql, (user_id,)) or 0)


async def pending_in_lane(q: Queryable, lane: int) -> int:
    sql = "SELECT count(*) FROM jobs WHERE lane = ? AND status IN ('queued', 'running')"
    return int(await q.fetchval(sql, (lane,)) or 0)


async def paid_generation(db: Database, job_id: str) -> tuple[int, str] | None:
    """The logged, successful generation of this job with its stored image (id, image key), if the provider
    answered it before its process died: what a takeover finishes from instead of paying again."""
    row = await db.fetchone(
        "SELECT id, image_key FROM generations WHERE job_id = ? AND status = 'ok' AND image_key IS NOT NULL "
        "ORDER BY id DESC LIMIT 1",
        (job_id,),
    )
    return (int(row[0]), str(row[1])) if row is not None else None
