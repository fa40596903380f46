"""OpenAI Images API and OpenRouter-style chat completions (spec B)."""

from __future__ import annotations

import base64
import math
import re
import secrets
import time
import zlib
from typing import TYPE_CHECKING, Any

from .catalog import MODELS, ModelSpec, closest_ratio
from .faults import JSON, MODERATION_MESSAGE, Fault, openai_error
from .gemini import NOT_AN_IMAGE
from .images import MIME, ImageFormat, Payload, aimage_b64, aimage_bytes, image_dimensions, sniff_mime
from .wire import Blobs, Reply, decode_b64, json_reply

if TYPE_CHECKING:
    from .server import FakeImageAPI, RecordedRequest

_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_DATA_URI = re.compile(r"^data:([\w/+.-]+);base64,(.*)$", re.S)
_MARKDOWN_CHAT_TEXT = "Here is your image."
_OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056, "standard": 1056, "hd": 4160}
OPENAI_JSON = "application/json"


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = openai_error(message, type_, param, code)


def _headers() -> list[tuple[str, str]]:
    return [("x-request-id", "req_" + secrets.token_hex(16)), ("openai-processing-ms", "1234")]


def reply_error(status: int, body: JSON, extra: tuple[tuple[str, str], ...] = ()) -> Reply:
    return json_reply(status, body, [*_headers(), *extra], content_type=OPENAI_JSON)


def moderation_reply() -> Reply:
    return reply_error(400, openai_error(MODERATION_MESSAGE, "image_generation_user_error", None, "moderation_blocked"))


def _invalid(param: str, value: object, supported: str) -> OpenAIError:
    return OpenAIError(400, f"Invalid value: '{value}'. Supported values are: {supported}.", param, "invalid_value")


def _parse_size(value: object) -> tuple[int, int]:
    if value is None or value == "auto":
        return 1024, 1024
    m = _SIZE.match(str(value))
    if not m:
        raise _invalid("size", value, "'1024x1024', '1024x1536', '1536x1024', and 'auto'")
    w, h = int(m.group(1)), int(m.group(2))
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise _invalid("size", value, "'1024x1024', '1024x1536', '1536x1024', and 'auto'")
    return w, h


def _parse_n(value: object) -> int:
    try:
        n = int(str(value)) if value is not None else 1
    except ValueError:
        raise OpenAIError(
            400, "Invalid type for 'n': expected an integer, but got a string instead.", "n", "invalid_type"
        ) from None
    if n < 1:
        raise OpenAIError(
            400,
            f"Invalid 'n': integer below minimum value. Expected a value >= 1, but got {n} instead.",
            "n",
            "integer_below_min_value",
        )
    if n > 10:
        raise OpenAIError(
            400,
            f"Invalid 'n': integer above maximum value. Expected a value <= 10, but got {n} instead.",
            "n",
            "integer_above_max_value",
        )
    return n


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


async def _image_raw(fake: FakeImageAPI, w: int, h: int, variant: int, fmt: ImageFormat, fault: Fault | None) -> bytes:
    """The output image's bytes (cached objects, never copies), honouring content faults."""
    payload: Payload = fake.payload
    kind = fault.name if fault is not None else None
    if kind == "mislabelled_mime":
        other: ImageFormat = "png" if fmt == "jpeg" else "jpeg"
        return await aimage_bytes(w, h, payload, variant, other)
    if kind == "not_an_image":
        return NOT_AN_IMAGE
    return await aimage_bytes(w, h, payload, variant, fmt)


async def _image_payload(
    fake: FakeImageAPI, w: int, h: int, variant: int, fmt: ImageFormat, fault: Fault | None
) -> bytes:
    """base64 (standard alphabet, ASCII bytes) of the output image, honouring content faults."""
    if fault is not None and fault.name in ("mislabelled_mime", "not_an_image"):
        return base64.b64encode(await _image_raw(fake, w, h, variant, fmt, fault))
    return await aimage_b64(w, h, fake.payload, variant, fmt)


