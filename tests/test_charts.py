"""The /usage chart: every letter drawn is in the font, nothing leaves the picture, the layout matches its reference.

The reference images are tests/snapshots/usage-<language>.png. After changing the layout on purpose, draw them
again and look at them before committing:

    .venv/bin/python -m tests.snapshots.regenerate
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import logging
from pathlib import Path

import pytest
from fontTools.ttLib import TTFont
from PIL import Image, ImageChops, ImageFont

from bot.i18n import FALLBACK, available_locales
from bot.media.charts import HEIGHT, WIDTH, Chart, ChartLabels, DrawnText, usage_chart
from cogs.usage import chart_labels
from storage.reports import PERIODS
from tests.snapshots.regenerate import DAYS, PERIOD, SECONDS, reference, render

LOCALES = available_locales()
#: A pixel counts as changed when a channel moved by more than this (of 255): font hinting and antialiasing
#: from another FreeType release move edges by less; a moved or resized element changes them fully.
CHANGED = 64
#: How many changed pixels (of 840,000) a chart may differ by; a tick label moved by a pixel is ~100-200.
TOLERANCE = 60


def cmap(path: Path, index: int) -> set[int]:
    return set(TTFont(str(path), fontNumber=index, lazy=True).getBestCmap())


def not_in(cmap: set[int], texts: list[str]) -> set[str]:
    return {c for text in texts for c in text if ord(c) not in cmap}


def english(period: str = PERIOD) -> ChartLabels:
    return chart_labels(FALLBACK, period)


@pytest.mark.parametrize("locale", LOCALES)
def test_every_letter_on_the_chart_is_in_the_fonts_character_map(locale: str) -> None:
    chart = render(locale)
    assert chart.typeface.path is not None and chart.typeface.name.startswith("Noto Sans CJK")
    drawn = [t.text for t in chart.texts]
    labels = chart_labels(locale, PERIOD)
    for word in (labels.title, labels.per_day, labels.latency, labels.images, labels.cost, labels.median, labels.p95):
        assert word in drawn  # in the member's language, not the English stand-ins
    assert not_in(cmap(chart.typeface.path, chart.typeface.index), drawn) == set()


@pytest.mark.parametrize("locale", ["zh-CN", "zh-TW"])
def test_the_same_check_fails_on_pillows_default_font(locale: str) -> None:
    """The font the chart used to be drawn with has none of the Chinese letters, nor the old legend's markers."""
    default = ImageFont.load_default(16)
    assert isinstance(default, ImageFont.FreeTypeFont)
    default_cmap = set(TTFont(io.BytesIO(default.font_bytes)).getBestCmap())
    drawn = [t.text for t in render(locale).texts]
    missing = not_in(default_cmap, drawn)
    assert set(chart_labels(locale, PERIOD).title) - {" ", "3", "0"} <= missing
    assert not_in(default_cmap, ["■ ●"]) == {"■", "●"}


def test_chinese_is_drawn_in_its_regions_face() -> None:
    assert render("zh-CN").typeface.name == "Noto Sans CJK SC"
    assert render("zh-TW").typeface.name == "Noto Sans CJK TC"


@pytest.mark.parametrize("locale", LOCALES)
def test_the_chart_matches_its_reference_image(locale: str, tmp_path: Path) -> None:
    """A changed layout fails here until the references are drawn again (see the module's docstring)."""
    actual = Image.open(io.BytesIO(render(locale).png)).convert("RGB")
    with Image.open(reference(locale)) as stored:
        expected = stored.convert("RGB")
    assert actual.size == expected.size == (WIDTH, HEIGHT)
    difference = ImageChops.difference(actual, expected)
    changed = sum(difference.convert("L").point(lambda v: 255 if v > CHANGED else 0).histogram()[255:])
    if changed > TOLERANCE:
        actual.save(tmp_path / "actual.png")
        difference.point(lambda v: min(255, v * 4)).save(tmp_path / "difference.png")
    assert changed <= TOLERANCE, f"{changed} pixels differ from {reference(locale)}; see {tmp_path}"


