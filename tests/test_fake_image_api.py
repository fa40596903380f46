"""Raw-wire tests of the fake image API itself (httpx, loopback only).

Expected values are written out from the spec (image-apis.md A0-A8, B) rather than read back from the
fake's own tables, so a wrong table entry fails here.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.fake_image_api import FakeImageAPI, Fault

pytestmark = pytest.mark.timeout(30)

PRO = "gemini-3-pro-image-preview"
FLASH31 = "gemini-3.1-flash-image-preview"
FLASH25 = "gemini-2.5-flash-image"
KEY = {"x-goog-api-key": "test-key"}
BEARER = {"Authorization": "Bearer sk-test"}
REPO = Path(__file__).resolve().parent.parent


def png(width: int = 64, height: int = 64, colour: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "PNG")
    return buf.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.size


def gemini_body(
    prompt: str = "a banana in a spacesuit",
    *,
    ratio: str | None = None,
    size: str | None = None,
    thoughts: bool | None = None,
    level: str | None = None,
    images: list[bytes] | tuple[bytes, ...] = (),
    modalities: list[str] | None = None,
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": prompt}]
    parts += [{"inlineData": {"mimeType": "image/png", "data": base64.b64encode(i).decode()}} for i in images]
    gen: dict[str, Any] = {"responseModalities": modalities or ["TEXT", "IMAGE"]}
    image_config = {k: v for k, v in (("aspectRatio", ratio), ("imageSize", size)) if v is not None}
    if image_config:
        gen["imageConfig"] = image_config
    thinking = {k: v for k, v in (("includeThoughts", thoughts), ("thinkingLevel", level)) if v is not None}
    if thinking:
        gen["thinkingConfig"] = thinking
    return {"contents": [{"role": "user", "parts": parts}], "generationConfig": gen}


def url(fake: FakeImageAPI, model: str = PRO, version: str = "v1beta", method: str = "generateContent") -> str:
    return f"{fake.base_url}/{version}/models/{model}:{method}"


async def generate(
    client: httpx.AsyncClient, fake: FakeImageAPI, body: dict[str, Any], model: str = PRO, **kw: Any
) -> httpx.Response:
    return await client.post(url(fake, model, **kw), json=body, headers=KEY)


def parts_of(resp: httpx.Response) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = resp.json()["candidates"][0]["content"]["parts"]
    return parts


def final_image(resp: httpx.Response) -> bytes:
    images = [p for p in parts_of(resp) if "inlineData" in p and not p.get("thought")]
    assert len(images) == 1
    return base64.b64decode(images[0]["inlineData"]["data"], validate=True)


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


# ---- Gemini: sizes, tokens, parts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "ratio", "size", "expected", "image_tokens"),
    [
        (PRO, None, None, (1024, 1024), 1120),
        (PRO, "16:9", "2K", (2752, 1536), 1120),
        (PRO, "21:9", "1K", (1584, 672), 1120),
        (PRO, "4:5", "4K", (3712, 4608), 2000),
        (FLASH31, "1:1", "512", (512, 512), 747),
        (FLASH31, "16:9", "512", (688, 384), 747),
        (FLASH31, "1:8", "1K", (384, 3072), 1120),
        (FLASH31, "4:1", "2K", (4096, 1024), 1680),
        (FLASH31, "3:2", "2K", (2528, 1696), 1680),
        (FLASH25, None, None, (1024, 1024), 1290),
        (FLASH25, "16:9", None, (1344, 768), 1290),
        (FLASH25, "2:3", None, (832, 1248), 1290),
        (FLASH25, "21:9", None, (1536, 672), 1290),
    ],
)
async def test_output_pixel_size_and_image_tokens_follow_tables_a7_a8(
    fake_api: FakeImageAPI,
    client: httpx.AsyncClient,
    model: str,
    ratio: str | None,
    size: str | None,
    expected: tuple[int, int],
    image_tokens: int,
) -> None:
    resp = await generate(client, fake_api, gemini_body(ratio=ratio, size=size), model)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert size_of(final_image(resp)) == expected
    body = resp.json()
    cand = body["candidates"][0]
    assert cand["finishReason"] == "STOP" and cand["index"] == 0 and cand["content"]["role"] == "model"
    usage = body["usageMetadata"]
    assert usage["candidatesTokensDetails"] == [{"modality": "IMAGE", "tokenCount": image_tokens}]
    assert usage["candidatesTokenCount"] > image_tokens  # plus the text part
    thoughts = usage.get("thoughtsTokenCount", 0)
    assert ("thoughtsTokenCount" in usage) == (model != FLASH25)
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"] + thoughts
    assert body["modelVersion"] == model and body["responseId"]


async def test_gemini3_parts_carry_signatures_where_a3_says(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    resp = await generate(client, fake_api, gemini_body(thoughts=True, ratio="3:4"))
    parts = parts_of(resp)
    assert [("text" in p, "inlineData" in p, bool(p.get("thought"))) for p in parts] == [
        (True, False, True),  # thought text
        (False, True, True),  # interim draft image
        (True, False, False),  # "Here is your image."
        (False, True, False),  # the final image
    ]
    for p in parts[:2]:
        assert "thoughtSignature" not in p
    assert parts[2]["text"] == "Here is your image."
    signatures = [parts[2]["thoughtSignature"], parts[3]["thoughtSignature"]]
    assert len(set(signatures)) == 2
    for sig in signatures:
        base64.b64decode(sig, validate=True)  # standard alphabet, padded
        assert sig in fake_api.issued_signatures
    assert size_of(base64.b64decode(parts[1]["inlineData"]["data"])) == (896, 1200)  # 1K draft
    assert size_of(final_image(resp)) == (896, 1200)


async def test_no_thoughts_unless_asked_or_always_thoughts(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    plain = parts_of(await generate(client, fake_api, gemini_body()))
    assert not any(p.get("thought") for p in plain)
    assert len(plain) == 2 and all("thoughtSignature" in p for p in plain)
    fake_api.always_thoughts = True
    forced = parts_of(await generate(client, fake_api, gemini_body(thoughts=False)))
    assert [bool(p.get("thought")) for p in forced] == [True, True, False, False]


async def test_gemini25_has_no_signatures_and_no_thoughts(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    fake_api.always_thoughts = True
    resp = await generate(client, fake_api, gemini_body(thoughts=True), FLASH25)
    parts = parts_of(resp)
    assert len(parts) == 2
    assert not any("thoughtSignature" in p or p.get("thought") for p in parts)
    assert "thoughtsTokenCount" not in resp.json()["usageMetadata"]


async def test_image_only_modality_has_no_text_part(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    parts = parts_of(await generate(client, fake_api, gemini_body(modalities=["IMAGE"])))
    assert len(parts) == 1 and "inlineData" in parts[0] and "thoughtSignature" in parts[0]


async def test_prompt_tokens_count_text_and_images(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    prompt = "x" * 400
    resp = await generate(client, fake_api, gemini_body(prompt, images=[png(), png()]))
    usage = resp.json()["usageMetadata"]
    assert usage["promptTokensDetails"] == [
        {"modality": "TEXT", "tokenCount": 100},
        {"modality": "IMAGE", "tokenCount": 2 * 258},
    ]
    assert usage["promptTokenCount"] == 100 + 516


async def test_missing_ratio_follows_the_input_image(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    resp = await generate(client, fake_api, gemini_body(images=[png(1600, 900)]))
    assert size_of(final_image(resp)) == (1376, 768)  # 16:9 at 1K


# ---- Gemini: multi-turn and thought signatures ---------------------------------------------------------


async def _first_turn(client: httpx.AsyncClient, fake: FakeImageAPI, model: str = PRO) -> list[dict[str, Any]]:
    resp = await generate(client, fake, gemini_body("make a cat", thoughts=True), model)
    assert resp.status_code == 200
    return parts_of(resp)


def _replay(model_parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "contents": [
            {"role": "user", "parts": [{"text": "make a cat"}]},
            {"role": "model", "parts": model_parts},
            {"role": "user", "parts": [{"text": "now make it blue"}]},
        ]
    }


@pytest.mark.parametrize("model", [PRO, FLASH31])
async def test_replay_needs_the_issued_signature(fake_api: FakeImageAPI, client: httpx.AsyncClient, model: str) -> None:
    parts = await _first_turn(client, fake_api, model)

    ok = await generate(client, fake_api, _replay(parts), model)
    assert ok.status_code == 200, ok.text
    assert fake_api.requests[-1].json["contents"][1]["role"] == "model"

    # signatures come back URL-safe and unpadded from the SDK: still the same signature
    urlsafe = [dict(p) for p in parts]
    for p in urlsafe:
        if "thoughtSignature" in p:
            p["thoughtSignature"] = p["thoughtSignature"].replace("+", "-").replace("/", "_").rstrip("=")
    assert (await generate(client, fake_api, _replay(urlsafe), model)).status_code == 200

    missing = [dict(p) for p in parts]
    del missing[3]["thoughtSignature"]  # the final image, 4th part of the 2nd content
    resp = await generate(client, fake_api, _replay(missing), model)
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["status"] == "INVALID_ARGUMENT" and err["code"] == 400
    assert err["message"].startswith(
        "Image part is missing a thought_signature in content position 2, part position 4."
    )

    forged = [dict(p) for p in parts]
    forged[3]["thoughtSignature"] = base64.b64encode(os.urandom(64)).decode()
    resp = await generate(client, fake_api, _replay(forged), model)
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "Corrupted thought signature."


async def test_replay_without_signatures_is_fine_on_gemini25(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    parts = await _first_turn(client, fake_api, FLASH25)
    assert (await generate(client, fake_api, _replay(parts), FLASH25)).status_code == 200


# ---- Gemini: request parsing and validation ------------------------------------------------------------


async def test_snake_case_and_urlsafe_unpadded_base64_are_accepted(
    fake_api: FakeImageAPI, client: httpx.AsyncClient
) -> None:
    image = png(300, 200, (251, 255, 191))
    std = base64.b64encode(image).decode()
    urlsafe = base64.urlsafe_b64encode(image).decode().rstrip("=")
    assert std != urlsafe + "=" * (-len(urlsafe) % 4)  # the two alphabets really differ for this image
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [{"text": "edit this"}, {"inline_data": {"mime_type": "image/png", "data": urlsafe}}],
            }
        ],
        "generation_config": {
            "response_modalities": ["TEXT", "IMAGE"],
            "image_config": {"aspect_ratio": "9:16", "image_size": "2K"},
            "thinking_config": {"include_thoughts": True},
        },
    }
    resp = await generate(client, fake_api, body)
    assert resp.status_code == 200, resp.text
    assert size_of(final_image(resp)) == (1536, 2752)
    assert parts_of(resp)[0]["thought"] is True
    assert {"modality": "IMAGE", "tokenCount": 258} in resp.json()["usageMetadata"]["promptTokensDetails"]


async def test_key_in_query_and_v1_path(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    resp = await client.post(url(fake_api, version="v1") + "?key=qk", json=gemini_body())
    assert resp.status_code == 200
    assert fake_api.requests[-1].api_key == "qk"
    assert fake_api.requests[-1].query == {"key": "qk"}


async def test_keys_missing_or_invalid(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    resp = await client.post(url(fake_api), json=gemini_body())
    assert resp.status_code == 403 and resp.json()["error"]["status"] == "PERMISSION_DENIED"
    fake_api.valid_keys = {"good"}
    resp = await client.post(url(fake_api), json=gemini_body(), headers={"x-goog-api-key": "bad"})
    err = resp.json()["error"]
    assert resp.status_code == 400 and err["status"] == "INVALID_ARGUMENT"
    assert err["message"] == "API key not valid. Please pass a valid API key."
    assert err["details"][0]["reason"] == "API_KEY_INVALID"
    ok = await client.post(url(fake_api), json=gemini_body(), headers={"x-goog-api-key": "good"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("model", "body", "status", "message"),
    [
        (
            "gemini-9-ultra-image",
            gemini_body(),
            404,
            "models/gemini-9-ultra-image is not found for API version v1beta",
        ),
        (
            PRO,
            gemini_body(ratio="1:8"),
            400,
            "* GenerateContentRequest.generation_config.image_config.aspect_ratio: aspect_ratio must be one of "
            "'1:1', '2:3', '3:2', '3:4', '4:3', '4:5', '5:4', '9:16', '16:9' or '21:9'.",
        ),
        (PRO, gemini_body(size="1k"), 400, "* GenerateContentRequest.generation_config.image_config.image_size"),
        (PRO, gemini_body(size="512"), 400, "* GenerateContentRequest.generation_config.image_config.image_size"),
        (FLASH25, gemini_body(size="1K"), 400, "Image size is not supported for this model."),
        (PRO, gemini_body(level="high"), 400, "Thinking level is not supported for this model."),
        (FLASH31, gemini_body(level="medium"), 400, "Thinking level MEDIUM is not supported"),
        (PRO, gemini_body(images=[png()] * 15), 400, "Too many images"),
        (PRO, gemini_body(images=[b"%PDF-1.4 definitely not an image"]), 400, "Unable to process input image."),
        (PRO, {"contents": []}, 400, "* GenerateContentRequest.contents: contents is not specified"),
        (
            PRO,
            {**gemini_body(), "generationConfig": {"imageConfig": {"resolution": "4K"}}},
            400,
            'Invalid JSON payload received. Unknown name "resolution"',
        ),
    ],
)
async def test_invalid_requests_get_the_real_errors(
    fake_api: FakeImageAPI,
    client: httpx.AsyncClient,
    model: str,
    body: dict[str, Any],
    status: int,
    message: str,
) -> None:
    resp = await generate(client, fake_api, body, model)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == status
    assert err["status"] == ("NOT_FOUND" if status == 404 else "INVALID_ARGUMENT")
    assert err["message"].startswith(message)


async def test_valid_edge_requests_pass(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    assert (await generate(client, fake_api, gemini_body(images=[png(8, 8)] * 14))).status_code == 200
    assert (await generate(client, fake_api, gemini_body(level="high"), FLASH31)).status_code == 200
    assert (await generate(client, fake_api, gemini_body(level="MINIMAL"), FLASH31)).status_code == 200


async def test_request_over_20_mb_is_rejected(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    body = gemini_body(images=[png()])
    body["contents"][0]["parts"].append({"text": "x" * (20 * 1024 * 1024)})
    resp = await generate(client, fake_api, body)
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "Request payload size exceeds the limit: 20971520 bytes."


# ---- faults --------------------------------------------------------------------------------------------


async def test_rate_limit_fault_has_the_real_details(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    fake_api.script(Fault.rate_limit(retry_delay="7s", retry_after=7))
    resp = await generate(client, fake_api, gemini_body())
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "7"
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert (err["code"], err["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert [d["@type"] for d in err["details"]] == [
        "type.googleapis.com/google.rpc.QuotaFailure",
        "type.googleapis.com/google.rpc.Help",
        "type.googleapis.com/google.rpc.RetryInfo",
    ]
    violation = err["details"][0]["violations"][0]
    assert set(violation) == {"quotaMetric", "quotaId", "quotaDimensions", "quotaValue"}
    assert "PerDay" not in violation["quotaId"] and violation["quotaDimensions"]["model"] == PRO
    assert err["details"][2]["retryDelay"] == "7s"
    assert fake_api.requests[-1].fault == "rate_limit"
    assert (await generate(client, fake_api, gemini_body())).status_code == 200  # consumed

    fake_api.script(Fault.rate_limit(per_day=True))
    resp = await generate(client, fake_api, gemini_body())
    assert "retry-after" not in resp.headers
    assert "PerDay" in resp.json()["error"]["details"][0]["violations"][0]["quotaId"]


@pytest.mark.parametrize(
    ("fault", "status", "grpc", "message"),
    [
        (Fault.server_error(500), 500, "INTERNAL", "An internal error has occurred."),
        (Fault.server_error(503), 503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
        (Fault.server_error(504), 504, "DEADLINE_EXCEEDED", "Deadline expired"),
        (Fault.bad_request("Nope."), 400, "INVALID_ARGUMENT", "Nope."),
        (Fault.invalid_key(), 400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
        (Fault.leaked_key(), 403, "PERMISSION_DENIED", "Your API key was reported as leaked."),
        (Fault.not_found(), 404, "NOT_FOUND", f"models/{PRO} is not found"),
        (Fault.billing(), 400, "FAILED_PRECONDITION", "Gemini API free tier is not available"),
    ],
)
async def test_gemini_error_faults(
    fake_api: FakeImageAPI, client: httpx.AsyncClient, fault: Fault, status: int, grpc: str, message: str
) -> None:
    fake_api.script(fault)
    resp = await generate(client, fake_api, gemini_body())
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert (err["code"], err["status"]) == (status, grpc)
    assert err["message"].startswith(message)
    if fault.name == "invalid_key":
        assert err["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
        assert err["details"][0]["reason"] == "API_KEY_INVALID"


async def test_script_filters_times_and_fifo(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    fake_api.script(Fault.server_error(503), times=2, key="a")
    fake_api.script(Fault.server_error(500), path_contains="gemini-2.5")

    async def call(key: str, model: str = PRO) -> int:
        resp = await client.post(url(fake_api, model), json=gemini_body(), headers={"x-goog-api-key": key})
        return resp.status_code

    assert await call("b") == 200
    assert await call("a") == 503
    assert await call("b", FLASH25) == 500
    assert await call("a") == 503
    assert await call("a") == 200
    assert await call("a", FLASH25) == 200
    assert fake_api.pending_faults == []


async def test_slow_adds_to_latency(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    fake_api.latency = 0.1
    t0 = time.monotonic()
    assert (await generate(client, fake_api, gemini_body())).status_code == 200
    assert 0.1 <= time.monotonic() - t0 < 1.0
    fake_api.script(Fault.slow(0.3))
    t0 = time.monotonic()
    assert (await generate(client, fake_api, gemini_body())).status_code == 200
    assert time.monotonic() - t0 >= 0.4


async def _wait_idle(fake: FakeImageAPI) -> None:
    for _ in range(100):
        if fake.in_flight == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{fake.in_flight} requests still in flight")


async def test_hang_never_answers_and_frees_the_handler(fake_api: FakeImageAPI) -> None:
    fake_api.script(Fault.hang())
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=0.3)) as c:
        with pytest.raises(httpx.ReadTimeout):
            await generate(c, fake_api, gemini_body())
    assert fake_api.requests[-1].fault == "hang" and fake_api.requests[-1].status is None
    await _wait_idle(fake_api)


async def test_stop_does_not_wait_for_a_hung_request() -> None:
    fake = FakeImageAPI()
    await fake.start()
    fake.script(Fault.hang())
    async with httpx.AsyncClient(timeout=10) as c:
        pending = asyncio.create_task(generate(c, fake, gemini_body()))
        for _ in range(500):
            if fake.in_flight:
                break
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        await fake.stop()
        assert time.monotonic() - t0 < 3
        (outcome,) = await asyncio.gather(pending, return_exceptions=True)
    # the hung request never gets a normal answer: an error status or a transport error
    assert isinstance(outcome, httpx.HTTPError) or (isinstance(outcome, httpx.Response) and outcome.status_code >= 500)


async def test_drop_cuts_the_body_short(fake_api: FakeImageAPI) -> None:
    fake_api.script(Fault.drop())
    async with httpx.AsyncClient(timeout=5) as c:
        async with c.stream("POST", url(fake_api), json=gemini_body(), headers=KEY) as resp:
            assert resp.status_code == 200 and int(resp.headers["content-length"]) > 1000
            with pytest.raises(httpx.RemoteProtocolError):
                await resp.aread()
        ok = await generate(c, fake_api, gemini_body())
        assert ok.status_code == 200
    assert fake_api.requests[0].fault == "drop"
    assert fake_api.connections_seen == 2  # the cut connection is gone; the next request opened another


async def test_stall_sends_half_the_body_then_nothing(fake_api: FakeImageAPI) -> None:
    fake_api.script(Fault.stall())
    received = 0
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=0.5)) as c,
        c.stream("POST", url(fake_api), json=gemini_body(), headers=KEY) as resp,
    ):
        declared = int(resp.headers["content-length"])
        assert resp.status_code == 200 and declared > 1000
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            async for chunk in resp.aiter_raw():
                received += len(chunk)
        assert time.monotonic() - started < 5
    assert received == declared // 2  # exactly the first half, then silence
    assert fake_api.requests[-1].fault == "stall"
    await _wait_idle(fake_api)  # the handler ended when the client went away


async def test_malformed_json(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    fake_api.script(Fault.malformed_json())
    resp = await generate(client, fake_api, gemini_body())
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.content)


async def test_safety_and_text_faults(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    fake_api.script(Fault.prompt_block())
    body = (await generate(client, fake_api, gemini_body())).json()
    assert body["promptFeedback"] == {"blockReason": "PROHIBITED_CONTENT"} and "candidates" not in body

    fake_api.script(Fault.output_block())
    body = (await generate(client, fake_api, gemini_body())).json()
    cand = body["candidates"][0]
    assert cand["finishReason"] == "IMAGE_SAFETY" and "content" not in cand

    fake_api.script(Fault.output_block("IMAGE_PROHIBITED_CONTENT", text="I can't make that."))
    resp = await generate(client, fake_api, gemini_body())
    cand = resp.json()["candidates"][0]
    assert cand["finishReason"] == "IMAGE_PROHIBITED_CONTENT"
    assert parts_of(resp) == [{"text": "I can't make that."}]

    fake_api.script(Fault.text_only("Just words."))
    resp = await generate(client, fake_api, gemini_body())
    assert resp.json()["candidates"][0]["finishReason"] == "STOP"
    parts = parts_of(resp)
    assert len(parts) == 1 and parts[0]["text"] == "Just words." and "inlineData" not in parts[0]


async def test_mislabelled_and_non_image_payloads(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    fake_api.script(Fault.mislabelled_mime())
    resp = await generate(client, fake_api, gemini_body(ratio="16:9"))
    part = [p for p in parts_of(resp) if "inlineData" in p][-1]
    data = base64.b64decode(part["inlineData"]["data"])
    assert part["inlineData"]["mimeType"] == "image/png" and data[:3] == b"\xff\xd8\xff"
    assert size_of(data) == (1376, 768)

    fake_api.script(Fault.not_an_image())
    resp = await generate(client, fake_api, gemini_body())
    part = [p for p in parts_of(resp) if "inlineData" in p][-1]
    assert part["inlineData"]["mimeType"] == "image/png"
    with pytest.raises(Exception, match="cannot identify"):
        size_of(base64.b64decode(part["inlineData"]["data"]))


async def test_stream_generate_content_sse(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    resp = await client.post(
        url(fake_api, method="streamGenerateContent") + "?alt=sse", json=gemini_body(thoughts=True), headers=KEY
    )
    assert resp.headers["content-type"] == "text/event-stream"
    events = [json.loads(line[6:]) for line in resp.text.split("\r\n\r\n") if line.startswith("data: ")]
    assert len(events) == 6  # headline, draft, headline, draft, text, image (tests/test_fake_stream.py)
    assert "usageMetadata" not in events[0] and events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert "usageMetadata" in events[-1]
    assert "thoughtSignature" in events[-1]["candidates"][0]["content"]["parts"][0]


# ---- connections ---------------------------------------------------------------------------------------


async def test_http11_connections_are_counted(fake_api: FakeImageAPI) -> None:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=3)) as c:
        fake_api.latency = 0.1
        await asyncio.gather(*(generate(c, fake_api, gemini_body()) for _ in range(6)))
    assert fake_api.connections_seen == 3
    assert {r.http_version for r in fake_api.requests} == {"1.1"}


async def test_connections_are_kept_alive_and_concurrent_requests_are_answered_together(
    fake_api: FakeImageAPI,
) -> None:
    fake_api.latency = 0.2
    async with httpx.AsyncClient(timeout=10) as c:
        for _ in range(3):
            assert (await generate(c, fake_api, gemini_body())).status_code == 200
        assert fake_api.connections_seen == 1  # one kept-alive connection for the sequential requests
        t0 = time.monotonic()
        responses = await asyncio.gather(*(generate(c, fake_api, gemini_body(f"cat {i}")) for i in range(8)))
        elapsed = time.monotonic() - t0
    assert all(r.status_code == 200 and r.http_version == "HTTP/1.1" for r in responses)
    assert fake_api.max_in_flight == 8 and fake_api.connections_seen == 8  # the kept one, and 7 more
    assert elapsed < 0.2 * 8 / 2  # answered side by side, not one after another


# ---- OpenAI Images API ---------------------------------------------------------------------------------


async def test_openai_generations_b64(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    resp = await client.post(
        f"{fake_api.base_url}/v1/images/generations",
        headers=BEARER,
        json={
            "model": "gpt-image-2",
            "prompt": "a lighthouse",
            "n": 2,
            "size": "1536x1024",
            "quality": "high",
            "output_format": "png",
            "thinking_level": "high",  # relay extra: recorded and ignored
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert isinstance(body["created"], int) and len(body["data"]) == 2
    assert size_of(base64.b64decode(body["data"][0]["b64_json"])) == (1536, 1024)
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert set(usage["input_tokens_details"]) == {"image_tokens", "text_tokens"}
    rec = fake_api.requests[-1]
    assert rec.api_key == "sk-test" and rec.json["thinking_level"] == "high"


async def test_openai_generations_url_and_auto_size(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    resp = await client.post(
        f"{fake_api.base_url}/v1/images/generations",
        headers=BEARER,
        json={"model": "relay-image", "prompt": "x", "size": "auto", "response_format": "url"},
    )
    item = resp.json()["data"][0]
    assert set(item) == {"url"} and item["url"].startswith(fake_api.base_url + "/files/")
    image = await client.get(item["url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert size_of(image.content) == (1024, 1024)


async def test_openai_auth(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    gen = f"{fake_api.base_url}/v1/images/generations"
    resp = await client.post(gen, json={"prompt": "x"})
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "invalid_request_error"
    fake_api.valid_keys = {"sk-good"}
    resp = await client.post(gen, json={"prompt": "x"}, headers=BEARER)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_api_key"
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}


async def test_openai_edits_with_repeated_image_fields(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    files = [("image[]", ("a.png", png(), "image/png")), ("image[]", ("b.png", png(32, 32), "image/png"))]
    data = {"prompt": "merge these", "model": "gpt-image-2", "size": "1024x1536", "n": "1"}
    resp = await client.post(f"{fake_api.base_url}/v1/images/edits", headers=BEARER, data=data, files=files)
    assert resp.status_code == 200, resp.text
    assert size_of(base64.b64decode(resp.json()["data"][0]["b64_json"])) == (1024, 1536)
    rec = fake_api.requests[-1]
    assert [f[0] for f in rec.files["image[]"]] == ["a.png", "b.png"]
    assert rec.files["image[]"][1][1] == "image/png" and rec.files["image[]"][1][2] == png(32, 32)
    assert rec.form["prompt"] == ["merge these"] and rec.form["model"] == ["gpt-image-2"]
    assert resp.json()["usage"]["input_tokens_details"]["image_tokens"] > 0

    single = await client.post(
        f"{fake_api.base_url}/v1/images/edits",
        headers=BEARER,
        data={"prompt": "p"},
        files={"image": ("c.png", png(), "image/png")},
    )
    assert single.status_code == 200 and len(fake_api.requests[-1].files["image"]) == 1

    bad = await client.post(
        f"{fake_api.base_url}/v1/images/edits",
        headers=BEARER,
        data={"prompt": "p"},
        files={"image": ("c.txt", b"hello", "text/plain")},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "image"


async def test_openai_error_faults(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    gen = f"{fake_api.base_url}/v1/images/generations"
    fake_api.script(Fault.openai_moderation())
    resp = await client.post(gen, headers=BEARER, json={"prompt": "x"})
    assert resp.status_code == 400
    assert resp.json()["error"] == {
        "message": resp.json()["error"]["message"],
        "type": "image_generation_user_error",
        "param": None,
        "code": "moderation_blocked",
    }
    fake_api.script(
        Fault.openai_error(429, "rate_limit_exceeded", "slow down", "requests", retry_after=2, retry_after_ms=1500)
    )
    resp = await client.post(gen, headers=BEARER, json={"prompt": "x"})
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "2" and resp.headers["retry-after-ms"] == "1500"
    assert resp.json()["error"]["code"] == "rate_limit_exceeded"
    # a Gemini-style fault on an OpenAI endpoint answers in OpenAI's shape
    fake_api.script(Fault.server_error(503))
    resp = await client.post(gen, headers=BEARER, json={"prompt": "x"})
    assert resp.status_code == 503 and resp.json()["error"]["type"] == "server_error"
    fake_api.script(Fault.prompt_block())
    resp = await client.post(gen, headers=BEARER, json={"prompt": "x"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "moderation_blocked"


# ---- OpenRouter-style chat completions -----------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
async def test_chat_completions_images(fake_api: FakeImageAPI, client: httpx.AsyncClient, prefix: str) -> None:
    ref = "data:image/png;base64," + base64.b64encode(png()).decode()
    resp = await client.post(
        f"{fake_api.base_url}{prefix}/chat/completions",
        headers=BEARER,
        json={
            "model": "google/gemini-3-pro-image-preview",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a fox"}, {"type": "image_url", "image_url": {"url": ref}}],
                }
            ],
            "modalities": ["image", "text"],
            "image_config": {"aspect_ratio": "16:9", "image_size": "2K"},
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["finish_reason"] == "stop"
    images = body["choices"][0]["message"]["images"]
    assert len(images) == 1 and images[0]["type"] == "image_url"
    head, _, data = images[0]["image_url"]["url"].partition(",")
    assert head == "data:image/png;base64"
    assert size_of(base64.b64decode(data)) == (2752, 1536)
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_chat_completions_markdown_image(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    req = {
        "model": "google/gemini-3.1-flash-image-preview",
        "messages": [{"role": "user", "content": "a fox"}],
        "modalities": ["image", "text"],
        "image_config": {"aspect_ratio": "1:4"},
    }
    fake_api.script(Fault.markdown_image())
    message = (await client.post(f"{fake_api.base_url}/v1/chat/completions", headers=BEARER, json=req)).json()[
        "choices"
    ][0]["message"]
    assert "images" not in message
    start = message["content"].index("![image](data:image/png;base64,") + len("![image](data:image/png;base64,")
    data = message["content"][start : message["content"].index(")", start)]
    assert size_of(base64.b64decode(data)) == (512, 2048)
    fake_api.markdown_images = True
    message = (await client.post(f"{fake_api.base_url}/v1/chat/completions", headers=BEARER, json=req)).json()[
        "choices"
    ][0]["message"]
    assert "![image](data:image/png;base64," in message["content"]


# ---- payloads, control endpoint, CLI -------------------------------------------------------------------


async def test_realistic_payload_is_about_1_4_bytes_per_pixel(client: httpx.AsyncClient) -> None:
    async with FakeImageAPI(payload="realistic") as fake:
        resp = await generate(client, fake, gemini_body(ratio="16:9", size="1K"))
        data = final_image(resp)
    assert size_of(data) == (1376, 768)
    assert 1.3 <= len(data) / (1376 * 768) <= 1.6


async def test_stats_endpoint(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    await generate(client, fake_api, gemini_body())
    stats = (await client.get(f"{fake_api.base_url}/_fake/stats")).json()
    assert stats["requests"] == 1 and stats["connections_seen"] == 1
    assert stats["by_http_version"] == {"1.1": 1}
    assert stats["in_flight"] == 0 and stats["max_in_flight"] == 1
    assert len(fake_api.requests) == 1  # control calls are not recorded

    cfg = await client.post(f"{fake_api.base_url}/_fake/config", json={"latency": 0.25, "always_thoughts": True})
    assert cfg.json() == {"latency": 0.25, "payload": "small", "always_thoughts": True}
    assert fake_api.latency == 0.25 and fake_api.always_thoughts
    await client.post(f"{fake_api.base_url}/_fake/reset")
    assert fake_api.requests == [] and fake_api.stats()["requests"] == 0


def test_cli_prints_ready_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_image_api", "--port", "0", "--latency", "0.05"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:"), line
        base = line.split()[1]
        with httpx.Client() as c:
            ok = c.post(f"{base}/v1beta/models/{PRO}:generateContent", json=gemini_body(), headers=KEY)
            assert ok.status_code == 200
            stats = c.get(f"{base}/_fake/stats").json()
        assert stats["requests"] == 1 and stats["connections_seen"] == 1 and stats["by_http_version"] == {"1.1": 1}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_large_concurrent_answers_arrive_whole() -> None:
    body = gemini_body("a banana", size="2K", ratio="16:9")
    async with FakeImageAPI(payload="realistic") as fake, httpx.AsyncClient(timeout=30) as c:
        answers = await asyncio.gather(*(generate(c, fake, body) for _ in range(4)))
    for answer in answers:
        assert answer.http_version == "HTTP/1.1" and len(answer.content) == int(answer.headers["content-length"])
        image = Image.open(io.BytesIO(final_image(answer)))
        image.load()  # every byte of the PNG is there and intact
        assert image.size == (2752, 1536) and len(answer.content) > 1 << 20
