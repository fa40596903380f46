"""The fake server: a hand-written ASGI app served in-process by hypercorn, over HTTP/1.1 as the real
clients speak it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

import orjson
from hypercorn.asyncio import serve
from hypercorn.config import Config

from . import batches as gemini_batches  # `batches` is FakeImageAPI's property
from . import gemini, openai_compat
from .batches import DEFAULT_LINE_ERROR, BatchAPI, FakeBatch, FakeFile, Route
from .faults import NO_KEY_MESSAGE as GEMINI_NO_KEY
from .faults import Family, Fault, gemini_error, invalid_key_body, openai_invalid_key_body
from .images import Payload
from .wire import Reply, StreamReply, decode_b64, json_reply, parse_multipart

log = logging.getLogger("tests.fake_image_api")

GEMINI_PATH = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+):(generateContent|streamGenerateContent)$")
OPENAI_PATH = re.compile(r"^(?:/api)?/v1/(images/generations|images/edits|chat/completions)$")
FILES_PATH = re.compile(r"^/files/([A-Za-z0-9_-]+)\.(png|jpeg|jpg|webp)$")
CHUNK = 1 << 20
SPLIT_SPAN = 4096  # Fault.split_stream: bytes at each end of an event written `chunk` bytes at a time
MALFORMED = {
    "gemini": b'{\n  "candidates": [\n    {\n      "content": {\n        "parts": [\n          {\n'
    b'            "inlineData": {\n              "mimeType": "image/png",\n              "data": "iVBORw0KGgoAAAAN',
    "openai": b'{"created": 1700000000, "data": [{"b64_json": "iVBORw0KGgoAAAANSUhEUgAA',
}


@dataclass(slots=True)
class RecordedRequest:
    """One request as the fake saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    http_version: str
    client: tuple[str, int]
    api_key: str | None
    json: Any = None
    form: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[tuple[str, str, bytes]]] = field(default_factory=dict)
    body_size: int = 0
    received_at: float = 0.0  # time.monotonic()
    fault: str | None = None  # name of the scripted Fault this request consumed
    status: int | None = None  # status the fake answered with (None: no answer, e.g. hang)
    finished_at: float | None = None  # time.monotonic() when the answer was sent (or the request given up)


@dataclass(slots=True)
class _Scripted:
    fault: Fault
    remaining: int
    key: str | None
    path_contains: str | None

    def matches(self, rec: RecordedRequest) -> bool:
        if self.key is not None and rec.api_key != self.key:
            return False
        if self.path_contains is not None:
            return self.path_contains in rec.path
        # Downloads and the Batch / File API calls are only hit by faults that name their path.
        return not rec.path.startswith("/files/") and not gemini_batches.is_batch_path(rec.path)


class SignatureSet(set[str]):
    """The thought signatures issued so far; usable as a set or called (``fake.issued_signatures()``)."""

    def __call__(self) -> set[str]:
        return set(self)


class _Abort(Exception):
    """The client went away or the fake is stopping: end the handler without answering."""


def _api_key(headers: dict[str, str], query: dict[str, str]) -> str | None:
    if headers.get("x-goog-api-key"):
        return headers["x-goog-api-key"]
    if query.get("key"):
        return query["key"]
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


def _pieces(data: bytes, chunk: int) -> list[bytes]:
    """The writes for one event: up to 1 MB each, or (``chunk``) ``chunk`` bytes each, except the middle of
    a long event, which goes in SPLIT_SPAN writes."""
    if not chunk:
        return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    if len(data) <= 2 * SPLIT_SPAN:
        return [data[i : i + chunk] for i in range(0, len(data), chunk)]
    end = len(data) - SPLIT_SPAN
    return [
        *(data[i : min(i + chunk, SPLIT_SPAN)] for i in range(0, SPLIT_SPAN, chunk)),
        *(data[i : min(i + SPLIT_SPAN, end)] for i in range(SPLIT_SPAN, end, SPLIT_SPAN)),
        *(data[i : i + chunk] for i in range(end, len(data), chunk)),
    ]


