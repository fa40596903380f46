"""Make httpx's HTTP/2 cheap enough for multi-megabyte image responses.

httpx speaks HTTP/2 through httpcore and h2, in pure Python, one DATA frame at a time. For an 8 MB image
response that is ~500 frames of 16 KiB, each parsed, turned into an event and acknowledged, and h2 also
builds a hex ``repr`` of every received frame for a trace log it rarely writes. Measured on a 2K response
(``bench/README.md``), HTTP/2 cost about twice the client CPU of HTTP/1.1. These process-wide adjustments
bring it below the official SDK's HTTP/1.1 cost:

1. read 256 KiB per socket read instead of 64 KiB (fewer trips through httpcore's locks and h2);
2. advertise SETTINGS_MAX_FRAME_SIZE = 256 KiB, so servers that honour it send 16x fewer frames, and open
   a 1 GiB connection window: with large frames, 64 concurrent streams filled httpcore's 16 MiB window
   with one frame each and stalled (httpcore acknowledges data only as each stream's reader consumes it);
3. a DATA frame's ``repr`` names its length instead of hexlifying the payload;
4. skip httpcore's write lock when h2 has nothing to send (see ``_write_outgoing_data`` below);
5. copy each received frame's bytes once, not three times (``_FrameReader``);
6. a stream whose events have already been read doesn't wait behind a reader blocked on another stream
   (``_receive_events`` below; this one fixes a stall, not a cost);
7. socket reads skip anyio's per-read timeout scope (``_read_incoming_data`` below): every request has its
   own deadline, the read timeout from when it is sent (``bot/core/http.py``), which also bounds any read it
   does for the others;
8. the read lock takes anyio's fast path: with item 6 it is almost never contended, and an uncontended
   anyio lock still yields to the event loop on every acquire (~2,000 times per batch of 64 2K answers).

They touch library internals, so each is applied only when the internals look as expected (pinned
versions in pyproject.toml; ``tests/test_core_units.py`` checks they are active). If a future release
changes them, HTTP/2 still works, just at the libraries' own speed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import anyio
import anyio.abc
import h2.connection
import h2.frame_buffer
import httpcore
from h2.exceptions import FrameDataMissingError, ProtocolError
from hyperframe.exceptions import InvalidDataError, InvalidFrameError
from hyperframe.frame import DataFrame, Frame

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
#: The largest DATA frame we invite servers to send; 16 KiB is the protocol's default.
MAX_FRAME_SIZE = 256 * 1024
#: Connection-level receive window (httpcore opens 16 MiB; the protocol's default is 64 KiB).
CONNECTION_WINDOW = 1 << 30


class _FrameReader(h2.frame_buffer.FrameBuffer):
    """h2's receive buffer (client side), copying each frame's bytes once.

    h2's own buffer appends every read to itself, copies every frame's bytes out of itself before parsing
    them (h2 4.1 also copies the rest of the buffer after each frame), and hyperframe then copies a DATA
    frame's payload once more into the ``bytes`` that reach httpcore. At 64 concurrent 2K responses that is
    ~1 GB per batch of copying on the event-loop thread. Here the reads are kept as they came, and a frame's
    payload is sliced or joined out of them once: that is the DATA frame's ``data``. The frame-size check,
    the assembly of header blocks and the errors are h2's own (the base class's methods).
    """

    def __init__(self) -> None:
        super().__init__(server=False)
        self._reads: deque[bytes] = deque()
        self._offset = 0  # bytes of _reads[0] already taken
        self._size = 0  # bytes not yet taken

    def add_data(self, data: Any) -> None:
        if data:
            self._reads.append(data if type(data) is bytes else bytes(data))
            self._size += len(data)

    def _take(self, n: int, *, peek: bool = False) -> bytes:
        """The next n bytes (n <= _size), copied once; consumed unless peek."""
        first, offset = self._reads[0], self._offset
        if len(first) - offset >= n:
            out = first if offset == 0 and n == len(first) else first[offset : offset + n]
            if not peek:
                self._offset = offset + n
                if self._offset == len(first):
                    self._reads.popleft()
                    self._offset = 0
                self._size -= n
            return out
        views, need, index = [memoryview(first)[offset:]], n - (len(first) - offset), 1
        while need > len(self._reads[index]):
            views.append(memoryview(self._reads[index]))
            need -= len(self._reads[index])
            index += 1
        views.append(memoryview(self._reads[index])[:need])
        out = b"".join(views)
        if not peek:
            for _ in range(index):
                self._reads.popleft()
            self._offset = need
            if need == len(self._reads[0]):
                self._reads.popleft()
                self._offset = 0
            self._size -= n
        return out

    def __next__(self) -> Frame:
        while True:
            if self._size < 9:  # a frame header is 9 bytes
                raise StopIteration
            try:
                frame, length = Frame.parse_frame_header(memoryview(self._take(9, peek=True)))
            except (InvalidDataError, InvalidFrameError) as exc:
                raise ProtocolError(f"Received frame with invalid header: {exc}") from exc
            if self._size < 9 + length:
                raise StopIteration  # wait for the rest of the frame
            self._validate_frame_length(length)
            self._take(9)
            payload = self._take(length) if length else b""
            if isinstance(frame, DataFrame) and "PADDED" not in frame.flags:
                # What DataFrame.parse_body does for an unpadded frame, without copying the payload again.
                frame.data, frame.body_len = payload, length
            else:
                try:
                    frame.parse_body(memoryview(payload))
                except InvalidDataError as exc:
                    raise ProtocolError("Received frame with non-compliant data") from exc
                except InvalidFrameError as exc:
                    raise FrameDataMissingError("Frame data missing or invalid") from exc
            # None while a header block waits for its CONTINUATION frames: go on to the next frame.
            if (complete := self._update_header_buffer(frame)) is not None:
                return complete


class _FastLock:
    """httpcore's read lock, as an anyio lock that doesn't yield when it is free (item 8)."""

    def __init__(self) -> None:
        self._lock = anyio.Lock(fast_acquire=True)

    async def __aenter__(self) -> _FastLock:
        await self._lock.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()


def _frame_reader_fits() -> bool:
    buffer = h2.connection.H2Connection().incoming_buffer
    return isinstance(buffer, h2.frame_buffer.FrameBuffer) and all(
        hasattr(buffer, name) for name in ("max_frame_size", "_validate_frame_length", "_update_header_buffer")
    )


def apply() -> bool:
    """Install the adjustments once; returns whether they are active."""
    try:
        import h2.settings
        import hyperframe.frame
        from httpcore._async import http2 as httpcore_http2
    except ImportError:  # pragma: no cover - h2 is a dependency (httpx[http2])
        return False
    base = httpcore_http2.AsyncHTTP2Connection
    if getattr(base, "_banana_tuned", False):
        return True
    if not all(hasattr(base, name) for name in ("READ_NUM_BYTES", "_send_connection_init", "_write_outgoing_data")):
        log.info("httpcore internals changed; HTTP/2 runs untuned")
        return False
    frame_reader = _frame_reader_fits()
    if not frame_reader:
        log.info("h2's frame buffer changed; HTTP/2 frames are parsed by h2's own")

    class TunedHTTP2Connection(base):  # type: ignore[misc, valid-type]
        _banana_tuned = True
        READ_NUM_BYTES = READ_SIZE

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if frame_reader:
                self._h2_state.incoming_buffer = _FrameReader()
            self._read_lock = _FastLock()
            #: Tasks inside httpcore's `_receive_events` (the one reading, and any waiting for its lock); the
            #: streams waiting outside it (stream id -> future); the streams that reads brought events to,
            #: until those events are queued for them.
            self._banana_inside = 0
            self._banana_waiting: dict[int, asyncio.Future[None]] = {}
            self._banana_read_for: set[int] = set()

        async def _receive_events(self, request: object, stream_id: int | None = None) -> None:
            # httpcore reads the socket for every stream under one FIFO lock, and a stream looks at the events
            # queued for it only once it holds that lock. So a request still waiting for its response headers
            # (a whole generation) could hold the lock, blocked in a socket read, while streams queued behind
            # it had their whole body read and queued for them: they waited until something arrived for the
            # reader, ~a generation more for 1 in 5 staggered requests (bench/bench_staggered.py). Here a
            # stream queues for the lock only when nobody is in there; otherwise it waits outside, and is
            # woken when a read brings it events, or to take over the reading when everyone has left.
            while stream_id is not None and self._banana_inside:
                waiter = self._banana_waiting[stream_id] = asyncio.get_running_loop().create_future()
                try:
                    await waiter
                except BaseException:
                    # Cancelled, perhaps just after being picked to read next: another must take that turn.
                    del self._banana_waiting[stream_id]
                    self._banana_wake()
                    raise
                del self._banana_waiting[stream_id]
                if self._events.get(stream_id):
                    if not self._banana_inside:
                        self._banana_wake()  # it may have been picked to read: the others may need a reader
                    return
            self._banana_inside += 1
            try:
                await super()._receive_events(request, stream_id)
            finally:
                self._banana_inside -= 1
                self._banana_wake()

        async def _read_incoming_data(self, request: object) -> list[Any]:
            # httpcore's own version reads through AnyIOStream.read, which opens an anyio cancel scope for
            # the read timeout and a context manager for the exception mapping around every read (~2,000
            # per batch of 64 2K answers): ~10% of the event loop's CPU in that batch. The timeout is
            # redundant here (see item 7); the mapping is kept, as plain except clauses.
            stream = getattr(self._network_stream, "_stream", None)
            if not isinstance(stream, anyio.abc.ByteStream) or getattr(self, "_read_exception", None) is not None:
                return self._banana_note(await super()._read_incoming_data(request))
            try:
                try:
                    data = await stream.receive(max_bytes=self.READ_NUM_BYTES)
                except anyio.EndOfStream:
                    data = b""
                except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                    raise httpcore.ReadError(exc) from exc
                if data == b"":
                    raise httpcore.RemoteProtocolError("Server disconnected")
            except Exception as exc:
                # As httpcore does: the error is kept and raised again on every later read, and the
                # connection takes no new requests.
                self._read_exception = exc
                self._connection_error = True
                raise
            return self._banana_note(self._h2_state.receive_data(data))

        def _banana_note(self, events: list[Any]) -> list[Any]:
            self._banana_read_for.update(sid for event in events if (sid := getattr(event, "stream_id", 0)))
            return events

        def _banana_wake(self) -> None:
            """Wake the waiting streams that reads brought events to, and one more to read if nobody is.

            A stream read for stays noted until its events are queued: httpcore queues a read's events
            only after the read and may yield in between (a SETTINGS change), and a wake in that gap once
            forgot such a stream for good (found in review, reproduced with a server that lowers
            MAX_CONCURRENT_STREAMS). Looking at the noted streams only, not every waiter, matters: at 64
            streams a wake per read over all of them was ~5% of the event loop."""
            still: set[int] = set()
            for stream_id in self._banana_read_for:
                if self._events.get(stream_id):
                    waiter = self._banana_waiting.get(stream_id)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                elif stream_id in self._events:  # open, its events not queued yet
                    still.add(stream_id)
            self._banana_read_for = still
            if not self._banana_inside:
                for waiter in self._banana_waiting.values():
                    if not waiter.done():
                        waiter.set_result(None)  # to take over the reading
                        break

        async def _send_connection_init(self, request: object) -> None:
            await super()._send_connection_init(request)
            state = self._h2_state
            state.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE})
            # Accept large frames at once; until the server acknowledges, it may keep sending small ones.
            state.max_inbound_frame_size = MAX_FRAME_SIZE
            if (extra := CONNECTION_WINDOW - state.inbound_flow_control_window) > 0:
                state.increment_flow_control_window(extra)
            await self._write_outgoing_data(request)

        async def _write_outgoing_data(self, request: object) -> None:
            # httpcore calls this after every DATA event a stream consumes and after every socket read, and
            # each call takes the write lock, which with anyio yields to the event loop even when free
            # (~6,000 times per batch of 64 2K responses). With our large windows h2 almost never has
            # anything to send then (a WINDOW_UPDATE is due only once half a window is used), so return at
            # once when its outgoing buffer is empty: the lock only orders writers, and there is nothing to
            # order. Anything h2 has queued (acknowledgements, WINDOW_UPDATE, RST_STREAM) and a stored write
            # error still take httpcore's path.
            pending = getattr(self._h2_state, "_data_to_send", None)
            if pending is not None and not pending and self._write_exception is None:
                return
            await super()._write_outgoing_data(request)

    # httpcore imports the class from this module each time it opens an HTTP/2 connection.
    httpcore_http2.AsyncHTTP2Connection = TunedHTTP2Connection  # type: ignore[misc]
    hyperframe.frame.DataFrame._body_repr = _data_frame_repr  # type: ignore[method-assign]
    return True


def _data_frame_repr(self: object) -> str:
    data = getattr(self, "data", b"")
    return f"<{len(data)} bytes>"
