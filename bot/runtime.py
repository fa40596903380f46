"""Wiring: settings -> storage, image store, providers and the generation service.

Both the CLI and the Discord client open one ``Runtime`` and close it on the way out.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial

import httpx

from storage.db import Database
from storage.images import ImageStore

from .config import Settings
from .core.errors import ConfigError
from .core.metrics import GenerationMetrics
from .core.providers import GeminiProvider, OpenAIChatProvider, OpenAIImagesProvider, Provider, ProviderConfig
from .core.service import GenerationService

log = logging.getLogger(__name__)

POOL_HEADROOM = 2  # over the cap: a cut-off attempt's connection may still be closing as its slot's next job connects


def build_providers(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> list[Provider]:
    """The configured providers, in failover order."""
    # What every provider shares: the network settings. Each running job has at most one request in flight.
    config = partial(
        ProviderConfig,
        connect_timeout=settings.connect_timeout,
        max_connections=settings.limits.global_concurrency + POOL_HEADROOM,
        timeouts=settings.timeouts,
        retry=settings.retry,
    )
    providers: list[Provider] = []
    for name in settings.configured_providers:
        if name == "gemini":
            gemini = config(
                name="gemini",
                base_url=settings.gemini_base_url,
                api_keys=tuple(k.reveal() for k in settings.gemini_api_keys),
                model=settings.gemini_model,
                api_version=settings.gemini_api_version,
            )
            providers.append(GeminiProvider(gemini, transport=transport))
        else:
            openai = config(
                name="openai",
                base_url=settings.openai_base_url,
                api_keys=tuple(k.reveal() for k in settings.openai_api_keys),
                model=settings.openai_image_model,
                extra_body=settings.openai_extra_body,
                thinking_field=settings.openai_thinking_field,
            )
            cls = OpenAIChatProvider if settings.openai_api_style == "chat" else OpenAIImagesProvider
            providers.append(cls(openai, transport=transport))
    if not providers:
        raise ConfigError(
            [
                "No image provider is configured: set GEMINI_API_KEY (get one at "
                "https://aistudio.google.com/apikey) or OPENAI_API_KEY with OPENAI_BASE_URL."
            ]
        )
    return providers


@dataclass
class Runtime:
    settings: Settings
    db: Database
    images: ImageStore
    service: GenerationService

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: GenerationMetrics | None = None,
    ) -> Runtime:
        providers = build_providers(settings, transport=transport)
        try:
            db = await Database.open(settings.database_target)
        except BaseException:
            await asyncio.gather(*(provider.aclose() for provider in providers))
            raise
        images = ImageStore(settings.images_dir, db)
        service = GenerationService(
            providers, db=db, images=images, price_overrides=settings.price_overrides, metrics=metrics
        )
        runtime = cls(settings=settings, db=db, images=images, service=service)
        try:
            if settings.image_retention_days > 0:
                pruned = await images.prune(settings.image_retention_days)
                if pruned:
                    log.info("pruned %d images older than %g days", pruned, settings.image_retention_days)
        except BaseException:
            await runtime.aclose()  # a failed start leaves no connection or client behind
            raise
        return runtime

    async def aclose(self) -> None:
        await self.service.aclose()
        await self.db.close()
