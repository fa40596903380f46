"""Two bot processes, each one shard of two, sharing one PostgreSQL, one fake Discord and one fake image API:
`banana-bot run` as operators start it (a real subprocess each, tests/bot_process.py), members in guilds on
both shards. Whichever process has a free slot runs a job, so most jobs are posted by the process that does
not own the guild's shard, over REST."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from storage.db import Database
from storage.guild_settings import update_guild_settings
from storage.jobs import jobs_where
from tests.bot_harness import custom_ids, has_image, wait_until
from tests.fake_discord import FakeDiscord, FakeGuild, FakeInteraction, FakeMessage, FakeUser
from tests.fake_image_api import FakeImageAPI
from tests.fake_image_api.server import RecordedRequest
from tests.postgres import PostgresServer

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parent.parent
GLOBAL_CAP, GUILD_CAP = 3, 2
LEASE = 4.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Deployment:
    discord: FakeDiscord
    api: FakeImageAPI
    url: str
    data_dir: Path
    guilds: list[FakeGuild]
    members: dict[int, list[FakeUser]]
    processes: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)
    metrics_ports: dict[int, int] = field(default_factory=dict)

    def env(self, shard: int, **extra: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", ""),
            "DISCORD_TOKEN": self.discord.token,
            "DISCORD_API_BASE": self.discord.url,
            "FAKE_DISCORD_GATEWAY": self.discord.gateway_url,
            "GEMINI_API_KEY": "test-key",
            "GEMINI_BASE_URL": self.api.base_url,
            "BANANA_DATA_DIR": str(self.data_dir),
            "BANANA_DATABASE_URL": self.url,
            "BANANA_SHARD_COUNT": "2",
            "BANANA_SHARD_IDS": str(shard),
            "BANANA_MAX_CONCURRENT": str(GLOBAL_CAP),
            "BANANA_GUILD_CONCURRENT": str(GUILD_CAP),
            "BANANA_USER_PENDING": "5",
            "BANANA_STATUS_INTERVAL": "0.2",
            "BANANA_STOP_GRACE": "20",
            "BANANA_JOB_LEASE": str(LEASE),
            "BANANA_METRICS_PORT": str(self.metrics_ports.setdefault(shard, free_port())),
            **extra,
        }

    async def launch(self, shard: int, **extra: str) -> None:
        with (self.data_dir / f"bot-{shard}.log").open("ab") as log:
            self.processes[shard] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.bot_process",
                cwd=ROOT,
                env=self.env(shard, **extra),
                stdout=log,
                stderr=log,
            )
        try:
            await self.discord.wait_ready(30, sessions=1, shard=(shard, 2))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log(shard)}") from None

    async def stop(self, shard: int, sig: int = signal.SIGTERM, timeout: float = 40) -> int:  # noqa: ASYNC109
        process = self.processes[shard]
        process.send_signal(sig)
        try:
            return await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"process {shard} did not stop:\n{self.log(shard)}") from None

    def log(self, shard: int) -> str:
        return (self.data_dir / f"bot-{shard}.log").read_text(errors="replace")[-4000:]

    async def imagine(self, guild: FakeGuild, member: FakeUser, prompt: str) -> FakeInteraction:
        return await self.discord.slash(guild.id, guild.channel_id, member, "imagine", {"prompt": prompt})

    def results_for(self, prompt: str) -> list[FakeMessage]:
        """Messages showing a result of `prompt` (its embed carries the prompt)."""
        return [
            m
            for m in list(self.discord.messages.values())
            if has_image(m) and not m.deleted and m.embeds and m.embeds[0].get("description") == prompt
        ]

    async def wait(self, check: Callable[[], bool], what: str, timeout: float = 60) -> None:  # noqa: ASYNC109
        """wait_until, with both processes' logs when it times out."""
        try:
            await wait_until(check, what, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log(0)}\n----\n{self.log(1)}") from None

    async def wait_posted(self, prompts: list[str], timeout: float = 90) -> None:  # noqa: ASYNC109
        await self.wait(lambda: all(self.results_for(p) for p in prompts), f"{prompts} posted", timeout)
        assert [len(self.results_for(p)) for p in prompts] == [1] * len(prompts)  # each exactly once

    def generations(self) -> list[RecordedRequest]:
        return [r for r in self.api.requests if "generateContent" in r.path or "GenerateContent" in r.path]

    async def scrape(self, shard: int) -> str:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://127.0.0.1:{self.metrics_ports[shard]}/metrics", timeout=5)).text


def most_at_once(requests: list[RecordedRequest], key: Callable[[RecordedRequest], str]) -> dict[str, int]:
    """For each key, the most of its requests the image API was answering at the same moment."""
    events: list[tuple[float, int, str]] = []
    for r in requests:
        assert r.finished_at is not None
        events += [(r.received_at, 1, key(r)), (r.finished_at, -1, key(r))]
    now: dict[str, int] = {}
    most: dict[str, int] = {}
    for _, step, name in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same time
        now[name] = now.get(name, 0) + step
        most[name] = max(most.get(name, 0), now[name])
    return most


