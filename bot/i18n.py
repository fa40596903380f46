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
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal

LOCALES_DIR = Path(__file__).parent / "locales"
FALLBACK = "en-US"


def _file_for(locale: str) -> Path:
    return LOCALES_DIR / f"{locale}.po"


@functools.cache
def _translations(locale: str) -> gettext.NullTranslations:
    """The compiled catalogue for a Discord locale, falling back to English key by key."""
    fallback = None if locale == FALLBACK else _translations(FALLBACK)
    path = _file_for(locale)
    if not path.is_file():
        assert fallback is not None, f"the English catalogue {path} is missing"
        return fallback
    with path.open("rb") as po:
        catalog = read_po(po, locale=_babel_locale(locale))
    buffer = io.BytesIO()
    write_mo(buffer, catalog)  # compile in memory: no build step, no .mo files to forget
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


def supported(locale: str | None) -> str:
    """The catalogue to use for a Discord locale ('id', 'zh-TW', ...): its own if we have one, else English."""
    if locale and _file_for(locale).is_file():
        return locale
    return FALLBACK


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
