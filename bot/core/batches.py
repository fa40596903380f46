"""Gemini's Batch API (spec A6): the same ``generateContent`` requests at half the price, answered within a
day (usually much sooner).

`BatchClient` sends a batch (inline when it fits the 20 MB request limit, else as an uploaded JSONL file),
reads its state, cancels it, and turns its output into one `BatchLine` per request: a `GenerationResult`
parsed exactly as a fast answer is (images, text, the model's turn with its thought signatures, usage at
the batch price) or the typed error of that one request. It shares the Gemini provider's pooled client,
keys and retry policy. A batch can only be seen with the API key that created it: callers keep that key's
`key_id` (a fingerprint, never the key) with the batch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import orjson

from .cost import gemini_usage
from .errors import BlockedError, GenerationError, InvalidRequest, NoImageError, ResponseError
from .http import HttpResult
from .inline import InlineImageDecoder
from .models import ModelSpec
from .providers.base import load_json
from .providers.gemini import GeminiProvider, answer_of, build_request_body, map_error
from .retry import call_with_retries
from .types import GenerationResult, ImageRequest, Timing

log = logging.getLogger(__name__)
T = TypeVar("T")

#: What a batched image costs, as a share of the same request made at once (Google's price list).
BATCH_PRICE_FACTOR = 0.5
#: A batch's whole create request must stay under 20 MB inline; past that the requests go as a JSONL file.
INLINE_LIMIT_BYTES = 20 * 1000 * 1000
#: Room left in the inline limit for the envelope around the requests.
_ENVELOPE = 64 * 1024
#: Management calls answer at once; a finished batch's output can be hundreds of MB of images.
_CALL_TIMEOUT = 120.0
_MAX_OUTPUT_BYTES = 2 * 1024 * 1024 * 1024


class BatchState(enum.StrEnum):
    """A batch's state, as the provider reports it (``BATCH_STATE_*``, or ``JOB_STATE_*`` from the SDK)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def final(self) -> bool:
        return self not in (BatchState.PENDING, BatchState.RUNNING)

    @classmethod
    def from_wire(cls, value: Any) -> BatchState:
        name = str(value or "").upper().removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_").lower()
        try:
            return cls(name)
        except ValueError:
            return cls.PENDING  # UNSPECIFIED, or a state newer than this release: keep polling


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What the provider says of one batch."""

    name: str
    display_name: str
    model: str
    state: BatchState
    request_count: int = 0
    succeeded: int = 0
    failed: int = 0
    #: Why a FAILED batch failed, in the provider's words.
    error: str | None = None
    #: The output of a finished batch: inline responses (raw, images cut out as "#N" into `images`) or a file.
    inline: list[dict[str, Any]] | None = None
    images: list[bytes] = field(default_factory=list)
    responses_file: str | None = None
    #: When the provider created it and when it ended (Unix time), if it says.
    created_at: float | None = None
    ended_at: float | None = None


@dataclass(slots=True)
class BatchLine:
    """One request's outcome: a result, or the error that stopped it."""

    key: str
    result: GenerationResult | None = None
    error: GenerationError | None = None
    #: The output has no line for this request at all (`error` says so).
    missing: bool = False


