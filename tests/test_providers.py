"""The generation core end to end against the fake image API on loopback.

Every path of the core: request shape per model, images and timings, cost, the usage log, retries with
honoured hints, what is never retried, key rotation and benching, failover, multi-turn signatures,
the OpenAI-compatible shapes, and bad input that must cost nothing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_settings
from bot.core.errors import (
    AllKeysBenchedError,
    BlockedError,
    GenerationTimeout,
    InvalidRequest,
    NoImageError,
    RateLimitedError,
    ResponseError,
    UnavailableError,
)
from bot.core.imaging import sniff_mime
from bot.core.models import model_spec
from bot.core.types import ImageInput, ImageRequest, Part, RequestContext, Turn
from bot.runtime import POOL_HEADROOM, Runtime
from storage.generations import count_generations, get_generation
from tests.fake_image_api import FakeImageAPI, Fault

KEY1, KEY2, KEY3 = "test-key-aaaa-0001", "test-key-bbbb-0002", "test-key-cccc-0003"


@pytest.fixture
async def fake() -> AsyncIterator[FakeImageAPI]:
    async with FakeImageAPI() as api:
        yield api


class Sleeps:
    """Records the retry loop's waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def open_runtime(fake: FakeImageAPI, tmp_path: Path, **env: str) -> tuple[Runtime, Sleeps]:
    values = {
        "GEMINI_API_KEY": KEY1,
        "GEMINI_BASE_URL": fake.base_url,
        "BANANA_DATA_DIR": str(tmp_path / "data"),
        "BANANA_PROVIDERS": "gemini,openai",
        **env,
    }
    runtime = await Runtime.open(load_settings(values, env_file=None))
    sleeps = Sleeps()
    for provider in runtime.service.providers:
        provider.sleep = sleeps
    return runtime, sleeps


@pytest.fixture
async def runtime(fake: FakeImageAPI, tmp_path: Path) -> AsyncIterator[tuple[Runtime, Sleeps]]:
    rt, sleeps = await open_runtime(fake, tmp_path)
    yield rt, sleeps
    await rt.aclose()


def gemini_calls(fake: FakeImageAPI) -> list[Any]:
    return [r for r in fake.requests if r.path.endswith(":generateContent")]


