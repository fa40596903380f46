"""The generation service: one entry point for every command and the CLI.

It validates a request against the model's capabilities before anything is spent, runs it on the
configured providers in order (failing over when one stays unavailable), stores the image, and logs a
usage row. A failed log write never fails the generation. Each provider request's outcome (time, images,
cost or error class) also goes to the optional `metrics` hook, from this one place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from storage.db import Database, IntegrityError
from storage.generations import GenerationRow, insert_generation
from storage.images import ImageStore

from .errors import GenerationError, InvalidRequest
from .metrics import NO_METRICS, GenerationMetrics
from .models import ModelSpec, Pricing, model_spec
from .providers.base import Provider
from .providers.gemini import GeminiProvider
from .types import GenerationResult, ImageRequest, RequestContext

log = logging.getLogger(__name__)

#: The whole inline request to Gemini must stay under 20 MB; base64 adds a third.
MAX_INLINE_REQUEST_BYTES = 20 * 1000 * 1000


class GenerationService:
    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        db: Database | None = None,
        images: ImageStore | None = None,
        price_overrides: dict[str, Pricing] | None = None,
        metrics: GenerationMetrics | None = None,
    ) -> None:
        if not providers:
            raise ValueError("at least one provider is required")
        self.providers = list(providers)
        self.db = db
        self.images = images
        self.price_overrides = price_overrides or {}
        self.metrics = metrics or NO_METRICS

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.aclose()

    def spec_for(self, provider: Provider, request: ImageRequest) -> ModelSpec:
        return model_spec(request.model or provider.config.model, price_overrides=self.price_overrides)

    def _chain(self, request: ImageRequest) -> list[Provider]:
        if request.provider is None:
            return self.providers
        chosen = [p for p in self.providers if p.name == request.provider]
        if not chosen:
            names = ", ".join(p.name for p in self.providers)
            raise InvalidRequest(f"Provider {request.provider!r} is not configured (configured: {names}).")
        return chosen

    async def generate(self, request: ImageRequest, context: RequestContext | None = None) -> GenerationResult:
        """Generate, log, and store; raises a GenerationError subclass with a sentence for people."""
        context = context or RequestContext()
        chain = self._chain(request)
        validate(request, self.spec_for(chain[0], request))  # before anything is spent
        started = time.perf_counter()
        failed: list[tuple[str, str]] = []
        last_error: GenerationError | None = None
        last_spec = self.spec_for(chain[0], request)  # the model the last error came from, for its log row
        attempts = 0
        for index, provider in enumerate(chain):
            spec = self.spec_for(provider, request)
            if index > 0:
                try:
                    validate(request, spec)
                except InvalidRequest as exc:
                    log.info("not failing over to %s: %s", provider.name, exc)
                    break
            requested = time.perf_counter()
            try:
                result = await provider.generate(request, spec, on_preview=context.on_preview)
            except GenerationError as exc:
                self._observe(provider, spec, request, requested, error_class=exc.error_class)
                attempts += exc.attempts
                last_error, last_spec = exc, spec
                if exc.failover and index + 1 < len(chain):
                    log.warning("%s failed (%s: %s); failing over", provider.name, exc.error_class, exc)
                    failed.append((provider.name, exc.error_class))
                    continue
                break
            self._observe(
                provider,
                spec,
                request,
                requested,
                images=len(result.images),
                cost_usd=result.usage.cost_usd,
            )
            if context.on_image is not None:
                context.on_image(result.image)
            result.attempts += attempts
            result.failed_over_from = failed
            result.timing.total_ms = (time.perf_counter() - started) * 1000
            await self._record(request, context, spec, result=result)
            return result
        assert last_error is not None
        last_error.attempts = attempts
        await self._record(
            request,
            context,
            last_spec,
            error=last_error,
            total_ms=(time.perf_counter() - started) * 1000,
        )
        raise last_error

    def batch_provider(self, name: str | None = None) -> GeminiProvider | None:
        """The Gemini provider that takes batches (relax mode): the first configured, or the one named."""
        for provider in self.providers:
            if isinstance(provider, GeminiProvider) and (name is None or provider.name == name):
                return provider
        return None

    async def record_batched(
        self,
        request: ImageRequest,
        context: RequestContext,
        spec: ModelSpec,
        *,
        batch_id: str,
        total_ms: float,
        result: GenerationResult | None = None,
        error: GenerationError | None = None,
    ) -> None:
        """Store and log one request of a finished batch (its cost is already the batch price), as `generate`
        does for a request made at once. `total_ms` is from the request to the batch's answer."""
        if result is not None:
            result.timing.total_ms = total_ms
            result.generation_id = None  # set again only if this row is written (see the unique index in 0017)
        await self._record(request, context, spec, result=result, error=error, total_ms=total_ms, batch_id=batch_id)

    def _observe(
        self,
        provider: Provider,
        spec: ModelSpec,
        request: ImageRequest,
        requested: float,
        *,
        error_class: str | None = None,
        images: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        """Report one provider request to the metrics hook; a failing hook never fails the generation."""
        try:
            self.metrics.provider_request(
                provider=provider.name,
                # The configured model id, not the one the answer names: a relay's variant spelling would
                # split one model's series in two.
                model=spec.model_id,
                size=request.size,
                seconds=time.perf_counter() - requested,
                error_class=error_class,
                images=images,
                cost_usd=cost_usd,
            )
        except Exception:
            log.exception("the metrics hook failed; the generation itself is unaffected")

    async def _record(
        self,
        request: ImageRequest,
        context: RequestContext,
        spec: ModelSpec,
        *,
        result: GenerationResult | None = None,
        error: GenerationError | None = None,
        total_ms: float | None = None,
        batch_id: str | None = None,
    ) -> None:
        """Keep the image and write the usage row; problems here are logged, never raised."""
        image_key = None
        if result is not None and self.images is not None:
            image = result.image
            try:
                image_key = await self.images.put(image.data, image.mime, width=image.width, height=image.height)
                result.image_key = image_key
            except Exception:
                log.exception("could not store the generated image")
        if self.db is None:
            return
        row = GenerationRow(
            guild_id=context.guild_id,
            channel_id=context.channel_id,
            user_id=context.user_id,
            command=context.command,
            provider=(error.provider or "") if error else "",
            model=spec.model_id,
            size=request.size,
            aspect_ratio=request.aspect_ratio or "",
            thinking=request.thinking,
            reference_count=len(request.references),
            prompt=request.prompt,
            status="error",
            queue_ms=context.queue_ms,
            total_ms=total_ms,
            job_id=context.job_id,
            defer_ms=context.defer_ms,
            speed="relax" if batch_id is not None else "fast",
            batch_id=batch_id,
        )
        if result is not None:
            timing, usage = result.timing, result.usage
            row = replace(
                row,
                provider=result.provider,
                model=result.model,
                status="ok",
                attempts=result.attempts,
                connect_ms=timing.connect_ms,
                ttfb_ms=timing.ttfb_ms,
                download_ms=timing.download_ms,
                decode_ms=timing.decode_ms,
                total_ms=total_ms if total_ms is not None else timing.total_ms,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                thinking_tokens=usage.thinking_tokens,
                image_tokens=usage.image_tokens,
                total_tokens=usage.total_tokens,
                cost_usd=usage.cost_usd,
                bytes_sent=result.bytes_sent,
                bytes_received=result.bytes_received,
                image_key=image_key,
                width=result.image.width,
                height=result.image.height,
            )
        elif error is not None:
            row = replace(
                row,
                status="blocked" if error.error_class == "blocked" else "error",
                error_class=error.error_class,
                attempts=error.attempts,
            )
        try:
            generation_id = await insert_generation(self.db, row)
            if result is not None:
                result.generation_id = generation_id
        except IntegrityError:
            log.info("job %s's answer was logged already (by another process delivering its batch)", row.job_id)
        except Exception:
            log.exception("could not write the usage row; the generation itself is unaffected")


def validate(request: ImageRequest, spec: ModelSpec) -> None:
    """Refuse what the model can't do, with a sentence that says what it can."""
    if not request.prompt.strip():
        raise InvalidRequest("The prompt is empty.")
    if request.aspect_ratio and request.aspect_ratio not in spec.aspect_ratios:
        raise InvalidRequest(
            f"{spec.label} doesn't take aspect ratio {request.aspect_ratio}; "
            f"use one of {', '.join(spec.aspect_ratios)}."
        )
    if request.size not in spec.sizes:
        raise InvalidRequest(f"{spec.label} doesn't make {request.size} images; use {', '.join(spec.sizes)}.")
    if request.thinking and request.thinking not in spec.thinking_levels:
        if spec.thinking_levels:
            raise InvalidRequest(
                f"{spec.label} takes thinking level {' or '.join(spec.thinking_levels)}, not {request.thinking!r}."
            )
        raise InvalidRequest(f"{spec.label} sets its own thinking; it takes no thinking level.")
    if len(request.references) > spec.max_reference_images:
        raise InvalidRequest(
            f"{len(request.references)} reference images is too many: "
            f"{spec.label} takes at most {spec.max_reference_images}."
        )
    inline = sum(len(r.data) for r in request.references) + sum(
        len(p.image.data) for t in request.history for p in t.parts if p.image is not None
    )
    if inline * 4 // 3 > MAX_INLINE_REQUEST_BYTES:
        raise InvalidRequest(
            f"The images add up to {inline / 1_048_576:.1f} MB; together they must stay under about 14 MB."
        )
