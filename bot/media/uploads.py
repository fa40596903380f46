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


#: JPEG settings tried at full size, best first: 4:4:4 chroma at high quality, then 4:2:0.
_RUNGS = ((92, 0), (85, 2))
#: The share of the rows sampled to predict a rung's size, in this many bands spread over the image.
_SAMPLE_SHARE, _SAMPLE_BANDS = 1 / 16, 4


def fit_upload(data: bytes, mime: str, width: int, height: int, limit: int) -> Upload:
    """The image as is if it fits; else a high-quality JPEG; else downscaled JPEGs until it fits."""
    budget = max(limit - ENVELOPE_BYTES, 64 * 1024)
    if len(data) <= budget:
        return Upload(data, mime, width, height)
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        # JPEG has no alpha; generated images are opaque anyway. An RGB image needs no converted copy.
        image = opened if opened.mode == "RGB" else opened.convert("RGB")
    encoded = b""
    for quality, subsampling in _rungs_worth_trying(image, budget):
        encoded = _jpeg(image, quality=quality, subsampling=subsampling)
        if len(encoded) <= budget:
            return Upload(encoded, "image/jpeg", image.width, image.height, "reencoded")
    scale = 1.0
    while True:
        # Bytes shrink roughly with the pixel count: aim straight for the budget, then step down.
        scale *= min(0.9, (budget / len(encoded)) ** 0.5)
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        smaller = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
        encoded = _jpeg(smaller, quality=90, subsampling=2)
        if len(encoded) <= budget or size == (1, 1):
            return Upload(encoded, "image/jpeg", size[0], size[1], "downscaled")


def _rungs_worth_trying(image: Image.Image, budget: int) -> list[tuple[int, int]]:
    """The full-size rungs whose JPEG may fit, judged from a sample of the rows; the last one always.

    A detailed 4K image (fine texture, film grain) comes out larger as a q92 4:4:4 JPEG than as its PNG,
    and encoding it whole only to throw it away cost ~200 ms of a 4K job; the sample costs a sixteenth."""
    sample = _sample_rows(image)
    worth: list[tuple[int, int]] = []
    for quality, subsampling in _RUNGS[:-1]:
        predicted = len(_jpeg(sample, quality=quality, subsampling=subsampling)) * image.height / sample.height
        if predicted <= budget * 1.1:  # near the line: try it; the real encode decides
            worth.append((quality, subsampling))
    return [*worth, _RUNGS[-1]]


def _sample_rows(image: Image.Image) -> Image.Image:
    band = max(16, int(image.height * _SAMPLE_SHARE / _SAMPLE_BANDS) // 16 * 16)  # whole JPEG blocks
    if band * _SAMPLE_BANDS >= image.height:
        return image
    sample = Image.new("RGB", (image.width, band * _SAMPLE_BANDS))
    step = image.height // _SAMPLE_BANDS
    for index in range(_SAMPLE_BANDS):
        top = index * step + (step - band) // 2
        sample.paste(image.crop((0, top, image.width, top + band)), (0, index * band))
    return sample


def _jpeg(image: Image.Image, *, quality: int, subsampling: int) -> bytes:
    # Into a real file, not a BytesIO: Pillow then encodes in one C call that releases the GIL, where a
    # BytesIO makes it encode tile by tile holding the GIL, and the bot's event loop stalls for the whole
    # 4K encode.
    with tempfile.TemporaryFile() as out:
        # No optimize=True: on 4K images it overflows Pillow's encoder buffer ("broken data stream").
        image.save(out, "JPEG", quality=quality, subsampling=subsampling)
        out.seek(0)
        return out.read()
