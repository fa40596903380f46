"""Unit tests of the core's pure parts: sizes, validation, request bodies, cost, keys, retries, images."""

from __future__ import annotations

import io
import itertools
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from PIL import Image

from bot.core.cost import gemini_usage, openai_usage
from bot.core.errors import (
    AllKeysBenchedError,
    BlockedError,
    InvalidRequest,
    RateLimitedError,
    UnavailableError,
)
from bot.core.imaging import MAX_REFERENCE_BYTES, prepare_reference, sniff_mime
from bot.core.keys import KeyPool
from bot.core.models import model_spec, normalise_aspect_ratio, normalise_size
from bot.core.providers.gemini import build_request_body, parse_response
from bot.core.retry import RetryPolicy, call_with_retries
from bot.core.service import validate
from bot.core.types import GeneratedImage, ImageInput, ImageRequest, Turn

PRO = model_spec("gemini-3-pro-image-preview")
FLASH2 = model_spec("gemini-3.1-flash-image-preview")
FLASH25 = model_spec("gemini-2.5-flash-image")


def png(width: int = 8, height: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 30)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("raw", "expected"), [("2k", "2K"), ("2K", "2K"), ("2048", "2K"), (" 4k ", "4K"), ("1K", "1K")]
)
def test_sizes_are_normalised_to_what_the_api_demands(raw: str, expected: str) -> None:
    assert normalise_size(raw) == expected


def test_unknown_size_says_what_is_accepted() -> None:
    with pytest.raises(InvalidRequest, match="1K, 2K or 4K"):
        normalise_size("3k")


@pytest.mark.parametrize("raw", ["16:9", "16x9", "16/9", " 16 : 9 "])
def test_aspect_ratio_spellings(raw: str) -> None:
    assert normalise_aspect_ratio(raw) == "16:9"


def test_unknown_aspect_ratio_is_refused_with_the_valid_list() -> None:
    with pytest.raises(InvalidRequest, match=r"doesn't take aspect ratio 7:3; use one of 1:1, 2:3"):
        validate(ImageRequest(prompt="x", aspect_ratio="7:3"), PRO)
    validate(ImageRequest(prompt="x", aspect_ratio="1:8"), FLASH2)  # 3.1 Flash has the extra ratios
    with pytest.raises(InvalidRequest):
        validate(ImageRequest(prompt="x", aspect_ratio="1:8"), PRO)


def test_fifteenth_reference_image_is_refused() -> None:
    ref = ImageInput(data=png(), mime="image/png")
    validate(ImageRequest(prompt="x", references=(ref,) * 14), PRO)
    with pytest.raises(InvalidRequest, match="15 reference images is too many: Nano Banana Pro takes at most 14"):
        validate(ImageRequest(prompt="x", references=(ref,) * 15), PRO)


def test_thinking_level_only_where_the_model_has_one() -> None:
    with pytest.raises(InvalidRequest, match="takes no thinking level"):
        validate(ImageRequest(prompt="x", thinking="high"), PRO)
    validate(ImageRequest(prompt="x", thinking="high"), FLASH2)
    with pytest.raises(InvalidRequest, match="minimal or high"):
        validate(ImageRequest(prompt="x", thinking="medium"), FLASH2)


def test_sizes_per_model() -> None:
    with pytest.raises(InvalidRequest, match="doesn't make 4K images"):
        validate(ImageRequest(prompt="x", size="4K"), FLASH25)
    validate(ImageRequest(prompt="x", size="512"), FLASH2)
    with pytest.raises(InvalidRequest):
        validate(ImageRequest(prompt="x", size="512"), PRO)


def test_empty_prompt_and_oversized_inline_payload() -> None:
    with pytest.raises(InvalidRequest, match="empty"):
        validate(ImageRequest(prompt="   "), PRO)
    big = ImageInput(data=b"\0" * 8_000_000, mime="image/png")
    with pytest.raises(InvalidRequest, match="must stay under"):
        validate(ImageRequest(prompt="x", references=(big, big)), PRO)


def test_request_body_per_model() -> None:
    ref = ImageInput(data=png(), mime="image/png")
    body = orjson.loads(build_request_body(ImageRequest(prompt="cat", size="2K", aspect_ratio="16:9"), PRO))
    gen = body["generationConfig"]
    assert gen["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert "thinkingConfig" not in gen  # Nano Banana Pro rejects thinkingLevel
    assert gen["responseModalities"] == ["TEXT", "IMAGE"]
    body = orjson.loads(build_request_body(ImageRequest(prompt="cat", thinking="high", references=(ref,)), FLASH2))
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "high"}
    parts = body["contents"][-1]["parts"]
    assert parts[0] == {"text": "cat"} and parts[1]["inlineData"]["mimeType"] == "image/png"
    body = orjson.loads(build_request_body(ImageRequest(prompt="cat"), FLASH25))
    assert "imageSize" not in body["generationConfig"].get("imageConfig", {})


