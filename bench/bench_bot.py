"""The Discord bot end to end: the real bot (real discord.py) against the fake Discord and the fake image API.

    .venv/bin/python -m bench.bench_bot            # ~1.5 minutes; prints the table

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
       global 16, per guild 2, per member 1. Time to deferral and completion against the ideal the caps allow.
  [2b] 4K jobs one at a time: overhead per job (a 23.7 MB PNG is over Discord's 10 MiB limit, so the bot
       re-encodes it to JPEG, off the loop; that is part of the overhead).
  [3]  Event-loop lag while a batch of 4K jobs (8 at once, 8 guilds) is handled.
Definitions are printed with the table and stated in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import platform
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.bench_core import ROOT, Control, FakeServer
from tests.fake_discord import FakeDiscord, FakeGuild, FakeInteraction, FakeUser, RecordedCall

GUILDS, MEMBERS = 20, 10
CAPS = {"BANANA_MAX_CONCURRENT": "16", "BANANA_GUILD_CONCURRENT": "2", "BANANA_USER_CONCURRENT": "1"}
TARGETS = {"defer_p99_ms": 500.0, "overhead_1k_p50_ms": 50.0, "overhead_4k_p50_ms": 300.0, "lag_p99_ms": 50.0}
IDEAL_RATIO = 1.10
LAG_SLEEP = 0.010
RESULT_PREFIX = "BENCH-BOT-RESULT "
READY_LINE = "BENCH-BOT-READY"


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 200 values is the 198th smallest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# ---- the bot's process ----------------------------------------------------------------------------------


def bot_worker(discord_url: str, env: dict[str, str]) -> None:
    """Run the bot against the fake Discord at `discord_url` until SIGTERM; print its loop-lag samples."""
    import discord.gateway
    import discord.http
    import yarl

    from bot.client import create_bot
    from bot.config import load_settings

    # What FakeDiscord.__aenter__ does in process: discord.py reads both at request / connect time.
    discord.http.Route.BASE = f"{discord_url}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"{discord_url.replace('http', 'ws', 1)}/gateway/")

    async def run() -> list[tuple[float, float]]:
        samples: list[tuple[float, float]] = []  # (monotonic time at wake-up, ms late)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        bot = create_bot(load_settings(env, env_file=None), guild_ready_timeout=0.05)

        async def on_ready() -> None:
            # Members may only start once on_ready has run: the bot resumes interrupted jobs there, and would
            # take a job that arrived between READY and on_ready for one (see the README).
            print(READY_LINE, flush=True)

        bot.add_listener(on_ready, "on_ready")
        task = asyncio.create_task(bot.start(env["DISCORD_TOKEN"]), name="bot")
        while not stop.is_set() and not task.done():
            start = time.perf_counter()
            await asyncio.sleep(LAG_SLEEP)
            samples.append((time.monotonic(), (time.perf_counter() - start - LAG_SLEEP) * 1000))
        await bot.close()
        await task
        return samples

    samples = asyncio.run(run())
    print(RESULT_PREFIX + json.dumps({"lag": samples}), flush=True)


@dataclass
class BotProcess:
    proc: asyncio.subprocess.Process
    log: Path

    @classmethod
    async def start(cls, discord_url: str, env: dict[str, str], log: Path) -> BotProcess:
        cmd = [sys.executable, "-m", "bench.bench_bot", "--bot-worker", discord_url, json.dumps(env)]
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
                return [(t, lag) for t, lag in json.loads(line[len(RESULT_PREFIX) :])["lag"]]
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the bot process exited {self.proc.returncode} without results:\n{tail}")


# ---- this process: the fake Discord and the members ---------------------------------------------------


class RecordingCalls(list[RecordedCall]):
    """The fake's list of REST calls, noting when each image message was stored (the fake appends a call
    once it has read the whole upload and answered it), so no waiter has to rescan the list."""

    def __init__(self) -> None:
        super().__init__()
        self.posted: dict[str, float] = {}  # interaction token -> when its image message was stored
        self.changed = asyncio.Event()

    def append(self, call: RecordedCall) -> None:
        super().append(call)
        # Images reach the member through the interaction's webhook (the deferred original or a follow-up).
        # A status edit carrying a draft (live previews) is not the result.
        if is_result_upload(call) and call.status == 200 and call.path.startswith("/webhooks/"):
            self.posted.setdefault(call.path.split("/")[3], time.monotonic())
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
    db_path: Path
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
        while missing := [j for j in jobs if j.inter.token not in self.calls.posted]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} images never arrived")
            self.calls.changed.clear()
            try:
                await asyncio.wait_for(self.calls.changed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                continue
        for job in jobs:
            job.posted = self.calls.posted[job.inter.token]

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

    def read_log(self) -> None:
        """Each job's queue wait, provider time and the bot's own timestamps from the bot's SQLite file."""
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT json_extract(j.request_json, '$.prompt'), j.created_at, j.queue_ms, j.started_at,"
                " j.finished_at, g.total_ms FROM jobs j JOIN generations g ON g.id = j.generation_id"
            ).fetchall()
        by_prompt = {row[0]: row[1:] for row in rows}
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


