"""A fake Gemini / OpenAI / OpenRouter image API for tests and benchmarks.

Wire formats follow /work/shared/specs/image-apis.md (A0-A8, B, C). Served in-process by hypercorn on
127.0.0.1 over HTTP/1.1, the protocol the bot and the official SDKs speak::

    async with FakeImageAPI(latency=0.0, payload="small") as fake:      # or the `fake_api` fixture
        fake.valid_keys = {"good"}                                       # None: any non-empty key
        fake.script(Fault.rate_limit(retry_delay="3s"), times=2, key="good")
        ...  # point a client at fake.base_url (Gemini: /v1beta/models/{m}:generateContent,
        ...  # OpenAI: fake.base_url + "/v1", OpenRouter: /api/v1/chat/completions)
        fake.requests[-1].json, fake.connections_seen, fake.issued_signatures

Endpoints: ``POST /{v1,v1beta}/models/{model}:generateContent`` (and ``:streamGenerateContent``, SSE with
``?alt=sse``), ``POST /v1/images/generations``, ``POST /v1/images/edits``, ``POST (/api)/v1/chat/completions``,
``GET /files/{id}.png`` (``response_format=url`` results), and control calls that are neither recorded nor
delayed: ``GET /_fake/stats``, ``POST /_fake/config`` ({latency, payload, always_thoughts}), ``POST /_fake/reset``.

``latency`` is added before every API answer (errors included, not /files or /_fake); ``Fault.slow`` adds
to it. Faults are consumed FIFO by the first matching request, after authentication.

``:streamGenerateContent`` (spec A5) spreads the latency over the stream instead: 200 headers at once, then
with ``includeThoughts`` on a thinking model a thought headline at 10%, a PNG draft (``thought: true``) at 40%,
a second headline at 55%, a second draft at 70%, and the final parts at 100%, the last event carrying
finishReason and the same usageMetadata as ``:generateContent``. Stream faults::

    fake.script(Fault.split_stream(chunk=7, lf_only=True))   # tiny writes, LF-only event separators
    fake.script(Fault.drop_stream(after_events=2))           # headline + draft 1, then the connection is cut
Separate process: ``python -m tests.fake_image_api --port 0 --latency 0.5 --payload realistic``.
"""

from __future__ import annotations

from .catalog import MODELS, ModelSpec, pixel_size
from .faults import ErrorReply, Fault
from .images import Payload, image_bytes, sniff_mime
from .server import FakeImageAPI, RecordedRequest

__all__ = [
    "MODELS",
    "ErrorReply",
    "FakeImageAPI",
    "Fault",
    "ModelSpec",
    "Payload",
    "RecordedRequest",
    "image_bytes",
    "pixel_size",
    "sniff_mime",
]
