"""The Discord bot end to end: the real bot (real discord.py) against the fake Discord and the fake image API.

    .venv/bin/python -m bench.bench_bot                        # ~1 minute; prints the table (the bot on SQLite)
    .venv/bin/python -m bench.bench_bot --backend postgresql   # the bot on a throwaway PostgreSQL (tests/postgres.py)
    .venv/bin/python -m bench.bench_bot --slow-callbacks 15    # + the bot loop's callbacks over 15 ms, and its GCs

Three processes, so that no fake competes with the bot for its event loop or its GIL:
  * the bot (``create_bot``, unchanged) in a worker process, pointed at the fake Discord the way the fake does
    it in process (discord.py's REST base and gateway URL), with a task in its loop that sleeps 10 ms at a time
    and records how late it wakes, for the whole run;
  * the fake Gemini API in its own process at a fixed latency with realistic PNGs (as in bench_core);
  * the fake Discord (aiohttp) in this process, which also plays the members and records when every callback
    and message arrives. The three still share the machine's cores: the CPU of each is printed per phase.

Phases (all times from this process's monotonic clock, which on Linux is the bot's too):
  [2a] 1K jobs one at a time (nothing queued or competing): overhead per job, and the lone job's end-to-end
       time and provider time, the units of [1]'s ideal.
  [1]  Burst: 200 /imagine interactions from 20 guilds (10 members each) dispatched at once, 1K, caps
       global 16, per guild 2, per member 1. Time to deferral and completion against the ideal the caps allow,
       the bot's event-loop lag (max, and the worst wake-ups split into the loop's CPU, waiting for a core and
       waiting for the GIL). In each of `--rounds` rounds the same burst also goes to a bare discord.py process
       (an app command tree whose /imagine only defers) on the same fake Discord, the order alternating, so
       the bot's deferral is compared with what discord.py itself does on this machine at that moment.
  [2b] 4K jobs one at a time: overhead per job (a 23.7 MB PNG is over Discord's 10 MiB limit, so the bot
       re-encodes it to JPEG, off the loop; that is part of the overhead).
  [3]  Event-loop lag while a batch of 4K jobs (8 at once, 8 guilds) is handled.
Definitions are printed with the table and stated in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.bench_core import ROOT, Control, FakeServer
from tests.fake_discord import FakeDiscord, FakeGuild, FakeInteraction, FakeUser, RecordedCall

GUILDS, MEMBERS = 20, 10
CAPS = {"BANANA_MAX_CONCURRENT": "16", "BANANA_GUILD_CONCURRENT": "2", "BANANA_USER_CONCURRENT": "1"}
TARGETS = {
    "defer_p99_ms": 500.0,
    "defer_vs_bare": 2.0,  # the burst's deferral p99 over bare discord.py's on the same burst, same run
    "lag_max_ms": 50.0,  # the bot's event-loop lag during the burst
    "overhead_1k_p50_ms": 50.0,
    "overhead_4k_p50_ms": 300.0,
    "lag_p99_ms": 50.0,
    # Admission and claim transactions in the bot during the burst (its banana_*_seconds histograms), ms.
    "transaction_p50_ms": 5.0,
    "transaction_p99_ms": 25.0,
}
#: The bot's histograms of its admission and claim transactions (bot/observability/metrics.py).
TRANSACTIONS = {"admission": "banana_admission_seconds", "claim": "banana_claim_seconds"}
IDEAL_RATIO = 1.10
LAG_SLEEP = 0.010
RESULT_PREFIX = "BENCH-BOT-RESULT "
READY_LINE = "BENCH-BOT-READY"
SLOW_CALLBACKS_ENV = "BENCH_BOT_SLOW_CALLBACKS_MS"


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 200 values is the 198th smallest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# ---- the bot's process ----------------------------------------------------------------------------------


def point_at_fake(discord_url: str) -> None:
    """What FakeDiscord.__aenter__ does in process: discord.py reads both at request / connect time."""
    import discord.gateway
    import discord.http
    import yarl

    discord.http.Route.BASE = f"{discord_url}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"{discord_url.replace('http', 'ws', 1)}/gateway/")


def run_delay_ms() -> float:
    """How long this thread has waited, runnable, for a core (Linux's schedstat), ms; 0 where unknown."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as stat:
            return int(stat.read().split()[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


async def run_sampling_lag(client: Any, token: str) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Run `client` until SIGTERM, sleeping LAG_SLEEP at a time in its loop and noting how late each wake-up is,
    and, per wake-up, how much of the time since the last one the loop's thread ran (CPU ms) and waited for a
    core (ms): the rest of a late wake-up is waiting for the GIL (another thread of the process had it)."""
    samples: list[tuple[float, float]] = []  # (monotonic time at wake-up, ms late)
    split: list[tuple[float, float]] = []  # (CPU ms, waiting for a core ms) since the previous wake-up
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
    task = asyncio.create_task(client.start(token), name="bot")
    # Only with --slow-callbacks: reading schedstat is a system call that lets go of the GIL, which the loop's
    # thread may then wait for (py-spy put ~6% of the loop's samples there), so plain runs don't.
    splitting = bool(os.environ.get(SLOW_CALLBACKS_ENV))
    cpu, waited = time.thread_time(), run_delay_ms()
    while not stop.is_set() and not task.done():
        start = time.perf_counter()
        await asyncio.sleep(LAG_SLEEP)
        samples.append((time.monotonic(), (time.perf_counter() - start - LAG_SLEEP) * 1000))
        if splitting:
            now_cpu, now_waited = time.thread_time(), run_delay_ms()
            split.append(((now_cpu - cpu) * 1000, now_waited - waited))
            cpu, waited = now_cpu, now_waited
        else:
            split.append((0.0, 0.0))
    await client.close()
    await task
    return samples, split


def record_slow_callbacks(threshold_ms: float) -> list[tuple[float, float, str]]:
    """Time every callback the event loop runs (asyncio.Handle._run); note those over `threshold_ms` as
    (monotonic time at their end, ms, what ran: the loop thread's CPU ms in it, and for a task's step, its
    coroutine and where it stopped next).
    These are the longest stretches the loop is kept from anything else; for --slow-callbacks."""
    slow: list[tuple[float, float, str]] = []
    original = asyncio.events.Handle._run

    def timed(handle: asyncio.events.Handle) -> None:
        start, cpu = time.perf_counter(), time.thread_time()
        original(handle)
        took = (time.perf_counter() - start) * 1000
        if took >= threshold_ms:
            # Wall time beyond the thread's CPU time is time the loop's thread waited: for the GIL, or for a core.
            cpu_ms = (time.thread_time() - cpu) * 1000
            slow.append((time.monotonic(), took, f"[cpu {cpu_ms:.0f}] {describe_handle(handle)}"))

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]
    started: list[float] = [0.0]

    def collected(phase: str, info: dict[str, int]) -> None:
        # The garbage collector runs inside whatever callback allocates at that moment: each full collection
        # is listed as if it were a callback of its own (it is in the callback's time too).
        if phase == "start":
            started[0] = time.perf_counter()
        elif (took := (time.perf_counter() - started[0]) * 1000) >= threshold_ms or info["generation"] == 2:
            what = f"garbage collection, generation {info['generation']} ({info['collected']} freed)"
            slow.append((time.monotonic(), took, what))

    gc.callbacks.append(collected)
    return slow


def describe_handle(handle: asyncio.events.Handle) -> str:
    callback = getattr(handle, "_callback", None)
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        frames = []
        while coro is not None and (frame := getattr(coro, "cr_frame", None)) is not None:
            frames.append(f"{frame.f_code.co_qualname} ({Path(frame.f_code.co_filename).name}:{frame.f_lineno})")
            coro = getattr(coro, "cr_await", None)
        return f"task {task.get_name()}: " + (" > ".join(frames[-4:]) if frames else "finished")
    return repr(handle)[:200]


def bot_worker(discord_url: str, env: dict[str, str]) -> None:
    """Run the bot against the fake Discord at `discord_url` until SIGTERM; print its loop-lag samples."""
    from bot.client import create_bot
    from bot.config import load_settings
    from bot.observability.logs import configure_logging

    configure_logging("WARNING")  # to the bot's log file: what went wrong, if anything did
    point_at_fake(discord_url)

    async def run() -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        bot = create_bot(
            load_settings(env, env_file=None), guild_ready_timeout=0.05, freeze_gc=True
        )  # as banana-bot run

        async def on_ready() -> None:
            # Members may only start once on_ready has run: the bot resumes interrupted jobs there, and would
            # take a job that arrived between READY and on_ready for one (see the README).
            print(READY_LINE, flush=True)

        bot.add_listener(on_ready, "on_ready")
        return await run_sampling_lag(bot, env["DISCORD_TOKEN"])

    threshold = float(os.environ.get(SLOW_CALLBACKS_ENV) or 0)
    slow = record_slow_callbacks(threshold) if threshold else []
    samples, split = asyncio.run(run())
    print(RESULT_PREFIX + json.dumps({"lag": samples, "split": split, "slow": slow}), flush=True)


def bare_worker(discord_url: str, env: dict[str, str]) -> None:
    """The baseline: bare discord.py, a client with an app command tree whose /imagine only defers ("thinking"),
    against the same fake Discord, until SIGTERM; prints its loop-lag samples as bot_worker does."""
    import discord
    from discord import app_commands

    point_at_fake(discord_url)

    class Bare(discord.Client):
        def __init__(self) -> None:
            super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
            self.tree = app_commands.CommandTree(self)

        async def setup_hook(self) -> None:
            await self.tree.sync()

        async def on_ready(self) -> None:
            print(READY_LINE, flush=True)

    async def run() -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        client = Bare()

        # The options the members send; nothing but the deferral happens.
        @client.tree.command(name="imagine", description="Defer, nothing else (the benchmark's baseline).")
        async def imagine(
            interaction: discord.Interaction,
            prompt: str,
            aspect_ratio: str | None = None,
            resolution: str | None = None,
        ) -> None:
            await interaction.response.defer(thinking=True)

        return await run_sampling_lag(client, env["DISCORD_TOKEN"])

    samples, split = asyncio.run(run())
    print(RESULT_PREFIX + json.dumps({"lag": samples, "split": split}), flush=True)


def dump_tasks() -> None:
    """SIGUSR1: every task's stack to stderr (the bot's log), to see what a stalled run waits for."""
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()}", file=sys.stderr)
        task.print_stack(limit=12, file=sys.stderr)
    sys.stderr.flush()


@dataclass
class BotProcess:
    proc: asyncio.subprocess.Process
    log: Path
    #: With --slow-callbacks: the loop's callbacks that ran longer than the threshold (time at end, ms, what).
    slow: list[tuple[float, float, str]] = field(default_factory=list)
    #: Per loop-lag sample (by its time): the loop thread's CPU ms and ms waiting for a core since the last one.
    split: dict[float, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    async def start(cls, discord_url: str, env: dict[str, str], log: Path, *, bare: bool = False) -> BotProcess:
        worker = "--bare-worker" if bare else "--bot-worker"
        cmd = [sys.executable, "-m", "bench.bench_bot", worker, discord_url, json.dumps(env)]
        with log.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=stderr)
        return cls(proc, log)

    async def ready(self, timeout: float = 30) -> None:  # noqa: ASYNC109
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while (line := await self.proc.stdout.readline()) and line.decode().strip() != READY_LINE:
                pass
        if not line:
            raise RuntimeError("the bot process exited before it was ready:\n" + self.log.read_text()[-3000:])

    async def stop(self) -> list[tuple[float, float]]:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(self.proc.communicate(), 30)
        for line in out.decode().splitlines():
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX) :])
                self.slow = [(t, ms, what) for t, ms, what in result.get("slow", [])]
                self.split = {
                    t: (cpu, core) for (t, _), (cpu, core) in zip(result["lag"], result["split"], strict=True)
                }
                return [(t, lag) for t, lag in result["lag"]]
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the bot process exited {self.proc.returncode} without results:\n{tail}")


# ---- this process: the fake Discord and the members ---------------------------------------------------


class RecordingCalls(list[RecordedCall]):
    """The fake's list of REST calls, noting when each image message was stored (the fake appends a call
    once it has read the whole upload and answered it), so no waiter has to rescan the list."""

    def __init__(self) -> None:
        super().__init__()
        self.posted: dict[str, float] = {}  # interaction token -> when its image message was stored
        #: Results posted as a channel message (how a job admitted by *another* process is shown), by prompt. The
        #: bot has one process here, so each is a job whose own presenter the runner let go of (see the README).
        self.in_channel: dict[str, float] = {}
        self.changed = asyncio.Event()

    def append(self, call: RecordedCall) -> None:
        super().append(call)
        # Images reach the member through the interaction's webhook (the deferred original or a follow-up).
        # A status edit carrying a draft (live previews) is not the result.
        if not is_result_upload(call) or call.status != 200:
            return
        if call.path.startswith("/webhooks/"):
            self.posted.setdefault(call.path.split("/")[3], time.monotonic())
            self.changed.set()
        elif call.path.startswith("/channels/") and isinstance(call.json, dict):
            embeds = call.json.get("embeds") or [{}]
            self.in_channel.setdefault(str(embeds[0].get("description")), time.monotonic())
            self.changed.set()


@dataclass
class Job:
    inter: FakeInteraction
    prompt: str
    dispatched_wall: float  # time.time() at dispatch, to place the bot's own (unix) timestamps
    posted: float = 0.0  # monotonic
    queue_ms: float = 0.0
    provider_ms: float = 0.0
    intake_ms: float = 0.0  # dispatch -> job created (deferral, admission)
    in_slot_ms: float = 0.0  # started -> finished, less the provider: building the request, storing, logging
    telling_ms: float = 0.0  # finished -> image stored at the fake Discord: fitting the upload, posting
    started_s: float = 0.0
    in_channel: bool = False  # its result came as a channel message, not as the interaction's reply
    PARTS = ("e2e_ms", "provider_ms", "queue_ms", "intake_ms", "in_slot_ms", "telling_ms")

    @property
    def e2e_ms(self) -> float:
        return (self.posted - self.inter.dispatched_at) * 1000

    @property
    def overhead_ms(self) -> float:
        return self.e2e_ms - self.queue_ms - self.provider_ms


@dataclass
class Cpu:
    """CPU seconds of each process (and the bot's event-loop thread) over one phase."""

    wall: float = 0.0
    bot: float = 0.0
    bot_loop: float = 0.0
    discord: float = 0.0
    api: float = 0.0

    def text(self) -> str:
        return (
            f"cpu s over {self.wall:.1f} s: bot {self.bot:.2f} (its event-loop thread {self.bot_loop:.2f}), "
            f"fake Discord + members {self.discord:.2f}, fake API {self.api:.2f}"
        )


@dataclass
class Bench:
    discord: FakeDiscord
    calls: RecordingCalls
    bot_pid: int
    api_pid: int
    guilds: list[tuple[FakeGuild, list[FakeUser]]]
    db_target: Path | str  # the bot's SQLite file or PostgreSQL URL
    tmp: Path
    metrics_url: str  # the bot's /metrics
    jobs: list[Job] = field(default_factory=list)
    _serial: int = 0

    async def imagine(self, guild: FakeGuild, member: FakeUser, size: str) -> Job:
        self._serial += 1
        prompt = f"bench {size} {self._serial}"  # unique: the job's row is found by its prompt
        wall = time.time()
        options = {"prompt": prompt, "resolution": size, "aspect_ratio": "16:9"}
        inter = await self.discord.slash(guild.id, guild.channel_id, member, "imagine", options)
        job = Job(inter, prompt, wall - (time.monotonic() - inter.dispatched_at))
        self.jobs.append(job)
        return job

    async def posted(self, jobs: list[Job], timeout: float = 60) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        calls = self.calls
        while missing := [j for j in jobs if j.inter.token not in calls.posted and j.prompt not in calls.in_channel]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} images never arrived")
            self.calls.changed.clear()
            try:
                await asyncio.wait_for(self.calls.changed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                continue
        for job in jobs:
            job.in_channel = job.inter.token not in calls.posted
            job.posted = calls.in_channel[job.prompt] if job.in_channel else calls.posted[job.inter.token]

    async def one_at_a_time(self, size: str, count: int) -> list[Job]:
        jobs = []
        for n in range(count):
            guild, members = self.guilds[n % len(self.guilds)]
            job = await self.imagine(guild, members[0], size)
            await self.posted([job])
            jobs.append(job)
        return jobs

    def cpu_mark(self) -> tuple[float, ...]:
        bot = psutil.Process(self.bot_pid)
        times = bot.cpu_times()
        loop = next((t.user_time + t.system_time for t in bot.threads() if t.id == self.bot_pid), 0.0)
        api = psutil.Process(self.api_pid).cpu_times()
        return (time.monotonic(), times.user + times.system, loop, time.process_time(), api.user + api.system)

    @staticmethod
    def cpu_since(mark: tuple[float, ...], now: tuple[float, ...]) -> Cpu:
        return Cpu(*(b - a for a, b in zip(mark, now, strict=True)))

    async def read_log(self) -> None:
        """Each job's queue wait, provider time and the bot's own timestamps from the bot's database (SQLite or
        PostgreSQL), read once the bot has stopped."""
        from storage.db import Database

        async with await Database.open(self.db_target) as db:
            rows = await db.fetchall(
                "SELECT j.request_json, j.created_at, j.queue_ms, j.started_at, j.finished_at, g.total_ms"
                " FROM jobs j JOIN generations g ON g.id = j.generation_id"
            )
        by_prompt = {json.loads(row[0])["prompt"]: tuple(row[1:]) for row in rows}
        for job in self.jobs:
            created, queue_ms, started, finished, total_ms = by_prompt[job.prompt]
            job.queue_ms, job.provider_ms = queue_ms or 0.0, total_ms
            job.intake_ms = (created - job.dispatched_wall) * 1000
            job.in_slot_ms = (finished - started) * 1000 - total_ms
            posted_wall = job.dispatched_wall + (job.posted - job.inter.dispatched_at)
            job.telling_ms = (posted_wall - finished) * 1000
            job.started_s = started - self.jobs[0].dispatched_wall

    def write_csv(self, path: str, phases: dict[str, Phase]) -> None:
        """One row per job (ms; started_s from the first job's dispatch), to see where a phase's time went."""
        columns = ["phase", "prompt", "started_s", "defer_ms", *Job.PARTS, "overhead_ms"]
        with open(path, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(columns)
            for name, phase in phases.items():
                for job in phase.jobs:
                    defer = (job.inter.deferred_at or 0.0) * 1000
                    values = [getattr(job, c) for c in columns[4:]]
                    writer.writerow(
                        [name, job.prompt, f"{job.started_s:.3f}", f"{defer:.1f}", *(f"{v:.1f}" for v in values)]
                    )


async def run_bench(args: argparse.Namespace, server: FakeServer, tmp: Path, database_url: str | None) -> list[str]:
    """`database_url`: the bot's PostgreSQL database; None for SQLite (a file in the bot's data folder)."""
    data_dir = tmp / "data"
    async with FakeDiscord() as discord:
        calls = RecordingCalls()
        discord.calls = calls
        guilds = []
        for g in range(GUILDS):
            guild = discord.add_guild(f"guild {g}")
            guilds.append((guild, [guild.add_member(f"g{g}m{m}") for m in range(MEMBERS)]))
        env = {
            "DISCORD_TOKEN": discord.token,
            "GEMINI_API_KEY": "bench",
            "GEMINI_BASE_URL": server.url,
            "BANANA_DATA_DIR": str(data_dir),
            "BANANA_HTTP_VERSION": "2-prior",
            "BANANA_RETRY_ATTEMPTS": "1",
            "BANANA_USER_DAILY": "0",
            "BANANA_GUILD_DAILY": "0",
            "BANANA_USER_PENDING": "3",
            "BANANA_STATUS_INTERVAL": "3",
            "BANANA_METRICS_PORT": str(metrics_port := free_port()),
            **CAPS,
        }
        if database_url is not None:
            env["BANANA_DATABASE_URL"] = database_url
        bot = await BotProcess.start(discord.url, env, tmp / "bot.log")
        try:
            await bot.ready()
            assert server.proc is not None
            target = database_url or data_dir / "banana.sqlite3"
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            bench = Bench(discord, calls, bot.proc.pid, server.proc.pid, guilds, target, tmp, metrics_url)
            return await measure(bench, args, bot)
        except BaseException:
            if bot.proc.returncode is None:
                bot.proc.send_signal(signal.SIGUSR1)  # every task's stack into its log: what it was waiting for
                await asyncio.sleep(1.0)
            print(
                "the bot's log, last lines:\n" + (tmp / "bot.log").read_text(errors="replace")[-5000:], file=sys.stderr
            )
            raise
        finally:
            if bot.proc.returncode is None:
                bot.proc.send_signal(signal.SIGTERM)
                await bot.proc.communicate()  # not wait(): its lag samples would fill the pipe and block it


@dataclass
class Phase:
    jobs: list[Job]
    cpu: Cpu
    start: float  # monotonic
    calls: Counter[str]  # the bot's REST calls to the fake Discord during the phase, by kind
    #: The bot's admission and claim transactions during the phase: bucket bound (s) -> how many took at most it.
    transactions: dict[str, dict[float, float]] = field(default_factory=dict)

    def lag(self, samples: list[tuple[float, float]]) -> list[float]:
        return [v for t, v in samples if self.start <= t <= self.start + self.cpu.wall]


@dataclass(frozen=True)
class Transactions:
    """How long one kind of transaction took, from the bot's Prometheus histogram (counts per bucket)."""

    buckets: dict[float, float]

    @property
    def count(self) -> int:
        return int(self.buckets.get(math.inf, 0))

    def share_within(self, seconds: float) -> float:
        return self.buckets.get(seconds, 0.0) / self.count if self.count else 0.0

    def bound(self, q: float) -> float:
        """The smallest bucket bound that at least the share `q` of them took at most (s)."""
        return min((le for le, n in self.buckets.items() if self.count and n / self.count >= q), default=math.inf)

    def text(self, name: str) -> str:
        p50_ms, p99_ms = self.bound(0.50) * 1000, self.bound(0.99) * 1000
        ok = p50_ms <= TARGETS["transaction_p50_ms"] and p99_ms <= TARGETS["transaction_p99_ms"]
        return (
            f"{name} transactions in the bot ({self.count}): p50 <= {p50_ms:g} ms, p99 <= {p99_ms:g} ms"
            f" ({self.share_within(0.005):.0%} within 5 ms, {self.share_within(0.025):.0%} within 25 ms;"
            f" targets p50 < {TARGETS['transaction_p50_ms']:g}, p99 < {TARGETS['transaction_p99_ms']:g})  {verdict(ok)}"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def scrape_transactions(url: str) -> dict[str, dict[float, float]]:
    """The bot's admission and claim histograms as they stand: name -> bucket bound -> cumulative count."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(url)).text
    found: dict[str, dict[float, float]] = {name: {} for name in TRANSACTIONS}
    wanted = {metric: name for name, metric in TRANSACTIONS.items()}
    for family in text_string_to_metric_families(text):
        if family.name in wanted:
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    found[wanted[family.name]][float(sample.labels["le"])] = sample.value
    return found


async def run_phase(bench: Bench, work: Coroutine[Any, Any, list[Job]]) -> Phase:
    mark, first_call = bench.cpu_mark(), len(bench.calls)
    jobs = await work
    await bench.posted(jobs)
    cpu = bench.cpu_since(mark, bench.cpu_mark())
    return Phase(jobs, cpu, mark[0], Counter(call_kind(c) for c in bench.calls[first_call:]))


def is_result_upload(call: RecordedCall) -> bool:
    return any(not f.filename.startswith("draft-") for f in call.files or [])


def call_kind(call: RecordedCall) -> str:
    if call.path.startswith("/interactions/"):
        return "callback"
    if call.path.startswith("/webhooks/"):
        if is_result_upload(call):
            return "image"
        return "draft" if call.files else "status"  # status edits of the deferred message, and notices
    return "channel"  # threads, thread hints, status messages in channels


@dataclass
class BareBurst:
    """The baseline's burst: bare discord.py deferring the same 200 interactions."""

    round: int
    defers: list[float]  # ms, dispatch to the deferral arriving
    start: float  # monotonic
    wall: float
    lag: list[tuple[float, float]]  # the bare process's loop-lag samples (its whole life)

    def lag_window(self) -> list[float]:
        return [v for t, v in self.lag if self.start <= t <= self.start + self.wall]


async def bare_burst(bench: Bench, round_: int) -> BareBurst:
    """Start a bare discord.py process on the same fake Discord, send it the burst (the same shape: every
    member of every guild at once), wait for every deferral, stop it. The bot stays connected meanwhile, idle:
    the fake gives each interaction to the newest session, the bare one. The bot's synced commands are put
    back afterwards, since the bare client's sync replaced them."""
    synced = bench.discord.synced_commands
    bench.discord.synced_commands = {}
    log = bench.tmp / f"bare-{round_}.log"
    bare = await BotProcess.start(bench.discord.url, {"DISCORD_TOKEN": bench.discord.token}, log, bare=True)
    try:
        await bare.ready()
        await asyncio.sleep(0.5)  # as the bot's bursts follow its previous phase: nothing else in flight
        options: dict[str, object] = {"prompt": "bench bare", "resolution": "1K", "aspect_ratio": "16:9"}
        start = time.monotonic()
        every = (
            bench.discord.slash(guild.id, guild.channel_id, member, "imagine", options)
            for guild, members in bench.guilds
            for member in members
        )
        inters = await asyncio.gather(*every)
        await asyncio.gather(*(inter.wait_callback(30) for inter in inters))
        wall = time.monotonic() - start
    finally:
        lag = await bare.stop()
        bench.discord.synced_commands = synced
    defers = [inter.deferred_at * 1000 for inter in inters if inter.deferred_at is not None]
    assert len(defers) == len(inters)
    return BareBurst(round_, defers, start, wall, lag)


async def measure(bench: Bench, args: argparse.Namespace, bot: BotProcess) -> list[str]:
    # Warm-up, not counted: the bot's first job opens its HTTP/2 connection to the fake API, and the first
    # 4K job pays for Pillow's first JPEG encoder and the fresh memory of a 23 MB image.
    await bench.one_at_a_time("1K", 1)
    await bench.one_at_a_time("4K", 1)

    lone = await run_phase(bench, bench.one_at_a_time("1K", args.overhead_jobs))

    async def burst_jobs() -> list[Job]:
        # Every member of every guild at once, as fast as the fake can dispatch.
        every = (bench.imagine(guild, member, "1K") for guild, members in bench.guilds for member in members)
        return list(await asyncio.gather(*every))

    # The burst, and the bare discord.py baseline on the same burst, in alternating order round by round.
    bursts: list[Phase] = []
    bares: list[BareBurst] = []
    for round_ in range(args.rounds):
        for who in ("bare", "bot") if round_ % 2 == 0 else ("bot", "bare"):
            if who == "bare":
                bares.append(await bare_burst(bench, round_))
                continue
            spy = None
            if args.py_spy and args.py_spy_during == "burst" and not bursts:
                spy = await start_py_spy(args.py_spy, bot.proc.pid, gil=args.py_spy_gil)
            before = await scrape_transactions(bench.metrics_url)
            bursts.append(await run_phase(bench, burst_jobs()))
            after = await scrape_transactions(bench.metrics_url)
            bursts[-1].transactions = {
                name: {le: after[name][le] - before[name].get(le, 0.0) for le in after[name]} for name in after
            }
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its profile when interrupted
                await spy.wait()
            await asyncio.sleep(1.0)  # the last status edits and the queue's look settle before what follows

    lone_4k = await run_phase(bench, bench.one_at_a_time("4K", args.overhead_jobs))

    async def batch_jobs() -> list[Job]:
        # One member in each of `batch_4k` guilds: within every cap, so all run at once.
        return list(await asyncio.gather(*(bench.imagine(g, m[1], "4K") for g, m in bench.guilds[: args.batch_4k])))

    spy = None
    if args.py_spy and args.py_spy_during == "batch":
        spy = await start_py_spy(args.py_spy, bot.proc.pid, gil=args.py_spy_gil)
    batch = await run_phase(bench, batch_jobs())
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        await spy.wait()

    lag = await bot.stop()
    await bench.read_log()
    if args.jobs_csv:
        phases = {"1K one at a time": lone, **{f"burst {n + 1}": b for n, b in enumerate(bursts)}}
        bench.write_csv(args.jobs_csv, {**phases, "4K one at a time": lone_4k, "4K batch": batch})
    return report(lone, bursts, bares, lone_4k, batch, lag, bot.slow, bot.split)


def wake_split(split: dict[float, tuple[float, float]], t: float, late: float) -> str:
    cpu, core = split.get(t, (0.0, 0.0))
    return f"{cpu:.0f}/{core:.0f}/{max(0.0, LAG_SLEEP * 1000 + late - cpu - core):.0f}"


def spread(values: list[float], digits: int = 0) -> str:
    return f"p50 {pct(values, 50):.{digits}f}, p99 {pct(values, 99):.{digits}f}, max {max(values):.{digits}f}"


def report(
    lone: Phase,
    bursts: list[Phase],
    bares: list[BareBurst],
    lone_4k: Phase,
    batch: Phase,
    lag: list[tuple[float, float]],
    slow: list[tuple[float, float, str]],
    split: dict[float, tuple[float, float]],
) -> list[str]:
    lines = []

    def calls_per_job(phase: Phase) -> str:
        n = len(phase.jobs)
        return ", ".join(f"{kind} {count / n:.1f}" for kind, count in sorted(phase.calls.items()))

    def overhead_lines(phase: Phase, size: str) -> None:
        values = [j.overhead_ms for j in phase.jobs]
        target = TARGETS[f"overhead_{size.lower()}_p50_ms"]
        lines.append(
            f"[2] overhead per job at {size} ({len(values)} jobs one at a time) ms: {spread(values)}"
            f"  (target p50 < {target:.0f})  {verdict(pct(values, 50) < target)}"
        )
        m = {name: statistics.median(getattr(j, name) for j in phase.jobs) for name in Job.PARTS}
        lines.append(
            f"    medians ms: end to end {m['e2e_ms']:.0f} = provider {m['provider_ms']:.0f} + queue"
            f" {m['queue_ms']:.1f} + overhead; overhead = intake {m['intake_ms']:.1f} + in slot {m['in_slot_ms']:.1f}"
            f" + telling {m['telling_ms']:.1f}"
        )
        lines.append("    " + phase.cpu.text())

    # [1] the bursts, each beside the bare discord.py baseline of its round
    waves = math.ceil(len(bursts[0].jobs) / int(CAPS["BANANA_MAX_CONCURRENT"]))
    lone_e2e = statistics.median(j.e2e_ms for j in lone.jobs) / 1000
    lone_provider = statistics.median(j.provider_ms for j in lone.jobs) / 1000
    ideal = lone_e2e + (waves - 1) * lone_provider
    lines.append(
        f"[1] burst: {len(bursts[0].jobs)} /imagine from {GUILDS} guilds at once, 1K, caps {caps_text()};"
        f" {len(bursts)} rounds, each also sent to bare discord.py (order alternating: bare first in odd rounds)"
    )
    ratios, lag_maxes, defer_p99s = [], [], []
    for n, (burst, bare) in enumerate(zip(bursts, bares, strict=True), start=1):
        jobs = burst.jobs
        defers = [j.inter.deferred_at * 1000 for j in jobs if j.inter.deferred_at is not None]
        assert len(defers) == len(jobs), "an interaction was never acknowledged"
        first = "bare first" if n % 2 == 1 else "bot first"
        ratio = pct(defers, 99) / pct(bare.defers, 99)
        ratios.append(ratio)
        defer_p99s.append(pct(defers, 99))
        lines.append(f"  round {n} ({first})")
        lines.append(
            f"    time to deferral ms: bot {spread(defers)}; bare discord.py {spread(bare.defers)};"
            f" p99 bot / bare {ratio:.2f} (target <= {TARGETS['defer_vs_bare']:.0f})"
            f"  {verdict(ratio <= TARGETS['defer_vs_bare'])}"
        )
        lines.append(
            f"    time to deferral p99 {pct(defers, 99):.0f} ms (target < {TARGETS['defer_p99_ms']:.0f})"
            f"  {verdict(pct(defers, 99) < TARGETS['defer_p99_ms'])}"
        )
        wall = max(j.posted for j in jobs) - min(j.inter.dispatched_at for j in jobs)
        lines.append(
            f"    completion {wall:.2f} s; ideal = lone job {lone_e2e:.3f} s + ({waves} waves - 1) x lone provider"
            f" time {lone_provider:.3f} s = {ideal:.2f} s; ratio {wall / ideal:.3f} (target <= {IDEAL_RATIO})"
            f"  {verdict(wall / ideal <= IDEAL_RATIO)}"
        )
        window = [(t, v) for t, v in lag if burst.start <= t <= burst.start + burst.cpu.wall]
        lag_max = max(v for _, v in window)
        lag_maxes.append(lag_max)
        lines.append(
            f"    bot loop lag ms {spread([v for _, v in window], 1)} ({len(window)} samples of a"
            f" {LAG_SLEEP * 1000:.0f} ms sleep); max {lag_max:.1f} (target < {TARGETS['lag_max_ms']:.0f})"
            f"  {verdict(lag_max < TARGETS['lag_max_ms'])}"
        )
        worst = sorted(window, key=lambda s: s[1], reverse=True)[:6]
        if any(cpu or core for cpu, core in split.values()):
            lines.append(
                "    worst wake-ups ms (at s into the burst; of the 10 ms sleep + lateness, the loop thread's CPU ms /"
                " waiting for a core / the rest: the GIL, or idle for at most the sleep):"
            )
            lines.append(
                "      " + ", ".join(f"{v:.0f} ({t - burst.start:.2f}; {wake_split(split, t, v)})" for t, v in worst)
            )
        else:
            lines.append(
                "    worst wake-ups ms (at s into the burst; --slow-callbacks splits them):"
                " " + ", ".join(f"{v:.0f} ({t - burst.start:.2f})" for t, v in worst)
            )
        if slow:
            stretches = [(t - burst.start, ms, what) for t, ms, what in slow if 0 <= t - burst.start <= burst.cpu.wall]
            lines.append(
                f"    loop callbacks over {float(os.environ[SLOW_CALLBACKS_ENV]):.0f} ms: {len(stretches)},"
                f" {sum(ms for _, ms, _ in stretches):.0f} ms in all; the longest (ms, at s into the burst):"
            )
            for t, ms, what in sorted(stretches, key=lambda s: s[1], reverse=True)[:8]:
                lines.append(f"      {ms:5.0f} ({t:5.2f}) {what}")
        lines.append(
            f"    bare discord.py loop lag ms {spread(bare.lag_window(), 1)}; all its deferrals in {bare.wall:.2f} s"
        )
        lines.append(
            f"    per job ms: provider {spread([j.provider_ms for j in jobs])}; in slot less the provider"
            f" {spread([j.in_slot_ms for j in jobs])}; intake {spread([j.intake_ms for j in jobs])}"
        )
        lines.append(f"    REST calls to Discord per job: {calls_per_job(burst)}")
        for name, buckets in burst.transactions.items():
            lines.append("    " + Transactions(buckets).text(name))
        if misrouted := sum(j.in_channel for j in jobs):
            lines.append(
                f"    FAULT: {misrouted} of {len(jobs)} results came as channel messages, not as the interaction's"
                " reply (the runner let go of its own presenter; see bench/README.md)"
            )
        lines.append("    " + burst.cpu.text())
    ok_ratio = all(r <= TARGETS["defer_vs_bare"] for r in ratios)
    ok_lag = all(m < TARGETS["lag_max_ms"] for m in lag_maxes)
    lines.append(
        f"  over {len(bursts)} rounds: deferral p99 bot / bare {', '.join(f'{r:.2f}' for r in ratios)}"
        f" (target <= {TARGETS['defer_vs_bare']:.0f} in every round)  {verdict(ok_ratio)};"
        f" bot loop lag max {', '.join(f'{m:.0f}' for m in lag_maxes)} ms"
        f" (target < {TARGETS['lag_max_ms']:.0f} in every round)  {verdict(ok_lag)}"
    )

    # [2] overhead per job, nothing queued or competing
    overhead_lines(lone, "1K")
    overhead_lines(lone_4k, "4K")

    # [3] loop lag during the 4K batch
    batch_lag = batch.lag(lag)
    p99, target = pct(batch_lag, 99), TARGETS["lag_p99_ms"]
    lines.append(
        f"[3] event-loop lag while {len(batch.jobs)} 4K jobs run at once ({len(batch_lag)} samples of a"
        f" {LAG_SLEEP * 1000:.0f} ms sleep over {batch.cpu.wall:.1f} s) ms: {spread(batch_lag, 1)}"
        f"  (target p99 < {target:.0f})  {verdict(p99 < target)}"
    )
    late = sorted(batch_lag, reverse=True)[:5]
    lines.append(f"    worst wake-ups ms: {', '.join(f'{v:.0f}' for v in late)}")
    lines.append("    " + batch.cpu.text())
    return lines


async def start_py_spy(output: str, pid: int, *, gil: bool) -> asyncio.subprocess.Process:
    """py-spy sampling the bot's threads (raw collapsed stacks, one line per stack and thread) during [3];
    `gil`: only the thread that holds the GIL, i.e. who keeps the event loop from running."""
    beside = Path(sys.executable).with_name("py-spy")
    py_spy = beside if beside.exists() else Path(shutil.which("py-spy") or "py-spy")  # the venv's, else PATH's
    cmd = [str(py_spy), "record", "--pid", str(pid), "--rate", "250", "--threads", "--format", "raw"]
    cmd += ["--gil"] if gil else []
    proc = await asyncio.create_subprocess_exec(*cmd, "--output", output, stdout=asyncio.subprocess.DEVNULL)
    await asyncio.sleep(1.0)  # py-spy attaches before the batch starts
    return proc


def caps_text() -> str:
    caps = (CAPS["BANANA_MAX_CONCURRENT"], CAPS["BANANA_GUILD_CONCURRENT"], CAPS["BANANA_USER_CONCURRENT"])
    return "global {}, guild {}, member {}".format(*caps)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--bot-worker"]:
        bot_worker(argv[1], json.loads(argv[2]))
        return
    if argv[:1] == ["--bare-worker"]:
        bare_worker(argv[1], json.loads(argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=1.0, help="the fake API's fixed latency, seconds")
    parser.add_argument("--overhead-jobs", type=int, default=8, help="jobs per size in part 2")
    parser.add_argument("--batch-4k", type=int, default=8, help="4K jobs at once in part 3 (one per guild)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite", help="the bot's database")
    parser.add_argument("--rounds", type=int, default=2, help="bursts of part 1 (each with a bare baseline)")
    parser.add_argument("--py-spy", metavar="FILE", help="record the bot with py-spy (raw stacks)")
    parser.add_argument(
        "--py-spy-during", choices=("batch", "burst"), default="batch", help="with --py-spy: part 3, or the first burst"
    )
    parser.add_argument("--jobs-csv", metavar="FILE", help="write every measured job's timings to FILE")
    parser.add_argument("--py-spy-gil", action="store_true", help="with --py-spy: only the thread holding the GIL")
    parser.add_argument(
        "--slow-callbacks",
        type=float,
        metavar="MS",
        help="time every callback of the bot's event loop and list those over MS in the bursts",
    )
    args = parser.parse_args(argv)
    if args.slow_callbacks:
        os.environ[SLOW_CALLBACKS_ENV] = str(args.slow_callbacks)  # the bot's process inherits it
    began = time.monotonic()
    load = os.getloadavg()
    with contextlib.ExitStack() as stack:
        database_url = None
        if args.backend == "postgresql":
            from tests.postgres import running_postgres

            database_url = stack.enter_context(running_postgres()).fresh_url()
        server = stack.enter_context(FakeServer(args.latency))
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        control = Control(server.url)
        for size in ("1K", "4K"):
            control.generate(size)  # the fake renders each size once, then serves it from its cache
        control.close()
        lines = asyncio.run(run_bench(args, server, Path(tmp), database_url))
    print("Banana Bot end-to-end benchmark: the bot, the fake Discord and the fake Gemini API, each in its own process")
    print(
        f"machine: {os.cpu_count()} cores (shared), {platform.system()} {platform.machine()}, Python"
        f" {platform.python_version()}; load average before {load[0]:.2f}; fake API latency {args.latency:.2f} s,"
        f" realistic PNGs; the bot on {args.backend}"
    )
    for line in lines:
        print(line)
    print(f"total {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
