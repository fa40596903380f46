"""What every provider shares: the pooled client, key rotation, the retry loop, and timing."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from ..errors import AuthError, GenerationError, RateLimitedError
from ..http import HttpClient, HttpResult
from ..keys import KeyPool
from ..models import ModelSpec
from ..retry import RetryPolicy, call_with_retries
from ..types import GeneratedImage, GenerationResult, ImageInput, ImageRequest, Preview, Timing, Turn, Usage

log = logging.getLogger(__name__)

#: A per-day quota on one key: leave that key alone for an hour before trying it again.
PER_DAY_COOL_DOWN = 3600.0
#: Cool-down for a 429 that carried no hint.
DEFAULT_RATE_LIMIT_COOL_DOWN = 10.0


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    base_url: str
    api_keys: tuple[str, ...]
    model: str
    connect_timeout: float = 10.0
    #: The pool's size: at least the requests this provider may have in flight at once.
    max_connections: int = 100
    #: Per-attempt read timeout by size ("1K" -> seconds).
    timeouts: dict[str, float] = field(default_factory=lambda: {"512": 120.0, "1K": 120.0, "2K": 180.0, "4K": 360.0})
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Extra JSON fields sent with every request (relays take e.g. ``thinking_level``).
    extra_body: dict[str, Any] = field(default_factory=dict)
    #: Name of the field that carries the thinking level on relays ("" = don't send one).
    thinking_field: str = ""
    api_version: str = "v1beta"

    def timeout_for(self, size: str) -> float:
        return self.timeouts.get(size, max(self.timeouts.values()))


class Provider(ABC):
    """One image API behind one pooled client and one key pool."""

    #: Whether the provider can send earlier turns back (Gemini); otherwise edits resend the image.
    carries_turns = False

    def __init__(self, config: ProviderConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.name = config.name
        self.keys = KeyPool(config.name, list(config.api_keys))
        self.http = HttpClient(
            provider=config.name,
            connect_timeout=config.connect_timeout,
            max_connections=config.max_connections,
            transport=transport,
        )
        #: How the retry loop waits; tests swap in a recorder so honoured delays take no time.
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def aclose(self) -> None:
        await self.http.aclose()

    def wants_stream(self, spec: ModelSpec) -> bool:
        """Whether this provider can show previews of what `spec` draws (by streaming the answer)."""
        return False

    async def generate(
        self, request: ImageRequest, spec: ModelSpec, *, on_preview: Callable[[Preview], None] | None = None
    ) -> GenerationResult:
        """Generate with retries and key rotation; the result carries attempts and total time.

        ``on_preview`` hears of drafts where the provider and model can show them; elsewhere it is never
        called and the request is the plain one.
        """
        if request.history and not self.carries_turns:
            request = history_as_reference(request)
        started = time.perf_counter()
        if on_preview is not None and not self.wants_stream(spec):
            on_preview = None
        prepared = await self.prepare(request, spec, stream=on_preview is not None)

        async def attempt() -> GenerationResult:
            while True:  # leaves by returning, raising, or when KeyPool.acquire finds no key left
                key, label = self.keys.acquire()
                try:
                    try:
                        return await self.attempt(prepared, request, spec, key, label, on_preview)
                    except GenerationError as exc:
                        # Some relays repeat the key in their error text: take it out before the benching
                        # and retry logs below (and everything after them) see the error.
                        self.redact_error(exc)
                        raise
                except AuthError as exc:
                    log.warning("%s: %s refused (%s); benching it", self.name, label, exc.message)
                    self.keys.bench(key, exc.message)
                except RateLimitedError as exc:
                    cool = PER_DAY_COOL_DOWN if exc.per_day else exc.retry_after or DEFAULT_RATE_LIMIT_COOL_DOWN
                    self.keys.cool_down(key, cool)
                    if len(self.keys) > 1 and self.keys.seconds_until_available() == 0:
                        log.info("%s: %s rate limited; trying the next key", self.name, label)
                        continue
                    raise

        try:
            result, attempts = await call_with_retries(
                attempt,
                self.config.retry,
                provider=self.name,
                key_wait=self.keys.seconds_until_available,
                sleep=self.sleep,
            )
        except GenerationError as exc:
            exc.provider = exc.provider or self.name
            self.redact_error(exc)  # also errors raised between attempts (no key left, the deadline)
            raise
        result.attempts = attempts
        result.timing.total_ms = (time.perf_counter() - started) * 1000
        return result

    @abstractmethod
    async def prepare(self, request: ImageRequest, spec: ModelSpec, *, stream: bool) -> Any:
        """Build what can be built once for all attempts (the encoded request body, for streaming or not)."""

    @abstractmethod
    async def attempt(
        self,
        prepared: Any,
        request: ImageRequest,
        spec: ModelSpec,
        key: str,
        key_label: str,
        on_preview: Callable[[Preview], None] | None,
    ) -> GenerationResult:
        """One HTTP attempt with one key; raises a GenerationError subclass on failure."""

    def result(
        self,
        reply: HttpResult,
        request: ImageRequest,
        spec: ModelSpec,
        *,
        images: list[GeneratedImage],
        text: str | None,
        usage: Usage,
        decode_ms: float,
        model_turn: Turn | None = None,
    ) -> GenerationResult:
        """A successful attempt's result, with the timing of its HTTP phases."""
        return GenerationResult(
            images=images,
            text=text,
            provider=self.name,
            model=spec.model_id,
            size=request.size,
            aspect_ratio=request.aspect_ratio,
            model_turn=model_turn,
            timing=Timing(
                connect_ms=reply.connect_ms,
                ttfb_ms=reply.ttfb_ms,
                download_ms=reply.download_ms,
                decode_ms=decode_ms,
            ),
            usage=usage,
            bytes_sent=reply.bytes_sent,
            bytes_received=reply.bytes_received,
        )

    def redact(self, text: str) -> str:
        """Remove any of this provider's keys from text that might reach a log or a person."""
        for secret in self.config.api_keys:
            if secret:
                text = text.replace(secret, "***")
        return text

    def redact_error(self, exc: GenerationError) -> None:
        """Remove this provider's keys from everything an error says (its message and the model's words)."""
        exc.message = self.redact(exc.message)
        exc.args = (exc.message,)
        model_text = getattr(exc, "model_text", None)
        if isinstance(model_text, str):
            exc.model_text = self.redact(model_text)  # type: ignore[attr-defined]


def history_as_reference(request: ImageRequest) -> ImageRequest:
    """For providers without turns: send the latest image of the conversation as a reference instead."""
    latest: ImageInput | None = None
    for turn in request.history:
        for part in turn.parts:
            if part.image is not None and not part.thought:
                latest = part.image
    references = ((latest,) if latest else ()) + request.references
    return ImageRequest(
        prompt=request.prompt,
        aspect_ratio=request.aspect_ratio,
        size=request.size,
        thinking=request.thinking,
        model=request.model,
        references=references,
        provider=request.provider,
    )


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    with contextlib.suppress(ValueError):  # a malformed value: fall back to Retry-After
        if millis:
            return max(0.0, float(millis) / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def parse_duration(value: Any) -> float | None:
    """Google's duration strings ("26s", "1.5s") as seconds."""
    if isinstance(value, str) and value.endswith("s"):
        try:
            return float(value[:-1])
        except ValueError:
            return None
    return None


def load_json(content: bytes | bytearray) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
