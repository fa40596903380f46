"""The message catalogue: every string a member sees comes from here.

Messages live in gettext `.po` files under ``bot/locales/<locale>.po`` (a translator edits those, never
Python). The msgid is a stable key such as ``imagine.queued``; the English file holds the English text.
Placeholders use ``{name}``; plurals use gettext's plural forms (``msgid_plural``), chosen by ``n``.
Numbers, money and durations are formatted for the locale by Babel.
"""

from __future__ import annotations

import functools
import gettext
import io
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.dates import format_timedelta
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal

LOCALES_DIR = Path(__file__).parent / "locales"
FALLBACK = "en-US"


def _file_for(locale: str) -> Path:
    return LOCALES_DIR / f"{locale}.po"


def _files_for(locale: str) -> list[Path]:
    """The messages, then the slash commands' names and descriptions (kept apart: Discord rules them)."""
    return [p for p in (_file_for(locale), LOCALES_DIR / "commands" / f"{locale}.po") if p.is_file()]


def _read_catalog(locale: str) -> Catalog:
    catalog = Catalog(locale=_babel_locale(locale))
    for path in _files_for(locale):
        with path.open("rb") as po:
            part = read_po(po, locale=_babel_locale(locale))
        if path == _file_for(locale):  # its header says the language's plural forms
            catalog.mime_headers = part.mime_headers
        for message in part:
            if message.id:
                catalog[message.id] = message
    return catalog


@functools.cache
def _translations(locale: str) -> gettext.NullTranslations:
    """The compiled catalogue for a Discord locale, falling back to English key by key."""
    fallback = None if locale == FALLBACK else _translations(FALLBACK)
    path = _file_for(locale)
    if not path.is_file():
        assert fallback is not None, f"the English catalogue {path} is missing"
        return fallback
    buffer = io.BytesIO()
    write_mo(buffer, _read_catalog(locale))  # compile in memory: no build step, no .mo files to forget
    buffer.seek(0)
    translations = gettext.GNUTranslations(buffer)
    if fallback is not None:
        translations.add_fallback(fallback)
    return translations


@functools.cache
def _babel_locale(locale: str) -> Locale:
    try:
        return Locale.parse(locale, sep="-")
    except (UnknownLocaleError, ValueError):
        return Locale.parse(FALLBACK, sep="-")


@functools.cache
def _own_messages(locale: str) -> dict[str, str]:
    """The singular messages that `locale`'s own files have (no English fallback)."""
    messages: dict[str, str] = {}
    for message in _read_catalog(locale):
        if isinstance(message.id, str) and isinstance(message.string, str) and message.id and message.string:
            messages[message.id] = message.string
    return messages


def own_translation(locale: str, key: str) -> str | None:
    """`key` in `locale`'s own file, or None where that language has no message for it (no fallback)."""
    return _own_messages(locale).get(key)


def available_locales() -> list[str]:
    """Every language with a catalogue, English first."""
    others = sorted(p.stem for p in LOCALES_DIR.glob("*.po") if p.stem != FALLBACK)
    return [FALLBACK, *others]


def supported(locale: str | None) -> str:
    """The catalogue to use for a Discord locale ('id', 'zh-TW', ...): its own if we have one, else English."""
    return locale if locale and _has_catalogue(locale) else FALLBACK


@functools.cache
def _has_catalogue(locale: str) -> bool:
    # Asked for every message shown: a file-system lookup each time would cost the event loop on every job.
    return _file_for(locale).is_file()


def t(locale: str | None, key: str, /, **values: object) -> str:
    """The message `key` in `locale`, with ``{placeholders}`` filled in."""
    text = _translations(supported(locale)).gettext(key)
    if text == key:
        raise KeyError(f"message {key!r} is not in the catalogue")
    return text.format(**values) if values else text


def tn(locale: str | None, key: str, n: int, /, **values: object) -> str:
    """A message with a count: the plural form for `n` in `locale`; ``{n}`` is available to the text."""
    text = _translations(supported(locale)).ngettext(key, key + ".plural", n)
    if text in (key, key + ".plural"):
        raise KeyError(f"message {key!r} is not in the catalogue")
    return text.format(n=format_decimal(n, locale=_babel_locale(supported(locale))), **values)


def money(locale: str | None, usd: float) -> str:
    """US dollars for people: cents, or a tenth of a cent for prices under a dollar that have one ($0.134)."""
    places = 3 if usd < 1 and round(usd, 2) != round(usd, 3) else 2
    fmt = "¤#,##0." + "0" * places
    return format_currency(usd, "USD", format=fmt, locale=_babel_locale(supported(locale)), currency_digits=False)


def duration(locale: str | None, seconds: float, *, threshold: float = 1.5) -> str:
    """'34 sec', '2 min': rounded the way people say it; a larger threshold keeps seconds longer (a ticking clock)."""
    whole = max(0, round(seconds))
    return format_timedelta(whole, threshold=threshold, format="short", locale=_babel_locale(supported(locale)))
