"""Drafts in the status message: the model's sketch, shrunk to a small JPEG. Pure Pillow; call it off the
event loop."""

from __future__ import annotations

import io
import math

from PIL import Image

#: A draft is a glance at the composition, not the picture: small enough to upload in a blink.
DRAFT_MAX_SIDE = 640
DRAFT_QUALITY = 75


def draft_thumbnail(data: bytes) -> bytes:
    """The draft as a JPEG no larger than DRAFT_MAX_SIDE on its longer side."""
    with Image.open(io.BytesIO(data)) as opened:
        opened.draft("RGB", (DRAFT_MAX_SIDE, DRAFT_MAX_SIDE))  # JPEG drafts decode at a fraction of the size
        image = opened.convert("RGB")
    # An integer box reduction (a 1K draft to 512 px) costs a quarter of a resampling to exactly 640 px.
    factor = math.ceil(max(image.size) / DRAFT_MAX_SIDE)
    if factor > 1:
        image = image.reduce(factor)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=DRAFT_QUALITY)
    return out.getvalue()
