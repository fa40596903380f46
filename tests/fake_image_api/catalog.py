"""Per-model capabilities of the faked Gemini image models (spec tables A0, A7, A8).

Everything the fake validates or computes about a model lives here, in one table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# A8: 3 Pro Image, 1K column. 2K and 4K are exact multiples (x2, x4); the 3.1 Flash "512" column is half.
_GEMINI3_1K: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (848, 1264),
    "3:2": (1264, 848),
    "3:4": (896, 1200),
    "4:3": (1200, 896),
    "4:5": (928, 1152),
    "5:4": (1152, 928),
    "9:16": (768, 1376),
    "16:9": (1376, 768),
    "21:9": (1584, 672),
}
# A8: ratios only Nano Banana 2 (3.1 Flash) has, 1K column.
_FLASH31_EXTRA_1K: dict[str, tuple[int, int]] = {
    "1:4": (512, 2048),
    "4:1": (2048, 512),
    "1:8": (384, 3072),
    "8:1": (3072, 384),
}
# A8: 2.5 Flash Image has a single (1K) size per ratio.
_FLASH25: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
_SCALE: dict[str, tuple[int, int]] = {"512": (1, 2), "1K": (1, 1), "2K": (2, 1), "4K": (4, 1)}

# Input images are billed at this many prompt tokens each (spec A2 example: 774 = 3 x 258).
INPUT_IMAGE_TOKENS = 258


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What one Gemini image model accepts and returns."""

    name: str
    sizes: tuple[str, ...]  # allowed `imageSize` values; empty = the field is rejected
    ratios: tuple[str, ...]
    thinking_levels: tuple[str, ...]  # allowed `thinkingLevel` values; empty = the field is rejected
    signatures: bool  # Gemini 3: thought signatures issued and enforced on replay
    thinks: bool  # produces thought parts / thoughtsTokenCount
    max_images: int
    image_tokens: dict[str, int]  # A7: output tokens per image, by size

    def pixel_size(self, ratio: str, size: str = "1K") -> tuple[int, int]:
        """Exact output pixel size (width, height) from table A8."""
        if self.name == "gemini-2.5-flash-image":
            return _FLASH25[ratio]
        base = _GEMINI3_1K.get(ratio) or _FLASH31_EXTRA_1K[ratio]
        num, den = _SCALE[size]
        return base[0] * num // den, base[1] * num // den

    def tokens_per_image(self, size: str = "1K") -> int:
        return self.image_tokens.get(size, next(iter(self.image_tokens.values())))


_TEN = tuple(_GEMINI3_1K)

MODELS: dict[str, ModelSpec] = {
    "gemini-3-pro-image-preview": ModelSpec(
        name="gemini-3-pro-image-preview",
        sizes=("1K", "2K", "4K"),
        ratios=_TEN,
        thinking_levels=(),
        signatures=True,
        thinks=True,
        max_images=14,
        image_tokens={"1K": 1120, "2K": 1120, "4K": 2000},
    ),
    "gemini-3.1-flash-image-preview": ModelSpec(
        name="gemini-3.1-flash-image-preview",
        sizes=("512", "1K", "2K", "4K"),
        ratios=_TEN + tuple(_FLASH31_EXTRA_1K),
        thinking_levels=("MINIMAL", "HIGH"),
        signatures=True,
        thinks=True,
        max_images=14,
        image_tokens={"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
    ),
    "gemini-2.5-flash-image": ModelSpec(
        name="gemini-2.5-flash-image",
        sizes=(),
        ratios=tuple(_FLASH25),
        thinking_levels=(),
        signatures=False,
        thinks=False,
        max_images=14,
        image_tokens={"1K": 1290},
    ),
}


def pixel_size(model: str, ratio: str = "1:1", size: str = "1K") -> tuple[int, int]:
    """Output size for (model, aspectRatio, imageSize).

    ``pixel_size("gemini-3-pro-image-preview", "16:9", "2K") == (2752, 1536)``
    """
    return MODELS[model].pixel_size(ratio, size)


def ratio_value(ratio: str) -> float:
    w, h = ratio.split(":")
    return int(w) / int(h)


def closest_ratio(spec: ModelSpec, width: int, height: int) -> str:
    """The model's supported ratio nearest (in log space) to an input image's shape."""
    target = math.log(width / height)
    return min(spec.ratios, key=lambda r: abs(math.log(ratio_value(r)) - target))


def quote_list(values: tuple[str, ...]) -> str:
    """Google's enumeration style: ``'a', 'b' or 'c'``."""
    quoted = [f"'{v}'" for v in values]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]
