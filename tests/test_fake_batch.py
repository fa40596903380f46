"""Raw-wire tests of the fake's Gemini Batch API and File API (httpx, loopback only).

Expected shapes are written out from real captured answers and the docs (spec A6), not read back from the fake.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from PIL import Image

from tests.fake_image_api import FakeImageAPI, Fault

pytestmark = pytest.mark.timeout(30)

PRO = "gemini-3-pro-image-preview"
FLASH25 = "gemini-2.5-flash-image"
KEY = {"x-goog-api-key": "test-key"}
REPO = Path(__file__).resolve().parent.parent
BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
BATCH_NAME = re.compile(r"^batches/[a-z0-9]{40}$")
DONE = {"BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"}


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.format == "PNG"
        return img.size


def image_request(prompt: str, ratio: str | None = "1:1", size: str | None = "1K") -> dict[str, Any]:
    image_config = {k: v for k, v in (("aspectRatio", ratio), ("imageSize", size)) if v is not None}
    return {
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": image_config},
    }


def inline_body(requests: list[tuple[str, dict[str, Any]]], display: str = "job-1") -> dict[str, Any]:
    items = [{"request": request, "metadata": {"key": key}} for key, request in requests]
    return {"batch": {"displayName": display, "inputConfig": {"requests": {"requests": items}}}}


def final_image(response: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    parts = response["candidates"][0]["content"]["parts"]
    images = [p for p in parts if "inlineData" in p and not p.get("thought")]
    assert len(images) == 1
    return base64.b64decode(images[0]["inlineData"]["data"], validate=True), images[0]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


async def create(
    client: httpx.AsyncClient, fake: FakeImageAPI, body: Any, model: str = PRO, headers: dict[str, str] = KEY
) -> httpx.Response:
    url = f"{fake.base_url}/v1beta/models/{model}:batchGenerateContent"
    if isinstance(body, bytes):
        return await client.post(url, content=body, headers={**headers, "content-type": "application/json"})
    return await client.post(url, json=body, headers=headers)


async def get_batch(client: httpx.AsyncClient, fake: FakeImageAPI, name: str) -> httpx.Response:
    return await client.get(f"{fake.base_url}/v1beta/{name}", headers=KEY)


async def wait_state(client: httpx.AsyncClient, fake: FakeImageAPI, name: str, state: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (await get_batch(client, fake, name)).json()["metadata"]["state"] == state:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"batch {name} never reached {state}")


async def wait_done(client: httpx.AsyncClient, fake: FakeImageAPI, name: str) -> tuple[dict[str, Any], list[str]]:
    """Poll until the batch is done; returns the last Operation and the states seen, in order, without repeats."""
    states: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        resp = await get_batch(client, fake, name)
        assert resp.status_code == 200, resp.text
        op = resp.json()
        if not states or states[-1] != op["metadata"]["state"]:
            states.append(op["metadata"]["state"])
        if op["metadata"]["state"] in DONE:
            return op, states
        await asyncio.sleep(0.01)
    raise AssertionError(f"batch {name} not done; states {states}")


async def upload(
    client: httpx.AsyncClient, fake: FakeImageAPI, data: bytes, mime: str = "jsonl", display: str = "requests"
) -> dict[str, Any]:
    start = await client.post(
        f"{fake.base_url}/upload/v1beta/files",
        headers={
            **KEY,
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(len(data)),
            "X-Goog-Upload-Header-Content-Type": mime,
        },
        json={"file": {"display_name": display}},
    )
    assert start.status_code == 200 and start.headers["x-goog-upload-status"] == "active", start.text
    url = start.headers["x-goog-upload-url"]
    assert url.startswith(f"{fake.base_url}/upload/v1beta/files?upload_id=")
    # The upload URL is its own credential: no API key here, as google-genai sends none.
    done = await client.post(url, content=data, headers={"X-Goog-Upload-Command": "upload, finalize"})
    assert done.status_code == 200 and done.headers["x-goog-upload-status"] == "final", done.text
    file: dict[str, Any] = done.json()["file"]
    return file


def jsonl(rows: list[dict[str, Any] | bytes]) -> bytes:
    return b"".join((row if isinstance(row, bytes) else orjson.dumps(row)) + b"\n" for row in rows)


# ---- the lifecycle of an inline batch --------------------------------------------------------------------


async def test_inline_batch_goes_pending_running_succeeded_with_responses_in_input_order(
    fake_api: FakeImageAPI, client: httpx.AsyncClient
) -> None:
    fake_api.batch_seconds = 0.6
    wanted = [("k-wide", "16:9", "2K", (2752, 1536)), ("k-square", "1:1", "1K", (1024, 1024))]
    wanted.append(("k-tall", "3:4", "1K", (896, 1200)))
    body = inline_body([(key, image_request(f"picture {key}", ratio, size)) for key, ratio, size, _ in wanted])
    resp = await create(client, fake_api, body)
    assert resp.status_code == 200, resp.text
    created = resp.json()
    name = created["name"]
    assert BATCH_NAME.match(name)
    assert created == {
        "name": name,
        "metadata": {
            "@type": BATCH_TYPE,
            "model": f"models/{PRO}",
            "displayName": "job-1",
            "createTime": created["metadata"]["createTime"],
            "updateTime": created["metadata"]["createTime"],
            "batchStats": {"requestCount": "3", "pendingRequestCount": "3"},
            "state": "BATCH_STATE_PENDING",
            "name": name,
        },
    }
    assert TIMESTAMP.match(created["metadata"]["createTime"])

    op, states = await wait_done(client, fake_api, name)
    assert states == [
        "BATCH_STATE_PENDING",
        "BATCH_STATE_RUNNING",
        "BATCH_STATE_SUCCEEDED",
    ]
    meta = op["metadata"]
    assert op["done"] is True and "error" not in op
    assert meta["batchStats"] == {"requestCount": "3", "successfulRequestCount": "3"}
    assert TIMESTAMP.match(meta["endTime"]) and meta["endTime"] == meta["updateTime"] > meta["createTime"]
    assert op["response"] == {"@type": OUTPUT_TYPE, **meta["output"]}
    entries = meta["output"]["inlinedResponses"]["inlinedResponses"]
    assert [e["metadata"] for e in entries] == [{"key": key} for key, *_ in wanted]
    for entry, (_, _, _, pixels) in zip(entries, wanted, strict=True):
        assert set(entry) == {"response", "metadata"}
        data, part = final_image(entry["response"])
        assert size_of(data) == pixels
        assert part["thoughtSignature"] in fake_api.issued_signatures
        assert entry["response"]["modelVersion"] == PRO and entry["response"]["usageMetadata"]

    record = fake_api.batches[name.removeprefix("batches/")]
    assert (record.model, record.display_name, record.input_kind, record.api_key) == (
        PRO,
        "job-1",
        "inline",
        "test-key",
    )
    assert record.keys == ["k-wide", "k-square", "k-tall"] and record.state == "SUCCEEDED" and not record.cancelled


async def test_batch_signatures_replay_in_a_multi_turn_generate_content(
    fake_api: FakeImageAPI, client: httpx.AsyncClient
) -> None:
    resp = await create(client, fake_api, inline_body([("only", image_request("make a cat"))]))
    op, _ = await wait_done(client, fake_api, resp.json()["name"])
    model_turn = op["metadata"]["output"]["inlinedResponses"]["inlinedResponses"][0]["response"]["candidates"][0]
    history: dict[str, Any] = {
        "contents": [
            {"role": "user", "parts": [{"text": "make a cat"}]},
            model_turn["content"],
            {"role": "user", "parts": [{"text": "now make it blue"}]},
        ],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]},
    }
    url = f"{fake_api.base_url}/v1beta/models/{PRO}:generateContent"
    replay = await client.post(url, json=history, headers=KEY)
    assert replay.status_code == 200, replay.text

    for part in history["contents"][1]["parts"]:
        part.pop("thoughtSignature", None)
    unsigned = await client.post(url, json=history, headers=KEY)
    assert unsigned.status_code == 400 and "missing a thought_signature" in unsigned.json()["error"]["message"]


async def test_results_are_built_once_and_each_serving_is_counted(
    fake_api: FakeImageAPI, client: httpx.AsyncClient
) -> None:
    name = (await create(client, fake_api, inline_body([("a", image_request("one"))]))).json()["name"]
    first, _ = await wait_done(client, fake_api, name)
    again = (await get_batch(client, fake_api, name)).json()
    assert again["metadata"]["output"] == first["metadata"]["output"]  # same responseIds, same signatures
    assert fake_api.batches[name.removeprefix("batches/")].times_output_served == 2
    assert len(fake_api.issued_signatures) == 2  # one text and one image part, signed once


# ---- file input and the File API -------------------------------------------------------------------------


async def test_file_batch_writes_a_downloadable_responses_file(
    fake_api: FakeImageAPI, client: httpx.AsyncClient
) -> None:
    rows: list[dict[str, Any] | bytes] = [
        {"key": "r1", "request": image_request("a red fox", "16:9", "1K")},
        {"key": "r2", "request": image_request("a ratio it has not", "5:7", "1K")},
        b"this line is not JSON",
        {"key": "r4", "request": image_request("a blue jay", "1:1", "2K")},
    ]
    data = jsonl(rows)
    file = await upload(client, fake_api, data)
    file_id = file["name"].removeprefix("files/")
    assert re.match(r"^[a-z0-9]{12}$", file_id)
    assert file == {
        "name": file["name"],
        "displayName": "requests",
        "mimeType": "jsonl",
        "sizeBytes": str(len(data)),
        "createTime": file["createTime"],
        "updateTime": file["createTime"],
        "expirationTime": file["expirationTime"],
        "sha256Hash": base64.b64encode(hashlib.sha256(data).hexdigest().encode()).decode(),
        "uri": f"{fake_api.base_url}/v1beta/{file['name']}",
        "state": "ACTIVE",
        "source": "UPLOADED",
    }
    assert TIMESTAMP.match(file["createTime"]) and file["expirationTime"] > file["createTime"]
    fetched = await client.get(f"{fake_api.base_url}/v1beta/{file['name']}", headers=KEY)
    assert fetched.json() == file
    assert fake_api.uploaded_files[file_id].data == data

    body = {"batch": {"display_name": "from-file", "input_config": {"file_name": file["name"]}}}  # snake_case too
    created = (await create(client, fake_api, body)).json()
    assert created["metadata"]["inputConfig"] == {"fileName": file["name"]}
    assert created["metadata"]["batchStats"]["requestCount"] == "4"
    op, _ = await wait_done(client, fake_api, created["name"])
    responses_name = f"files/batch-{created['name'].removeprefix('batches/')}"
    assert op["metadata"]["output"] == {"responsesFile": responses_name}
    assert op["response"] == {"@type": OUTPUT_TYPE, "responsesFile": responses_name}
    assert op["metadata"]["batchStats"] == {
        "requestCount": "4",
        "successfulRequestCount": "2",
        "failedRequestCount": "2",
    }

    meta = (await client.get(f"{fake_api.base_url}/v1beta/{responses_name}", headers=KEY)).json()
    assert meta["source"] == "GENERATED" and meta["mimeType"] == "application/jsonl"
    assert meta["downloadUri"] == f"{fake_api.base_url}/download/v1beta/{responses_name}:download?alt=media"
    by_docs = await client.get(meta["downloadUri"], headers=KEY)  # the REST docs' URL
    by_sdk = await client.get(f"{fake_api.base_url}/v1beta/{responses_name}:download?alt=media", headers=KEY)
    assert by_docs.status_code == by_sdk.status_code == 200 and by_docs.content == by_sdk.content
    lines = [orjson.loads(line) for line in by_docs.content.splitlines()]
    assert [(line.get("key"), sorted(line)) for line in lines] == [
        ("r1", ["key", "response"]),
        ("r2", ["error", "key"]),
        (None, ["error"]),
        ("r4", ["key", "response"]),
    ]
    assert size_of(final_image(lines[0]["response"])[0]) == (1376, 768)
    assert size_of(final_image(lines[3]["response"])[0]) == (2048, 2048)
    assert lines[1]["error"]["code"] == 400 and lines[1]["error"]["status"] == "INVALID_ARGUMENT"
    assert "aspect_ratio must be one of" in lines[1]["error"]["message"]
    assert lines[2]["error"]["message"] == f"Line 3 of {file['name']} is not a JSON object."
    batch = fake_api.batches[created["name"].removeprefix("batches/")]
    assert batch.input_kind == "file" and batch.keys == ["r1", "r2", None, "r4"]
    assert batch.times_output_served == 2  # the two downloads; the Operation only names the file


async def test_upload_in_chunks_query_and_the_upload_errors(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    start_headers = {**KEY, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"}
    start = await client.post(
        f"{fake_api.base_url}/upload/v1beta/files",
        headers={**start_headers, "X-Goog-Upload-Header-Content-Length": "10"},
        json={"file": {"name": "files/my-input", "mimeType": "application/jsonl"}},
    )
    url = start.headers["x-goog-upload-url"]
    first = await client.post(
        url, content=b"01234", headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"}
    )
    assert first.status_code == 200 and first.headers["x-goog-upload-status"] == "active"
    query = await client.post(url, headers={"X-Goog-Upload-Command": "query"})
    assert query.headers["x-goog-upload-size-received"] == "5"
    wrong = await client.post(
        url, content=b"x", headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "9"}
    )
    assert wrong.status_code == 400 and wrong.headers["x-goog-upload-status"] == "final"
    last = await client.post(
        url, content=b"56789", headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "5"}
    )
    assert last.status_code == 200 and last.json()["file"]["name"] == "files/my-input"
    assert fake_api.uploaded_files["my-input"].data == b"0123456789"
    gone = await client.post(url, content=b"", headers={"X-Goog-Upload-Command": "finalize"})
    assert gone.status_code == 404 and gone.headers["x-goog-upload-status"] == "final"

    taken = await client.post(
        f"{fake_api.base_url}/upload/v1beta/files", headers=start_headers, json={"file": {"name": "my-input"}}
    )
    assert taken.status_code == 409 and taken.json()["error"]["status"] == "ALREADY_EXISTS"
    short = await client.post(
        f"{fake_api.base_url}/upload/v1beta/files",
        headers={**start_headers, "X-Goog-Upload-Header-Content-Length": "4"},
    )
    finalize = {"X-Goog-Upload-Command": "upload, finalize"}
    cut = await client.post(short.headers["x-goog-upload-url"], content=b"ab", headers=finalize)
    assert cut.status_code == 400 and "Received 2 bytes" in cut.json()["error"]["message"]
    not_resumable = await client.post(f"{fake_api.base_url}/upload/v1beta/files", headers=KEY, json={})
    assert not_resumable.status_code == 400

    deleted = await client.delete(f"{fake_api.base_url}/v1beta/files/my-input", headers=KEY)
    assert deleted.status_code == 200 and deleted.json() == {}
    for method, path in (("GET", "files/my-input"), ("GET", "files/my-input:download?alt=media")):
        missing = await client.request(method, f"{fake_api.base_url}/v1beta/{path}", headers=KEY)
        assert missing.status_code == 403 and missing.json()["error"] == {
            "code": 403,
            "message": "You do not have permission to access the File my-input or it may not exist.",
            "status": "PERMISSION_DENIED",
        }


async def test_a_fault_on_the_upload_url_says_the_upload_is_over(
    fake_api: FakeImageAPI, client: httpx.AsyncClient
) -> None:
    start = await client.post(
        f"{fake_api.base_url}/upload/v1beta/files",
        headers={**KEY, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"},
    )
    fake_api.script(Fault.server_error(503), path_contains="/upload/")
    finalize = {"X-Goog-Upload-Command": "upload, finalize"}
    failed = await client.post(start.headers["x-goog-upload-url"], content=b"{}\n", headers=finalize)
    # google-genai retries (after 1 s, 2 s, 4 s) an upload answer without x-goog-upload-status.
    assert failed.status_code == 503 and failed.headers["x-goog-upload-status"] == "final"
    assert fake_api.requests[-1].fault == "server_error"


async def test_openai_file_urls_still_work(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    resp = await client.post(
        f"{fake_api.base_url}/v1/images/generations",
        json={"model": "relay-image", "prompt": "x", "response_format": "url"},
        headers={"Authorization": "Bearer sk-test"},
    )
    image = await client.get(resp.json()["data"][0]["url"])
    assert image.status_code == 200 and size_of(image.content) == (1024, 1024)


# ---- line errors and scripted endings --------------------------------------------------------------------


async def test_fail_batch_lines_gives_error_lines_among_successes(
    fake_api: FakeImageAPI, client: httpx.AsyncClient
) -> None:
    fake_api.fail_batch_lines("spider", code=500, status="INTERNAL", message="Internal error encountered.")
    body = inline_body([("a", image_request("a cat")), ("b", image_request("a spider")), ("c", image_request("a dog"))])
    op, _ = await wait_done(client, fake_api, (await create(client, fake_api, body)).json()["name"])
    entries = op["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
    assert entries[1] == {
        "error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"},
        "metadata": {"key": "b"},
    }
    assert "response" in entries[0] and "response" in entries[2]
    assert op["metadata"]["batchStats"] == {
        "requestCount": "3",
        "successfulRequestCount": "2",
        "failedRequestCount": "1",
    }


async def test_an_invalid_request_is_an_error_line_not_a_failed_create(
    fake_api: FakeImageAPI, client: httpx.AsyncClient
) -> None:
    body = inline_body([("bad", image_request("x", "1:8", None)), ("good", image_request("y", "16:9", None))])
    resp = await create(client, fake_api, body, FLASH25)
    assert resp.status_code == 200, resp.text
    op, _ = await wait_done(client, fake_api, resp.json()["name"])
    bad, good = op["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
    assert bad["metadata"] == {"key": "bad"} and "response" not in bad
    assert bad["error"]["code"] == 400 and bad["error"]["status"] == "INVALID_ARGUMENT"
    assert bad["error"]["message"].startswith(
        "* GenerateContentRequest.generation_config.image_config.aspect_ratio: aspect_ratio must be one of"
    )
    assert size_of(final_image(good["response"])[0]) == (1344, 768)


@pytest.mark.parametrize("ending", ["FAILED", "EXPIRED", "CANCELLED"])
async def test_script_batch_ends_the_next_batch_without_output(
    fake_api: FakeImageAPI, client: httpx.AsyncClient, ending: str
) -> None:
    fake_api.script_batch(ending)
    body = inline_body([("a", image_request("a cat"))])
    op, _ = await wait_done(client, fake_api, (await create(client, fake_api, body)).json()["name"])
    assert op["metadata"]["state"] == f"BATCH_STATE_{ending}" and op["done"] is True
    assert "output" not in op["metadata"] and "response" not in op and "endTime" in op["metadata"]
    if ending == "FAILED":
        assert op["error"] == {
            "code": 500,
            "message": "Batch processing failed: an internal error has occurred.",
            "status": "INTERNAL",
        }
    else:
        assert "error" not in op
    following, _ = await wait_done(client, fake_api, (await create(client, fake_api, body)).json()["name"])
    assert following["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"  # the script was for one batch
    with pytest.raises(ValueError):
        fake_api.script_batch("SUCCEEDED")


# ---- cancel, delete, not found ---------------------------------------------------------------------------


async def test_cancel_a_running_batch(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    fake_api.batch_seconds = 0.5
    name = (await create(client, fake_api, inline_body([("a", image_request("a cat"))]))).json()["name"]
    await wait_state(client, fake_api, name, "BATCH_STATE_RUNNING")
    cancelled = await client.post(f"{fake_api.base_url}/v1beta/{name}:cancel", headers=KEY)
    assert cancelled.status_code == 200 and cancelled.json() == {}
    record = fake_api.batches[name.removeprefix("batches/")]
    assert record.cancelled and record.state == "CANCELLED"
    await asyncio.sleep(record.created_at + 0.6 - time.monotonic())  # past the time it would have finished
    op = (await get_batch(client, fake_api, name)).json()
    assert op["metadata"]["state"] == "BATCH_STATE_CANCELLED" and op["done"] is True
    assert "output" not in op["metadata"] and "response" not in op
    assert op["metadata"]["batchStats"] == {"requestCount": "1", "pendingRequestCount": "1"}


async def test_cancelling_a_finished_batch_leaves_it_as_it_ended(
    fake_api: FakeImageAPI, client: httpx.AsyncClient
) -> None:
    name = (await create(client, fake_api, inline_body([("a", image_request("a cat"))]))).json()["name"]
    await wait_done(client, fake_api, name)
    assert (await client.post(f"{fake_api.base_url}/v1beta/{name}:cancel", headers=KEY)).json() == {}
    assert (await get_batch(client, fake_api, name)).json()["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"


async def test_unknown_and_deleted_batches_are_404(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    not_found = {"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}}
    for method, path in (("GET", "batches/nope"), ("POST", "batches/nope:cancel"), ("DELETE", "batches/nope")):
        resp = await client.request(method, f"{fake_api.base_url}/v1beta/{path}", headers=KEY)
        assert resp.status_code == 404 and resp.json() == not_found
    name = (await create(client, fake_api, inline_body([("a", image_request("a cat"))]))).json()["name"]
    deleted = await client.delete(f"{fake_api.base_url}/v1/{name}", headers=KEY)
    assert deleted.status_code == 200 and deleted.json() == {} and fake_api.batches == {}
    assert (await get_batch(client, fake_api, name)).status_code == 404
    wrong_method = await client.put(f"{fake_api.base_url}/v1beta/{name}", headers=KEY)
    assert wrong_method.status_code == 405


# ---- refusals --------------------------------------------------------------------------------------------


async def test_an_oversized_create_is_refused_like_generate_content(
    fake_api: FakeImageAPI, client: httpx.AsyncClient
) -> None:
    request = image_request("x" * (20 * 1024 * 1024))
    resp = await create(client, fake_api, inline_body([("big", request)]))
    assert resp.status_code == 400
    assert resp.json() == {
        "error": {
            "code": 400,
            "message": "Request payload size exceeds the limit: 20971520 bytes.",
            "status": "INVALID_ARGUMENT",
        }
    }
    assert fake_api.batches == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Invalid JSON payload received."),
        ({}, "batch is not specified"),
        ({"batch": {"inputConfig": {"requests": {"requests": [{}]}}}}, "display_name is required"),
        ({"batch": {"displayName": "d"}}, "input_config is not specified"),
        ({"batch": {"displayName": "d", "inputConfig": {}}}, "exactly one of requests or file_name"),
        (
            {"batch": {"displayName": "d", "inputConfig": {"fileName": "files/x", "requests": {"requests": []}}}},
            "exactly one of requests or file_name",
        ),
        ({"batch": {"displayName": "d", "inputConfig": {"requests": {"requests": []}}}}, "must not be empty"),
        ({"batch": {"displayName": "d", "inputConfig": {"fileName": "files/nope"}}}, "'files/nope' was not found"),
    ],
)
async def test_malformed_creates_are_400(
    fake_api: FakeImageAPI, client: httpx.AsyncClient, body: Any, message: str
) -> None:
    resp = await create(client, fake_api, body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT" and message in error["message"]
    assert fake_api.batches == {}


async def test_unknown_model_is_404(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    resp = await create(client, fake_api, inline_body([("a", image_request("x"))]), "gemini-9-nope")
    assert resp.status_code == 404 and resp.json()["error"]["status"] == "NOT_FOUND"


async def test_batch_and_file_calls_need_a_valid_key(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    fake_api.valid_keys = {"good"}
    body = inline_body([("a", image_request("x"))])
    bad = await create(client, fake_api, body, headers={"x-goog-api-key": "bad"})
    assert bad.status_code == 400
    assert bad.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert (await create(client, fake_api, body, headers={})).status_code == 403
    for method, path in (("GET", "/v1beta/batches"), ("GET", "/v1beta/files/x"), ("POST", "/upload/v1beta/files")):
        resp = await client.request(method, f"{fake_api.base_url}{path}", headers={"x-goog-api-key": "bad"})
        assert resp.status_code == 400, path
    by_query = await client.post(
        f"{fake_api.base_url}/v1beta/models/{PRO}:batchGenerateContent", params={"key": "good"}, json=body
    )
    assert by_query.status_code == 200
    assert [b.api_key for b in fake_api.batches.values()] == ["good"]  # the refused creates left nothing


# ---- list ------------------------------------------------------------------------------------------------


async def test_list_pages_newest_first(fake_api: FakeImageAPI, client: httpx.AsyncClient) -> None:
    listing = f"{fake_api.base_url}/v1beta/batches"
    assert (await client.get(listing, headers=KEY)).json() == {}
    names = []
    for i in range(5):
        resp = await create(client, fake_api, inline_body([("a", image_request(f"cat {i}"))], f"job-{i}"))
        names.append(resp.json()["name"])
    seen: list[str] = []
    pages = 0
    token: str | None = None
    while True:
        params = {"pageSize": "2", **({"pageToken": token} if token else {})}
        page = (await client.get(listing, params=params, headers=KEY)).json()
        pages += 1
        seen += [op["name"] for op in page["operations"]]
        token = page.get("nextPageToken")
        if token is None:
            break
    assert pages == 3 and seen == names[::-1]
    everything = (await client.get(listing, headers=KEY)).json()
    assert "nextPageToken" not in everything and len(everything["operations"]) == 5
    assert all(op["metadata"]["state"] == "BATCH_STATE_SUCCEEDED" for op in everything["operations"])
    bad = await client.get(listing, params={"pageToken": "%%%"}, headers=KEY)
    assert bad.status_code == 400


# ---- faults, latency, controls ---------------------------------------------------------------------------


async def test_scripted_faults_reach_batch_calls_only_by_path(
    fake_api: FakeImageAPI, client: httpx.AsyncClient
) -> None:
    body = inline_body([("a", image_request("x"))])
    fake_api.script(Fault.server_error(503))  # no path_contains: batch and file calls leave it alone
    name = (await create(client, fake_api, body)).json()["name"]
    assert (await get_batch(client, fake_api, name)).status_code == 200
    assert fake_api.pending_faults == [(Fault.server_error(503), 1)]
    fake_api.clear_script()

    fake_api.script(Fault.rate_limit(retry_delay="7s"), path_contains=":batchGenerateContent")
    limited = await create(client, fake_api, body)
    assert limited.status_code == 429 and limited.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    retry = [d for d in limited.json()["error"]["details"] if d["@type"].endswith("RetryInfo")]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    assert fake_api.requests[-1].fault == "rate_limit" and fake_api.requests[-1].status == 429
    assert (await create(client, fake_api, body)).status_code == 200

    fake_api.script(Fault.server_error(503), path_contains="/batches/")
    assert (await get_batch(client, fake_api, name)).status_code == 503
    assert (await get_batch(client, fake_api, name)).status_code == 200


async def test_batch_calls_are_recorded_without_the_generate_latency(
    fake_api: FakeImageAPI, client: httpx.AsyncClient
) -> None:
    fake_api.latency = 2.0
    started = time.monotonic()
    name = (await create(client, fake_api, inline_body([("a", image_request("x"))]))).json()["name"]
    await get_batch(client, fake_api, name)
    assert time.monotonic() - started < 1.0
    assert [(r.method, r.path, r.status) for r in fake_api.requests] == [
        ("POST", f"/v1beta/models/{PRO}:batchGenerateContent", 200),
        ("GET", f"/v1beta/{name}", 200),
    ]


async def test_config_endpoint_sets_batch_seconds_and_reset_forgets_batches(
    fake_api: FakeImageAPI, client: httpx.AsyncClient
) -> None:
    cfg = await client.post(f"{fake_api.base_url}/_fake/config", json={"batch_seconds": 5})
    assert cfg.json()["batch_seconds"] == 5.0 and fake_api.batch_seconds == 5.0
    name = (await create(client, fake_api, inline_body([("a", image_request("x"))]))).json()["name"]
    assert (await get_batch(client, fake_api, name)).json()["metadata"]["state"] == "BATCH_STATE_PENDING"
    await upload(client, fake_api, b"{}\n")
    fake_api.script_batch("FAILED")
    fake_api.fail_batch_lines("x")
    await client.post(f"{fake_api.base_url}/_fake/reset")
    assert fake_api.batches == {} and fake_api.uploaded_files == {} and fake_api.batch_seconds == 5.0
    fake_api.batch_seconds = 0.0
    op, _ = await wait_done(
        client, fake_api, (await create(client, fake_api, inline_body([("a", image_request("x"))]))).json()["name"]
    )
    assert op["metadata"]["batchStats"]["successfulRequestCount"] == "1"  # neither script survived the reset


def test_separate_process_takes_batch_seconds() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_image_api", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().split()[1]
        with httpx.Client(timeout=10) as c:
            assert c.post(f"{base}/_fake/config", json={"batch_seconds": 30}).json()["batch_seconds"] == 30.0
            url = f"{base}/v1beta/models/{PRO}:batchGenerateContent"
            name = c.post(url, json=inline_body([("a", image_request("x"))]), headers=KEY).json()["name"]
            assert c.get(f"{base}/v1beta/{name}", headers=KEY).json()["metadata"]["state"] == "BATCH_STATE_PENDING"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
