"""Jobs: quotas, the fair queue, the conversation behind each image, and the generation call.

The Discord side hands in a `Job` and a `JobPresenter` (which keeps the member informed); this module
does the rest and knows nothing of Discord. A job's conversation is its chain of parent jobs, each
keeping the user turn it sent and the model turn it got back (thought signatures included), so an
edit can continue from any earlier image, also after a restart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from storage.characters import character_images, get_character_by_id
from storage.db import Database
from storage.generations import recent_latencies_ms
from storage.guild_settings import GuildSettings, get_guild_settings, spent_since
from storage.images import ImageStore
from storage.jobs import Job, count_reserved_since, get_job, insert_job, unfinished_jobs, update_job

from .characters import apply_character
from .core.errors import GenerationError, InvalidRequest
from .core.imaging import image_size, sniff_mime
from .core.models import model_spec
from .core.service import GenerationService
from .core.types import GeneratedImage, GenerationResult, ImageInput, ImageRequest, Part, RequestContext, Turn
from .limits import ContextBudget, QueueLimits
from .queue import FairQueue, Ticket

log = logging.getLogger(__name__)


class BudgetExceeded(Exception):
    """The guild's monthly budget can't cover the job's estimated cost."""

    def __init__(self, *, budget: float, left: float, needed: float, resets_at: float) -> None:
        super().__init__(f"budget of ${budget:.2f} would be exceeded")
        self.budget, self.left, self.needed, self.resets_at = budget, left, needed, resets_at


class LimitExceeded(Exception):
    """A quota refuses a new job. `limit` names it; `resets_at` is a unix time, or None (frees when a job ends)."""

    def __init__(self, limit: str, allowed: int, resets_at: float | None, *, needed: int = 1, used: int = 0) -> None:
        super().__init__(f"{limit} limit of {allowed} reached")
        self.limit = limit
        self.allowed = allowed
        self.resets_at = resets_at
        #: Images the refused request needed, and how many of the allowance are already used.
        self.needed = needed
        self.used = used


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
    async def finished(self, job: Job, outcome: JobOutcome) -> None: ...
    async def failed(self, job: Job, error: GenerationError | None) -> None: ...
    async def cancelled(self, job: Job) -> None: ...
    async def interrupted(self) -> None:
        """The bot is shutting down; the job is picked up again by the next start."""


def utc_day_start(now: float) -> float:
    day = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