class FakeImageAPI:
    """Fake Gemini / OpenAI / OpenRouter image API on 127.0.0.1, for tests and benchmarks.

    ``async with FakeImageAPI() as fake:`` then point clients at ``fake.base_url``.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        payload: Payload = "small",
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
    ) -> None:
        self.latency = latency
        self.payload: Payload = payload
        self.host = host
        self.port = port
        self.record = record  # False: keep counters only (benchmarks with big bodies)
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.valid_keys: set[str] | None = None
        self.always_thoughts = False
        self.markdown_images = False  # chat.completions: image as markdown in content, not message.images
        self.in_flight = 0
        self.max_in_flight = 0
        self.request_count = 0
        self.by_http_version: Counter[str] = Counter()
        self._clients: set[tuple[str, int]] = set()
        self._script: list[_Scripted] = []
        self._signatures = SignatureSet()
        self._signature_bytes: set[bytes] = set()
        self._files: dict[str, tuple[bytes, str]] = {}
        self.batch_seconds = 0.0  # how long a Gemini batch takes to finish (0: done at the first GET)
        self.batch_api = BatchAPI()
        self._stopping = asyncio.Event()
        self._shutdown = asyncio.Event()
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ---- public API ----------------------------------------------------------------------------------
    @property
    def connections_seen(self) -> int:
        """Distinct TCP connections (client address, port) that sent at least one request."""
        return len(self._clients)

    @property
    def issued_signatures(self) -> SignatureSet:
        return self._signatures

    def script(self, fault: Fault, *, times: int = 1, key: str | None = None, path_contains: str | None = None) -> None:
        """Queue ``fault`` for the next ``times`` matching requests (FIFO across scripted faults).

        Without ``path_contains`` faults match every API call but not ``/files/`` downloads nor the Gemini
        Batch / File API calls; ``path_contains=":batchGenerateContent"`` or ``"/batches/"`` aims one at those."""
        if times < 1:
            raise ValueError("times must be >= 1")
        self._script.append(_Scripted(fault, times, key, path_contains))

    def clear_script(self) -> None:
        self._script.clear()

    # ---- Gemini Batch API / File API controls (spec A6; see batches.py) ------------------------------------
    @property
    def batches(self) -> dict[str, FakeBatch]:
        """Batches by id, in creation order (deleted ones are gone)."""
        return self.batch_api.batches

    @property
    def uploaded_files(self) -> dict[str, FakeFile]:
        """Files uploaded through the File API, by id (batches' responses files are in ``generated_files``)."""
        return self.batch_api.uploaded_files

    @property
    def generated_files(self) -> dict[str, FakeFile]:
        """Responses files of finished file-input batches, by id (``batch-{batch id}``)."""
        return self.batch_api.generated_files

    def script_batch(
        self,
        state: str,
        *,
        code: int = 500,
        status: str | None = "INTERNAL",
        message: str | None = None,
        done: int = 0,
    ) -> None:
        """The next created batch ends as ``state`` ("FAILED", "EXPIRED" or "CANCELLED") at its finish time:
        done, with the answers of its first ``done`` requests as output (none by default); FAILED carries
        ``error`` {code, message, status} on the Operation. FIFO."""
        self.batch_api.script_ending(state, code, status, message, done)

    def fail_batch_lines(
        self,
        substring: str,
        *,
        code: int = 400,
        status: str | None = "INVALID_ARGUMENT",
        message: str = DEFAULT_LINE_ERROR,
    ) -> None:
        """Every batch request whose prompt (its last user text) contains ``substring`` gets an error line
        ``{code, message[, status]}`` instead of a response; decided when the batch's results are built."""
        self.batch_api.fail_lines(substring, code, status, message)

    @property
    def pending_faults(self) -> list[tuple[Fault, int]]:
        return [(s.fault, s.remaining) for s in self._script]

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.request_count,
            "connections_seen": self.connections_seen,
            "by_http_version": dict(self.by_http_version),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "signatures_issued": len(self._signatures),
        }

    def reset(self) -> None:
        """Forget recorded requests, counters, script, files, batches and their controls (signatures stay
        valid; ``latency`` and ``batch_seconds`` are settings and stay too)."""
        self.requests.clear()
        self.request_count = 0
        self.by_http_version.clear()
        self._clients.clear()
        self._script.clear()
        self._files.clear()
        self.batch_api.reset()
        self.max_in_flight = self.in_flight

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        sock.listen(1024)
        self.port = sock.getsockname()[1]
        self.base_url = f"http://{self.host}:{self.port}"
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.accesslog = None
        config.errorlog = log
        config.include_server_header = False
        config.keep_alive_timeout = 75.0
        config.keep_alive_max_requests = 1_000_000
        config.graceful_timeout = 1.0
        config.backlog = 1024
        self._stopping.clear()
        self._shutdown.clear()
        self._task = asyncio.create_task(serve(self._asgi, config, shutdown_trigger=self._shutdown.wait))  # type: ignore[arg-type]
        started = asyncio.create_task(self._started.wait())
        done, _ = await asyncio.wait({self._task, started}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            started.cancel()
            self._task.result()
            raise RuntimeError("fake server exited during start-up")
        if not done:
            started.cancel()
            raise RuntimeError("fake server did not start within 10 s")
        await asyncio.sleep(0)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stopping.set()
        self._shutdown.set()
        try:
            await asyncio.wait_for(self._task, timeout=10)
        finally:
            self._task = None
            self._started.clear()

    async def __aenter__(self) -> FakeImageAPI:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- used by the handlers ------------------------------------------------------------------------
    def issue_signature(self) -> str:
        """A fresh thought signature (standard base64, always containing '+' and '/')."""
        raw = b"\xfb\xef\xbe\xff\xff\xff" + os.urandom(90)
        text = base64.b64encode(raw).decode("ascii")
        self._signature_bytes.add(raw)
        self._signatures.add(text)
        return text

    def knows_signature(self, value: object) -> bool:
        if not isinstance(value, str):
            return False
        if value in gemini.DUMMY_SIGNATURES or value in self._signatures:
            return True
        try:
            return decode_b64(value) in self._signature_bytes
        except ValueError:
            return False

    def store_file(self, file_id: str, data: bytes, mime: str) -> None:
        """Serve ``data`` at ``/files/{file_id}.{ext}`` (the newest 256 files are kept)."""
        self._files[file_id] = (data, mime)
        while len(self._files) > 256:
            del self._files[next(iter(self._files))]

    # ---- ASGI ----------------------------------------------------------------------------------------
    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self._started.set()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"].startswith("/_fake/"):
            with contextlib.suppress(_Abort):
                await self._send(send, await self._control(scope, await self._read_body(receive)))
            return
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            # _Abort: the client went away, or a fault dropped the connection on purpose.
            with contextlib.suppress(_Abort):
                await self._http(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _read_body(self, receive: Any) -> bytes:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Abort
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = await self._read_body(receive)
        path: str = scope["path"]
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        client = tuple(scope.get("client") or ("", 0))
        rec = RecordedRequest(
            method=scope["method"],
            path=path,
            query=query,
            headers=headers,
            http_version=scope.get("http_version", "1.1"),
            client=(str(client[0]), int(client[1])),
            api_key=_api_key(headers, query),
            body_size=len(body),
            received_at=time.monotonic(),
        )
        self._clients.add(rec.client)
        self.request_count += 1
        self.by_http_version[rec.http_version] += 1
        ctype = headers.get("content-type", "")
        if body and ctype.startswith("multipart/form-data"):
            with contextlib.suppress(ValueError):
                mp = parse_multipart(body, ctype)
                rec.form, rec.files = mp.form, mp.files
        elif body:
            try:
                rec.json = orjson.loads(body)
            except orjson.JSONDecodeError:
                rec.json = None
        if self.record:
            self.requests.append(rec)
        try:
            reply = await self._dispatch(rec, receive, body)
            if isinstance(reply, StreamReply):
                rec.status = reply.status
                await self._send_stream(send, reply, receive, rec)
            elif reply is not None:
                rec.status = reply.status
                await self._send(
                    send, reply, receive, cut=rec.fault if rec.fault in ("drop", "stall") else None, client=rec.client
                )
        finally:
            rec.finished_at = time.monotonic()

    async def _dispatch(self, rec: RecordedRequest, receive: Any, body: bytes) -> Reply | StreamReply | None:
        path = rec.path
        files = FILES_PATH.match(path)
        if files:
            if rec.method != "GET":
                return self._method_not_allowed()
            stored = self._files.get(files.group(1))
            if stored is None:
                return json_reply(
                    404,
                    {
                        "error": {
                            "message": "File not found.",
                            "type": "invalid_request_error",
                            "param": None,
                            "code": None,
                        }
                    },
                )
            fault = self._take_fault(rec)
            return await self._finish(
                rec, Reply(200, [("content-type", stored[1])], [stored[0]]), fault, "openai", receive, delay=False
            )
        batch_route = gemini_batches.route(rec.method, path, rec.query)
        if batch_route is not None:
            return await self._batch_call(rec, batch_route, body, receive)
        gm = GEMINI_PATH.match(path)
        om = OPENAI_PATH.match(path) if gm is None else None
        if gm is None and om is None:
            return json_reply(404, gemini_error(404, f"Method not found: {path}", "NOT_FOUND"))
        if rec.method != "POST":
            return self._method_not_allowed()
        family: Family = "gemini" if gm else "openai"

        # authentication comes first, as on the real services
        auth = self._check_key(rec, family)
        if auth is not None:
            return await self._finish(rec, auth, None, family, receive)

        fault = self._take_fault(rec)
        model = gm.group(2) if gm else self._openai_model(rec)
        api_version = gm.group(1) if gm else "v1"
        if fault is not None and fault.is_error:
            e = fault.render(family, model, api_version)
            hdrs = list(e.headers)
            if family == "openai":
                hdrs.append(("x-request-id", "req_fake"))
            ctype = (
                "application/json; charset=UTF-8"
                if family == "gemini" and fault.name != "openai_error"
                else "application/json"
            )
            return await self._finish(
                rec, json_reply(e.status, e.body, hdrs, content_type=ctype), fault, family, receive
            )

        if gm:
            reply = await gemini.handle(
                self, model, api_version, gm.group(3), rec.json, rec.body_size, rec.query, fault
            )
        else:
            assert om is not None
            endpoint = om.group(1)
            if endpoint == "images/generations":
                reply = await openai_compat.generations(self, rec, fault)
            elif endpoint == "images/edits":
                reply = await openai_compat.edits(self, rec, fault)
            else:
                reply = await openai_compat.chat_completions(self, rec, fault)
        return await self._finish(rec, reply, fault, family, receive)

    async def _batch_call(
        self, rec: RecordedRequest, route: Route, body: bytes, receive: Any
    ) -> Reply | StreamReply | None:
        """A Gemini Batch / File API call: authenticated and faulted like generateContent, but answered without
        the generate latency (these calls are cheap on the real service)."""
        if route.kind == "bad_method":
            return self._method_not_allowed()
        if route.needs_key:
            auth = self._check_key(rec, "gemini")
            if auth is not None:
                return auth
        fault = self._take_fault(rec)
        if fault is not None and fault.is_error:
            e = fault.render("gemini", route.model, route.version)
            reply = json_reply(e.status, e.body, [*e.headers, *gemini_batches.error_headers(route)])
        else:
            reply = await gemini_batches.handle(self, route, rec, body)
        return await self._finish(rec, reply, fault, "gemini", receive, delay=False)

    async def _finish(
        self,
        rec: RecordedRequest,
        reply: Reply | StreamReply,
        fault: Fault | None,
        family: Family,
        receive: Any,
        delay: bool = True,
    ) -> Reply | StreamReply | None:
        seconds = self.latency if delay else 0.0
        if fault is not None:
            if fault.name == "hang":
                await self._wait(None, receive)
                return None
            if fault.name == "slow":
                seconds += fault.seconds
            if fault.name == "malformed_json":
                reply = Reply(200, [("content-type", "application/json")], [MALFORMED[family]])
        if isinstance(reply, StreamReply):  # the headers go at once; the latency is spread over the events
            reply.seconds, reply.fault = seconds, fault
            return reply
        if seconds > 0:
            await self._wait(seconds, receive)
        return reply

    def _openai_model(self, rec: RecordedRequest) -> str:
        if isinstance(rec.json, dict):
            return str(rec.json.get("model") or "")
        return (rec.form.get("model") or [""])[-1]

    def _method_not_allowed(self) -> Reply:
        return json_reply(405, {"error": {"code": 405, "message": "Method Not Allowed", "status": "UNIMPLEMENTED"}})

    def _check_key(self, rec: RecordedRequest, family: Family) -> Reply | None:
        key = rec.api_key
        ok = bool(key) and (self.valid_keys is None or key in self.valid_keys)
        if ok:
            return None
        if family == "openai":
            return openai_compat.reply_error(401, openai_invalid_key_body(key))
        if not key:
            return json_reply(403, gemini_error(403, GEMINI_NO_KEY, "PERMISSION_DENIED"))
        return json_reply(400, invalid_key_body())

    def _take_fault(self, rec: RecordedRequest) -> Fault | None:
        for i, scripted in enumerate(self._script):
            if scripted.matches(rec):
                scripted.remaining -= 1
                if scripted.remaining <= 0:
                    del self._script[i]
                rec.fault = scripted.fault.name
                return scripted.fault
        return None

    async def _wait(self, seconds: float | None, receive: Any) -> None:
        """Sleep (None: forever) unless the client disconnects or the fake stops; then raise _Abort."""
        disconnect = asyncio.ensure_future(receive())
        stopping = asyncio.ensure_future(self._stopping.wait())
        waiters: set[asyncio.Future[Any]] = {disconnect, stopping}
        sleeper: asyncio.Future[Any] | None = None
        if seconds is not None:
            sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
            waiters.add(sleeper)
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if sleeper is None or sleeper not in done or disconnect in done or stopping in done:
            raise _Abort

    async def _send(
        self,
        send: Any,
        reply: Reply,
        receive: Any = None,
        *,
        cut: str | None = None,
        client: tuple[str, int] | None = None,
    ) -> None:
        """The whole reply; with ``cut`` ("drop" or "stall") only the first half of its body, then the
        connection is shut down ("drop") or left silent until the client goes away ("stall")."""
        total = reply.length
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
        headers.append((b"content-length", str(total).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        limit = total // 2 if cut else total
        # CHUNK-sized writes, each joined once from views of the segments: the body is copied once here, not
        # into a buffer and again out of it (the fake's CPU counts in bench_core's ideal).
        sent = 0
        window: list[memoryview] = []
        size = 0
        for segment in reply.segments:
            view = memoryview(segment)
            while view and sent + size < limit:
                room = min(CHUNK - size, limit - sent - size)
                window.append(view[:room])
                size += len(window[-1])
                view = view[room:]
                if size >= CHUNK:
                    await send({"type": "http.response.body", "body": b"".join(window), "more_body": True})
                    sent += size
                    window, size = [], 0
        if window:
            await send({"type": "http.response.body", "body": b"".join(window), "more_body": True})
            sent += size
        if cut == "stall":
            await self._wait(None, receive)  # raises _Abort once the client gives up
        if cut == "drop":
            if await self._drop(client):
                return
            # Fallback: end the response short of its Content-Length; h11 refuses, and hypercorn closes the
            # connection.
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_stream(self, send: Any, reply: StreamReply, receive: Any, rec: RecordedRequest) -> None:
        """Headers now, then each event at its share of ``reply.seconds`` after them (spec A5), shaped by
        ``Fault.split_stream`` / ``drop_stream`` / ``drop`` / ``stall``. No Content-Length: chunked."""
        fault: Fault | None = reply.fault
        name = fault.name if fault is not None else None
        chunk = fault.chunk if fault is not None and name == "split_stream" else 0
        events = reply.framed(lf_only=fault is not None and name == "split_stream" and fault.lf_only)
        cut: int | None = None
        if fault is not None and name == "drop_stream":
            cut = fault.after_events
        elif name in ("drop", "stall"):
            cut = len(events) // 2
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        started = time.monotonic()
        for i, (at, data) in enumerate(events):
            if cut is not None and i >= cut:
                break
            wait = started + at * reply.seconds - time.monotonic()
            if wait > 0:
                await self._wait(wait, receive)
            for piece in _pieces(data, chunk):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        if cut is None:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if name == "stall":
            await self._wait(None, receive)  # raises _Abort once the client gives up
        await self._drop(rec.client)
        # Returning without ending the body: hypercorn closes a connection whose body is unfinished.

    async def _drop(self, client: tuple[str, int] | None) -> bool:
        """Cut the answer being sent, as a network failure would: shut our end of the TCP connection down.
        False if that was not possible."""
        await asyncio.sleep(0.02)  # let hypercorn flush what was sent so far
        return client is not None and self._shutdown_socket(client)

    def _shutdown_socket(self, client: tuple[str, int]) -> bool:
        """Shut down our end of the TCP connection to ``client``. ASGI has no handle on the socket, so find
        it by address via psutil."""
        try:
            import psutil  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            return False
        for conn in psutil.Process().net_connections(kind="tcp"):
            if conn.fd < 0 or not conn.laddr or not conn.raddr or conn.laddr.port != self.port:
                continue
            if (conn.raddr.ip, conn.raddr.port) == client:
                with socket.fromfd(conn.fd, socket.AF_INET, socket.SOCK_STREAM) as dup, contextlib.suppress(OSError):
                    dup.shutdown(socket.SHUT_RDWR)
                return True
        return False

    # ---- control endpoints (not recorded, no faults, no latency) -------------------------------------
    async def _control(self, scope: dict[str, Any], body: bytes) -> Reply:
        path, method = scope["path"], scope["method"]
        if path == "/_fake/stats" and method == "GET":
            return json_reply(200, self.stats(), content_type="application/json")
        if path == "/_fake/reset" and method == "POST":
            self.reset()
            return json_reply(200, self.stats(), content_type="application/json")
        if path == "/_fake/config" and method == "POST":
            try:
                cfg = orjson.loads(body or b"{}")
            except orjson.JSONDecodeError:
                return json_reply(400, {"error": "bad json"}, content_type="application/json")
            if "latency" in cfg:
                self.latency = float(cfg["latency"])
            if cfg.get("payload") in ("small", "realistic"):
                self.payload = cfg["payload"]
            if "always_thoughts" in cfg:
                self.always_thoughts = bool(cfg["always_thoughts"])
            settings: dict[str, Any] = {
                "latency": self.latency,
                "payload": self.payload,
                "always_thoughts": self.always_thoughts,
            }
            if "batch_seconds" in cfg:
                self.batch_seconds = float(cfg["batch_seconds"])
            if "batch_seconds" in cfg or self.batch_seconds:  # the answer's old shape while batches are unused
                settings["batch_seconds"] = self.batch_seconds
            return json_reply(200, settings, content_type="application/json")
        return json_reply(404, {"error": "unknown control endpoint"}, content_type="application/json")
