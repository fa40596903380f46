"""/usage and `banana-bot report` with known data: the known figures, a valid PNG and CSV, and who may see what."""

from __future__ import annotations

import csv
import functools
import io
import time
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import format_report
from bot.i18n import duration, money
from storage.generations import GenerationRow, insert_generation
from storage.reports import Scope, parse_since, period_bounds, usage_report
from tests.bot_harness import BotHarness, embed_fields
from tests.fake_discord import MANAGE_GUILD, MEMBER_PERMISSIONS, FakeMessage

pytestmark = pytest.mark.timeout(60)
MODEL = "gemini-3-pro-image-preview"


def row(guild: int, user: int, *, status: str = "ok", total_ms: float = 1000, queue_ms: float = 0, age: float = 3600,
        error_class: str | None = None, speed: str = "fast") -> GenerationRow:  # fmt: skip
    relax = speed == "relax"
    return GenerationRow(
        created_at=time.time() - age,
        guild_id=guild,
        channel_id=1,
        user_id=user,
        command="imagine",
        provider="gemini",
        model=MODEL,
        size="1K",
        aspect_ratio="1:1",
        thinking=None,
        reference_count=0,
        prompt="secret prompt",
        status=status,
        error_class=error_class,
        total_ms=total_ms if status == "ok" else None,
        queue_ms=queue_ms,
        cost_usd=(0.067 if relax else 0.134) if status == "ok" else 0.0,
        speed=speed,
        batch_id="batch-1" if relax else None,
    )


async def seed(h: BotHarness) -> None:
    assert h.bot is not None
    db = h.bot.jobs.db
    g, alice, bob = h.guild.id, h.alice.id, h.bob.id
    for n in range(6):
        await insert_generation(db, row(g, alice, total_ms=1000 * (n + 1), queue_ms=100 * n))
    await insert_generation(db, row(g, alice, status="blocked", error_class="blocked"))
    await insert_generation(db, row(g, bob, total_ms=10_000))
    await insert_generation(db, row(g, bob, total_ms=20_000, queue_ms=3000))
    await insert_generation(db, row(g, bob, status="error", error_class="timeout"))
    await insert_generation(db, row(g, alice, age=40 * 86400))  # outside 30 days
    await insert_generation(db, row(g + 1, alice))  # another server


async def usage(h: BotHarness, sub: str, user: object, options: dict[str, object]) -> FakeMessage:
    inter = await h.discord.slash(h.guild.id, h.guild.channel_id, user, "usage", options, subcommand=sub)  # type: ignore[arg-type]
    return await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and not m.loading)


