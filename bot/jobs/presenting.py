"""What the job system tells the Discord side: the presenter protocol, and a finished job's outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.core.errors import GenerationError
from bot.core.types import GeneratedImage, GenerationResult, ImageInput, Part, Preview, Turn, Usage
from storage.db import Database
from storage.generations import get_generation
from storage.images import ImageStore
from storage.jobs import Job


@dataclass
class JobOutcome:
    result: GenerationResult
    #: Earlier turns left out to stay within the context budget.
    dropped_turns: int = 0
    #: A character's reference images left out to stay within the model's image limit.
    character_images_left_out: int = 0


class JobPresenter(Protocol):
    """Keeps the member informed. Every method may be called from the queue's tasks; none may raise."""

    async def queued(self, job: Job) -> None: ...
    async def started(self, job: Job) -> None: ...
    def preview(self, preview: Preview) -> None:
        """The model's latest thought or draft, while it works (called between stream reads: only hand off)."""

    def prepare(self, image: GeneratedImage) -> None:
        """The image has arrived: start any slow work on it while the job stores and logs it."""

    async def finished(self, job: Job, outcome: JobOutcome) -> None: ...
    async def failed(self, job: Job, error: GenerationError | None) -> None: ...
    async def cancelled(self, job: Job) -> None: ...
    async def interrupted(self) -> None:
        """The bot is shutting down; the job is picked up again by the next start."""


async def stored_result(db: Database, images: ImageStore, generation_id: int, image_key: str) -> GenerationResult:
    """A paid generation rebuilt from the usage log and the image store (a job taken over, or a relax delivery
    taken up again, after the provider answered). The model's thought signatures were not kept if the process
    died before the job recorded them: the image goes back without one."""
    row = await get_generation(db, generation_id)
    assert row is not None
    data = await images.get(image_key)
    mime = await images.mime_of(image_key)
    image = GeneratedImage(data=data, mime=mime, width=row.width or 0, height=row.height or 0)
    result = GenerationResult(
        images=[image],
        text=None,
        provider=row.provider,
        model=row.model,
        size=row.size,
        aspect_ratio=row.aspect_ratio or None,
        model_turn=Turn(role="model", parts=(Part(image=ImageInput(data=data, mime=mime)),)),
        usage=Usage(cost_usd=row.cost_usd),
    )
    result.image_key, result.generation_id = image_key, generation_id
    return result
