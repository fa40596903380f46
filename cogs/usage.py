"""/usage: who used what, how fast, at what cost. `/usage server` for members with Manage Server (the whole
server, or one member); `/usage me` for anyone, about themselves. An embed, a chart, and a CSV on request.
"""

from __future__ import annotations

import asyncio
import functools
import io
import time

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.i18n import FALLBACK, duration, money, supported, t, tn
from bot.media.charts import ChartLabels, usage_chart
from bot.ui.context import Services
from bot.ui.results import model_label
from storage.guild_settings import get_guild_settings
from storage.moderation import refusals_by_rule
from storage.reports import PERIODS, Scope, SpeedUsage, UsageReport, csv_text, period_bounds, usage_report

PERIOD_CHOICES = [app_commands.Choice(name=locale_str(p, key=f"choice.period.{p}"), value=p) for p in PERIODS]


class Usage(commands.Cog):
    group = app_commands.Group(name="usage", description="Image usage, speed and cost.", guild_only=True)

    def __init__(self, bot: commands.Bot | commands.AutoShardedBot, services: Services) -> None:
        self.bot = bot
        self.services = services

    @group.command(name="server", description="This server's usage (Manage Server), or one member's.")
    @app_commands.describe(
        period="Which days (default: 30 days).", user="Only this member.", csv="Attach the rows as CSV."
    )
    @app_commands.choices(period=PERIOD_CHOICES)
    async def server(
        self,
        interaction: discord.Interaction,
        period: str = "30d",
        user: discord.Member | None = None,
        csv: bool = False,
    ) -> None:
        if not interaction.permissions.manage_guild and (user is None or user.id != interaction.user.id):
            await interaction.response.send_message(t(str(interaction.locale), "usage.not_allowed"), ephemeral=True)
            return
        await self._report(interaction, period, user.id if user else None, csv)

    @group.command(name="me", description="Your own usage in this server.")
    @app_commands.describe(period="Which days (default: 30 days).", csv="Attach the rows as CSV.")
    @app_commands.choices(period=PERIOD_CHOICES)
    async def me(self, interaction: discord.Interaction, period: str = "30d", csv: bool = False) -> None:
        await self._report(interaction, period, interaction.user.id, csv)

    async def _report(self, interaction: discord.Interaction, period: str, user_id: int | None, with_csv: bool) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        locale = str(interaction.locale)
        since, until = period_bounds(period, time.time())
        scope = Scope(since, until, guild_id=interaction.guild_id, user_id=user_id)
        report = await usage_report(self.services.db, scope)
        title = t(locale, f"usage.period.{period}")
        if user_id is not None:
            title = t(locale, "usage.title_user", period=title, user=f"<@{user_id}>")
        embed = usage_embed(locale, report, title)
        if user_id is None and interaction.guild_id is not None:
            budget = (await get_guild_settings(self.services.db, interaction.guild_id)).monthly_budget_usd
            if budget is not None:
                spent = await self.services.jobs.admission.spent_this_month(interaction.guild_id)
                value = t(
                    locale,
                    "usage.budget_value",
                    spent=money(locale, spent),
                    budget=money(locale, budget),
                    left=money(locale, max(0.0, budget - spent)),
                )
                embed.add_field(name=t(locale, "usage.budget"), value=value, inline=True)
        if interaction.guild_id is not None:
            refused = await refusals_by_rule(self.services.db, interaction.guild_id, since, until, user_id=user_id)
            if refused:
                lines = [f"{t(locale, f'rule.{rule}')}: {count}" for rule, count in refused.items()]
                embed.add_field(name=t(locale, "usage.refusals"), value="\n".join(lines), inline=False)
        chart = await asyncio.to_thread(
            usage_chart,
            report.days,
            report.seconds_histogram,
            labels=chart_labels(locale, period),
            fallback=chart_labels(FALLBACK, period),
        )
        files = [discord.File(io.BytesIO(chart.png), filename="usage.png")]
        embed.set_image(url="attachment://usage.png")
        if with_csv:
            text = await csv_text(self.services.db, scope)
            files.append(discord.File(io.BytesIO(text.encode()), filename=f"usage-{period}.csv"))
        await interaction.followup.send(embed=embed, files=files, ephemeral=True)


