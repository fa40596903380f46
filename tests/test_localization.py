"""Every language is complete and Discord accepts what we send it.

- Each catalogue (messages and slash commands) has every English key, with the same placeholders.
- The English command texts in the catalogue are exactly what the cogs declare (no drift).
- Every translated command and option name follows Discord's rules for localised names.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest
from babel.messages.pofile import read_po
from discord import app_commands

from bot.client import BananaBot, create_bot
from bot.config import load_settings
from bot.core.models import MODELS
from bot.i18n import FALLBACK, LOCALES_DIR, available_locales, t
from bot.ui.translator import command_key, placeholders

LANGUAGES = ["id", "fr", "zh-CN", "zh-TW"]
#: Discord's pattern for command and option names (the \w of Python's re covers \p{L} and \p{N}).
NAME = re.compile(r"^[-_\w]{1,32}$")


def entries(locale: str) -> dict[str, Any]:
    """key -> text (a tuple of forms for plural messages), from the messages and the commands files."""
    found: dict[str, Any] = {}
    for path in (LOCALES_DIR / f"{locale}.po", LOCALES_DIR / "commands" / f"{locale}.po"):
        with path.open("rb") as po:
            for message in read_po(po):
                if message.id:
                    key = message.id if isinstance(message.id, str) else message.id[0]
                    found[key] = message.string
    return found


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_the_languages_the_issue_asks_for_are_there() -> None:
    assert available_locales() == [FALLBACK, "fr", "id", "zh-CN", "zh-TW"]


@pytest.mark.parametrize("locale", LANGUAGES)
def test_every_key_is_translated_with_the_same_placeholders(locale: str) -> None:
    english, translated = entries(FALLBACK), entries(locale)
    assert sorted(english.keys() - translated.keys()) == [], f"{locale} is missing these"
    assert sorted(translated.keys() - english.keys()) == [], f"{locale} has keys English doesn't"
    for key, source in english.items():
        text = translated[key]
        source_forms = source if isinstance(source, tuple) else (source,)
        forms = text if isinstance(text, tuple) else (text,)
        assert all(forms), f"{locale} {key}: empty"
        expected = set().union(*(fields(f) for f in source_forms)) - {"n"}
        for form in forms:
            assert fields(form) - {"n"} == expected, f"{locale} {key}: {form!r}"


class Recorder(app_commands.Translator):
    """Notes every string of the command tree with its key and placeholders."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str, dict[str, Any], app_commands.TranslationContextLocation]] = []

    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        if locale is discord.Locale.french:  # once per string is enough
            self.seen.append((command_key(string, context), string.message, placeholders(string), context.location))
        return None


@pytest.fixture
async def bots(tmp_path: Path) -> AsyncIterator[list[BananaBot]]:
    """The bot's command tree for each model (options differ: only some models take a thinking level)."""
    built = []
    for index, model in enumerate(MODELS):
        env = {"GEMINI_API_KEY": "k", "BANANA_DATA_DIR": str(tmp_path / str(index)), "GEMINI_MODEL": model}
        bot = create_bot(load_settings(env, env_file=None), sync_commands=False)
        await bot.setup_hook()
        built.append(bot)
    yield built
    for bot in built:
        await bot.close()


async def test_the_english_command_texts_are_what_the_cogs_declare(bots: list[BananaBot]) -> None:
    english = entries(FALLBACK)
    languages = {t(code, "language.name") for code in available_locales()}
    labels = {spec.label for spec in MODELS.values()}
    recorder = Recorder()
    for bot in bots:
        await bot.tree.set_translator(recorder)
        await bot.command_payload()
    assert len(recorder.seen) > 100
    Where = app_commands.TranslationContextLocation
    for key, message, values, location in recorder.seen:
        if key is None:
            # Only choices may go untranslated, and only names that are the same in every language.
            assert location is Where.choice_name, message
            assert not re.search(r"[a-z]{2}", message) or message in languages | labels, message
            continue
        assert key in english, f"{key} ({message!r}) is not in the catalogue"
        assert english[key].format(**values) == message, key


@pytest.mark.parametrize("locale", LANGUAGES)
def test_translated_names_follow_discords_rules(locale: str) -> None:
    options: dict[str, list[str]] = defaultdict(list)
    for key, text in entries(locale).items():
        if key.startswith(("cmd.", "opt.")) and key.endswith(".name"):
            assert NAME.match(text) and text == text.lower(), f"{locale} {key}: {text!r}"
            if key.startswith("opt."):
                options[key.rsplit(".", 2)[0]].append(text)
        elif key.startswith("menu."):
            assert 1 <= len(text) <= 32, f"{locale} {key}: {text!r}"
        elif key.startswith(("cmd.", "opt.", "choice.")):
            assert 1 <= len(text.format(model="Nano Banana Pro")) <= 100, f"{locale} {key}: {text!r}"
    for command, names in options.items():
        assert len(names) == len(set(names)), f"{locale} {command}: two options share a name: {names}"
