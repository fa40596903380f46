"""The Gemini Batch API and File API (spec A6), kept in memory.

Wire shapes follow real captured answers (metadata ``@type`` ...v1main.GenerateContentBatch, int64 counts as
strings, zero counts and ``done: false`` left out as proto3 JSON does) and what google-genai sends and parses
(``batches.py``, ``files.py``, ``_api_client.py``):

- ``POST /{v}/models/{m}:batchGenerateContent`` -> an Operation in BATCH_STATE_PENDING;
- ``GET /{v}/batches/{id}``, ``GET /{v}/batches`` (``operations``, ``nextPageToken``),
  ``POST /{v}/batches/{id}:cancel`` -> ``{}``, ``DELETE /{v}/batches/{id}`` -> ``{}``;
- ``POST /upload/{v}/files`` (resumable start; answers ``x-goog-upload-url``), then ``POST`` to that URL with
  ``X-Goog-Upload-Command: upload, finalize`` -> ``{"file": File}``;
- ``GET /{v}/files/{id}``, ``DELETE /{v}/files/{id}``, ``GET (/download)/{v}/files/{id}:download?alt=media``
  (the SDK asks without the ``/download`` prefix, the REST docs with it).

A batch's state follows the time since it was created: PENDING for the first 30% of ``fake.batch_seconds`` (as
it was at create time), RUNNING until then, then SUCCEEDED (or a scripted FAILED / EXPIRED / CANCELLED). Each
request is validated at create time with ``gemini.parse_request``; one that fails becomes an error line, not a
failed create. The responses are built once, the first time the batch is seen done, with
``gemini.build_response`` (so their thought signatures are fresh and valid for replay).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from . import gemini
from .catalog import MODELS
from .faults import JSON, gemini_error, not_found_message
from .gemini import GeminiError, ParsedRequest
from .wire import Reply, json_reply

if TYPE_CHECKING:
    from .server import FakeImageAPI, RecordedRequest

BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
PENDING_SHARE = 0.3  # of the batch's duration spent in BATCH_STATE_PENDING, the rest in RUNNING
FILE_TTL = 48 * 3600.0  # File API files expire after 48 h
DEFAULT_PAGE_SIZE = 50
RESPONSES_MIME = "application/jsonl"
NOT_FOUND = "Requested entity was not found."
DEFAULT_LINE_ERROR = "Request contains an invalid argument."
DEFAULT_BATCH_ERROR = "Batch processing failed: an internal error has occurred."

BatchState = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"]
RouteKind = Literal[
    "create",
    "get",
    "list",
    "cancel",
    "delete",
    "upload_start",
    "upload_chunk",
    "file_get",
    "file_delete",
    "file_download",
    "bad_method",
]
DONE_STATES: frozenset[str] = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"})
ENDINGS: dict[str, BatchState] = {"FAILED": "FAILED", "EXPIRED": "EXPIRED", "CANCELLED": "CANCELLED"}

_V = r"(v1|v1beta|v1alpha)"
_ID = r"([A-Za-z0-9_-]+)"
CREATE_PATH = re.compile(rf"^/{_V}/models/([^/:]+):batchGenerateContent$")
BATCH_PATH = re.compile(rf"^/{_V}/batches(?:/{_ID}(:cancel)?)?$")
UPLOAD_PATH = re.compile(rf"^/upload/{_V}/files$")
FILE_PATH = re.compile(rf"^(/download)?/{_V}/files/{_ID}(:download)?$")
FILE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")  # a name a caller may choose
_ID_ALPHABET = string.ascii_lowercase + string.digits


# ---- routing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """A Batch or File API call: what it is, its API version, and the model / batch id / file id it names."""

    kind: RouteKind
    version: str
    ident: str = ""

    @property
    def needs_key(self) -> bool:
        # The upload URL carries its own credential (upload_id), as the real one does; the SDK sends no key there.
        return self.kind != "upload_chunk"

    @property
    def model(self) -> str:
        return self.ident if self.kind == "create" else ""


def is_batch_path(path: str) -> bool:
    """A Batch or File API path (what scripted faults without ``path_contains`` leave alone)."""
    return any(p.match(path) for p in (CREATE_PATH, BATCH_PATH, UPLOAD_PATH, FILE_PATH))


def route(method: str, path: str, query: dict[str, str]) -> Route | None:
    """The Batch / File API call at ``path``, or None if it is not one. A known path asked with the wrong method
    is ``bad_method``."""
    if m := CREATE_PATH.match(path):
        return Route("create" if method == "POST" else "bad_method", m.group(1), m.group(2))
    if m := BATCH_PATH.match(path):
        return _batch_route(method, m.group(1), m.group(2), bool(m.group(3)))
    if m := UPLOAD_PATH.match(path):
        kind: RouteKind = "upload_chunk" if "upload_id" in query else "upload_start"
        return Route(kind if method == "POST" else "bad_method", m.group(1))
    if m := FILE_PATH.match(path):
        return _file_route(method, m.group(2), m.group(3), bool(m.group(1)), bool(m.group(4)))
    return None


def _batch_route(method: str, version: str, batch_id: str | None, cancel: bool) -> Route:
    wanted: dict[tuple[str, bool, bool], RouteKind] = {
        ("GET", False, False): "list",
        ("GET", True, False): "get",
        ("DELETE", True, False): "delete",
        ("POST", True, True): "cancel",
    }
    return Route(wanted.get((method, batch_id is not None, cancel), "bad_method"), version, batch_id or "")


def _file_route(method: str, version: str, file_id: str, prefixed: bool, download: bool) -> Route | None:
    if download:
        return Route("file_download" if method == "GET" else "bad_method", version, file_id)
    if prefixed:  # /download/{v}/files/{id} without :download is no method at all
        return None
    kinds: dict[str, RouteKind] = {"GET": "file_get", "DELETE": "file_delete"}
    return Route(kinds.get(method, "bad_method"), version, file_id)


def error_headers(r: Route) -> list[tuple[str, str]]:
    """Headers an error answer needs on this route: the SDK's upload loop retries (with 1 s, 2 s, 4 s sleeps) any
    answer from the upload URL that lacks ``x-goog-upload-status``, so errors there say the upload is over."""
    return [("x-goog-upload-status", "final")] if r.kind == "upload_chunk" else []


# ---- records ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Line:
    """One request of a batch as validated at create time: a ParsedRequest, or the error its line will get."""

    key: str | None
    metadata: Any  # inline requests: the ``metadata`` object as sent, echoed back beside the response
    parsed: ParsedRequest | None
    error: JSON | None


@dataclass(slots=True, eq=False)
class FakeBatch:
    """One batch as the fake holds it. ``state`` is computed from the time since ``created_at``."""

    id: str
    model: str
    display_name: str
    input_kind: Literal["inline", "file"]
    api_key: str | None
    keys: list[str | None]
    created_at: float  # time.monotonic()
    created_wall: float  # time.time(), for the RFC 3339 timestamps
    seconds: float  # time to finish: fake.batch_seconds when it was created
    ends_as: BatchState = "SUCCEEDED"  # or a scripted ending (fake.script_batch)
    error: JSON | None = None  # the Operation's error, for a scripted FAILED
    partial: int = 0  # a scripted ending with output: the first `partial` requests were answered
    input_file: str | None = None  # "files/ID" for file input
    api_version: str = "v1beta"
    cancelled_at: float | None = None
    times_output_served: int = 0  # answers that carried the results: GET/list of a done inline batch, or a
    # download of its responses file
    output: JSON | None = None  # GenerateContentBatchOutput, built once when first seen done
    succeeded: int = 0
    failed: int = 0
    lines: list[_Line] = field(default_factory=list, repr=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def name(self) -> str:
        return f"batches/{self.id}"

    @property
    def cancelled(self) -> bool:
        return self.cancelled_at is not None

    @property
    def state(self) -> BatchState:
        return self.state_at(time.monotonic())

    def state_at(self, now: float) -> BatchState:
        if self.cancelled_at is not None:
            return "CANCELLED"
        elapsed = now - self.created_at
        if elapsed >= self.seconds:
            return self.ends_as
        return "PENDING" if elapsed < PENDING_SHARE * self.seconds else "RUNNING"

    def wall(self, mono: float) -> float:
        """The wall-clock time of a monotonic instant of this batch's life."""
        return self.created_wall + (mono - self.created_at)

    def updated_at(self, state: BatchState) -> float:
        """Monotonic time of the last state change."""
        if self.cancelled_at is not None:
            return self.cancelled_at
        if state == "PENDING":
            return self.created_at
        if state == "RUNNING":
            return self.created_at + PENDING_SHARE * self.seconds
        return self.created_at + self.seconds