async def run_bench(args: argparse.Namespace, server: FakeServer, tmp: Path) -> list[str]:
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
            **CAPS,
        }
        bot = await BotProcess.start(discord.url, env, tmp / "bot.log")
        try:
            await bot.ready()
            assert server.proc is not None
            bench = Bench(discord, calls, bot.proc.pid, server.proc.pid, guilds, data_dir / "banana.sqlite3")
            return await measure(bench, args, bot)
        finally:
            if bot.proc.returncode is None:
                bot.proc.send_signal(signal.SIGTERM)
                await bot.proc.wait()


@dataclass
class Phase:
    jobs: list[Job]
    cpu: Cpu
    start: float  # monotonic
    calls: Counter[str]  # the bot's REST calls to the fake Discord during the phase, by kind

    def lag(self, samples: list[tuple[float, float]]) -> list[float]:
        return [v for t, v in samples if self.start <= t <= self.start + self.cpu.wall]


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

    burst = await run_phase(bench, burst_jobs())
    lone_4k = await run_phase(bench, bench.one_at_a_time("4K", args.overhead_jobs))

    async def batch_jobs() -> list[Job]:
        # One member in each of `batch_4k` guilds: within every cap, so all run at once.
        return list(await asyncio.gather(*(bench.imagine(g, m[1], "4K") for g, m in bench.guilds[: args.batch_4k])))

    spy = await start_py_spy(args.py_spy, bot.proc.pid, gil=args.py_spy_gil) if args.py_spy else None
    batch = await run_phase(bench, batch_jobs())
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its profile when interrupted
        await spy.wait()

    lag = await bot.stop()
    bench.read_log()
    if args.jobs_csv:
        bench.write_csv(
            args.jobs_csv, {"1K one at a time": lone, "burst": burst, "4K one at a time": lone_4k, "4K batch": batch}
        )
    return report(lone, burst, lone_4k, batch, lag)


