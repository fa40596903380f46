"""Monthly budgets: set in /settings, shown in /usage, and they hold, also under a burst."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.bot_harness import BotHarness, embed_fields, has_image
from tests.fake_discord import MANAGE_GUILD, MEMBER_PERMISSIONS, FakeMessage

pytestmark = pytest.mark.timeout(60)


async def set_budget(h: BotHarness, usd: float) -> FakeMessage:
    admin = h.guild.add_member("admin", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
    inter = await h.discord.slash(
        h.guild.id, h.guild.channel_id, admin, "settings", {"monthly_budget": usd}, subcommand="general"
    )
    return await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id)


async def test_the_budget_refuses_the_job_that_would_cross_it(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        await h.start()
        answer = await set_budget(h, 0.30)
        fields = embed_fields(answer)
        assert fields["Monthly budget"] == "$0.00 spent of $0.30 this month (UTC)"
        assert fields["Estimated cost of one image"] == "$0.134 at 1K"
        await h.wait_result(await h.imagine(h.alice, "one"))
        await h.wait_result(await h.imagine(h.bob, "two"))
        refused = await h.wait_ephemeral(await h.imagine(h.alice, "three"))
        assert "This needs about $0.134" in refused.content and "left of its $0.30 monthly budget" in refused.content
        assert "<t:" in refused.content
        assert len(h.gemini_requests()) == 2
        # /usage shows the spending against the budget.
        admin = next(m.user for m in h.guild.members.values() if m.user.name == "admin")
        inter = await h.discord.slash(h.guild.id, h.guild.channel_id, admin, "usage", {}, subcommand="server")
        usage = await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and not m.loading)
        assert embed_fields(usage)["Budget this month"].endswith("of $0.30 ($0.027 left)")


async def test_a_burst_cannot_overshoot_the_budget_together(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        members = [h.guild.add_member(f"m{n}") for n in range(6)]
        await h.start(BANANA_GUILD_CONCURRENT="6", BANANA_MAX_CONCURRENT="6")
        await set_budget(h, 0.50)
        h.api.latency = 0.5
        inters = await asyncio.gather(*(h.imagine(m, f"burst {n}") for n, m in enumerate(members)))
        outcomes = await asyncio.gather(
            *(
                h.discord.wait_for_message(
                    lambda m, i=i: m.interaction_id == i.id and (has_image(m) or m.ephemeral), timeout=20
                )
                for i in inters
            )
        )
        images = [m for m in outcomes if has_image(m)]
        refused = [m for m in outcomes if m.ephemeral]
        assert len(images) == 3 and len(refused) == 3  # 3 x $0.134 fits in $0.50; a 4th would not
        assert all("monthly budget" in m.content for m in refused)
        assert len(h.gemini_requests()) == 3


async def test_a_failed_job_gives_its_budget_back(tmp_path: Path) -> None:
    from tests.fake_image_api import Fault

    async with BotHarness(tmp_path) as h:
        await h.start()
        await set_budget(h, 0.15)
        h.api.script(Fault.prompt_block())
        await h.wait_ephemeral(await h.imagine(h.alice, "blocked"))
        await h.wait_result(await h.imagine(h.alice, "this one fits"))