def test_cost_follows_the_price_table() -> None:
    # The usage block of spec A2, priced per A7.
    meta = {
        "promptTokenCount": 2076,
        "candidatesTokenCount": 1332,
        "thoughtsTokenCount": 137,
        "totalTokenCount": 3545,
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120}],
    }
    usage = gemini_usage(meta, PRO.pricing, size="2K", images=1)
    expected = (2076 * 2 + (1332 - 1120 + 137) * 12 + 1120 * 120) / 1e6
    assert usage.cost_usd == pytest.approx(expected)
    assert (usage.image_tokens, usage.thinking_tokens, usage.total_tokens) == (1120, 137, 3545)
    # A 4K image on Pro is 2000 image tokens, $0.24 of image output alone.
    four_k = gemini_usage({"candidatesTokenCount": 2000}, PRO.pricing, size="4K", images=1)
    assert four_k.cost_usd == pytest.approx(0.24)
    assert PRO.pricing.image_price("1K") == pytest.approx(0.1344)


def test_relay_cost_field_wins_over_table() -> None:
    assert openai_usage({"cost": 0.05, "prompt_tokens": 3}, PRO.pricing, size="1K", images=1).cost_usd == 0.05


def test_key_pool_rotates_benches_and_cools_down() -> None:
    now = [100.0]
    pool = KeyPool("gemini", ["key-aaaaaaaa1111", "key-bbbbbbbb2222", "key-cccccccc3333"], clock=lambda: now[0])
    assert [pool.acquire()[0] for _ in range(4)] == [
        "key-aaaaaaaa1111",
        "key-bbbbbbbb2222",
        "key-cccccccc3333",
        "key-aaaaaaaa1111",
    ]
    pool.bench("key-bbbbbbbb2222", "API key not valid")
    pool.cool_down("key-cccccccc3333", 30)
    assert {pool.acquire()[0] for _ in range(3)} == {"key-aaaaaaaa1111"}
    now[0] += 31
    assert "key-cccccccc3333" in {pool.acquire()[0] for _ in range(3)}
    pool.bench("key-aaaaaaaa1111", "leaked")
    pool.bench("key-cccccccc3333", "leaked")
    with pytest.raises(AllKeysBenchedError) as info:
        pool.acquire()
    assert "Every gemini API key was refused" in str(info.value)
    assert "key-aaaaaaaa1111" not in str(info.value) and "...1111" in str(info.value)


async def test_retries_honour_hints_and_stop_on_permanent_errors() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise UnavailableError("503", retry_after=7.0)
        return "ok"

    policy = RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_max=0.05, hint_cap=60)
    assert await call_with_retries(flaky, policy, provider="p", sleep=sleep) == ("ok", 3)
    assert len(waits) == 2 and all(7.0 <= w < 7.1 for w in waits)

    async def blocked() -> str:
        raise BlockedError("no", stage="prompt", reason="SAFETY")

    waits.clear()
    with pytest.raises(BlockedError) as info:
        await call_with_retries(blocked, policy, provider="p", sleep=sleep)
    assert waits == [] and info.value.attempts == 1

    async def per_day() -> str:
        raise RateLimitedError("quota", retry_after=20, per_day=True)

    with pytest.raises(RateLimitedError):
        await call_with_retries(per_day, policy, provider="p", sleep=sleep)
    assert waits == []


async def test_retry_hint_is_capped_and_attempts_bounded() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def always() -> str:
        raise RateLimitedError("slow down", retry_after=500, per_day=False)

    policy = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.05, hint_cap=20, deadline=1000)
    with pytest.raises(RateLimitedError) as info:
        await call_with_retries(always, policy, provider="p", sleep=sleep)
    assert info.value.attempts == 3
    assert len(waits) == 2 and all(20 <= w < 20.1 for w in waits)


async def test_retry_stops_before_a_wait_that_would_pass_the_deadline() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def always() -> str:
        raise UnavailableError("503", retry_after=30)

    policy = RetryPolicy(max_attempts=10, hint_cap=60, deadline=10)
    with pytest.raises(UnavailableError) as info:
        await call_with_retries(always, policy, provider="p", sleep=sleep)
    assert waits == [] and info.value.attempts == 1


def test_magic_bytes_win_over_labels() -> None:
    assert sniff_mime(png()) == "image/png"
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, format="JPEG")
    assert sniff_mime(out.getvalue()) == "image/jpeg"
    assert sniff_mime(b"<html>not an image</html>") is None


