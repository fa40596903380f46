"""The one status ticker that single images and grids share: edits spaced out, and none after the result."""

from __future__ import annotations

import asyncio
from typing import Any

import discord
import pytest

from bot.ui.status import Status, StatusTicker
from bot.ui.surfaces import DraftAttachment, Surface

pytestmark = pytest.mark.timeout(10)


class RecordingSurface(Surface):
    """Keeps the status lines it is shown; an edit can be held in flight with `hold`."""

    def __init__(self) -> None:
        super().__init__(locale="en-US", channel=None, upload_limit=0)  # type: ignore[arg-type]
        self.shown: list[str] = []
        #: What the ticker must never do itself: post a result or an error.
        self.other: list[str] = []
        self.hold: asyncio.Event | None = None
        self.editing = asyncio.Event()

    async def update(
        self, *, content: str, view: discord.ui.View | None = None, draft: DraftAttachment | None = None
    ) -> None:
        self.editing.set()
        if self.hold is not None:
            await self.hold.wait()
        self.shown.append(content)
        self.status_message_id = 42

    async def result(self, **fields: Any) -> discord.Message:
        self.other.append("result")
        raise AssertionError("the ticker posted a result")

    async def error(self, text: str) -> None:
        self.other.append(text)


async def test_close_waits_for_the_edit_in_flight_and_no_edit_follows() -> None:
    surface = RecordingSurface()
    text = "queued"
    ticker = StatusTicker(surface, lambda: Status(text), interval=0.05)
    await ticker.refresh()
    ticker.start()
    surface.hold, surface.editing = asyncio.Event(), asyncio.Event()
    text = "generating"
    ticker.poke()
    await asyncio.wait_for(surface.editing.wait(), 5)  # an edit is in flight
    closing = asyncio.create_task(ticker.close())
    await asyncio.sleep(0)
    assert not closing.done()  # close waits for it, so the result can't be overtaken by it
    surface.hold.set()
    await asyncio.wait_for(closing, 5)
    text = "too late"
    await ticker.refresh()
    assert surface.shown == ["queued", "generating"] and surface.other == []


async def test_an_unchanged_status_is_not_edited_again_and_the_message_id_is_reported() -> None:
    surface = RecordingSurface()
    reported: list[int] = []

    async def on_shown(message_id: int) -> None:
        reported.append(message_id)

    ticker = StatusTicker(surface, lambda: Status("same"), interval=0.05, on_shown=on_shown)
    await ticker.refresh()
    await ticker.refresh()
    assert surface.shown == ["same"] and reported == [42]
    await ticker.close()


async def test_news_brings_the_next_edit_forward_but_edits_stay_spaced() -> None:
    surface = RecordingSurface()
    count = 0

    def render() -> Status:
        nonlocal count
        count += 1
        return Status(f"line {count}")

    interval = 3.0
    ticker = StatusTicker(surface, render, interval=interval)
    await ticker.refresh()
    loop = asyncio.get_running_loop()
    first = loop.time()
    surface.editing = asyncio.Event()
    ticker.start()
    ticker.poke()
    await asyncio.wait_for(surface.editing.wait(), 5)  # well before the 3 s tick, not sooner than a third of it
    elapsed = loop.time() - first
    assert interval / 3 - 0.05 <= elapsed < interval - 0.5
    await ticker.close()
