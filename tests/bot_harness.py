"""Banana Bot end to end on loopback: the real bot (real discord.py) against the fake Discord and the fake image API.

async with BotHarness(tmp_path) as h:            # or the `harness` fixture in conftest.py
    await h.start()                                # create_bot(settings) + bot.start(token), until ready
    inter = await h.imagine(h.alice, "a cat", aspect_ratio="16:9")
    result = await h.wait_result(inter)            # the message that carries the image
    await h.restart()                              # close the bot, start a new one on the same data

The bot runs with the production retry policy and timeouts (bot/config.py defaults): a test that wants short
retries passes them, e.g. ``h.start(BANANA_RETRY_BACKOFF="0.01")``. Only the status-edit interval is shortened,
so that a test sees the status messages change within its time bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from PIL import Image

from bot.client import BananaBot, create_bot
from bot.config import load_settings
from tests.fake_discord import FakeDiscord, FakeGuild, FakeInteraction, FakeMessage, FakeUser
from tests.fake_image_api import FakeImageAPI
from tests.postgres import shared_server

RESULT_TIMEOUT = 15.0


async def wait_until(check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = RESULT_TIMEOUT) -> None:  # noqa: ASYNC109
    """Poll `check` (a function, or a coroutine function) until it is true; AssertionError after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting until {what}")
        await asyncio.sleep(0.01)


def png(width: int = 64, height: int = 48, colour: tuple[int, int, int] = (40, 120, 220)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "PNG")
    return buf.getvalue()


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def custom_ids(message: FakeMessage) -> list[str]:
    return [c["custom_id"] for row in message.components for c in row.get("components", []) if "custom_id" in c]


def has_image(message: FakeMessage) -> bool:
    """Whether the message shows a result image: a status message may carry the model's draft meanwhile."""
    return any(not upload.filename.startswith("draft-") for upload in message.files)


def embed_fields(message: FakeMessage) -> dict[str, str]:
    assert message.embeds, f"message {message.id} has no embed"
    return {f["name"]: f["value"] for f in message.embeds[0].get("fields", [])}


def footer(message: FakeMessage) -> str:
    return str(message.embeds[0].get("footer", {}).get("text", ""))