def prompt_of(request: RecordedRequest) -> str:
    match = re.search(r"'text': '((?:burst|stopping|killed|restart)[^']*)'", str(request.json))
    assert match, request.json
    return match[1]


def counter(text: str, name: str, **labels: str) -> float:
    """A sample's value from a Prometheus exposition (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
async def deployment(tmp_path: Path, postgres: PostgresServer) -> AsyncIterator[Deployment]:
    async with FakeDiscord(shards=2) as discord, FakeImageAPI(latency=0.4) as api:
        guilds = [discord.add_guild(f"g{n}", shard=(n % 2, 2)) for n in range(20)]
        members = {g.id: [g.add_member(f"m{n}-{k}") for k in range(2)] for n, g in enumerate(guilds)}
        made = Deployment(discord, api, postgres.fresh_url(), tmp_path / "data", guilds, members)
        made.data_dir.mkdir()
        try:
            yield made
        finally:
            for process in made.processes.values():
                if process.returncode is None:
                    process.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 10)


async def test_a_burst_over_20_guilds_on_both_shards_is_posted_once_within_every_shared_cap(
    deployment: Deployment,
) -> None:
    d = deployment
    await d.launch(0)
    await d.launch(1)
    budget_guild = d.guilds[3]
    db = await Database.open(d.url)
    try:
        # Room for exactly two 1K images ($0.134 each at the Pro price) this month.
        await update_guild_settings(db, budget_guild.id, updated_by=1, monthly_budget_usd=0.30)
    finally:
        await db.close()
    prompts: list[str] = []
    refused: list[FakeInteraction] = []
    asked: list[FakeInteraction] = []
    for guild in d.guilds:
        for member in d.members[guild.id]:
            for k in range(2):  # two each: a member runs one at a time
                prompt = f"burst {guild.name} {member.name} {k}"
                inter = await d.imagine(guild, member, prompt)
                (refused if guild is budget_guild else asked).append(inter)
                prompts.append(prompt)
    budgeted = [p for p in prompts if p.startswith(f"burst {budget_guild.name} ")]
    await d.wait_posted([p for p in prompts if p not in budgeted])

    # The budget guild's four requests: two fit, two are refused, whichever process admits them.
    await wait_until(lambda: sum(1 for p in budgeted if d.results_for(p)) == 2, "two budgeted images", 30)
    assert sum(1 for p in budgeted if d.results_for(p)) == 2
    for inter, prompt in zip(refused, budgeted, strict=True):
        if not d.results_for(prompt):
            told = await inter.wait_followup(timeout=10, predicate=lambda m: m.ephemeral)
            assert "budget" in told.content.lower(), told.content

    # Whichever process ran it, no status is left behind: the response became the result (run where it was
    # asked) or gave way to the result posted in the channel (run elsewhere, which took the status over).
    def leftovers() -> list[str]:
        return [
            original.content
            for inter in asked
            if (original := inter.original()) is not None and not original.deleted and not has_image(original)
        ]

    await d.wait(lambda: not leftovers(), "no status message left behind", 20)
    requests = d.generations()
    assert len(requests) == len(prompts) - 2  # nothing generated twice
    assert max(most_at_once(requests, lambda r: "all").values()) <= GLOBAL_CAP
    assert max(most_at_once(requests, lambda r: prompt_of(r).split()[1]).values()) <= GUILD_CAP
    assert max(most_at_once(requests, lambda r: " ".join(prompt_of(r).split()[1:3])).values()) == 1
    assert d.api.max_in_flight <= GLOBAL_CAP

    db = await Database.open(d.url)
    try:
        done = await jobs_where(db, "status = 'done'", ())
        assert len(done) == len(prompts) - 2 and len({j.generation_id for j in done}) == len(done)
        spent = await db.fetchval("SELECT sum(cost_usd) FROM generations WHERE guild_id = ?", (budget_guild.id,))
        assert spent <= 0.30
    finally:
        await db.close()

    # Each process counts what it ran; together, every job once.
    finished = [counter(await d.scrape(shard), "banana_jobs_finished_total", state="done") for shard in (0, 1)]
    assert sum(finished) == len(done) and all(finished), finished
    assert [await d.stop(0), await d.stop(1)] == [0, 0]


async def test_kill_9_mid_generation_moves_its_jobs_to_the_other_process_without_paying_twice(
    deployment: Deployment,
) -> None:
    d = deployment
    d.api.latency = 2.0
    await d.launch(0)  # alone at first, so that it holds the work
    shard_0 = d.guilds[0::2][:6]
    prompts = [f"killed {g.name}" for g in shard_0]
    for guild, prompt in zip(shard_0, prompts, strict=True):
        await d.imagine(guild, d.members[guild.id][0], prompt)
    await wait_until(lambda: d.api.in_flight >= GLOBAL_CAP, "process 0 generating", 20)
    assert await d.stop(0, signal.SIGKILL) == -signal.SIGKILL
    d.api.latency = 0.2
    await d.launch(1)  # takes the dead process's jobs once their leases run out, and posts them over REST
    await d.wait_posted(prompts, timeout=60)
    db = await Database.open(d.url)
    try:
        rows = await db.fetchall("SELECT job_id, count(*) FROM generations WHERE status = 'ok' GROUP BY job_id")
        assert all(int(count) == 1 for _, count in rows)  # no job charged twice
    finally:
        await db.close()
    assert await d.stop(1) == 0


async def test_sigterm_mid_generation_exits_0_in_the_grace_and_every_job_is_posted_once(
    deployment: Deployment,
) -> None:
    d = deployment
    d.api.latency = 3.0
    await d.launch(0, BANANA_STOP_GRACE="1")
    await d.launch(1)
    prompts = [f"stopping {g.name}" for g in d.guilds[:6]]
    for guild, prompt in zip(d.guilds[:6], prompts, strict=True):
        await d.imagine(guild, d.members[guild.id][0], prompt)
    await wait_until(lambda: d.api.in_flight >= 2, "generations under way", 20)
    began = asyncio.get_running_loop().time()
    assert await d.stop(0) == 0
    # The 1 s grace and a clean close; the jobs it gave back did not wait for their leases.
    assert asyncio.get_running_loop().time() - began < LEASE + 5
    await d.wait_posted(prompts)
    assert await d.stop(1) == 0


async def test_after_both_restart_buttons_and_thread_replies_work_wherever_they_land(deployment: Deployment) -> None:
    d = deployment
    await d.launch(0)
    await d.launch(1)
    guild = d.guilds[1]  # shard 1
    alice = d.members[guild.id][0]
    await d.imagine(guild, alice, "restart a lighthouse")
    await d.wait_posted(["restart a lighthouse"])
    [first] = d.results_for("restart a lighthouse")
    await d.discord.wait_for_message(lambda m: m.channel_id == first.id)  # the thread
    assert [await d.stop(0), await d.stop(1)] == [0, 0]

    await d.launch(1)
    await d.launch(0)
    reroll = next(c for c in custom_ids(first) if c.startswith("job:reroll:"))
    click = await d.discord.click(first.id, reroll, alice)
    assert (await click.wait_callback()).json["type"] == 5
    await d.wait(lambda: len(d.results_for("restart a lighthouse")) == 2, "the reroll posted")
    ask = await d.discord.user_message(first.id, alice, "restart add a storm", reply_to=first.id)

    def replies() -> list[FakeMessage]:
        return [
            m
            for m in list(d.discord.messages.values())
            if m.author_id == d.discord.bot_user_id
            and has_image(m)
            and (m.message_reference or {}).get("message_id") == str(ask)
        ]

    await d.wait(lambda: bool(replies()), "the thread reply answered")
    assert [m.channel_id for m in replies()] == [first.id]
    # The edit carried the first image's turn, with the signature the API issued, from the database.
    sent = d.generations()[-1].json["contents"]
    assert sent[1]["role"] == "model"
    assert all(p.get("thoughtSignature") in d.api.issued_signatures for p in sent[1]["parts"])
    assert [await d.stop(0), await d.stop(1)] == [0, 0]


async def test_kill_9_while_a_relax_batch_runs_the_other_process_takes_over_its_polling_and_delivers(
    deployment: Deployment,
) -> None:
    d = deployment
    d.api.batch_seconds = 2.0
    relax = {"BANANA_RELAX_BATCH_SIZE": "2", "BANANA_RELAX_MAX_WAIT": "60", "BANANA_RELAX_POLL_MIN": "0.2"}
    await d.launch(0, **relax)  # alone at first: it is the batcher
    guilds = d.guilds[0::2][:2]
    prompts = [f"killed relax {g.name}" for g in guilds]
    for guild, prompt in zip(guilds, prompts, strict=True):
        member = d.members[guild.id][0]
        await d.discord.slash(guild.id, guild.channel_id, member, "imagine", {"prompt": prompt, "speed": "relax"})
    await d.wait(lambda: len(d.api.batches) == 1, "process 0 sent the batch", 20)
    assert await d.stop(0, signal.SIGKILL) == -signal.SIGKILL
    await d.launch(1, **relax)  # becomes the batcher once the dead one's lease runs out
    await d.wait_posted(prompts, timeout=60)
    for guild, prompt in zip(guilds, prompts, strict=True):
        [posted] = d.results_for(prompt)
        assert posted.interaction_id is None and f"<@{d.members[guild.id][0].id}>" in posted.content
    assert len(d.api.batches) == 1  # polled where it was, not sent again
    db = await Database.open(d.url)
    try:
        rows = await db.fetchall("SELECT job_id, count(*) FROM generations WHERE speed = 'relax' GROUP BY job_id")
        assert sorted(int(count) for _, count in rows) == [1, 1]  # each image logged and charged once
    finally:
        await db.close()
    assert await d.stop(1) == 0
