"""What a member reads when something is refused or fails: specific, actionable, never an exception name.

Every sentence comes from the message catalogue in the reader's language. The core's errors carry a machine
readable kind (and numbers) for that: their own English message goes to the log, never to a member.
One table maps each error class to its full message and to the short reason shown next to a grid tile.
"""

from __future__ import annotations

from collections.abc import Iterable

from babel import Locale
from babel.lists import format_list

from bot.core.errors import (
    BatchEndedError,
    BlockedError,
    GenerationError,
    InvalidRequest,
    NoImageError,
    RateLimitedError,
)
from bot.core.imaging import ACCEPTED_FORMATS
from bot.core.models import ModelSpec
from bot.core.types import ImageRequest
from bot.i18n import FALLBACK, money, own_translation, supported, t, tn
from bot.jobs.admission import BudgetExceeded, Refused

#: error class -> (message key, short reason key)
_WORDING = {
    "blocked": ("error.blocked", "grid.reason.blocked"),
    "no_image": ("error.no_image", "grid.reason.no_image"),
    "invalid_request": ("error.invalid", "grid.reason.invalid"),
    "rate_limited": ("error.rate_limited", "grid.reason.busy"),
    "unavailable": ("error.unavailable", "grid.reason.busy"),
    "timeout": ("error.timeout", "grid.reason.busy"),
    "bad_response": ("error.bad_response", "grid.reason.busy"),
    "auth": ("error.auth", "grid.reason.other"),
    "no_keys": ("error.auth", "grid.reason.other"),
    "batch_ended": ("error.batch_ended", "grid.reason.busy"),
}
_INTERNAL = ("error.internal", "grid.reason.other")
#: Classes worth another try later: the message says how many attempts were made.
_BUSY = {"rate_limited", "unavailable", "timeout", "bad_response"}
#: InvalidRequest kinds at run time -> message; any other kind gets the general "error.invalid".
_INVALID = {"refused": "error.invalid_refused", "not_found": "error.invalid_not_found"}
#: A reference image's InvalidRequest kind -> message (each names the option).
_INPUT = {
    "too_large": "input.too_large",
    "damaged": "input.damaged",
    "too_many_pixels": "input.too_many_pixels",
    "unreadable": "input.unreadable",
}
#: The providers' safety reasons (Gemini's block and finish reasons, OpenAI-style error codes), in words.
_BLOCK_REASONS = {
    "SAFETY": "safety",
    "IMAGE_SAFETY": "safety",
    "content_filter": "safety",
    "safety_violation": "safety",
    "PROHIBITED_CONTENT": "prohibited",
    "IMAGE_PROHIBITED_CONTENT": "prohibited",
    "moderation_blocked": "prohibited",
    "content_policy_violation": "prohibited",
    "BLOCKLIST": "blocklist",
    "SPII": "personal",
    "RECITATION": "recitation",
    "IMAGE_RECITATION": "recitation",
}
#: Commands whose option names the catalogue translates (the same option is named alike in each).
_COMMANDS_WITH_IMAGES = ("imagine", "grid", "edit", "character.create", "character.edit")
CLIP = 500


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def or_list(locale: str, items: Iterable[str]) -> str:
    """'PNG, JPEG, or GIF' the way the language lists alternatives."""
    return format_list(list(items), style="or", locale=Locale.parse(supported(locale), sep="-"))


def formats(locale: str) -> str:
    """The image formats a member may send, the same list in every message."""
    return or_list(locale, ACCEPTED_FORMATS)


def option_label(locale: str, option: str) -> str:
    """An option as Discord shows it to the member ('référence' for `reference`); anything else (a file
    name, for a thread reply's attachment) as it is."""
    for command in _COMMANDS_WITH_IMAGES:
        label = own_translation(supported(locale), f"opt.{command}.{option}.name")
        if label is not None:
            return label
    return option


def short_reason(locale: str, error_class: str | None) -> str:
    """A few words on why (a failed grid tile)."""
    return t(locale, _WORDING.get(error_class or "", _INTERNAL)[1])


def blocked_reason(locale: str, reason: str) -> str:
    """The provider's safety reason ('PROHIBITED_CONTENT') as words."""
    return t(locale, f"blocked.reason.{_BLOCK_REASONS.get(reason, 'other')}")