class BotHarness:
    def __init__(self, tmp_path: Path, *, api_payload: str = "small", token_lifetime: float = 15 * 60) -> None:
        self.data_dir = tmp_path / "data"
        self.discord = FakeDiscord(token_lifetime=token_lifetime)
        self.api = FakeImageAPI(payload=api_payload)  # type: ignore[arg-type]
        self.bot: BananaBot | None = None
        self._task: asyncio.Task[None] | None = None
        self.env: dict[str, str] = {}
        if os.environ.get("BANANA_TEST_BACKEND") == "postgresql":
            # Every start of this harness's bot, restarts included, shares one database, as the data dir is shared.
            self.env["BANANA_DATABASE_URL"] = shared_server().fresh_url()
        #: discord.py dispatches on_ready this many seconds after the last GUILD_CREATE; an interaction sent
        #: in between reaches the bot before its on_ready.
        self.guild_ready_timeout = 0.05
        self.ready = asyncio.Event()  # set by the current bot's on_ready
        self.guild: FakeGuild
        self.alice: FakeUser
        self.bob: FakeUser

    async def __aenter__(self) -> BotHarness:
        await self.api.__aenter__()
        await self.discord.__aenter__()
        self.guild = self.discord.add_guild("Banana Test")
        self.alice = self.guild.add_member("alice")
        self.bob = self.guild.add_member("bob")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
        await self.discord.__aexit__(exc_type, exc, tb)
        await self.api.__aexit__(exc_type, exc, tb)

    def settings_env(self, **env: str) -> dict[str, str]:
        return {
            "DISCORD_TOKEN": self.discord.token,
            "GEMINI_API_KEY": "test-key",
            "GEMINI_BASE_URL": self.api.base_url,
            "BANANA_DATA_DIR": str(self.data_dir),
            "BANANA_HTTP_VERSION": "2-prior",  # the fake image API speaks cleartext HTTP/2 by prior knowledge
            "BANANA_STATUS_INTERVAL": "0.1",
            **self.env,
            **env,
        }

    async def start(self, **env: str) -> BananaBot:
        """Start a bot on the shared data dir and wait until it is ready (commands synced, on_ready dispatched)."""
        bot = self.launch(**env)
        await self.wait_ready()
        return bot

    def launch(self, **env: str) -> BananaBot:
        """Start a bot without waiting for it to be ready."""
        settings = load_settings(self.settings_env(**env), env_file=None)
        bot = create_bot(settings, guild_ready_timeout=self.guild_ready_timeout)
        self.ready = asyncio.Event()
        bot.add_listener(_set_on_ready(self.ready), "on_ready")
        self.bot = bot
        self._task = asyncio.create_task(bot.start(self.discord.token), name="bot")
        return bot

    async def wait_ready(self, timeout: float = 10) -> None:  # noqa: ASYNC109
        """Until the launched bot's on_ready is dispatched; raises its start-up error if it stopped instead."""
        assert self._task is not None, "no bot launched"
        waiter = asyncio.create_task(self.ready.wait())
        done, _ = await asyncio.wait({waiter, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            if self._task in done:
                self._task.result()  # raises the start-up error
        assert waiter in done, f"the bot did not become ready within {timeout:g} s"

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, 10)
        self.bot, self._task = None, None

    async def restart(self, **env: str) -> BananaBot:
        await self.stop()
        return await self.start(**env)

    # --- doing things as a member ------------------------------------------------------------------
    async def imagine(
        self,
        user: FakeUser,
        prompt: str,
        *,
        channel_id: int | None = None,
        attachments: dict[str, tuple[str, bytes, str]] | None = None,
        locale: str = "en-US",
        **options: object,
    ) -> FakeInteraction:
        return await self.discord.slash(
            self.guild.id,
            channel_id or self.guild.channel_id,
            user,
            "imagine",
            {"prompt": prompt, **options},
            attachments=attachments,
            locale=locale,
        )

    async def wait_result(self, inter: FakeInteraction, timeout: float = RESULT_TIMEOUT) -> FakeMessage:  # noqa: ASYNC109
        """The interaction's response once it carries the image (and its thread, when it gets one, is open)."""
        message = await self.discord.wait_for_message(
            lambda m: m.interaction_id == inter.id and has_image(m) and not m.deleted, timeout=timeout
        )
        channel = self.discord.channels.get(message.channel_id)
        guild = self.discord.guild_of(message.channel_id)
        if channel is not None and channel.type == 0 and guild is not None and guild.bot_installed:
            # A text channel the bot is in: a thread follows.
            await self.discord.wait_for_message(lambda m: m.channel_id == message.id, timeout=timeout)
        return message

    async def wait_reply(self, to_message: int, timeout: float = RESULT_TIMEOUT) -> FakeMessage:  # noqa: ASYNC109
        """The bot's message (with an image) that replies to `to_message`."""
        return await self.discord.wait_for_message(
            lambda m: (
                m.author_id == self.discord.bot_user_id
                and has_image(m)
                and (m.message_reference or {}).get("message_id") == str(to_message)
            ),
            timeout=timeout,
        )

    async def wait_ephemeral(self, inter: FakeInteraction, timeout: float = RESULT_TIMEOUT) -> FakeMessage:  # noqa: ASYNC109
        return await inter.wait_followup(timeout=timeout, predicate=lambda m: m.ephemeral)

    def gemini_requests(self) -> list[Any]:
        return [r for r in self.api.requests if r.path.endswith((":generateContent", ":streamGenerateContent"))]

    def sent_texts(self, request_index: int = -1) -> list[str]:
        """The user turns' words in one request to the image API, oldest first."""
        contents = self.gemini_requests()[request_index].json["contents"]
        return [p["text"] for c in contents if c["role"] == "user" for p in c["parts"] if "text" in p]

    def dump_calls(self) -> str:
        return "\n".join(f"{c.method} {c.path} {c.status} {json.dumps(c.json)[:200]}" for c in self.discord.calls)


def _set_on_ready(event: asyncio.Event) -> Any:
    async def on_ready() -> None:
        event.set()

    return on_ready
