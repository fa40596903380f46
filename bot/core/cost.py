"""What a request cost, from the provider's usage numbers and the price table (spec A7)."""

from __future__ import annotations

from typing import Any

from .models import Pricing
from .types import Usage


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def gemini_usage(meta: dict[str, Any], pricing: Pricing, *, size: str, images: int) -> Usage:
    """Cost = prompt x input + (candidates - image + thoughts) x text out + image x image out."""
    prompt = _int(meta.get("promptTokenCount"))
    candidates = _int(meta.get("candidatesTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    details = meta.get("candidatesTokensDetails") or []
    image_tokens = sum(
        _int(d.get("tokenCount")) for d in details if isinstance(d, dict) and d.get("modality") == "IMAGE"
    )
    if not details:
        # Without a per-modality split, assume the table's tokens per image.
        image_tokens = min(candidates, pricing.image_tokens.get(size, 0) * images)
    text_out = max(0, candidates - image_tokens) + thoughts
    if pricing.per_image is not None:
        cost = pricing.per_image * images
    else:
        cost = (
            prompt * pricing.input_per_m
            + text_out * pricing.text_output_per_m
            + image_tokens * pricing.image_output_per_m
        ) / 1_000_000
    return Usage(
        input_tokens=prompt,
        output_tokens=candidates,
        thinking_tokens=thoughts,
        image_tokens=image_tokens,
        total_tokens=_int(meta.get("totalTokenCount")) or prompt + candidates + thoughts,
        cost_usd=round(cost, 6),
    )


def openai_usage(usage: dict[str, Any] | None, pricing: Pricing, *, size: str, images: int) -> Usage:
    """OpenAI-style usage (images or chat). A relay's own ``cost`` field wins when present."""
    usage = usage or {}
    prompt = _int(usage.get("input_tokens") or usage.get("prompt_tokens"))
    output = _int(usage.get("output_tokens") or usage.get("completion_tokens"))
    reported = usage.get("cost")
    if isinstance(reported, int | float) and not isinstance(reported, bool):
        cost = float(reported)
    elif pricing.per_image is not None:
        cost = pricing.per_image * images
    elif pricing.image_output_per_m:
        cost = (prompt * pricing.input_per_m + output * pricing.image_output_per_m) / 1_000_000
    else:
        cost = 0.0
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        image_tokens=output,
        total_tokens=_int(usage.get("total_tokens")) or prompt + output,
        cost_usd=round(cost, 6),
    )
