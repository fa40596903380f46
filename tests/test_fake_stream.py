"""The fake's ``:streamGenerateContent`` (spec A5): realistic timing, the stream faults, and the core's
streamed call surviving a stream cut after a draft.

Timing is measured client-side on loopback, with tolerances for a busy machine: nothing may come early,
and each event may come at most ``LATE`` seconds after its moment.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from PIL import Image

from bot.core.models import model_spec
from bot.core.sse import SSEDecoder
from bot.core.types import ImageRequest, Preview
from tests.fake_image_api import FakeImageAPI, Fault
from tests.fake_image_api.gemini import DRAFT_AT, HEADLINE_AT
from tests.fake_image_api.images import image_dimensions
from tests.test_providers import open_runtime

pytestmark = pytest.mark.timeout(60)

PRO = "gemini-3-pro-image-preview"
FLASH31 = "gemini-3.1-flash-image-preview"
FLASH25 = "gemini-2.5-flash-image"
KEY = {"x-goog-api-key": "test-key"}
LATENCY = 1.2
#: The parts of a full streamed answer with thoughts, in order, one per event.
FULL = ["thought-text", "thought-image", "thought-text", "thought-image", "text", "image"]
LATE = 0.2  # seconds an event may trail its moment on a loaded two-core machine


def body(prompt: str = "an orange cat", *, thoughts: bool = True, ratio: str = "16:9", size: str | None = "2K") -> Any:
    image: dict[str, str] = {"aspectRatio": ratio}
    if size:
        image["imageSize"] = size
    gen: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": image}
    if thoughts:
        gen["thinkingConfig"] = {"includeThoughts": True}
    return {"contents": [{"role": "user", "parts": [{"text": prompt}]}], "generationConfig": gen}


def stream_url(fake: FakeImageAPI, model: str = PRO, sse: bool = True) -> str:
    return f"{fake.base_url}/v1beta/models/{model}:streamGenerateContent" + ("?alt=sse" if sse else "")


class Stream:
    """One streamed call as the client saw it: events (parsed), when each completed, reads, raw bytes."""

    def __init__(self) -> None:
        self.status = 0
        self.headers_at = 0.0  # seconds after the request was sent
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []  # seconds after the headers
        self.reads = 0
        self.raw = bytearray()
        self.error: Exception | None = None
        self.elapsed = 0.0
        self.http_version = ""

    @property
    def parts(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for event in self.events:
            for cand in event.get("candidates") or []:
                out += (cand.get("content") or {}).get("parts") or []
        return out


async def read_stream(client: httpx.AsyncClient, url: str, payload: Any) -> Stream:
    out = Stream()
    decoder = SSEDecoder()
    started = time.monotonic()
    try:
        async with client.stream("POST", url, json=payload, headers=KEY) as resp:
            out.status, out.http_version = resp.status_code, resp.http_version
            headers_at = time.monotonic()
            out.headers_at = headers_at - started
            async for chunk in resp.aiter_raw():
                out.reads += 1
                out.raw += chunk
                for data in decoder.feed(chunk):
                    out.times.append(time.monotonic() - headers_at)
                    out.events.append(orjson.loads(data))
            for data in decoder.close():
                out.times.append(time.monotonic() - headers_at)
                out.events.append(orjson.loads(data))
    except httpx.HTTPError as exc:
        out.error = exc
    out.elapsed = time.monotonic() - started
    return out


def png_size(b64: str) -> tuple[int, int]:
    data = base64.b64decode(b64)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as img:
        img.load()  # a real, complete PNG
        return img.size


def shape(part: dict[str, Any]) -> str:
    kind = "image" if "inlineData" in part else "text"
    return f"thought-{kind}" if part.get("thought") else kind


@pytest.fixture
async def fake() -> AsyncIterator[FakeImageAPI]:
    async with FakeImageAPI() as api:
        yield api


# --- timing and content ---------------------------------------------------------------------------------


async def test_drafts_come_at_40_and_70_percent_and_the_rest_equals_the_plain_call(fake: FakeImageAPI) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        plain = await client.post(f"{fake.base_url}/v1beta/models/{PRO}:generateContent", json=body(), headers=KEY)
        fake.latency = LATENCY
        s = await read_stream(client, stream_url(fake), body())

    assert s.status == 200 and s.error is None and s.http_version == "HTTP/1.1"
    assert s.headers_at < 0.15 * LATENCY  # headers right away, not after the latency
    assert [shape(p) for p in s.parts] == FULL
    assert [len(e["candidates"][0]["content"]["parts"]) for e in s.events] == [1] * 6  # one part per event
    expected = [HEADLINE_AT[0], DRAFT_AT[0], HEADLINE_AT[1], DRAFT_AT[1], 1.0, 1.0]
    assert DRAFT_AT == (0.40, 0.70)
    for got, share in zip(s.times, expected, strict=True):
        assert share * LATENCY - 0.03 <= got <= share * LATENCY + LATE, (s.times, expected)
    assert s.elapsed < LATENCY + LATE + 0.15  # the latency once, not twice

    thoughts = [p for p in s.parts if p.get("thought")]
    assert thoughts[0]["text"].startswith("**Composing the scene**\n\n")
    assert thoughts[2]["text"].startswith("**Refining the details**\n\n")
    assert all("thoughtSignature" not in p for p in thoughts)
    # Drafts: real PNGs, half the 1K size then the 1K size; the final image at the requested 2K.
    assert png_size(thoughts[1]["inlineData"]["data"]) == (688, 384)
    assert png_size(thoughts[3]["inlineData"]["data"]) == (1376, 768)
    final = s.parts[-1]
    assert png_size(final["inlineData"]["data"]) == (2752, 1536) and final["thoughtSignature"] in fake.issued_signatures

    # Only the last event finishes and carries usage, the same usage as the non-streaming call.
    assert [("usageMetadata" in e, e["candidates"][0].get("finishReason")) for e in s.events] == [(False, None)] * 5 + [
        (True, "STOP")
    ]
    assert s.events[-1]["usageMetadata"] == plain.json()["usageMetadata"]
    assert {e["modelVersion"] for e in s.events} == {PRO} and len({e["responseId"] for e in s.events}) == 1
    assert s.parts[-2]["text"] == "Here is your image."


async def test_thoughts_only_when_asked_and_drafts_only_from_thinking_models(fake: FakeImageAPI) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        without = await read_stream(client, stream_url(fake), body(thoughts=False))
        flash31 = await read_stream(client, stream_url(fake, FLASH31), body(size="1K"))
        flash25 = await read_stream(client, stream_url(fake, FLASH25), body(size=None))
        usage25 = (
            await client.post(
                f"{fake.base_url}/v1beta/models/{FLASH25}:generateContent", json=body(size=None), headers=KEY
            )
        ).json()["usageMetadata"]
    assert [shape(p) for p in without.parts] == ["text", "image"]
    assert [shape(p) for p in flash31.parts] == FULL
    assert png_size(flash31.parts[-1]["inlineData"]["data"]) == (1376, 768)
    assert [shape(p) for p in flash25.parts] == ["text", "image"]  # 2.5 does not think: no drafts
    assert flash25.events[-1]["usageMetadata"] == usage25


async def test_the_json_array_form_without_alt_sse(fake: FakeImageAPI) -> None:
    fake.latency = 0.3
    async with httpx.AsyncClient(timeout=10) as client:
        started = time.monotonic()
        resp = await client.post(stream_url(fake, sse=False), json=body(), headers=KEY)
        elapsed = time.monotonic() - started
    assert resp.headers["content-type"] == "application/json; charset=UTF-8"
    chunks = resp.json()
    assert isinstance(chunks, list) and len(chunks) == 6
    assert "usageMetadata" in chunks[-1] and chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert 0.3 <= elapsed < 0.3 + LATE + 0.15


async def test_slow_stretches_the_stream(fake: FakeImageAPI) -> None:
    fake.latency = 0.2
    fake.script(Fault.slow(0.6))
    async with httpx.AsyncClient(timeout=10) as client:
        s = await read_stream(client, stream_url(fake), body(size="1K"))
    assert s.headers_at < 0.15
    assert 0.4 * 0.8 - 0.03 <= s.times[1] <= 0.4 * 0.8 + LATE and 0.8 - 0.03 <= s.times[-1] <= 0.8 + LATE


# --- split and dropped streams ----------------------------------------------------------------------------


@pytest.mark.parametrize("lf_only", [False, True])
async def test_split_stream_still_parses(fake: FakeImageAPI, lf_only: bool) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        whole = await read_stream(client, stream_url(fake), body(size="1K"))
        fake.script(Fault.split_stream(chunk=7, lf_only=lf_only))
        split = await read_stream(client, stream_url(fake), body(size="1K"))
    assert split.error is None and len(split.events) == len(whole.events) == 6
    assert [shape(p) for p in split.parts] == [shape(p) for p in whole.parts]
    assert split.events[-1]["usageMetadata"] == whole.events[-1]["usageMetadata"]
    assert split.parts[1]["inlineData"]["data"] == whole.parts[1]["inlineData"]["data"]
    assert split.reads > 10 * whole.reads and split.reads > 200  # events really were split across reads
    assert whole.raw.count(b"\r\n\r\n") == 6
    if lf_only:
        assert b"\r" not in split.raw and split.raw.count(b"\n\n") == 6
    else:
        assert split.raw.count(b"\r\n\r\n") == 6
    assert fake.requests[-1].fault == "split_stream"


@pytest.mark.parametrize("after", [0, 2])
async def test_drop_stream_cuts_after_the_configured_event(fake: FakeImageAPI, after: int) -> None:
    fake.latency = 0.3
    fake.script(Fault.drop_stream(after_events=after))
    async with httpx.AsyncClient(timeout=10) as client:
        cut = await read_stream(client, stream_url(fake), body(size="1K"))
        again = await read_stream(client, stream_url(fake), body(size="1K"))
    assert cut.status == 200 and isinstance(cut.error, httpx.RemoteProtocolError)
    assert len(cut.events) == after
    assert [shape(p) for p in cut.parts] == ["thought-text", "thought-image"][:after]
    if after:
        assert cut.times[-1] >= DRAFT_AT[0] * 0.3 - 0.03  # the draft came on time, then the cut
    assert cut.elapsed < 0.3  # cut before the final moment, not at it
    assert again.error is None and len(again.events) == 6
    assert [r.fault for r in fake.requests] == ["drop_stream", None]
    assert fake.connections_seen == 2  # the cut took its connection down; the next call opened another


async def test_plain_drop_on_a_stream_cuts_after_half_the_events(fake: FakeImageAPI) -> None:
    fake.script(Fault.drop())
    async with httpx.AsyncClient(timeout=10) as client:
        cut = await read_stream(client, stream_url(fake), body(size="1K"))
    assert isinstance(cut.error, httpx.RemoteProtocolError) and len(cut.events) == 3


async def test_stall_on_a_stream_goes_silent_after_half_the_events(fake: FakeImageAPI) -> None:
    fake.latency = 0.3
    fake.script(Fault.stall())
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=0.5)) as client:
        stalled = await read_stream(client, stream_url(fake), body(size="1K"))
    assert isinstance(stalled.error, httpx.ReadTimeout) and len(stalled.events) == 3
    assert stalled.elapsed < 5  # ended by the client's read timeout, not by the fake


def test_stream_fault_arguments_are_checked() -> None:
    assert Fault.split_stream().chunk == 7 and not Fault.split_stream().lf_only
    assert Fault.drop_stream(after_events=3).after_events == 3
    with pytest.raises(ValueError):
        Fault.split_stream(chunk=0)
    with pytest.raises(ValueError):
        Fault.drop_stream(after_events=-1)


# --- the usual faults on the streaming endpoint ----------------------------------------------------------


@pytest.mark.parametrize(("fault", "status"), [(Fault.rate_limit(), 429), (Fault.server_error(503), 503)])
async def test_error_faults_answer_before_any_stream(fake: FakeImageAPI, fault: Fault, status: int) -> None:
    fake.script(fault)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(stream_url(fake), json=body(), headers=KEY)
    assert resp.status_code == status and resp.json()["error"]["code"] == status
    assert resp.headers["content-type"].startswith("application/json")


async def test_prompt_block_is_a_single_event(fake: FakeImageAPI) -> None:
    fake.script(Fault.prompt_block())
    async with httpx.AsyncClient(timeout=10) as client:
        s = await read_stream(client, stream_url(fake), body())
    assert len(s.events) == 1 and s.events[0]["promptFeedback"] == {"blockReason": "PROHIBITED_CONTENT"}
    assert "candidates" not in s.events[0] and "usageMetadata" in s.events[0]


async def test_output_block_ends_without_a_final_image(fake: FakeImageAPI) -> None:
    fake.script(Fault.output_block())
    async with httpx.AsyncClient(timeout=10) as client:
        s = await read_stream(client, stream_url(fake), body())
    last = s.events[-1]
    assert last["candidates"][0]["finishReason"] == "IMAGE_SAFETY" and "usageMetadata" in last
    assert not [p for p in s.parts if "inlineData" in p and not p.get("thought")]  # drafts, never a final
    assert all("finishReason" not in e["candidates"][0] for e in s.events[:-1])


# --- through the core -------------------------------------------------------------------------------------


async def test_a_stream_dropped_after_a_draft_is_retried_and_never_gives_a_draft_as_the_result(
    fake: FakeImageAPI, tmp_path: Path
) -> None:
    fake.latency = 0.3
    fake.script(Fault.drop_stream(after_events=2))  # the first headline and draft 1, then the cut
    runtime, sleeps = await open_runtime(fake, tmp_path)
    try:
        provider = next(p for p in runtime.service.providers if p.name == "gemini")
        previews: list[Preview] = []
        result = await provider.generate(
            ImageRequest(prompt="an orange cat", size="2K", aspect_ratio="1:1"),
            model_spec(PRO),
            on_preview=previews.append,
        )
    finally:
        await runtime.aclose()

    streams = [r for r in fake.requests if r.path.endswith(":streamGenerateContent")]
    assert [r.fault for r in streams] == ["drop_stream", None] and len(fake.requests) == 2
    assert len(sleeps.waits) == 1  # one retry, after the usual back-off
    drafts = [p.draft for p in previews if p.draft is not None]
    assert len(drafts) == 3  # one from the cut attempt, two from the retry
    assert [(d.width, d.height) for d in drafts] == [(512, 512), (512, 512), (1024, 1024)]
    assert previews[0].headline == "Composing the scene" and previews[0].draft is None
    assert result.attempts == 2 and (result.image.width, result.image.height) == (2048, 2048)
    assert image_dimensions(result.image.data) == (2048, 2048)
    assert all(result.image.data != d.data for d in drafts)
    assert result.usage.image_tokens > 0 and result.model_turn is not None
    assert not any(p.thought for p in result.model_turn.parts)
