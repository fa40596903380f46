"""Wire helpers: tolerant base64, snake->camel keys, multipart parsing, and replies built from segments."""

from __future__ import annotations

import binascii
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson
import pybase64

_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/=\-_]")
_URLSAFE = bytes.maketrans(b"-_", b"+/")


def decode_b64(text: str | bytes) -> bytes:
    """Decode standard or URL-safe base64, with or without padding. Raises ValueError on garbage."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    raw = raw.strip()
    if _B64_JUNK.search(raw):
        raise ValueError("invalid base64 character")
    raw = raw.translate(_URLSAFE).rstrip(b"=")
    if len(raw) % 4 == 1:
        raise ValueError("invalid base64 length")
    raw += b"=" * (-len(raw) % 4)
    try:
        return pybase64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from exc


def snake_to_camel(name: str) -> str:
    if "_" not in name:
        return name
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def camelize(obj: Any) -> Any:
    """Proto-JSON accepts both spellings: normalise every dict key to lowerCamel."""
    if isinstance(obj, dict):
        return {snake_to_camel(k) if isinstance(k, str) else k: camelize(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [camelize(v) for v in obj]
    return obj


@dataclass(slots=True)
class Multipart:
    form: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[tuple[str, str, bytes]]] = field(default_factory=dict)


_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)="?([^";]*)"?')


def _header_params(value: str) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2) for m in _PARAM.finditer(value)}


def parse_multipart(body: bytes, content_type: str) -> Multipart:
    """Parse multipart/form-data into text fields and (filename, content_type, bytes) files."""
    boundary = _header_params(content_type).get("boundary")
    if not boundary:
        raise ValueError("multipart body without boundary")
    delim = b"--" + boundary.encode("latin-1")
    out = Multipart()
    chunks = body.split(delim)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            header, _, value = line.partition(":")
            headers[header.strip().lower()] = value.strip()
        disp = _header_params(headers.get("content-disposition", ""))
        field_name = disp.get("name")
        if field_name is None:
            continue
        if "filename" in disp:
            ctype = headers.get("content-type", "application/octet-stream")
            out.files.setdefault(field_name, []).append((disp["filename"], ctype, data))
        else:
            out.form.setdefault(field_name, []).append(data.decode("utf-8", "replace"))
    return out


@dataclass(slots=True)
class Reply:
    """An HTTP answer whose body is a list of segments (big base64 blobs are never re-serialised)."""

    status: int
    headers: list[tuple[str, str]]
    segments: list[bytes]

    @property
    def length(self) -> int:
        return sum(len(s) for s in self.segments)


@dataclass(slots=True)
class StreamReply:
    """A streamed 200 answer (spec A5): the headers go out at once, then each event at its moment.

    ``events`` holds (share of the stream's duration, the event's JSON as segments). The server sets
    ``seconds`` (the latency, plus any ``Fault.slow``) and ``fault`` (which may split or cut the stream)."""

    status: int
    headers: list[tuple[str, str]]
    events: list[tuple[float, list[bytes]]]
    sse: bool = True  # False: the JSON-array form (``streamGenerateContent`` without ``?alt=sse``)
    seconds: float = 0.0
    fault: Any = None

    def framed(self, lf_only: bool = False) -> list[tuple[float, bytes]]:
        """Each event as written: ``data: {...}\\r\\n\\r\\n`` (SSE), or a piece of one JSON array."""
        if self.sse:
            end = b"\n\n" if lf_only else b"\r\n\r\n"
            return [(at, b"".join([b"data: ", *segs, end])) for at, segs in self.events]
        last = len(self.events) - 1
        return [
            (at, b"".join([b"[" if i == 0 else b",\r\n", *segs, b"]" if i == last else b""]))
            for i, (at, segs) in enumerate(self.events)
        ]


class Blobs:
    """Stand-ins for big base64 strings inside a JSON document, swapped in after serialisation."""

    def __init__(self) -> None:
        self._tag = "@@blob-" + secrets.token_hex(6) + "-"
        self._items: list[bytes] = []

    def add(self, *parts: bytes) -> str:
        """Register ASCII byte strings (e.g. a data-URI head and the base64); returns their tokens."""
        tokens: list[str] = []
        for part in parts:
            self._items.append(part)
            tokens.append(f"{self._tag}{len(self._items) - 1}@@")
        return "".join(tokens)

    def dumps(self, obj: Any) -> list[bytes]:
        text = orjson.dumps(obj)
        if not self._items:
            return [text]
        tag = self._tag.encode()
        segments: list[bytes] = []
        pieces = text.split(tag)
        segments.append(pieces[0])
        for piece in pieces[1:]:
            index, _, rest = piece.partition(b"@@")
            segments.append(self._items[int(index)])
            if rest:
                segments.append(rest)
        return segments


def json_reply(
    status: int,
    obj: Any,
    headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    blobs: Blobs | None = None,
    content_type: str = "application/json; charset=UTF-8",
) -> Reply:
    segments = blobs.dumps(obj) if blobs is not None else [orjson.dumps(obj)]
    return Reply(status, [("content-type", content_type), *headers], segments)
