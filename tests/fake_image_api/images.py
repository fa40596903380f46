"""Generated output images, cached per (size, payload, variant, format).

"small" images are a flat colour (picked by the caller from the prompt hash) and compress to a few KB.
"realistic" PNGs are grey noise written with a hand-rolled encoder (filter 0, Huffman-only deflate), which
lands at ~1.4 bytes per pixel like real model output (a 2K 16:9 PNG ~6 MB, a 4K one ~23 MB) and takes
~0.1 s (2K) / ~0.5 s (4K) to build once.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

from PIL import Image

Payload = Literal["small", "realistic"]
ImageFormat = Literal["png", "jpeg", "webp"]

MIME: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

PALETTE: tuple[tuple[int, int, int], ...] = (
    (231, 196, 60),  # banana
    (70, 130, 180),
    (205, 92, 92),
    (60, 179, 113),
    (147, 112, 219),
    (255, 160, 122),
    (32, 178, 170),
    (119, 136, 153),
)

# Byte -> one of 12 grey levels: ~3.6 bits of entropy per byte, which Huffman-only deflate turns into
# ~1.4 bytes per RGB pixel.
_NOISE_TABLE = bytes(72 + (b % 12) * 9 for b in range(256))

_CACHE_BUDGET = 1 << 30  # bytes kept across all cached images and their base64 texts

_cache: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
_cache_bytes = 0
_guard = threading.Lock()
_key_locks: dict[tuple[object, ...], threading.Lock] = {}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _noise_png(width: int, height: int) -> bytes:
    row = width * 3
    raw = memoryview(os.urandom(row * height).translate(_NOISE_TABLE))
    comp = zlib.compressobj(6, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    parts: list[bytes] = []
    for y in range(height):
        parts.append(comp.compress(b"\x00"))
        parts.append(comp.compress(raw[y * row : (y + 1) * row]))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def _encode(img: Image.Image, fmt: ImageFormat) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, "PNG", compress_level=6)
    elif fmt == "jpeg":
        img.save(buf, "JPEG", quality=90)
    else:
        img.save(buf, "WEBP", quality=80, method=0)
    return buf.getvalue()


def _build(width: int, height: int, payload: Payload, variant: int, fmt: ImageFormat) -> bytes:
    if payload == "realistic":
        if fmt == "png":
            return _noise_png(width, height)
        raw = os.urandom(width * height * 3).translate(_NOISE_TABLE)
        return _encode(Image.frombytes("RGB", (width, height), raw), fmt)
    colour = PALETTE[variant % len(PALETTE)]
    return _encode(Image.new("RGB", (width, height), colour), fmt)


def _cached(key: tuple[object, ...], build: Callable[[], bytes]) -> bytes:
    global _cache_bytes
    with _guard:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:
        with _guard:
            hit = _cache.get(key)
            if hit is not None:
                return hit
        value = build()
        with _guard:
            _cache[key] = value
            _cache_bytes += len(value)
            while _cache_bytes > _CACHE_BUDGET and len(_cache) > 1:
                _, old = _cache.popitem(last=False)
                _cache_bytes -= len(old)
            _key_locks.pop(key, None)
        return value


def _norm_variant(payload: Payload, variant: int) -> int:
    return 0 if payload == "realistic" else variant % len(PALETTE)


def image_bytes(
    width: int, height: int, payload: Payload = "small", variant: int = 0, fmt: ImageFormat = "png"
) -> bytes:
    """Encoded image of exactly width x height (blocking; cached)."""
    v = _norm_variant(payload, variant)
    return _cached(("img", width, height, payload, v, fmt), lambda: _build(width, height, payload, v, fmt))


def image_b64(width: int, height: int, payload: Payload = "small", variant: int = 0, fmt: ImageFormat = "png") -> bytes:
    """Standard-alphabet, padded base64 of :func:`image_bytes`, as ASCII bytes (blocking; cached)."""
    v = _norm_variant(payload, variant)
    return _cached(
        ("b64", width, height, payload, v, fmt),
        lambda: base64.b64encode(image_bytes(width, height, payload, v, fmt)),
    )


def _peek(key: tuple[object, ...]) -> bytes | None:
    with _guard:
        return _cache.get(key)


async def aimage_bytes(
    width: int, height: int, payload: Payload = "small", variant: int = 0, fmt: ImageFormat = "png"
) -> bytes:
    """Like :func:`image_bytes`, building in a worker thread on a cache miss."""
    hit = _peek(("img", width, height, payload, _norm_variant(payload, variant), fmt))
    if hit is not None:
        return hit
    return await asyncio.to_thread(image_bytes, width, height, payload, variant, fmt)


async def aimage_b64(
    width: int, height: int, payload: Payload = "small", variant: int = 0, fmt: ImageFormat = "png"
) -> bytes:
    """Like :func:`image_b64`, building in a worker thread on a cache miss."""
    hit = _peek(("b64", width, height, payload, _norm_variant(payload, variant), fmt))
    if hit is not None:
        return hit
    return await asyncio.to_thread(image_b64, width, height, payload, variant, fmt)


def sniff_mime(data: bytes) -> str | None:
    """MIME type from magic bytes, for the image formats the APIs deal in."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"):
            return "image/heic"
        if brand in (b"mif1", b"msf1", b"heif"):
            return "image/heif"
    return None


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header only; None when Pillow can't tell (e.g. HEIC)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        return None