def key_id(secret: str) -> str:
    """A fingerprint of an API key, to find the key that created a batch again (the key itself is never kept)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


class BatchClient:
    """The Batch API of one Gemini provider."""

    def __init__(self, provider: GeminiProvider) -> None:
        self.provider = provider
        self.name = provider.name
        self._base = provider.config.base_url.rstrip("/")
        self._version = provider.config.api_version

    # --- keys ---------------------------------------------------------------------------------------------
    def _key(self, wanted: str | None) -> tuple[str, str]:
        """The key with fingerprint `wanted` (None: the next key in rotation), and its label."""
        if wanted is None:
            return self.provider.keys.acquire()
        for index, secret in enumerate(self.provider.config.api_keys):
            if key_id(secret) == wanted:
                return secret, f"key #{index + 1}"
        raise InvalidRequest(
            f"{self.name}: the API key that created this batch is no longer configured, so the batch can't be read.",
            provider=self.name,
        )

    def _headers(self, secret: str, **extra: str) -> dict[str, str]:
        return {"x-goog-api-key": secret, **extra}

    async def _call(
        self, key: str | None, send: Callable[[str, str], Awaitable[HttpResult]], ok: Callable[[HttpResult], T]
    ) -> T:
        """One management call with the provider's retry policy; errors mapped as for generateContent."""

        async def attempt() -> T:
            secret, label = self._key(key)
            reply = await send(secret, label)
            if reply.status != 200:
                raise map_error(reply.status, reply.content, reply.headers, provider=self.name, key_label=label)
            return ok(reply)

        try:
            result, _ = await call_with_retries(
                attempt, self.provider.config.retry, provider=self.name, sleep=self.provider.sleep
            )
        except GenerationError as exc:
            exc.provider = exc.provider or self.name
            self.provider.redact_error(exc)
            raise
        return result

    # --- create -------------------------------------------------------------------------------------------
    def next_key(self) -> str:
        """The fingerprint of the key the next batch goes out with (key rotation, as for fast requests)."""
        secret, _ = self.provider.keys.acquire()
        return key_id(secret)

    async def create(
        self, items: Sequence[tuple[str, ImageRequest]], spec: ModelSpec, *, display_name: str, key: str
    ) -> tuple[BatchInfo, str, int]:
        """Send one batch of `(key, request)` for the model `spec` with the API key `key` (a fingerprint).
        Returns what the provider answered, how the input went ('inline' or 'file') and its size in bytes."""
        if not items:
            raise ValueError("a batch needs at least one request")
        # Encoding the references and joining up to hundreds of MB is CPU work: off the event loop.
        kind, payload, size = await asyncio.to_thread(_input, items, spec, display_name)
        if kind == "inline":
            envelope = payload
        else:
            file_name = await self.upload_jsonl(payload, display_name=display_name, key=key)
            envelope = orjson.dumps({"batch": {"displayName": display_name, "inputConfig": {"fileName": file_name}}})
        url = f"{self._base}/{self._version}/models/{spec.model_id}:batchGenerateContent"

        async def send(secret: str, label: str) -> HttpResult:
            headers = self._headers(secret, **{"content-type": "application/json"})
            return await self.provider.http.request(
                "POST", url, headers=headers, content=envelope, read_timeout=_CALL_TIMEOUT
            )

        info = await self._call(key, send, lambda reply: parse_operation(load_json(reply.content)))
        return info, kind, size

    async def upload_jsonl(self, data: bytes, *, display_name: str, key: str) -> str:
        """Upload a JSONL input file with the File API's resumable protocol; returns its name ('files/...')."""
        start_url = f"{self._base}/upload/{self._version}/files"

        async def start(secret: str, label: str) -> HttpResult:
            headers = self._headers(
                secret,
                **{
                    "content-type": "application/json",
                    "x-goog-upload-protocol": "resumable",
                    "x-goog-upload-command": "start",
                    "x-goog-upload-header-content-length": str(len(data)),
                    "x-goog-upload-header-content-type": "application/jsonl",
                },
            )
            body = orjson.dumps({"file": {"displayName": display_name, "mimeType": "application/jsonl"}})
            return await self.provider.http.request(
                "POST", start_url, headers=headers, content=body, read_timeout=_CALL_TIMEOUT
            )

        def upload_url(reply: HttpResult) -> str:
            url = reply.headers.get("x-goog-upload-url")
            if not url:
                raise ResponseError(f"{self.name} gave no upload address for the batch file.", provider=self.name)
            return str(url)

        target = await self._call(key, start, upload_url)

        async def upload(secret: str, label: str) -> HttpResult:
            headers = self._headers(
                secret,
                **{
                    "x-goog-upload-command": "upload, finalize",
                    "x-goog-upload-offset": "0",
                    "content-type": "application/jsonl",
                },
            )
            return await self.provider.http.request("POST", target, headers=headers, content=data, read_timeout=600.0)

        def file_name(reply: HttpResult) -> str:
            body = load_json(reply.content)
            stored = body.get("file") if isinstance(body, dict) else None
            name = stored.get("name") if isinstance(stored, dict) else None
            if not name:
                raise ResponseError(f"{self.name} did not name the uploaded batch file.", provider=self.name)
            return str(name)

        return await self._call(key, upload, file_name)

    # --- state --------------------------------------------------------------------------------------------
    async def get(self, name: str, key: str) -> BatchInfo:
        """The batch's state; for a finished batch with inline output, its responses too (images decoded as
        they arrive)."""
        skeleton, images = await self._get_decoded(f"{self._base}/{self._version}/{_path(name)}", key)
        info = parse_operation(load_json(skeleton))
        return replace(info, images=images) if info.inline is not None else info

    async def _get_decoded(self, url: str, key: str) -> tuple[bytes, list[bytes]]:
        """A GET whose answer may carry hundreds of MB of images: the JSON with each image cut out as "#N", and
        the images, decoded while they arrive (as a fast answer is)."""
        decoders: list[InlineImageDecoder] = []

        async def send(secret: str, label: str) -> HttpResult:
            decoder = InlineImageDecoder()
            decoders.append(decoder)

            async def sink(chunk: bytes) -> None:
                decoder.feed(chunk)

            return await self.provider.http.request(
                "GET", url, headers=self._headers(secret), read_timeout=600.0, sink=sink, max_bytes=_MAX_OUTPUT_BYTES
            )

        decoder = await self._call(key, send, lambda reply: decoders[-1])
        return await asyncio.to_thread(decoder.finish)  # joining the images copies them: off the loop

    async def cancel(self, name: str, key: str) -> None:
        url = f"{self._base}/{self._version}/{_path(name)}:cancel"

        async def send(secret: str, label: str) -> HttpResult:
            headers = self._headers(secret, **{"content-type": "application/json"})
            return await self.provider.http.request(
                "POST", url, headers=headers, content=b"{}", read_timeout=_CALL_TIMEOUT
            )

        await self._call(key, send, lambda reply: None)

    async def list_batches(self, key: str | None = None, *, limit: int = 1000) -> list[BatchInfo]:
        """The batches the key can see, newest first as the provider lists them (up to `limit`)."""
        found: list[BatchInfo] = []
        token = ""
        while len(found) < limit:
            query = f"?pageSize=100{'&pageToken=' + quote(token) if token else ''}"
            url = f"{self._base}/{self._version}/batches{query}"

            async def send(secret: str, label: str, url: str = url) -> HttpResult:
                return await self.provider.http.request(
                    "GET", url, headers=self._headers(secret), read_timeout=_CALL_TIMEOUT
                )

            page = await self._call(key, send, lambda reply: load_json(reply.content))
            page = page if isinstance(page, dict) else {}
            found += [parse_operation(op) for op in page.get("operations") or [] if isinstance(op, dict)]
            token = str(page.get("nextPageToken") or "")
            if not token:
                break
        return found[:limit]

    async def find(self, display_name: str, key: str) -> BatchInfo | None:
        """The batch sent under `display_name`, if the provider has one (a create call that was cut off)."""
        for info in await self.list_batches(key):
            if info.display_name == display_name:
                return info
        return None

    # --- output -------------------------------------------------------------------------------------------
    async def lines(
        self,
        info: BatchInfo,
        key: str,
        requests: dict[str, tuple[ImageRequest, ModelSpec]],
        *,
        others: tuple[ImageRequest, ModelSpec] | None = None,
        order: Sequence[str] | None = None,
    ) -> list[BatchLine]:
        """Each request's outcome in a SUCCEEDED batch, for the keys in `requests` (with what each asked for,
        to price it). Lines for unknown keys are skipped, unless `others` says how to price them (a batch
        sent from elsewhere, whose keys only its output tells); a key with no line at all gets an error.
        `order` is every key in the order the requests were sent: inline output lines that don't carry their
        key back are matched by position (the API answers inline requests in their order)."""
        if info.responses_file is not None:
            raw, images = await self._download(info.responses_file, key)
        else:
            raw, images = list(info.inline or []), info.images
        if order is not None and raw and all(_line_key(row) is None for row in raw) and len(raw) <= len(order):
            raw = [{**row, "key": key} for row, key in zip(raw, order, strict=False)]
        return await asyncio.to_thread(_parse_lines, raw, images, requests, self.name, others)

    async def _download(self, file_name: str, key: str) -> tuple[list[dict[str, Any]], list[bytes]]:
        url = f"{self._base}/download/{self._version}/{_path(file_name)}:download?alt=media"
        skeleton, images = await self._get_decoded(url, key)
        rows = [load_json(line) for line in bytes(skeleton).splitlines() if line.strip()]
        return [row for row in rows if isinstance(row, dict)], images


