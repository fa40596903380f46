"""Threads for the heavy image work of showing results: fitting an image under the upload limit, shrinking
drafts, cutting and composing grids.

They get a pool of their own, one thread fewer than the machine has cores, so that however many results
finish at once the event loop keeps a core (on asyncio's default pool, a burst of 4K re-encodes takes them
all; bench/bench_bot.py measures the loop's lag). A member's own input (reference images) is still
prepared on the default pool, so it never waits behind other people's results.
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


def _usable_cores() -> int:
    """The cores this process may run on: a process pinned to some (taskset, a container's cpuset) has fewer
    than the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 2


IMAGE_THREADS = max(1, _usable_cores() - 1)
_pool = ThreadPoolExecutor(max_workers=IMAGE_THREADS, thread_name_prefix="images")


async def run_image_work(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args, **kwargs)`` on the image threads (like ``asyncio.to_thread``, on a pool of its own)."""
    return await asyncio.get_running_loop().run_in_executor(_pool, functools.partial(fn, *args, **kwargs))
