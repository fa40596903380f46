"""Limits people configure: the queue's quotas and how much conversation an edit sends back."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueLimits:
    #: Jobs running at once over the whole bot: keep it at or under what the provider's rate limit allows.
    global_concurrency: int = 4
    guild_concurrency: int = 2
    user_concurrency: int = 1
    #: Jobs one member may have waiting or running at once.
    user_pending: int = 3
    #: Images per member / per guild per UTC day (0 = no limit).
    user_daily: int = 0
    guild_daily: int = 0
    #: Images per UTC day over the whole bot made through members' own installs (in DMs and in servers that
    #: haven't added the bot); 0 turns user installs off.
    user_install_daily: int = 100


@dataclass(frozen=True)
class ContextBudget:
    """How much earlier conversation an edit sends back: beyond it, the oldest turns are dropped."""

    max_images: int = 6
    max_bytes: int = 24 * 1024 * 1024


@dataclass(frozen=True)
class RelaxSettings:
    #: Requests that make a batch go at once (BANANA_RELAX_BATCH_SIZE).
    batch_size: int = 16
    #: Seconds the oldest relax job waits for others before its batch goes anyway (BANANA_RELAX_MAX_WAIT).
    max_wait: float = 300.0
    #: Polling: the first look this soon after sending, then at a tenth of the batch's age, at most this far apart.
    poll_min: float = 10.0
    poll_max: float = 300.0
    #: The batcher's lease; it renews it every round.
    lease: float = 30.0
