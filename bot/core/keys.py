"""API-key rotation: round-robin, a cool-down after 429, benching of refused keys."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import AllKeysBenchedError


@dataclass
class _KeyState:
    secret: str
    label: str
    benched_reason: str | None = None
    cool_until: float = 0.0


class KeyPool:
    """Hands out keys round-robin, skipping benched keys and keys in a rate-limit cool-down.

    Keys are only ever shown by label ("key #2 (...9f3a)"), so logs and errors never carry a secret.
    """

    def __init__(self, provider: str, keys: list[str], *, clock: Callable[[], float] = time.monotonic) -> None:
        if not keys:
            raise ValueError(f"{provider}: no API keys")
        self.provider = provider
        self._clock = clock
        self._keys = [
            _KeyState(secret=k, label=f"key #{i + 1} (...{k[-4:]})" if len(k) >= 12 else f"key #{i + 1}")
            for i, k in enumerate(keys)
        ]
        self._next = 0

    def __len__(self) -> int:
        return len(self._keys)

    def acquire(self) -> tuple[str, str]:
        """The next usable key and its label.

        When every usable key is cooling down, the one that is free soonest is returned anyway: the
        retry loop has already waited what the server asked for.
        """
        usable = [k for k in self._keys if k.benched_reason is None]
        if not usable:
            reasons = "; ".join(f"{k.label}: {k.benched_reason}" for k in self._keys)
            raise AllKeysBenchedError(
                f"Every {self.provider} API key was refused ({reasons}). Check the keys in your settings.",
                provider=self.provider,
            )
        now = self._clock()
        for _ in range(len(self._keys)):
            state = self._keys[self._next]
            self._next = (self._next + 1) % len(self._keys)
            if state.benched_reason is None and state.cool_until <= now:
                return state.secret, state.label
        soonest = min(usable, key=lambda k: k.cool_until)
        return soonest.secret, soonest.label

    def seconds_until_available(self) -> float:
        """How long until some usable key is out of its cool-down (0 if one is free now)."""
        now = self._clock()
        waits = [max(0.0, k.cool_until - now) for k in self._keys if k.benched_reason is None]
        return min(waits) if waits else 0.0

    def bench(self, secret: str, reason: str) -> None:
        """Stop using a key for the life of the process (it was refused as invalid or leaked)."""
        for state in self._keys:
            if state.secret == secret:
                state.benched_reason = reason

    def cool_down(self, secret: str, seconds: float) -> None:
        for state in self._keys:
            if state.secret == secret:
                state.cool_until = max(state.cool_until, self._clock() + seconds)

    def status(self) -> list[tuple[str, str]]:
        """(label, state) of every key, for diagnostics."""
        now = self._clock()
        out = []
        for k in self._keys:
            if k.benched_reason:
                out.append((k.label, f"benched: {k.benched_reason}"))
            elif k.cool_until > now:
                out.append((k.label, f"cooling down {k.cool_until - now:.0f}s"))
            else:
                out.append((k.label, "ok"))
        return out
