"""The message catalogue: every key the code asks for exists, and every message formats."""

from __future__ import annotations

import re
import string
from pathlib import Path

from babel.messages.pofile import read_po

from bot.i18n import LOCALES_DIR, t

ROOT = Path(__file__).resolve().parents[1]
# t(locale, "key", ...) / tn(locale, "key", n, ...) with a literal key; f-string keys are checked below.
LITERAL = re.compile(r"""\btn?\(\s*[^,()]+,\s*"([a-z_][a-z0-9_.]*)\"""")
DYNAMIC = re.compile(r"""\btn?\(\s*[^,()]+,\s*f"([a-z_.]*)\{""")


def catalogue() -> dict[str, object]:
    with (LOCALES_DIR / "en-US.po").open("rb") as po:
        return {m.id if isinstance(m.id, str) else m.id[0]: m.string for m in read_po(po) if m.id}


def code() -> str:
    return "\n".join(p.read_text() for d in ("bot", "cogs") for p in (ROOT / d).rglob("*.py"))


def test_every_literal_key_in_the_code_is_in_the_catalogue() -> None:
    keys = set(LITERAL.findall(code()))
    assert len(keys) > 100
    assert sorted(keys - catalogue().keys()) == []


def test_every_dynamic_key_prefix_has_messages() -> None:
    known = catalogue().keys()
    for prefix in set(DYNAMIC.findall(code())):
        assert any(key.startswith(prefix) for key in known), prefix


def test_every_message_formats_with_its_own_placeholders() -> None:
    for key, text in catalogue().items():
        forms = text if isinstance(text, tuple) else (text,)
        for form in forms:
            names = {name for _, name, _, _ in string.Formatter().parse(form) if name}
            form.format(**dict.fromkeys(names, "x"))  # raises on a malformed placeholder
        if isinstance(text, tuple):  # plural forms share their placeholders (besides {n})
            sets = [{n for _, n, _, _ in string.Formatter().parse(f) if n} - {"n"} for f in text]
            assert all(s == sets[0] for s in sets), key


def test_plurals_pick_the_right_form() -> None:
    from bot.i18n import tn

    assert tn("en-US", "usage.images_value", 1, requests=2) == "1 image from 2 requests"
    assert tn("en-US", "usage.images_value", 3, requests=4) == "3 images from 4 requests"
    assert t("de", "button.reroll") == "Reroll"  # no German catalogue: English