def error_text(locale: str, error: GenerationError | None, reference: str) -> str:
    """The whole message for a failed job; `reference` is what the log names an unexpected failure by."""
    message_key = _WORDING.get(error.error_class, _INTERNAL)[0] if error is not None else _INTERNAL[0]
    if error is None or message_key == _INTERNAL[0]:
        text = t(locale, "error.internal", reference=reference)
    elif isinstance(error, RateLimitedError) and error.per_day:
        text = t(locale, "error.quota_day")
    elif isinstance(error, BlockedError):
        text = t(locale, message_key, reason=blocked_reason(locale, error.reason))
    elif isinstance(error, InvalidRequest):
        text = t(locale, _INVALID.get(error.kind, message_key))
    elif isinstance(error, BatchEndedError):
        state = error.state if error.state in ("failed", "cancelled", "expired") else "failed"
        text = t(locale, message_key, state=t(locale, f"batch.state.{state}"))
    else:
        text = t(locale, message_key)
    if error is not None and error.error_class in _BUSY and not (isinstance(error, RateLimitedError) and error.per_day):
        text += " " + tn(locale, "error.attempts", max(error.attempts, 1))
    model_text = error.model_text if isinstance(error, BlockedError | NoImageError) else None
    if model_text:
        text += "\n" + t(locale, "error.model_said", text=clip(model_text, CLIP))
    return text + "\n" + t(locale, "error.not_charged")


def input_error_text(locale: str, option: str, error: InvalidRequest) -> str:
    """Why an attached image can't be used, naming the option (or the file) it came in."""
    values: dict[str, object] = {"option": option_label(locale, option), "formats": formats(locale)}
    if error.kind == "too_large":
        values["mb"] = error.fields.get("limit_mb", "")
    elif error.kind == "too_many_pixels":
        values["megapixels"] = error.fields.get("limit_megapixels", "")
    return t(locale, _INPUT.get(error.kind, "input.not_image"), **values)


def too_large_text(locale: str, option: str, limit_mb: int) -> str:
    return t(locale, "input.too_large", option=option_label(locale, option), mb=limit_mb)


def unreadable_text(locale: str, option: str) -> str:
    return t(locale, "input.unreadable", option=option_label(locale, option))


def request_problem_text(locale: str, spec: ModelSpec, request: ImageRequest) -> str:
    """What the model can't do about `request` (which `validate` refused), and what it can."""
    model = spec.label
    if not request.prompt.strip():
        return t(locale, "input.prompt_empty")
    if request.aspect_ratio and request.aspect_ratio not in spec.aspect_ratios:
        ratios = or_list(locale, spec.aspect_ratios)
        return t(locale, "input.aspect_ratio", model=model, ratio=request.aspect_ratio, ratios=ratios)
    if request.size not in spec.sizes:
        return t(locale, "input.size", model=model, size=request.size, sizes=or_list(locale, spec.sizes))
    if request.thinking and request.thinking not in spec.thinking_levels:
        if not spec.thinking_levels:
            return t(locale, "input.no_thinking", model=model)
        levels = or_list(locale, (_thinking_label(locale, level) for level in spec.thinking_levels))
        return t(locale, "input.thinking", model=model, level=_thinking_label(locale, request.thinking), levels=levels)
    count = len(request.references)
    if count > spec.max_reference_images:
        return tn(locale, "input.too_many_references", spec.max_reference_images, model=model, count=count)
    return t(locale, "error.invalid")


def _thinking_label(locale: str, level: str) -> str:
    """A thinking level as the command's choices name it in the member's language."""
    key = f"choice.thinking.{level}"
    # A level only some unknown model takes has no choice naming it: it stays as the API spells it.
    return own_translation(supported(locale), key) or own_translation(FALLBACK, key) or level


def limit_text(locale: str, refused: Refused) -> str:
    """Which limit refused the request, and when it frees up."""
    if isinstance(refused, BudgetExceeded):
        return t(
            locale,
            "limit.budget",
            needed=money(locale, refused.needed),
            left=money(locale, refused.left),
            budget=money(locale, refused.budget),
            reset=f"<t:{int(refused.resets_at)}:R>",
        )
    if refused.resets_at is None:
        return tn(locale, f"limit.{refused.limit}", refused.allowed)
    # Discord shows <t:...:R> as "in 5 hours" in each reader's own language and time zone.
    reset = f"<t:{int(refused.resets_at)}:R>"
    if refused.used < refused.allowed:  # some left, but not enough for this request (a grid needs four)
        left = refused.allowed - refused.used
        return tn(locale, f"limit.{refused.limit}_short", refused.needed, left=left, reset=reset)
    return tn(locale, f"limit.{refused.limit}", refused.allowed, reset=reset)
