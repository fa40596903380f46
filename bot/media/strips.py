"""The thumbnail strip of /character history: one row per version, its label and its reference images, as one
JPEG. Rows are as the caller lists them (newest version first); an image no longer stored is a crossed grey cell.

Pure Pillow, no Discord; CPU-bound (it decodes every image once), so callers run it on the image threads.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from bot.media.charts import builtin_typeface, default_fonts, find_typeface

THUMB = 96
GAP = 6
#: A version's newest references shown; the model is sent the newest first when room is short, too.
MAX_THUMBS = 8
LABEL_PIXELS = 26
BACKGROUND = (43, 45, 49)  # an embed's background in Discord's dark theme
CELL = (54, 57, 63)
TEXT = (233, 235, 237)
MISSING_MARK = (237, 66, 69)


@dataclass(frozen=True)
class StripRow:
    label: str  # e.g. "v5", in the member's language
    fallback: str  # drawn instead when the font lacks a letter of `label`, e.g. "5"
    keys: Sequence[str]  # the version's references, oldest first


@dataclass(frozen=True)
class Layout:
    """Where things are, for callers and tests: the label column's width and a row's height."""

    label_width: int
    row_height: int = THUMB + GAP

    def cell(self, row: int, column: int) -> tuple[int, int]:
        """The top-left corner of a thumbnail's cell."""
        return GAP + self.label_width + column * (THUMB + GAP), GAP + row * self.row_height


def compose_strip(
    rows: Sequence[StripRow], images: Mapping[str, bytes | None], *, language: str = "en-US"
) -> tuple[bytes, Layout]:
    """The strip as a JPEG. `images`: each key's bytes, None when it is no longer stored."""
    font = _font(language, [row.label for row in rows])
    labels = [row.label if font.has_all(row.label) else row.fallback for row in rows]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widest = max((measure.textlength(label, font=font.face) for label in labels), default=0.0)
    layout = Layout(label_width=int(widest) + 2 * GAP)
    columns = max((min(len(row.keys), MAX_THUMBS) for row in rows), default=0)
    width = GAP + layout.label_width + max(columns, 1) * (THUMB + GAP)
    height = GAP + max(len(rows), 1) * layout.row_height
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    thumbs: dict[str, Image.Image | None] = {}
    for index, (row, label) in enumerate(zip(rows, labels, strict=True)):
        top = GAP + index * layout.row_height
        draw.text((GAP, top + THUMB // 2), label, fill=TEXT, font=font.face, anchor="lm")
        for column, key in enumerate(list(row.keys)[-MAX_THUMBS:]):
            if key not in thumbs:
                data = images.get(key)
                thumbs[key] = _thumbnail(data) if data is not None else None
            x, y = layout.cell(index, column)
            _paste(canvas, draw, thumbs[key], x, y)
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=85)
    return out.getvalue(), layout


@dataclass(frozen=True)
class _Font:
    face: ImageFont.FreeTypeFont | ImageFont.ImageFont
    codepoints: frozenset[int] | None  # None: not known, assume everything

    def has_all(self, text: str) -> bool:
        return self.codepoints is None or all(ord(c) in self.codepoints for c in text)


def _font(language: str, labels: Sequence[str]) -> _Font:
    # Noto Sans CJK (as the /usage chart has it) draws every language's label; Pillow's font only Latin ones.
    typeface = find_typeface(default_fonts(), language) or builtin_typeface()
    wanted = {ord(c) for label in labels for c in label} | {ord(c) for c in "0123456789"}
    have = frozenset(c for c in wanted if c in typeface.codepoints)
    if typeface.path is None:
        return _Font(ImageFont.load_default(LABEL_PIXELS), have)
    # A face of its own per strip: FreeType faces must not be shared between threads.
    face = ImageFont.truetype(
        str(typeface.path), LABEL_PIXELS, index=typeface.index, layout_engine=ImageFont.Layout.BASIC
    )
    return _Font(face, have)


def _thumbnail(data: bytes) -> Image.Image | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (THUMB * 2, THUMB * 2))  # JPEGs decode at a fraction of their size
            img.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS, reducing_gap=2.0)
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _paste(canvas: Image.Image, draw: ImageDraw.ImageDraw, thumb: Image.Image | None, x: int, y: int) -> None:
    draw.rectangle((x, y, x + THUMB - 1, y + THUMB - 1), fill=CELL)
    if thumb is not None:
        canvas.paste(thumb, (x + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2))
        return
    inset, width = THUMB // 3, 4
    draw.line((x + inset, y + inset, x + THUMB - inset, y + THUMB - inset), fill=MISSING_MARK, width=width)
    draw.line((x + inset, y + THUMB - inset, x + THUMB - inset, y + inset), fill=MISSING_MARK, width=width)