def test_reference_checks() -> None:
    ok = prepare_reference(png(64, 32))
    assert (ok.mime, ok.width, ok.height) == ("image/png", 64, 32)
    with pytest.raises(InvalidRequest, match="is not an image"):
        prepare_reference(b"hello world, definitely text", name="notes.txt")
    with pytest.raises(InvalidRequest, match="damaged or truncated"):
        prepare_reference(png(256, 256)[:-200])
    with pytest.raises(InvalidRequest, match="MB; the limit is 20 MB"):
        prepare_reference(b"\x89PNG\r\n\x1a\n" + b"\0" * (MAX_REFERENCE_BYTES + 1))
    gif = io.BytesIO()
    Image.new("P", (10, 10)).save(gif, format="GIF")
    converted = prepare_reference(gif.getvalue())
    assert converted.mime == "image/png" and sniff_mime(converted.data) == "image/png"


def test_decompression_bomb_is_refused_without_decoding() -> None:
    # A valid PNG header that claims 20000x20000 pixels: a few hundred bytes on disk.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(InvalidRequest, match="pixels"):
        prepare_reference(bomb)


def test_parse_response_skips_thoughts_and_keeps_signatures() -> None:
    import base64

    final, draft = png(16, 16), png(8, 8)
    body = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Composing", "thought": True},
                        {
                            "inlineData": {"mimeType": "image/png", "data": base64.b64encode(draft).decode()},
                            "thought": True,
                        },
                        {"text": "Here it is.", "thoughtSignature": "sigA"},
                        {
                            "inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(final).decode()},
                            "thoughtSignature": "sigB",
                        },
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 1, "someNewField": 3},
    }
    images, text, turn, _ = parse_response(orjson.dumps(body), "gemini")
    assert len(images) == 1 and images[0].data == final and images[0].mime == "image/png"  # sniffed, not labelled
    assert (images[0].width, images[0].height) == (16, 16)
    assert text == "Here it is."
    assert [p.thought_signature for p in turn.parts] == [None, None, "sigA", "sigB"]


def test_inline_payloads_are_cut_out_before_json_parsing_and_decode_the_same() -> None:
    import base64

    from bot.core.inline import InlineImageDecoder

    image = png(200, 200) + b"\0" * 5000  # long enough to be cut
    b64 = base64.b64encode(image).decode()
    camel = orjson.dumps(
        {
            "candidates": [
                {
                    "content": {
                        "parts": [{"text": 'say "data": "x"'}, {"inlineData": {"mimeType": "image/png", "data": b64}}]
                    }
                }
            ]
        }
    )
    snake_spaced = (
        b'{"candidates": [{"content": {"parts": [{"inline_data": {"mime_type": "image/png", "data" : "'
        + b64.encode()
        + b'"}}]}}]}'
    )
    for body in (camel, snake_spaced):
        skeleton, images = InlineImageDecoder.whole(body)
        assert images == [image] and len(skeleton) < 300
        assert parse_response(body, "gemini")[0][0].data == image
    # A payload with an escape inside is left to the JSON parser, and still decodes.
    escaped = camel.replace(b64.encode(), (f"\\u{ord(b64[0]):04x}" + b64[1:]).encode())
    skeleton, images = InlineImageDecoder.whole(escaped)
    assert images == [] and len(skeleton) > len(b64)
    assert parse_response(escaped, "gemini")[0][0].data == image
    # A big body, fed whole: its image is decoded in one piece.
    big = png(8, 8) + bytes(range(256)) * 3000
    body = b'{"candidates": [{"content": {"parts": [{"inlineData": {"data": "' + base64.b64encode(big) + b'"}}]}}]}'
    assert len(body) > 3 * 256 * 1024 and InlineImageDecoder.whole(body)[1] == [big]
    assert parse_response(body, "gemini")[0][0].data == big
    # Short strings are cut and decoded the same way.
    short = InlineImageDecoder.whole(b'{"inlineData": {"data": "aGVsbG8="}}')
    assert short == (b'{"inlineData": {"data": "#0"}}', [b"hello"])


def _fed_in_pieces(body: bytes, sizes: list[int]) -> tuple[list[GeneratedImage], str | None, Turn, dict[str, Any]]:
    from bot.core.inline import InlineImageDecoder
    from bot.core.providers.gemini import parse_decoded

    decoder = InlineImageDecoder()
    pos = 0
    for size in itertools.cycle(sizes):
        if pos >= len(body):
            break
        decoder.feed(body[pos : pos + size])
        pos += size
    return parse_decoded(decoder, "gemini")


