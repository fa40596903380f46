"""Grid images: composing four tiles into one 2x2 preview, and cutting a 2x2 image into four tiles.

Pure Pillow, no Discord; every function here is CPU-bound, so callers run it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

#: The preview's longest side: big enough to judge four variations, small enough to stay far under any
#: upload limit as a JPEG (~1-2 MB) and to load quickly on phones.
PREVIEW_SIDE = 2048
GAP = 8
BACKGROUND = (32, 34, 37)  # Discord's dark theme, so the gaps and failed tiles blend in
FAILED_TILE = (54, 57, 63)
FAILED_MARK = (237, 66, 69)

#: Sliced mode: one request for four variations in one image. Less reliable on some models (the panels
#: can come back uneven or merged), which is why it's a setting and not the default.
SLICED_PROMPT = (
    "Create one image divided into a 2x2 grid of four equal panels with no borders, gaps or text. "
    "Each panel is a different variation of the same request; vary composition, pose and details. "
    "Request: {prompt}"
)
#: V buttons: four new variations of one tile.
VARIATION_PROMPT = (
    "Create a variation of this image: keep the subject, style and overall composition, and change the "
    "details. Original request: {prompt}"
)


def compose_preview(tiles: list[bytes | None], *, side: int = PREVIEW_SIDE) -> bytes:
    """A 2x2 JPEG of the tiles (in reading order); a failed tile (None) is drawn as a grey panel with a cross."""
    opened = [_open_rgb(t) if t is not None else None for t in tiles]
    sample = next((img for img in opened if img is not None), None)
    aspect = sample.width / sample.height if sample is not None else 1.0
    cell_w = (side - GAP) // 2 if aspect >= 1 else int(((side - GAP) // 2) * aspect)
    cell_h = int(cell_w / aspect)
    canvas = Image.new("RGB", (cell_w * 2 + GAP, cell_h * 2 + GAP), BACKGROUND)
    for index, img in enumerate(opened):
        x, y = (index % 2) * (cell_w + GAP), (index // 2) * (cell_h + GAP)
        if img is None:
            _draw_failed(canvas, x, y, cell_w, cell_h)
        else:
            canvas.paste(img.resize((cell_w, cell_h), Image.Resampling.LANCZOS), (x, y))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=88)
    return out.getvalue()


def slice_grid(data: bytes) -> list[bytes]:
    """Cut a 2x2 image into its four panels (PNG), in reading order."""
    img = _open_rgb(data)
    half_w, half_h = img.width // 2, img.height // 2
    tiles = []
    for top in (0, half_h):
        for left in (0, half_w):
            out = io.BytesIO()
            img.crop((left, top, left + half_w, top + half_h)).save(out, "PNG")
            tiles.append(out.getvalue())
    return tiles


def _open_rgb(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def _draw_failed(canvas: Image.Image, x: int, y: int, w: int, h: int) -> None:
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((x, y, x + w - 1, y + h - 1), fill=FAILED_TILE)
    size = min(w, h) // 6
    cx, cy = x + w // 2, y + h // 2
    width = max(4, size // 5)
    draw.line((cx - size, cy - size, cx + size, cy + size), fill=FAILED_MARK, width=width)
    draw.line((cx - size, cy + size, cx + size, cy - size), fill=FAILED_MARK, width=width)
