"""OpenAI-compatible providers: the Images API (spec B) and the chat-completions image shape of
OpenRouter-style relays that serve Gemini image models."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pybase64

from ..cost import openai_usage
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
from ..imaging import decode_base64, image_size, sniff_mime
from ..models import ModelSpec
from ..types import GeneratedImage, GenerationResult, ImageRequest, Preview
from .base import Provider, load_json, parse_retry_after

#: Images behind a URL are downloaded through the same pool, up to this size.
MAX_URL_IMAGE_BYTES = 64 * 1024 * 1024
_EXT = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/heic": "heic",
    "image/heif": "heif",
}
_DATA_URI = re.compile(r"data:(image/[\w.+-]+);base64,([A-Za-z0-9+/=_-]+)")
_BLOCK_CODES = {"moderation_blocked", "content_policy_violation", "content_filter", "safety_violation"}


class _OpenAIBase(Provider):
    def _headers(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def _extras(self, request: ImageRequest) -> dict[str, Any]:
        extra = dict(self.config.extra_body)
        if request.thinking and self.config.thinking_field:
            extra[self.config.thinking_field] = request.thinking
        return extra

    async def _decode(self, raw: str, *, read_timeout: float) -> GeneratedImage:
        """An image given as base64, a data URI or an http(s) URL (downloaded through the pool)."""
        if raw.startswith(("http://", "https://")):
            reply = await self.http.request("GET", raw, read_timeout=read_timeout, max_bytes=MAX_URL_IMAGE_BYTES)
            if reply.status != 200:
                raise UnavailableError(
                    f"{self.name}: downloading the image failed ({reply.status}).",
                    provider=self.name,
                    status=reply.status,
                )
            blob = bytes(reply.content)
        else:
            match = _DATA_URI.match(raw)
            try:
                blob = await asyncio.to_thread(decode_base64, match.group(2) if match else raw)
            except ValueError:
                blob = b""  # not base64 at all: refused below like any other non-image
        mime = sniff_mime(blob)
        if mime is None:
            raise ResponseError(f"{self.name} returned image data that is not an image.", provider=self.name)
        width, height = await asyncio.to_thread(image_size, blob)
        return GeneratedImage(data=blob, mime=mime, width=width, height=height)


class OpenAIImagesProvider(_OpenAIBase):
    """``/images/generations`` without references, ``/images/edits`` (multipart) with them."""

    async def prepare(self, request: ImageRequest, spec: ModelSpec, *, stream: bool) -> dict[str, Any]:
        width, height = spec.pixel_size(request.aspect_ratio or "1:1", request.size)
        fields: dict[str, Any] = {
            "model": spec.model_id,
            "prompt": request.prompt,
            "n": 1,
            "size": f"{width}x{height}",
        }
        fields.update(self._extras(request))
        return fields

    async def attempt(
        self,
        prepared: Any,
        request: ImageRequest,
        spec: ModelSpec,
        key: str,
        key_label: str,
        on_preview: Callable[[Preview], None] | None,
    ) -> GenerationResult:
        timeout = self.config.timeout_for(request.size)
        if request.references:
            # One image goes as `image`, several as repeated `image[]` (spec B).
            field = "image" if len(request.references) == 1 else "image[]"
            files = [
                (field, (f"reference-{i + 1}.{_EXT.get(ref.mime, 'png')}", ref.data, ref.mime))
                for i, ref in enumerate(request.references)
            ]
            form = {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in prepared.items()}
            reply = await self.http.request(
                "POST",
                f"{self.config.base_url}/images/edits",
                headers=self._headers(key),
                files=files,
                data=form,
                read_timeout=timeout,
            )
        else:
            reply = await self.http.request(
                "POST",
                f"{self.config.base_url}/images/generations",
                headers={**self._headers(key), "content-type": "application/json"},
                content=orjson.dumps(prepared),
                read_timeout=timeout,
            )
        if reply.status != 200:
            raise map_error(reply.status, reply.content, reply.headers, provider=self.name, key_label=key_label)
        decode_started = time.perf_counter()
        body = await asyncio.to_thread(load_json, reply.content)
        if not isinstance(body, dict):
            raise ResponseError(f"{self.name} returned malformed JSON.", provider=self.name)
        items = [d for d in body.get("data") or [] if isinstance(d, dict)]
        if not items:
            raise NoImageError(f"{self.name} answered without an image.", provider=self.name)
        images = []
        for item in items:
            raw = item.get("b64_json") or item.get("url")
            if not raw:
                raise NoImageError(f"{self.name} answered without an image.", provider=self.name)
            images.append(await self._decode(str(raw), read_timeout=timeout))
        decode_ms = (time.perf_counter() - decode_started) * 1000
        return self.result(
            reply,
            request,
            spec,
            images=images,
            text=items[-1].get("revised_prompt"),
            usage=openai_usage(body.get("usage"), spec.pricing, size=request.size, images=len(images)),
            decode_ms=decode_ms,
        )


class OpenAIChatProvider(_OpenAIBase):
    """``/chat/completions`` with ``modalities: ["image", "text"]``; the image comes back in
    ``message.images`` (or, on some relays, as a markdown data URI in ``message.content``)."""

    def _build(self, request: ImageRequest, spec: ModelSpec) -> bytes:
        content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
        for ref in request.references:
            uri = f"data:{ref.mime};base64,{pybase64.b64encode(ref.data).decode('ascii')}"
            content.append({"type": "image_url", "image_url": {"url": uri}})
        image_config: dict[str, str] = {"image_size": request.size}
        if request.aspect_ratio:
            image_config["aspect_ratio"] = request.aspect_ratio
        body: dict[str, Any] = {
            "model": spec.model_id,
            "messages": [{"role": "user", "content": content}],
            "modalities": ["image", "text"],
            "image_config": image_config,
        }
        body.update(self._extras(request))
        return orjson.dumps(body)

    async def prepare(self, request: ImageRequest, spec: ModelSpec, *, stream: bool) -> bytes:
        return await asyncio.to_thread(self._build, request, spec)

    async def attempt(
        self,
        prepared: Any,
        request: ImageRequest,
        spec: ModelSpec,
        key: str,
        key_label: str,
        on_preview: Callable[[Preview], None] | None,
    ) -> GenerationResult:
        timeout = self.config.timeout_for(request.size)
        reply = await self.http.request(
            "POST",
            f"{self.config.base_url}/chat/completions",
            headers={**self._headers(key), "content-type": "application/json"},
            content=prepared,
            read_timeout=timeout,
        )
        if reply.status != 200:
            raise map_error(reply.status, reply.content, reply.headers, provider=self.name, key_label=key_label)
        decode_started = time.perf_counter()
        body = await asyncio.to_thread(load_json, reply.content)
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            raise ResponseError(f"{self.name} returned malformed JSON.", provider=self.name)
        if "error" in body and not body["choices"]:
            raise map_error(502, reply.content, reply.headers, provider=self.name, key_label=key_label)
        choice = body["choices"][0] if body["choices"] else {}
        message = choice.get("message") or {}
        text = message.get("content") if isinstance(message.get("content"), str) else None
        urls = [
            str((item.get("image_url") or {}).get("url"))
            for item in message.get("images") or []
            if isinstance(item, dict) and (item.get("image_url") or {}).get("url")
        ]
        if not urls and text:
            urls = [m.group(0) for m in _DATA_URI.finditer(text)]
            text = _DATA_URI.sub("", text).replace("![]()", "").strip() or None
        if not urls:
            if choice.get("finish_reason") == "content_filter":
                raise BlockedError(
                    "The image was withheld by the provider's safety filters.",
                    stage="output",
                    reason="content_filter",
                    model_text=text,
                    provider=self.name,
                )
            said = f' It said: "{text[:300]}"' if text else ""
            raise NoImageError(
                f"The model answered without an image.{said}",
                model_text=text,
                finish_reason=choice.get("finish_reason"),
                provider=self.name,
            )
        images = [await self._decode(url, read_timeout=timeout) for url in urls]
        decode_ms = (time.perf_counter() - decode_started) * 1000
        return self.result(
            reply,
            request,
            spec,
            images=images,
            text=text,
            usage=openai_usage(body.get("usage"), spec.pricing, size=request.size, images=len(images)),
            decode_ms=decode_ms,
        )


def map_error(
    status: int, content: bytes | bytearray, headers: httpx.Headers, *, provider: str, key_label: str
) -> GenerationError:
    """An OpenAI-style error body (``{"error": {"message", "type", "param", "code"}}``) as a typed error."""
    body = load_json(content)
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message") or f"HTTP {status}")
    code = str(error.get("code") or error.get("type") or "")
    if code in _BLOCK_CODES:
        return BlockedError(
            f"The prompt was blocked by the provider's safety filters ({code}).",
            stage="prompt",
            reason=code,
            model_text=message,
            provider=provider,
        )
    if status == 429:
        # insufficient_quota is billing, not a burst: it won't clear by waiting.
        per_day = code == "insufficient_quota"
        return RateLimitedError(
            f"{provider}: {'quota exhausted' if per_day else 'rate limited'}: {message}",
            retry_after=parse_retry_after(headers),
            per_day=per_day,
            provider=provider,
        )
    if status in (401, 403):
        return AuthError(f"{key_label}: {message}", key_label=key_label, provider=provider, status=status)
    if status in (408, 504):
        return GenerationTimeout(f"{provider}: {message}", provider=provider, status=status)
    if status >= 500 or status == 409:  # retried only for RETRYABLE_STATUSES (see UnavailableError)
        return UnavailableError(
            f"{provider} is unavailable ({status}): {message}",
            retry_after=parse_retry_after(headers),
            provider=provider,
            status=status,
        )
    if status == 404:
        return InvalidRequest(f"{provider}: not found: {message}", provider=provider, status=status)
    return InvalidRequest(f"{provider} refused the request: {message}", provider=provider, status=status)