def test_images_decoded_as_the_body_arrives_equal_the_whole_body_parse() -> None:
    """bot/core/inline.py: however the body is cut into chunks (inside the key, the colon, a base64 quantum,
    the closing quote), the streamed decode gives what parse_response gives for the whole body."""
    import base64
    import random

    from bot.core.inline import InlineImageDecoder

    draft, final = png(30, 20), png(200, 200) + b"\0" * 5001
    parts = [
        {"text": 'the "data": "x" of a text', "thought": True},
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(draft).decode()}, "thought": True},
        {"inline_data": {"data": base64.b64encode(final).decode(), "mime_type": "image/png"}, "thoughtSignature": "s"},
    ]
    compact = orjson.dumps({"candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}]})
    spaced = orjson.dumps(
        {"candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}]}, option=orjson.OPT_INDENT_2
    ).replace(b'"data": "', b'"data" :\n   "')
    rng = random.Random(7)
    for body in (compact, spaced):
        whole = parse_response(body, "gemini")
        assert whole[0][0].data == final
        for sizes in ([1], [2], [3], [5], [7], [4096], [len(body)], [rng.randint(1, 900) for _ in range(50)]):
            images, text, turn, meta = _fed_in_pieces(body, sizes)
            assert [i.data for i in images] == [final] and (text, turn, meta) == whole[1:], sizes
            assert turn.parts[1].image is not None and turn.parts[1].image.data == draft
    decoder = InlineImageDecoder()
    decoder.feed(compact)
    skeleton, images = decoder.finish()
    assert len(skeleton) < 400 and images == [draft, final]  # cut out, not given back to the JSON parser


def test_streamed_decode_gives_unusual_strings_back_to_the_json_parser() -> None:
    """An escape, a line break, the URL-safe alphabet or missing padding: the text goes back as it came and
    the lenient path decodes it; a string that is not base64 at all is refused as a non-image."""
    import base64

    from bot.core.errors import ResponseError

    image = png(64, 64) + bytes(range(256)) * 40  # 10 KB of bytes that need '+' and '/' (and '-', '_')

    def body(data: str) -> bytes:
        return b'{"candidates": [{"content": {"parts": [{"inlineData": {"data": "' + data.encode() + b'"}}]}}]}'

    b64 = base64.b64encode(image).decode()
    unusual = [
        body(f"\\u{ord(b64[0]):04x}" + b64[1:]),  # a JSON escape
        body(b64.replace("/", "\\/")),  # escaped slashes, as some serialisers write them
        body("\\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))),  # MIME line breaks
        body(base64.urlsafe_b64encode(image).decode()),
        body(base64.b64encode(image + b"x").decode().rstrip("=")),  # unpadded
    ]
    for i, case in enumerate(unusual):
        for sizes in ([3], [1000], [len(case)]):
            images, *_ = _fed_in_pieces(case, sizes)
            assert images[0].data.startswith(image), (i, sizes)
    with pytest.raises(ResponseError, match="not an image"):
        _fed_in_pieces(body("#!%*" * 3000), [1000])
    with pytest.raises(ResponseError, match="malformed JSON"):
        _fed_in_pieces(body(b64)[:5000], [1000])  # the body ends inside the string


@pytest.mark.parametrize("declare_length", [True, False])
async def test_response_bodies_are_read_whole_and_capped(declare_length: bool) -> None:
    import httpx

    from bot.core.errors import ResponseError
    from bot.core.http import HttpClient

    payload = bytes(range(256)) * 4096  # 1 MiB

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 300_000):
            yield payload[start : start + 300_000]

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-length": str(len(payload))} if declare_length else {}
        return httpx.Response(200, headers=headers, content=chunks())

    client = HttpClient(provider="test", transport=httpx.MockTransport(handler))
    try:
        reply = await client.request("GET", "http://127.0.0.1/x", read_timeout=5)
        assert reply.content == payload and reply.status == 200
        with pytest.raises(ResponseError, match="more than 0 MB"):
            await client.request("GET", "http://127.0.0.1/x", read_timeout=5, max_bytes=500_000)
    finally:
        await client.aclose()


def test_base64_takes_the_fast_path_and_falls_back_leniently() -> None:
    import base64

    from bot.core.imaging import decode_base64

    raw = bytes(range(256)) * 100
    strict = base64.b64encode(raw)
    assert decode_base64(strict) == decode_base64(memoryview(strict)) == decode_base64(strict.decode()) == raw
    assert decode_base64(base64.urlsafe_b64encode(raw).rstrip(b"=")) == raw  # URL-safe alphabet, no padding
    assert decode_base64(b"\n".join(strict[i : i + 76] for i in range(0, len(strict), 76))) == raw  # MIME lines
    with pytest.raises(ValueError):
        decode_base64(b"a")  # one character can't be base64 however it is read