def assert_laid_out(chart: Chart) -> None:
    """Every string is inside the picture, and none overlaps another."""
    for text in chart.texts:
        left, top, right, bottom = text.box
        assert left >= 0 and top >= 0 and right <= WIDTH and bottom <= HEIGHT, text
    for a, b in itertools.combinations(chart.texts, 2):
        assert not overlap(a, b), (a, b)


def overlap(a: DrawnText, b: DrawnText) -> bool:
    return a.box[0] < b.box[2] and b.box[0] < a.box[2] and a.box[1] < b.box[3] and b.box[1] < a.box[3]


@pytest.mark.parametrize("locale", LOCALES)
def test_the_longest_labels_of_each_language_fit(locale: str) -> None:
    longest = max(PERIODS, key=lambda p: len(chart_labels(locale, p).title))
    chart = usage_chart(DAYS, SECONDS, labels=chart_labels(locale, longest), fallback=english(longest))
    assert_laid_out(chart)
    assert chart.labels.title == chart_labels(locale, longest).title


@pytest.mark.parametrize("locale", LOCALES)
def test_labels_three_times_as_long_still_fit(locale: str) -> None:
    """Room for translations to grow: longer labels shrink, then wrap; they never leave the picture."""
    labels = chart_labels(locale, "all")
    longer = dataclasses.replace(
        labels, **{name: " ".join([getattr(labels, name)] * 3) for name in ("title", "per_day", "latency", "images",
                                                                              "cost", "median", "p95", "empty")}
    )  # fmt: skip
    assert_laid_out(usage_chart(DAYS, SECONDS, labels=longer, fallback=english()))
    assert_laid_out(usage_chart([], [], labels=longer, fallback=english()))


def test_large_and_small_figures_fit() -> None:
    """Four-digit days and thousands of dollars (French writes '1 234,50 $US'), and a single day."""
    big = [(day, images * 40, cost * 40) for day, images, cost in DAYS]
    for locale in LOCALES:
        assert_laid_out(usage_chart(big, SECONDS, labels=chart_labels(locale, PERIOD), fallback=english()))
        one = usage_chart(DAYS[:1], SECONDS[:1], labels=chart_labels(locale, PERIOD), fallback=english())
        assert_laid_out(one)


def test_no_requests_says_so_in_both_panels() -> None:
    chart = usage_chart([], [], labels=chart_labels("fr", PERIOD), fallback=english())
    assert [t.text for t in chart.texts].count("Aucune image sur cette période") == 2
    assert_laid_out(chart)


@pytest.mark.parametrize("locale", LOCALES)
def test_without_a_font_the_chart_draws_what_pillows_font_can(locale: str, caplog: pytest.LogCaptureFixture) -> None:
    """No font found (the lookup pointed at nothing): one warning, and labels Pillow's own font can draw."""
    with caplog.at_level(logging.WARNING, logger="bot.media.charts"):
        chart = usage_chart(DAYS, SECONDS, labels=chart_labels(locale, PERIOD), fallback=english(), fonts=[])
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "noto-cjk-sans-otc" in caplog.records[0].getMessage()
    assert chart.typeface.path is None
    default = ImageFont.load_default(16)
    assert isinstance(default, ImageFont.FreeTypeFont)
    drawn = [t.text for t in chart.texts]
    assert not_in(set(TTFont(io.BytesIO(default.font_bytes)).getBestCmap()), drawn) == set()
    # Pillow's font has Latin letters without accents: English and Indonesian stay, French and Chinese don't.
    expected = chart_labels(locale, PERIOD) if locale in ("en-US", "id") else english()
    assert chart.labels.title == expected.title and expected.title in drawn
    assert_laid_out(chart)
    Image.open(io.BytesIO(chart.png)).verify()


def test_a_font_file_that_is_missing_is_passed_over(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.media.charts"):
        chart = usage_chart(
            DAYS, SECONDS, labels=chart_labels("zh-TW", PERIOD), fallback=english(), fonts=[tmp_path / "none.ttc"]
        )
    assert len(caplog.records) == 1 and chart.typeface.path is None
