"""Make httpx's HTTP/2 cheap enough for multi-megabyte image responses.

httpx speaks HTTP/2 through httpcore and h2, in pure Python, one DATA frame at a time. For an 8 MB image
response that is ~500 frames of 16 KiB, each parsed, turned into an event and acknowledged, and h2 also
builds a hex ``repr`` of every received frame for a trace log it rarely writes. Measured on a 2K response
(``bench/README.md``), HTTP/2 cost about twice the client CPU of HTTP/1.1. Three process-wide adjustments
bring it below the official SDK's HTTP/1.1 cost:

1. read 256 KiB per socket read instead of 64 KiB (fewer trips through httpcore's locks and h2);
2. advertise SETTINGS_MAX_FRAME_SIZE = 256 KiB, so servers that honour it send 16x fewer frames, and open
   a 1 GiB connection window: with large frames, 64 concurrent streams filled httpcore's 16 MiB window
   with one frame each and stalled (httpcore acknowledges data only as each stream's reader consumes it);
3. a DATA frame's ``repr`` names its length instead of hexlifying the payload.

They touch library internals, so each is applied only when the internals look as expected (pinned
versions in pyproject.toml; ``tests/test_core_units.py`` checks they are active). If a future release
changes them, HTTP/2 still works, just at the libraries' own speed.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
#: The largest DATA frame we invite servers to send; 16 KiB is the protocol's default.
MAX_FRAME_SIZE = 256 * 1024
#: Connection-level receive window (httpcore opens 16 MiB; the protocol's default is 64 KiB).
CONNECTION_WINDOW = 1 << 30


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
    if not (hasattr(base, "READ_NUM_BYTES") and hasattr(base, "_send_connection_init")):
        log.info("httpcore internals changed; HTTP/2 runs untuned")
        return False

    class TunedHTTP2Connection(base):  # type: ignore[misc, valid-type]
        _banana_tuned = True
        READ_NUM_BYTES = READ_SIZE

        async def _send_connection_init(self, request: object) -> None:
            await super()._send_connection_init(request)
            state = self._h2_state
            state.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE})
            # Accept large frames at once; until the server acknowledges, it may keep sending small ones.
            state.max_inbound_frame_size = MAX_FRAME_SIZE
            if (extra := CONNECTION_WINDOW - state.inbound_flow_control_window) > 0:
                state.increment_flow_control_window(extra)
            await self._write_outgoing_data(request)

    # httpcore imports the class from this module each time it opens an HTTP/2 connection.
    httpcore_http2.AsyncHTTP2Connection = TunedHTTP2Connection  # type: ignore[misc]
    hyperframe.frame.DataFrame._body_repr = _data_frame_repr  # type: ignore[method-assign]
    return True


def _data_frame_repr(self: object) -> str:
    data = getattr(self, "data", b"")
    return f"<{len(data)} bytes>"
