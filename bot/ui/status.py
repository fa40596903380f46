"""One status ticker, for single images and grids: keeps a job's status message current while it waits and
runs, and gets out of the way of the result."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import discord

from bot.ui.surfaces import DraftAttachment, Surface

log = logging.getLogger(__name__)


@dataclass
class Status:
    """What the status message should show now."""

    content: str
    view: discord.ui.View | None = None
    draft: DraftAttachment | None = None


class StatusTicker:
    """Edits `surface` with what `render` says: once per `interval`, sooner after `poke` (a draft, a new
    thought), but never two edits within a third of the interval, because Discord rate-limits message edits
    (about 5 per 5 s per channel, shared by every job there).

    Every edit happens under one lock, and `close` ends them for good after any edit in flight, so a late
    status edit can never land on top of the result.
    """

    def __init__(
        self,
        surface: Surface,
        render: Callable[[], Status],
        *,
        interval: float,
        before_edit: Callable[[], Awaitable[None]] | None = None,
        on_shown: Callable[[int], Awaitable[None]] | None = None,
        name: str = "status",
    ) -> None:
        self.surface = surface
        self._render = render
        self._interval = interval
        #: Slow work for the coming edit (shrinking the newest draft), done just before it on the ticker.
        self._before_edit = before_edit
        #: Told the status message's id once it is known (a restart edits that message again).
        self._on_shown = on_shown
        self._name = name
        self._lock = asyncio.Lock()
        self._closed = False
        self._news = asyncio.Event()
        self._shown: str | None = None
        self._last_edit = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._tick(), name=self._name)

    def poke(self) -> None:
        """There is news worth an edit before the next tick."""
        self._news.set()

    async def refresh(self) -> None:
        """Edit now if what `render` says changed (or carries a draft)."""
        async with self._lock:
            if not self._closed:
                await self._edit()

    async def close(self) -> None:
        """No status edit after this; one in flight finishes first, so the result is always the last word."""
        async with self._lock:
            self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _edit(self) -> None:
        status = self._render()
        if status.content == self._shown and status.draft is None:
            return
        self._shown = status.content
        self._last_edit = time.monotonic()
        try:
            await self.surface.update(content=status.content, view=status.view, draft=status.draft)
            if self._on_shown is not None and self.surface.status_message_id is not None:
                await self._on_shown(self.surface.status_message_id)
        except discord.HTTPException as exc:
            log.warning("could not update a status message: %s", exc)
        except RuntimeError as exc:  # the HTTP session closed under us: the bot is shutting down
            log.debug("status message not updated: %s", exc)

    async def _tick(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._news.wait()
            self._news.clear()
            await asyncio.sleep(max(0.0, self._last_edit + self._interval / 3 - time.monotonic()))
            if self._before_edit is not None:
                await self._before_edit()
            await self.refresh()
