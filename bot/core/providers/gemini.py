"""Gemini's native ``generateContent`` API (spec sections A1-A4)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pybase64

from ..cost import gemini_usage
from ..errors import (
    AuthError,
    BlockedError,
    GenerationError,
    GenerationTimeout,
    InvalidRequest,
    NoImageError,
    RateLimitedError,
    ResponseError,
    UnavailableError,
)
from ..http import HttpResult
from ..imaging import decode_base64, image_size, sniff_mime
from ..inline import InlineImageDecoder
from ..models import ModelSpec
from ..sse import SSEDecoder
from ..types import GeneratedImage, GenerationResult, ImageInput, ImageRequest, Part, Preview, Turn
from .base import Provider, load_json, parse_duration, parse_retry_after

log = logging.getLogger(__name__)

#: finishReason values that mean "the output was withheld by safety filters".
BLOCK_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
    }
)


#: Answers to the streaming URL that mean "this server does not stream" (a relay that only proxies the
#: plain call): the request is made again the plain way.
NO_STREAMING_STATUSES = frozenset({404, 405, 501})


class GeminiProvider(Provider):
    carries_turns = True
    #: Cleared when the server turns out not to stream; previews then quietly stop.
    streams = True

    def wants_stream(self, spec: ModelSpec) -> bool:
        return self.streams and spec.draws_drafts

    async def prepare(self, request: ImageRequest, spec: ModelSpec, *, stream: bool) -> bytes:
        # Base64 of several MB of references is CPU work: keep it off the event loop.
        return await asyncio.to_thread(build_request_body, request, spec, include_thoughts=stream)

    async def attempt(
        self,
        prepared: Any,
        request: ImageRequest,
        spec: ModelSpec,
        key: str,
        key_label: str,
        on_preview: Callable[[Preview], None] | None,
    ) -> GenerationResult:
        if on_preview is not None and self.streams:
            result = await self._streamed(prepared, request, spec, key, key_label, on_preview)
            if result is not None:
                return result
            prepared = await self.prepare(request, spec, stream=False)
            result = await self._plain(prepared, request, spec, key, key_label)
            log.info("%s does not stream; previews are off for it from now on", self.name)
            self.streams = False
            return result
        return await self._plain(prepared, request, spec, key, key_label)

    def _url(self, spec: ModelSpec, method: str) -> str:
        return f"{self.config.base_url}/{self.config.api_version}/models/{spec.model_id}:{method}"

    def _headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key, "content-type": "application/json"}

    async def _plain(
        self, prepared: bytes, request: ImageRequest, spec: ModelSpec, key: str, key_label: str
    ) -> GenerationResult:
        decoder = InlineImageDecoder()  # a 200 body's images are decoded as they arrive

        async def sink(chunk: bytes) -> None:
            decoder.feed(chunk)

        reply = await self.http.request(
            "POST",
            self._url(spec, "generateContent"),
            headers=self._headers(key),
            content=prepared,
            read_timeout=self.config.timeout_for(request.size),
            sink=sink,
        )
        if reply.status != 200:
            raise map_error(reply.status, reply.content, reply.headers, provider=self.name, key_label=key_label)
        # The base64 was decoded inside the download; "decode" is what is left after the last byte.
        decode_started = time.perf_counter()
        images, text, turn, meta = await asyncio.to_thread(parse_decoded, decoder, self.name)
        return self._result(reply, request, spec, images, text, turn, meta, (time.perf_counter() - decode_started))

    async def _streamed(
        self,
        prepared: bytes,
        request: ImageRequest,
        spec: ModelSpec,
        key: str,
        key_label: str,
        on_preview: Callable[[Preview], None],
    ) -> GenerationResult | None:
        """One streamed attempt (spec A5); None when the server does not stream at all."""
        assembler = StreamAssembler(self.name, on_preview)
        reply = await self.http.request(
            "POST",
            self._url(spec, "streamGenerateContent") + "?alt=sse",
            headers=self._headers(key),
            content=prepared,
            read_timeout=self.config.timeout_for(request.size),
            sink=assembler.feed,
        )
        if reply.status in NO_STREAMING_STATUSES:
            return None
        if reply.status != 200:
            raise map_error(reply.status, reply.content, reply.headers, provider=self.name, key_label=key_label)
        images, text, turn, meta = await assembler.finish_stream()
        return self._result(reply, request, spec, images, text, turn, meta, assembler.decode_ms / 1000)

    def _result(
        self,
        reply: HttpResult,
        request: ImageRequest,
        spec: ModelSpec,
        images: list[GeneratedImage],
        text: str | None,
        turn: Turn,
        meta: dict[str, Any],
        decode_s: float,
    ) -> GenerationResult:
        return self.result(
            reply,
            request,
            spec,
            images=images,
            text=text,
            usage=gemini_usage(meta, spec.pricing, size=request.size, images=len(images)),
            decode_ms=decode_s * 1000,
            model_turn=turn,
        )


def _inline(image: ImageInput) -> dict[str, Any]:
    return {"inlineData": {"mimeType": image.mime, "data": pybase64.b64encode(image.data).decode("ascii")}}


def part_to_json(part: Part) -> dict[str, Any]:
    """A stored part back into the wire shape, signature and thought flag included."""
    out: dict[str, Any] = _inline(part.image) if part.image is not None else {"text": part.text or ""}
    if part.thought:
        out["thought"] = True
    if part.thought_signature:
        out["thoughtSignature"] = part.thought_signature
    return out


def build_request_body(request: ImageRequest, spec: ModelSpec, *, include_thoughts: bool = False) -> bytes:
    contents: list[dict[str, Any]] = [
        {"role": turn.role, "parts": [part_to_json(p) for p in turn.parts]} for turn in request.history
    ]
    user_parts: list[dict[str, Any]] = [{"text": request.prompt}]
    user_parts.extend(_inline(ref) for ref in request.references)
    contents.append({"role": "user", "parts": user_parts})

    generation: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
    image_config: dict[str, str] = {}
    if request.aspect_ratio:
        image_config["aspectRatio"] = request.aspect_ratio
    if spec.sends_image_size:
        image_config["imageSize"] = request.size
    if image_config:
        generation["imageConfig"] = image_config
    # Only where the model takes it: Nano Banana Pro answers 400 to any thinkingLevel.
    thinking: dict[str, Any] = {}
    if request.thinking and request.thinking in spec.thinking_levels:
        thinking["thinkingLevel"] = request.thinking
    if include_thoughts:  # the thought headlines and drafts, for previews
        thinking["includeThoughts"] = True
    if thinking:
        generation["thinkingConfig"] = thinking
    return orjson.dumps({"contents": contents, "generationConfig": generation})


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    """The API speaks proto JSON: accept either spelling of a key."""
    return obj.get(camel, obj.get(snake))


def _json(skeleton: bytes | bytearray, provider: str) -> dict[str, Any]:
    try:
        data = orjson.loads(skeleton)
    except orjson.JSONDecodeError:
        raise ResponseError(f"{provider} returned malformed JSON.", provider=provider) from None
    if not isinstance(data, dict):
        raise ResponseError(f"{provider} returned an unexpected JSON document.", provider=provider)
    return data


def _decoded(payload: str) -> bytes:
    try:
        return decode_base64(payload)
    except ValueError:
        return b""  # not base64 at all: refused like any other non-image


def _load(content: bytes | bytearray, provider: str) -> tuple[dict[str, Any], list[bytes]]:
    """A whole body: its JSON, and the images cut out of it, decoded (see InlineImageDecoder)."""
    skeleton, images = InlineImageDecoder.whole(content)
    return _json(skeleton, provider), images


def _check_prompt_block(data: dict[str, Any], provider: str) -> None:
    feedback = _get(data, "promptFeedback", "prompt_feedback") or {}
    block_reason = _get(feedback, "blockReason", "block_reason")
    if block_reason:
        raise BlockedError(
            f"The prompt was blocked by the provider's safety filters ({block_reason}).",
            stage="prompt",
            reason=str(block_reason),
            model_text=_get(feedback, "blockReasonMessage", "block_reason_message"),
            provider=provider,
        )


def _parts(candidate: dict[str, Any], images: list[bytes], provider: str) -> list[Part]:
    """A candidate's parts, images decoded (and checked by their bytes, not their label); ``"#N"`` stands for
    ``images[N]``, an image cut out of the JSON before it was parsed."""
    parts: list[Part] = []
    for raw in (candidate.get("content") or {}).get("parts") or []:
        if not isinstance(raw, dict):
            continue
        thought = bool(raw.get("thought"))
        signature = _get(raw, "thoughtSignature", "thought_signature")
        inline = _get(raw, "inlineData", "inline_data")
        if inline is not None:
            raw_data = str(inline.get("data") or "")
            cut = raw_data.startswith("#") and raw_data[1:].isdigit() and int(raw_data[1:]) < len(images)
            blob = images[int(raw_data[1:])] if cut else _decoded(raw_data)
            # Trust the bytes, not the label: mimeType has been seen not to match.
            mime = sniff_mime(blob)
            if mime is None:
                if thought:
                    continue  # a broken draft is no reason to fail the request
                raise ResponseError(f"{provider} returned image data that is not an image.", provider=provider)
            width, height = image_size(blob)
            image = ImageInput(data=blob, mime=mime, width=width, height=height)
            parts.append(Part(image=image, thought=thought, thought_signature=signature))
        elif "text" in raw:
            parts.append(Part(text=str(raw["text"]), thought=thought, thought_signature=signature))
    return parts


def _answer(
    parts: list[Part], finish: str | None, meta: dict[str, Any], provider: str
) -> tuple[list[GeneratedImage], str | None, Turn, dict[str, Any]]:
    """The images, text and replayable turn of a complete answer; raises for a block or a missing image."""
    images = [
        GeneratedImage(data=p.image.data, mime=p.image.mime, width=p.image.width, height=p.image.height)
        for p in parts
        if p.image is not None and not p.thought
    ]
    texts = [p.text for p in parts if p.text is not None and not p.thought]
    text = "\n".join(t for t in texts if t.strip()) or None
    if not images:
        if finish in BLOCK_FINISH_REASONS:
            raise BlockedError(
                f"The image was withheld by the provider's safety filters ({finish}).",
                stage="output",
                reason=str(finish),
                model_text=text,
                provider=provider,
            )
        said = f' It said: "{text[:300]}"' if text else ""
        raise NoImageError(
            f"The model answered without an image (finish reason {finish or 'unknown'}).{said}",
            model_text=text,
            finish_reason=finish,
            provider=provider,
        )
    return images, text, Turn(role="model", parts=tuple(parts)), meta


def parse_response(
    content: bytes | bytearray, provider: str
) -> tuple[list[GeneratedImage], str | None, Turn, dict[str, Any]]:
    """A whole 200 body into images, text, the model turn (for replay) and usage metadata.

    Raises BlockedError, NoImageError or ResponseError. Runs in a worker thread.
    """
    data, images = _load(content, provider)
    return answer_of(data, images, provider)


def parse_decoded(
    decoder: InlineImageDecoder, provider: str
) -> tuple[list[GeneratedImage], str | None, Turn, dict[str, Any]]:
    """parse_response for a body fed to an InlineImageDecoder as it arrived. Runs in a worker thread."""
    skeleton, images = decoder.finish()
    return answer_of(_json(skeleton, provider), images, provider)


def answer_of(
    data: dict[str, Any], images: list[bytes], provider: str
) -> tuple[list[GeneratedImage], str | None, Turn, dict[str, Any]]:
    _check_prompt_block(data, provider)
    meta = _get(data, "usageMetadata", "usage_metadata") or {}
    candidates = data.get("candidates") or []
    if not candidates:
        raise NoImageError("The model returned no answer at all.", provider=provider)
    candidate = candidates[0]
    finish = _get(candidate, "finishReason", "finish_reason")
    return _answer(_parts(candidate, images, provider), finish, meta, provider)


@dataclass
class StreamEvent:
    """One ``streamGenerateContent`` chunk, parsed."""

    parts: list[Part]
    finish: str | None
    meta: dict[str, Any] | None


def parse_stream_event(content: bytes | bytearray, provider: str) -> StreamEvent:
    """One chunk of a stream (a GenerateContentResponse holding a part or two). Raises for a prompt block."""
    data, images = _load(content, provider)
    _check_prompt_block(data, provider)
    candidates = data.get("candidates") or []
    candidate = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
    return StreamEvent(
        parts=_parts(candidate, images, provider),
        finish=_get(candidate, "finishReason", "finish_reason"),
        meta=_get(data, "usageMetadata", "usage_metadata"),
    )


#: Events larger than this are parsed in a worker thread (an image event is megabytes of base64).
_THREAD_PARSE_BYTES = 64 * 1024

_HEADLINE = re.compile(r"^\s*\*\*(.+?)\*\*")


def thought_headline(text: str) -> str | None:
    """The title of a thought ("**Composing the scene**\n\nI'm ..."), or its first line, shortened."""
    match = _HEADLINE.match(text)
    line = match.group(1) if match else text.strip().split("\n", 1)[0]
    line = line.strip().strip("*").strip()
    return (line[:97] + "…" if len(line) > 100 else line) or None


class StreamAssembler:
    """Builds the final answer from a stream of events, telling the caller about drafts as they come.

    Thought parts (headlines and drafts) are shown, never kept: the result and the turn replayed on the
    next edit are exactly what the non-streaming call returns. Adjacent text parts, which a stream
    splits, are joined again.
    """

    def __init__(self, provider: str, on_preview: Callable[[Preview], None]) -> None:
        self.provider = provider
        self.on_preview = on_preview
        self.started = time.perf_counter()
        self.decoder = SSEDecoder()
        self.parts: list[Part] = []
        self.finish: str | None = None
        self.meta: dict[str, Any] = {}
        self.headline: str | None = None
        self.drafts = 0
        self.decode_ms = 0.0
        self.events = 0
        self.seen_bytes = False
        #: A server that answered the stream URL with one plain JSON body (some relays): kept whole.
        self.plain: bytearray | None = None

    async def feed(self, chunk: bytes) -> None:
        if not self.seen_bytes and chunk.strip():
            self.seen_bytes = True
            if chunk.lstrip()[:1] in (b"{", b"["):
                self.plain = bytearray()
        if self.plain is not None:
            self.plain += chunk
            return
        for data in self.decoder.feed(chunk):
            await self._event(data)

    async def finish_stream(self) -> tuple[list[GeneratedImage], str | None, Turn, dict[str, Any]]:
        """The whole answer once the body has ended; a stream cut short is an error, never a result."""
        if self.plain is not None:
            return await self._plain(bytes(self.plain))
        for data in self.decoder.close():
            try:
                await self._event(data)
            except ResponseError:
                # The body ended inside this event (no blank line after it, and not whole JSON): cut short.
                raise UnavailableError(
                    f"{self.provider}'s stream ended before the answer was complete.", provider=self.provider
                ) from None
        if self.finish is None:
            # The body ended cleanly but the answer did not: a connection cut short, retried as one.
            raise UnavailableError(
                f"{self.provider}'s stream ended before the answer was complete.", provider=self.provider
            )
        return _answer(_join_text(self.parts), self.finish, self.meta, self.provider)

    async def _plain(self, body: bytes) -> tuple[list[GeneratedImage], str | None, Turn, dict[str, Any]]:
        if body.lstrip().startswith(b"{"):
            return await asyncio.to_thread(parse_response, body, self.provider)
        chunks = load_json(body)  # the non-SSE stream form: a JSON array of chunks
        if not isinstance(chunks, list):
            raise ResponseError(f"{self.provider} returned malformed JSON.", provider=self.provider)
        for chunk in chunks:
            await self._event(orjson.dumps(chunk))
        self.decoder = SSEDecoder()
        self.plain = None
        return await self.finish_stream()

    async def _event(self, data: bytes) -> None:
        self.events += 1
        started = time.perf_counter()
        if len(data) > _THREAD_PARSE_BYTES:
            event = await asyncio.to_thread(parse_stream_event, data, self.provider)
        else:
            event = parse_stream_event(data, self.provider)
        self.decode_ms += (time.perf_counter() - started) * 1000
        if event.meta:
            self.meta = event.meta
        if event.finish:
            self.finish = event.finish
        for part in event.parts:
            if not part.thought:
                self.parts.append(part)
            elif part.image is not None:
                self.drafts += 1
                image = part.image
                draft = GeneratedImage(data=image.data, mime=image.mime, width=image.width, height=image.height)
                self._tell(draft)
            elif part.text and (headline := thought_headline(part.text)) and headline != self.headline:
                self.headline = headline
                self._tell(None)

    def _tell(self, draft: GeneratedImage | None) -> None:
        preview = Preview(
            headline=self.headline, draft=draft, drafts=self.drafts, elapsed=time.perf_counter() - self.started
        )
        try:
            self.on_preview(preview)
        except Exception:  # a caller's display problem must not cost the member their image
            log.exception("the preview callback failed")


def _join_text(parts: list[Part]) -> list[Part]:
    """Rejoin text that the stream split into pieces, keeping the first signature among them."""
    joined: list[Part] = []
    for part in parts:
        last = joined[-1] if joined else None
        if last is not None and last.text is not None and part.text is not None and not part.thought_signature:
            joined[-1] = Part(text=last.text + part.text, thought_signature=last.thought_signature)
        else:
            joined.append(part)
    return joined


def map_error(
    status: int, content: bytes | bytearray, headers: httpx.Headers, *, provider: str, key_label: str
) -> GenerationError:
    """A Gemini error response (A4) as a typed error."""
    body = load_json(content)
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message") or f"HTTP {status}")
    grpc_status = str(error.get("status") or "")
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    reasons = {str(d.get("reason")) for d in details if str(d.get("@type", "")).endswith("ErrorInfo")}

    if status == 429:
        retry_after = parse_retry_after(headers)
        per_day = False
        for detail in details:
            kind = str(detail.get("@type", ""))
            if kind.endswith("RetryInfo"):
                retry_after = parse_duration(detail.get("retryDelay")) or retry_after
            elif kind.endswith("QuotaFailure"):
                for violation in detail.get("violations") or []:
                    if "PerDay" in str(violation.get("quotaId", "")):
                        per_day = True
        what = "daily quota exhausted" if per_day else "rate limited"
        return RateLimitedError(
            f"{provider}: {what}: {message}", retry_after=retry_after, per_day=per_day, provider=provider
        )
    if status in (401, 403) or "API_KEY_INVALID" in reasons or "API key not valid" in message:
        return AuthError(f"{key_label}: {message}", key_label=key_label, provider=provider, status=status)
    if status == 400 and grpc_status == "FAILED_PRECONDITION":
        return AuthError(
            f"{key_label}: {message} (billing may be required)",
            key_label=key_label,
            provider=provider,
            status=status,
        )
    if status == 404:
        return InvalidRequest(f"{provider}: model not found: {message}", provider=provider, status=status)
    if status in (408, 504):
        return GenerationTimeout(f"{provider}: {message}", provider=provider, status=status)
    if status >= 500:
        return UnavailableError(
            f"{provider} is unavailable ({status}): {message}",
            retry_after=parse_retry_after(headers),
            provider=provider,
            status=status,
        )
    return InvalidRequest(f"{provider} refused the request: {message}", provider=provider, status=status)
