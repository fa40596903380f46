"""Drafts in the status message: the model's sketch, shrunk to a small JPEG. Pure Pillow; call it off the
event loop."""

from __future__ import annotations

import io

from PIL import Image

#: A draft is a glance at the composition, not the picture: small enough to upload in a blink.
DRAFT_MAX_SIDE = 640
DRAFT_QUALITY = 75


def draft_thumbnail(data: bytes) -> bytes:
    """The draft as a JPEG no larger than DRAFT_MAX_SIDE on its longer side."""
    with Image.open(io.BytesIO(data)) as opened:
        opened.draft("RGB", (DRAFT_MAX_SIDE, DRAFT_MAX_SIDE))  # JPEG drafts decode at a fraction of the size
        image = opened.convert("RGB")
    image.thumbnail((DRAFT_MAX_SIDE, DRAFT_MAX_SIDE), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=DRAFT_QUALITY)
    return out.getvalue()