def _path(name: str) -> str:
    """'batches/abc' as a URL path (the name may come from a file or the command line)."""
    return "/".join(quote(piece, safe="") for piece in name.strip("/").split("/"))


def _input(items: Sequence[tuple[str, ImageRequest]], spec: ModelSpec, display_name: str) -> tuple[str, bytes, int]:
    """The batch's input: the whole create request when it fits the inline limit ('inline'), else the JSONL file
    to upload ('file'); and the requests' size. Runs in a worker thread."""
    bodies = [(key, build_request_body(request, spec)) for key, request in items]
    size = sum(len(body) for _, body in bodies)
    if size + _ENVELOPE <= INLINE_LIMIT_BYTES:
        return "inline", _inline_envelope(display_name, bodies), size
    return "file", _jsonl(bodies), size


def _inline_envelope(display_name: str, bodies: list[tuple[str, bytes]]) -> bytes:
    # The request bodies are already JSON: spliced in rather than parsed and dumped again.
    requests = b",".join(
        b'{"request":' + body + b',"metadata":{"key":' + orjson.dumps(key) + b"}}" for key, body in bodies
    )
    head = orjson.dumps(display_name)
    return b'{"batch":{"displayName":' + head + b',"inputConfig":{"requests":{"requests":[' + requests + b"]}}}}"


def _jsonl(bodies: list[tuple[str, bytes]]) -> bytes:
    return b"".join(b'{"key":' + orjson.dumps(key) + b',"request":' + body + b"}\n" for key, body in bodies)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    return obj.get(camel, obj.get(snake))


