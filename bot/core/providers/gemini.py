"""Gemini's native ``generateContent`` API (spec sections A1-A4)."""

from __future__ import annotations

import asyncio
import binascii
import time
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
from ..imaging import image_size, sniff_mime
from ..models import ModelSpec
from ..types import GeneratedImage, GenerationResult, ImageInput, ImageRequest, Part, Turn
from .base import Provider, load_json, parse_duration, parse_retry_after

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


class GeminiProvider(Provider):
    carries_turns = True

    async def prepare(self, request: ImageRequest, spec: ModelSpec) -> bytes:
        # Base64 of several MB of references is CPU work: keep it off the event loop.
        return await asyncio.to_thread(build_request_body, request, spec)

    async def attempt(
        self, prepared: Any, request: ImageRequest, spec: ModelSpec, key: str, key_label: str
    ) -> GenerationResult:
        url = f"{self.config.base_url}/{self.config.api_version}/models/{spec.model_id}:generateContent"
        reply = await self.http.request(
            "POST",
            url,
            headers={"x-goog-api-key": key, "content-type": "application/json"},
            content=prepared,
            read_timeout=self.config.timeout_for(request.size),
        )
        if reply.status != 200:
            raise map_error(reply.status, reply.content, reply.headers, provider=self.name, key_label=key_label)
        decode_started = time.perf_counter()
        parsed = await asyncio.to_thread(parse_response, reply.content, self.name)
        decode_ms = (time.perf_counter() - decode_started) * 1000
        images, text, turn, meta = parsed
        return self.result(
            reply,
            request,
            spec,
            images=images,
            text=text,
            usage=gemini_usage(meta, spec.pricing, size=request.size, images=len(images)),
            decode_ms=decode_ms,
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


def build_request_body(request: ImageRequest, spec: ModelSpec) -> bytes:
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
    if request.thinking and request.thinking in spec.thinking_levels:
        generation["thinkingConfig"] = {"thinkingLevel": request.thinking}
    return orjson.dumps({"contents": contents, "generationConfig": generation})


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    """The API speaks proto JSON: accept either spelling of a key."""
    return obj.get(camel, obj.get(snake))


def _b64decode(data: str | bytes | memoryview) -> bytes:
    try:
        return pybase64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        text = bytes(data) if not isinstance(data, str) else data.encode("ascii", "replace")
        return pybase64.b64decode(text + b"=" * (-len(text) % 4), altchars=b"-_")


#: Base64 strings shorter than this are left for the JSON parser.
_MIN_CUT = 4096


def cut_inline_payloads(content: bytes | bytearray) -> tuple[bytes | bytearray, list[memoryview]]:
    """Lift the big base64 image strings out of a response before JSON parsing.

    An image response is 99% one base64 string: parsing it into an 8 MB ``str`` and then decoding that costs
    about three times more than decoding straight from the received bytes. Each payload of an
    ``inlineData.data`` key is replaced by ``"#N"`` and returned as a zero-copy view; anything unusual (an
    escape inside the string) is left to the parser.
    """
    view = memoryview(content)
    pieces: list[bytes | memoryview] = []
    payloads: list[memoryview] = []
    pos = 0
    while (key := content.find(b'"data"', pos)) >= 0:
        colon = key + 6
        while colon < len(content) and content[colon] in b" \t\r\n":
            colon += 1
        quote = colon + 1
        while quote < len(content) and content[quote] in b" \t\r\n":
            quote += 1
        if colon >= len(content) or content[colon] != ord(":") or quote >= len(content) or content[quote] != ord('"'):
            pos = key + 6
            continue
        start = quote + 1
        end = content.find(b'"', start)
        if end < 0:
            break
        inline = b"nline" in content[max(0, key - 100) : key]  # inlineData / inline_data
        if inline and end - start >= _MIN_CUT and content.find(b"\\", start, end) < 0:
            pieces.append(view[pos:start])
            pieces.append(b"#%d" % len(payloads))
            payloads.append(view[start:end])
        else:
            pieces.append(view[pos:end])
        pos = end
    if not payloads:
        return content, []
    pieces.append(view[pos:])
    return b"".join(pieces), payloads


def parse_response(
    content: bytes | bytearray, provider: str
) -> tuple[list[GeneratedImage], str | None, Turn, dict[str, Any]]:
    """A 200 body into images, text, the model turn (for replay) and usage metadata.

    Raises BlockedError, NoImageError or ResponseError. Runs in a worker thread.
    """
    try:
        skeleton, payloads = cut_inline_payloads(content)
        data = orjson.loads(skeleton)
    except orjson.JSONDecodeError:
        raise ResponseError(f"{provider} returned malformed JSON.", provider=provider) from None
    if not isinstance(data, dict):
        raise ResponseError(f"{provider} returned an unexpected JSON document.", provider=provider)
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
    meta = _get(data, "usageMetadata", "usage_metadata") or {}
    candidates = data.get("candidates") or []
    if not candidates:
        raise NoImageError("The model returned no answer at all.", provider=provider)
    candidate = candidates[0]
    finish = _get(candidate, "finishReason", "finish_reason")
    raw_parts = (candidate.get("content") or {}).get("parts") or []

    images: list[GeneratedImage] = []
    texts: list[str] = []
    parts: list[Part] = []
    for raw in raw_parts:
        if not isinstance(raw, dict):
            continue
        thought = bool(raw.get("thought"))
        signature = _get(raw, "thoughtSignature", "thought_signature")
        inline = _get(raw, "inlineData", "inline_data")
        if inline is not None:
            raw_data = str(inline.get("data") or "")
            if raw_data.startswith("#") and raw_data[1:].isdigit() and int(raw_data[1:]) < len(payloads):
                blob = _b64decode(payloads[int(raw_data[1:])])
            else:
                blob = _b64decode(raw_data)
            # Trust the bytes, not the label: mimeType has been seen not to match.
            mime = sniff_mime(blob)
            if mime is None:
                if thought:
                    continue  # a broken draft is no reason to fail the request
                raise ResponseError(f"{provider} returned image data that is not an image.", provider=provider)
            width, height = image_size(blob)
            parts.append(
                Part(
                    image=ImageInput(data=blob, mime=mime, width=width, height=height),
                    thought=thought,
                    thought_signature=signature,
                )
            )
            if not thought:
                images.append(GeneratedImage(data=blob, mime=mime, width=width, height=height))
        elif "text" in raw:
            parts.append(Part(text=str(raw["text"]), thought=thought, thought_signature=signature))
            if not thought:
                texts.append(str(raw["text"]))
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
