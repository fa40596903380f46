"""Fitting a result under Discord's upload limit (bot/media/uploads.py): pure Pillow, so tested directly."""

from __future__ import annotations

import io
import os
from typing import IO

import pytest
from PIL import Image, ImageChops

from bot.media.uploads import ENVELOPE_BYTES, fit_upload

pytestmark = pytest.mark.timeout(60)


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def noise(width: int, height: int) -> Image.Image:
    """Full-range noise: the worst case for JPEG (the fake API's realistic images are like this)."""
    return Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))


def photo_like(width: int, height: int) -> Image.Image:
    """A smooth picture with fine grain, as a generated photo is: JPEG squeezes it well."""
    channels = []
    for turn in range(3):
        gradient = Image.linear_gradient("L").resize((width, height)).rotate(90 * turn)
        channels.append(ImageChops.add(gradient, Image.effect_noise((width, height), 3), offset=-128))
    return Image.merge("RGB", channels)


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Every JPEG encode Pillow makes: (rows, quality, subsampling). Counted in Pillow's registry of save
    handlers (Image.register_save), so every JPEG is seen however bot.uploads asks Pillow for it."""
    made: list[tuple[int, int, int]] = []
    Image.preinit()  # registers the JPEG handler
    real = Image.SAVE["JPEG"]

    def counting(image: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
        made.append((image.height, int(image.encoderinfo["quality"]), int(image.encoderinfo["subsampling"])))
        real(image, fp, filename)

    monkeypatch.setitem(Image.SAVE, "JPEG", counting)
    return made


def test_an_image_under_the_limit_is_sent_as_it_is(encodes: list[tuple[int, int, int]]) -> None:
    data = png(photo_like(256, 256))
    upload = fit_upload(data, "image/png", 256, 256, limit=len(data) + ENVELOPE_BYTES)
    assert upload.data == data and upload.mime == "image/png" and upload.change is None
    assert encodes == []


def test_a_detailed_image_skips_the_high_quality_encode_its_sample_says_cannot_fit(
    encodes: list[tuple[int, int, int]],
) -> None:
    data = png(noise(1024, 1024))  # ~3 MB; a q92 4:4:4 JPEG of noise is as large, 4:2:0 q85 about a third
    limit = len(data) // 2 + ENVELOPE_BYTES
    upload = fit_upload(data, "image/png", 1024, 1024, limit)
    assert upload.mime == "image/jpeg" and upload.change == "reencoded"
    assert len(upload.data) <= limit - ENVELOPE_BYTES
    with Image.open(io.BytesIO(upload.data)) as image:
        assert image.size == (1024, 1024)
    full_size = [(q, s) for rows, q, s in encodes if rows == 1024]
    assert full_size == [(85, 2)]  # the 4:4:4 one was judged from a 64-row sample, never encoded whole
    assert [rows for rows, _, _ in encodes if rows != 1024] == [64]


def test_a_photo_like_image_keeps_the_high_quality_encode(encodes: list[tuple[int, int, int]]) -> None:
    data = png(photo_like(1024, 1024))
    upload = fit_upload(data, "image/png", 1024, 1024, limit=len(data) // 2 + ENVELOPE_BYTES)
    assert upload.change == "reencoded"
    assert [(q, s) for rows, q, s in encodes if rows == 1024] == [(92, 0)]


def test_when_no_full_size_jpeg_fits_the_image_is_downscaled(encodes: list[tuple[int, int, int]]) -> None:
    data = png(noise(1024, 1024))
    limit = 300_000 + ENVELOPE_BYTES  # far under even the q85 JPEG
    upload = fit_upload(data, "image/png", 1024, 1024, limit)
    assert upload.change == "downscaled" and len(upload.data) <= limit - ENVELOPE_BYTES
    with Image.open(io.BytesIO(upload.data)) as image:
        assert image.size == (upload.width, upload.height) and upload.width < 1024
        assert abs(upload.width / upload.height - 1) < 0.01  # the aspect ratio is kept