_FRACTION = re.compile(r"\.(\d{6})\d+")


def _time(value: Any) -> float | None:
    """A Google JSON timestamp ('2026-01-02T03:04:05.123456789Z') as Unix time; None if absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = _FRACTION.sub(r".\1", value.strip())  # fromisoformat takes microseconds at most
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def parse_operation(body: Any) -> BatchInfo:
    """A batch as the API returns it: an Operation whose metadata is the GenerateContentBatch (or, tolerated,
    the batch itself)."""
    if not isinstance(body, dict):
        raise ResponseError("The batch API returned an unexpected document.")
    batch = body.get("metadata") if isinstance(body.get("metadata"), dict) else body
    assert isinstance(batch, dict)
    stats = _get(batch, "batchStats", "batch_stats") or {}
    output = batch.get("output") or {}
    inline_holder = _get(output, "inlinedResponses", "inlined_responses")
    inline = None
    if isinstance(inline_holder, dict):
        inline = [r for r in _get(inline_holder, "inlinedResponses", "inlined_responses") or [] if isinstance(r, dict)]
    error = body.get("error") or batch.get("error")
    message = None
    if isinstance(error, dict):
        message = str(error.get("message") or error.get("status") or "failed")
    return BatchInfo(
        name=str(body.get("name") or batch.get("name") or ""),
        display_name=str(_get(batch, "displayName", "display_name") or ""),
        model=str(batch.get("model") or "").removeprefix("models/"),
        state=BatchState.from_wire(batch.get("state")),
        request_count=_int(_get(stats, "requestCount", "request_count")),
        succeeded=_int(_get(stats, "successfulRequestCount", "successful_request_count")),
        failed=_int(_get(stats, "failedRequestCount", "failed_request_count")),
        error=message,
        inline=inline,
        responses_file=_get(output, "responsesFile", "responses_file"),
        created_at=_time(_get(batch, "createTime", "create_time")),
        ended_at=_time(_get(batch, "endTime", "end_time")),
    )


def _line_key(row: dict[str, Any]) -> str | None:
    key = row.get("key")
    if key is None:
        key = (row.get("metadata") or {}).get("key")
    return str(key) if key is not None else None


def _line_error(error: Any, provider: str) -> GenerationError:
    """One request's error line (a google.rpc.Status) as the typed error the same answer to a fast call maps to."""
    error = error if isinstance(error, dict) else {}
    code = _int(error.get("code")) or 500
    status = str(error.get("status") or "")
    message = str(error.get("message") or status or "failed")
    if status == "INVALID_ARGUMENT" or code == 400:
        return InvalidRequest(f"{provider} refused the request: {message}", provider=provider, status=400)
    exc = map_error(
        {3: 400, 5: 404, 7: 403, 8: 429, 13: 500, 14: 503, 4: 504}.get(code, code if code >= 100 else 500),
        orjson.dumps({"error": error}),
        httpx.Headers(),
        provider=provider,
        key_label="batch",
    )
    exc.message = f"{provider}: {message}"
    exc.args = (exc.message,)
    return exc


def _parse_lines(
    rows: list[dict[str, Any]],
    images: list[bytes],
    requests: dict[str, tuple[ImageRequest, ModelSpec]],
    provider: str,
    others: tuple[ImageRequest, ModelSpec] | None = None,
) -> list[BatchLine]:
    """Runs in a worker thread: decoding and checking the images is CPU work."""
    lines: dict[str, BatchLine] = {}
    for row in rows:
        key = _line_key(row)
        if key is None or key in lines or (key not in requests and others is None):
            continue
        asked = requests.get(key, others)
        assert asked is not None
        request, spec = asked
        response = row.get("response")
        if not isinstance(response, dict):
            lines[key] = BatchLine(key, error=_line_error(row.get("error") or row.get("status"), provider))
            continue
        try:
            found, text, turn, meta = answer_of(response, images, provider)
        except (BlockedError, NoImageError, ResponseError) as exc:
            lines[key] = BatchLine(key, error=exc)
            continue
        usage = gemini_usage(meta, spec.pricing, size=request.size, images=len(found))
        usage.cost_usd = round(usage.cost_usd * BATCH_PRICE_FACTOR, 6)
        result = GenerationResult(
            images=found,
            text=text,
            provider=provider,
            model=spec.model_id,
            size=request.size,
            aspect_ratio=request.aspect_ratio,
            model_turn=turn,
            timing=Timing(),
            usage=usage,
        )
        lines[key] = BatchLine(key, result=result)
    for key in requests:
        if key not in lines:
            lines[key] = BatchLine(
                key,
                error=ResponseError(f"{provider} returned no answer for this request.", provider=provider),
                missing=True,
            )
    return [lines[key] for key in requests] + [line for key, line in lines.items() if key not in requests]