@dataclass(slots=True, eq=False)
class FakeFile:
    """A File API file: an upload, or a batch's responses file (source GENERATED)."""

    id: str
    data: bytes
    mime_type: str
    source: Literal["UPLOADED", "GENERATED"]
    api_key: str | None
    display_name: str | None = None
    created_wall: float = field(default_factory=time.time)
    batch_id: str | None = None  # the batch whose responses these are
    downloads: int = 0

    @property
    def name(self) -> str:
        return f"files/{self.id}"


@dataclass(slots=True)
class _Upload:
    """A resumable upload between its start and its finalize."""

    file_id: str
    display_name: str | None
    mime_type: str
    expected_size: int | None
    api_key: str | None
    received: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True, slots=True)
class _LineFailure:
    substring: str
    error: JSON


class BatchAPI:
    """The batches and files of one fake, plus the test controls that shape them."""

    def __init__(self) -> None:
        self.batches: dict[str, FakeBatch] = {}
        self.uploaded_files: dict[str, FakeFile] = {}
        self.generated_files: dict[str, FakeFile] = {}
        self.uploads: dict[str, _Upload] = {}  # resumable uploads started and not yet finalized, by upload_id
        self._endings: list[tuple[BatchState, JSON | None, int]] = []
        self._line_failures: list[_LineFailure] = []
        #: Inline responses carry the request's `metadata` back (reports differ on whether the real API does).
        self.echo_metadata = True

    def reset(self) -> None:
        self.batches.clear()
        self.uploaded_files.clear()
        self.generated_files.clear()
        self.uploads.clear()
        self._endings.clear()
        self._line_failures.clear()

    def script_ending(self, state: str, code: int, status: str | None, message: str | None, done: int = 0) -> None:
        ending = ENDINGS.get(state.upper().removeprefix("BATCH_STATE_"))
        if ending is None:
            raise ValueError(f"a batch can be scripted to end as one of {sorted(ENDINGS)}, not {state!r}")
        error = status_json(code, message or DEFAULT_BATCH_ERROR, status) if ending == "FAILED" else None
        self._endings.append((ending, error, done))

    def fail_lines(self, substring: str, code: int, status: str | None, message: str) -> None:
        self._line_failures.append(_LineFailure(substring, status_json(code, message, status)))

    def file(self, file_id: str) -> FakeFile | None:
        return self.uploaded_files.get(file_id) or self.generated_files.get(file_id)

    def next_ending(self) -> tuple[BatchState, JSON | None, int]:
        return self._endings.pop(0) if self._endings else ("SUCCEEDED", None, 0)

    def line_failure(self, prompt: str) -> JSON | None:
        for failure in self._line_failures:
            if failure.substring in prompt:
                return dict(failure.error)
        return None


