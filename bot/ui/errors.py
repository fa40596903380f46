"""What a member reads when something is refused or fails: specific, actionable, never an exception name.

One table maps each error class to its full message and to the short reason shown next to a grid tile.
"""

from __future__ import annotations

from bot.core.errors import BlockedError, GenerationError, NoImageError, RateLimitedError
from bot.i18n import money, t, tn
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
}
_INTERNAL = ("error.internal", "grid.reason.other")
#: Classes worth another try later: the message says how many attempts were made.
_BUSY = {"rate_limited", "unavailable", "timeout", "bad_response"}
CLIP = 500


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_reason(locale: str, error_class: str | None) -> str:
    """A few words on why (a failed grid tile)."""
    return t(locale, _WORDING.get(error_class or "", _INTERNAL)[1])


def error_text(locale: str, error: GenerationError | None, reference: str) -> str:
    """The whole message for a failed job; `reference` is what the log names an unexpected failure by."""
    message_key = _WORDING.get(error.error_class, _INTERNAL)[0] if error is not None else _INTERNAL[0]
    if error is None or message_key == _INTERNAL[0]:
        text = t(locale, "error.internal", reference=reference)
    elif isinstance(error, RateLimitedError) and error.per_day:
        text = t(locale, "error.quota_day")
    elif isinstance(error, BlockedError):
        text = t(locale, message_key, reason=error.reason)
    elif error.error_class == "invalid_request":
        text = t(locale, message_key, detail=str(error))
    else:
        text = t(locale, message_key)
    if error is not None and error.error_class in _BUSY and not (isinstance(error, RateLimitedError) and error.per_day):
        text += " " + tn(locale, "error.attempts", max(error.attempts, 1))
    model_text = error.model_text if isinstance(error, BlockedError | NoImageError) else None
    if model_text:
        text += "\n" + t(locale, "error.model_said", text=clip(model_text, CLIP))
    return text + "\n" + t(locale, "error.not_charged")


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
