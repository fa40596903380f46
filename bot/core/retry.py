"""The one retry loop of the core (tenacity), used by every provider.

Retried: timeouts, broken connections and 408/429/500/502/503/504 (``errors.RETRYABLE_STATUSES``). Never
retried: blocks, any other status (400, 401, 403, 404, 501, ...), a complete answer that is malformed, and
per-day quotas. The server's hint (``Retry-After``, Gemini's ``RetryInfo.retryDelay``) is honoured up to a
cap; otherwise exponential backoff with full jitter. The deadline bounds everything: no attempt starts
after it, and one still running when it passes is cut off there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from .errors import GenerationError, GenerationTimeout, RateLimitedError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    #: Never wait longer than this for a server hint; a longer wait means "fail over or give up".
    hint_cap: float = 60.0
    #: Seconds from this provider's first attempt: no wait or attempt runs past it.
    deadline: float = 900.0


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, GenerationError) and exc.retryable


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    provider: str,
    key_wait: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[T, int]:
    """Run ``attempt`` until it succeeds or the policy gives up; returns (result, attempts made).

    ``key_wait`` tells how long until some API key is out of its rate-limit cool-down: with several
    keys a 429 on one of them needs no wait at all.
    """
    jitter = wait_random_exponential(multiplier=policy.backoff_base, max=policy.backoff_max)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = 0.0
        if isinstance(exc, RateLimitedError) and key_wait is not None:
            hint = key_wait()
        elif exc is not None and getattr(exc, "retry_after", None):
            hint = float(exc.retry_after)  # type: ignore[attr-defined]
        if hint > 0:
            # Honour the server, plus a little jitter so many waiting jobs don't return together.
            return min(hint, policy.hint_cap) + jitter(state) * 0.1
        return float(jitter(state))

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.info(
            "%s: attempt %d failed (%s: %s); retrying in %.1f s",
            provider,
            state.attempt_number,
            getattr(exc, "error_class", type(exc).__name__),
            exc,
            delay,
        )

    attempts = 0
    ends_at = asyncio.get_running_loop().time() + policy.deadline
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts) | stop_before_delay(policy.deadline),
        wait=wait,
        retry=retry_if_exception(_is_retryable),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    try:
        async for attempt_state in retrying:
            with attempt_state:
                attempts += 1
                # httpx's timeouts bound each connect and each read, not an attempt: without this, an
                # attempt begun just before the deadline could run long past it.
                bound = asyncio.timeout_at(ends_at)
                try:
                    async with bound:
                        result = await attempt()
                except TimeoutError:
                    if not bound.expired():
                        raise
                    raise GenerationTimeout(
                        f"{provider} gave no answer within the {policy.deadline:.0f} s deadline.", provider=provider
                    ) from None
    except GenerationError as exc:
        exc.attempts = attempts
        raise
    return result, attempts
