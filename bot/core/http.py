"""The one pooled HTTP client per provider, with timing of every phase and typed transport errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from . import h2tuning
from .errors import GenerationTimeout, ResponseError, UnavailableError

HttpVersion = Literal["2", "2-prior", "1.1"]

# hpack logs every HTTP/2 header it encodes at DEBUG, API keys included: keep it quiet whatever the
# application's log level, so a key never reaches a log file.
logging.getLogger("hpack").setLevel(logging.WARNING)
h2tuning.apply()

#: Bodies larger than this are abandoned: no real image response comes near it.
MAX_RESPONSE_BYTES = 200 * 1024 * 1024


@dataclass
class HttpResult:
    status: int
    headers: httpx.Headers
    #: The body; a bytearray so a multi-MB response is held once, not once per chunk plus once joined.
    content: bytes | bytearray
    connect_ms: float
    ttfb_ms: float
    download_ms: float
    bytes_sent: int
    bytes_received: int
    http_version: str


class HttpClient:
    """A long-lived ``httpx.AsyncClient``: keep-alive pool, HTTP/2, explicit timeouts.

    ``http_version``: ``"2"`` negotiates HTTP/2 over TLS (HTTP/1.1 on plain http), ``"2-prior"`` also
    speaks HTTP/2 to plain-http servers (local relays, the test fake), ``"1.1"`` turns HTTP/2 off.
    """

    def __init__(
        self,
        *,
        provider: str,
        http_version: HttpVersion = "2",
        connect_timeout: float = 10.0,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.provider = provider
        self.connect_timeout = connect_timeout
        self._client = httpx.AsyncClient(
            http1=http_version != "2-prior",
            http2=http_version != "1.1",
            timeout=httpx.Timeout(connect=connect_timeout, read=300.0, write=60.0, pool=300.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=20),
            transport=transport,
            follow_redirects=False,
            # Image payloads are base64 of already-compressed PNGs: gzip would save a quarter of the bytes
            # at the price of inflating every response on our side. Compressed answers are still decoded.
            headers={"accept-encoding": "identity"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        read_timeout: float,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
        data: dict[str, Any] | None = None,
        max_bytes: int = MAX_RESPONSE_BYTES,
        sink: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> HttpResult:
        """Send one request and read the whole body, timing connect, first byte and download.

        With a ``sink``, a 200 body is handed to it chunk by chunk as it arrives (a stream of events) and
        the result's ``content`` stays empty; any other status is read whole as usual.
        Raises GenerationTimeout or UnavailableError for transport failures; HTTP error statuses are
        returned, not raised, so each provider maps its own error bodies.
        """
        marks: dict[str, float] = {}
        deadline: list[asyncio.Timeout] = []

        async def trace(event: str, info: dict[str, Any]) -> None:
            name = event.split(".", 1)[1] if event.startswith(("http11.", "http2.")) else event
            marks[name] = time.perf_counter()
            if name == "send_request_body.complete" and deadline:
                # The request is out: from now the answer, all of it, must come within the read timeout. On
                # HTTP/2 this is the only timeout a request has: the connection's reads serve every stream,
                # so a per-read timeout would only notice a connection gone silent for everyone.
                deadline[0].reschedule(asyncio.get_running_loop().time() + read_timeout)

        timeout = httpx.Timeout(connect=self.connect_timeout, read=read_timeout, write=60.0, pool=read_timeout)
        request = self._client.build_request(
            method,
            url,
            headers=headers,
            content=content,
            files=files,
            data=data,
            timeout=timeout,
            extensions={"trace": trace},
        )
        bytes_sent = len(content) if content is not None else int(request.headers.get("content-length", 0))
        started = time.perf_counter()
        try:
            # Until the request is sent: connecting (and waiting for the pool) and the read timeout; after it,
            # the read timeout (see trace). On HTTP/1.1 httpcore also times each socket read.
            async with asyncio.timeout(read_timeout + self.connect_timeout) as whole:
                deadline.append(whole)
                response = await self._client.send(request, stream=True)
                try:
                    headers_at = time.perf_counter()
                    if sink is not None and response.status_code == 200:
                        body = bytearray()
                        bytes_received = await _pass_body(response, sink, max_bytes, self.provider)
                    else:
                        body = await _read_body(response, max_bytes, self.provider)
                        bytes_received = len(body)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise GenerationTimeout(
                f"{self.provider} did not answer within {read_timeout:.0f} s.", provider=self.provider
            ) from None
        except httpx.TimeoutException as exc:
            raise GenerationTimeout(
                f"{self.provider} timed out ({type(exc).__name__}) after {time.perf_counter() - started:.0f} s.",
                provider=self.provider,
            ) from None
        except httpx.TransportError as exc:
            raise UnavailableError(
                f"Connection to {self.provider} failed: {type(exc).__name__}.", provider=self.provider
            ) from None
        done = time.perf_counter()
        connect_ms = _span(marks, "connection.connect_tcp") + _span(marks, "connection.start_tls")
        ttfb_at = marks.get("receive_response_headers.complete", headers_at)
        return HttpResult(
            status=response.status_code,
            headers=response.headers,
            content=body,
            connect_ms=connect_ms,
            ttfb_ms=(ttfb_at - started) * 1000,
            download_ms=(done - ttfb_at) * 1000,
            bytes_sent=bytes_sent,
            bytes_received=bytes_received,
            http_version=response.http_version,
        )


async def _read_body(response: httpx.Response, max_bytes: int, provider: str) -> bytearray:
    """The whole body in one buffer, sized from Content-Length when there is one.

    Image responses run to tens of MB: collecting chunks and joining them would hold the body twice. The
    buffer is allocated once at the declared size and each chunk is copied into place. Growing a bytearray
    chunk by chunk instead is not "in place": once glibc serves blocks of this size from its heap (after the
    first few responses of a process), each growth step may move the whole buffer, and 64 concurrent 2K
    bodies spent ~0.5 s of event-loop CPU per batch in those copies (bench/README.md).
    """
    declared = response.headers.get("content-length", "")
    expected = int(declared) if declared.isdigit() else 0
    if expected > max_bytes:
        raise ResponseError(f"{provider} sent more than {max_bytes // 1_048_576} MB; abandoned.", provider=provider)
    body = bytearray(expected)
    received = 0
    async for chunk in response.aiter_bytes():
        end = received + len(chunk)
        if end > max_bytes:
            raise ResponseError(f"{provider} sent more than {max_bytes // 1_048_576} MB; abandoned.", provider=provider)
        if end <= expected:
            body[received:end] = chunk  # same length: a plain copy into the buffer
        else:
            body[received:] = chunk  # past the declared size (or none declared): grows
        received = end
    del body[received:]  # a body shorter than declared is caught by the HTTP layer; this keeps it exact
    return body


async def _pass_body(
    response: httpx.Response, sink: Callable[[bytes], Awaitable[None]], max_bytes: int, provider: str
) -> int:
    """Hand each chunk of a streamed body to `sink` as it arrives; returns the bytes received."""
    received = 0
    async for chunk in response.aiter_bytes():
        received += len(chunk)
        if received > max_bytes:
            raise ResponseError(f"{provider} sent more than {max_bytes // 1_048_576} MB; abandoned.", provider=provider)
        await sink(chunk)
    return received


def _span(marks: dict[str, float], name: str) -> float:
    start, end = marks.get(f"{name}.started"), marks.get(f"{name}.complete")
    return (end - start) * 1000 if start is not None and end is not None else 0.0
