"""Decode a JSON answer's inline images while the answer is still arriving."""

from __future__ import annotations

import binascii

import pybase64

_WHITESPACE = b" \t\r\n"
#: How far past a "data" key the JSON text is looked at for the colon and the opening quote.
_LOOKAHEAD = 64


class InlineImageDecoder:
    """Fed a Gemini JSON body chunk by chunk, it decodes each ``inlineData.data`` base64 string on the way.

    An image answer is 99% one base64 string. Decoded as it arrives (on pybase64's vectorised path, which
    lets go of the GIL), an answer is ready a moment after its last byte, and its base64 text is never held
    whole. When many answers end together, none of them waits for the others' bodies to be parsed.

    ``finish()`` gives the JSON with each decoded string replaced by ``"#N"``, and the decoded images.
    Anything unusual in a string (an escape, a character outside the strict alphabet, missing padding)
    puts the text back as it came and leaves the rest of the body to the JSON parser, as if nothing had
    been cut: the lenient path then decodes it.
    """

    def __init__(self) -> None:
        self._skeleton: list[bytes] = []  # JSON text before the current point, with "#N" for each image
        self._scan = bytearray()  # JSON text not yet committed to the skeleton
        self._searched = 0  # where in _scan to look for the next key
        self._in_string = False  # inside an image's base64 string
        self._carry = b""  # the last 0-3 characters of the string, waiting for the rest of their quantum
        self._pieces: list[bytes] = []  # the current image, decoded so far
        self._images: list[list[bytes]] = []
        self._given_up = False  # something unusual: the rest of the body goes to the JSON parser as it is

    def feed(self, chunk: bytes) -> None:
        data, pos = chunk, 0
        while pos < len(data):
            if self._in_string:
                pos = self._string(data, pos)
                continue
            if self._given_up:
                self._scan += memoryview(data)[pos:]
                return
            # The JSON text up to a little past the next "data" key (all of it when there is none) goes to
            # _scan; a string that starts in this chunk is then decoded from the chunk itself, uncopied.
            key = data.find(b'"data"', pos)
            end = len(data) if key < 0 else min(len(data), key + _LOOKAHEAD)
            before = len(self._scan)
            self._scan += memoryview(data)[pos:end]
            start = self._string_start()
            if start is None:
                pos = end
                continue
            earlier = bytes(self._scan[start:before])  # the string's first characters, if an earlier chunk had them
            pos += max(0, start - before)
            self._scan, self._searched = bytearray(), 0
            if earlier:
                self.feed(earlier)

    @classmethod
    def whole(cls, content: bytes | bytearray) -> tuple[bytes, list[bytes]]:
        """``finish()`` for a body that is already all here (a stream event, a body read whole)."""
        decoder = cls()
        decoder.feed(bytes(content))
        return decoder.finish()

    def finish(self) -> tuple[bytes, list[bytes]]:
        """The JSON skeleton and the images, joined (call it in a worker thread: the joins copy each image).

        A body that ended inside a string gives a skeleton the JSON parser refuses."""
        skeleton = b"".join([*self._skeleton, self._scan])
        return skeleton, [b"".join(pieces) for pieces in self._images]

    def _string_start(self) -> int | None:
        """Find the next ``"data": "`` of an inline image in _scan and commit the JSON before its string;
        returns where in _scan the string's text begins, or None when there is none (yet)."""
        scan = self._scan
        while (key := scan.find(b'"data"', self._searched)) >= 0:
            colon = _skip_whitespace(scan, key + 6)
            quote = _skip_whitespace(scan, colon + 1)
            if quote >= len(scan):
                self._searched = key  # the rest has not arrived yet
                return None
            self._searched = key + 1
            if scan[colon] != ord(":") or scan[quote] != ord('"') or b"nline" not in scan[max(0, key - 100) : key]:
                continue  # some other "data" (a text that says it, another object's key)
            start = quote + 1
            self._skeleton += [bytes(scan[:start]), b"#%d" % len(self._images)]
            self._in_string, self._carry, self._pieces = True, b"", []
            return start
        self._searched = max(self._searched, len(scan) - 5)  # a key split across chunks is found next time
        return None

    def _string(self, data: bytes, pos: int) -> int:
        """Decode data[pos:] up to the string's closing quote; returns where the JSON goes on."""
        end = data.find(b'"', pos)
        stop = len(data) if end < 0 else end
        text = memoryview(data)[pos:stop]
        if data.find(b"\\", pos, stop) >= 0 or not self._decode(text):
            self._give_up(bytes(text))
            return stop
        if end >= 0:
            if self._carry:  # an unpadded string: the JSON parser and the lenient decoder can have it
                self._give_up(b"")
                return stop
            self._images.append(self._pieces)
            self._in_string, self._pieces = False, []
        return stop

    def _decode(self, text: memoryview) -> bool:
        """Decode the whole quanta of carry + text and keep the rest as the carry; False (and nothing
        changed) when they are not strict base64."""
        carry, pieces = self._carry, []
        try:
            if carry:
                head = carry + bytes(text[: 4 - len(carry)])
                if len(head) < 4:
                    self._carry = head
                    return True
                pieces.append(pybase64.b64decode(head, validate=True))
                text = text[4 - len(carry) :]
            whole = len(text) - len(text) % 4
            if whole:
                pieces.append(pybase64.b64decode(text[:whole], validate=True))
        except (binascii.Error, ValueError):
            return False
        self._pieces += pieces
        self._carry = bytes(text[whole:])
        return True

    def _give_up(self, undecoded: bytes) -> None:
        """Put the current string back as it came (the decoded part re-encoded: whole quanta of strict
        base64 encode back to exactly their text) and stop cutting."""
        self._skeleton.pop()  # the "#N"
        self._scan = bytearray(pybase64.b64encode(b"".join(self._pieces)) + self._carry + undecoded)
        self._in_string, self._carry, self._pieces, self._given_up = False, b"", [], True


def _skip_whitespace(data: bytearray, pos: int) -> int:
    while pos < len(data) and data[pos] in _WHITESPACE:
        pos += 1
    return pos
