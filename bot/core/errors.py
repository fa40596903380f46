"""Typed errors of the generation core.

Every failure a provider can produce maps to exactly one of these, so callers (the CLI, the cogs) can
choose what to tell a person without parsing messages. Messages never contain API keys.
"""

from __future__ import annotations

#: The HTTP statuses worth another attempt: a timeout, a rate limit, and the server-side failures that
#: pass. Anything else (a 501 from a relay without the endpoint, a 409, a 505) answers the same next time.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class GenerationError(Exception):
    """Base class: something stopped an image from being generated."""

    #: Short stable name for logs and the usage table ("rate_limited", "blocked", ...).
    error_class = "error"
    #: Whether the retry loop may try the same provider again.
    retryable = False
    #: Whether another provider might succeed where this one failed.
    failover = False

    def __init__(self, message: str, *, provider: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status
        #: How many attempts were made before giving up (set by the retry loop).
        self.attempts = 1

    def __str__(self) -> str:
        return self.message


class InvalidRequest(GenerationError):
    """The request itself is wrong (bad option, bad reference image, 400 from the API).

    ``kind`` says which problem it is and ``fields`` its numbers, so a caller can word it for a person in
    their own language without parsing the English message. Kinds: ``too_large``, ``not_image``,
    ``too_many_pixels``, ``damaged``, ``unreadable`` (a reference image), ``refused`` and ``not_found`` (the
    provider answered 4xx; the default when a status is given), ``other`` (the default otherwise)."""

    error_class = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        fields: dict[str, object] | None = None,
        provider: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        if kind is None:
            kind = "other" if status is None else "not_found" if status == 404 else "refused"
        self.kind = kind
        self.fields = dict(fields or {})


class BlockedError(GenerationError):
    """The prompt or the output was blocked by the provider's safety system."""

    error_class = "blocked"

    def __init__(
        self,
        message: str,
        *,
        stage: str,
        reason: str,
        model_text: str | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        #: "prompt" (refused before generating) or "output" (the generated image was withheld).
        self.stage = stage
        self.reason = reason
        self.model_text = model_text


class NoImageError(GenerationError):
    """The provider answered without an image (for example with text only)."""

    error_class = "no_image"

    def __init__(
        self,
        message: str,
        *,
        model_text: str | None = None,
        finish_reason: str | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.model_text = model_text
        self.finish_reason = finish_reason


class AuthError(GenerationError):
    """A key was refused: invalid, revoked, reported as leaked, or without billing."""

    error_class = "auth"
    failover = True

    def __init__(self, message: str, *, key_label: str, provider: str | None = None, status: int | None = None) -> None:
        super().__init__(message, provider=provider, status=status)
        #: A safe label such as "key #2 (...a1b2)", never the key itself.
        self.key_label = key_label


class AllKeysBenchedError(GenerationError):
    """Every configured key of a provider has been refused; nothing left to try."""

    error_class = "no_keys"
    failover = True


class RateLimitedError(GenerationError):
    """429: too many requests or quota exhausted."""

    error_class = "rate_limited"
    failover = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None,
        per_day: bool,
        provider: str | None = None,
        status: int | None = 429,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after
        self.per_day = per_day
        # A per-day quota will not come back within any sensible retry window.
        self.retryable = not per_day


class UnavailableError(GenerationError):
    """The provider failed on its side (a 5xx) or the connection broke.

    Retried when the connection broke or the status is one of RETRYABLE_STATUSES; another provider may
    still be tried either way."""

    error_class = "unavailable"
    retryable = True
    failover = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        provider: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after
        if status is not None:
            self.retryable = status in RETRYABLE_STATUSES


class GenerationTimeout(UnavailableError):
    """No complete answer within the timeout for this resolution."""

    error_class = "timeout"


class ResponseError(GenerationError):
    """The provider answered with something that is not a valid response (malformed JSON, bad image).

    A complete answer that is wrong is not retried (only timeouts, broken connections and
    RETRYABLE_STATUSES are); another provider may still be tried."""

    error_class = "bad_response"
    failover = True


class BatchEndedError(GenerationError):
    """A batch ended without answering (the provider failed, cancelled or expired it): ``state`` says which."""

    error_class = "batch_ended"

    def __init__(self, message: str, *, state: str, provider: str | None = None) -> None:
        super().__init__(message, provider=provider)
        self.state = state


class ConfigError(Exception):
    """The configuration is invalid; ``lines`` holds one human sentence per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines
