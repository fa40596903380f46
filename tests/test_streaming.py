"""Live previews in the core: SSE decoding, streamed Gemini answers, drafts told as they come, and the
plain call wherever streaming isn't possible (a model without drafts, a relay that doesn't stream, OpenAI).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import random
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from bot.core.errors import BlockedError, GenerationTimeout, UnavailableError
from bot.core.imaging import sniff_mime
from bot.core.models import model_spec
from bot.core.providers.base import ProviderConfig
from bot.core.providers.gemini import GeminiProvider, thought_headline
from bot.core.sse import SSEDecoder
from bot.core.types import ImageRequest, Part, Preview, RequestContext, Turn
from bot.runtime import Runtime
from tests.fake_image_api import FakeImageAPI, Fault, image_bytes
from tests.test_providers import Sleeps, open_runtime

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def fake() -> AsyncIterator[FakeImageAPI]:
    async with FakeImageAPI() as api:
        yield api


@pytest.fixture
async def runtime(fake: FakeImageAPI, tmp_path: Path) -> AsyncIterator[Runtime]:
    rt, _ = await open_runtime(fake, tmp_path)
    yield rt
    await rt.aclose()


class Previews:
    def __init__(self) -> None:
        self.seen: list[Preview] = []

    def __call__(self, preview: Preview) -> None:
        self.seen.append(preview)

    @property
    def drafts(self) -> list[Preview]:
        return [p for p in self.seen if p.draft is not None]


# --- SSE --------------------------------------------------------------------------------------------------


def _events(stream: bytes, sizes: random.Random) -> list[bytes]:
    decoder = SSEDecoder()
    events: list[bytes] = []
    pos = 0
    while pos < len(stream):
        step = sizes.randint(1, 9000)
        events += decoder.feed(stream[pos : pos + step])
        pos += step
    return events + decoder.close()


@pytest.mark.parametrize("newline", [b"\r\n", b"\n", b"\r"])
def test_sse_events_survive_any_split_and_any_line_ending(newline: bytes) -> None:
    big = b"A" * 3_000_000  # a whole base64 image in one data line
    stream = newline.join(
        [b": keep-alive", b'data: {"n":1}', b"", b"data: two", b"data: lines", b"", b"data: " + big, b"", b"data: end"]
    )
    rng = random.Random(7)
    for _ in range(20):
        assert _events(stream, rng) == [b'{"n":1}', b"two\nlines", big, b"end"]


def test_a_crlf_split_around_an_empty_read_is_one_line_end() -> None:
    decoder = SSEDecoder()
    events = [
        *decoder.feed(b"data: one\r"),
        *decoder.feed(b""),
        *decoder.feed(b"\n\r"),
        *decoder.feed(b"\ndata: two\r\n"),
    ]
    assert events + decoder.close() == [b"one", b"two"]


def test_sse_decoder_does_not_rescan_a_long_event() -> None:
    # One byte at a time through a 200 KB line: quadratic rescanning would take minutes, not milliseconds.
    decoder = SSEDecoder()
    line = b"data: " + b"x" * 200_000 + b"\n\n"
    events: list[bytes] = []
    for i in range(0, len(line), 1):
        events += decoder.feed(line[i : i + 1])
    assert events == [b"x" * 200_000]


def test_thought_headline() -> None:
    assert thought_headline("**Composing the scene**\n\nI'm placing the cat...") == "Composing the scene"
    assert thought_headline("Refining the light\nmore") == "Refining the light"
    assert thought_headline("   ") is None


# --- streamed answers from the fake -----------------------------------------------------------------------


async def test_previews_arrive_and_the_result_equals_the_plain_call(fake: FakeImageAPI, runtime: Runtime) -> None:
    previews = Previews()
    request = ImageRequest(prompt="an orange cat", size="2K", aspect_ratio="16:9")
    streamed = await runtime.service.generate(request, RequestContext(on_preview=previews))
    plain = await runtime.service.generate(request)

    stream_call, plain_call = fake.requests[-2], fake.requests[-1]
    assert stream_call.path.endswith(":streamGenerateContent") and stream_call.query.get("alt") == "sse"
    assert stream_call.json["generationConfig"]["thinkingConfig"] == {"includeThoughts": True}
    assert plain_call.path.endswith(":generateContent") and "thinkingConfig" not in plain_call.json["generationConfig"]

    assert previews.seen and previews.seen[0].headline  # the thought headline comes before any draft
    assert previews.drafts, "no draft was shown"
    draft = previews.drafts[-1].draft
    assert draft is not None and sniff_mime(draft.data) == "image/png" and draft.width > 0
    assert all(a.elapsed <= b.elapsed for a, b in zip(previews.seen, previews.seen[1:], strict=False))

    # The final image, usage, cost and replayable turn are what the non-streaming call gives.
    assert (streamed.image.width, streamed.image.height) == (plain.image.width, plain.image.height) == (2752, 1536)
    assert streamed.usage == plain.usage and streamed.usage.cost_usd > 0
    assert streamed.text == plain.text
    assert streamed.model_turn is not None and plain.model_turn is not None
    assert not any(p.thought for p in streamed.model_turn.parts)  # drafts are shown, never replayed
    assert [(p.text is None, p.image is None) for p in streamed.model_turn.parts] == [
        (p.text is None, p.image is None) for p in plain.model_turn.parts
    ]
    assert streamed.timing.ttfb_ms > 0 and streamed.timing.decode_ms > 0

    # The streamed turn replays: the signatures it kept satisfy the API's check on the next edit.
    history = (Turn(role="user", parts=(Part(text="an orange cat"),)), streamed.model_turn)
    edited = await runtime.service.generate(
        ImageRequest(prompt="now blue", history=history), RequestContext(on_preview=Previews())
    )
    assert edited.image.data


async def test_models_without_drafts_and_openai_use_the_plain_call(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt, _ = await open_runtime(fake, tmp_path, GEMINI_MODEL="gemini-2.5-flash-image")
    try:
        previews = Previews()
        result = await rt.service.generate(ImageRequest(prompt="a cat"), RequestContext(on_preview=previews))
        assert result.image.data and previews.seen == []
        assert fake.requests[-1].path.endswith(":generateContent")
    finally:
        await rt.aclose()
    rt, _ = await open_runtime(
        fake,
        tmp_path,
        BANANA_PROVIDERS="openai",
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL=fake.base_url + "/v1",
        OPENAI_IMAGE_MODEL="gpt-image-2",
    )
    try:
        previews = Previews()
        result = await rt.service.generate(ImageRequest(prompt="a cat"), RequestContext(on_preview=previews))
        assert result.image.data and previews.seen == []
    finally:
        await rt.aclose()


async def test_a_stream_gone_silent_is_cut_off_by_the_read_timeout(fake: FakeImageAPI, tmp_path: Path) -> None:
    """Each read of a streamed answer is timed: a stream that goes silent after its first draft ends at the
    read timeout after its last event, the draft already shown."""
    rt, _ = await open_runtime(fake, tmp_path, BANANA_TIMEOUT_1K="0.5", BANANA_RETRY_ATTEMPTS="1")
    try:
        fake.script(Fault.stall())  # headline, draft, headline, then nothing on an open connection
        previews = Previews()
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(30):
            with pytest.raises(GenerationTimeout, match="ReadTimeout"):
                await rt.service.generate(ImageRequest(prompt="cat"), RequestContext(on_preview=previews))
        assert 0.45 <= loop.time() - started < 3
        assert len(previews.drafts) == 1 and fake.requests[-1].path.endswith(":streamGenerateContent")
    finally:
        await rt.aclose()


async def test_a_block_in_the_stream_is_a_block(fake: FakeImageAPI, runtime: Runtime) -> None:
    fake.script(Fault.prompt_block())
    with pytest.raises(BlockedError) as prompt:
        await runtime.service.generate(ImageRequest(prompt="x"), RequestContext(on_preview=Previews()))
    assert prompt.value.stage == "prompt"
    fake.script(Fault.output_block())
    with pytest.raises(BlockedError) as output:
        await runtime.service.generate(ImageRequest(prompt="x"), RequestContext(on_preview=Previews()))
    assert output.value.stage == "output"


async def test_a_broken_preview_callback_costs_nothing(fake: FakeImageAPI, runtime: Runtime) -> None:
    def broken(preview: Preview) -> None:
        raise RuntimeError("the display fell over")

    result = await runtime.service.generate(ImageRequest(prompt="a cat"), RequestContext(on_preview=broken))
    assert result.image.data


# --- servers that don't stream, or compress -----------------------------------------------------------------


def _plain_body() -> bytes:
    data = image_bytes(64, 64)
    return orjson.dumps(
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}}],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1120, "totalTokenCount": 1125},
        }
    )


def _provider(handler: httpx.MockTransport) -> GeminiProvider:
    config = ProviderConfig(
        name="gemini", base_url="http://relay.test", api_keys=("k",), model="gemini-3-pro-image-preview"
    )
    provider = GeminiProvider(config, transport=handler)
    provider.sleep = Sleeps()
    return provider


async def test_a_relay_that_does_not_stream_gets_the_plain_call_once_and_for_all() -> None:
    paths: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith(":streamGenerateContent"):
            return httpx.Response(404, json={"error": {"code": 404, "message": "Not found", "status": "NOT_FOUND"}})
        return httpx.Response(200, content=_plain_body(), headers={"content-type": "application/json"})

    provider = _provider(httpx.MockTransport(handle))
    spec = model_spec("gemini-3-pro-image-preview")
    previews = Previews()
    first = await provider.generate(ImageRequest(prompt="a cat"), spec, on_preview=previews)
    second = await provider.generate(ImageRequest(prompt="a cat"), spec, on_preview=previews)
    assert first.image.data and second.image.data and previews.seen == []
    assert [p.rsplit(":", 1)[1] for p in paths] == ["streamGenerateContent", "generateContent", "generateContent"]
    await provider.aclose()


@pytest.mark.parametrize("form", ["json", "json-array"])
async def test_a_stream_url_answered_with_plain_json_still_gives_the_image(form: str) -> None:
    body = _plain_body() if form == "json" else b"[" + _plain_body() + b"]"

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    provider = _provider(httpx.MockTransport(handle))
    result = await provider.generate(
        ImageRequest(prompt="a cat"), model_spec("gemini-3-pro-image-preview"), on_preview=Previews()
    )
    assert (result.image.width, result.image.height) == (64, 64) and result.usage.image_tokens == 1120
    await provider.aclose()


async def test_a_stream_that_ends_without_finishing_is_an_error_not_a_result() -> None:
    sse = b"data: " + _plain_body().replace(b',"finishReason":"STOP"', b"") + b"\r\n\r\n"
    assert b"finishReason" not in sse

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse, headers={"content-type": "text/event-stream"})

    provider = _provider(httpx.MockTransport(handle))
    with pytest.raises(UnavailableError, match="ended before"):
        await provider.generate(
            ImageRequest(prompt="a cat"), model_spec("gemini-3-pro-image-preview"), on_preview=Previews()
        )
    assert provider.sleep.waits  # type: ignore[attr-defined]  # retried like any connection cut short
    await provider.aclose()


async def test_a_stream_cut_inside_an_event_is_retried_like_a_dropped_connection() -> None:
    body = _plain_body()
    sse = b"data: " + body[: len(body) // 2]  # the image event, cut halfway; the body then ends cleanly
    calls: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, content=sse, headers={"content-type": "text/event-stream"})

    provider = _provider(httpx.MockTransport(handle))
    with pytest.raises(UnavailableError, match="ended before") as info:
        await provider.generate(
            ImageRequest(prompt="a cat"), model_spec("gemini-3-pro-image-preview"), on_preview=Previews()
        )
    assert info.value.attempts == len(calls) == provider.config.retry.max_attempts > 1
    await provider.aclose()


async def test_compressed_answers_are_inflated() -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("accept-encoding", ""))
        return httpx.Response(
            200,
            content=gzip.compress(_plain_body()),
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )

    provider = _provider(httpx.MockTransport(handle))
    result = await provider.generate(ImageRequest(prompt="a cat"), model_spec("gemini-3-pro-image-preview"))
    assert result.image.width == 64
    assert seen == ["identity"]  # base64 of PNGs is not worth compressing; we ask for it plain
    await provider.aclose()
