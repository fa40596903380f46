"""The core's request and result types. Plain dataclasses: no Discord, no HTTP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["user", "model"]


@dataclass(frozen=True)
class ImageInput:
    """An image going to the model (a reference, or an image inside an earlier turn)."""

    data: bytes
    mime: str
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class Part:
    """One part of a conversation turn, kept exactly as the provider returned it.

    Gemini 3 image models require the ``thought_signature`` of every model image (and of the first text
    part before it) to come back unchanged on the next turn, or the API answers 400.
    """

    text: str | None = None
    image: ImageInput | None = None
    thought: bool = False
    thought_signature: str | None = None


@dataclass(frozen=True)
class Turn:
    role: Role
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class ImageRequest:
    """What a caller asks for. Sizes and ratios are already normalised (see ``models.normalise_*``)."""

    prompt: str
    aspect_ratio: str | None = None
    size: str = "1K"
    thinking: str | None = None
    model: str | None = None
    references: tuple[ImageInput, ...] = ()
    #: Earlier turns of an edit conversation, oldest first, exactly as stored.
    history: tuple[Turn, ...] = ()
    #: Use only this provider (e.g. ``"openai"``); None means the configured order with failover.
    provider: str | None = None


@dataclass(frozen=True)
class RequestContext:
    """Who asked, for the usage log. The CLI uses ``command="cli"`` and no ids."""

    command: str = "cli"
    guild_id: int | None = None
    channel_id: int | None = None
    user_id: int | None = None
    queue_ms: float | None = None
    job_id: str | None = None
    defer_ms: float | None = None
    #: Called with the image as soon as it exists, before it is stored and logged, so a caller can start
    #: preparing it (the bot re-encodes 4K images for Discord meanwhile).
    on_image: Callable[[GeneratedImage], None] | None = None
    #: Called with each draft and thought headline while the image renders (models that draw drafts, over
    #: Gemini's streaming API). It runs on the event loop between reads: keep it quick, hand work off.
    on_preview: Callable[[Preview], None] | None = None


@dataclass
class Timing:
    """Milliseconds spent in each phase of the successful attempt, plus the total over all attempts."""

    connect_ms: float = 0.0
    ttfb_ms: float = 0.0
    download_ms: float = 0.0
    decode_ms: float = 0.0
    total_ms: float = 0.0


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    image_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    mime: str
    width: int
    height: int


@dataclass(frozen=True)
class Preview:
    """What the model has shown so far of an image it is still rendering.

    Gemini 3 image models think before they draw and show up to two draft images on the way (thought
    parts, not charged); the last draft has the final composition. ``headline`` is the model's latest
    thought title ("Composing the scene").
    """

    headline: str | None
    #: The latest draft, or None while there is only a headline.
    draft: GeneratedImage | None
    #: How many drafts have arrived so far in this attempt.
    drafts: int
    #: Seconds since this attempt's request was sent.
    elapsed: float


@dataclass
class GenerationResult:
    images: list[GeneratedImage]
    text: str | None
    provider: str
    model: str
    size: str
    aspect_ratio: str | None
    #: The model's turn, exactly as returned, to send back on the next edit.
    model_turn: Turn | None
    timing: Timing = field(default_factory=Timing)
    usage: Usage = field(default_factory=Usage)
    attempts: int = 1
    bytes_sent: int = 0
    bytes_received: int = 0
    #: Providers tried before the one that served this result, with the error class of each.
    failed_over_from: list[tuple[str, str]] = field(default_factory=list)
    #: Set by the service once stored and logged (None without an image store or database).
    image_key: str | None = None
    generation_id: int | None = None

    @property
    def image(self) -> GeneratedImage:
        """The user's image: the last non-thought image the model returned."""
        return self.images[-1]
