"""What the generation service reports about each provider request, to whoever counts them.

A Protocol, so the core needs neither Prometheus nor the observability package: ``bot.observability.metrics
.Metrics`` satisfies it, and ``NO_METRICS`` (the default) drops everything.
"""

from __future__ import annotations

from typing import Protocol


class GenerationMetrics(Protocol):
    def provider_request(
        self,
        *,
        provider: str,
        model: str,
        size: str,
        seconds: float,
        error_class: str | None = None,
        images: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        """One provider request's outcome: `images` images costing `cost_usd`, or a failure of
        `error_class` (a GenerationError's class name); `seconds` includes that provider's retries."""


class NoMetrics:
    """For a service nobody counts (the CLI, tests): every report is dropped on purpose."""

    def provider_request(
        self,
        *,
        provider: str,
        model: str,
        size: str,
        seconds: float,
        error_class: str | None = None,
        images: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        return None


NO_METRICS: GenerationMetrics = NoMetrics()
