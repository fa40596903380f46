"""Server-sent events (the ``text/event-stream`` format) from a body that arrives in arbitrary chunks.

Only what a streaming API response needs: ``data:`` lines joined into one payload per event, events
ended by a blank line, lines ended by CRLF, LF or CR, comments and other fields ignored. An event may be
split across any number of reads, and one ``data:`` line may be many megabytes (a whole base64 image), so
the decoder never rescans bytes it has already searched.
"""

from __future__ import annotations


class SSEDecoder:
    def __init__(self) -> None:
        self._buffer = bytearray()
        #: Where to resume looking for a line end: the bytes before it hold none.
        self._scan = 0
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """Take the next chunk of the body; returns the payloads of the events it completed."""
        self._buffer += chunk
        return self._take_lines(final=False)

    def close(self) -> list[bytes]:
        """The body has ended: the last event need not be followed by a blank line."""
        events = self._take_lines(final=True)
        if self._buffer:
            self._line(bytes(self._buffer), events)
            self._buffer.clear()
        self._line(b"", events)
        return events

    def _take_lines(self, *, final: bool) -> list[bytes]:
        events: list[bytes] = []
        buffer = self._buffer
        start = self._scan
        # bytes.find is a memchr: far faster than a regex over a multi-MB line. Each position is searched
        # once per call, and a character that is absent stays absent (-1) for the rest of the buffer.
        next_lf, next_cr = buffer.find(b"\n", start), buffer.find(b"\r", start)
        start = 0
        with memoryview(buffer) as view:
            while next_lf >= 0 or next_cr >= 0:
                end = next_lf if next_cr < 0 or 0 <= next_lf < next_cr else next_cr
                after = end + 1
                if end == next_cr:
                    if after == len(buffer) and not final:
                        break  # a CR at the end of what we have: its LF may come with the next chunk
                    if after == next_lf:
                        after += 1  # CRLF
                self._line(view[start:end], events)
                start = after
                if 0 <= next_lf < start:
                    next_lf = buffer.find(b"\n", start)
                if 0 <= next_cr < start:
                    next_cr = buffer.find(b"\r", start)
        del buffer[:start]
        # What is left holds no line end, except perhaps a CR at its very end: look there again next time.
        self._scan = len(buffer) - 1 if buffer.endswith(b"\r") else len(buffer)
        return events

    def _line(self, line: memoryview | bytes, events: list[bytes]) -> None:
        if not line:  # a blank line dispatches the event
            if self._data:
                events.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
                self._data.clear()
            return
        # Only data lines matter (comments and other fields are ignored); a multi-MB one is copied once.
        if line[:5] == b"data:":
            self._data.append(bytes(line[6:] if line[5:6] == b" " else line[5:]))