# ---- JSON helpers ----------------------------------------------------------------------------------------


def status_json(code: int, message: str, status: str | None) -> JSON:
    """``{"code", "message"[, "status"]}``: an error line, or a failed Operation's ``error``."""
    out: JSON = {"code": code, "message": message}
    if status is not None:
        out["status"] = status
    return out


def rfc3339(wall: float) -> str:
    """UTC with nanoseconds and a Z, as Google's JSON timestamps are written."""
    ns = int(wall * 1_000_000_000)
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


def _new_id(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _field(obj: dict[str, Any], camel: str) -> Any:
    """Proto JSON takes lowerCamel or snake_case field names."""
    if camel in obj:
        return obj[camel]
    return obj.get(re.sub(r"([A-Z])", r"_\1", camel).lower())


def _invalid(path: str, message: str) -> GeminiError:
    return GeminiError(400, f"* BatchGenerateContentRequest.{path}: {message}\n", "INVALID_ARGUMENT")


def _error_reply(code: int, message: str, status: str | None = None, r: Route | None = None) -> Reply:
    return json_reply(code, gemini_error(code, message, status), error_headers(r) if r else ())


def _ok(obj: JSON) -> Reply:
    return json_reply(200, obj)


# ---- the Operation ---------------------------------------------------------------------------------------


def _stats(b: FakeBatch, state: BatchState) -> JSON:
    n = str(len(b.keys))
    if state != "SUCCEEDED":
        return {"requestCount": n, "pendingRequestCount": n}
    stats: JSON = {"requestCount": n}
    if b.succeeded:
        stats["successfulRequestCount"] = str(b.succeeded)
    if b.failed:
        stats["failedRequestCount"] = str(b.failed)
    return stats


def operation(b: FakeBatch, state: BatchState) -> JSON:
    """The Operation for ``b`` in ``state`` (a SUCCEEDED batch must have its output built)."""
    meta: JSON = {"@type": BATCH_TYPE, "model": f"models/{b.model}", "displayName": b.display_name}
    if b.input_file is not None:
        meta["inputConfig"] = {"fileName": b.input_file}
    if state == "SUCCEEDED":
        assert b.output is not None
    if state in DONE_STATES and b.output is not None:
        meta["output"] = b.output
    meta["createTime"] = rfc3339(b.created_wall)
    done = state in DONE_STATES
    if done:
        meta["endTime"] = rfc3339(b.wall(b.updated_at(state)))
    meta["updateTime"] = rfc3339(b.wall(b.updated_at(state)))
    meta["batchStats"] = _stats(b, state)
    meta["state"] = f"BATCH_STATE_{state}"
    meta["name"] = b.name
    op: JSON = {"name": b.name, "metadata": meta}
    if done:  # proto3 JSON leaves out `done: false`
        op["done"] = True
    if state == "FAILED" and b.error is not None:
        op["error"] = b.error
    if state in DONE_STATES and b.output is not None:
        op["response"] = {"@type": OUTPUT_TYPE, **b.output}
    return op


async def _observe(fake: FakeImageAPI, b: FakeBatch) -> JSON:
    """The Operation as of now; builds the output the first time the batch is seen SUCCEEDED."""
    state = b.state
    if state == "SUCCEEDED" or (state == b.ends_as and b.partial and not b.cancelled):
        await _ensure_output(fake, b)
        if b.input_kind == "inline":
            b.times_output_served += 1
    return operation(b, state)


# ---- building the results --------------------------------------------------------------------------------


async def _answer(fake: FakeImageAPI, line: _Line) -> tuple[JSON | None, JSON | None]:
    """(response, error) for one request line; the response with its image data in place."""
    if line.error is not None:
        return None, line.error
    assert line.parsed is not None
    failure = fake.batch_api.line_failure(line.parsed.prompt)
    if failure is not None:
        return None, failure
    response, blobs = await gemini.build_response(fake, line.parsed, None)
    # Materialise the Blobs stand-ins: the Operation holds many responses, each with its own Blobs.
    return orjson.loads(b"".join(blobs.dumps(response))), None


async def _ensure_output(fake: FakeImageAPI, b: FakeBatch) -> None:
    async with b.lock:  # two GETs at once must not build (and sign) the responses twice
        if b.output is not None:
            return
        lines = b.lines if b.ends_as == "SUCCEEDED" else b.lines[: b.partial]
        answers = [await _answer(fake, line) for line in lines]
        b.failed = sum(1 for _, error in answers if error is not None)
        b.succeeded = len(answers) - b.failed
        if b.input_kind == "inline":
            echo = fake.batch_api.echo_metadata
            entries = [_inline_entry(line, answer, echo) for line, answer in zip(lines, answers, strict=True)]
            b.output = {"inlinedResponses": {"inlinedResponses": entries}}
        else:
            b.output = {"responsesFile": _store_responses(fake, b, lines, answers).name}


def _inline_entry(line: _Line, answer: tuple[JSON | None, JSON | None], echo: bool) -> JSON:
    response, error = answer
    entry: JSON = {"response": response} if error is None else {"error": error}
    if echo and line.metadata is not None:
        entry["metadata"] = line.metadata
    return entry


def _store_responses(
    fake: FakeImageAPI, b: FakeBatch, lines: list[_Line], answers: list[tuple[JSON | None, JSON | None]]
) -> FakeFile:
    """The responses file: one JSONL line per request, in input order, ``{"key", "response"|"error"}``."""
    rows: list[bytes] = []
    for line, (response, error) in zip(lines, answers, strict=True):
        row: JSON = {} if line.key is None else {"key": line.key}
        row.update({"response": response} if error is None else {"error": error})
        rows.append(orjson.dumps(row) + b"\n")
    f = FakeFile(f"batch-{b.id}", b"".join(rows), RESPONSES_MIME, "GENERATED", b.api_key, batch_id=b.id)
    fake.batch_api.generated_files[f.id] = f
    return f


# ---- create ----------------------------------------------------------------------------------------------


def _validate(fake: FakeImageAPI, request: Any, model: str, version: str) -> tuple[ParsedRequest | None, JSON | None]:
    if not isinstance(request, dict):
        return None, status_json(400, "* GenerateContentRequest: request is not specified\n", "INVALID_ARGUMENT")
    try:
        return gemini.parse_request(fake, request, model, version), None
    except GeminiError as err:
        return None, gemini_error(err.code, err.message, err.status)["error"]


def _inline_lines(fake: FakeImageAPI, items: Any, model: str, version: str) -> list[_Line]:
    if not isinstance(items, list) or not items:
        raise _invalid("batch.input_config.requests.requests", "requests must not be empty")
    lines: list[_Line] = []
    for item in items:
        item = item if isinstance(item, dict) else {}
        metadata = _field(item, "metadata")
        key = metadata.get("key") if isinstance(metadata, dict) else None
        parsed, error = _validate(fake, _field(item, "request"), model, version)
        lines.append(_Line(str(key) if key is not None else None, metadata, parsed, error))
    return lines


def _file_lines(fake: FakeImageAPI, file_name: Any, model: str, version: str) -> list[_Line]:
    """The requests of an uploaded JSONL file, one ``{"key", "request"}`` object a line."""
    file_id = file_name.removeprefix("files/") if isinstance(file_name, str) else ""
    f = fake.batch_api.file(file_id) if file_name != file_id else None
    if f is None:
        raise _invalid("batch.input_config.file_name", f"file {file_name!r} was not found")
    try:
        rows = [row for row in f.data.decode("utf-8").splitlines() if row.strip()]
    except UnicodeDecodeError:
        raise _invalid("batch.input_config.file_name", f"{file_name} is not UTF-8 JSONL") from None
    if not rows:
        raise _invalid("batch.input_config.file_name", f"{file_name} holds no requests")
    lines: list[_Line] = []
    for number, row in enumerate(rows, 1):
        try:
            obj = orjson.loads(row)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            bad = status_json(400, f"Line {number} of {file_name} is not a JSON object.", "INVALID_ARGUMENT")
            lines.append(_Line(None, None, None, bad))
            continue
        key = obj.get("key")
        parsed, error = _validate(fake, _field(obj, "request"), model, version)
        lines.append(_Line(str(key) if key is not None else None, None, parsed, error))
    return lines


def _batch_body(body: Any) -> tuple[str, dict[str, Any]]:
    """(displayName, inputConfig) of a create body, or a 400 saying what is missing."""
    if not isinstance(body, dict):
        raise GeminiError(400, "Invalid JSON payload received. Unexpected token.", "INVALID_ARGUMENT")
    batch = _field(body, "batch")
    if not isinstance(batch, dict):
        raise _invalid("batch", "batch is not specified")
    display = _field(batch, "displayName")
    if not isinstance(display, str) or not display:
        raise _invalid("batch.display_name", "display_name is required")  # "Required" in the REST reference
    config = _field(batch, "inputConfig")
    if not isinstance(config, dict):
        raise _invalid("batch.input_config", "input_config is not specified")
    if (_field(config, "requests") is None) == (_field(config, "fileName") is None):
        raise _invalid("batch.input_config", "exactly one of requests or file_name must be set")
    return display, config


async def create(fake: FakeImageAPI, r: Route, rec: RecordedRequest) -> Reply:
    if rec.body_size > gemini.MAX_REQUEST_BYTES:  # the same answer as an oversized generateContent
        return gemini.error_reply(
            GeminiError(400, f"Request payload size exceeds the limit: {gemini.MAX_REQUEST_BYTES} bytes.")
        )
    model = r.ident.removeprefix("models/")
    if model not in MODELS:
        return _error_reply(404, not_found_message(model, r.version), "NOT_FOUND")
    try:
        display, config = _batch_body(rec.json)
        requests = _field(config, "requests")
        if requests is not None:
            inner = _field(requests, "requests") if isinstance(requests, dict) else None
            lines = _inline_lines(fake, inner, model, r.version)
        else:
            lines = _file_lines(fake, _field(config, "fileName"), model, r.version)
    except GeminiError as err:
        return gemini.error_reply(err)
    b = _new_batch(fake, model, display, r.version, rec.api_key, lines)
    if requests is None:
        b.input_kind, b.input_file = "file", str(_field(config, "fileName"))
    return _ok(operation(b, "PENDING"))  # a create always answers PENDING, even with batch_seconds == 0


def _new_batch(
    fake: FakeImageAPI, model: str, display: str, version: str, key: str | None, lines: list[_Line]
) -> FakeBatch:
    ends_as, error, done = fake.batch_api.next_ending()
    b = FakeBatch(
        id=_new_id(40),
        model=model,
        display_name=display,
        input_kind="inline",
        api_key=key,
        keys=[line.key for line in lines],
        created_at=time.monotonic(),
        created_wall=time.time(),
        seconds=max(0.0, float(fake.batch_seconds)),
        ends_as=ends_as,
        error=error,
        partial=done,
        api_version=version,
        lines=lines,
    )
    fake.batch_api.batches[b.id] = b
    return b


# ---- get / list / cancel / delete ------------------------------------------------------------------------


def _batch_or_404(fake: FakeImageAPI, batch_id: str) -> FakeBatch | Reply:
    b = fake.batch_api.batches.get(batch_id)
    return b if b is not None else _error_reply(404, NOT_FOUND, "NOT_FOUND")


async def get(fake: FakeImageAPI, r: Route) -> Reply:
    b = _batch_or_404(fake, r.ident)
    if isinstance(b, Reply):
        return b
    return _ok(await _observe(fake, b))


def _page(query: dict[str, str]) -> tuple[int, int]:
    """(offset, size) from ``pageToken`` / ``pageSize``; raises a 400 for values it can't read."""
    try:
        size = int(query.get("pageSize") or DEFAULT_PAGE_SIZE)
        token = query.get("pageToken") or ""
        offset = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
    except ValueError:
        raise GeminiError(400, "Invalid page token or page size.", "INVALID_ARGUMENT") from None
    if size < 1 or offset < 0:
        raise GeminiError(400, "Invalid page token or page size.", "INVALID_ARGUMENT")
    return offset, size


async def list_batches(fake: FakeImageAPI, rec: RecordedRequest) -> Reply:
    try:
        offset, size = _page(rec.query)
    except GeminiError as err:
        return gemini.error_reply(err)
    newest_first = list(reversed(fake.batch_api.batches.values()))
    page = newest_first[offset : offset + size]
    out: JSON = {}
    if page:  # proto3 JSON leaves an empty list out
        out["operations"] = [await _observe(fake, b) for b in page]
    if offset + size < len(newest_first):
        out["nextPageToken"] = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
    return _ok(out)


def cancel(fake: FakeImageAPI, r: Route) -> Reply:
    b = _batch_or_404(fake, r.ident)
    if isinstance(b, Reply):
        return b
    now = time.monotonic()
    if b.state_at(now) in ("PENDING", "RUNNING"):  # a finished batch stays as it ended
        b.cancelled_at = now
    return _ok({})


def delete(fake: FakeImageAPI, r: Route) -> Reply:
    if fake.batch_api.batches.pop(r.ident, None) is None:
        return _error_reply(404, NOT_FOUND, "NOT_FOUND")
    return _ok({})


# ---- File API --------------------------------------------------------------------------------------------


def file_json(fake: FakeImageAPI, f: FakeFile, version: str) -> JSON:
    """A File resource. Only generated files carry ``downloadUri``: the real API does not let uploads be
    downloaded, and google-genai refuses to try for a File without one."""
    created = rfc3339(f.created_wall)
    out: JSON = {"name": f.name}
    if f.display_name:
        out["displayName"] = f.display_name
    out.update(
        {
            "mimeType": f.mime_type,
            "sizeBytes": str(len(f.data)),
            "createTime": created,
            "updateTime": created,
            "expirationTime": rfc3339(f.created_wall + FILE_TTL),
            # base64 of the hex digest, as real File resources appear to carry it
            "sha256Hash": base64.b64encode(hashlib.sha256(f.data).hexdigest().encode()).decode(),
            "uri": f"{fake.base_url}/{version}/{f.name}",
            "state": "ACTIVE",
            "source": f.source,
        }
    )
    if f.source == "GENERATED":
        out["downloadUri"] = f"{fake.base_url}/download/{version}/{f.name}:download?alt=media"
    return out


def _file_or_error(fake: FakeImageAPI, file_id: str) -> FakeFile | Reply:
    f = fake.batch_api.file(file_id)
    if f is not None:
        return f
    # What the File API answers for a file that doesn't exist (or isn't yours).
    message = f"You do not have permission to access the File {file_id} or it may not exist."
    return _error_reply(403, message, "PERMISSION_DENIED")


def _chosen_id(name: Any) -> str | GeminiError:
    """The id a caller asked for (``file.name``), or a fresh one."""
    if not name:
        return _new_id(12)
    file_id = str(name).removeprefix("files/")
    if not FILE_NAME.match(file_id):
        return GeminiError(400, f"Invalid file name {name!r}: use up to 40 lowercase letters, digits or dashes.")
    return file_id


def upload_start(fake: FakeImageAPI, r: Route, rec: RecordedRequest) -> Reply:
    """The start of a resumable upload: remember what is coming, answer the URL to send it to."""
    headers = rec.headers
    if headers.get("x-goog-upload-protocol", "").lower() != "resumable":
        return _error_reply(400, "The fake File API takes resumable uploads only (X-Goog-Upload-Protocol: resumable).")
    if headers.get("x-goog-upload-command", "").strip().lower() != "start":
        return _error_reply(400, "A resumable upload starts with X-Goog-Upload-Command: start.")
    meta = _field(rec.json, "file") if isinstance(rec.json, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    file_id = _chosen_id(_field(meta, "name"))
    if isinstance(file_id, GeminiError):
        return gemini.error_reply(file_id)
    if fake.batch_api.file(file_id) is not None:
        return _error_reply(409, f"File files/{file_id} already exists.", "ALREADY_EXISTS")
    size = headers.get("x-goog-upload-header-content-length", "")
    mime = headers.get("x-goog-upload-header-content-type") or _field(meta, "mimeType") or "application/octet-stream"
    upload_id = secrets.token_urlsafe(24)
    fake.batch_api.uploads[upload_id] = _Upload(
        file_id, _field(meta, "displayName"), str(mime), int(size) if size.isdigit() else None, rec.api_key
    )
    url = f"{fake.base_url}/upload/{r.version}/files?upload_id={upload_id}&upload_protocol=resumable"
    return Reply(
        200,
        [
            ("content-type", "text/plain; charset=utf-8"),
            ("x-goog-upload-status", "active"),
            ("x-goog-upload-url", url),
            ("x-goog-upload-control-url", url),
            ("x-goog-upload-chunk-granularity", str(8 * 1024 * 1024)),
        ],
        [b""],
    )


def upload_chunk(fake: FakeImageAPI, r: Route, rec: RecordedRequest, body: bytes) -> Reply:
    """``upload`` / ``upload, finalize`` / ``finalize`` / ``query`` sent to the upload URL."""
    upload = fake.batch_api.uploads.get(rec.query.get("upload_id", ""))
    if upload is None:
        return _error_reply(404, "No upload session with that upload_id.", "NOT_FOUND", r)
    commands = {c.strip().lower() for c in rec.headers.get("x-goog-upload-command", "").split(",")}
    if not commands & {"upload", "finalize", "query"}:
        return _error_reply(400, "X-Goog-Upload-Command must be upload, finalize or query.", r=r)
    if "upload" in commands:
        offset = rec.headers.get("x-goog-upload-offset", str(len(upload.received)))
        if not offset.isdigit() or int(offset) != len(upload.received):
            return _error_reply(400, f"Upload offset {offset} != {len(upload.received)} bytes received.", r=r)
        upload.received += body
    if "finalize" not in commands:
        return Reply(
            200,
            [("x-goog-upload-status", "active"), ("x-goog-upload-size-received", str(len(upload.received)))],
            [b""],
        )
    return _finalize(fake, r, rec.query["upload_id"], upload)


def _finalize(fake: FakeImageAPI, r: Route, upload_id: str, upload: _Upload) -> Reply:
    del fake.batch_api.uploads[upload_id]
    data = bytes(upload.received)
    if upload.expected_size is not None and upload.expected_size != len(data):
        message = f"Received {len(data)} bytes, but the upload was started for {upload.expected_size}."
        return _error_reply(400, message, r=r)
    f = FakeFile(upload.file_id, data, upload.mime_type, "UPLOADED", upload.api_key, upload.display_name)
    fake.batch_api.uploaded_files[f.id] = f
    return json_reply(200, {"file": file_json(fake, f, r.version)}, [("x-goog-upload-status", "final")])


def file_get(fake: FakeImageAPI, r: Route) -> Reply:
    f = _file_or_error(fake, r.ident)
    return f if isinstance(f, Reply) else _ok(file_json(fake, f, r.version))


def file_delete(fake: FakeImageAPI, r: Route) -> Reply:
    f = _file_or_error(fake, r.ident)
    if isinstance(f, Reply):
        return f
    fake.batch_api.uploaded_files.pop(f.id, None)
    fake.batch_api.generated_files.pop(f.id, None)
    return _ok({})


def file_download(fake: FakeImageAPI, r: Route) -> Reply:
    f = _file_or_error(fake, r.ident)
    if isinstance(f, Reply):
        return f
    f.downloads += 1
    batch = fake.batch_api.batches.get(f.batch_id or "")
    if batch is not None:  # a file batch's results are fetched here, not in its Operation
        batch.times_output_served += 1
    return Reply(200, [("content-type", f.mime_type)], [f.data])


# ---- dispatch --------------------------------------------------------------------------------------------


async def handle(fake: FakeImageAPI, r: Route, rec: RecordedRequest, body: bytes) -> Reply:
    """Answer an authenticated Batch / File API call (``r.kind`` is not ``bad_method``)."""
    if r.kind == "create":
        return await create(fake, r, rec)
    if r.kind == "get":
        return await get(fake, r)
    if r.kind == "list":
        return await list_batches(fake, rec)
    if r.kind == "upload_chunk":
        return upload_chunk(fake, r, rec, body)
    simple = {
        "cancel": cancel,
        "delete": delete,
        "file_get": file_get,
        "file_delete": file_delete,
        "file_download": file_download,
    }
    if r.kind in simple:
        return simple[r.kind](fake, r)
    if r.kind == "upload_start":
        return upload_start(fake, r, rec)
    raise ValueError(f"no handler for {r.kind}")
