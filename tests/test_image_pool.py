"""The image threads (bot/media/pool.py): work runs off the event loop, and the pool says when it is behind,
so the job queue leaves new jobs to another process."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bot.media.pool import IMAGE_THREADS, image_work_behind, run_image_work

pytestmark = pytest.mark.timeout(30)


async def test_the_pool_is_behind_while_more_work_waits_than_its_threads_start_soon() -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    def work(n: int) -> int:
        started.release()
        release.wait(10)
        return n * n

    behind_at = 2 * IMAGE_THREADS  # work items in the pool, running or waiting, before it counts as behind
    tasks = [asyncio.create_task(run_image_work(work, n)) for n in range(behind_at)]
    await asyncio.to_thread(started.acquire)  # the threads have taken work: it is in the pool
    assert not image_work_behind()
    tasks.append(asyncio.create_task(run_image_work(work, behind_at)))
    await asyncio.sleep(0)  # the new task handed its work to the pool
    assert image_work_behind()
    release.set()
    assert await asyncio.gather(*tasks) == [n * n for n in range(behind_at + 1)]
    assert not image_work_behind()
