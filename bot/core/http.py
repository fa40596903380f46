"""The one pooled HTTP client per provider, with timing of every phase and typed transport errors."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import GenerationTimeout, ResponseError, UnavailableError

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


class HttpClient:
    """A long-lived ``httpx.AsyncClient``: HTTP/1.1 with keep-alive, a bounded pool, explicit timeouts.

    ``max_connections`` bounds the requests in flight at once: size it to the caller's concurrency.
    """

    def __init__(
        self,
        *,
        provider: str,
        connect_timeout: float = 10.0,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.provider = provider
        self.connect_timeout = connect_timeout
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=connect_timeout, read=300.0, write=60.0, pool=300.0),
            # Every connection of a burst stays open for the next one (httpx keeps only 20 by default).
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
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

        async def trace(event: str, info: dict[str, Any]) -> None:
            marks[event.removeprefix("http11.")] = time.perf_counter()

        # httpx times every socket read: the wait for the answer's headers (the whole generation) and each read
        # of its body. The provider's retry deadline bounds the attempt as a whole (retry.py).
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
        )


async def _read_body(response: httpx.Response, max_bytes: int, provider: str) -> bytearray:
    """The whole body in one buffer, sized from Content-Length when there is one.

    Image responses run to tens of MB: collecting chunks and joining them would hold the body twice. The
    buffer is allocated once at the declared size and each chunk is copied into place. Growing a bytearray
    chunk by chunk instead is not "in place": once glibc serves blocks of this size from its heap (after the
    first few responses of a process), each growth step may move the whole buffer, on the event loop.
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
