"""The Discord client and the one place that wires the parts together: start-up, shutdown, command sync,
and picking up jobs a restart interrupted.

Commands live in ``cogs/`` (one cog per feature), the Discord-facing parts they share in ``bot/ui``, jobs in
``bot/jobs`` and generation in ``bot/core``. Build the bot with `create_bot` so tests and embedders get the
same wiring as ``banana-bot run``. Only the entry points import this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import signal
from typing import Any

import discord
import httpx
from discord import app_commands
from discord.ext import commands

from bot.config import Settings
from bot.health import HEARTBEAT_INTERVAL, heartbeat_path, heartbeat_text
from bot.jobs.runner import JobRunner
from bot.observability.metrics import DISCORD_HTTP_LOGGER, Metrics, MetricsServer
from bot.runtime import Runtime
from bot.ui.context import Services
from bot.ui.modlog import ModLog
from bot.ui.resume import Resumer
from bot.ui.translator import CatalogueTranslator
from cogs.characters import Characters
from cogs.conversation import Conversation
from cogs.edit import Edit
from cogs.grid import GridCog
from cogs.imagine import Imagine
from cogs.moderation import Moderation
from cogs.privacy import Privacy
from cogs.results import Results
from cogs.settings import ServerSettings
from cogs.show import Show
from cogs.usage import Usage
from storage.guild_settings import pinned_locales
from storage.jobs import get_state, set_state

log = logging.getLogger(__name__)

#: How often stored images older than BANANA_IMAGE_RETENTION_DAYS are deleted while the bot runs.
RETENTION_INTERVAL = 6 * 3600.0
SYNCED_HASH_KEY = "synced_commands_sha256"
#: Seconds between refreshes of the gateway latency gauges (discord.py measures it once per heartbeat, ~41 s).
METRICS_REFRESH_INTERVAL = 10.0


def shard_latencies(client: discord.Client) -> list[tuple[int, float]]:
    """(shard id, heartbeat latency in seconds) for each shard this client runs."""
    if isinstance(client, discord.AutoShardedClient):
        return list(client.latencies)
    return [(client.shard_id or 0, client.latency)]


def create_bot(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sync_commands: bool = True,
    freeze_gc: bool = False,
    **client_options: Any,
) -> BananaBot:
    """The bot, configured from `settings`.

    `transport` replaces the image APIs' network; `client_options` go to discord.py's Client (tests pass a
    short ``guild_ready_timeout``)."""
    if settings.discord_api_base:
        # Every REST call is built from Route.BASE, so this one line routes them all through the proxy.
        discord.http.Route.BASE = f"{settings.discord_api_base}/api/v10"
    return BananaBot(settings, transport=transport, sync_commands=sync_commands, freeze_gc=freeze_gc, **client_options)


def freeze_long_lived_objects() -> None:
    """Once the bot is up, move everything alive (modules, discord.py's cache, the catalogues, the services)
    out of the garbage collector's sight. A full collection otherwise walks all of it, on the event loop, in
    whichever callback happens to allocate at the time: bench_bot measured 80-90 ms pauses mid-burst, the
    event loop's longest. Objects made later are collected as before."""
    gc.collect()
    gc.freeze()


class BananaBot(commands.AutoShardedBot):
    """Sharded always: without BANANA_SHARD_COUNT discord.py asks Discord how many shards to run (one, for a
    small bot) and runs them all here; with it, this process runs BANANA_SHARD_IDS (default all) of that many."""

    runtime: Runtime
    jobs: JobRunner
    services: Services

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sync_commands: bool = True,
        freeze_gc: bool = False,
        **client_options: Any,
    ) -> None:
        if settings.shard_count is not None:
            client_options.setdefault("shard_count", settings.shard_count)
        if settings.shard_ids is not None:
            client_options.setdefault("shard_ids", list(settings.shard_ids))
        # No privileged intents: slash commands, and replies/mentions carry their own content.
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            help_command=None,
            chunk_guilds_at_startup=False,
            allowed_mentions=discord.AllowedMentions.none(),
            # Nothing reads discord.py's message cache (what the bot needs of a message is in the database), and
            # its 1,000 messages with their buttons were ~40,000 of the ~65,000 objects every full garbage
            # collection walks on the event loop after a burst (bench/README.md).
            max_messages=None,
            **client_options,
        )
        self.settings = settings
        self._transport = transport
        self._sync_commands = sync_commands
        #: Only a process that is the bot (banana-bot run) freezes: tests start many bots in one process, and
        #: frozen objects are never collected.
        self._gc_frozen = not freeze_gc
        self._stopping: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        #: Always collected (it costs next to nothing), served only when BANANA_METRICS_PORT is set.
        self.metrics = Metrics()
        self._metrics_server: MetricsServer | None = None
        self._metrics_refresh: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        if self.settings.metrics_port is not None:
            # First, so a port in use stops the start before anything else is opened.
            self._metrics_server = self.metrics.serve(self.settings.metrics_host, self.settings.metrics_port)
            logging.getLogger(DISCORD_HTTP_LOGGER).addHandler(self.metrics.rate_limits)
            self._metrics_refresh = asyncio.create_task(self._refresh_metrics(), name="metrics")
        self.runtime = await Runtime.open(self.settings, transport=self._transport, metrics=self.metrics)
        self.jobs = JobRunner(
            db=self.runtime.db,
            images=self.runtime.images,
            generation=self.runtime.service,
            limits=self.settings.limits,
            budget=self.settings.context_budget,
            metrics=self.metrics,
            lease=self.settings.job_lease,
            relax=self.settings.relax,
        )
        self.jobs.shard_of = self.shard_of
        self._watch_for_sigterm()
        locales = await pinned_locales(self.runtime.db)
        self.services = Services(
            settings=self.settings,
            db=self.runtime.db,
            images=self.runtime.images,
            jobs=self.jobs,
            default_model=self.runtime.service.providers[0].config.model,
            pinned_locales=locales,
            client=self,
            modlog=ModLog(self.runtime.db, self, locales),
        )
        self._resumer = Resumer(self.services)
        # Claiming starts now: a job admitted by another process, or left by an earlier run, is shown through
        # its channel over REST, which needs no gateway (nor the shard that owns the guild).
        await self.jobs.start(self._resumer.presenter_for)
        await self.tree.set_translator(CatalogueTranslator())
        await self.add_cogs(self.services)
        if self._sync_commands:
            await self.sync_if_changed()
        self._heartbeat = asyncio.create_task(self._beat(), name="heartbeat")
        if self.settings.image_retention_days > 0:
            self._retention = asyncio.create_task(self._enforce_retention(), name="retention")
        log.info("generation service ready: providers %s", ", ".join(self.settings.configured_providers))

    async def add_cogs(self, services: Services) -> None:
        """One cog per feature; a cog that acts on another's behalf is handed that cog here."""
        characters = Characters(self, services)
        settings = ServerSettings(self, services)
        moderation = Moderation(self, services, settings=settings)
        results = Results(self, services, characters=characters, moderation=moderation)
        for cog in (
            Imagine(self, services),
            GridCog(self, services),
            Edit(self, services, results=results),
            characters,
            settings,
            moderation,
            Privacy(self, services),
            Usage(self, services),
            results,
            Show(self, services),
            Conversation(self, services),
        ):
            await self.add_cog(cog)

    async def on_ready(self) -> None:
        await self.write_heartbeat()  # health says so at once, not at the next beat
        if not self._gc_frozen:
            freeze_long_lived_objects()
            self._gc_frozen = True

    async def on_shard_ready(self, shard_id: int) -> None:
        await self.write_heartbeat()

    async def on_shard_disconnect(self, shard_id: int) -> None:
        await self.write_heartbeat()

    def shard_of(self, guild_id: int | None) -> int | None:
        """The shard that receives a guild's events (None for DMs), for log lines."""
        if guild_id is None or not self.shard_count:
            return None
        return (guild_id >> 22) % self.shard_count

    # --- stopping -------------------------------------------------------------------------------------
    def _watch_for_sigterm(self) -> None:
        """SIGTERM (docker stop, systemd, a rolling restart) is a graceful stop, not a kill."""
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals on Windows or off the main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self) -> None:
        if self._stopping is None:
            log.info("SIGTERM: stopping gracefully (up to %g s for running jobs)", self.settings.stop_grace)
            self._stopping = asyncio.create_task(self.stop_gracefully(), name="graceful-stop")

    async def stop_gracefully(self) -> None:
        """Claim nothing more, give running jobs BANANA_STOP_GRACE seconds, hand the rest back to the queue (another
        process or the next start takes them at once), then close the gateway, the HTTP clients and the database."""
        if hasattr(self, "jobs"):
            handed_back = await self.jobs.stop(self.settings.stop_grace)
            if handed_back:
                log.info("handed %d running jobs back to the queue", handed_back)
        await self.close()

    # --- command sync ---------------------------------------------------------------------------------
    async def command_payload(self) -> list[dict[str, Any]]:
        """The global commands as sync sends them, translations included."""
        translator = self.tree.translator
        commands = self.tree.get_commands()
        if translator is None:
            payload = [cmd.to_dict(self.tree) for cmd in commands]
        else:
            payload = [await cmd.get_translated_payload(self.tree, translator) for cmd in commands]
        return sorted(payload, key=lambda c: str(c["name"]))

    async def command_hash(self) -> str:
        payload = await self.command_payload()
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    async def sync_if_changed(self) -> bool:
        """Sync the global commands only when they differ from the last sync (Discord rate-limits syncs)."""
        current = await self.command_hash()
        if await get_state(self.runtime.db, SYNCED_HASH_KEY) == current:
            return False
        await self.sync(guild=None)
        return True

    async def sync(self, guild: int | None) -> list[app_commands.AppCommand]:
        """Push the command tree to Discord: globally, or to one guild (instant, handy while testing)."""
        if guild is None:
            synced = await self.tree.sync()
            await set_state(self.runtime.db, SYNCED_HASH_KEY, await self.command_hash())
        else:
            target = discord.Object(id=guild)
            self.tree.copy_global_to(guild=target)
            synced = await self.tree.sync(guild=target)
        log.info("synced %d commands %s", len(synced), f"to guild {guild}" if guild else "globally")
        return synced

    # --- lifecycle -------------------------------------------------------------------------------------
    async def _beat(self) -> None:
        """Write the heartbeat file now and then, so a supervisor (``banana-bot health``) can tell a live bot
        from a stuck one, and see a shard that lost its connection."""
        while True:
            await self.write_heartbeat()
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def write_heartbeat(self, *, stopped: bool = False) -> None:
        shards: list[tuple[int, bool, float]] = []
        if not self.is_closed():
            for shard_id, latency in shard_latencies(self):
                info = self.get_shard(shard_id)
                shards.append((shard_id, info is not None and not info.is_closed(), latency))
        text = heartbeat_text(shards, stopped=stopped)
        path = heartbeat_path(self.settings)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)  # with PostgreSQL nothing else may have made it yet
            path.write_text(text)

        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            log.warning("can't write the heartbeat file %s: %s", path, exc)

    async def _refresh_metrics(self) -> None:
        """Copy the gateway latencies into the metrics: they live on the event loop, a scrape runs in a thread."""
        while True:
            self.metrics.set_gateway_latencies(shard_latencies(self))
            await asyncio.sleep(METRICS_REFRESH_INTERVAL)

    async def _enforce_retention(self) -> None:
        """Delete stored images past the retention period, now and then (Runtime.open does it at start)."""
        days = self.settings.image_retention_days
        while True:
            await asyncio.sleep(RETENTION_INTERVAL)
            try:
                pruned = await self.runtime.images.prune(days)
            except Exception:
                log.exception("could not prune old images")
                continue
            if pruned:
                log.info("pruned %d images older than %g days", pruned, days)

    async def close(self) -> None:
        if self._heartbeat is not None:
            await self.write_heartbeat(stopped=True)
        for task in (self._heartbeat, self._retention, self._metrics_refresh):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if hasattr(self, "jobs"):
            # Running jobs go back to the queue: another process, or the next start, runs them.
            await self.jobs.aclose()
        if hasattr(self, "services"):
            with contextlib.suppress(TimeoutError):  # log entries are best effort; the bot is closing
                await asyncio.wait_for(self.services.modlog.wait_posted(), 5)
        if not isinstance(self.loop, asyncio.AbstractEventLoop):
            # Never logged in (setup_hook run by hand, as tests and tools do): discord.py 2.7's
            # AutoShardedClient.close() closes everything, then posts to a queue only login creates.
            with contextlib.suppress(AttributeError):
                await super().close()
        else:
            await super().close()
        if hasattr(self, "runtime"):
            await self.runtime.aclose()
        if self._metrics_server is not None:
            logging.getLogger(DISCORD_HTTP_LOGGER).removeHandler(self.metrics.rate_limits)
            server, self._metrics_server = self._metrics_server, None
            await asyncio.to_thread(server.close)  # waits out the server's poll; the loop keeps going