def report(lone: Phase, burst: Phase, lone_4k: Phase, batch: Phase, lag: list[tuple[float, float]]) -> list[str]:
    lines = []

    def spread(values: list[float], digits: int = 0) -> str:
        return f"p50 {pct(values, 50):.{digits}f}, p99 {pct(values, 99):.{digits}f}, max {max(values):.{digits}f}"

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

    # [1] the burst
    jobs = burst.jobs
    defers = [j.inter.deferred_at * 1000 for j in jobs if j.inter.deferred_at is not None]
    assert len(defers) == len(jobs), "an interaction was never acknowledged"
    wall = max(j.posted for j in jobs) - min(j.inter.dispatched_at for j in jobs)
    waves = math.ceil(len(jobs) / int(CAPS["BANANA_MAX_CONCURRENT"]))
    lone_e2e = statistics.median(j.e2e_ms for j in lone.jobs) / 1000
    lone_provider = statistics.median(j.provider_ms for j in lone.jobs) / 1000
    ideal = lone_e2e + (waves - 1) * lone_provider
    burst_lag = burst.lag(lag)
    lines.append(f"[1] burst: {len(jobs)} /imagine from {GUILDS} guilds at once, 1K, caps {caps_text()}")
    lines.append(
        f"    time to deferral ms: {spread(defers)}  (target p99 < {TARGETS['defer_p99_ms']:.0f})"
        f"  {verdict(pct(defers, 99) < TARGETS['defer_p99_ms'])}"
    )
    lines.append(
        f"    completion {wall:.2f} s; ideal = lone job {lone_e2e:.3f} s + ({waves} waves - 1) x lone provider time"
        f" {lone_provider:.3f} s = {ideal:.2f} s; ratio {wall / ideal:.3f} (target <= {IDEAL_RATIO})"
        f"  {verdict(wall / ideal <= IDEAL_RATIO)}"
    )
    lines.append(
        f"    for reference: {waves} waves x lone job = {waves * lone_e2e:.2f} s"
        f" (ratio {wall / (waves * lone_e2e):.3f})"
    )
    lines.append(
        f"    per job in the burst ms: provider {spread([j.provider_ms for j in jobs])};"
        f" in slot less the provider {spread([j.in_slot_ms for j in jobs])}"
    )
    lines.append(f"    loop lag ms {spread(burst_lag, 1)}; REST calls to Discord per job: {calls_per_job(burst)}")
    lines.append("    " + burst.cpu.text())

    # [2] overhead per job, nothing queued or competing
    overhead_lines(lone, "1K")
    overhead_lines(lone_4k, "4K")

    # [3] loop lag during the 4K batch
    window = batch.lag(lag)
    p99, target = pct(window, 99), TARGETS["lag_p99_ms"]
    lines.append(
        f"[3] event-loop lag while {len(batch.jobs)} 4K jobs run at once ({len(window)} samples of a"
        f" {LAG_SLEEP * 1000:.0f} ms sleep over {batch.cpu.wall:.1f} s) ms: {spread(window, 1)}"
        f"  (target p99 < {target:.0f})  {verdict(p99 < target)}"
    )
    late = sorted(window, reverse=True)[:5]
    lines.append(f"    worst wake-ups ms: {', '.join(f'{v:.0f}' for v in late)}")
    lines.append("    " + batch.cpu.text())
    return lines


async def start_py_spy(output: str, pid: int, *, gil: bool) -> asyncio.subprocess.Process:
    """py-spy sampling the bot's threads (raw collapsed stacks, one line per stack and thread) during [3];
    `gil`: only the thread that holds the GIL, i.e. who keeps the event loop from running."""
    py_spy = Path(sys.executable).with_name("py-spy")
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=1.0, help="the fake API's fixed latency, seconds")
    parser.add_argument("--overhead-jobs", type=int, default=8, help="jobs per size in part 2")
    parser.add_argument("--batch-4k", type=int, default=8, help="4K jobs at once in part 3 (one per guild)")
    parser.add_argument("--py-spy", metavar="FILE", help="record the bot with py-spy during part 3 (raw stacks)")
    parser.add_argument("--jobs-csv", metavar="FILE", help="write every measured job's timings to FILE")
    parser.add_argument("--py-spy-gil", action="store_true", help="with --py-spy: only the thread holding the GIL")
    args = parser.parse_args(argv)
    began = time.monotonic()
    load = os.getloadavg()
    with FakeServer(args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        control = Control(server.url)
        for size in ("1K", "4K"):
            control.generate(size)  # the fake renders each size once, then serves it from its cache
        control.close()
        lines = asyncio.run(run_bench(args, server, Path(tmp)))
    print("Banana Bot end-to-end benchmark: the bot, the fake Discord and the fake Gemini API, each in its own process")
    print(
        f"machine: {os.cpu_count()} cores (shared), {platform.system()} {platform.machine()}, Python"
        f" {platform.python_version()}; load average before {load[0]:.2f}; fake API latency {args.latency:.2f} s,"
        " realistic PNGs"
    )
    for line in lines:
        print(line)
    print(f"total {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
