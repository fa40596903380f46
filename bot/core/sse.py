"""Server-sent events (the ``text/event-stream`` format) from a body that arrives in arbitrary chunks.

Only what a streaming API response needs: ``data:`` lines joined into one payload per event, events
ended by a blank line, lines ended by CRLF, LF or CR, comments and other fields ignored. An event may be
split across any number of reads, and one ``data:`` line may be many megabytes (a whole base64 image), so
the decoder never rescans bytes it has already searched.
"""

from __future__ import annotations


class SSEDecoder:
    def __init__(self) -> None:
        #: The line being received: the pieces of it that came in earlier chunks (none holds a line end).
        self._pieces: list[bytes] = []
        #: The last chunk ended with a CR: an LF at the start of the next one completes that CRLF.
        self._after_cr = False
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """Take the next chunk of the body; returns the payloads of the events it completed."""
        events: list[bytes] = []
        if not chunk:
            return events
        start = 0
        if self._after_cr:
            self._after_cr = False
            if chunk[:1] == b"\n":
                start = 1
        # bytes.find is a memchr: far faster than a regex over a multi-MB line. Each chunk is searched once,
        # and a character that is absent stays absent (-1) for the rest of the chunk.
        next_lf, next_cr = chunk.find(b"\n", start), chunk.find(b"\r", start)
        with memoryview(chunk) as view:
            while next_lf >= 0 or next_cr >= 0:
                end = next_lf if next_cr < 0 or 0 <= next_lf < next_cr else next_cr
                after = end + 1
                if end == next_cr:
                    if after == len(chunk):
                        self._after_cr = True  # its LF, if any, comes with the next chunk
                    elif after == next_lf:
                        after += 1  # CRLF
                self._end_line(view[start:end], events)
                start = after
                if 0 <= next_lf < start:
                    next_lf = chunk.find(b"\n", start)
                if 0 <= next_cr < start:
                    next_cr = chunk.find(b"\r", start)
        if start < len(chunk):
            # Kept as a piece, not appended to a growing buffer: a multi-MB line (a whole base64 image) in
            # 256 KiB reads made that buffer reallocate, and often move, dozens of times per image.
            self._pieces.append(chunk[start:] if start else chunk)
        return events

    def close(self) -> list[bytes]:
        """The body has ended: the last event need not be followed by a blank line."""
        events: list[bytes] = []
        if self._pieces:
            self._end_line(b"", events)
        self._line(b"", events)
        return events

    def _end_line(self, tail: memoryview | bytes, events: list[bytes]) -> None:
        if not self._pieces:
            self._line(tail, events)
            return
        pieces, self._pieces = self._pieces, []
        pieces.append(bytes(tail))
        if pieces[0][:5] == b"data:" and len(pieces[0]) > 5:
            # Strip the field name from the first piece, so that the line is copied once, by the join.
            pieces[0] = pieces[0][6:] if pieces[0][5:6] == b" " else pieces[0][5:]
            self._data.append(b"".join(pieces))
            return
        self._line(b"".join(pieces), events)

    def _line(self, line: memoryview | bytes, events: list[bytes]) -> None:
        if not line:  # a blank line dispatches the event
            if self._data:
                events.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
                self._data.clear()
            return
        # Only data lines matter (comments and other fields are ignored).
        if line[:5] == b"data:":
            self._data.append(bytes(line[6:] if line[5:6] == b" " else line[5:]))