class JobService:
    def __init__(
        self,
        *,
        db: Database,
        images: ImageStore,
        generation: GenerationService,
        limits: QueueLimits,
        budget: ContextBudget | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.images = images
        self.generation = generation
        self.limits = limits
        self.budget = budget or ContextBudget()
        self.clock = clock
        self.queue = FairQueue(limits)
        self._presenters: dict[str, JobPresenter] = {}
        # Quota check and reservation must be one step, or a burst could slip past a limit together.
        self._admission = asyncio.Lock()
        #: job id -> (guild id, estimated cost) of admitted jobs whose cost is not logged yet: what a budget
        #: must count besides the month's spending, so concurrent jobs can't overshoot it together.
        self._reserved_cost: dict[str, tuple[int | None, float]] = {}
        #: Presenters telling members about finished jobs (see _after_slot).
        self._telling: set[asyncio.Task[None]] = set()

    # --- admission ----------------------------------------------------------------------------------
    async def submit(self, job: Job, presenter: JobPresenter) -> None:
        """Reserve quota, persist and queue the job; raises LimitExceeded (nothing reserved) when over a limit."""
        await self.submit_group([(job, presenter)])

    async def submit_group(self, jobs: Sequence[tuple[Job, JobPresenter]]) -> None:
        """Admit the jobs of one request (a grid's tiles) together: all of them or none."""
        first = jobs[0][0]
        cost = self.estimate_cost(first.request.get("model"), first.request.get("size", "1K"), 1)
        async with self._admission:
            await self._check_limits(first.user_id, first.guild_id, images=len(jobs), cost=cost * len(jobs))
            for job, _ in jobs:
                job.status = "queued"
                await insert_job(self.db, job)
                self._reserved_cost[job.id] = (job.guild_id, cost)
            for job, presenter in jobs:
                self._enqueue(job, presenter)
        for job, presenter in jobs:
            await presenter.queued(job)

    async def _check_limits(self, user_id: int, guild_id: int | None, *, images: int, cost: float) -> None:
        settings = await get_guild_settings(self.db, guild_id) if guild_id is not None else None
        limits = self.limits_for(settings)
        if guild_id is not None:
            # The guild's caps apply from this job on, in the queue as in admission.
            self.queue.lane_limits[guild_id] = limits
        if self.queue.pending_for_user(user_id) >= limits.user_pending:
            raise LimitExceeded("user_pending", limits.user_pending, None)
        day_start = utc_day_start(self.clock())
        resets_at = day_start + 86400
        if limits.user_daily:
            used = await count_reserved_since(self.db, day_start, user_id=user_id)
            if used + images > limits.user_daily:
                raise LimitExceeded("user_daily", limits.user_daily, resets_at, needed=images, used=used)
        if limits.guild_daily and guild_id is not None:
            used = await count_reserved_since(self.db, day_start, guild_id=guild_id)
            if used + images > limits.guild_daily:
                raise LimitExceeded("guild_daily", limits.guild_daily, resets_at, needed=images, used=used)
        if settings is not None and settings.monthly_budget_usd is not None:
            await self._check_budget(settings.guild_id, settings.monthly_budget_usd, cost)

    def limits_for(self, settings: GuildSettings | None) -> QueueLimits:
        """The bot-wide limits with the guild's own (from /settings) in their place."""
        if settings is None:
            return self.limits
        overrides = {
            name: value
            for name in ("guild_concurrency", "user_concurrency", "user_pending", "user_daily", "guild_daily")
            if (value := getattr(settings, name)) is not None
        }
        return replace(self.limits, **overrides)

    async def _check_budget(self, guild_id: int, budget: float, cost: float) -> None:
        committed = await self.spent_this_month(guild_id) + sum(
            c for g, c in self._reserved_cost.values() if g == guild_id
        )
        if committed + cost > budget + 1e-9:
            raise BudgetExceeded(
                budget=budget, left=max(0.0, budget - committed), needed=cost, resets_at=self._next_month()
            )

    def estimate_cost(self, model: str | None, size: str, images: int) -> float:
        """What `images` images at `size` should cost, from the price table (the image tokens; the prompt's
        few hundred input tokens add well under a cent)."""
        spec = self.generation.spec_for(self.generation.providers[0], ImageRequest(prompt="", model=model, size=size))
        return spec.pricing.image_price(size) * images

    async def spent_this_month(self, guild_id: int) -> float:
        return await spent_since(self.db, guild_id, self._month_start())

    def _month_start(self) -> float:
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()

    def _next_month(self) -> float:
        start = dt.datetime.fromtimestamp(self._month_start(), dt.UTC)
        return (
            start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        ).timestamp()

    def _enqueue(self, job: Job, presenter: JobPresenter) -> None:
        self._presenters[job.id] = presenter
        lane = job.guild_id if job.guild_id is not None else -job.user_id
        ticket = Ticket(
            job_id=job.id,
            lane=lane,
            user_id=job.user_id,
            run=lambda: self._run(job, presenter),
            group=job.grid_id or job.id,
        )
        self.queue.submit(ticket)

    async def interrupted(self) -> list[Job]:
        """What the last run left queued or running. Read before this run admits anything of its own."""
        return await unfinished_jobs(self.db)

    async def resume(
        self, jobs: list[Job], presenter_for: Callable[[Job], Awaitable[JobPresenter | None]]
    ) -> list[Job]:
        """Queue again what a restart interrupted (`jobs`, from `interrupted()`). Their quota is already
        reserved, so no limit applies. A job whose channel is gone can't be shown: it fails (and so is
        refunded)."""
        resumed = []
        for job in jobs:
            presenter = await presenter_for(job)
            if presenter is None:
                log.warning("job %s: its channel %s is gone; refunding it", job.id, job.channel_id)
                await self._fail(job, "channel_gone", None)
                continue
            if job.status == "running":
                job.status = "queued"
                await update_job(self.db, job.id, status="queued")
            size = job.request.get("size", "1K")
            self._reserved_cost[job.id] = (job.guild_id, self.estimate_cost(job.request.get("model"), size, 1))
            self._enqueue(job, presenter)
            await presenter.queued(job)
            resumed.append(job)
        return resumed

    async def cancel(self, job_id: str) -> bool:
        """Cancel a waiting job (refunding it); False if it already started or is unknown."""
        if not self.queue.cancel(job_id):
            return False
        self._reserved_cost.pop(job_id, None)
        await update_job(self.db, job_id, status="cancelled", finished_at=self.clock())
        presenter = self._presenters.pop(job_id, None)
        job = await get_job(self.db, job_id)
        if presenter is not None and job is not None:
            await presenter.cancelled(job)
        return True

    def position(self, job_id: str) -> int | None:
        return self.queue.position(job_id)

    async def estimate_seconds(self, model: str, size: str) -> float | None:
        """The median of recent successful generations for this model and size (None before there are 3)."""
        recent = await recent_latencies_ms(self.db, model=model, size=size, limit=20)
        if len(recent) < 3:
            return None
        return statistics.median(recent) / 1000

    async def aclose(self) -> None:
        for presenter in list(self._presenters.values()):
            await presenter.interrupted()
        await self.queue.aclose()
        # Results being posted get a moment to finish; the bot is closing, so not forever.
        if self._telling:
            await asyncio.wait(self._telling, timeout=5)

    async def wait_told(self) -> None:
        """Until every finished job's member has been told (tests)."""
        while self._telling:
            await asyncio.gather(*self._telling, return_exceptions=True)

    # --- running --------------------------------------------------------------------------------------
    async def _run(self, job: Job, presenter: JobPresenter) -> None:
        started = self.clock()
        job.status, job.started_at = "running", started
        job.queue_ms = (started - job.created_at) * 1000 if job.attempts_started == 0 else job.queue_ms
        job.attempts_started += 1
        await update_job(
            self.db,
            job.id,
            status="running",
            started_at=started,
            queue_ms=job.queue_ms,
            attempts_started=job.attempts_started,
        )
        await presenter.started(job)
        try:
            request, user_turn, dropped, left_out = await self._build_request(job)
            context = RequestContext(
                command=job.kind,
                guild_id=job.guild_id,
                channel_id=job.channel_id,
                user_id=job.user_id,
                queue_ms=job.queue_ms,
                job_id=job.id,
                defer_ms=job.defer_ms,
                on_image=lambda image: self._generated(job, presenter, image),
                # Drafts stream only where someone will see them (the server may have turned them off).
                on_preview=getattr(presenter, "preview", None) if job.request.get("previews", True) else None,
            )
            result = await self.generation.generate(request, context)
        except GenerationError as exc:
            self._reserved_cost.pop(job.id, None)  # its row (cost 0) is logged: nothing left to reserve
            await self._fail(job, exc.error_class, str(exc))
            self._after_slot(presenter.failed(job, exc))
            return
        except asyncio.CancelledError:
            # Shutting down: the job stays 'running' in the database and the next start runs it again.
            raise
        except Exception:
            self._reserved_cost.pop(job.id, None)
            log.exception("job %s failed unexpectedly (reference %s)", job.id, job.id)
            await self._fail(job, "internal", None)
            self._after_slot(presenter.failed(job, None))
            return
        finally:
            self._presenters.pop(job.id, None)
        self._reserved_cost.pop(job.id, None)  # its real cost is in the log now
        job.status, job.finished_at = "done", self.clock()
        job.image_key, job.generation_id = result.image_key, result.generation_id
        job.user_turn = user_turn
        job.model_turn = await self._turn_to_json(result.model_turn, result) if result.model_turn else None
        await update_job(
            self.db,
            job.id,
            status="done",
            finished_at=job.finished_at,
            image_key=job.image_key,
            generation_id=job.generation_id,
            user_turn=job.user_turn,
            model_turn=job.model_turn,
        )
        outcome = JobOutcome(result=result, dropped_turns=dropped, character_images_left_out=left_out)
        self._after_slot(presenter.finished(job, outcome))

    def _generated(self, job: Job, presenter: JobPresenter, image: GeneratedImage) -> None:
        """The provider has answered: the next job in line may start while this one stores and logs its
        image (16 jobs finishing together otherwise held their slots ~100 ms each, queued behind one
        another's SQLite writes), and the presenter may start fitting the image for Discord."""
        self.queue.release(job.id)
        prepare = getattr(presenter, "prepare", None)
        if prepare is not None:
            prepare(image)

    def _after_slot(self, telling: Coroutine[Any, Any, None]) -> None:
        """Tell the member after the job gives its slot back: posting to Discord needs no provider capacity,
        so the next job in line starts at once instead of waiting for the upload."""
        task = asyncio.create_task(telling)
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    async def _fail(self, job: Job, error_class: str, detail: str | None) -> None:
        job.status, job.error_class, job.error_detail = "failed", error_class, detail
        job.finished_at = self.clock()
        await update_job(
            self.db, job.id, status="failed", error_class=error_class, error_detail=detail, finished_at=job.finished_at
        )

    async def _build_request(self, job: Job) -> tuple[ImageRequest, dict[str, Any], int, int]:
        spec = job.request
        reference_keys: list[str] = list(spec.get("reference_keys", []))
        history, dropped = await self._history(job.parent_id)
        if job.parent_id is not None and not history:
            # A parent without a conversation (a tile cut from a grid): its image goes along as a reference.
            parent = await get_job(self.db, job.parent_id)
            if parent is not None and parent.image_key is not None:
                reference_keys.insert(0, parent.image_key)
        prompt = spec["prompt"]
        left_out = 0
        if spec.get("character_id") is not None and job.parent_id is None:
            # Applied when the job runs, so a reroll uses the character as it is now.
            prompt, character_keys, left_out = await self._apply_character(spec, prompt, len(reference_keys))
            reference_keys = character_keys + reference_keys
        try:
            references = tuple([await self._load_image(key) for key in reference_keys])
        except FileNotFoundError:
            raise InvalidRequest(
                "An image this request uses is no longer stored (deleted by the retention setting or /forget-me)."
            ) from None
        request = ImageRequest(
            prompt=prompt,
            aspect_ratio=spec.get("aspect_ratio"),
            size=spec.get("size", "1K"),
            thinking=spec.get("thinking"),
            model=spec.get("model"),
            references=references,
            history=history,
            provider=spec.get("provider"),
        )
        user_turn = {
            "role": "user",
            "parts": [{"text": request.prompt}] + [{"image": key} for key in reference_keys],
        }
        return request, user_turn, dropped, left_out

    async def _apply_character(
        self, spec: dict[str, Any], prompt: str, own_references: int
    ) -> tuple[str, list[str], int]:
        character = await get_character_by_id(self.db, int(spec["character_id"]))
        if character is None:
            raise InvalidRequest(f"The character {spec.get('character_name', '')!r} has been deleted.")
        keys = await character_images(self.db, character.id)
        model = model_spec(spec.get("model") or self.generation.providers[0].config.model)
        return apply_character(prompt, character, keys, own_references, model)

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
                user_turn = await self._turn_from_json(parent.user_turn)
                model_turn = await self._turn_from_json(parent.model_turn)
                pairs.append((user_turn, model_turn))
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

    async def _load_image(self, key: str) -> ImageInput:
        # Stored images were checked on the way in: the header is enough to describe them.
        data = await self.images.get(key)
        width, height = await asyncio.to_thread(image_size, data)
        return ImageInput(data=data, mime=sniff_mime(data) or "image/png", width=width, height=height)

    async def _turn_to_json(self, turn: Turn, result: GenerationResult) -> dict[str, Any]:
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
            image = None
            if "image" in item:
                image = await self._load_image(item["image"])
            parts.append(Part(text=item.get("text"), image=image, thought_signature=item.get("signature")))
        return Turn(role=stored["role"], parts=tuple(parts))
