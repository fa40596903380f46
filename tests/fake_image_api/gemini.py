"""``POST /{v1,v1beta}/models/{model}:generateContent`` (and ``:streamGenerateContent``), spec A0-A5."""

from __future__ import annotations

import base64
import math
import secrets
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .catalog import INPUT_IMAGE_TOKENS, MODELS, ModelSpec, closest_ratio, quote_list
from .faults import JSON, Fault, gemini_error, not_found_message
from .images import Payload, aimage_b64, aimage_bytes, image_dimensions, sniff_mime
from .wire import Blobs, Reply, StreamReply, camelize, decode_b64, json_reply

if TYPE_CHECKING:
    from .server import FakeImageAPI

MAX_REQUEST_BYTES = 20 * 1024 * 1024  # spec A1: whole inline request <= 20 MB
SUPPORTED_INPUT_MIME = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
KNOWN_IMAGE_CONFIG = frozenset({"aspectRatio", "imageSize"})
KNOWN_THINKING_CONFIG = frozenset({"thinkingLevel", "thinkingBudget", "includeThoughts"})
THINKING_LEVELS = frozenset({"MINIMAL", "LOW", "MEDIUM", "HIGH"})
MODALITIES = frozenset({"TEXT", "IMAGE"})
# The documented dummy values that skip signature validation (ai.google.dev thought-signatures FAQ).
DUMMY_SIGNATURES = frozenset({"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"})
FINAL_TEXT = "Here is your image."
REFUSAL_TEXT = "I'm unable to generate that image. Please try a different prompt."
NOT_AN_IMAGE = b"<!DOCTYPE html><html><head><title>Error</title></head><body>upstream error</body></html>\n"
TROUBLESHOOTING = "https://developers.generativeai.google/guide/troubleshooting"
SIGNATURE_DOCS = "https://ai.google.dev/gemini-api/docs/thought-signatures#model-behavior"
# When each part of a streamed answer goes out, as a share of the latency (spec A5; the drafts at ~40% and
# ~70% are what a member sees as live previews). The final parts and the last event come at 100%.
HEADLINE_AT = (0.10, 0.55)
DRAFT_AT = (0.40, 0.70)