async def test_generate_2k_widescreen_with_timing_cost_log_and_store(
    fake: FakeImageAPI, runtime: tuple[Runtime, Sleeps]
) -> None:
    rt, _ = runtime
    context = RequestContext(command="imagine", guild_id=1, channel_id=2, user_id=3)
    result = await rt.service.generate(ImageRequest(prompt="an orange cat", size="2K", aspect_ratio="16:9"), context)

    image = result.image
    assert (image.width, image.height) == (2752, 1536)
    assert sniff_mime(image.data) == image.mime == "image/png"
    assert (result.provider, result.model, result.attempts) == ("gemini", "gemini-3-pro-image-preview", 1)
    t = result.timing
    assert t.connect_ms > 0 and t.ttfb_ms > t.connect_ms and t.download_ms >= 0 and t.decode_ms > 0
    assert t.total_ms >= t.ttfb_ms

    (call,) = gemini_calls(fake)
    assert call.path == "/v1beta/models/gemini-3-pro-image-preview:generateContent"
    assert call.api_key == KEY1 and call.http_version == "1.1"
    generation = call.json["generationConfig"]
    assert generation["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert "thinkingConfig" not in generation

    # Cost follows the price table applied to the usage the fake reported.
    usage = result.usage
    pricing = model_spec("gemini-3-pro-image-preview").pricing
    expected = (
        usage.input_tokens * pricing.input_per_m
        + (usage.output_tokens - usage.image_tokens + usage.thinking_tokens) * pricing.text_output_per_m
        + usage.image_tokens * pricing.image_output_per_m
    ) / 1e6
    assert usage.image_tokens == 1120 and usage.cost_usd == pytest.approx(expected, abs=1e-6)

    row = await get_generation(rt.db, 1)
    assert row is not None
    assert (row.status, row.command, row.guild_id, row.user_id, row.size, row.aspect_ratio) == (
        "ok",
        "imagine",
        1,
        3,
        "2K",
        "16:9",
    )
    assert row.cost_usd == pytest.approx(usage.cost_usd) and row.total_ms == pytest.approx(t.total_ms)
    assert (row.width, row.height, row.image_tokens) == (2752, 1536, 1120)
    assert row.bytes_received == result.bytes_received > len(image.data)
    assert row.image_key is not None and await rt.images.get(row.image_key) == image.data

    again = await rt.service.generate(ImageRequest(prompt="another cat"))
    assert again.timing.connect_ms == 0 and again.timing.ttfb_ms > 0  # the pooled connection, reused


async def test_thinking_level_is_sent_only_to_models_that_take_it(
    fake: FakeImageAPI, runtime: tuple[Runtime, Sleeps]
) -> None:
    rt, _ = runtime
    await rt.service.generate(
        ImageRequest(prompt="sign that says OPEN", thinking="high", model="gemini-3.1-flash-image-preview", size="512")
    )
    (call,) = gemini_calls(fake)
    assert call.json["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "high"}
    with pytest.raises(InvalidRequest, match="takes no thinking level"):
        await rt.service.generate(ImageRequest(prompt="x", thinking="high"))
    assert len(gemini_calls(fake)) == 1  # refused before anything was sent


async def test_rate_limit_waits_what_retry_info_says(
    fake: FakeImageAPI, runtime: tuple[Runtime, Sleeps], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.core.retry")
    rt, sleeps = runtime
    fake.script(Fault.rate_limit(retry_delay="7s"))
    result = await rt.service.generate(ImageRequest(prompt="cat"))
    assert result.attempts == 2 and len(gemini_calls(fake)) == 2
    assert len(sleeps.waits) == 1 and 7.0 <= sleeps.waits[0] < 7.5
    assert "gemini: attempt 1 failed (rate_limited" in caplog.text and "retrying in 7." in caplog.text


async def test_server_errors_and_dropped_connections_are_retried(
    fake: FakeImageAPI, runtime: tuple[Runtime, Sleeps]
) -> None:
    rt, sleeps = runtime
    fake.script(Fault.server_error(503))
    fake.script(Fault.server_error(500))
    fake.script(Fault.drop())
    result = await rt.service.generate(ImageRequest(prompt="cat"))
    assert result.attempts == 4 and len(sleeps.waits) == 3
    assert all(0 <= w <= 30 for w in sleeps.waits)


async def test_malformed_json_is_reported_not_retried(fake: FakeImageAPI, runtime: tuple[Runtime, Sleeps]) -> None:
    rt, sleeps = runtime
    fake.script(Fault.malformed_json(), times=10)
    with pytest.raises(ResponseError, match="malformed JSON") as info:
        await rt.service.generate(ImageRequest(prompt="cat"))
    # A complete answer that is wrong would be as wrong the next time: only the listed statuses, timeouts and
    # broken connections are retried.
    assert info.value.attempts == 1 and len(gemini_calls(fake)) == 1 and sleeps.waits == []


@pytest.mark.parametrize(
    ("status", "retried"),
    [(408, True), (500, True), (502, True), (503, True), (504, True), (501, False), (505, False), (507, False)],
)
async def test_only_the_listed_statuses_are_retried(
    fake: FakeImageAPI, runtime: tuple[Runtime, Sleeps], status: int, retried: bool
) -> None:
    rt, sleeps = runtime
    fake.script(Fault.gemini_error(status, f"relay says {status}"))
    if retried:
        result = await rt.service.generate(ImageRequest(prompt="cat"))
        assert result.attempts == 2 and len(sleeps.waits) == 1
    else:
        with pytest.raises(UnavailableError, match=f"relay says {status}") as info:
            await rt.service.generate(ImageRequest(prompt="cat"))
        assert info.value.attempts == 1 and sleeps.waits == []
    assert len(gemini_calls(fake)) == (2 if retried else 1)


async def test_retry_after_is_honoured_when_it_is_the_only_hint(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt, sleeps = await open_runtime(
        fake, tmp_path, OPENAI_API_KEY="sk-test-openai-0001", OPENAI_BASE_URL=f"{fake.base_url}/v1"
    )
    try:
        # Gemini: a 503 and a 429 that carry Retry-After and no RetryInfo.
        fake.script(Fault.gemini_error(503, "The model is overloaded.", retry_after=9))
        fake.script(Fault.gemini_error(429, "Resource has been exhausted.", "RESOURCE_EXHAUSTED", retry_after=6))
        result = await rt.service.generate(ImageRequest(prompt="cat"))
        assert result.attempts == 3
        # A 429's wait is what is left of the key's cool-down, which began when the 429 came (a few ms ago).
        assert len(sleeps.waits) == 2 and 9.0 <= sleeps.waits[0] < 9.5 and 5.9 <= sleeps.waits[1] < 6.5
        # OpenAI-compatible: a 429 with Retry-After.
        sleeps.waits.clear()
        fake.script(Fault.openai_rate_limit(retry_after=4.0))
        result = await rt.service.generate(ImageRequest(prompt="cat", provider="openai"))
        assert result.attempts == 2 and len(sleeps.waits) == 1 and 3.9 <= sleeps.waits[0] < 4.5
        # A hint longer than the cap (60 s) waits the cap, not the hint.
        sleeps.waits.clear()
        fake.script(Fault.gemini_error(503, "The model is overloaded.", retry_after=3600))
        await rt.service.generate(ImageRequest(prompt="cat"))
        assert len(sleeps.waits) == 1 and 60.0 <= sleeps.waits[0] < 60.5
    finally:
        await rt.aclose()


async def test_keys_a_relay_repeats_never_reach_logs_errors_or_the_database(
    fake: FakeImageAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rt, _ = await open_runtime(fake, tmp_path, GEMINI_API_KEY=f"{KEY1},{KEY2}", BANANA_RETRY_ATTEMPTS="2")
    try:
        fake.script(Fault.gemini_error(401, f"API key {KEY1} is not valid.", "UNAUTHENTICATED"), key=KEY1)
        fake.script(Fault.gemini_error(503, f"Overloaded (key={KEY2}).", "UNAVAILABLE"), key=KEY2, times=10)
        with pytest.raises(UnavailableError) as info:
            await rt.service.generate(ImageRequest(prompt="cat"))
        assert info.value.attempts == 2 and len(gemini_calls(fake)) == 3  # benched KEY1, then KEY2 twice
        assert "is not valid" in caplog.text and "retrying in" in caplog.text  # both were logged...
        for key in (KEY1, KEY2):  # ...without the keys
            assert key not in caplog.text and key not in str(info.value) and key not in repr(info.value.args)
    finally:
        await rt.aclose()
    for path in (tmp_path / "data").rglob("*.sqlite3*"):
        content = path.read_bytes()
        assert KEY1.encode() not in content and KEY2.encode() not in content


async def test_the_deadline_cuts_off_an_attempt_still_running(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt, _ = await open_runtime(fake, tmp_path, BANANA_TIMEOUT_1K="60", BANANA_RETRY_DEADLINE="1")
    try:
        fake.script(Fault.hang())
        started = asyncio.get_running_loop().time()
        with pytest.raises(GenerationTimeout, match="1 s deadline") as info:
            await rt.service.generate(ImageRequest(prompt="cat"))
        assert info.value.attempts == 1
        assert 0.9 <= asyncio.get_running_loop().time() - started < 5  # the read timeout alone would be 60 s
    finally:
        await rt.aclose()


@pytest.mark.parametrize(
    ("fault", "error", "words"),
    [
        (Fault.bad_request("Request contains an invalid argument."), InvalidRequest, "invalid argument"),
        (Fault.not_found(), InvalidRequest, "model not found"),
        (Fault.prompt_block("PROHIBITED_CONTENT"), BlockedError, "PROHIBITED_CONTENT"),
        (Fault.output_block("IMAGE_SAFETY", text="I can't make that image."), BlockedError, "IMAGE_SAFETY"),
        (Fault.text_only("Here is a poem instead."), NoImageError, "Here is a poem instead."),
    ],
)
async def test_never_retried(
    fake: FakeImageAPI, runtime: tuple[Runtime, Sleeps], fault: Fault, error: type[Exception], words: str
) -> None:
    rt, sleeps = runtime
    fake.script(fault)
    with pytest.raises(error, match=words):
        await rt.service.generate(ImageRequest(prompt="cat"))
    assert len(gemini_calls(fake)) == 1 and sleeps.waits == []
    row = await get_generation(rt.db, 1)
    assert row is not None and row.status == ("blocked" if error is BlockedError else "error")
    assert row.image_key is None and row.cost_usd == 0


async def test_output_block_keeps_the_models_words(fake: FakeImageAPI, runtime: tuple[Runtime, Sleeps]) -> None:
    rt, _ = runtime
    fake.script(Fault.output_block("IMAGE_SAFETY", text="I can't make that image.", with_content=True))
    with pytest.raises(BlockedError) as info:
        await rt.service.generate(ImageRequest(prompt="cat"))
    assert info.value.stage == "output" and info.value.model_text == "I can't make that image."


async def test_per_day_quota_is_not_retried(fake: FakeImageAPI, runtime: tuple[Runtime, Sleeps]) -> None:
    rt, sleeps = runtime
    fake.script(Fault.rate_limit(retry_delay="30s", per_day=True))
    with pytest.raises(RateLimitedError, match="daily quota") as info:
        await rt.service.generate(ImageRequest(prompt="cat"))
    assert info.value.per_day and len(gemini_calls(fake)) == 1 and sleeps.waits == []


async def test_hang_times_out_per_resolution(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt, _ = await open_runtime(fake, tmp_path, BANANA_TIMEOUT_1K="0.3", BANANA_RETRY_ATTEMPTS="2")
    try:
        fake.script(Fault.hang(), times=2)
        started = asyncio.get_running_loop().time()
        with pytest.raises(GenerationTimeout) as info:
            await rt.service.generate(ImageRequest(prompt="cat"))
        assert info.value.attempts == 2
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await rt.aclose()


async def test_mislabelled_mime_is_sniffed_and_non_images_refused(
    fake: FakeImageAPI, runtime: tuple[Runtime, Sleeps]
) -> None:
    rt, _ = runtime
    fake.script(Fault.mislabelled_mime())
    result = await rt.service.generate(ImageRequest(prompt="cat"))
    assert result.image.mime == "image/jpeg" and sniff_mime(result.image.data) == "image/jpeg"
    fake.script(Fault.not_an_image(), times=10)
    with pytest.raises(ResponseError, match="not an image"):
        await rt.service.generate(ImageRequest(prompt="cat"))


async def test_keys_rotate_round_robin(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt, _ = await open_runtime(fake, tmp_path, GEMINI_API_KEY=f"{KEY1},{KEY2},{KEY3}")
    try:
        for _ in range(4):
            await rt.service.generate(ImageRequest(prompt="cat"))
        assert [r.api_key for r in gemini_calls(fake)] == [KEY1, KEY2, KEY3, KEY1]
    finally:
        await rt.aclose()


async def test_invalid_and_leaked_keys_are_benched_and_the_others_carry_on(
    fake: FakeImageAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rt, sleeps = await open_runtime(fake, tmp_path, GEMINI_API_KEY=f"{KEY1},{KEY2},{KEY3}")
    try:
        fake.script(Fault.invalid_key(), key=KEY1, times=100)
        fake.script(Fault.leaked_key(), key=KEY2, times=100)
        for _ in range(3):
            result = await rt.service.generate(ImageRequest(prompt="cat"))
            assert result.attempts == 1
        used = [r.api_key for r in gemini_calls(fake)]
        assert used == [KEY1, KEY2, KEY3, KEY3, KEY3]  # each bad key refused once, then skipped
        assert sleeps.waits == []
        status = dict(rt.service.providers[0].keys.status())
        assert sum(state.startswith("benched") for state in status.values()) == 2
    finally:
        await rt.aclose()
    assert KEY1 not in caplog.text and KEY2 not in caplog.text


async def test_every_key_refused_says_so_without_the_keys(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt, _ = await open_runtime(fake, tmp_path, GEMINI_API_KEY=f"{KEY1},{KEY2}")
    try:
        fake.script(Fault.invalid_key(), times=100)
        with pytest.raises(AllKeysBenchedError, match="Every gemini API key was refused") as info:
            await rt.service.generate(ImageRequest(prompt="cat"))
        assert KEY1 not in str(info.value) and KEY2 not in str(info.value)
    finally:
        await rt.aclose()
    # Nothing secret reached the database either.
    raw = (tmp_path / "data" / "banana.sqlite3").read_bytes()
    assert KEY1.encode() not in raw and KEY2.encode() not in raw


async def test_rate_limited_key_is_skipped_while_cooling_down(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt, sleeps = await open_runtime(fake, tmp_path, GEMINI_API_KEY=f"{KEY1},{KEY2}")
    try:
        fake.script(Fault.rate_limit(retry_delay="40s"), key=KEY1)
        await rt.service.generate(ImageRequest(prompt="cat"))
        await rt.service.generate(ImageRequest(prompt="cat"))
        assert [r.api_key for r in gemini_calls(fake)] == [KEY1, KEY2, KEY2]
        assert sleeps.waits == []  # another key was free: no need to wait
    finally:
        await rt.aclose()


async def test_fails_over_to_the_second_provider(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt, _ = await open_runtime(
        fake,
        tmp_path,
        OPENAI_API_KEY="sk-test-openai-0001",
        OPENAI_BASE_URL=f"{fake.base_url}/v1",
        BANANA_RETRY_ATTEMPTS="2",
    )
    try:
        fake.script(Fault.server_error(503), path_contains="generateContent", times=10)
        result = await rt.service.generate(ImageRequest(prompt="cat", aspect_ratio="16:9"))
        assert (result.provider, result.model) == ("openai", "gpt-image-2")
        assert result.failed_over_from == [("gemini", "unavailable")]
        assert result.attempts == 3
        row = await get_generation(rt.db, 1)
        assert row is not None and (row.provider, row.model, row.attempts) == ("openai", "gpt-image-2", 3)

        # When the second fails too, the error and its log row name it, and its model.
        fake.script(Fault.server_error(503), path_contains="images", times=10)
        with pytest.raises(UnavailableError) as info:
            await rt.service.generate(ImageRequest(prompt="cat", aspect_ratio="16:9"))
        assert info.value.provider == "openai" and info.value.attempts == 4
        row = await get_generation(rt.db, 2)
        assert row is not None and (row.status, row.provider, row.model) == ("error", "openai", "gpt-image-2")
    finally:
        await rt.aclose()


async def test_blocks_do_not_fail_over(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt, _ = await open_runtime(
        fake, tmp_path, OPENAI_API_KEY="sk-test-openai-0001", OPENAI_BASE_URL=f"{fake.base_url}/v1"
    )
    try:
        fake.script(Fault.prompt_block())
        with pytest.raises(BlockedError):
            await rt.service.generate(ImageRequest(prompt="cat"))
        assert not [r for r in fake.requests if "images" in r.path]
    finally:
        await rt.aclose()


async def test_edit_turns_replay_signatures_exactly(fake: FakeImageAPI, runtime: tuple[Runtime, Sleeps]) -> None:
    rt, _ = runtime
    first = await rt.service.generate(ImageRequest(prompt="make a cat"))
    assert first.model_turn is not None
    signatures = [p.thought_signature for p in first.model_turn.parts if not p.thought]
    assert all(signatures) and set(signatures) <= fake.issued_signatures
    history = (Turn(role="user", parts=(Part(text="make a cat"),)), first.model_turn)
    second = await rt.service.generate(ImageRequest(prompt="now make it blue", history=history))
    assert second.image.data
    sent = gemini_calls(fake)[-1].json["contents"]
    assert [c["role"] for c in sent] == ["user", "model", "user"]
    assert [p.get("thoughtSignature") for p in sent[1]["parts"]] == signatures

    # Without the signatures the API refuses the turn: a 400, reported and not retried.
    stripped = Turn(role="model", parts=tuple(Part(text=p.text, image=p.image) for p in first.model_turn.parts))
    with pytest.raises(InvalidRequest, match="thought_signature"):
        await rt.service.generate(ImageRequest(prompt="blue", history=(history[0], stripped)))


async def test_bad_input_costs_nothing_and_writes_nothing(fake: FakeImageAPI, runtime: tuple[Runtime, Sleeps]) -> None:
    rt, _ = runtime
    ref = ImageInput(data=b"\x89PNG\r\n\x1a\n" + b"\0" * 100, mime="image/png")
    for request in (
        ImageRequest(prompt="cat", aspect_ratio="7:3"),
        ImageRequest(prompt="cat", references=(ref,) * 15),
        ImageRequest(prompt="cat", size="4K", model="gemini-2.5-flash-image"),
        ImageRequest(prompt="cat", provider="midjourney"),
    ):
        with pytest.raises(InvalidRequest):
            await rt.service.generate(request)
    assert fake.requests == []
    assert await count_generations(rt.db) == 0
    assert not any((rt.settings.images_dir).rglob("*.png"))


async def test_a_failed_log_write_never_fails_the_generation(
    fake: FakeImageAPI,
    runtime: tuple[Runtime, Sleeps],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt, _ = runtime

    async def broken(*args: Any, **kwargs: Any) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr("bot.core.service.insert_generation", broken)
    result = await rt.service.generate(ImageRequest(prompt="cat"))
    assert result.image.data
    assert "could not write the usage row" in caplog.text


async def test_concurrent_requests_share_a_pool_the_size_of_the_cap_and_keep_it_alive(
    fake: FakeImageAPI, tmp_path: Path
) -> None:
    """HTTP/1.1 carries one request at a time per connection: a provider opens up to the bot's concurrency cap
    (plus headroom) and no more, more requests wait for one of those, and they stay open for the next ones."""
    rt, _ = await open_runtime(fake, tmp_path, BANANA_MAX_CONCURRENT="4")
    pool = 4 + POOL_HEADROOM
    try:
        fake.latency = 0.2
        async with asyncio.timeout(30):
            results = await asyncio.gather(*(rt.service.generate(ImageRequest(prompt=f"cat {i}")) for i in range(16)))
        assert len(results) == 16 and await count_generations(rt.db) == 16
        assert fake.connections_seen == pool and fake.max_in_flight == pool
        assert sum(r.timing.connect_ms > 0 for r in results) == pool  # the others were sent on a kept connection
        for _ in range(3):
            again = await rt.service.generate(ImageRequest(prompt="another cat"))
            assert again.timing.connect_ms == 0 and again.timing.ttfb_ms > 0
        assert fake.connections_seen == pool
    finally:
        await rt.aclose()


# --- OpenAI-compatible providers ------------------------------------------------------------------------


async def open_openai(fake: FakeImageAPI, tmp_path: Path, **env: str) -> Runtime:
    rt, _ = await open_runtime(
        fake,
        tmp_path,
        GEMINI_API_KEY="",
        OPENAI_API_KEY="sk-test-openai-0001",
        OPENAI_BASE_URL=f"{fake.base_url}/v1",
        OPENAI_PRICE_PER_IMAGE="0.05",
        **env,
    )
    return rt


async def test_openai_generations_and_edits_with_several_images(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt = await open_openai(fake, tmp_path, OPENAI_EXTRA_BODY='{"quality": "high"}')
    try:
        result = await rt.service.generate(ImageRequest(prompt="cat", aspect_ratio="16:9"))
        assert (result.image.width, result.image.height) == (1376, 768)
        assert result.usage.cost_usd == 0.05
        gen = fake.requests[-1]
        assert gen.path == "/v1/images/generations" and gen.json["quality"] == "high"
        assert gen.headers["authorization"] == "Bearer sk-test-openai-0001"

        first, second = (ImageInput(data=img.data, mime=img.mime) for img in (result.image, result.image))
        edited = await rt.service.generate(ImageRequest(prompt="put them together", references=(first, second)))
        assert edited.image.data
        edit = fake.requests[-1]
        assert edit.path == "/v1/images/edits" and len(edit.files["image[]"]) == 2
        assert edit.form["prompt"] == ["put them together"]
    finally:
        await rt.aclose()


async def test_openai_url_results_are_downloaded_through_the_pool(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt = await open_openai(fake, tmp_path, OPENAI_EXTRA_BODY='{"response_format": "url"}')
    try:
        result = await rt.service.generate(ImageRequest(prompt="cat"))
        assert sniff_mime(result.image.data) == "image/png"
        assert [r.path for r in fake.requests][-1].startswith("/files/")
    finally:
        await rt.aclose()


async def test_openai_errors_map_to_the_same_types(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt = await open_openai(fake, tmp_path)
    try:
        fake.script(Fault.openai_moderation())
        with pytest.raises(BlockedError, match="moderation_blocked"):
            await rt.service.generate(ImageRequest(prompt="cat"))
        fake.script(Fault.openai_rate_limit(retry_after=2.0))
        result = await rt.service.generate(ImageRequest(prompt="cat"))
        assert result.attempts == 2
        calls = len(fake.requests)
        fake.script(Fault.openai_error(409, "conflict", "The request conflicted with another.", "server_error"))
        with pytest.raises(UnavailableError, match="409") as info:
            await rt.service.generate(ImageRequest(prompt="cat"))
        assert info.value.attempts == 1 and len(fake.requests) == calls + 1  # not one of the retried statuses
        fake.script(Fault.openai_invalid_key(), times=10)
        with pytest.raises(AllKeysBenchedError):
            await rt.service.generate(ImageRequest(prompt="cat"))
    finally:
        await rt.aclose()


async def test_chat_completions_relay_shape(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt = await open_openai(
        fake, tmp_path, OPENAI_API_STYLE="chat", OPENAI_IMAGE_MODEL="google/gemini-3-pro-image-preview"
    )
    try:
        result = await rt.service.generate(ImageRequest(prompt="cat", size="2K", aspect_ratio="16:9"))
        assert (result.image.width, result.image.height) == (2752, 1536)
        body = fake.requests[-1].json
        assert body["modalities"] == ["image", "text"]
        assert body["image_config"] == {"image_size": "2K", "aspect_ratio": "16:9"}
        fake.script(Fault.markdown_image())
        again = await rt.service.generate(ImageRequest(prompt="cat"))
        assert sniff_mime(again.image.data) == "image/png"
    finally:
        await rt.aclose()


async def test_relay_edit_resends_the_latest_image_as_a_reference(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt = await open_openai(fake, tmp_path)
    try:
        first = await rt.service.generate(ImageRequest(prompt="cat"))
        image = ImageInput(data=first.image.data, mime=first.image.mime)
        history = (
            Turn(role="user", parts=(Part(text="cat"),)),
            Turn(role="model", parts=(Part(image=image, thought_signature="sig"),)),
        )
        await rt.service.generate(ImageRequest(prompt="make it blue", history=history))
        edit = fake.requests[-1]
        assert edit.path == "/v1/images/edits" and edit.files["image"][0][2] == first.image.data
    finally:
        await rt.aclose()


async def test_retention_setting_prunes_old_images_at_start(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt, _ = await open_runtime(fake, tmp_path)
    try:
        old = await rt.service.generate(ImageRequest(prompt="old cat"))
        new = await rt.service.generate(ImageRequest(prompt="new cat", aspect_ratio="16:9"))
        async with rt.db.transaction() as conn:
            await conn.execute("UPDATE images SET created_at = created_at - 40 * 86400 WHERE width = 1024")
    finally:
        await rt.aclose()
    rt, _ = await open_runtime(fake, tmp_path, BANANA_IMAGE_RETENTION_DAYS="30")
    try:
        old_row, new_row = await get_generation(rt.db, 1), await get_generation(rt.db, 2)
        assert old_row is not None and new_row is not None and old_row.image_key and new_row.image_key
        assert not await rt.images.exists(old_row.image_key)
        assert await rt.images.get(new_row.image_key) == new.image.data
        assert old.image.data != new.image.data
        assert await count_generations(rt.db) == 2  # the usage log is kept; only the pixels go
    finally:
        await rt.aclose()


async def test_relay_thinking_field_is_passed_through_only_when_configured(fake: FakeImageAPI, tmp_path: Path) -> None:
    rt = await open_openai(fake, tmp_path, OPENAI_THINKING_FIELD="thinking_level")
    try:
        await rt.service.generate(ImageRequest(prompt="a sign that says OPEN", thinking="high"))
        assert fake.requests[-1].json["thinking_level"] == "high"
        await rt.service.generate(ImageRequest(prompt="cat"))
        assert "thinking_level" not in fake.requests[-1].json
    finally:
        await rt.aclose()


async def test_image_sized_answers_over_a_pool_wider_than_httpx_keeps_alive_by_default(tmp_path: Path) -> None:
    """Real-sized bodies on every connection of a pool of 26; all 26 are kept alive after a burst (httpx keeps
    20 by default), so the next burst opens none."""
    async with FakeImageAPI(payload="realistic", latency=0.2) as api:
        rt, _ = await open_runtime(api, tmp_path, BANANA_MAX_CONCURRENT="24")
        pool = 24 + POOL_HEADROOM
        try:
            for _ in range(2):
                async with asyncio.timeout(60):
                    results = await asyncio.gather(
                        *(rt.service.generate(ImageRequest(prompt=f"cat {i}")) for i in range(pool + 6))
                    )
                assert all(r.image.width == 1024 and len(r.image.data) > 1_000_000 for r in results)
                assert api.connections_seen == pool
            assert api.request_count == 2 * (pool + 6)
        finally:
            await rt.aclose()


async def test_cancelled_requests_give_their_connections_back(tmp_path: Path) -> None:
    """A request cancelled at any moment (a member's job cancelled, the deadline) frees its place in the pool:
    with a pool the size of the cap, one leaked place would leave a job waiting for ever."""
    async with FakeImageAPI(payload="realistic", latency=0.4) as api:
        rt, _ = await open_runtime(api, tmp_path, BANANA_MAX_CONCURRENT="4")
        pool = 4 + POOL_HEADROOM
        try:
            async with asyncio.timeout(60):
                for wave in range(3):
                    tasks = [
                        asyncio.create_task(rt.service.generate(ImageRequest(prompt=f"cat {i}"))) for i in range(12)
                    ]
                    for i, task in enumerate(tasks[::2]):
                        await asyncio.sleep(0.05 + 0.03 * i + 0.1 * wave)  # waiting, sending, reading the body
                        task.cancel()
                    done = await asyncio.gather(*tasks, return_exceptions=True)
                    kept = [r for r in done if not isinstance(r, BaseException)]
                    assert len(kept) >= 6 and all(r.image.width == 1024 for r in kept)
            # Every place is free again: a full pool's worth of requests is answered side by side, at once.
            api.reset()
            started = asyncio.get_running_loop().time()
            async with asyncio.timeout(10):
                await asyncio.gather(*(rt.service.generate(ImageRequest(prompt=f"after {i}")) for i in range(pool)))
            assert asyncio.get_running_loop().time() - started < 0.4 * 3
            assert api.max_in_flight == pool
        finally:
            await rt.aclose()


async def test_a_server_that_stalls_mid_body_is_cut_off_by_the_read_timeout(fake: FakeImageAPI, tmp_path: Path) -> None:
    """httpx times each read: an answer whose body stops halfway ends at the read timeout after its last
    bytes, long before the retry deadline."""
    rt, _ = await open_runtime(fake, tmp_path, BANANA_TIMEOUT_1K="0.5", BANANA_RETRY_ATTEMPTS="1")
    try:
        fake.script(Fault.stall())
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(30):
            with pytest.raises(GenerationTimeout, match="ReadTimeout"):
                await rt.service.generate(ImageRequest(prompt="cat"))
        assert 0.45 <= loop.time() - started < 3
        (call,) = gemini_calls(fake)
        assert call.fault == "stall" and call.status == 200  # headers and half the body had come
        again = await rt.service.generate(ImageRequest(prompt="cat"))  # the pool lost nothing
        assert again.image.data
    finally:
        await rt.aclose()


async def test_a_start_that_fails_closes_the_database(
    fake: FakeImageAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage.images import ImageStore

    async def broken_prune(self: ImageStore, older_than_days: float, *, now: float | None = None) -> int:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ImageStore, "prune", broken_prune)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(OSError, match="Input/output error"):
            await open_runtime(fake, tmp_path, BANANA_IMAGE_RETENTION_DAYS="30")
        gc.collect()  # an unclosed aiosqlite connection says so when it is collected
    assert not [w for w in caught if "before being closed" in str(w.message)]