async def _images_reply(
    fake: FakeImageAPI, params: dict[str, Any], prompt: str, input_images: int, fault: Fault | None
) -> Reply:
    kind = fault.name if fault is not None else None
    if kind in ("prompt_block", "output_block"):
        return moderation_reply()
    model = str(params.get("model") or "gpt-image-1")
    w, h = _parse_size(params.get("size"))
    n = _parse_n(params.get("n"))
    response_format = params.get("response_format")
    if response_format not in (None, "b64_json", "url"):
        raise _invalid("response_format", response_format, "'url' and 'b64_json'")
    formats: dict[str, ImageFormat] = {"png": "png", "jpeg": "jpeg", "webp": "webp"}
    fmt_value = params.get("output_format") or "png"
    if fmt_value not in formats:
        raise _invalid("output_format", fmt_value, "'png', 'jpeg', and 'webp'")
    fmt = formats[fmt_value]
    quality = str(params.get("quality") or "auto")
    variant = zlib.crc32(prompt.encode()) % 8
    blobs = Blobs()
    data: list[JSON] = []
    count = 0 if kind == "text_only" else n
    for i in range(count):
        item: JSON
        if response_format == "url":
            file_id = secrets.token_hex(12)
            fake.store_file(file_id, await _image_raw(fake, w, h, variant + i, fmt, fault), MIME[fmt])
            item = {"url": f"{fake.base_url}/files/{file_id}.{fmt}"}
        else:
            item = {"b64_json": blobs.add(await _image_payload(fake, w, h, variant + i, fmt, fault))}
        if model.startswith("dall-e-3"):
            item["revised_prompt"] = f"A detailed illustration of {prompt}"
        data.append(item)
    text_in = _tokens(prompt)
    image_in = input_images * 323
    per_image = math.ceil(_OUTPUT_TOKENS.get(quality, 1056) * (w * h) / (1024 * 1024))
    out_tokens = per_image * count
    body: JSON = {"created": int(time.time()), "data": data}
    if model.startswith("gpt-image"):
        body.update(
            {
                "background": "opaque",
                "output_format": fmt,
                "quality": quality if quality != "auto" else "high",
                "size": f"{w}x{h}",
            }
        )
    body["usage"] = {
        "input_tokens": text_in + image_in,
        "input_tokens_details": {"image_tokens": image_in, "text_tokens": text_in},
        "output_tokens": out_tokens,
        "output_tokens_details": {"image_tokens": out_tokens, "text_tokens": 0},
        "total_tokens": text_in + image_in + out_tokens,
    }
    return json_reply(200, body, _headers(), blobs, content_type=OPENAI_JSON)


def _bad_json() -> OpenAIError:
    return OpenAIError(
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
        "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
    )


