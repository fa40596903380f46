"""The same flows in Indonesian and Traditional Chinese, end to end against the fake Discord: the synced
commands carry their localisations, public messages follow the server's language (or the one its admins
pinned), private ones the member's, and the prompt reaches the model exactly as typed."""

from __future__ import annotations

import pytest

from bot.i18n import money, t, tn
from tests.bot_harness import BotHarness, embed_fields
from tests.fake_discord import MANAGE_GUILD, MEMBER_PERMISSIONS, FakeInteraction, FakeMessage
from tests.fake_image_api import Fault

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def h(harness: BotHarness) -> BotHarness:
    return harness


def synced(h: BotHarness, name: str) -> dict[str, object]:
    return next(c for c in h.discord.synced_commands[None] if c["name"] == name)


@pytest.mark.parametrize("locale", ["id", "zh-TW"])
async def test_synced_commands_carry_names_and_descriptions_in_every_language(h: BotHarness, locale: str) -> None:
    imagine = synced(h, "imagine")
    names, descriptions = imagine["name_localizations"], imagine["description_localizations"]
    assert isinstance(names, dict) and isinstance(descriptions, dict)
    assert set(names) >= {"id", "fr", "zh-CN", "zh-TW"} and "en-US" not in names
    assert names[locale] == t(locale, "cmd.imagine.name") != "imagine"
    assert descriptions[locale] == t(locale, "cmd.imagine.description").format(model="Nano Banana Pro")
    prompt = next(o for o in imagine["options"] if o["name"] == "prompt")  # type: ignore[attr-defined]
    assert prompt["name_localizations"][locale] == t(locale, "opt.imagine.prompt.name")
    assert prompt["description_localizations"][locale] == t(locale, "opt.imagine.prompt.description")

    usage = synced(h, "usage")
    server = next(o for o in usage["options"] if o["name"] == "server")  # type: ignore[attr-defined]
    period = next(o for o in server["options"] if o["name"] == "period")
    today = next(c for c in period["choices"] if c["value"] == "today")
    assert today["name_localizations"][locale] == t(locale, "choice.period.today") != "today"
    menu = next(c for c in h.discord.synced_commands[None] if c.get("type") == 3 and c["name"] == "Edit image")
    assert menu["name_localizations"][locale] == t(locale, "menu.edit_image.name")


async def imagine(h: BotHarness, prompt: str, *, locale: str, guild_locale: str) -> FakeInteraction:
    return await h.discord.slash(
        h.guild.id, h.guild.channel_id, h.alice, "imagine", {"prompt": prompt}, locale=locale, guild_locale=guild_locale
    )


@pytest.mark.parametrize("locale", ["id", "zh-TW"])
async def test_imagine_speaks_the_servers_language(h: BotHarness, locale: str) -> None:
    prompt = "kucing oranye di jendela" if locale == "id" else "窗台上的橘貓"
    inter = await imagine(h, prompt, locale=locale, guild_locale=locale)
    result = await h.wait_result(inter)

    # The status while it waited and ran, in the server's language.
    generating = t(locale, "status.generating", size="1K", elapsed="").split("1K")[0]
    assert any(generating in (e.get("content") or "") for e in result.edits), result.edits
    # The result: embed fields, buttons and the thread hint.
    fields = embed_fields(result)
    keys = ("result.model", "result.size", "result.time", "result.cost")
    assert all(t(locale, key) in fields for key in keys)
    assert t(locale, "result.cost") != t("en-US", "result.cost")  # ("Model" is Indonesian too)
    labels = [c.get("label") for row in result.components for c in row["components"]]
    assert t(locale, "button.reroll") in labels and t("en-US", "button.reroll") not in labels
    await h.discord.wait_for_message(lambda m: m.content == t(locale, "result.thread_hint"))
    # The prompt went to the model exactly as typed: nothing translated behind the member's back.
    assert h.sent_texts() == [prompt]


@pytest.mark.parametrize("locale", ["id", "zh-TW"])
async def test_errors_are_private_and_in_the_members_language(h: BotHarness, locale: str) -> None:
    h.api.script(Fault.prompt_block("PROHIBITED_CONTENT"))
    # The server speaks English; the member's own app is set to `locale`.
    inter = await imagine(h, "something not allowed", locale=locale, guild_locale="en-US")
    error = await h.wait_ephemeral(inter)
    assert t(locale, "error.blocked", reason=t(locale, "blocked.reason.prohibited")) in error.content
    assert t(locale, "error.not_charged") in error.content


async def usage_me(h: BotHarness, locale: str) -> FakeMessage:
    inter = await h.discord.slash(
        h.guild.id, h.guild.channel_id, h.alice, "usage", {"period": "30d"}, subcommand="me", locale=locale
    )
    return await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and not m.loading)


@pytest.mark.parametrize("locale", ["id", "zh-TW"])
async def test_usage_in_the_members_language_with_its_plurals_and_money(h: BotHarness, locale: str) -> None:
    for prompt in ("a", "b"):
        await h.wait_result(await imagine(h, prompt, locale=locale, guild_locale=locale))
    answer = await usage_me(h, locale)
    assert answer.ephemeral
    fields = embed_fields(answer)
    assert fields[t(locale, "usage.images")] == tn(locale, "usage.images_value", 2, requests=2)
    cost = fields[t(locale, "usage.cost")]
    assert cost.startswith(money(locale, 0.26)[:2]) or "US$" in cost or "$" in cost


async def test_a_pinned_language_rules_public_messages_but_not_private_ones(h: BotHarness) -> None:
    admin = h.guild.add_member("admin", permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
    inter = await h.discord.slash(
        h.guild.id, h.guild.channel_id, admin, "settings", {"language": "zh-TW"}, subcommand="general"
    )
    saved = await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and not m.loading)
    assert embed_fields(saved)[t("en-US", "settings.language")] == t("zh-TW", "language.name")

    # An English server and an Indonesian member: the public result is in the pinned Traditional Chinese.
    result = await h.wait_result(await imagine(h, "a cat", locale="id", guild_locale="en-US"))
    assert t("zh-TW", "result.model") in embed_fields(result)
    # A private error still follows the member's own language.
    h.api.script(Fault.prompt_block("PROHIBITED_CONTENT"))
    error = await h.wait_ephemeral(await imagine(h, "not allowed", locale="id", guild_locale="en-US"))
    assert t("id", "error.not_charged") in error.content

    # Back to the server's own language; it survives a restart in the database, not just in memory.
    await h.restart()
    result = await h.wait_result(await imagine(h, "a dog", locale="id", guild_locale="en-US"))
    assert t("zh-TW", "result.model") in embed_fields(result)
    inter = await h.discord.slash(
        h.guild.id, h.guild.channel_id, admin, "settings", {"language": "default"}, subcommand="general"
    )
    await h.discord.wait_for_message(lambda m: m.interaction_id == inter.id and not m.loading)
    result = await h.wait_result(await imagine(h, "a bird", locale="id", guild_locale="en-US"))
    assert t("en-US", "result.model") in embed_fields(result)
