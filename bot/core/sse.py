"""Server-sent events (the ``text/event-stream`` format) from a body that arrives in arbitrary chunks.

Only what a streaming API response needs: ``data:`` lines joined into one payload per event, events
ended by a blank line, lines ended by CRLF, LF or CR, comments and other fields ignored. An event may be
split across any number of reads, and one ``data:`` line may be many megabytes (a whole base64 image), so
the decoder never rescans bytes it has already searched.
"""

from __future__ import annotations

import re

_LINE_END = re.compile(rb"\r\n|\r|\n")


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
        start = 0
        while (match := _LINE_END.search(buffer, max(start, self._scan))) is not None:
            if match.group() == b"\r" and match.end() == len(buffer) and not final:
                break  # a CR at the end of what we have: its LF may come with the next chunk
            self._line(bytes(buffer[start : match.start()]), events)
            start = match.end()
        del buffer[:start]
        # What is left holds no line end, except perhaps a CR at its very end: look there again next time.
        self._scan = len(buffer) - 1 if buffer.endswith(b"\r") else len(buffer)
        return events

    def _line(self, line: bytes, events: list[bytes]) -> None:
        if not line:  # a blank line dispatches the event
            if self._data:
                events.append(b"\n".join(self._data))
                self._data.clear()
            return
        name, _, value = line.partition(b":")
        if name == b"data":  # comments (":...") and other fields are ignored
            self._data.append(value[1:] if value.startswith(b" ") else value)