def chart_labels(locale: str, period: str) -> ChartLabels:
    """The chart's words in `locale`. The title names the period only: a mention can't be drawn."""
    return ChartLabels(
        language=supported(locale),
        title=t(locale, "usage.title", period=t(locale, f"usage.period.{period}")),
        per_day=t(locale, "usage.chart.per_day"),
        images=t(locale, "usage.chart.images"),
        cost=t(locale, "usage.chart.cost"),
        latency=t(locale, "usage.chart.latency"),
        seconds=t(locale, "usage.chart.seconds"),
        median=t(locale, "usage.chart.median"),
        p95=t(locale, "usage.chart.p95"),
        empty=t(locale, "usage.chart.empty"),
        money=functools.partial(money, locale),
    )


def usage_embed(locale: str, report: UsageReport, title: str) -> discord.Embed:
    embed = discord.Embed(title=t(locale, "usage.title", period=title), colour=discord.Colour.gold())
    if report.requests == 0:
        embed.description = t(locale, "usage.nothing")
        return embed
    embed.add_field(
        name=t(locale, "usage.images"),
        value=tn(locale, "usage.images_value", report.images, requests=report.requests),
        inline=True,
    )
    embed.add_field(
        name=t(locale, "usage.outcomes"),
        value=t(
            locale,
            "usage.outcomes_value",
            success=f"{report.success_rate:.0%}",
            blocked=f"{report.blocked_rate:.0%}",
        ),
        inline=True,
    )
    embed.add_field(name=t(locale, "usage.cost"), value=money(locale, report.cost_usd), inline=True)
    if report.relax_used:  # a server that never asked for relax sees /usage as before
        speeds = [
            speed_line(locale, report.speeds["fast"], "usage.speed_fast", "usage.speed_fast_none"),
            speed_line(locale, report.speeds["relax"], "usage.speed_relax", "usage.speed_relax_none"),
        ]
        embed.add_field(name=t(locale, "usage.speeds"), value="\n".join(speeds), inline=False)
    if report.errors:
        errors = ", ".join(f"{name} {count}" for name, count in sorted(report.errors.items(), key=lambda e: -e[1]))
        embed.add_field(name=t(locale, "usage.errors"), value=errors[:1024], inline=False)
    lines = []
    for row in report.latency[:8]:
        gen = " / ".join(duration(locale, ms / 1000, threshold=3) for ms in row.generation_ms)
        wait = " / ".join(duration(locale, ms / 1000, threshold=3) for ms in row.queue_ms)
        lines.append(
            t(
                locale,
                "usage.latency_line",
                model=model_label(row.model),
                size=row.size,
                n=row.count,
                gen=gen,
                wait=wait,
            )
        )
    if lines:
        # With relax requests in the period, this table is of fast ones only (storage.reports): say so.
        name = t(locale, "usage.latency_fast" if report.relax_used else "usage.latency")
        embed.add_field(name=name, value="\n".join(lines)[:1024], inline=False)
    if report.top_users:
        top = [
            tn(locale, "usage.top_line", images, user=f"<@{user}>", cost=money(locale, cost))
            for user, images, cost in report.top_users
        ]
        embed.add_field(name=t(locale, "usage.top"), value="\n".join(top)[:1024], inline=False)
    return embed


def speed_line(locale: str, usage: SpeedUsage, key: str, none_key: str) -> str:
    """One speed's images, cost, and p50 / p95 of its time (generating for fast, turnaround for relax)."""
    if usage.images == 0:
        return t(locale, none_key)
    p50, p95 = (duration(locale, ms / 1000, threshold=3) for ms in usage.total_ms[:2])
    return tn(locale, key, usage.images, cost=money(locale, usage.cost_usd), p50=p50, p95=p95)
