"""A cheaper send buffer for hypercorn's HTTP/2 streams, so the fake's CPU stays out of the way.

hypercorn keeps each stream's outgoing body in a bytearray: every write is copied in, and every DATA frame is
copied out twice (``bytes(buffer[:n])``). For the benchmarks' 64 concurrent 2K answers that is ~1.5 GB of
copying per batch in the fake, on the same two cores as the client it serves (``bench/bench_core.py`` counts the
fake's CPU in its ideal, and a single-threaded fake that is slower than the client sets the wall). This buffer
keeps the writes as they are and joins each frame's bytes once. What goes on the wire is the same: the same
frames, of the same sizes, in the same order; the flow control (high and low water) is hypercorn's own.

It touches hypercorn internals (0.17-0.18), so it is installed only when they look as expected.
"""

from __future__ import annotations

from collections import deque
from typing import Any

#: Whether install() found hypercorn shaped as expected.
installed = False


def install() -> bool:
    global installed
    if installed:
        return True
    try:
        from hypercorn.protocol import h2 as hypercorn_h2
    except ImportError:  # pragma: no cover - hypercorn is a test dependency
        return False
    base = getattr(hypercorn_h2, "StreamBuffer", None)
    needed = ("push", "pop", "close", "drain", "set_complete", "complete")
    if (
        base is None
        or not all(hasattr(base, name) for name in needed)
        or not hasattr(hypercorn_h2, "BUFFER_HIGH_WATER")
    ):
        return False
    high_water = hypercorn_h2.BUFFER_HIGH_WATER
    low_water = hypercorn_h2.BUFFER_LOW_WATER
    complete_error = hypercorn_h2.BufferCompleteError

    class StreamBuffer(base):  # type: ignore[misc, valid-type]
        def __init__(self, event_class: Any) -> None:
            super().__init__(event_class)
            self._pending: deque[memoryview] = deque()
            self._size = 0

        @property
        def complete(self) -> bool:
            return bool(self._complete) and self._size == 0

        async def close(self) -> None:
            self._pending.clear()
            self._size = 0
            await super().close()

        async def push(self, data: bytes) -> None:
            if self._complete:
                raise complete_error()
            if data:
                self._pending.append(memoryview(data))
                self._size += len(data)
            await self._is_empty.clear()
            if self._size >= high_water:
                await self._paused.wait()
                await self._paused.clear()

        async def pop(self, max_length: int) -> bytes:
            remaining = min(self._size, max_length)
            taken: list[memoryview] = []
            while remaining > 0:
                head = self._pending[0]
                if len(head) <= remaining:
                    taken.append(self._pending.popleft())
                    remaining -= len(head)
                else:
                    taken.append(head[:remaining])
                    self._pending[0] = head[remaining:]
                    remaining = 0
            data = b"".join(taken)
            self._size -= len(data)
            if len(data) < low_water:
                await self._paused.set()
            if self._size == 0:
                await self._is_empty.set()
            return data

    hypercorn_h2.StreamBuffer = StreamBuffer  # type: ignore[misc]
    installed = True
    return True
