"""The conversation behind each image: what a job sends the model, and what it keeps for the next turn.

A job's conversation is its chain of parent jobs, each keeping the user turn it sent and the model turn it
got back (thought signatures included), so an edit can continue from any earlier image, also after a
restart. A character is applied when the job runs: the job records the version it used, and a reroll (which
copies the request) uses that same version, so a result can be made again.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any

from bot.core.errors import InvalidRequest
from bot.core.imaging import image_size, sniff_mime
from bot.core.models import model_spec
from bot.core.types import GenerationResult, ImageInput, ImageRequest, Part, RequestContext, Turn
from bot.jobs.characters import apply_character
from bot.jobs.limits import ContextBudget
from storage.characters import get_character_by_id, get_version
from storage.db import Database
from storage.images import ImageStore
from storage.jobs import Job, get_job, update_job


@dataclass(frozen=True)
class PreparedRequest:
    """A job's request as the model receives it, and what the result should say about it."""

    request: ImageRequest
    #: The user turn to keep with the job (images by store key) once it succeeds.
    user_turn: dict[str, Any]
    #: Earlier turns left out to stay within the context budget.
    dropped_turns: int
    #: A character's reference images left out to stay within the model's image limit.
    character_images_left_out: int


def request_context(job: Job, **hooks: Any) -> RequestContext:
    """Who asked for `job`, for the usage log (and the caller's hooks: `on_image`, `on_preview`)."""
    return RequestContext(
        command=job.kind,
        guild_id=job.guild_id,
        channel_id=job.channel_id,
        user_id=job.user_id,
        queue_ms=job.queue_ms,
        job_id=job.id,
        defer_ms=job.defer_ms,
        **hooks,
    )


class Conversation:
    def __init__(self, *, db: Database, images: ImageStore, budget: ContextBudget, default_model: str) -> None:
        self.db = db
        self.images = images
        self.budget = budget
        self.default_model = default_model

    async def prepare(self, job: Job) -> PreparedRequest:
        asked = job.request
        reference_keys = list(asked.reference_keys)
        history, dropped = await self._history(job.parent_id)
        if job.parent_id is not None and not history:
            # A parent without a conversation (a tile cut from a grid): its image goes along as a reference.
            parent = await get_job(self.db, job.parent_id)
            if parent is not None and parent.image_key is not None:
                reference_keys.insert(0, parent.image_key)
        prompt = asked.prompt
        left_out = 0
        if asked.character_id is not None and job.parent_id is None:
            prompt, character_keys, left_out = await self._apply_character(job, len(reference_keys))
            reference_keys = character_keys + reference_keys
        try:
            references = tuple([await self.load_image(key) for key in reference_keys])
        except FileNotFoundError:
            raise InvalidRequest(
                "An image this request uses is no longer stored (deleted by the retention setting or /forget-me)."
            ) from None
        request = ImageRequest(
            prompt=prompt,
            aspect_ratio=asked.aspect_ratio,
            size=asked.size,
            thinking=asked.thinking,
            model=asked.model,
            references=references,
            history=history,
            provider=asked.provider,
        )
        user_turn = {"role": "user", "parts": [{"text": prompt}] + [{"image": key} for key in reference_keys]}
        return PreparedRequest(request, user_turn, dropped, left_out)

    async def _apply_character(self, job: Job, own_references: int) -> tuple[str, list[str], int]:
        asked = job.request
        assert asked.character_id is not None
        character = await get_character_by_id(self.db, asked.character_id)
        if character is None:
            raise InvalidRequest(f"The character {asked.character_name or ''!r} has been deleted.")
        number = asked.character_version or character.version
        version = await get_version(self.db, character.id, number)
        if version is None:
            raise InvalidRequest(f"The character {character.name!r} has no version {number}.")
        if asked.character_version is None:
            # Recorded before generating: a reroll copies this request, so it uses the very same version.
            job.request = dataclasses.replace(asked, character_version=number)
            await update_job(self.db, job.id, request=job.request)
        model = model_spec(asked.model or self.default_model)
        return apply_character(asked.prompt, character.name, version, own_references, model)

    async def _history(self, parent_id: str | None) -> tuple[tuple[Turn, ...], int]:
        """The conversation up to and including `parent_id`'s image, oldest first, within the budget."""
        chain: list[Job] = []
        while parent_id is not None:
            parent = await get_job(self.db, parent_id)
            if parent is None or parent.user_turn is None or parent.model_turn is None:
                break
            chain.append(parent)
            parent_id = parent.parent_id
        chain.reverse()
        pairs: list[tuple[Turn, Turn]] = []
        for parent in chain:
            assert parent.user_turn is not None and parent.model_turn is not None
            try:
                pairs.append(
                    (await self._turn_from_json(parent.user_turn), await self._turn_from_json(parent.model_turn))
                )
            except FileNotFoundError:
                # An image pruned by retention: what came before it can't be replayed either.
                pairs.clear()
        dropped = 0
        # Drop from the oldest, but always keep the turn that made the image being edited.
        while len(pairs) > 1 and not self._within_budget(pairs):
            pairs.pop(0)
            dropped += 1
        return tuple(turn for pair in pairs for turn in pair), dropped

    def _within_budget(self, pairs: list[tuple[Turn, Turn]]) -> bool:
        images = [p.image for pair in pairs for turn in pair for p in turn.parts if p.image is not None]
        return len(images) <= self.budget.max_images and sum(len(i.data) for i in images) <= self.budget.max_bytes

    async def load_image(self, key: str) -> ImageInput:
        # Stored images were checked on the way in: the header is enough to describe them.
        data = await self.images.get(key)
        width, height = await asyncio.to_thread(image_size, data)
        return ImageInput(data=data, mime=sniff_mime(data) or "image/png", width=width, height=height)

    async def model_turn_json(self, result: GenerationResult) -> dict[str, Any] | None:
        """The model's turn as kept with the job: images by store key, thought signatures kept."""
        turn = result.model_turn
        if turn is None:
            return None
        parts: list[dict[str, Any]] = []
        for part in turn.parts:
            if part.thought:
                # Drafts carry no signature and the API doesn't need them back; they would double the bytes.
                continue
            item: dict[str, Any] = {}
            if part.image is not None and result.image_key and part.image.data is result.image.data:
                item["image"] = result.image_key  # the service just stored it: no second hash of a 4K image
            elif part.image is not None:
                item["image"] = await self.images.put(
                    part.image.data, part.image.mime, width=part.image.width, height=part.image.height
                )
            else:
                item["text"] = part.text or ""
            if part.thought_signature:
                item["signature"] = part.thought_signature
            parts.append(item)
        return {"role": turn.role, "parts": parts}

    async def _turn_from_json(self, stored: dict[str, Any]) -> Turn:
        parts = []
        for item in stored["parts"]:
            image = await self.load_image(item["image"]) if "image" in item else None
            parts.append(Part(text=item.get("text"), image=image, thought_signature=item.get("signature")))
        return Turn(role=stored["role"], parts=tuple(parts))