class GeminiError(Exception):
    def __init__(self, code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _field_error(path: str, message: str) -> GeminiError:
    return GeminiError(400, f"* GenerateContentRequest.{path}: {message}\n")


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


@dataclass(slots=True)
class ParsedRequest:
    spec: ModelSpec
    ratio: str
    size: str
    modalities: frozenset[str]
    include_thoughts: bool
    thinking_level: str | None
    prompt: str
    prompt_text_tokens: int
    prompt_images: int


def _config_dict(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GeminiError(400, f"Invalid value at '{path}', expected an object.")
    return value


def _check_unknown(obj: dict[str, Any], known: frozenset[str], path: str) -> None:
    for name in obj:
        if name not in known:
            raise GeminiError(
                400, f"Invalid JSON payload received. Unknown name \"{name}\" at '{path}': Cannot find field."
            )


def parse_request(fake: FakeImageAPI, body: Any, model: str, api_version: str) -> ParsedRequest:
    """Validate like the real API; raises GeminiError with the real status and message."""
    if not isinstance(body, dict):
        raise GeminiError(400, "Invalid JSON payload received. Unexpected token.")
    req = camelize(body)
    spec = MODELS.get(model)
    if spec is None:
        raise GeminiError(404, not_found_message(model, api_version), "NOT_FOUND")

    gen = _config_dict(req.get("generationConfig"), "generation_config")
    image_cfg = _config_dict(gen.get("imageConfig"), "generation_config.image_config")
    _check_unknown(image_cfg, KNOWN_IMAGE_CONFIG, "generation_config.image_config")
    thinking = _config_dict(gen.get("thinkingConfig"), "generation_config.thinking_config")
    _check_unknown(thinking, KNOWN_THINKING_CONFIG, "generation_config.thinking_config")

    ratio = image_cfg.get("aspectRatio")
    if ratio is not None and ratio not in spec.ratios:
        raise _field_error(
            "generation_config.image_config.aspect_ratio",
            f"aspect_ratio must be one of {quote_list(spec.ratios)}.",
        )
    size = image_cfg.get("imageSize")
    if size is not None:
        if not spec.sizes:
            raise GeminiError(400, "Image size is not supported for this model.")
        if size not in spec.sizes:
            raise _field_error(
                "generation_config.image_config.image_size",
                f"image_size must be one of {quote_list(spec.sizes)}.",
            )

    level = thinking.get("thinkingLevel")
    if level is not None:
        if not spec.thinking_levels:
            raise GeminiError(400, "Thinking level is not supported for this model.")
        if not isinstance(level, str) or level.upper() not in THINKING_LEVELS:
            raise GeminiError(
                400,
                f"Invalid value at 'generation_config.thinking_config.thinking_level' (type.googleapis.com/"
                f'google.ai.generativelanguage.v1beta.ThinkingConfig.ThinkingLevel), "{level}"',
            )
        if level.upper() not in spec.thinking_levels:
            raise GeminiError(
                400,
                f"Thinking level {level.upper()} is not supported for this model. "
                f"Supported levels: {', '.join(spec.thinking_levels)}.",
            )
        level = level.upper()

    count = gen.get("candidateCount")
    if count is not None and count != 1:
        raise GeminiError(400, "Multiple candidates is not enabled for this model.")

    raw_modalities = gen.get("responseModalities") or ["TEXT", "IMAGE"]
    modalities = frozenset(str(m).upper() for m in raw_modalities)
    if not modalities <= MODALITIES:
        bad = sorted(modalities - MODALITIES)[0]
        raise GeminiError(
            400,
            f"Invalid value at 'generation_config.response_modalities[0]' (type.googleapis.com/"
            f'google.ai.generativelanguage.v1beta.GenerationConfig.Modality), "{bad}"',
        )

    contents = req.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _field_error("contents", "contents is not specified")

    text_tokens = 0
    images = 0
    user_images = 0
    last_image: bytes | None = None
    prompt = ""
    system = _config_dict(req.get("systemInstruction"), "system_instruction")
    for part in system.get("parts") or []:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            text_tokens += _tokens(part["text"])

    for ci, content in enumerate(contents):
        if not isinstance(content, dict):
            raise GeminiError(400, f"Invalid value at 'contents[{ci}]', expected an object.")
        role = content.get("role") or "user"
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise GeminiError(
                400, f"* GenerateContentRequest.contents[{ci}].parts: contents.parts must not be empty.\n"
            )
        for pi, part in enumerate(parts):
            if not isinstance(part, dict):
                raise GeminiError(400, f"Invalid value at 'contents[{ci}].parts[{pi}]', expected an object.")
            thought = bool(part.get("thought"))
            signature = part.get("thoughtSignature")
            if role == "model" and spec.signatures and signature is not None and not fake.knows_signature(signature):
                raise GeminiError(400, "Corrupted thought signature.")
            text = part.get("text")
            if isinstance(text, str) and not thought:
                text_tokens += _tokens(text)
                if role == "user":
                    prompt = text
            inline = part.get("inlineData")
            if inline is None:
                continue
            if not isinstance(inline, dict):
                raise GeminiError(
                    400, f"Invalid value at 'contents[{ci}].parts[{pi}].inline_data', expected an object."
                )
            data = inline.get("data")
            try:
                blob = decode_b64(data if isinstance(data, str) else "")
            except ValueError:
                shown = str(data)[:40]
                raise GeminiError(
                    400,
                    f"Invalid value at 'contents[{ci}].parts[{pi}].inline_data.data' (TYPE_BYTES), "
                    f'Base64 decoding failed for "{shown}"',
                ) from None
            if role == "model" and spec.signatures and not thought and signature is None:
                raise GeminiError(
                    400,
                    f"Image part is missing a thought_signature in content position {ci + 1}, part position "
                    f"{pi + 1}. Please refer to {SIGNATURE_DOCS} for more details.",
                )
            if thought:
                continue
            mime = str(inline.get("mimeType") or "")
            if mime.startswith("image/"):
                if mime not in SUPPORTED_INPUT_MIME:
                    raise GeminiError(400, f"Unsupported MIME type: {mime}")
                if sniff_mime(blob) not in SUPPORTED_INPUT_MIME:
                    raise GeminiError(
                        400, f"Unable to process input image. Please retry or report in {TROUBLESHOOTING}"
                    )
                images += 1
                last_image = blob
                if role == "user":
                    user_images += 1
            elif not mime:
                raise GeminiError(
                    400,
                    f"* GenerateContentRequest.contents[{ci}].parts[{pi}].inline_data.mime_type: "
                    "mime_type is not specified\n",
                )
            else:
                raise GeminiError(400, f"Unsupported MIME type: {mime}")

    if user_images > spec.max_images:
        raise GeminiError(
            400, f"Too many images in the request: {user_images}. This model accepts at most {spec.max_images} images."
        )

    if ratio is None:
        ratio = "1:1"
        if last_image is not None:
            dims = image_dimensions(last_image)
            if dims:
                ratio = closest_ratio(spec, *dims)
    include = bool(thinking.get("includeThoughts")) or fake.always_thoughts
    return ParsedRequest(
        spec=spec,
        ratio=ratio,
        size=size or "1K",
        modalities=modalities,
        include_thoughts=include and spec.thinks,
        thinking_level=level,
        prompt=prompt,
        prompt_text_tokens=text_tokens,
        prompt_images=images,
    )


def _thought_tokens(p: ParsedRequest, seed: int) -> int:
    if p.thinking_level == "MINIMAL" or (p.thinking_level is None and p.spec.thinking_levels):
        return 40 + seed % 41
    if p.thinking_level == "HIGH":
        return 220 + seed % 181
    return 120 + seed % 121


def _usage(p: ParsedRequest, out_text: str, image_tokens: int, seed: int) -> JSON:
    prompt_images = p.prompt_images * INPUT_IMAGE_TOKENS
    prompt_total = p.prompt_text_tokens + prompt_images
    text_tokens = _tokens(out_text)
    candidates = image_tokens + text_tokens
    usage: JSON = {"promptTokenCount": prompt_total, "candidatesTokenCount": candidates}
    total = prompt_total + candidates
    if p.spec.thinks:
        thoughts = _thought_tokens(p, seed)
        usage["thoughtsTokenCount"] = thoughts
        total += thoughts
    usage["totalTokenCount"] = total
    details = [{"modality": "TEXT", "tokenCount": p.prompt_text_tokens}]
    if prompt_images:
        details.append({"modality": "IMAGE", "tokenCount": prompt_images})
    usage["promptTokensDetails"] = details
    if image_tokens:
        usage["candidatesTokensDetails"] = [{"modality": "IMAGE", "tokenCount": image_tokens}]
    elif text_tokens:
        usage["candidatesTokensDetails"] = [{"modality": "TEXT", "tokenCount": text_tokens}]
    return usage


def _prompt_usage(p: ParsedRequest) -> JSON:
    prompt_images = p.prompt_images * INPUT_IMAGE_TOKENS
    total = p.prompt_text_tokens + prompt_images
    details = [{"modality": "TEXT", "tokenCount": p.prompt_text_tokens}]
    if prompt_images:
        details.append({"modality": "IMAGE", "tokenCount": prompt_images})
    return {"promptTokenCount": total, "totalTokenCount": total, "promptTokensDetails": details}


def _thought_text(p: ParsedRequest) -> str:
    subject = p.prompt.strip().replace("\n", " ")[:80] or "the scene"
    return (
        "**Planning the composition**\n\n"
        f'I\'m working out how to depict "{subject}" at {p.ratio}: layout, lighting and palette first, '
        "then the fine detail.\n\n"
    )


async def build_response(
    fake: FakeImageAPI, p: ParsedRequest, fault: Fault | None, *, thoughts: bool = True
) -> tuple[JSON, Blobs]:
    """The GenerateContentResponse (camelCase, image data as Blobs tokens). ``thoughts=False`` leaves the
    thought parts out (the stream sends its own); nothing else, usage included, depends on it."""
    blobs = Blobs()
    payload: Payload = fake.payload
    seed = zlib.crc32(p.prompt.encode())
    variant = seed % 8
    kind = fault.name if fault is not None else None
    response: JSON
    response_id = secrets.token_urlsafe(16)

    if kind == "prompt_block":
        response = {
            "promptFeedback": {"blockReason": (fault.reason if fault else None) or "PROHIBITED_CONTENT"},
            "usageMetadata": _prompt_usage(p),
            "modelVersion": p.spec.name,
            "responseId": response_id,
        }
        return response, blobs

    parts: list[JSON] = []
    if p.include_thoughts and thoughts:
        parts.append({"text": _thought_text(p), "thought": True})
        if "IMAGE" in p.modalities and kind not in ("output_block", "text_only"):
            dw, dh = p.spec.pixel_size(p.ratio, "1K")
            draft = await aimage_b64(dw, dh, payload, variant)
            parts.append({"inlineData": {"mimeType": "image/png", "data": blobs.add(draft)}, "thought": True})

    if kind == "output_block":
        assert fault is not None
        reason = fault.reason or "IMAGE_SAFETY"
        candidate: JSON = {}
        text = fault.text
        if text is not None or fault.with_content:
            parts.append({"text": text if text is not None else REFUSAL_TEXT})
        if parts:
            candidate["content"] = {"parts": parts, "role": "model"}
        candidate["finishReason"] = reason
        if reason.startswith("IMAGE_"):
            candidate["finishMessage"] = (
                "Unable to show the generated image. The image was filtered out because it violated "
                "Google's Generative AI Prohibited Use policy. You will not be charged for blocked images. "
                "Try rephrasing the prompt. If you think this was an error, send feedback."
            )
        candidate["index"] = 0
        out_text = "".join(pt.get("text", "") for pt in parts if not pt.get("thought"))
        response = {
            "candidates": [candidate],
            "usageMetadata": _usage(p, out_text, 0, seed),
            "modelVersion": p.spec.name,
            "responseId": response_id,
        }
        return response, blobs

    out_text = ""
    image_tokens = 0
    wants_image = "IMAGE" in p.modalities and kind != "text_only"
    if kind == "text_only" or "TEXT" in p.modalities:
        out_text = fault.text if kind == "text_only" and fault and fault.text is not None else FINAL_TEXT
        if not wants_image and kind != "text_only":
            out_text = f"I would draw {p.prompt[:80]!r} for you, but images were not requested."
        text_part: JSON = {"text": out_text}
        if p.spec.signatures:
            text_part["thoughtSignature"] = fake.issue_signature()
        parts.append(text_part)
    if wants_image:
        w, h = p.spec.pixel_size(p.ratio, p.size)
        if kind == "mislabelled_mime":
            data = base64.b64encode(await aimage_bytes(w, h, payload, variant, "jpeg"))
        elif kind == "not_an_image":
            data = base64.b64encode(NOT_AN_IMAGE)
        else:
            data = await aimage_b64(w, h, payload, variant)
        image_part: JSON = {"inlineData": {"mimeType": "image/png", "data": blobs.add(data)}}
        if p.spec.signatures:
            image_part["thoughtSignature"] = fake.issue_signature()
        parts.append(image_part)
        image_tokens = p.spec.tokens_per_image(p.size)

    response = {
        "candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": _usage(p, out_text, image_tokens, seed),
        "modelVersion": p.spec.name,
        "responseId": response_id,
    }
    return response, blobs


def error_reply(err: GeminiError) -> Reply:
    return json_reply(err.code, gemini_error(err.code, err.message, err.status))


def _refine_text(p: ParsedRequest) -> str:
    return (
        "**Refining the details**\n\n"
        "The layout works. I'm sharpening edges, balancing the light and checking the small details "
        f"before the final {p.size} render.\n\n"
    )


def _composing_text(p: ParsedRequest) -> str:
    subject = p.prompt.strip().replace("\n", " ")[:80] or "the scene"
    return (
        "**Composing the scene**\n\n"
        f'I\'m placing the elements of "{subject}" in a {p.ratio} frame, blocking in shapes and colour first.\n\n'
    )


async def build_stream(
    fake: FakeImageAPI, p: ParsedRequest, fault: Fault | None
) -> tuple[list[tuple[float, JSON]], Blobs]:
    """The streamGenerateContent events (spec A5) with the share of the latency at which each goes out.

    With thoughts: a headline (10%), draft 1 (40%, half the 1K size), a second headline (55%), draft 2
    (70%, 1K); drafts are ``thought: true`` PNGs without a signature, and come only when an image is wanted
    (not for ``text_only``). Then at 100% each final part in its own event, the last event carrying
    finishReason and usageMetadata, both exactly as the non-streaming call gives them. A prompt block is a
    single event; an output block ends with its finishReason and no final image (the drafts were sent)."""
    response, blobs = await build_response(fake, p, fault, thoughts=False)
    head = {k: v for k, v in response.items() if k not in ("candidates", "usageMetadata")}
    candidates = response.get("candidates")
    if not candidates:
        return [(1.0, response)], blobs

    def event(parts: list[JSON] | None, last: bool = False) -> JSON:
        cand: JSON = {}
        if parts is not None:
            cand["content"] = {"parts": parts, "role": "model"}
        if last:
            cand.update({k: v for k, v in candidates[0].items() if k not in ("content", "index")})
        cand["index"] = 0
        out: JSON = {"candidates": [cand]}
        if last:
            out["usageMetadata"] = response["usageMetadata"]
        out.update(head)
        return out

    timeline: list[tuple[float, JSON]] = []
    if p.include_thoughts:
        kind = fault.name if fault is not None else None
        drafts = "IMAGE" in p.modalities and kind != "text_only"
        variant = zlib.crc32(p.prompt.encode()) % 8
        w, h = p.spec.pixel_size(p.ratio, "1K")
        timeline.append((HEADLINE_AT[0], event([{"text": _composing_text(p), "thought": True}])))
        if drafts:
            data = await aimage_b64(max(w // 2, 1), max(h // 2, 1), fake.payload, (variant + 3) % 8)
            draft: JSON = {"inlineData": {"mimeType": "image/png", "data": blobs.add(data)}, "thought": True}
            timeline.append((DRAFT_AT[0], event([draft])))
        timeline.append((HEADLINE_AT[1], event([{"text": _refine_text(p), "thought": True}])))
        if drafts:
            data = await aimage_b64(w, h, fake.payload, variant)
            draft = {"inlineData": {"mimeType": "image/png", "data": blobs.add(data)}, "thought": True}
            timeline.append((DRAFT_AT[1], event([draft])))

    content = candidates[0].get("content")
    parts: list[JSON] = (content.get("parts") or []) if content else []
    for i, part in enumerate(parts):
        timeline.append((1.0, event([part], last=i == len(parts) - 1)))
    if not parts:  # an output block without content: the last event holds only the finishReason
        timeline.append((1.0, event([] if content is not None else None, last=True)))
    return timeline, blobs


async def handle(
    fake: FakeImageAPI,
    model: str,
    api_version: str,
    method: str,
    body: Any,
    body_size: int,
    query: dict[str, str],
    fault: Fault | None,
) -> Reply | StreamReply:
    if body_size > MAX_REQUEST_BYTES:
        return error_reply(GeminiError(400, f"Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes."))
    try:
        parsed = parse_request(fake, body, model, api_version)
    except GeminiError as err:
        return error_reply(err)
    headers = [("vary", "Origin, X-Origin, Referer"), ("server-timing", f"gfet4t7; dur={int(fake.latency * 1000) + 7}")]
    if method == "generateContent":
        response, blobs = await build_response(fake, parsed, fault)
        return json_reply(200, response, headers, blobs)
    timeline, blobs = await build_stream(fake, parsed, fault)
    events = [(at, blobs.dumps(chunk)) for at, chunk in timeline]
    if query.get("alt") == "sse":
        return StreamReply(200, [("content-type", "text/event-stream"), *headers], events)
    return StreamReply(200, [("content-type", "application/json; charset=UTF-8"), *headers], events, sse=False)
