"""Scale-out: several `banana-bot run` processes sharing one PostgreSQL.

    .venv/bin/python -m bench.bench_scale          # ~3.5 minutes; prints the table

[1] Jobs per second, one process vs two, on this machine. Real `banana-bot run` processes (tests/bot_process.py,
    as tests/test_scale_e2e.py starts them) against the fake Discord (in this process, which also plays the
    members) and the fake Gemini API (its own process, realistic PNGs, small fixed latency). Every job is a
    4K 16:9 image: its 23.7 MB PNG is over a premium-tier-0 guild's 10 MiB upload limit, so the bot re-encodes
    it to JPEG before posting; the caps are high enough that CPU, not the caps or the fake's latency, bounds
    the throughput. Configuration A: one process running both shards (BANANA_SHARD_IDS=0,1); B: two
    processes, one shard each. Each process has one core of its own (taskset: A on core 0, B's on cores 0 and
    1), as a deployment gives each process (container) its share of the machine: what is measured is whether
    a second process with its own core adds its core's worth of jobs, and not whether one process alone can
    already keep more than one core busy (it can: its image thread and its event loop run side by side, so
    unpinned, one process already uses ~1.3 of these 2 cores; --unpinned measures that). The fakes and
    PostgreSQL run on either core. Each round starts from a fresh database, fresh processes and a fresh fake
    Discord; once every shard is READY and a warm-up batch has run, the same burst of jobs from guilds on both
    shards is timed from the first submission to the last result stored at the fake Discord (the whole
    burst's rate) and between the results of the first and the last tenth (the steady rate: every process
    has work, as under a stream of jobs). Rounds alternate (A B B A A B ...), and the median of the steady
    B/A ratios of the pairs (1-2, 3-4, ...) is the result.
[2] Admission and claim latency on PostgreSQL, in two processes (as two bot processes, each its own event loop,
    pool, `Admission` and `JobQueue`): 200 /imagine-like submissions at one instant from 20 guilds (10 members
    each; half the guilds have a budget of their own), each process admitting its shard's guilds through
    `Admission.admit` as the runner does (requests that arrive while an admission transaction is at work go
    together in the next), while the two `JobQueue`s (woken by NOTIFY) claim them and "run" each for a random
    0.2-0.3 s, giving the slot back as the runner does. Timed: each admission (the call to its answer), each
    claim transaction (`claim_jobs`), split into waiting (pool, BEGIN, its locks) and holding them. The
    database starts with a history of done jobs (--history) so that the queries run against a table of
    realistic size. Five bursts (--bursts), each on a fresh database; the verdicts are on the median over them.
[3] Fairness in every burst, from the order the claims took jobs (they are serialised by the jobs lock):
    between two consecutive claims of guild G, at the claims where G had a queued job and was under its guild
    cap, no other guild was served more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from unittest import mock

import httpx
import psutil

from bench.bench_bot import free_port, is_result_upload, pct
from bench.bench_core import ROOT, Control, FakeServer
from bot.core.service import GenerationService
from bot.jobs.admission import Admission
from bot.jobs.limits import QueueLimits
from bot.jobs.queue import JobQueue
from storage.db import Connection, Database, PostgresDatabase
from storage.guild_settings import update_guild_settings
from storage.jobs import Job, JobRequest, insert_job
from storage.queue import Caps, cancel_queued, claim_jobs, finish, give_back_slot
from tests.fake_discord import FakeDiscord, FakeGuild, FakeUser, RecordedCall
from tests.postgres import PostgresServer, running_postgres

# [1]
THROUGHPUT_TARGET = 1.6
SCALE_CAPS = {"BANANA_MAX_CONCURRENT": "8", "BANANA_GUILD_CONCURRENT": "4", "BANANA_USER_CONCURRENT": "1"}
# [2]
ADMIT_P50_MS, ADMIT_P99_MS = 5.0, 25.0
BURST_LIMITS = QueueLimits(
    global_concurrency=16, guild_concurrency=2, user_concurrency=1, user_pending=3, user_daily=50, guild_daily=500
)
#: What one Gemini 3 Pro 1K image costs: the reservation each admitted job writes.
IMAGE_COST = 0.134


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def counter(text: str, name: str, **labels: str) -> float:
    """A sample's value from a Prometheus exposition (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


# ---- [1] throughput, one process vs two ------------------------------------------------------------------


class ResultCalls(list[RecordedCall]):
    """The fake Discord's list of REST calls, noting when each result (found by the prompt in its embed) was
    stored, and how: as the interaction's reply (a webhook) or, when a process that did not receive the
    interaction ran the job, as a message in its channel."""

    def __init__(self) -> None:
        super().__init__()
        self.posted: dict[str, float] = {}  # prompt -> monotonic time its result was stored
        self.route: dict[str, str] = {}
        self.uploads: dict[str, tuple[str, int]] = {}  # prompt -> (file name, bytes)
        self.changed = asyncio.Event()

    def append(self, call: RecordedCall) -> None:
        super().append(call)
        if call.status != 200 or not is_result_upload(call) or not isinstance(call.json, dict):
            return
        embeds = call.json.get("embeds") or [{}]
        prompt = embeds[0].get("description")
        if prompt and prompt not in self.posted:
            self.posted[prompt] = time.monotonic()
            self.route[prompt] = "reply" if call.path.startswith("/webhooks/") else "channel"
            upload = next(f for f in call.files if not f.filename.startswith("draft-"))
            self.uploads[prompt] = (upload.filename, len(upload.data))
            self.changed.set()


