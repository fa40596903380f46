"""A fake Gemini / OpenAI / OpenRouter image API for tests and benchmarks (see ``server.FakeImageAPI``).

Wire formats follow /work/shared/specs/image-apis.md (sections A0-A8, B, C).
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
