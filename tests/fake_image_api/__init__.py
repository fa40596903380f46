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
``GET /files/{id}.png`` (``response_format=url`` results), the Gemini Batch and File APIs (below), and control
calls that are neither recorded nor delayed: ``GET /_fake/stats``, ``POST /_fake/config`` ({latency, payload,
always_thoughts, batch_seconds}), ``POST /_fake/reset``.

``latency`` is added before every API answer (errors included, not /files or /_fake); ``Fault.slow`` adds
to it. Faults are consumed FIFO by the first matching request, after authentication.

``:streamGenerateContent`` (spec A5) spreads the latency over the stream instead: 200 headers at once, then
with ``includeThoughts`` on a thinking model a thought headline at 10%, a PNG draft (``thought: true``) at 40%,
a second headline at 55%, a second draft at 70%, and the final parts at 100%, the last event carrying
finishReason and the same usageMetadata as ``:generateContent``. Stream faults::

    fake.script(Fault.split_stream(chunk=7, lf_only=True))   # tiny writes, LF-only event separators
    fake.script(Fault.drop_stream(after_events=2))           # headline + draft 1, then the connection is cut
Gemini Batch API and File API (spec A6, ``batches.py``; no latency, faults only with ``path_contains``)::

    POST /{v}/models/{m}:batchGenerateContent     {"batch": {"displayName", "inputConfig": {"requests": {"requests":
                                                   [{"request", "metadata": {"key"}}]}} | {"fileName": "files/ID"}}}
    GET /{v}/batches/ID, GET /{v}/batches?pageSize=&pageToken=, POST /{v}/batches/ID:cancel, DELETE /{v}/batches/ID
    POST /upload/{v}/files (X-Goog-Upload-Protocol: resumable, X-Goog-Upload-Command: start; answers
    X-Goog-Upload-URL), then POST that URL (X-Goog-Upload-Command: upload, finalize) -> {"file": File}
    GET /{v}/files/ID, DELETE /{v}/files/ID, GET (/download)/{v}/files/ID:download?alt=media -> the bytes

A batch is PENDING for the first 30% of ``fake.batch_seconds`` (default 0.0: done at the first GET), then RUNNING,
then SUCCEEDED with ``metadata.output`` (and ``response``): ``inlinedResponses.inlinedResponses`` in input order,
or ``responsesFile`` "files/batch-ID" whose JSONL lines are ``{"key", "response"}`` / ``{"key", "error"}``. A
request that fails ``:generateContent`` validation becomes an error line, not a failed create. Controls::

    fake.batch_seconds = 2.0                      # also POST /_fake/config {"batch_seconds": 2.0}
    fake.script_batch("FAILED")                   # or "EXPIRED" / "CANCELLED": how the next batch ends
    fake.script_batch("EXPIRED", done=1)          # ...with its first request answered (a half-done batch)
    fake.batch_api.echo_metadata = False          # inline answers without the request's metadata (its key)
    fake.fail_batch_lines("spider", code=400, status="INVALID_ARGUMENT", message="...")  # error lines
    fake.batches["ID"].times_output_served, fake.uploaded_files, fake.generated_files
    fake.script(Fault.rate_limit(), path_contains=":batchGenerateContent")  # or "/batches/", "/upload/"

``reset()`` forgets batches, files and these scripts; ``batch_seconds`` is a setting and stays.

Separate process: ``python -m tests.fake_image_api --port 0 --latency 0.5 --payload realistic``.
"""

from __future__ import annotations

from .batches import FakeBatch, FakeFile
from .catalog import MODELS, ModelSpec, pixel_size
from .faults import ErrorReply, Fault
from .images import Payload, image_bytes, sniff_mime
from .server import FakeImageAPI, RecordedRequest

__all__ = [
    "MODELS",
    "ErrorReply",
    "FakeBatch",
    "FakeFile",
    "FakeImageAPI",
    "Fault",
    "ModelSpec",
    "Payload",
    "RecordedRequest",
    "image_bytes",
    "pixel_size",
    "sniff_mime",
]
