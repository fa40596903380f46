"""Contract tests: the official SDKs (google-genai, openai) talk to the fake and parse what it returns.

If the fake drifted from the real wire format, these SDKs would raise or mis-parse here.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from google import genai
from google.genai import batches as genai_batches
from google.genai import errors, types
from PIL import Image

from tests.fake_image_api import FakeImageAPI, Fault

pytestmark = [
    pytest.mark.timeout(30),
    # google-genai's own aiohttp session subclass warns on import of the transport; not ours to fix
    pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning"),
]

PRO = "gemini-3-pro-image-preview"
FLASH31 = "gemini-3.1-flash-image-preview"
FLASH25 = "gemini-2.5-flash-image"


def png(width: int = 96, height: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(buf, "PNG")
    return buf.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.size


def image_config(ratio: str = "16:9", size: str | None = "2K", thoughts: bool = True) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        response_modalities=["TEXT", "IMAGE"],
        image_config=types.ImageConfig(aspect_ratio=ratio, image_size=size),
        thinking_config=types.ThinkingConfig(include_thoughts=thoughts),
    )


@pytest_asyncio.fixture
async def gclient(fake_api: FakeImageAPI) -> AsyncIterator[genai.Client]:
    client = genai.Client(
        api_key="g-key",
        http_options=types.HttpOptions(
            base_url=fake_api.base_url,
            api_version="v1beta",
            retry_options=types.HttpRetryOptions(attempts=1),  # one attempt: errors surface at once
        ),
    )
    try:
        yield client
    finally:
        await client.aio.aclose()


@pytest_asyncio.fixture
async def oclient(fake_api: FakeImageAPI) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=fake_api.base_url + "/v1", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


# ---- google-genai ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("api_version", ["v1beta", "v1"])
@pytest.mark.parametrize("as_part", [False, True])
async def test_genai_generate_content_parses_everything(
    fake_api: FakeImageAPI, api_version: str, as_part: bool
) -> None:
    client = genai.Client(
        api_key="g-key", http_options=types.HttpOptions(base_url=fake_api.base_url, api_version=api_version)
    )
    reference: Any = (
        types.Part.from_bytes(data=png(), mime_type="image/png") if as_part else Image.open(io.BytesIO(png()))
    )
    prompt = "put this cat in a spacesuit, cinematic lighting"
    try:
        resp = await client.aio.models.generate_content(
            model=PRO, contents=[prompt, reference], config=image_config("16:9", "2K")
        )
    finally:
        await client.aio.aclose()

    rec = fake_api.requests[-1]
    assert rec.path == f"/{api_version}/models/{PRO}:generateContent"
    assert rec.api_key == "g-key"

    assert resp.candidates and resp.candidates[0].content and resp.candidates[0].content.parts
    assert resp.candidates[0].finish_reason == types.FinishReason.STOP
    parts = resp.candidates[0].content.parts
    assert [bool(p.thought) for p in parts] == [True, True, False, False]
    assert [p.thought_signature is None for p in parts] == [True, True, False, False]
    sigs = [p.thought_signature for p in parts[2:]]
    assert all(isinstance(s, bytes) and len(s) > 32 for s in sigs)
    assert {base64.b64encode(s).decode() for s in sigs if s} <= fake_api.issued_signatures
    assert parts[2].text == "Here is your image."
    final = parts[3].inline_data
    assert final is not None and final.mime_type == "image/png" and final.data
    assert size_of(final.data) == (2752, 1536)
    draft = parts[1].inline_data
    assert draft is not None and draft.data and size_of(draft.data) == (1376, 768)

    usage = resp.usage_metadata
    assert usage is not None and usage.prompt_tokens_details and usage.candidates_tokens_details
    text_tokens = -(-len(prompt) // 4)
    assert [(d.modality, d.token_count) for d in usage.prompt_tokens_details] == [
        (types.MediaModality.TEXT, text_tokens),
        (types.MediaModality.IMAGE, 258),
    ]
    assert usage.prompt_token_count == text_tokens + 258
    assert [(d.modality, d.token_count) for d in usage.candidates_tokens_details] == [(types.MediaModality.IMAGE, 1120)]
    assert usage.thoughts_token_count and usage.candidates_token_count
    assert (
        usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count + usage.thoughts_token_count
    )
    assert resp.model_version == PRO and resp.response_id


@pytest.mark.parametrize(
    ("model", "fault"),
    [
        (PRO, None),
        (FLASH31, None),
        (FLASH25, None),
        (PRO, Fault.prompt_block()),
        (PRO, Fault.output_block()),
        (PRO, Fault.output_block("IMAGE_OTHER", text="No.")),
        (PRO, Fault.text_only()),
    ],
)
async def test_raw_body_passes_strict_model_validate(fake_api: FakeImageAPI, model: str, fault: Fault | None) -> None:
    if fault is not None:
        fake_api.script(fault)
    body = {
        "contents": [{"role": "user", "parts": [{"text": "a red fox"}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "thinkingConfig": {"includeThoughts": True}},
    }
    async with httpx.AsyncClient() as c:
        raw = (
            await c.post(
                f"{fake_api.base_url}/v1beta/models/{model}:generateContent",
                json=body,
                headers={"x-goog-api-key": "k"},
            )
        ).json()
    strict = types.GenerateContentResponse.model_validate(raw)  # extra="forbid": unknown keys would raise
    tolerant = types.GenerateContentResponse._from_response(response=raw, kwargs={})
    assert strict.response_id == tolerant.response_id == raw["responseId"]
    if fault is not None and fault.name == "prompt_block":
        assert (
            tolerant.prompt_feedback and tolerant.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
        )
        assert not tolerant.candidates


async def test_genai_generate_content_stream_parses_thoughts_drafts_and_usage(fake_api: FakeImageAPI) -> None:
    # The sync client, in a worker thread: the fake serves from this test's event loop.
    fake_api.latency = 0.3
    client = genai.Client(
        api_key="g-key",
        http_options=types.HttpOptions(
            base_url=fake_api.base_url, api_version="v1beta", retry_options=types.HttpRetryOptions(attempts=1)
        ),
    )
    plain = await client.aio.models.generate_content(model=PRO, contents="a red fox", config=image_config())

    def stream() -> list[types.GenerateContentResponse]:
        return list(
            client.models.generate_content_stream(model=PRO, contents="a red fox", config=image_config("16:9", "2K"))
        )

    try:
        chunks = await asyncio.to_thread(stream)
    finally:
        client.close()
        await client.aio.aclose()

    rec = fake_api.requests[-1]
    assert rec.path == f"/v1beta/models/{PRO}:streamGenerateContent" and rec.query == {"alt": "sse"}
    parts: list[types.Part] = []
    for chunk in chunks:  # one part per chunk
        assert chunk.candidates and chunk.candidates[0].content and chunk.candidates[0].content.parts
        parts += chunk.candidates[0].content.parts
    thoughts = [p for p in parts if p.thought]
    assert [p.text is not None for p in thoughts] == [True, False, True, False]
    assert thoughts[0].text and thoughts[0].text.startswith("**Composing the scene**")
    drafts = [p.inline_data for p in thoughts if p.inline_data is not None]
    assert [size_of(d.data) for d in drafts if d.data] == [(688, 384), (1376, 768)]
    assert all(d.mime_type == "image/png" for d in drafts) and all(p.thought_signature is None for p in thoughts)
    final = parts[-1]
    assert not final.thought and final.inline_data is not None and final.inline_data.data
    assert size_of(final.inline_data.data) == (2752, 1536) and isinstance(final.thought_signature, bytes)
    assert [c.usage_metadata is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].candidates and chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata == plain.usage_metadata and chunks[-1].model_version == PRO


@pytest.mark.parametrize("model", [PRO, FLASH31])
async def test_genai_chat_round_trips_signatures(fake_api: FakeImageAPI, gclient: genai.Client, model: str) -> None:
    chat = gclient.aio.chats.create(model=model, config=image_config("1:1", "1K"))
    first = await chat.send_message("make a cat")
    second = await chat.send_message("now make it blue")
    for resp in (first, second):
        assert resp.candidates and resp.candidates[0].content and resp.candidates[0].content.parts
        assert resp.candidates[0].content.parts[-1].inline_data is not None

    replay = fake_api.requests[-1].json["contents"]
    assert [c["role"] for c in replay] == ["user", "model", "user"]
    model_parts = replay[1]["parts"]
    signed = [p for p in model_parts if not p.get("thought")]
    assert len(signed) == 2 and all("thoughtSignature" in p for p in signed)
    # the SDK re-encodes signatures (URL-safe alphabet); the bytes are still ones the fake issued
    issued = {base64.b64decode(s) for s in fake_api.issued_signatures}
    for p in signed:
        sig = p["thoughtSignature"]
        assert base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)) in issued


async def test_genai_history_without_signature_is_rejected(gclient: genai.Client) -> None:
    history = [
        types.Content(role="user", parts=[types.Part.from_text(text="make a cat")]),
        types.Content(role="model", parts=[types.Part.from_bytes(data=png(), mime_type="image/png")]),
        types.Content(role="user", parts=[types.Part.from_text(text="now blue")]),
    ]
    with pytest.raises(errors.ClientError) as info:
        await gclient.aio.models.generate_content(model=PRO, contents=history, config=image_config())
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert info.value.message and info.value.message.startswith(
        "Image part is missing a thought_signature in content position 2, part position 1."
    )


@pytest.mark.parametrize(
    ("fault", "error_type", "code", "status"),
    [
        (Fault.rate_limit(retry_delay="26s"), errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
        (Fault.invalid_key(), errors.ClientError, 400, "INVALID_ARGUMENT"),
        (Fault.billing(), errors.ClientError, 400, "FAILED_PRECONDITION"),
        (Fault.leaked_key(), errors.ClientError, 403, "PERMISSION_DENIED"),
        (Fault.not_found(), errors.ClientError, 404, "NOT_FOUND"),
        (Fault.server_error(503), errors.ServerError, 503, "UNAVAILABLE"),
        (Fault.server_error(500), errors.ServerError, 500, "INTERNAL"),
    ],
)
async def test_genai_raises_typed_errors(
    fake_api: FakeImageAPI,
    gclient: genai.Client,
    fault: Fault,
    error_type: type[errors.APIError],
    code: int,
    status: str,
) -> None:
    fake_api.script(fault)
    with pytest.raises(error_type) as info:
        await gclient.aio.models.generate_content(model=PRO, contents="a cat", config=image_config())
    err = info.value
    assert (err.code, err.status) == (code, status)
    assert len(fake_api.requests) == 1  # no SDK retry
    if fault.name == "rate_limit":
        details = err.details["error"]["details"]
        retry = [d for d in details if d["@type"] == "type.googleapis.com/google.rpc.RetryInfo"]
        assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}]
    if fault.name == "server_error" and code == 503:
        assert err.message == "The model is overloaded. Please try again later."


async def test_genai_bad_aspect_ratio_is_a_client_error(gclient: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as info:
        await gclient.aio.models.generate_content(model=FLASH25, contents="x", config=image_config("1:8", None))
    assert info.value.code == 400 and "aspect_ratio must be one of" in (info.value.message or "")


# ---- openai ----------------------------------------------------------------------------------------------


async def test_openai_images_generate_b64(fake_api: FakeImageAPI, oclient: openai.AsyncOpenAI) -> None:
    resp = await oclient.images.generate(
        model="gpt-image-2",
        prompt="a lighthouse at dusk",
        size="1024x1536",
        quality="high",
        output_format="png",
        n=1,
        extra_body={"thinking_level": "high"},
    )
    assert resp.data and resp.data[0].b64_json
    assert size_of(base64.b64decode(resp.data[0].b64_json)) == (1024, 1536)
    assert resp.usage and resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    assert resp.usage.input_tokens_details.text_tokens > 0
    rec = fake_api.requests[-1]
    assert rec.path == "/v1/images/generations" and rec.headers["authorization"] == "Bearer sk-test"
    assert rec.json["thinking_level"] == "high"


async def test_openai_images_generate_url(oclient: openai.AsyncOpenAI) -> None:
    resp = await oclient.images.generate(model="relay-image", prompt="x", response_format="url")
    assert resp.data and resp.data[0].url and resp.data[0].b64_json is None
    async with httpx.AsyncClient() as c:
        assert size_of((await c.get(resp.data[0].url)).content) == (1024, 1024)


async def test_openai_images_edit_sends_image_array(fake_api: FakeImageAPI, oclient: openai.AsyncOpenAI) -> None:
    resp = await oclient.images.edit(
        model="gpt-image-2",
        image=[("one.png", png(), "image/png"), ("two.png", png(40, 40), "image/png")],
        prompt="combine them",
        size="1536x1024",
    )
    assert resp.data and resp.data[0].b64_json
    assert size_of(base64.b64decode(resp.data[0].b64_json)) == (1536, 1024)
    rec = fake_api.requests[-1]
    assert rec.path == "/v1/images/edits"
    assert [name for name, _, _ in rec.files["image[]"]] == ["one.png", "two.png"]
    assert "image" not in rec.files
    assert rec.form["prompt"] == ["combine them"]


async def test_openai_chat_completions_images(fake_api: FakeImageAPI, oclient: openai.AsyncOpenAI) -> None:
    ref = "data:image/png;base64," + base64.b64encode(png()).decode()
    resp = await oclient.chat.completions.create(
        model="google/gemini-3-pro-image-preview",
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "a fox"}, {"type": "image_url", "image_url": {"url": ref}}],
            }
        ],
        extra_body={"modalities": ["image", "text"], "image_config": {"aspect_ratio": "9:16", "image_size": "1K"}},
    )
    message = resp.choices[0].message
    extra = message.model_extra or {}
    images = extra["images"]
    head, _, data = images[0]["image_url"]["url"].partition(",")
    assert head == "data:image/png;base64" and size_of(base64.b64decode(data)) == (768, 1376)
    assert resp.usage and resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert fake_api.requests[-1].json["image_config"] == {"aspect_ratio": "9:16", "image_size": "1K"}


async def test_openai_errors_are_typed(fake_api: FakeImageAPI, oclient: openai.AsyncOpenAI) -> None:
    fake_api.script(Fault.openai_moderation())
    with pytest.raises(openai.BadRequestError) as bad:
        await oclient.images.generate(model="gpt-image-2", prompt="x")
    assert bad.value.code == "moderation_blocked" and bad.value.type == "image_generation_user_error"

    fake_api.script(Fault.openai_rate_limit(retry_after=3))
    with pytest.raises(openai.RateLimitError) as limited:
        await oclient.images.generate(model="gpt-image-2", prompt="x")
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["retry-after"] == "3"

    fake_api.valid_keys = {"sk-other"}
    with pytest.raises(openai.AuthenticationError) as auth:
        await oclient.images.generate(model="gpt-image-2", prompt="x")
    assert auth.value.code == "invalid_api_key"
    assert len(fake_api.requests) == 3  # max_retries=0


# ---- google-genai: Batch API and File API (spec A6) ------------------------------------------------------

# GenerateContentBatch's fields in the REST reference (ai.google.dev/api/batch-mode), plus the Any's @type.
BATCH_FIELDS = {
    "@type",
    "model",
    "name",
    "displayName",
    "inputConfig",
    "output",
    "createTime",
    "endTime",
    "updateTime",
    "batchStats",
    "state",
    "priority",
}


def batch_request(prompt: str, key: str, ratio: str = "16:9", size: str = "1K") -> types.InlinedRequest:
    return types.InlinedRequest(
        contents=[types.Content(role="user", parts=[types.Part.from_text(text=prompt)])],
        config=image_config(ratio, size),
        metadata={"key": key},
    )


async def wait_for(client: genai.Client, name: str, state: types.JobState) -> types.BatchJob:
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        job = await client.aio.batches.get(name=name)
        if job.state == state:
            return job
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never reached {state}")


async def raw_operation(fake: FakeImageAPI, name: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as c:
        resp = await c.get(f"{fake.base_url}/v1beta/{name}", headers={"x-goog-api-key": "k"})
    op: dict[str, Any] = resp.json()
    return op


async def test_genai_batch_inline_round_trip(fake_api: FakeImageAPI, gclient: genai.Client) -> None:
    fake_api.fail_batch_lines("spider")
    src = [
        batch_request("a red fox", "k0"),
        batch_request("a spider", "k1"),
        batch_request("an owl", "k2", "1:1", "2K"),
    ]
    job = await gclient.aio.batches.create(model=PRO, src=src, config={"display_name": "contract"})
    assert isinstance(job, types.BatchJob) and job.name and job.name.startswith("batches/")
    assert job.state == types.JobState.JOB_STATE_PENDING and job.display_name == "contract"
    assert job.model == f"models/{PRO}" and job.create_time and job.create_time.tzinfo and job.end_time is None
    sent = fake_api.requests[-1]
    assert sent.path == f"/v1beta/models/{PRO}:batchGenerateContent"
    assert sent.json["batch"]["inputConfig"]["requests"]["requests"][0]["metadata"] == {"key": "k0"}

    done = await wait_for(gclient, job.name, types.JobState.JOB_STATE_SUCCEEDED)
    assert done.create_time and done.end_time and done.update_time and done.end_time >= done.create_time
    assert done.dest and done.dest.inlined_responses and done.dest.file_name is None
    fox, spider, owl = done.dest.inlined_responses
    assert [r.metadata for r in (fox, spider, owl)] == [{"key": "k0"}, {"key": "k1"}, {"key": "k2"}]
    for entry, pixels in ((fox, (1376, 768)), (owl, (2048, 2048))):
        assert isinstance(entry.response, types.GenerateContentResponse) and entry.error is None
        assert entry.response.candidates and entry.response.candidates[0].content
        parts = entry.response.candidates[0].content.parts or []
        final = parts[-1]
        assert not final.thought and final.inline_data and final.inline_data.data
        assert size_of(final.inline_data.data) == pixels
        assert isinstance(final.thought_signature, bytes)
        assert base64.b64encode(final.thought_signature).decode() in fake_api.issued_signatures
    assert spider.response is None and spider.error is not None
    assert (spider.error.code, spider.error.message) == (400, "Request contains an invalid argument.")

    raw = await raw_operation(fake_api, job.name)
    assert set(raw) == {"name", "metadata", "done", "response"} and set(raw["metadata"]) <= BATCH_FIELDS
    for entry in raw["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]:
        if "response" in entry:
            types.GenerateContentResponse.model_validate(entry["response"])  # strict: no unknown fields
    # Strict everywhere else too. The one extra is the brief's `status` on error lines: the SDK's JobError
    # (google.rpc.Status) has only code, message and details, so the tolerant parse above drops it.
    converted = genai_batches._BatchJob_from_mldev(raw)
    errors_seen = [r.pop("error") for r in converted["dest"]["inlined_responses"] if "error" in r]
    assert errors_seen == [
        {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT"}
    ]
    types.BatchJob.model_validate(converted)


async def test_genai_batch_from_an_uploaded_file(fake_api: FakeImageAPI, gclient: genai.Client, tmp_path: Path) -> None:
    lines = [
        {"key": "first", "request": {"contents": [{"parts": [{"text": "a red fox"}]}]}},
        {
            "key": "second",
            "request": {
                "contents": [{"parts": [{"text": "an owl"}]}],
                "generation_config": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "9:16"}},
            },
        },
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    uploaded = await gclient.aio.files.upload(file=path, config={"mime_type": "jsonl", "display_name": "reqs"})
    assert uploaded.name and uploaded.name.startswith("files/") and uploaded.display_name == "reqs"
    assert uploaded.size_bytes == path.stat().st_size and uploaded.mime_type == "jsonl"
    assert uploaded.state == types.FileState.ACTIVE and uploaded.source == types.FileSource.UPLOADED
    assert uploaded.download_uri is None and uploaded.expiration_time and uploaded.sha256_hash
    start, finish = fake_api.requests[-2:]
    assert start.path == "/upload/v1beta/files" and start.headers["x-goog-upload-command"] == "start"
    assert finish.headers["x-goog-upload-command"] == "upload, finalize" and finish.api_key is None
    async with httpx.AsyncClient() as c:  # the File resource, strictly
        raw_file = (await c.get(f"{fake_api.base_url}/v1beta/{uploaded.name}", headers={"x-goog-api-key": "k"})).json()
    types.File.model_validate(raw_file)
    with pytest.raises(ValueError, match="uploaded files can't be downloaded"):
        await gclient.aio.files.download(file=uploaded)  # the SDK itself refuses: no download_uri

    job = await gclient.aio.batches.create(model=PRO, src=uploaded.name, config={"display_name": "from-file"})
    assert job.state == types.JobState.JOB_STATE_PENDING and job.name
    done = await wait_for(gclient, job.name, types.JobState.JOB_STATE_SUCCEEDED)
    assert done.dest and done.dest.file_name == f"files/batch-{job.name.removeprefix('batches/')}"
    assert done.dest.inlined_responses is None

    data = await gclient.aio.files.download(file=done.dest.file_name)
    assert fake_api.requests[-1].path == f"/v1beta/{done.dest.file_name}:download"
    assert fake_api.requests[-1].query == {"alt": "media"}
    rows = [json.loads(row) for row in data.decode().splitlines()]
    assert [row["key"] for row in rows] == ["first", "second"]
    responses = [types.GenerateContentResponse.model_validate(row["response"]) for row in rows]  # strict
    sizes = []
    for response in responses:
        assert response.candidates and response.candidates[0].content and response.candidates[0].content.parts
        final = response.candidates[0].content.parts[-1]
        assert final.inline_data and final.inline_data.data and final.thought_signature
        sizes.append(size_of(final.inline_data.data))
    assert sizes == [(1024, 1024), (768, 1376)]
    generated = await gclient.aio.files.get(name=done.dest.file_name)
    assert generated.source == types.FileSource.GENERATED and generated.download_uri
    assert await gclient.aio.files.download(file=generated) == data
    await gclient.aio.files.delete(name=uploaded.name)
    assert list(fake_api.uploaded_files) == []


async def test_genai_batch_cancel(fake_api: FakeImageAPI, gclient: genai.Client) -> None:
    fake_api.batch_seconds = 20.0
    job = await gclient.aio.batches.create(
        model=PRO,
        src=[batch_request("a red fox", "k0")],
        config={"display_name": "to-cancel"},
    )
    assert job.name
    await gclient.aio.batches.cancel(name=job.name)
    assert fake_api.requests[-1].path == f"/v1beta/{job.name}:cancel"
    cancelled = await wait_for(gclient, job.name, types.JobState.JOB_STATE_CANCELLED)
    assert cancelled.end_time and cancelled.dest is None


@pytest.mark.parametrize("ending", ["FAILED", "EXPIRED"])
async def test_genai_batch_scripted_endings(fake_api: FakeImageAPI, gclient: genai.Client, ending: str) -> None:
    fake_api.script_batch(ending)
    job = await gclient.aio.batches.create(
        model=PRO,
        src=[batch_request("x", "k")],
        config={"display_name": "ends"},
    )
    assert job.name
    done = await wait_for(gclient, job.name, types.JobState(f"JOB_STATE_{ending}"))
    assert done.dest is None
    # google-genai's Gemini API converter does not map the Operation's `error`: read it from the raw JSON.
    assert done.error is None
    raw = await raw_operation(fake_api, job.name)
    assert ("error" in raw) == (ending == "FAILED") and raw["done"] is True


async def test_genai_batch_list_and_delete(fake_api: FakeImageAPI, gclient: genai.Client) -> None:
    names = []
    for i in range(3):
        job = await gclient.aio.batches.create(
            model=PRO,
            src=[batch_request(f"cat {i}", "k")],
            config={"display_name": f"job-{i}"},
        )
        names.append(job.name)
    pager = await gclient.aio.batches.list(config={"page_size": 2})
    listed = [job async for job in pager]
    assert [job.name for job in listed] == names[::-1]
    assert all(job.state == types.JobState.JOB_STATE_SUCCEEDED and job.dest for job in listed)
    assert [r.query.get("pageToken") is not None for r in fake_api.requests[-2:]] == [False, True]

    for name in names:
        assert name
        deleted = await gclient.aio.batches.delete(name=name)
        assert isinstance(deleted, types.DeleteResourceJob)
    assert [job async for job in await gclient.aio.batches.list()] == []
    with pytest.raises(errors.ClientError) as info:
        await gclient.aio.batches.get(name=names[0] or "")
    assert (info.value.code, info.value.status) == (404, "NOT_FOUND")


async def test_genai_batch_calls_raise_typed_errors_for_scripted_faults(
    fake_api: FakeImageAPI, gclient: genai.Client
) -> None:
    fake_api.script(Fault.rate_limit(retry_delay="9s"), path_contains=":batchGenerateContent")
    with pytest.raises(errors.ClientError) as limited:
        await gclient.aio.batches.create(
            model=PRO,
            src=[batch_request("x", "k")],
            config={"display_name": "d"},
        )
    assert (limited.value.code, limited.value.status) == (429, "RESOURCE_EXHAUSTED")
    job = await gclient.aio.batches.create(
        model=PRO,
        src=[batch_request("x", "k")],
        config={"display_name": "d"},
    )
    fake_api.script(Fault.server_error(503), path_contains="/batches/")
    with pytest.raises(errors.ServerError) as overloaded:
        await gclient.aio.batches.get(name=job.name or "")
    assert overloaded.value.code == 503
    fake_api.script(Fault.server_error(500), path_contains="/upload/")
    with pytest.raises(errors.ServerError):
        await gclient.aio.files.upload(file=io.BytesIO(b"{}\n"), config={"mime_type": "jsonl"})
