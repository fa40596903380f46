"""Threads for the heavy image work of showing results: fitting an image under the upload limit, shrinking
drafts, cutting and composing grids.

They get a pool of their own, one thread fewer than the machine has cores, so that however many results
finish at once the event loop keeps a core: eight 4K re-encodes on asyncio's default pool took both cores
of a 2-core machine and the loop woke 60-130 ms late at p99 (bench/bench_bot.py, part 3). A member's own
input (reference images) is still prepared on the default pool, so it never waits behind other people's
results.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

IMAGE_THREADS = max(1, (os.cpu_count() or 2) - 1)
_pool = ThreadPoolExecutor(max_workers=IMAGE_THREADS, thread_name_prefix="images")


async def run_image_work(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args, **kwargs)`` on the image threads (like ``asyncio.to_thread``, on a pool of its own)."""
    return await asyncio.get_running_loop().run_in_executor(_pool, functools.partial(fn, *args, **kwargs))
