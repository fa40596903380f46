"""The job queue in the database (storage/queue.py), on SQLite and PostgreSQL: guilds take turns, caps hold
whichever process claims, leases that run out are taken over, and nothing is finished or cancelled twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.jobs.admission import BATCH_LIMIT, Admission, BudgetExceeded, LimitExceeded
from bot.jobs.limits import QueueLimits
from bot.jobs.queue import JobQueue
from storage.db import Database, IntegrityError
from storage.guild_settings import update_guild_settings
from storage.jobs import Job, JobRequest, get_job, insert_job
from storage.queue import (
    CLAIMER_SECONDS,
    LEASE_SECONDS,
    AdmissionCounts,
    Caps,
    admission_counts,
    announce_claimer,
    cancel_queued,
    claim_jobs,
    finish,
    give_back_slot,
    pending_requests,
    renew_leases,
    requeue_owned,
    retire_claimer,
    waiting_order,
)

pytestmark = pytest.mark.timeout(60)
NOW = 1_800_000_000.0


@pytest.fixture
async def db(database_target: str) -> AsyncIterator[Database]:
    database = await Database.open(database_target)
    yield database
    await database.close()


def job(job_id: str, *, guild: int | None = 1, user: int = 1, at: float = 0.0, group: str | None = None) -> Job:
    return Job(
        id=job_id,
        created_at=NOW + at,
        guild_id=guild,
        channel_id=5,
        user_id=user,
        kind="imagine",
        request=JobRequest(prompt=job_id),
        grid_id=group,
    )


async def add(db: Database, *jobs: Job) -> None:
    for item in jobs:
        await insert_job(db, item)


async def claim(db: Database, caps: Caps, *, owner: str = "p1", want: int = 10, now: float = NOW) -> list[str]:
    return [j.id for j in await claim_jobs(db, owner=owner, want=want, caps=caps, now=now)]


async def test_guilds_take_turns_and_each_guild_is_first_come_first_served(db: Database) -> None:
    caps = Caps(global_concurrency=1, guild_concurrency=1, user_concurrency=1)
    await add(db, *(job(f"a{n}", guild=1, user=100 + n, at=n) for n in range(4)))
    await add(db, job("b0", guild=2, user=200, at=10), job("b1", guild=2, user=201, at=11))
    started = await claim(db, caps)
    assert started == ["a0"]
    assert (await waiting_order(db))[:3] == ["b0", "a1", "b1"]
    while True:
        assert await finish(db, started[-1], "p1", {"status": "done", "finished_at": NOW})
        got = await claim(db, caps)
        if not got:
            break
        assert len(got) == 1  # the global cap: one at a time
        started += got
    assert started == ["a0", "b0", "a1", "b1", "a2", "a3"]


async def test_caps_hold_when_two_processes_claim_at_once(db: Database) -> None:
    caps = Caps(global_concurrency=3, guild_concurrency=2, user_concurrency=1)
    await add(db, *(job(f"g1u1-{n}", guild=1, user=1, at=n) for n in range(6)))
    await add(db, *(job(f"g1u{n}", guild=1, user=n, at=10 + n) for n in range(2, 8)))
    await add(db, *(job(f"g2u{n}", guild=2, user=50 + n, at=20 + n) for n in range(6)))
    running: dict[str, str] = {}
    done = 0
    while done < 18:
        # Both processes ask for more than the caps allow, at the same moment.
        first, second = await asyncio.gather(claim(db, caps, owner="p1"), claim(db, caps, owner="p2"))
        for job_id in first:
            running[job_id] = "p1"
        for job_id in second:
            running[job_id] = "p2"
        assert len(running) <= 3
        assert sum(1 for j in running if j.startswith("g1")) <= 2
        assert sum(1 for j in running if j.startswith("g1u1-")) <= 1
        assert running, "nothing could start"
        job_id, owner = next(iter(running.items()))
        assert await finish(db, job_id, owner, {"status": "done", "finished_at": NOW})
        del running[job_id]
        done += 1
    assert await claim(db, caps) == []


async def test_a_member_at_their_cap_does_not_block_their_guild_and_a_grid_runs_side_by_side(db: Database) -> None:
    caps = Caps(global_concurrency=8, guild_concurrency=8, user_concurrency=1)
    await add(db, job("x1", user=1, at=1), job("x2", user=1, at=2), job("y1", user=2, at=3))
    await db.execute(
        "INSERT INTO grids (id, created_at, channel_id, user_id, mode, request_json) VALUES (?, ?, ?, ?, ?, ?)",
        ("grid-1", NOW, 5, 3, "tiles", '{"prompt": "four"}'),
    )
    await add(db, *(job(f"tile{n}", user=3, at=4 + n, group="grid-1") for n in range(4)))
    assert sorted(await claim(db, caps)) == ["tile0", "tile1", "tile2", "tile3", "x1", "y1"]
    assert await pending_requests(db, 1) == 2 and await pending_requests(db, 3) == 1  # a grid is one request


postgres_only = pytest.mark.parametrize("database_target", ["postgresql"], indirect=True)


@postgres_only
async def test_new_jobs_are_shared_out_over_the_processes_claiming(db: Database) -> None:
    """Each process claiming takes its share of all the jobs in hand, in one claim: one with nothing in hand
    gets work while another is busy, a job counting from its claim until it is finished (its image work after
    the provider call included); alone, a process takes all the caps allow."""
    caps = Caps(global_concurrency=4, guild_concurrency=20, user_concurrency=20)
    await add(db, *(job(f"j{n:02}", user=n, at=n) for n in range(12)))
    assert await claim(db, caps, owner="p1") == ["j00", "j01", "j02", "j03"]  # alone
    assert await claim(db, caps, owner="p2") == []  # no slot free, but it says it claims
    for job_id in ("j00", "j01", "j02", "j03"):
        await give_back_slot(db, job_id)  # their provider calls are done; their images still in the works at p1
    assert await claim(db, caps, owner="p1") == []  # 4 in hand of the 8 there will be: its share
    assert await claim(db, caps, owner="p2") == ["j04", "j05", "j06", "j07"]  # idle, it gets the free slots
    for job_id in ("j04", "j05", "j06", "j07"):
        await give_back_slot(db, job_id)
    assert await claim(db, caps, owner="p1") == ["j08", "j09"]  # 4 each in hand, 4 slots free: 2 each
    assert await claim(db, caps, owner="p2") == ["j10", "j11"]


@postgres_only
async def test_a_process_takes_the_jobs_it_holds_itself_beyond_its_share(db: Database) -> None:
    """A new request's jobs are held by the process that admitted it until it has shown their status: nobody
    else may take them yet, so that process's share doesn't stop it (a grid's four tiles start together)."""
    caps = Caps(global_concurrency=4, guild_concurrency=4, user_concurrency=4)
    for n in range(4):
        await insert_job(db, job(f"tile{n}", user=1, at=n, group=None), held_by="p1", held_until=NOW + 10)
    assert await claim(db, caps, owner="p2") == []  # not its to take yet (and it says it claims)
    assert await claim(db, caps, owner="p1") == ["tile0", "tile1", "tile2", "tile3"]  # its share is 2 of 4


@postgres_only
async def test_a_process_stopping_or_no_longer_claiming_holds_no_other_back(db: Database) -> None:
    caps = Caps(global_concurrency=20, guild_concurrency=20, user_concurrency=20)
    await add(db, *(job(f"j{n:02}", user=n, at=n) for n in range(20)))
    await announce_claimer(db, "p1", NOW)
    assert await claim(db, caps, owner="p2", want=4) == [f"j{n:02}" for n in range(4)]  # share 10 of 20
    await retire_claimer(db, "p2", NOW)  # stopping: its jobs finish there, it takes no more
    await announce_claimer(db, "p3", NOW - CLAIMER_SECONDS - 1)  # no claim for a while: stuck, or dead
    assert await claim(db, caps, owner="p1") == [f"j{n:02}" for n in range(4, 14)]  # alone: all it wants


@postgres_only
async def test_a_job_finishing_lets_its_process_take_more_at_once(db: Database) -> None:
    """A process at its share takes more as soon as one of its jobs finishes (not at its next look, a minute
    away here): a job in hand ending wakes its claims, as a slot given back does."""
    await announce_claimer(db, "other", time.time())  # claiming, with nothing in hand
    await add(db, *(job(f"p{n}", user=n, at=n) for n in range(1, 4)))
    claims = 0
    started: list[str] = []
    marker = asyncio.Event()
    finish_first = asyncio.Event()
    after_second_release = 0

    def claimed(_seconds: float) -> None:
        nonlocal claims
        claims += 1

    async def run(item: Job) -> None:
        nonlocal after_second_release
        started.append(item.id)
        if item.id == "p2":
            after_second_release = claims
            marker.set()
        await queue.release(item.id)  # its provider call is done; it is still in hand here
        if item.id != "p1":
            await asyncio.Event().wait()  # image work that outlasts the test
        await finish_first.wait()
        await finish(db, item.id, queue.owner, {"status": "done", "finished_at": time.time()})

    limits = QueueLimits(global_concurrency=2, guild_concurrency=2, user_concurrency=2)
    queue = JobQueue(db, limits, owner="p-share", run=run, poll=60, on_claim=claimed)
    await queue.start()
    try:
        async with asyncio.timeout(10):
            await marker.wait()
            while claims <= after_second_release:  # noqa: ASYNC110 - the claim p2's slot given back woke
                await asyncio.sleep(0.01)
        assert started == ["p1", "p2"]  # 2 in hand: its share of the 4 there would be with both slots taken
        stored = await get_job(db, "p3")
        assert stored is not None and stored.status == "queued"
        finish_first.set()
        async with asyncio.timeout(10):
            while "p3" not in started:  # noqa: ASYNC110 - started by the queue's own task
                await asyncio.sleep(0.01)
    finally:
        await queue.aclose()


@pytest.mark.parametrize("database_target", ["sqlite"], indirect=True)
async def test_on_sqlite_the_one_process_takes_all_the_caps_allow(db: Database) -> None:
    caps = Caps(global_concurrency=4, guild_concurrency=20, user_concurrency=20)
    await add(db, *(job(f"j{n}", user=n, at=n) for n in range(8)))
    await announce_claimer(db, "a process before a crash", NOW)
    assert await claim(db, caps, owner="p1") == ["j0", "j1", "j2", "j3"]


async def test_a_queue_counts_among_the_claimers_while_it_claims(db: Database) -> None:
    async def run(job: Job) -> None:
        return None

    async def claimers() -> list[str]:
        return [str(r[0]) for r in await db.fetchall("SELECT owner FROM claimers")]

    queue = JobQueue(db, QueueLimits(), owner="p-life", run=run)
    await queue.start()
    try:
        if db.dialect == "postgresql":  # its first claim says it claims
            async with asyncio.timeout(10):
                while await claimers() != ["p-life"]:  # noqa: ASYNC110 - a row in the database, not an event
                    await asyncio.sleep(0.01)
        await queue.stop_claiming()
        assert await claimers() == []
    finally:
        await queue.aclose()


async def test_a_lease_that_runs_out_is_taken_over_and_the_late_process_cannot_finish_it(db: Database) -> None:
    caps = Caps(global_concurrency=1, guild_concurrency=1, user_concurrency=1)
    await add(db, job("j1"))
    assert await claim(db, caps, owner="dead") == ["j1"]
    # Within the lease, nobody else may take it, and the cap is held.
    assert await claim(db, caps, owner="p2", now=NOW + LEASE_SECONDS / 2) == []
    assert await renew_leases(db, "dead", NOW + 1) == 1
    assert await claim(db, caps, owner="p2", now=NOW + LEASE_SECONDS + 0.5) == []  # renewed: still alive
    later = NOW + 1 + LEASE_SECONDS + 1
    assert await claim(db, caps, owner="p2", now=later) == ["j1"]
    taken = await get_job(db, "j1")
    assert taken is not None and taken.attempts_started == 2
    assert not await finish(db, "j1", "dead", {"status": "done", "finished_at": later})  # too late: not posted
    assert await finish(db, "j1", "p2", {"status": "done", "finished_at": later})
    assert not await finish(db, "j1", "p2", {"status": "done", "finished_at": later})  # once


async def test_a_stopping_process_hands_its_jobs_back_at_once(db: Database) -> None:
    caps = Caps(global_concurrency=2, guild_concurrency=2, user_concurrency=2)
    await add(db, job("j1", user=1), job("j2", user=2, at=1))
    assert sorted(await claim(db, caps, owner="stopping")) == ["j1", "j2"]
    await retire_claimer(db, "stopping", NOW)  # as JobQueue.aclose does first: it claims no more
    assert await requeue_owned(db, "stopping") == 2
    assert sorted(await claim(db, caps, owner="other")) == ["j1", "j2"]  # no wait for the leases


async def test_a_slot_given_back_lets_the_next_job_start_while_the_first_still_counts(db: Database) -> None:
    caps = Caps(global_concurrency=1, guild_concurrency=1, user_concurrency=1)
    await add(db, job("first", user=1), job("second", user=2, at=1))
    assert await claim(db, caps) == ["first"]
    await give_back_slot(db, "first")
    assert await claim(db, caps) == ["second"]
    assert await pending_requests(db, 1) == 1  # storing and posting: still the member's pending request


async def test_only_a_waiting_job_can_be_cancelled_and_only_once(db: Database) -> None:
    caps = Caps(global_concurrency=1, guild_concurrency=1, user_concurrency=1)
    await add(db, job("running", user=1), job("waiting", user=2, at=1))
    assert await claim(db, caps) == ["running"]
    assert not await cancel_queued(db, "running", NOW)
    assert await cancel_queued(db, "waiting", NOW)
    assert not await cancel_queued(db, "waiting", NOW)
    assert not await cancel_queued(db, "unknown", NOW)
    cancelled = await get_job(db, "waiting")
    assert cancelled is not None and cancelled.status == "cancelled" and cancelled.reserved_usd == 0


async def test_dms_and_user_installs_get_a_lane_per_member(db: Database) -> None:
    caps = Caps(global_concurrency=4, guild_concurrency=1, user_concurrency=1)
    await add(db, job("dm-a", guild=None, user=1), job("dm-b", guild=None, user=2, at=1))
    assert sorted(await claim(db, caps)) == ["dm-a", "dm-b"]  # the guild cap of 1 is per member here


class FixedPrice(Admission):
    """Admission with a price of its own, for tests without a generation service; it notes how many requests
    each of its transactions admitted together."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batches: list[int] = []

    async def _admit_together(self, batch: list[Any]) -> list[Any]:
        self.batches.append(len(batch))
        return await super()._admit_together(batch)

    def estimate_cost(self, model: str | None, size: str, images: int, *, speed: str = "fast") -> float:
        return 0.125 * images


async def admit_all(admission: Admission, requests: list[list[Job]]) -> list[BaseException | float]:
    """Ask for all the requests at once, in this order; each one's cost, or why it was refused."""
    return await asyncio.gather(*(admission.admit(jobs) for jobs in requests), return_exceptions=True)


async def stored(db: Database) -> set[str]:
    return {str(row[0]) for row in await db.fetchall("SELECT id FROM jobs WHERE status = 'queued'")}


async def test_a_burst_is_admitted_together_checked_in_arrival_order_as_if_one_by_one(db: Database) -> None:
    """Requests that arrive together go in one transaction, each checked against what the ones before it
    reserved: a member's pending cap, a daily limit a grid's four images count toward, a guild's budget and the
    bot-wide cap on user installs hold exactly, and whoever asked first gets in."""
    await update_guild_settings(db, 2, updated_by=1, monthly_budget_usd=0.5)  # 4 images at $0.125
    limits = QueueLimits(user_pending=3, user_daily=5, guild_daily=0, user_install_daily=1)
    admission = FixedPrice(db=db, generation=None, limits=limits, clock=time.time)  # type: ignore[arg-type]

    def grid(name: str, user: int) -> list[Job]:
        return [job(f"{name}-{n}", user=user, group=name) for n in range(4)]

    def installed(job_id: str, user: int) -> list[Job]:
        item = job(job_id, user=user)
        item.user_install = True
        return [item]

    await db.execute(
        "INSERT INTO grids (id, created_at, channel_id, user_id, mode, request_json) VALUES (?, ?, ?, ?, ?, ?)",
        ("grid", NOW, 5, 8, "tiles", '{"prompt": "four"}'),
    )
    requests = [[job(f"pending-{n}", user=7)] for n in range(5)]  # cap 3 requests waiting
    requests += [grid("grid", 8), [job("fifth", user=8)], [job("sixth", user=8)]]  # 4 + 1 of 5 today, then no
    requests += [[job(f"budget-{n}", guild=2, user=20 + n)] for n in range(6)]  # $0.50 covers 4
    requests += [installed("mine", 30), installed("yours", 31)]  # one a day over the whole bot
    results = await admit_all(admission, requests)

    assert admission.batches == [len(requests)]  # one transaction for all
    admitted = [r[0].id for r, outcome in zip(requests, results, strict=True) if outcome == 0.125]
    assert admitted == ["pending-0", "pending-1", "pending-2", "grid-0", "fifth"] + [
        f"budget-{n}" for n in range(4)
    ] + ["mine"]
    refusals = [
        (r[0].id, o.limit if isinstance(o, LimitExceeded) else type(o).__name__)
        for r, o in zip(requests, results, strict=True)
        if o != 0.125
    ]
    assert refusals == [
        ("pending-3", "user_pending"),
        ("pending-4", "user_pending"),
        ("sixth", "user_daily"),
        ("budget-4", "BudgetExceeded"),
        ("budget-5", "BudgetExceeded"),
        ("yours", "user_install_daily"),
    ]
    sixth = results[7]
    assert isinstance(sixth, LimitExceeded) and sixth.used == 5 and sixth.needed == 1
    budget = results[12]
    assert isinstance(budget, BudgetExceeded) and budget.left == pytest.approx(0.0)
    # Stored are exactly the admitted requests' jobs, each reserving its price; nothing of the refused ones.
    assert await stored(db) == {j.id for r, o in zip(requests, results, strict=True) if o == 0.125 for j in r}
    assert await db.fetchval("SELECT sum(reserved_usd) FROM jobs WHERE guild_id = 2") == pytest.approx(0.5)

    # And the next request sees all of it, in a transaction of its own.
    with pytest.raises(LimitExceeded) as refused:
        await admission.admit([job("later", user=7)])
    assert refused.value.limit == "user_pending" and admission.batches[-1] == 1


async def test_a_full_batch_from_as_many_guilds_applies_each_guilds_own_settings(db: Database) -> None:
    """A batch of BATCH_LIMIT requests from as many guilds, read in one statement with the guilds' own limits
    and budgets: each guild's settings apply to its own request only, and the statement stays within the 999
    parameters SQLite took before 3.32 (PostgreSQL binds each list as one array)."""
    guilds = list(range(100, 100 + BATCH_LIMIT))
    budgeted, lifted, default, capped = guilds[0::4], guilds[1::4], guilds[2::4], guilds[3::4]
    for guild in budgeted:
        await update_guild_settings(db, guild, updated_by=1, monthly_budget_usd=0.1)  # under one $0.125 image
    for guild in lifted:
        await update_guild_settings(db, guild, updated_by=1, user_daily=0, guild_daily=2)  # 0: no member limit
    for guild in capped:
        await update_guild_settings(db, guild, updated_by=1, user_daily=0, guild_daily=1)
    limits = QueueLimits(user_daily=1, guild_daily=0)
    admission = FixedPrice(db=db, generation=None, limits=limits, clock=lambda: NOW)  # type: ignore[arg-type]
    requests = [[job(f"g{guild}", guild=guild, user=guild)] for guild in guilds]
    # The members of the guilds without a budget already made one image today (NOW is 08:00 UTC): the bot-wide
    # daily limit of 1 refuses them a second, unless their guild lifted it.
    await add(db, *(job(f"earlier{guild}", guild=guild, user=guild, at=-60) for guild in lifted + default + capped))
    await db.execute("UPDATE jobs SET status = 'done'")
    results = await admit_all(admission, requests)

    assert admission.batches == [BATCH_LIMIT]
    outcome = {guild: result for guild, result in zip(guilds, results, strict=True)}
    assert all(isinstance(outcome[guild], BudgetExceeded) for guild in budgeted)
    assert all(outcome[guild] == 0.125 for guild in lifted)  # no member limit, a second image in the guild today
    refused = {guild: result.limit for guild in default + capped if isinstance(result := outcome[guild], LimitExceeded)}
    assert refused == {guild: "user_daily" for guild in default} | {guild: "guild_daily" for guild in capped}

    captured: list[tuple[str, list[Any]]] = []

    class Recording:
        dialect = "sqlite"

        async def fetchall(self, sql: str, params: list[Any]) -> list[Any]:
            captured.append((sql, params))
            return []

    await admission_counts(
        Recording(),  # type: ignore[arg-type]
        members=set(range(1000, 1000 + BATCH_LIMIT)),
        guilds=set(guilds),
        day_start=NOW,
        month_start=NOW,
        user_installs=True,
    )
    [(sql, params)] = captured
    assert sql.count("?") == len(params) <= 999


async def test_two_processes_admitting_the_same_members_in_opposite_orders_never_wait_in_a_circle(
    database_target: str,
) -> None:
    """Each batch takes its members' locks in one order, whatever order its requests came in: two processes
    admitting the same members the other way round both finish (PostgreSQL would otherwise detect a deadlock
    and fail a batch). No guild has a cap here, so only the members' locks are taken."""
    first, second = await Database.open(database_target), await Database.open(database_target)
    try:
        limits = QueueLimits(user_pending=100, user_daily=100)
        admissions = [FixedPrice(db=db, generation=None, limits=limits, clock=time.time) for db in (first, second)]  # type: ignore[arg-type]
        for _round in range(3):
            members = list(range(100, 140))
            ahead = [[job(f"a{_round}-{m}", user=m)] for m in members]
            behind = [[job(f"b{_round}-{m}", user=m)] for m in reversed(members)]
            results = await asyncio.gather(admit_all(admissions[0], ahead), admit_all(admissions[1], behind))
            assert all(outcome == 0.125 for outcomes in results for outcome in outcomes)
        assert len(await stored(first)) == 3 * 2 * 40
    finally:
        await first.close()
        await second.close()


def test_a_job_admitted_after_midnight_but_made_before_counts_for_the_budget_not_for_today() -> None:
    """Within a batch, counted as the queries count stored jobs: the day's limits by when a job was made, the
    budget's reservation whenever it was made; a grid is one pending request of four images."""
    counts = AdmissionCounts()
    late = job("late", guild=1, user=7, at=-5)  # made 5 s before the day began
    late.reserved_usd = 0.25
    counts.add([late], day_start=NOW)
    assert counts.guild_reserved == {1: 0.25} and counts.member_today == {} and counts.guild_today == {}
    tiles = [job(f"t{n}", guild=1, user=7, group="g") for n in range(4)]
    counts.add(tiles, day_start=NOW)
    assert counts.pending == {(7, "fast"): 2} and counts.member_today == {7: 4} and counts.guild_today == {1: 4}


async def test_a_request_that_cannot_be_stored_fails_alone_and_the_rest_of_its_batch_is_admitted(db: Database) -> None:
    """A job stored twice (the same id) is the database's refusal of one request: its caller gets the error,
    the requests that came with it are admitted all the same."""
    await add(db, job("taken", user=1))
    admission = FixedPrice(db=db, generation=None, limits=QueueLimits(), clock=time.time)  # type: ignore[arg-type]
    results = await admit_all(admission, [[job("a", user=2)], [job("taken", user=3)], [job("b", user=4)]])
    assert results[0] == results[2] == 0.125
    assert isinstance(results[1], IntegrityError)
    assert await stored(db) == {"a", "b", "taken"}
    assert await db.fetchval("SELECT user_id FROM jobs WHERE id = 'taken'") == 1  # the first one, untouched


class Paused(FixedPrice):
    """Admission whose transactions wait for `go` before they start, so a test can act while a batch runs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.started = asyncio.Event()
        self.go = asyncio.Event()

    async def _admit_together(self, batch: list[Any]) -> list[Any]:
        self.started.set()
        await self.go.wait()
        return await super()._admit_together(batch)


async def eventually(check: Any) -> None:
    """Until `check()` is true (the undoing runs in a task of its own), for at most 10 s."""
    async with asyncio.timeout(10):
        while not await check():  # noqa: ASYNC110 - a row in the database, not an event
            await asyncio.sleep(0.01)


async def test_a_caller_that_gives_up_while_its_batch_runs_has_its_jobs_cancelled_and_refunded(db: Database) -> None:
    """The caller (an interaction, a stopping process) believes nothing was queued: what its batch admitted
    anyway is cancelled, its reservation given back, while the others of the batch stay queued."""
    await update_guild_settings(db, 1, updated_by=1, monthly_budget_usd=1.0)
    admission = Paused(db=db, generation=None, limits=QueueLimits(), clock=time.time)  # type: ignore[arg-type]
    kept = asyncio.create_task(admission.admit([job("kept", user=1)]))
    dropped = asyncio.create_task(admission.admit([job("dropped", user=2)]))
    await admission.started.wait()
    dropped.cancel()
    admission.go.set()
    assert await kept == 0.125
    with pytest.raises(asyncio.CancelledError):
        await dropped

    async def undone() -> bool:
        gone = await get_job(db, "dropped")
        return gone is not None and gone.status == "cancelled"

    await eventually(undone)
    assert (await get_job(db, "dropped")).reserved_usd == 0  # type: ignore[union-attr]
    assert await stored(db) == {"kept"} and admission.batches == [2]
    assert await db.fetchval("SELECT sum(reserved_usd) FROM jobs WHERE guild_id = 1") == pytest.approx(0.125)


async def test_a_request_whose_caller_gave_up_is_not_tried_again_alone(db: Database) -> None:
    """A batch that failed on one request's row is tried again request by request, leaving out those whose
    callers stopped waiting meanwhile."""
    await add(db, job("taken", user=1))
    admission = Paused(db=db, generation=None, limits=QueueLimits(), clock=time.time)  # type: ignore[arg-type]
    asked = [
        asyncio.create_task(admission.admit([job(name, user=n + 2)])) for n, name in enumerate(["taken", "b", "c"])
    ]
    await admission.started.wait()
    asked[2].cancel()
    admission.go.set()
    results = await asyncio.gather(*asked, return_exceptions=True)
    assert isinstance(results[0], IntegrityError) and results[1] == 0.125
    assert isinstance(results[2], asyncio.CancelledError)
    assert await stored(db) == {"taken", "b"}
    assert admission.batches == [3, 1, 1]


async def test_the_jobs_of_a_batch_are_held_for_their_process_from_when_they_are_stored(db: Database) -> None:
    admission = FixedPrice(db=db, generation=None, limits=QueueLimits(), clock=time.time)  # type: ignore[arg-type]
    before = time.time()
    await asyncio.gather(*(admission.admit([job(f"h{n}", user=n)], held_by="p1", hold=10.0) for n in range(5)))
    rows = await db.fetchall("SELECT DISTINCT lease_owner, lease_expires FROM jobs")
    assert len(rows) == 1 and rows[0][0] == "p1"  # one statement stored them all
    assert before + 10 <= rows[0][1] <= time.time() + 10


async def test_a_caller_that_gives_up_before_its_turn_stores_nothing(db: Database) -> None:
    admission = FixedPrice(db=db, generation=None, limits=QueueLimits(), clock=time.time)  # type: ignore[arg-type]
    kept = asyncio.create_task(admission.admit([job("kept", user=1)]))
    dropped = asyncio.create_task(admission.admit([job("dropped", user=2)]))
    await asyncio.sleep(0)  # both are waiting for the admission task, which hasn't run yet
    dropped.cancel()
    assert await kept == 0.125
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert await stored(db) == {"kept"} and admission.batches == [1]


async def test_admissions_in_two_processes_hold_a_member_quota_and_a_guild_budget_exactly(
    database_target: str,
) -> None:
    """Two processes (two connections to one database) admit a burst for one member and one guild at once: the
    member's daily limit and the guild's budget hold exactly, while another guild is admitted alongside."""
    first, second = await Database.open(database_target), await Database.open(database_target)
    try:
        await update_guild_settings(first, 1, updated_by=1, monthly_budget_usd=1.0)  # 8 images at $0.125
        limits = QueueLimits(user_daily=5, user_pending=100, guild_daily=0)
        admissions = [FixedPrice(db=db, generation=None, limits=limits, clock=time.time) for db in (first, second)]  # type: ignore[arg-type]

        async def ask(n: int, user: int, guild: int) -> bool:
            admission = admissions[n % 2]
            item = job(f"q{n}-{user}-{guild}", guild=guild, user=user, at=n)
            try:
                await admission.admit([item])
            except (LimitExceeded, BudgetExceeded):
                return False
            return True

        # Member 7 asks 12 times in guild 1 (their limit: 5); 9 other members ask once each there (the budget
        # leaves room for 8 in all); guild 2 has neither limit.
        asked = [ask(n, 7, 1) for n in range(12)] + [ask(n, 100 + n, 1) for n in range(9)]
        asked += [ask(n, 200 + n, 2) for n in range(10)]
        results = await asyncio.gather(*asked)
        assert sum(results[:12]) == 5  # the member's daily limit, whichever process admitted
        assert sum(results[:21]) == 8  # the guild's budget: $1.00 at $0.125 an image
        assert all(results[21:])
        reserved = await first.fetchval("SELECT sum(reserved_usd) FROM jobs WHERE guild_id = 1")
        assert reserved == pytest.approx(1.0)

        # A guild's own daily limit (set in /settings) holds too, though its members are all different.
        await update_guild_settings(first, 3, updated_by=1, guild_daily=4)
        capped = await asyncio.gather(*(ask(n, 300 + n, 3) for n in range(12)))
        assert sum(capped) == 4
    finally:
        await first.close()
        await second.close()
