"""One table of what each image model can do and what it costs.

Sources: ../shared/specs/image-apis.md sections A0 (capabilities), A7 (prices) and A8 (pixel sizes).
Model ids churn, so unknown ids fall back to a conservative profile instead of failing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from .errors import InvalidRequest

BASE_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
EXTRA_RATIOS_31 = ("1:4", "4:1", "1:8", "8:1")

# Pixel sizes at 1K for Gemini 3 image models; 2K and 4K are exact multiples (A8).
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
    "1:4": (512, 2048),
    "4:1": (2048, 512),
    "1:8": (384, 3072),
    "8:1": (3072, 384),
}
_GEMINI25_1K: dict[str, tuple[int, int]] = {
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
_SIZE_FACTOR = {"512": 0.5, "1K": 1.0, "2K": 2.0, "4K": 4.0}


@dataclass(frozen=True)
class Pricing:
    """USD prices; token prices are per million tokens."""

    input_per_m: float = 0.0
    text_output_per_m: float = 0.0
    image_output_per_m: float = 0.0
    #: Image tokens billed for one image at each size (used when usage lacks a per-modality split).
    image_tokens: dict[str, int] = field(default_factory=dict)
    #: Flat price per image (relays bill this way); when set it replaces the token arithmetic.
    per_image: float | None = None

    def image_price(self, size: str) -> float:
        if self.per_image is not None:
            return self.per_image
        return self.image_tokens.get(size, 0) * self.image_output_per_m / 1_000_000


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    label: str
    sizes: tuple[str, ...]
    aspect_ratios: tuple[str, ...]
    #: Thinking levels the API accepts for this model; empty means "do not send thinkingLevel".
    thinking_levels: tuple[str, ...]
    max_reference_images: int
    max_people: int
    #: Whether the API takes imageConfig.imageSize (2.5 Flash Image does not).
    sends_image_size: bool
    #: Whether replayed model turns must carry thought signatures (Gemini 3).
    uses_thought_signatures: bool
    pricing: Pricing
    #: Whether the model draws interim draft images while it thinks (thought parts, streamed as previews).
    draws_drafts: bool = False
    pixel_table: str = "gemini3"

    def pixel_size(self, aspect_ratio: str, size: str) -> tuple[int, int]:
        """The exact output size in pixels that the API produces (A8)."""
        base = _GEMINI25_1K if self.pixel_table == "gemini25" else _GEMINI3_1K
        width, height = base.get(aspect_ratio, base["1:1"])
        factor = _SIZE_FACTOR.get(size, 1.0) if self.sends_image_size else 1.0
        return int(width * factor), int(height * factor)


MODELS: dict[str, ModelSpec] = {
    spec.model_id: spec
    for spec in (
        ModelSpec(
            model_id="gemini-3-pro-image-preview",
            label="Nano Banana Pro",
            sizes=("1K", "2K", "4K"),
            aspect_ratios=BASE_RATIOS,
            thinking_levels=(),  # always thinks; sending thinkingLevel is a 400
            max_reference_images=14,
            max_people=5,
            sends_image_size=True,
            uses_thought_signatures=True,
            draws_drafts=True,
            pricing=Pricing(
                input_per_m=2.0,
                text_output_per_m=12.0,
                image_output_per_m=120.0,
                image_tokens={"1K": 1120, "2K": 1120, "4K": 2000},
            ),
        ),
        ModelSpec(
            model_id="gemini-3.1-flash-image-preview",
            label="Nano Banana 2",
            sizes=("512", "1K", "2K", "4K"),
            aspect_ratios=BASE_RATIOS + EXTRA_RATIOS_31,
            thinking_levels=("minimal", "high"),
            max_reference_images=14,
            max_people=4,
            sends_image_size=True,
            uses_thought_signatures=True,
            draws_drafts=True,
            pricing=Pricing(
                input_per_m=0.5,
                text_output_per_m=3.0,
                image_output_per_m=60.0,
                image_tokens={"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
            ),
        ),
        ModelSpec(
            model_id="gemini-2.5-flash-image",
            label="Nano Banana",
            sizes=("1K",),
            aspect_ratios=BASE_RATIOS,
            thinking_levels=(),
            max_reference_images=3,
            max_people=3,
            sends_image_size=False,
            uses_thought_signatures=False,
            pricing=Pricing(
                input_per_m=0.3,
                text_output_per_m=2.5,
                image_output_per_m=30.0,
                image_tokens={"1K": 1290},
            ),
            pixel_table="gemini25",
        ),
    )
}
# The GA id on Vertex behaves like the preview.
MODELS["gemini-3-pro-image"] = replace(MODELS["gemini-3-pro-image-preview"], model_id="gemini-3-pro-image")


def model_spec(model_id: str, *, price_overrides: dict[str, Pricing] | None = None) -> ModelSpec:
    """The capabilities of ``model_id``; relay-prefixed ids like ``google/gemini-3-pro-image-preview`` work."""
    bare = model_id.rsplit("/", 1)[-1]
    spec = MODELS.get(bare)
    if spec is None:
        # An id we have never seen (an OpenAI model, a renamed preview): allow what every model takes.
        spec = ModelSpec(
            model_id=model_id,
            label=model_id,
            sizes=("1K", "2K", "4K"),
            aspect_ratios=BASE_RATIOS,
            thinking_levels=("minimal", "low", "medium", "high"),
            max_reference_images=14,
            max_people=5,
            sends_image_size=True,
            uses_thought_signatures=bare.startswith("gemini-3"),
            draws_drafts=bare.startswith("gemini-3"),
            pricing=Pricing(),
        )
    elif spec.model_id != model_id:
        spec = replace(spec, model_id=model_id)
    if price_overrides and (model_id in price_overrides or bare in price_overrides):
        spec = replace(spec, pricing=price_overrides.get(model_id) or price_overrides[bare])
    return spec


_SIZE_ALIASES = {
    "512": "512",
    "0.5k": "512",
    "1k": "1K",
    "1024": "1K",
    "2k": "2K",
    "2048": "2K",
    "4k": "4K",
    "4096": "4K",
}


def normalise_size(raw: str) -> str:
    """Accept how people type sizes (``2k``, ``2K``, ``2048``) and return what the API demands (``2K``)."""
    key = raw.strip().lower().removesuffix("px")
    if key not in _SIZE_ALIASES:
        raise InvalidRequest(f"Unknown size {raw!r}: use 1K, 2K or 4K (or 512 on Nano Banana 2).")
    return _SIZE_ALIASES[key]


_RATIO_RE = re.compile(r"^\s*(\d{1,2})\s*[:x/]\s*(\d{1,2})\s*$")


def normalise_aspect_ratio(raw: str) -> str:
    """Accept ``16:9``, ``16x9`` or ``16/9``; return ``16:9``."""
    match = _RATIO_RE.match(raw)
    if not match:
        raise InvalidRequest(f"Unknown aspect ratio {raw!r}: write it like 16:9.")
    return f"{int(match.group(1))}:{int(match.group(2))}"