async def test_usage_gives_the_known_figures_a_chart_and_a_csv(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start()
        await seed(h)
        admin = h.guild.add_member("admin", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
        answer = await usage(h, "server", admin, {"period": "30d", "csv": True})
        assert answer.ephemeral
        fields = embed_fields(answer)
        assert fields["Images"] == "8 images from 10 requests"
        assert fields["Outcomes"] == "80% succeeded, 10% blocked"
        assert fields["Cost"] == "$1.07"
        assert fields["Errors by kind"] == "timeout 1"
        # Nearest-rank percentiles of 1-6, 10 and 20 s: p50 4 s, p95 and p99 20 s; queue p99 3 s.
        assert fields["Time p50 / p95 / p99 (generating · waiting in line)"] == (
            "Nano Banana Pro 1K (8): 4 sec / 20 sec / 20 sec · 0 sec / 3 sec / 3 sec"
        )
        assert fields["Top members"].splitlines() == [
            f"<@{h.alice.id}>: 6 images, $0.804",
            f"<@{h.bob.id}>: 2 images, $0.268",
        ]
        assert "Fast / Relax" not in fields  # no relax request in the period: /usage as before
        png = next(f for f in answer.files if f.filename == "usage.png")
        with Image.open(io.BytesIO(png.data)) as chart:
            assert chart.format == "PNG" and chart.size == (1200, 700)
        table = next(f for f in answer.files if f.filename.endswith(".csv"))
        rows = list(csv.DictReader(io.StringIO(table.data.decode())))
        assert len(rows) == 10 and {r["status"] for r in rows} == {"ok", "blocked", "error"}
        assert {(r["speed"], r["batch_id"]) for r in rows} == {("fast", "")}
        assert "prompt" not in rows[0]  # prompts stay out of exports

        mine = await usage(h, "me", h.bob, {"period": "30d"})
        assert embed_fields(mine)["Images"] == "2 images from 3 requests"

        # The owner's CLI report gives the same figures as the embed.
        assert h.bot is not None
        since, until = period_bounds("30d", time.time())
        text = format_report(await usage_report(h.bot.jobs.db, Scope(since, until, guild_id=h.guild.id), top=10))
        assert "requests 10, images 8, success 80.0%, blocked 10.0%, cost $1.07" in text
        assert "by speed" not in text and "\nlatency (s)" in text


async def seed_relax(h: BotHarness) -> None:
    """Relax requests next to seed()'s fast ones: alice's four images took 2, 5, 10 and 90 minutes from request
    to result (queue_ms as the batch waited), bob's one failed."""
    assert h.bot is not None
    g = h.guild.id
    for minutes in (2, 5, 10, 90):
        await insert_generation(
            h.bot.jobs.db, row(g, h.alice.id, total_ms=minutes * 60_000, queue_ms=60_000, speed="relax")
        )
    await insert_generation(h.bot.jobs.db, row(g, h.bob.id, status="error", error_class="timeout", speed="relax"))


async def test_usage_shows_fast_and_relax_apart_when_relax_was_used(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start()
        await seed(h)
        await seed_relax(h)
        admin = h.guild.add_member("admin", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
        answer = await usage(h, "server", admin, {"period": "30d", "csv": True})
        fields = embed_fields(answer)
        assert fields["Images"] == "12 images from 15 requests"
        assert fields["Cost"] == "$1.34"  # 8 x $0.134 + 4 x $0.067
        # Fast: 1-6, 10 and 20 s (p50 the 4th of 8, p95 the 8th); relax: 2, 5, 10 and 90 min (p50 the 2nd of 4).
        assert fields["Fast / Relax"].splitlines() == [
            "Fast: 8 images, $1.07 · generating p50 4 sec / p95 20 sec",
            "Relax: 4 images, $0.268 · turnaround p50 5 min / p95 90 min",
        ]
        # The per-model table and the chart stay about generating: fast requests only, and it says so.
        assert "Time p50 / p95 / p99 (generating · waiting in line)" not in fields
        assert fields["Fast: time p50 / p95 / p99 (generating · waiting in line)"] == (
            "Nano Banana Pro 1K (8): 4 sec / 20 sec / 20 sec · 0 sec / 3 sec / 3 sec"
        )
        table = next(f for f in answer.files if f.filename.endswith(".csv"))
        rows = list(csv.DictReader(io.StringIO(table.data.decode())))
        assert [(r["speed"], r["batch_id"]) for r in rows].count(("relax", "batch-1")) == 5

        # Only bob's failed relax request: the split shows, with no relax images.
        mine = await usage(h, "me", h.bob, {"period": "30d"})
        assert embed_fields(mine)["Fast / Relax"].splitlines() == [
            "Fast: 2 images, $0.268 · generating p50 10 sec / p95 20 sec",
            "Relax: no images",
        ]

        # In the member's language (durations too).
        inter = await h.discord.slash(
            h.guild.id, h.guild.channel_id, admin, "usage", {"period": "30d"}, subcommand="server", locale="fr"
        )
        french = await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and not m.loading)
        sec, cost = functools.partial(duration, "fr", threshold=3), functools.partial(money, "fr")
        assert embed_fields(french)["Rapide / Détente"].splitlines() == [
            f"Rapide : 8 images, {cost(8 * 0.134)} · génération p50 {sec(4)} / p95 {sec(20)}",
            f"Détente : 4 images, {cost(4 * 0.067)} · délai total p50 {sec(300)} / p95 {sec(5400)}",
        ]
        assert sec(5400).startswith("90") and sec(5400).endswith("min")

        # The owner's CLI report gives the same figures.
        assert h.bot is not None
        since, until = period_bounds("30d", time.time())
        text = format_report(await usage_report(h.bot.jobs.db, Scope(since, until, guild_id=h.guild.id), top=10))
        assert "requests 15, images 12" in text
        lines = text.splitlines()
        header = next(n for n, line in enumerate(lines) if line.startswith("by speed"))
        assert [line.split() for line in lines[header + 1 : header + 3]] == [
            ["fast", "10", "8", "$1.07", "4.0", "20.0", "20.0"],
            ["relax", "5", "4", "$0.27", "300.0", "5400.0", "5400.0"],
        ]
        assert "\nfast latency (s)" in text


async def test_members_see_only_their_own(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start()
        await seed(h)
        refused = await usage(h, "server", h.bob, {})
        assert "Only members with Manage Server" in refused.content and not refused.embeds
        refused = await usage(h, "server", h.bob, {"user": h.alice})
        assert "Only members with Manage Server" in refused.content
        own = await usage(h, "server", h.bob, {"user": h.bob})
        assert embed_fields(own)["Images"] == "2 images from 3 requests"


def test_periods_and_since() -> None:
    now = 1_795_000_000.0  # 2026-11-18 11:06:40 UTC
    assert period_bounds("today", now)[0] == 1_794_960_000.0
    assert period_bounds("7d", now)[0] == now - 7 * 86400
    assert period_bounds("month", now)[0] == 1_793_491_200.0  # 2026-11-01
    assert period_bounds("all", now)[0] == 0.0
    assert parse_since("12h", now) == now - 12 * 3600
    assert parse_since("2026-11-01", now) == 1_793_491_200.0
    with pytest.raises(ValueError, match=r"expected e\.g\. 7d"):
        parse_since("soon", now)


def test_the_report_command_prints_the_figures_and_writes_the_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], database_target: str
) -> None:
    """On SQLite (the data folder's file) and on PostgreSQL (BANANA_DATABASE_URL), the same figures."""
    import asyncio as aio

    from bot.cli import main
    from storage.db import Database, is_postgres_url

    target = database_target if is_postgres_url(database_target) else str(tmp_path / "data" / "banana.sqlite3")
    if is_postgres_url(target):
        monkeypatch.setenv("BANANA_DATABASE_URL", target)

    async def fill() -> None:
        db = await Database.open(target)
        for n in range(4):
            await insert_generation(db, row(42, 7, total_ms=1000 * (n + 1)))
        await insert_generation(db, row(42, 8, status="error", error_class="rate_limited"))
        await insert_generation(db, row(43, 7))
        await db.close()

    aio.run(fill())
    monkeypatch.setenv("BANANA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no .env here
    out_csv = tmp_path / "rows.csv"
    assert main(["report", "--since", "7d", "--guild", "42", "--csv", str(out_csv)]) == 0
    printed = capsys.readouterr().out
    assert "server 42" in printed and "requests 5, images 4, success 80.0%" in printed and "rate_limited 1" in printed
    assert "by speed" not in printed  # no relax request: the report as before
    assert len(out_csv.read_text().splitlines()) == 1 + 5
    assert main(["report", "--since", "soon"]) == 2

    async def fill_relax() -> None:
        db = await Database.open(target)
        for minutes in (3, 30):
            await insert_generation(db, row(42, 7, total_ms=minutes * 60_000, speed="relax"))
        await db.close()

    aio.run(fill_relax())
    assert main(["report", "--since", "7d", "--guild", "42", "--csv", str(out_csv)]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    header = next(n for n, line in enumerate(lines) if line.startswith("by speed (s)"))
    assert "relax: turnaround" in lines[header]
    # Fast: 1-4 s (p50 the 2nd of 4); relax: 3 and 30 min (p50 the 1st of 2).
    assert [line.split() for line in lines[header + 1 : header + 3]] == [
        ["fast", "5", "4", "$0.54", "2.0", "4.0", "4.0"],
        ["relax", "2", "2", "$0.13", "180.0", "1800.0", "1800.0"],
    ]
    assert "relax,batch-1" in out_csv.read_text()
