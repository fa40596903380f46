"""Fitting an image under Discord's upload limit. Pure Pillow; call it off the event loop."""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass

from PIL import Image

#: Room for the multipart envelope and the JSON payload next to the file.
ENVELOPE_BYTES = 64 * 1024
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


@dataclass(frozen=True)
class Upload:
    data: bytes
    mime: str
    width: int
    height: int
    #: None when the original is sent; 'reencoded' or 'downscaled' when it had to shrink.
    change: str | None = None

    @property
    def extension(self) -> str:
        return _EXTENSIONS.get(self.mime, "png")


def fit_upload(data: bytes, mime: str, width: int, height: int, limit: int) -> Upload:
    """The image as is if it fits; else a high-quality JPEG; else downscaled JPEGs until it fits."""
    budget = max(limit - ENVELOPE_BYTES, 64 * 1024)
    if len(data) <= budget:
        return Upload(data, mime, width, height)
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        # JPEG has no alpha; generated images are opaque anyway. An RGB image needs no converted copy.
        image = opened if opened.mode == "RGB" else opened.convert("RGB")
    for quality in (92, 85):  # full size first: a detailed 4K image can need the lower quality to fit
        encoded = _jpeg(image, quality=quality)
        if len(encoded) <= budget:
            return Upload(encoded, "image/jpeg", image.width, image.height, "reencoded")
    scale = 1.0
    while True:
        # Bytes shrink roughly with the pixel count: aim straight for the budget, then step down.
        scale *= min(0.9, (budget / len(encoded)) ** 0.5)
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        smaller = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
        encoded = _jpeg(smaller, quality=90)
        if len(encoded) <= budget or size == (1, 1):
            return Upload(encoded, "image/jpeg", size[0], size[1], "downscaled")


def _jpeg(image: Image.Image, *, quality: int) -> bytes:
    # Into a real file, not a BytesIO: Pillow then encodes in one C call that releases the GIL, where a
    # BytesIO makes it encode tile by tile holding the GIL, and the bot's event loop stalls for the whole
    # 4K encode (bench/README.md, "What blocks the loop").
    with tempfile.TemporaryFile() as out:
        # No optimize=True: on 4K images it overflows Pillow's encoder buffer ("broken data stream").
        image.save(out, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
        out.seek(0)
        return out.read()
