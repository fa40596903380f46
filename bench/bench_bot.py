"""The Discord bot end to end: the real bot (real discord.py) against the fake Discord and the fake image API.

    .venv/bin/python -m bench.bench_bot            # ~1.5 minutes; prints the table

The fake image API runs in its own process (as in bench_core) at a fixed latency with realistic PNGs;
the fake Discord runs in the bot's process and event loop (it is what discord.py connects to), so its
work (parsing multipart uploads, dispatching events) is counted against the bot here: the numbers are an
upper bound on the bot's own cost.

1. Burst: 200 /imagine interactions from 20 guilds (10 members each) dispatched at once, 1K, with caps
   global 16, per guild 2, per member 1. Time to deferral (dispatch -> callback at the fake), and the
   completion time against the ideal the caps allow: ceil(200 / 16) waves of one lone job's end-to-end
   time (measured first, same bot, same fake).
2. Overhead per job, 1K and 4K, one job at a time (nothing queued or competing): end to end
   (dispatch -> the image posted at the fake Discord) minus the provider's time (the usage log's total_ms)
   minus the queue wait (jobs.queue_ms). At 4K the realistic 23.7 MB PNG is over Discord's 10 MiB limit,
   so the bot re-encodes it (off the loop) before posting; that is part of the overhead.
3. Event-loop lag while 4K images are handled: a task in the bot's loop sleeps 10 ms at a time and records
   how late it wakes, during part 2's 4K run.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import platform
import tempfile
import time
from pathlib import Path

from bench.bench_core import Control, FakeServer
from bot.client import BananaBot, create_bot
from bot.config import load_settings
from storage.generations import get_generation
from storage.jobs import jobs_where
from tests.fake_discord import FakeDiscord, FakeGuild, FakeInteraction, FakeUser

GUILDS, MEMBERS = 20, 10
CAPS = {"BANANA_MAX_CONCURRENT": "16", "BANANA_GUILD_CONCURRENT": "2", "BANANA_USER_CONCURRENT": "1"}
TARGETS = {"defer_p99_ms": 500.0, "overhead_1k_p50_ms": 50.0, "overhead_4k_p50_ms": 300.0, "lag_p99_ms": 50.0}
IDEAL_RATIO = 1.10


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


class Run:
    def __init__(self, discord: FakeDiscord, bot: BananaBot, guilds: list[tuple[FakeGuild, list[FakeUser]]]) -> None:
        self.discord, self.bot, self.guilds = discord, bot, guilds
        self._scanned = 0
        self._posted: dict[str, float] = {}  # interaction token -> when its image reached the fake Discord

    async def posted_at(self, inters: list[FakeInteraction], timeout: float = 300) -> list[float]:  # noqa: ASYNC109
        """When each interaction's image reached the fake Discord (the REST call that carried it).

        One scan of the new REST calls every 20 ms: a waiter per interaction, each re-reading every call,
        would cost the shared event loop more than the bot does."""
        deadline = time.monotonic() + timeout
        tokens = {i.token for i in inters}
        while not tokens <= self._posted.keys():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(tokens - self._posted.keys())} images never arrived")
            await asyncio.sleep(0.02)
            calls = self.discord.calls
            for call in calls[self._scanned :]:
                if call.files and call.status == 200 and "/webhooks/" in call.path:
                    token = call.path.split("/")[3]
                    self._posted.setdefault(token, call.at)
            self._scanned = len(calls)
        return [self._posted[i.token] for i in inters]


async def lag_sampler(samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(0.010)
        samples.append((time.perf_counter() - start - 0.010) * 1000)


async def main_async(args: argparse.Namespace) -> list[str]:
    lines: list[str] = []
    with FakeServer(args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        control = Control(server.url)
        for size in ("1K", "4K"):
            control.generate(size)  # the fake renders each size once, then serves it from its cache
        control.close()
        async with FakeDiscord() as discord:
            guilds = []
            for g in range(GUILDS):
                guild = discord.add_guild(f"guild {g}")
                guilds.append((guild, [guild.add_member(f"g{g}m{m}") for m in range(MEMBERS)]))
            env = {
                "DISCORD_TOKEN": discord.token,
                "GEMINI_API_KEY": "bench",
                "GEMINI_BASE_URL": server.url,
                "BANANA_DATA_DIR": str(Path(tmp) / "data"),
                "BANANA_HTTP_VERSION": "2-prior",
                "BANANA_RETRY_ATTEMPTS": "1",
                "BANANA_USER_DAILY": "0",
                "BANANA_GUILD_DAILY": "0",
                "BANANA_STATUS_INTERVAL": "3",
                **CAPS,
            }
            bot = create_bot(load_settings(env, env_file=None), guild_ready_timeout=0.05)
            task = asyncio.create_task(bot.start(discord.token))
            await discord.wait_ready()
            await asyncio.sleep(0.3)
            run = Run(discord, bot, guilds)
            try:
                lines += await measure(run, args)
            finally:
                await bot.close()
                await task
    return lines


async def measure(run: Run, args: argparse.Namespace) -> list[str]:
    lines = []
    # [0] a lone job: the unit of the ideal.
    lone, lone_at = await run_jobs_tagged(run, "1K", 1)
    lone_s = lone_at[0] - lone[0].dispatched_at

    # [1] the burst.
    lag: list[float] = []
    started = time.monotonic()
    dispatches = [
        run.discord.slash(guild.id, guild.channel_id, member, "imagine", prompt_options(f"b{g}-{m}", "1K"))
        for g, (guild, members) in enumerate(run.guilds)
        for m, member in enumerate(members)
    ]
    inters = list(await asyncio.gather(*dispatches))
    posted = await run.posted_at(inters)
    wall = max(posted) - started
    defers = [i.deferred_at * 1000 for i in inters if i.deferred_at is not None]
    waves = math.ceil(len(inters) / int(CAPS["BANANA_MAX_CONCURRENT"]))
    ideal = waves * lone_s
    lines.append(f"[1] burst: {len(inters)} /imagine from {GUILDS} guilds at once, 1K, caps {caps_text()}")
    lines.append(
        f"    time to deferral ms: p50 {pct(defers, 50):.0f}, p99 {pct(defers, 99):.0f}, max {max(defers):.0f}"
        f"  (target p99 < {TARGETS['defer_p99_ms']:.0f})  {verdict(pct(defers, 99) < TARGETS['defer_p99_ms'])}"
    )
    lines.append(
        f"    completion {wall:.2f} s; ideal {waves} waves x lone job {lone_s:.2f} s = {ideal:.2f} s; "
        f"ratio {wall / ideal:.3f} (target <= {IDEAL_RATIO})  {verdict(wall / ideal <= IDEAL_RATIO)}"
    )

    # [2] + [3] overhead per job without queueing, and loop lag during the 4K run.
    results = {}
    for size in ("1K", "4K"):
        stop = asyncio.Event()
        sampler = asyncio.create_task(lag_sampler(lag, stop)) if size == "4K" else None
        inters, posted_at = await run_jobs_tagged(run, size, args.overhead_jobs)
        stop.set()
        if sampler is not None:
            await sampler
        results[size] = await overheads(run, inters, posted_at)
    for size, key in (("1K", "overhead_1k_p50_ms"), ("4K", "overhead_4k_p50_ms")):
        values = results[size]
        lines.append(
            f"[2] overhead per job at {size} ({len(values)} jobs, no queueing) ms: p50 {pct(values, 50):.0f}, "
            f"p99 {pct(values, 99):.0f}  (target p50 < {TARGETS[key]:.0f})  {verdict(pct(values, 50) < TARGETS[key])}"
        )
    lines.append(
        f"[3] event-loop lag during the 4K jobs ({len(lag)} samples of a 10 ms sleep) ms: p50 {pct(lag, 50):.1f}, "
        f"p99 {pct(lag, 99):.1f}, max {max(lag):.1f}  (target p99 < {TARGETS['lag_p99_ms']:.0f})  "
        f"{verdict(pct(lag, 99) < TARGETS['lag_p99_ms'])}"
    )
    return lines


def prompt_options(tag: str, size: str) -> dict[str, object]:
    return {"prompt": f"bench {tag}", "resolution": size, "aspect_ratio": "16:9"}


async def run_jobs_tagged(run: Run, size: str, count: int) -> tuple[list[FakeInteraction], list[float]]:
    """`count` jobs one after another (nothing queued, nothing competing), prompts unique for the log lookup."""
    inters, posted = [], []
    for n in range(count):
        guild, members = run.guilds[n % len(run.guilds)]
        options = prompt_options(f"{size}-{n}-{time.monotonic()}", size)
        inter = await run.discord.slash(guild.id, guild.channel_id, members[1], "imagine", options)
        inters.append(inter)
        posted += await run.posted_at([inter])
    return inters, posted


async def overheads(run: Run, inters: list[FakeInteraction], posted: list[float]) -> list[float]:
    db = run.bot.jobs.db
    out = []
    for inter, at in zip(inters, posted, strict=True):
        prompt = next(o["value"] for o in inter.payload["data"]["options"] if o["name"] == "prompt")
        [job] = await jobs_where(db, "json_extract(request_json, '$.prompt') = ?", (prompt,))
        assert job.generation_id is not None
        row = await get_generation(db, job.generation_id)
        assert row is not None and row.total_ms is not None
        out.append((at - inter.dispatched_at) * 1000 - row.total_ms - (job.queue_ms or 0))
    return out


def caps_text() -> str:
    caps = (CAPS["BANANA_MAX_CONCURRENT"], CAPS["BANANA_GUILD_CONCURRENT"], CAPS["BANANA_USER_CONCURRENT"])
    return "global {}, guild {}, member {}".format(*caps)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=1.0, help="the fake API's fixed latency, seconds")
    parser.add_argument("--overhead-jobs", type=int, default=8, help="jobs per size in part 2")
    args = parser.parse_args(argv)
    began = time.monotonic()
    lines = asyncio.run(main_async(args))
    print("Banana Bot end-to-end benchmark: real bot + fake Discord (in process) + fake Gemini API (own process)")
    print(
        f"machine: {platform.system()} {platform.machine()}, Python {platform.python_version()}; "
        f"fake API latency {args.latency:.2f} s, realistic PNGs"
    )
    for line in lines:
        print(line)
    print(f"total {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
