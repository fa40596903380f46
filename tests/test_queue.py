"""The fair queue: guilds take turns, caps hold, every path gives its slot back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.jobs.limits import QueueLimits
from bot.jobs.queue import FairQueue, Ticket

pytestmark = pytest.mark.timeout(10)


class Recorder:
    """Jobs that start, record the order, and finish when released."""

    def __init__(self, queue: FairQueue) -> None:
        self.queue = queue
        self.started: list[str] = []
        self.release: dict[str, asyncio.Event] = {}
        self.peak_running = 0

    def ticket(self, job_id: str, lane: int, user: int, *, fail: bool = False) -> Ticket:
        self.release[job_id] = asyncio.Event()

        async def run() -> None:
            self.started.append(job_id)
            self.peak_running = max(self.peak_running, self.queue.running_count)
            await self.release[job_id].wait()
            if fail:
                raise RuntimeError("boom")

        return Ticket(job_id=job_id, lane=lane, user_id=user, run=run)

    async def finish(self, job_id: str) -> None:
        self.release[job_id].set()
        for _ in range(5):
            await asyncio.sleep(0)


@pytest.fixture
async def queues() -> AsyncIterator[list[FairQueue]]:
    """Queues made by a test, closed after it so no job task outlives its loop."""
    made: list[FairQueue] = []
    yield made
    for queue in made:
        await queue.aclose()


def new_queue(queues: list[FairQueue], **limits: int) -> FairQueue:
    queue = FairQueue(QueueLimits(**limits))
    queues.append(queue)
    return queue


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_guilds_take_turns_and_each_guild_is_fifo(queues: list[FairQueue]) -> None:
    queue = new_queue(queues, global_concurrency=1, guild_concurrency=1, user_concurrency=1)
    rec = Recorder(queue)
    # Guild 1 floods first (four members), then guild 2 arrives with two jobs.
    for n in range(4):
        queue.submit(rec.ticket(f"a{n}", lane=1, user=100 + n))
    queue.submit(rec.ticket("b0", lane=2, user=200))
    queue.submit(rec.ticket("b1", lane=2, user=201))
    await settle()
    assert rec.started == ["a0"]
    assert queue.position("b0") == 1 and queue.position("a1") == 2 and queue.position("b1") == 3
    for job in ["a0", "b0", "a1", "b1", "a2", "a3"]:
        await rec.finish(job)
    assert rec.started == ["a0", "b0", "a1", "b1", "a2", "a3"]
    await queue.wait_idle()


async def test_caps_per_guild_per_user_and_global_hold_under_a_burst(queues: list[FairQueue]) -> None:
    queue = new_queue(queues, global_concurrency=3, guild_concurrency=2, user_concurrency=1)
    rec = Recorder(queue)
    for n in range(10):
        queue.submit(rec.ticket(f"g1u1-{n}", lane=1, user=1))  # one member: one at a time
    for n in range(10):
        queue.submit(rec.ticket(f"g1u{n + 2}", lane=1, user=n + 2))
    for n in range(10):
        queue.submit(rec.ticket(f"g2u{n}", lane=2, user=50 + n))
    await settle()
    running = [j for j in rec.started if not rec.release[j].is_set()]
    assert len(running) == 3
    assert sum(1 for j in running if j.startswith("g1")) <= 2
    assert sum(1 for j in running if j.startswith("g1u1-")) <= 1
    # Drain everything, checking the caps after every step.
    while queue.running_count or queue.waiting_count:
        current = [j for j in rec.started if not rec.release[j].is_set()]
        assert len(current) <= 3
        assert sum(1 for j in current if j.startswith("g1")) <= 2
        assert sum(1 for j in current if j.startswith("g1u1-")) <= 1
        await rec.finish(current[0])
    assert len(rec.started) == 30
    assert rec.peak_running <= 3


async def test_a_member_at_their_cap_does_not_block_the_rest_of_their_guild(queues: list[FairQueue]) -> None:
    queue = new_queue(queues, global_concurrency=4, guild_concurrency=4, user_concurrency=1)
    rec = Recorder(queue)
    queue.submit(rec.ticket("x1", lane=1, user=1))
    queue.submit(rec.ticket("x2", lane=1, user=1))
    queue.submit(rec.ticket("y1", lane=1, user=2))
    await settle()
    assert rec.started == ["x1", "y1"]


async def test_cancel_removes_a_waiting_job_but_not_a_running_one(queues: list[FairQueue]) -> None:
    queue = new_queue(queues, global_concurrency=1)
    rec = Recorder(queue)
    queue.submit(rec.ticket("first", lane=1, user=1))
    queue.submit(rec.ticket("second", lane=1, user=2))
    await settle()
    assert queue.cancel("first") is False
    assert queue.cancel("second") is True
    assert queue.position("second") is None
    await rec.finish("first")
    await queue.wait_idle()
    assert rec.started == ["first"]


async def test_a_job_that_raises_or_is_cancelled_gives_its_slot_back(queues: list[FairQueue]) -> None:
    queue = new_queue(queues, global_concurrency=1, guild_concurrency=1, user_concurrency=1)
    rec = Recorder(queue)
    queue.submit(rec.ticket("bad", lane=1, user=1, fail=True))
    queue.submit(rec.ticket("next", lane=1, user=1))
    await settle()
    await rec.finish("bad")
    assert rec.started == ["bad", "next"]
    assert queue.pending_for_user(1) == 1
    await queue.aclose()  # shutdown cancels the running one; its slot is released too
    assert queue.running_count == 0 and queue.pending_for_user(1) == 0


async def test_dms_get_a_lane_per_member(queues: list[FairQueue]) -> None:
    queue = new_queue(queues, global_concurrency=1, guild_concurrency=1, user_concurrency=5)
    rec = Recorder(queue)
    queue.submit(rec.ticket("dm1-a", lane=-1, user=1))
    queue.submit(rec.ticket("dm1-b", lane=-1, user=1))
    queue.submit(rec.ticket("dm2-a", lane=-2, user=2))
    await settle()
    assert queue.position("dm2-a") == 1


async def test_a_released_slot_starts_the_next_job_while_the_first_still_counts_as_pending(
    queues: list[FairQueue],
) -> None:
    """A job that has its image gives its slot back before it has stored and logged it (FairQueue.release):
    the next job starts at once, but the member's and guild's pending work (which /forget-me waits for,
    and the per-member waiting cap counts) still includes the finishing one until it returns."""
    queue = new_queue(queues, global_concurrency=1, guild_concurrency=1, user_concurrency=1)
    rec = Recorder(queue)
    queue.submit(rec.ticket("first", lane=1, user=1))
    queue.submit(rec.ticket("second", lane=1, user=2))
    await settle()
    assert rec.started == ["first"]
    queue.release("first")
    await settle()
    assert rec.started == ["first", "second"]
    assert queue.running_count == 1  # only "second" holds capacity
    assert queue.pending_for_user(1) == 1 and queue.pending_in_lane(1) == 2
    queue.release("first")  # again: a no-op
    queue.release("unknown")
    await rec.finish("first")
    assert queue.pending_for_user(1) == 0 and queue.pending_in_lane(1) == 1
    await rec.finish("second")
    await asyncio.wait_for(queue.wait_idle(), 1)
    assert queue.pending_in_lane(1) == 0


async def test_shutdown_cancels_a_finishing_job_too(queues: list[FairQueue]) -> None:
    queue = new_queue(queues, global_concurrency=1, guild_concurrency=1, user_concurrency=1)
    rec = Recorder(queue)
    queue.submit(rec.ticket("first", lane=1, user=1))
    await settle()
    queue.release("first")
    await queue.aclose()
    assert queue.pending_for_user(1) == 0 and queue.pending_in_lane(1) == 0