@dataclass
class BotProcesses:
    """`banana-bot run` processes (tests/bot_process.py): shard ids -> process."""

    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    async def launch(self, shards: str, env: dict[str, str], log_path: Path, core: int | None = None) -> None:
        port = free_port()
        env = {**env, "BANANA_SHARD_IDS": shards, "BANANA_METRICS_PORT": str(port)}
        pin = ["taskset", "-c", str(core)] if core is not None else []
        with log_path.open("ab") as out:
            self.procs[shards] = await asyncio.create_subprocess_exec(
                *pin, sys.executable, "-m", "tests.bot_process", cwd=ROOT, env=env, stdout=out, stderr=out
            )
        self.ports[shards], self.logs[shards] = port, log_path

    def tails(self) -> str:
        return "\n----\n".join(p.read_text(errors="replace")[-3000:] for p in self.logs.values())

    async def finished_jobs(self) -> dict[str, float]:
        """Each process's count of jobs it ran to 'done' (its Prometheus metrics)."""
        done = {}
        async with httpx.AsyncClient() as client:
            for shards, port in self.ports.items():
                text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
                done[shards] = counter(text, "banana_jobs_finished_total", state="done")
        return done

    def cpu(self) -> dict[str, float]:
        """Each process's CPU seconds, and its event-loop (main) thread's."""
        out = {}
        for shards, proc in self.procs.items():
            process = psutil.Process(proc.pid)
            times = process.cpu_times()
            out[shards] = times.user + times.system
            out[f"{shards} loop"] = next(
                (t.user_time + t.system_time for t in process.threads() if t.id == proc.pid), 0
            )
        return out

    async def stop(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@dataclass
class ThroughputRun:
    config: str  # "A" or "B"
    jobs: int
    wall: float  # first submission -> last result stored at the fake Discord
    cpu: dict[str, float]  # per bot process, fake API, this process (fake Discord + members), other
    per_process: dict[str, float]  # jobs each process ran in the timed burst
    jpeg: int  # results posted as JPEG (re-encoded to fit the upload limit)
    biggest_upload: int
    routes: Counter[str]  # results posted as the interaction's reply, or in its channel by another process
    loops: dict[str, float]  # CPU seconds of each bot process's event-loop thread
    finished: list[float]  # when each result was stored, seconds after the first submission, in order

    @property
    def rate(self) -> float:
        """Over the whole burst: the fake's fixed latency before the first result and the last jobs' tail
        (where a process that is done waits for the other) included."""
        return self.jobs / self.wall

    @property
    def steady_rate(self) -> float:
        """Between the results of the first and the last tenth: the rate the processes keep up while every one
        of them has work, as under a stream of jobs."""
        first, last = len(self.finished) // 10, len(self.finished) - 1 - len(self.finished) // 10
        if last <= first or self.finished[last] <= self.finished[first]:
            return self.rate  # too few jobs to leave any out
        return (last - first) / (self.finished[last] - self.finished[first])


async def throughput_round(
    config: str, server: FakeServer, pg: PostgresServer, args: argparse.Namespace, tmp: Path
) -> ThroughputRun:
    data_dir = tmp / f"data-{config}-{time.monotonic_ns()}"
    data_dir.mkdir()
    url = pg.fresh_url()
    async with FakeDiscord(shards=2) as discord:
        calls = ResultCalls()
        discord.calls = calls
        guilds: list[tuple[FakeGuild, list[FakeUser]]] = []
        per_guild = -(-args.jobs // args.guilds)
        for n in range(args.guilds):
            guild = discord.add_guild(f"scale {n}", premium_tier=0, shard=(n % 2, 2))
            guilds.append((guild, [guild.add_member(f"s{n}m{k}") for k in range(per_guild + 1)]))
        env = {
            "PATH": os.environ.get("PATH", ""),
            "DISCORD_TOKEN": discord.token,
            "DISCORD_API_BASE": discord.url,
            "FAKE_DISCORD_GATEWAY": discord.gateway_url,
            "GEMINI_API_KEY": "bench",
            "GEMINI_BASE_URL": server.url,
            "BANANA_DATA_DIR": str(data_dir),
            "BANANA_DATABASE_URL": url,
            "BANANA_SHARD_COUNT": "2",
            "BANANA_HTTP_VERSION": "2-prior",
            "BANANA_RETRY_ATTEMPTS": "1",
            "BANANA_USER_DAILY": "0",
            "BANANA_GUILD_DAILY": "0",
            "BANANA_USER_PENDING": "3",
            "BANANA_STATUS_INTERVAL": "3",
            **SCALE_CAPS,
        }
        bots = BotProcesses()
        try:
            if config == "A":
                await bots.launch("0,1", env, data_dir / "bot-A.log", core=None if args.unpinned else 0)
            else:
                await bots.launch("0", env, data_dir / "bot-B0.log", core=None if args.unpinned else 0)
                await bots.launch("1", env, data_dir / "bot-B1.log", core=None if args.unpinned else 1)
            try:
                # discord.py waits ~5 s between the IDENTIFYs of two shards in one process.
                await discord.wait_ready(60, sessions=2)
                await asyncio.sleep(1.0)  # on_ready
            except AssertionError as exc:
                raise RuntimeError(f"{exc}\n{bots.tails()}") from None

            serial = 0

            async def burst(count: int, member_index: int) -> list[str]:
                nonlocal serial
                prompts = []
                sends = []
                for k in range(count):
                    guild, members = guilds[k % len(guilds)]
                    serial += 1
                    prompts.append(f"scale {config} {serial}")
                    options = {"prompt": prompts[-1], "resolution": "4K", "aspect_ratio": "16:9"}
                    member = members[member_index + k // len(guilds)]
                    sends.append(discord.slash(guild.id, guild.channel_id, member, "imagine", options))
                await asyncio.gather(*sends)
                return prompts

            async def posted(prompts: list[str], timeout: float) -> None:  # noqa: ASYNC109
                deadline = time.monotonic() + timeout
                while missing := [t for t in prompts if t not in calls.posted]:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{len(missing)} results never arrived\n{bots.tails()}")
                    calls.changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(calls.changed.wait(), 1.0)

            # Warm-up, not timed: a process's first 4K job opens its connection to the fake API, loads
            # Pillow's encoders and touches fresh memory. Two per guild shard, one member each.
            await posted(await burst(args.warmup, per_guild), 120)
            before = await bots.finished_jobs()
            mark = (bots.cpu(), server_cpu(server), time.process_time(), busy_seconds(), postgres_cpu(pg))
            began = time.monotonic()
            prompts = await burst(args.jobs, 0)
            await posted(prompts, 300)
            wall = max(calls.posted[t] for t in prompts) - began
            cpu_after = (bots.cpu(), server_cpu(server), time.process_time(), busy_seconds(), postgres_cpu(pg))
            after = await bots.finished_jobs()
        finally:
            await bots.stop()
        cpu = {f"bot {k}": cpu_after[0][k] - mark[0][k] for k in mark[0] if not k.endswith("loop")}
        cpu |= {
            "fake API": cpu_after[1] - mark[1],
            "fake Discord": cpu_after[2] - mark[2],
            "PostgreSQL": cpu_after[4] - mark[4],
        }
        cpu["other"] = (cpu_after[3] - mark[3]) - sum(cpu.values())
        loops = {k.removesuffix(" loop"): cpu_after[0][k] - mark[0][k] for k in mark[0] if k.endswith("loop")}
        uploads = [calls.uploads[p] for p in prompts]
        routes = Counter(calls.route[p] for p in prompts)
    shutil.rmtree(data_dir, ignore_errors=True)
    return ThroughputRun(
        config,
        len(prompts),
        wall,
        cpu,
        {k: after[k] - before[k] for k in after},
        sum(1 for name, _ in uploads if name.endswith((".jpg", ".jpeg"))),
        max(size for _, size in uploads),
        routes,
        loops,
        sorted(calls.posted[p] - began for p in prompts),
    )


def postgres_cpu(pg: PostgresServer) -> float:
    """CPU seconds of the PostgreSQL server and all its backends so far (those still running)."""
    postmaster = psutil.Process(int((pg.data / "postmaster.pid").read_text().split()[0]))
    total = 0.0
    for process in [postmaster, *postmaster.children()]:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def server_cpu(server: FakeServer) -> float:
    assert server.proc is not None
    times = psutil.Process(server.proc.pid).cpu_times()
    return float(times.user + times.system)


async def throughput(pg: PostgresServer, args: argparse.Namespace, tmp: Path) -> list[ThroughputRun]:
    order = list(args.order) if args.order else [("A", "B", "B", "A")[n % 4] for n in range(args.rounds)]
    runs = []
    with FakeServer(args.latency) as server:
        control = Control(server.url)
        control.generate("4K")  # the fake renders a size once, then serves it from its cache
        control.close()
        for config in order:
            log(f"[1] round {len(runs) + 1}/{len(order)}: configuration {config}")
            run = await throughput_round(config, server, pg, args, tmp)
            log(f"    {run.jobs} jobs in {run.wall:.2f} s = {run.rate:.2f} jobs/s; cpu {fmt_cpu(run.cpu)}")
            runs.append(run)
    return runs


def fmt_cpu(cpu: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())


# ---- [2] admission and claim latency; [3] fairness -----------------------------------------------------

#: When the current task last got its transaction's locks (perf_counter): a claim takes the jobs lock, an
#: admission its guild's and member's locks, once per transaction.
_LOCKED: dict[asyncio.Task[Any] | None, float] = {}


class TimedPostgres(PostgresDatabase):
    """PostgreSQL as the bot opens it, noting when each transaction gets its locks."""

    async def lock(self, tx: Connection, key: int) -> None:
        await super().lock(tx, key)
        _LOCKED[asyncio.current_task()] = time.perf_counter()

    @contextlib.asynccontextmanager
    async def transaction(
        self, *, locks: Sequence[tuple[int, int]] = (), generic_plans: bool = False
    ) -> AsyncIterator[Connection]:
        async with super().transaction(locks=locks, generic_plans=generic_plans) as tx:
            if locks:
                _LOCKED[asyncio.current_task()] = time.perf_counter()
            yield tx


class FixedPriceAdmission(Admission):
    """The bot's admission with the price table replaced by one price (no provider catalogue to build), noting
    each batch's size and when it got its locks."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.locked_at: dict[str, float] = {}  # job id -> when its batch got its locks
        self.batches: list[int] = []

    async def _admit_together(self, batch: list[Any]) -> list[Any]:
        outcomes = await super()._admit_together(batch)
        locked = _LOCKED.pop(asyncio.current_task(), time.perf_counter())
        self.batches.append(len(batch))
        for request in batch:
            for job in request.jobs:
                self.locked_at[job.id] = locked
        return outcomes

    def estimate_cost(self, model: str | None, size: str, images: int, *, speed: str = "fast") -> float:
        return IMAGE_COST * images


@dataclass
class Timed:
    start: float
    locked: float
    end: float

    @property
    def total_ms(self) -> float:
        return (self.end - self.start) * 1000

    @property
    def wait_ms(self) -> float:
        return (self.locked - self.start) * 1000

    @property
    def held_ms(self) -> float:
        return (self.end - self.locked) * 1000


@dataclass
class Claim(Timed):
    owner: str = ""
    taken: list[tuple[str, int]] = field(default_factory=list)  # (job id, lane) in the order picked


@dataclass
class BurstResult:
    admissions: list[Timed]
    admitted: dict[str, tuple[float, int]]  # job id -> (when its admission got the lock, lane)
    claims: list[Claim]
    released: dict[str, float]  # job id -> when its slot was given back (committed)
    wall: float
    history: int
    violations: list[str]
    per_owner: Counter[str]
    #: Admissions one at a time before the burst: wall and this process's CPU per admission (ms), the floor
    #: under what a burst in one event loop can do.
    alone_wall_ms: list[float] = field(default_factory=list)
    alone_cpu_ms: float = 0.0
    #: The sizes of the burst's admission transactions (requests admitted together), both processes.
    batches: list[int] = field(default_factory=list)


async def seed_history(db: Database, count: int, guilds: list[int], seed: int = 7) -> None:
    """`count` done jobs over the last 30 days, from the burst's guilds and 200 others, 2,000 members."""
    if count <= 0:
        return
    rng = random.Random(seed)
    others = [10_000_000 + n for n in range(200)]
    now = time.time()
    batch = 2000
    for start in range(0, count, batch):
        async with db.transaction() as tx:
            for _ in range(min(batch, count - start)):
                guild = rng.choice(guilds) if rng.random() < 0.3 else rng.choice(others)
                created = now - rng.uniform(0, 30 * 86400)
                job = Job(
                    created_at=created,
                    guild_id=guild,
                    channel_id=guild + 1,
                    user_id=20_000_000 + rng.randrange(2000),
                    kind="imagine",
                    status="done",
                    request=JobRequest(prompt="history", size="1K"),
                    started_at=created + 0.1,
                    finished_at=created + 20,
                    attempts_started=1,
                )
                await insert_job(tx, job)
    # A table of this size in use has its statistics (autovacuum's ANALYZE); a freshly filled one has none.
    await db.execute("ANALYZE jobs")


@dataclass
class SideResult:
    """What one process of the burst measured (perf_counter is CLOCK_MONOTONIC: one clock for both)."""

    admissions: list[Timed]
    admitted: dict[str, tuple[float, int]]
    claims: list[Claim]
    released: dict[str, float]
    batches: list[int]
    alone_wall_ms: list[float]
    alone_cpu_ms: float
    all_done: float  # when this process saw every job of the burst done


def burst(url: str, args: argparse.Namespace) -> BurstResult:
    """Two processes, as two bot processes would be: each with its own event loop, pool, admission and job
    queue, admitting the submissions of its shard's guilds (one guild in two) and claiming from the one queue."""
    guilds = [1_000_000 + g for g in range(args.burst_guilds)]
    members = {g: [g * 100 + m for m in range(args.burst_jobs // len(guilds))] for g in guilds}

    async def seed() -> None:
        db = await Database.open(url)
        try:
            await seed_history(db, args.history, guilds)
            # Half the guilds (on both shards) have a budget of their own, as budgeted servers would: admission
            # reads it with its counts and sums what their admitted jobs reserve.
            for guild in guilds[0::4] + guilds[1::4]:
                await update_guild_settings(db, guild, updated_by=1, monthly_budget_usd=50.0)
        finally:
            await db.close()

    log(f"[2] seeding {args.history:,} done jobs")
    asyncio.run(seed())
    order = [(g, m) for g in guilds for m in members[g]]
    random.Random(3).shuffle(order)
    # Each interaction's job is made before the burst: a handler makes its own before it asks for admission.
    jobs = [
        Job(guild_id=g, channel_id=g + 1, user_id=m, kind="imagine", request=JobRequest(prompt=f"burst {n}", size="1K"))
        for n, (g, m) in enumerate(order)
    ]
    ids = [job.id for job in jobs]
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for side in (0, 1):
        ours, theirs = context.Pipe()
        side_jobs = [job for job in jobs if job.guild_id is not None and job.guild_id % 2 == side]
        process = context.Process(target=_burst_side_process, args=(url, side, side_jobs, ids, theirs))
        process.start()
        pipes.append(ours)
        processes.append(process)
    try:
        for pipe in pipes:
            if not pipe.poll(120) or pipe.recv() != "ready":
                raise RuntimeError("a burst process did not get ready")
        log(f"[2] burst of {len(jobs)} submissions from {len(guilds)} guilds, two processes")
        go_at = time.perf_counter() + 0.3
        for pipe in pipes:
            pipe.send(go_at)
        sides: list[SideResult] = []
        for pipe in pipes:
            if not pipe.poll(180):
                raise RuntimeError("a burst process did not finish")
            sides.append(pipe.recv())
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    admitted = {k: v for side in sides for k, v in side.admitted.items()}
    claims = sorted((c for side in sides for c in side.claims), key=lambda c: c.locked)
    released = {k: v for side in sides for k, v in side.released.items()}
    per_owner = Counter[str]()
    for c in claims:
        per_owner[c.owner] += len(c.taken)
    return BurstResult(
        [a for side in sides for a in side.admissions],
        admitted,
        claims,
        released,
        max(side.all_done for side in sides) - go_at,
        args.history,
        fairness(admitted, claims, released, BURST_LIMITS.guild_concurrency),
        per_owner,
        [w for side in sides for w in side.alone_wall_ms],
        statistics.mean(side.alone_cpu_ms for side in sides),
        [size for side in sides for size in side.batches],
    )


def _burst_side_process(url: str, side: int, jobs: list[Job], ids: list[str], pipe: Any) -> None:
    pipe.send(asyncio.run(_burst_side(url, side, jobs, ids, pipe)))


async def _burst_side(url: str, side: int, jobs: list[Job], ids: list[str], pipe: Any) -> SideResult:
    """One process of the burst: warm up, say ready, submit its jobs at the given instant, run what its queue
    claims, and return what it measured once every job of the burst (either process's) is done."""
    db = cast(TimedPostgres, await TimedPostgres.connect(url))
    rng = random.Random(11 + side)
    admissions: list[Timed] = []
    admitted: dict[str, tuple[float, int]] = {}
    claims: list[Claim] = []
    released: dict[str, float] = {}
    admission = FixedPriceAdmission(
        db=db, generation=cast(GenerationService, None), limits=BURST_LIMITS, clock=time.time
    )

    async def timed_claim(db: Database, *, owner: str, want: int, caps: Caps, now: float, lease: float) -> list[Job]:
        if want <= 0:
            return []
        start = time.perf_counter()
        jobs = await claim_jobs(db, owner=owner, want=want, caps=caps, now=now, lease=lease)
        end = time.perf_counter()
        locked = _LOCKED.pop(asyncio.current_task(), start)
        claims.append(Claim(start, locked, end, owner, [(j.id, j.lane) for j in jobs]))
        return jobs

    async def timed_give_back(db: Database, job_id: str) -> None:
        await give_back_slot(db, job_id)
        released[job_id] = time.perf_counter()

    async def run(job: Job) -> None:
        await asyncio.sleep(rng.uniform(0.2, 0.3))  # the provider call
        await queue.release(job.id)
        await finish(queue.db, job.id, queue.owner, {"status": "done", "finished_at": time.time()})

    async def alone(count: int) -> tuple[list[float], float]:
        """`count` admissions one after another (members and guilds of their own): each one's wall time, and
        the CPU this process spent per admission."""
        walls = []
        cpu = 0.0
        for n in range(count):
            guild, member = 5_000_000 + side * 100 + n % 20, 6_000_000 + side * 10_000 + n
            job = Job(guild_id=guild, channel_id=1, user_id=member, kind="imagine", request=JobRequest(prompt="alone"))
            start, cpu_start = time.perf_counter(), time.process_time()
            await admission.admit([job])
            walls.append((time.perf_counter() - start) * 1000)
            cpu += time.process_time() - cpu_start
            await cancel_queued(db, job.id, time.time())  # out of the burst's way
        return walls, cpu * 1000 / count

    async def submit(job: Job) -> None:
        assert job.guild_id is not None
        start = time.perf_counter()
        await admission.admit([job])
        end = time.perf_counter()
        locked = max(start, admission.locked_at.pop(job.id, start))
        admissions.append(Timed(start, locked, end))
        admitted[job.id] = (locked, job.guild_id)
        # What the runner does next: the queue claims at once and tells the other process (NOTIFY).
        queue.queued_here([job.id])
        queue.submitted()

    queue = JobQueue(db, BURST_LIMITS, owner=f"process-{side}", run=run)
    try:
        with (
            mock.patch("bot.jobs.queue.claim_jobs", timed_claim),
            mock.patch("bot.jobs.queue.give_back_slot", timed_give_back),
        ):
            await queue.start()
            # Warm: every pooled connection has the statements prepared, as in a process in use.
            alone_walls, alone_cpu = await alone(len(jobs))
            _LOCKED.clear()
            claims.clear()
            released.clear()
            admission.batches.clear()
            pipe.send("ready")
            go_at = await asyncio.to_thread(pipe.recv)
            await asyncio.sleep(max(0.0, go_at - time.perf_counter()))
            await asyncio.gather(*(submit(job) for job in jobs))
            done = "SELECT count(*) FROM jobs WHERE id = ANY(?::text[]) AND status = 'done'"
            async with asyncio.timeout(120):
                while await db.fetchval(done, (ids,)) < len(ids):  # noqa: ASYNC110 - rows done by either process
                    await asyncio.sleep(0.01)
            all_done = time.perf_counter()
            await queue.aclose()
    finally:
        await db.close()
    return SideResult(admissions, admitted, claims, released, admission.batches, alone_walls, alone_cpu, all_done)


def fairness(
    admitted: dict[str, tuple[float, int]], claims: list[Claim], released: dict[str, float], cap: int
) -> list[str]:
    """Gaps between two consecutive claims of a guild during which another guild was served twice while the
    first one could have gone (a queued job, under its guild cap). The claims run one at a time under the
    jobs lock, so ordering them by when they got it is exact; within a claim, jobs are in the order picked.
    A job counts as queued from when its admission got the lock, and its slot as free once giving it back
    committed (a release still in flight when a claim got the lock counts as held: the lenient reading)."""
    sequence: list[tuple[float, str, int]] = [(c.locked, job, lane) for c in claims for job, lane in c.taken]
    claimed_at: dict[str, int] = {}
    eligible: list[set[int]] = []  # per position in the sequence: the lanes that could have gone
    queued: dict[int, int] = defaultdict(int)
    holding: dict[int, set[str]] = defaultdict(set)
    arrivals = sorted((t, job, lane) for job, (t, lane) in admitted.items())
    releases = sorted((t, job) for job, t in released.items())
    a = r = 0
    for k, (t, job, lane) in enumerate(sequence):
        while a < len(arrivals) and arrivals[a][0] < t:
            queued[arrivals[a][2]] += 1
            a += 1
        while r < len(releases) and releases[r][0] < t:
            gone = releases[r][1]
            for jobs in holding.values():
                jobs.discard(gone)
            r += 1
        eligible.append({g for g, n in queued.items() if n > 0 and len(holding[g]) < cap})
        queued[lane] -= 1
        holding[lane].add(job)
        claimed_at[job] = k
    by_lane: dict[int, list[int]] = defaultdict(list)
    for k, (_, _, lane) in enumerate(sequence):
        by_lane[lane].append(k)
    violations = []
    for lane, positions in by_lane.items():
        for i, j in itertools.pairwise(positions):
            served = Counter(sequence[k][2] for k in range(i + 1, j) if lane in eligible[k])
            twice = {other: n for other, n in served.items() if n > 1}
            if twice:
                violations.append(f"guild {lane} between claims {i} and {j}: {twice}")
    return violations


# ---- the table --------------------------------------------------------------------------------------------


def report_throughput(runs: list[ThroughputRun], args: argparse.Namespace) -> tuple[list[str], bool]:
    lines = [
        f"[1] jobs per second, 1 vs 2 processes: {args.jobs} 4K jobs at once from {args.guilds} guilds on both shards"
        f" (premium tier 0: 10 MiB upload limit, so each 23.7 MB PNG is re-encoded), fake API latency"
        f" {args.latency:.2f} s, caps global {SCALE_CAPS['BANANA_MAX_CONCURRENT']}, guild"
        f" {SCALE_CAPS['BANANA_GUILD_CONCURRENT']}; one PostgreSQL",
        "    A = one process, shards 0,1; B = two processes, one shard each; "
        + ("every process on every core" if args.unpinned else "each process on a core of its own (A: 0; B: 0 and 1)")
        + "; timed from the first submission to the last result stored (jobs/s) and between the results of the"
        " first and the last tenth (steady: while every process has work, as under a stream of jobs)",
        "    round config  wall s  jobs/s  steady  jobs per process  reply/channel   JPEG  largest MB  cpu s (bot"
        " processes, fake API, fake Discord + members, other)",
    ]
    for n, run in enumerate(runs, 1):
        per = "/".join(f"{v:.0f}" for v in run.per_process.values())
        lines.append(
            f"    {n:>5} {run.config:>6} {run.wall:>7.2f} {run.rate:>7.2f} {run.steady_rate:>7.2f}  {per:<16}"
            f" {run.routes['reply']:>5}/{run.routes['channel']:<7} {run.jpeg:>4}/{run.jobs}"
            f" {run.biggest_upload / 2**20:>10.1f}  {fmt_cpu(run.cpu)}"
        )
    ratios, steady_ratios = [], []
    for n in range(0, len(runs) - 1, 2):
        pair = {runs[n].config: runs[n], runs[n + 1].config: runs[n + 1]}
        if set(pair) == {"A", "B"}:
            ratios.append(pair["B"].rate / pair["A"].rate)
            steady_ratios.append(pair["B"].steady_rate / pair["A"].steady_rate)
    ratio = statistics.median(ratios) if ratios else float("nan")
    steady_ratio = statistics.median(steady_ratios) if steady_ratios else float("nan")
    ok = bool(steady_ratios) and steady_ratio >= THROUGHPUT_TARGET
    a_rate = statistics.median(r.rate for r in runs if r.config == "A")
    b_rate = statistics.median(r.rate for r in runs if r.config == "B")
    a_steady = statistics.median(r.steady_rate for r in runs if r.config == "A")
    b_steady = statistics.median(r.steady_rate for r in runs if r.config == "B")
    lines.append(
        f"    whole burst: median jobs/s A {a_rate:.2f}, B {b_rate:.2f}; B/A per pair"
        f" {', '.join(f'{x:.2f}' for x in ratios)}; median B/A {ratio:.2f}"
    )
    lines.append(
        f"    steady: median jobs/s A {a_steady:.2f}, B {b_steady:.2f}; B/A per pair"
        f" {', '.join(f'{x:.2f}' for x in steady_ratios)}; median B/A {steady_ratio:.2f} (target >="
        f" {THROUGHPUT_TARGET})  {verdict(ok)}"
    )
    cpu_per_job = {
        config: statistics.median(
            sum(v for k, v in r.cpu.items() if k.startswith("bot")) / r.jobs for r in runs if r.config == config
        )
        for config in ("A", "B")
    }
    ours = ("bot", "fake", "PostgreSQL")
    bench_cores = {
        config: statistics.median(
            sum(v for k, v in r.cpu.items() if k.startswith(ours)) / r.wall for r in runs if r.config == config
        )
        for config in ("A", "B")
    }
    other_cores = {
        config: statistics.median(r.cpu["other"] / r.wall for r in runs if r.config == config) for config in ("A", "B")
    }
    bot_cores = {
        config: statistics.median(
            sum(v for k, v in r.cpu.items() if k.startswith("bot")) / r.wall for r in runs if r.config == config
        )
        for config in ("A", "B")
    }
    loop_share = {
        config: statistics.median(
            sum(r.loops.values()) / sum(v for k, v in r.cpu.items() if k.startswith("bot"))
            for r in runs
            if r.config == config
        )
        for config in ("A", "B")
    }
    lines.append(
        f"    bot cpu per job: A {cpu_per_job['A']:.2f} s, B {cpu_per_job['B']:.2f} s; cores the bot used: A"
        f" {bot_cores['A']:.2f}, B {bot_cores['B']:.2f} (event-loop threads {loop_share['A']:.0%} and"
        f" {loop_share['B']:.0%} of it); cores used by the bot, fakes and PostgreSQL: A {bench_cores['A']:.2f},"
        f" B {bench_cores['B']:.2f}; by the rest of the machine: A {other_cores['A']:.2f}, B {other_cores['B']:.2f}"
    )
    # All of B's CPU per job (bot, fakes, PostgreSQL) spread over every core with nothing else running.
    b_cpu_per_job = statistics.median(
        sum(v for k, v in r.cpu.items() if k.startswith(ours)) / r.jobs for r in runs if r.config == "B"
    )
    best_b = (os.cpu_count() or 1) / b_cpu_per_job
    lines.append(
        f"    ceiling: B on {os.cpu_count()} otherwise idle cores at its CPU per job ({b_cpu_per_job:.2f} s, all"
        f" processes) = {best_b:.2f} jobs/s = {best_b / a_rate:.2f}x A's median"
    )
    return lines, ok


def spread(values: list[float]) -> str:
    return f"p50 {pct(values, 50):.2f}, p99 {pct(values, 99):.2f}, max {max(values):.2f}"


def report_bursts(results: list[BurstResult]) -> tuple[list[str], bool, bool, bool]:
    """Each burst's figures, the whole table of the median one (by admission p50), and the verdicts on the
    median over the bursts of their p50 and of their p99: one burst's median moves by a millisecond or two
    from run to run here. (With an even count, the higher of the middle two, as the table shows.)"""

    def p(items: list[Any], q: float) -> float:
        return pct([i.total_ms for i in items], q)

    by_p50 = sorted(results, key=lambda r: p(r.admissions, 50))
    lines = report_burst(by_p50[len(by_p50) // 2])
    lines.insert(1, f"    the median of {len(results)} bursts (each with a fresh database and processes), in full:")
    lines.append("    every burst, ms (admission p50, p99; claim p50, p99; fairness violations):")
    for n, r in enumerate(results, 1):
        lines.append(
            f"      {n}: {p(r.admissions, 50):.2f}, {p(r.admissions, 99):.2f}; {p(r.claims, 50):.2f},"
            f" {p(r.claims, 99):.2f}; {len(r.violations)}"
        )
    medians = [
        statistics.median_high(p(getattr(r, side), q) for r in results)
        for side in ("admissions", "claims")
        for q in (50, 99)
    ]
    admit_ok = medians[0] < ADMIT_P50_MS and medians[1] < ADMIT_P99_MS
    claim_ok = medians[2] < ADMIT_P50_MS and medians[3] < ADMIT_P99_MS
    lines.append(
        f"    admission, median over the bursts: p50 {medians[0]:.2f} ms, p99 {medians[1]:.2f} ms (targets p50 <"
        f" {ADMIT_P50_MS:.0f}, p99 < {ADMIT_P99_MS:.0f})  {verdict(admit_ok)}"
    )
    lines.append(
        f"    claim, median over the bursts: p50 {medians[2]:.2f} ms, p99 {medians[3]:.2f} ms (targets p50 <"
        f" {ADMIT_P50_MS:.0f}, p99 < {ADMIT_P99_MS:.0f})  {verdict(claim_ok)}"
    )
    violations = [v for r in results for v in r.violations]
    fair_ok = not violations
    lines.append(
        f"[3] fairness: {len(violations)} violations over {sum(len(r.admitted) for r in results)} claimed jobs in"
        f" {len(results)} bursts (a guild with a queued job under its cap passed over while another guild was"
        f" served twice)  {verdict(fair_ok)}"
    )
    lines.extend(f"    {v}" for v in violations[:10])
    return lines, admit_ok, claim_ok, fair_ok


def report_burst(result: BurstResult) -> list[str]:
    adm = result.admissions
    clm = [c for c in result.claims]
    taking = [c for c in clm if c.taken]
    lines = [
        f"[2] admission + claim latency, PostgreSQL: {len(adm)} submissions at once from"
        f" {len({lane for _, lane in result.admitted.values()})} guilds, two processes' pools, two JobQueues"
        f" (caps global {BURST_LIMITS.global_concurrency}, guild {BURST_LIMITS.guild_concurrency}); history"
        f" {result.history:,} done jobs; all {len(result.admitted)} run in {result.wall:.2f} s",
        "    ms                                   total                        waiting (pool, BEGIN, the locks)"
        "     holding the lock (to commit)",
    ]

    def row(name: str, items: list[Any]) -> str:
        return (
            f"    {name:<34} {spread([i.total_ms for i in items]):<28} {spread([i.wait_ms for i in items]):<36}"
            f" {spread([i.held_ms for i in items])}"
        )

    lines.append(row(f"admission ({len(adm)})", adm))
    lines.append(row(f"claim ({len(clm)} transactions)", clm))
    lines.append(row(f"  of which took a job ({len(taking)})", taking))
    lines.append(
        f"    admissions held their guild's and member's locks {sum(a.held_ms for a in adm):.0f} ms in all, claims the"
        f" jobs lock {sum(c.held_ms for c in clm):.0f} ms; the last admission committed"
        f" {(max(a.end for a in adm) - min(a.start for a in adm)) * 1000:.0f} ms after the first began"
    )
    lines.append(f"    jobs claimed per process: {', '.join(f'{k} {v}' for k, v in sorted(result.per_owner.items()))}")
    if result.batches:
        lines.append(
            f"    the burst's admissions went in {len(result.batches)} transactions of"
            f" {statistics.mean(result.batches):.1f} requests on average (largest {max(result.batches)})"
        )
    if result.alone_wall_ms:
        lines.append(
            f"    one at a time first ({len(result.alone_wall_ms)}): wall ms {spread(result.alone_wall_ms)}; this"
            f" process's CPU {result.alone_cpu_ms:.2f} ms per admission"
        )
    return lines


@contextlib.contextmanager
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="[1] rounds, alternating A B B A A B (default 6)")
    parser.add_argument("--order", help="[1] the rounds' configurations in order instead, e.g. ABBA")
    parser.add_argument("--jobs", type=int, default=40, help="[1] 4K jobs per timed burst")
    parser.add_argument("--guilds", type=int, default=8, help="[1] guilds, half on each shard")
    parser.add_argument("--warmup", type=int, default=4, help="[1] untimed 4K jobs before each timed burst")
    parser.add_argument("--latency", type=float, default=0.5, help="[1] the fake API's fixed latency, seconds")
    parser.add_argument("--burst-jobs", type=int, default=200, help="[2] submissions at once")
    parser.add_argument("--burst-guilds", type=int, default=20, help="[2] guilds they come from")
    parser.add_argument("--history", type=int, default=20000, help="[2] done jobs in the table beforehand")
    parser.add_argument("--bursts", type=int, default=5, help="[2] bursts, each on a fresh database (default 5)")
    parser.add_argument(
        "--unpinned",
        action="store_true",
        help="[1] let every bot process use every core (by default each has one core of its own: A core 0, B one each)",
    )
    parser.add_argument("--only", action="append", choices=("throughput", "burst"), help="run only this part")
    args = parser.parse_args(argv)
    if args.bursts < 1:
        parser.error("--bursts takes 1 or more")
    parts = set(args.only or ("throughput", "burst"))
    if "throughput" in parts and not {"A", "B"} <= set(args.order or ("A", "B")[: max(0, min(args.rounds, 2))]):
        parser.error("[1] needs rounds of both A and B: --rounds 2 or more, or an --order with both")
    began = time.monotonic()
    load = os.getloadavg()
    lines: list[str] = []
    verdicts: list[tuple[str, bool]] = []
    with postgres() as pg, tempfile.TemporaryDirectory() as tmp:
        if "burst" in parts:
            results = []
            for n in range(args.bursts):
                log(f"[2] burst {n + 1}/{args.bursts}")
                results.append(burst(pg.fresh_url(), args))
            burst_lines, admit_ok, claim_ok, fair_ok = report_bursts(results)
            verdicts += [("admission latency", admit_ok), ("claim latency", claim_ok), ("fairness", fair_ok)]
        if "throughput" in parts:
            runs = asyncio.run(throughput(pg, args, Path(tmp)))
            lines, ok = report_throughput(runs, args)
            verdicts.insert(0, ("2 processes / 1 process", ok))
        if "burst" in parts:
            lines += burst_lines
    print("Banana Bot scale-out benchmark: banana-bot run processes on one PostgreSQL, fake Discord, fake Gemini API")
    print(
        f"machine: {os.cpu_count()} cores (shared), {platform.system()} {platform.machine()}, Python"
        f" {platform.python_version()}; PostgreSQL {pg.bin.parent.name}; load average before {load[0]:.2f}"
    )
    for line in lines:
        print(line)
    print("summary: " + "; ".join(f"{name} {verdict(ok)}" for name, ok in verdicts))
    print(f"total {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