async def generations(fake: FakeImageAPI, rec: RecordedRequest, fault: Fault | None) -> Reply:
    try:
        body = rec.json
        if not isinstance(body, dict):
            raise _bad_json()
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise OpenAIError(400, "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
        return await _images_reply(fake, body, prompt, 0, fault)
    except OpenAIError as err:
        return reply_error(err.status, err.body)


async def edits(fake: FakeImageAPI, rec: RecordedRequest, fault: Fault | None) -> Reply:
    try:
        if not rec.headers.get("content-type", "").startswith("multipart/form-data"):
            raise OpenAIError(
                400,
                "Invalid Content-Type header (application/json), expected multipart/form-data. "
                "(HINT: If you're using curl, you can pass -F 'key=value' to send multipart form data)",
            )
        params: dict[str, Any] = {k: v[-1] for k, v in rec.form.items()}
        images = [*rec.files.get("image", []), *rec.files.get("image[]", [])]
        if not images:
            raise OpenAIError(400, "Missing required parameter: 'image'.", "image", "missing_required_parameter")
        for i, (_name, _ctype, blob) in enumerate(images, start=1):
            if sniff_mime(blob) not in ("image/png", "image/jpeg", "image/webp"):
                raise OpenAIError(
                    400,
                    f"Invalid image file or mode for image {i}, please check your image file.",
                    "image",
                    "invalid_image_file",
                )
        prompt = params.get("prompt")
        if not prompt:
            raise OpenAIError(400, "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
        return await _images_reply(fake, params, str(prompt), len(images), fault)
    except OpenAIError as err:
        return reply_error(err.status, err.body)


def _chat_inputs(messages: list[Any]) -> tuple[str, int, int, bytes | None]:
    """(last user text, text tokens, input images, last input image bytes)."""
    prompt = ""
    text_tokens = 0
    images = 0
    last: bytes | None = None
    for mi, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg:
            raise OpenAIError(400, f"Invalid value for 'messages[{mi}]'.", f"messages[{mi}]", "invalid_value")
        content = msg.get("content")
        parts: list[Any] = [{"type": "text", "text": content}] if isinstance(content, str) else (content or [])
        for part in parts:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                text_tokens += _tokens(part["text"])
                if msg["role"] == "user":
                    prompt = part["text"]
            elif part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url", "")
                m = _DATA_URI.match(url)
                if m:
                    try:
                        blob = decode_b64(m.group(2))
                    except ValueError:
                        raise OpenAIError(400, "Invalid image data URI.", "messages", "invalid_image_url") from None
                    if sniff_mime(blob) is None:
                        raise OpenAIError(
                            400,
                            "The image data you provided does not represent a valid image.",
                            "messages",
                            "invalid_image_format",
                        )
                    last = blob
                images += 1
    return prompt, text_tokens, images, last


async def chat_completions(fake: FakeImageAPI, rec: RecordedRequest, fault: Fault | None) -> Reply:
    try:
        body = rec.json
        if not isinstance(body, dict):
            raise _bad_json()
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise OpenAIError(400, "Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
        model = str(body.get("model") or "google/gemini-3-pro-image-preview")
        prompt, text_tokens, input_images, last_image = _chat_inputs(messages)
        spec: ModelSpec = MODELS.get(model.rsplit("/", 1)[-1]) or MODELS["gemini-3-pro-image-preview"]
        cfg = body.get("image_config") or {}
        if not isinstance(cfg, dict):
            raise OpenAIError(
                400, "Invalid type for 'image_config': expected an object.", "image_config", "invalid_type"
            )
        ratio = cfg.get("aspect_ratio")
        if ratio is not None and ratio not in spec.ratios:
            raise _invalid("image_config.aspect_ratio", ratio, ", ".join(spec.ratios))
        size = cfg.get("image_size") or "1K"
        if spec.sizes and size not in spec.sizes:
            raise _invalid("image_config.image_size", size, ", ".join(spec.sizes))
        if not spec.sizes:
            size = "1K"
        if ratio is None:
            dims = image_dimensions(last_image) if last_image else None
            ratio = closest_ratio(spec, *dims) if dims else "1:1"
        modalities = [str(m).lower() for m in body.get("modalities") or ["text"]]
    except OpenAIError as err:
        return reply_error(err.status, err.body)

    kind = fault.name if fault is not None else None
    blobs = Blobs()
    message: JSON = {"role": "assistant", "content": _MARKDOWN_CHAT_TEXT, "refusal": None, "reasoning": None}
    finish, native = "stop", "STOP"
    image_tokens = 0
    if kind in ("prompt_block", "output_block"):
        message["content"] = None
        finish = "content_filter"
        native = (fault.reason if fault else None) or "IMAGE_SAFETY"
    elif kind == "text_only" or "image" not in modalities:
        message["content"] = (
            fault.text
            if kind == "text_only" and fault and fault.text
            else (f"I can describe {prompt[:80]!r}, but images were not requested.")
        )
    else:
        w, h = spec.pixel_size(ratio, size)
        variant = zlib.crc32(prompt.encode()) % 8
        b64 = await _image_payload(fake, w, h, variant, "png", fault)
        uri = blobs.add(b"data:image/png;base64,", b64)
        image_tokens = spec.tokens_per_image(size)
        if kind == "markdown_image" or fake.markdown_images:
            message["content"] = f"{_MARKDOWN_CHAT_TEXT}\n\n![image]({uri})"
        else:
            message["images"] = [{"type": "image_url", "image_url": {"url": uri}}]
    prompt_tokens = text_tokens + input_images * 258
    out_text = _tokens(message["content"]) if isinstance(message["content"], str) and not blobs_in(message) else 5
    reasoning = 120 if spec.thinks else 0
    completion = image_tokens + out_text + reasoning
    response: JSON = {
        "id": f"gen-{int(time.time())}-{secrets.token_urlsafe(15)}",
        "provider": "Google",
        "model": model,
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": [
            {"logprobs": None, "finish_reason": finish, "native_finish_reason": native, "index": 0, "message": message}
        ],
        "system_fingerprint": None,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning, "image_tokens": image_tokens},
        },
    }
    return json_reply(200, response, _headers(), blobs, content_type=OPENAI_JSON)


def blobs_in(message: JSON) -> bool:
    content = message.get("content")
    return isinstance(content, str) and "![image](" in content
