"""Slash command names, descriptions and choices in the members' languages (discord.py's Translator).

Discord shows each member the command in their client's language when the synced payload carries
``name_localizations`` and ``description_localizations``. The texts come from the catalogue
(``bot/locales/commands/<locale>.po``), under keys derived from where the string sits, so the cogs stay
plain English:

- ``cmd.<command path>.name`` / ``.description`` (``cmd.character.create.description``),
- ``opt.<command path>.<option>.name`` / ``.description`` for options (``opt.imagine.prompt.name``),
- ``menu.<name>.name`` for context-menu commands (``menu.edit_image.name``),
- choices only where the cog gave one a key: ``locale_str("today", key="choice.period.today")``.

Other ``locale_str`` extras are placeholders (``{model}`` in "Create an image with {model} ...").
English is Discord's default text, so it gets no localization; a language without a message for a key
gets none either, and Discord falls back to English.
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.app_commands import TranslationContextLocation as Where
from discord.app_commands import TranslationContextTypes, locale_str

from bot.i18n import FALLBACK, own_translation

_NAME = {Where.command_name, Where.group_name, Where.parameter_name, Where.choice_name}


def command_key(string: locale_str, context: TranslationContextTypes) -> str | None:
    """The catalogue key for a string of the command tree, or None if it is not translated."""
    explicit = string.extras.get("key")
    if explicit:
        return str(explicit)
    data: object = context.data
    suffix = "name" if context.location in _NAME else "description"
    if isinstance(data, app_commands.ContextMenu):
        return f"menu.{data.name.lower().replace(' ', '_')}.{suffix}"
    if isinstance(data, app_commands.Command | app_commands.Group):
        return f"cmd.{data.qualified_name.replace(' ', '.')}.{suffix}"
    if isinstance(data, app_commands.Parameter):
        return f"opt.{data.command.qualified_name.replace(' ', '.')}.{data.name}.{suffix}"
    return None


def placeholders(string: locale_str) -> dict[str, Any]:
    return {name: value for name, value in string.extras.items() if name != "key"}


class CatalogueTranslator(app_commands.Translator):
    async def translate(
        self, string: locale_str, locale: discord.Locale, context: TranslationContextTypes
    ) -> str | None:
        if locale.value == FALLBACK or locale.value.startswith("en-"):
            return None
        key = command_key(string, context)
        text = own_translation(locale.value, key) if key else None
        if text is None:
            return None
        return text.format(**placeholders(string)) if string.extras else text
