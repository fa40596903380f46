"""The /usage chart: images and cost per day, and how long images take, as one PNG for Discord's dark theme.

Drawn with Pillow and a font that covers Latin and CJK: Noto Sans CJK, from the ``noto-cjk-sans-otc`` package
(a dependency, so every install has it), else Debian's ``fonts-noto-cjk``. The font's character map decides
what is drawn: labels it lacks a letter for are replaced by the English ones, and any character still missing
is replaced, so the chart never shows empty boxes. CPU-bound: callers run it in a thread.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import importlib.resources
import io
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import BinaryIO

from fontTools.ttLib import TTCollection, TTFont, TTLibError
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 1200, 700
#: Drawn at this multiple and scaled down: Pillow's lines and shapes have no antialiasing of their own.
SCALE = 2
BACKGROUND = (43, 45, 49)  # the background of an embed in Discord's dark theme
GRID = (66, 69, 76)
AXIS = (105, 110, 119)
TEXT = (233, 235, 237)
MUTED = (181, 186, 193)
IMAGES = (247, 196, 64)  # banana yellow
COST = (96, 170, 255)
LATENCY = (110, 200, 140)

MARGIN = 28
TITLE_SIZE, HEADING_SIZE, LEGEND_SIZE, TICK_SIZE = 40.0, 28.0, 24.0, 24.0
#: A title, heading or note shrinks to this share of its size to fit; a longer one is wrapped over lines.
SHRINK = 0.8
PANELS = ((MARGIN, 706), (752, WIDTH - MARGIN))  # images and cost per day | time to an image
PLOT_BOTTOM = HEIGHT - 60

#: Spaces that fonts often lack (Babel writes "1 234" in French with U+202F), and what to draw instead.
SPACES = {"\u202f": ("\u2009", "\u00a0", " "), "\u2009": ("\u00a0", " "), "\u00a0": (" ",)}
#: A collection's face for a language, by the region its name ends with (Noto Sans CJK SC, TC, HK, JP, KR).
REGIONS = {"zh-TW": "TC", "zh-HK": "HK", "zh-MO": "HK", "zh": "SC", "ja": "JP", "ko": "KR"}
DEBIAN_NOTO_CJK = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")

# FreeType faces are shared by every chart and are not safe to use from two threads at once.
_lock = threading.Lock()


@dataclass(frozen=True)
class ChartLabels:
    """The words on the chart, already translated, and how that language writes money."""

    language: str  # "zh-TW": picks the face of a font collection (SC, TC, ...)
    title: str
    per_day: str
    images: str
    cost: str
    latency: str
    seconds: str  # the unit after a number of seconds: "s", "dtk", "秒"
    median: str
    p95: str
    empty: str
    money: Callable[[float], str]

    def words(self) -> list[str]:
        """A sample of all a chart with these labels writes: its words, and the characters of its money, numbers
        and days."""
        fixed = [self.title, self.per_day, self.images, self.cost, self.latency, self.median, self.p95, self.empty]
        return [*fixed, f"0123456789 {self.seconds}", "-", self.money(0.05), self.money(1234.5)]


@dataclass(frozen=True)
class Coverage:
    """The characters a font has glyphs for, as sorted ranges of codepoints (first, last)."""

    firsts: tuple[int, ...]
    lasts: tuple[int, ...]

    @classmethod
    def of(cls, codepoints: Iterable[int]) -> Coverage:
        firsts: list[int] = []
        lasts: list[int] = []
        for codepoint in sorted(set(codepoints)):
            if lasts and codepoint == lasts[-1] + 1:
                lasts[-1] = codepoint
            else:
                firsts.append(codepoint)
                lasts.append(codepoint)
        return cls(tuple(firsts), tuple(lasts))

    def __contains__(self, codepoint: object) -> bool:
        if not isinstance(codepoint, int):
            return False
        i = bisect.bisect_right(self.firsts, codepoint) - 1
        return i >= 0 and codepoint <= self.lasts[i]

    def __iter__(self) -> Iterator[int]:
        for first, last in zip(self.firsts, self.lasts, strict=True):
            yield from range(first, last + 1)


@dataclass(frozen=True)
class Typeface:
    """A face of a font file (or Pillow's built-in font, `path` None) and the characters it has glyphs for."""

    name: str
    path: Path | None
    index: int
    codepoints: Coverage = field(repr=False)

    def font(self, pixels: int) -> ImageFont.FreeTypeFont:
        return _font(self.path, self.index, pixels)

    def missing(self, text: str) -> set[str]:
        return {c for c in _with_spaces(self, text) if ord(c) not in self.codepoints}

    def drawable(self, text: str) -> str:
        """`text` with only characters this face has: spaces swapped for ones it has, anything else as '?'."""
        text = _with_spaces(self, text)
        if not self.missing(text):
            return text
        stand_in = "?" if ord("?") in self.codepoints else ""
        return "".join(c if ord(c) in self.codepoints else stand_in for c in text)


@dataclass(frozen=True)
class DrawnText:
    """A string on the chart and its box in the final image (left, top, right, bottom)."""

    text: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Chart:
    """The PNG, and what is on it: the face it was drawn with, the labels, every string and where."""

    png: bytes
    typeface: Typeface
    labels: ChartLabels  # the ones drawn: the member's, or the English ones when the font lacks their letters
    texts: tuple[DrawnText, ...]


def default_fonts() -> tuple[Path, ...]:
    """Where a font with Latin and CJK glyphs is looked for: the noto-cjk-sans-otc package, then Debian's."""
    found = []
    with contextlib.suppress(ModuleNotFoundError):
        found.append(Path(str(importlib.resources.files("noto_cjk_sans_otc") / "NotoSansCJK-Regular.ttc")))
    found.append(DEBIAN_NOTO_CJK)
    return tuple(found)


def find_typeface(fonts: Iterable[Path], language: str) -> Typeface | None:
    """The first of `fonts` that exists and reads, in its face for `language` (a collection's SC, TC, ...)."""
    for path in fonts:
        if not path.is_file():
            continue
        try:
            names = _face_names(path)
            index = _face_for(names, language)
            return Typeface(names[index], path, index, _file_coverage(path, index))
        except (OSError, ValueError, TTLibError) as e:
            log.debug("can't read the font %s: %s", path, e)
    return None


@functools.cache
def builtin_typeface() -> Typeface:
    """Pillow's own font (Latin letters only): drawn with when no other font is found."""
    font = ImageFont.load_default(10)
    assert isinstance(font, ImageFont.FreeTypeFont), "Pillow without FreeType can't draw the chart"
    name = " ".join(n for n in font.getname() if n)
    return Typeface(name, None, 0, _coverage(io.BytesIO(font.font_bytes)))


def usage_chart(
    days: Sequence[tuple[str, int, float]],
    seconds: Sequence[tuple[int, int]],
    *,
    labels: ChartLabels,
    fallback: ChartLabels,
    fonts: Sequence[Path] | None = None,
) -> Chart:
    """The chart as a PNG, with what was drawn.

    `days`: (UTC day 'YYYY-MM-DD', images, cost), oldest first; days left out are drawn as zero.
    `seconds`: (whole seconds, how many images took that long), as storage.reports gives them.
    `fallback`: the English labels, drawn when the font lacks letters of `labels`.
    `fonts`: font files to look in, in order (default: `default_fonts()`); an empty list means none.
    """
    candidates = default_fonts() if fonts is None else tuple(fonts)
    typeface = find_typeface(candidates, labels.language)
    problem = ""
    if typeface is None:
        typeface = builtin_typeface()
        problem = f"no font for the /usage chart in {[str(p) for p in candidates]}: drawing with {typeface.name}"
    lacking = sorted({c for word in labels.words() for c in typeface.missing(word)})
    if lacking:
        labels = fallback
        problem = "; ".join(
            p for p in (problem, f"{typeface.name} lacks {''.join(lacking)!r}: the chart is in English") if p
        )
    if problem:
        log.warning("%s (install the noto-cjk-sans-otc package, or Debian's fonts-noto-cjk)", problem)
    with _lock:
        canvas = _Canvas(typeface)
        _draw(canvas, list(days), list(seconds), labels)
        png = canvas.png()
    return Chart(png, typeface, labels, tuple(canvas.texts))


def _draw(
    canvas: _Canvas, days: list[tuple[str, int, float]], seconds: list[tuple[int, int]], words: ChartLabels
) -> None:
    top = 20 + canvas.text_fit((MARGIN, 20), words.title, TITLE_SIZE, WIDTH - 2 * MARGIN, TEXT, "la")
    (left_a, right_a), (left_b, right_b) = PANELS
    headings = [
        canvas.text_fit((left, top + 16), heading, HEADING_SIZE, right - left, MUTED, "la")
        for (left, right), heading in zip(PANELS, (words.per_day, words.latency), strict=True)
    ]
    legend_top = top + 16 + max(headings) + 10
    images, cost = _Key(words.images, IMAGES, "box"), _Key(words.cost, COST, "dot")
    median, p95 = _Key(words.median, TEXT, "line"), _Key(words.p95, TEXT, "dash")
    bars = _Key(words.images, LATENCY, "box")
    # Each legend sits over its axis; the plots start below the taller one, so their axes line up.
    day_rows = canvas.legend_rows([images, cost], right_a - left_a)
    time_rows = canvas.legend_rows([bars, median, p95], right_b - left_b)
    plot_top = legend_top + 34 * max(len(day_rows), len(time_rows)) + 24
    canvas.draw_legend(day_rows, (left_a, right_a), legend_top, split=True)
    canvas.draw_legend(time_rows, (left_b, right_b), legend_top, split=False)
    _per_day(canvas, _every_day(days), (left_a, plot_top, right_a, PLOT_BOTTOM), words)
    _latency(canvas, seconds, (left_b, plot_top, right_b, PLOT_BOTTOM), words)


def _per_day(
    canvas: _Canvas, days: list[tuple[str, int, float]], box: tuple[float, float, float, float], words: ChartLabels
) -> None:
    left, top, right, bottom = box
    if not days:
        canvas.empty(box, words.empty)
        return
    intervals, image_step, cost_step = _shared_ticks(max(n for _, n, _ in days), max(c for _, _, c in days))
    image_ticks = [str(round(i * image_step)) for i in range(intervals + 1)]
    cost_ticks = [words.money(i * cost_step) for i in range(intervals + 1)]
    plot_left = left + max(canvas.width(t, TICK_SIZE) for t in image_ticks) + 12
    plot_right = right - max(canvas.width(t, TICK_SIZE) for t in cost_ticks) - 12
    for i, (image_tick, cost_tick) in enumerate(zip(image_ticks, cost_ticks, strict=True)):
        y = bottom - (bottom - top) * i / intervals
        canvas.line([(plot_left, y), (plot_right, y)], AXIS if i == 0 else GRID, 1)
        canvas.text((plot_left - 10, y), image_tick, TICK_SIZE, IMAGES, "rm")
        canvas.text((plot_right + 10, y), cost_tick, TICK_SIZE, COST, "lm")
    image_top, cost_top = intervals * image_step, intervals * cost_step
    slot = (plot_right - plot_left) / len(days)
    points = []
    for index, (_, count, spent) in enumerate(days):
        x = plot_left + slot * (index + 0.5)
        if count:
            half = min(max(slot * 0.36, 0.5), 28)
            canvas.rect((x - half, bottom - (bottom - top) * count / image_top, x + half, bottom), IMAGES)
        points.append((x, bottom - (bottom - top) * spent / cost_top))
    if len(points) > 1:
        canvas.line(points, COST, 3)
    if slot >= 8:
        for x, y in points:
            canvas.dot((x, y), 4.5, COST)
    labels = [day[5:] for day, _, _ in days]  # MM-DD
    widest = max(canvas.width(t, TICK_SIZE) for t in labels)
    stride = math.ceil((widest + 14) / slot)
    for index in range(0, len(days), stride):
        canvas.x_tick((plot_left + slot * (index + 0.5), bottom), labels[index], (left, right))


def _latency(
    canvas: _Canvas, seconds: list[tuple[int, int]], box: tuple[float, float, float, float], words: ChartLabels
) -> None:
    left, top, right, bottom = box
    total = sum(n for _, n in seconds)
    if not total:
        canvas.empty(box, words.empty)
        return
    # Up to the second that covers 99% of the images; the slow tail piles up in the last bar.
    covered, high = 0, seconds[-1][0]
    for second, count in seconds:
        covered += count
        if covered >= total * 0.99:
            high = second
            break
    bars = [0] * (high + 1)
    for second, count in seconds:
        bars[min(second, high)] += count
    intervals, step, _ = _shared_ticks(max(bars), 0.0)
    count_ticks = [str(round(i * step)) for i in range(intervals + 1)]
    plot_left = left + max(canvas.width(t, TICK_SIZE) for t in count_ticks) + 12
    plot_right = right - 16
    for i, tick in enumerate(count_ticks):
        y = bottom - (bottom - top) * i / intervals
        canvas.line([(plot_left, y), (plot_right, y)], AXIS if i == 0 else GRID, 1)
        canvas.text((plot_left - 10, y), tick, TICK_SIZE, LATENCY, "rm")
    span = high + 1  # the bar for second s covers [s, s + 1)
    slot = (plot_right - plot_left) / span
    for second, count in enumerate(bars):
        if count:
            x = plot_left + slot * second
            gap = min(1.0, slot * 0.15)
            canvas.rect(
                (x + gap, bottom - (bottom - top) * count / (intervals * step), x + slot - gap, bottom), LATENCY
            )
    widest = canvas.width(f"{span} {words.seconds}", TICK_SIZE) + 16
    fits = int((plot_right - plot_left) / widest)  # labels, side by side
    tick_step = max(1, round(_nice_step(span, max(1, fits - 1))))
    for value in range(0, span + 1, tick_step):
        canvas.x_tick((plot_left + slot * value, bottom), f"{value} {words.seconds}", (left, right))
    for quantile, style in ((50, "line"), (95, "dash")):
        x = plot_left + slot * (_percentile(seconds, quantile) + 0.5)
        canvas.vertical((x, top - 6, bottom), TEXT, dashed=style == "dash")


@dataclass(frozen=True)
class _Key:
    text: str
    colour: tuple[int, int, int]
    marker: str  # box, dot (a line through a dot), line, dash


class _Canvas:
    """Drawing in chart units (WIDTH x HEIGHT) on an image SCALE times larger; keeps every string it draws."""

    def __init__(self, typeface: Typeface) -> None:
        self.typeface = typeface
        self.image = Image.new("RGB", (WIDTH * SCALE, HEIGHT * SCALE), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)
        self.texts: list[DrawnText] = []

    def png(self) -> bytes:
        out = io.BytesIO()
        self.image.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS).save(out, "PNG", compress_level=6)
        return out.getvalue()

    def _font(self, size: float) -> ImageFont.FreeTypeFont:
        return self.typeface.font(round(size * SCALE))

    def width(self, text: str, size: float) -> float:
        left, _, right, _ = self._font(size).getbbox(self.typeface.drawable(text), anchor="ls")
        return (max(right, 0) - min(left, 0)) / SCALE

    def text(self, xy: tuple[float, float], text: str, size: float, fill: tuple[int, int, int], anchor: str) -> None:
        text = self.typeface.drawable(text)
        at = (xy[0] * SCALE, xy[1] * SCALE)
        font = self._font(size)
        left, top, right, bottom = self.draw.textbbox(at, text, font=font, anchor=anchor)
        self.draw.text(at, text, fill=fill, font=font, anchor=anchor)
        box = (
            math.floor(left / SCALE),
            math.floor(top / SCALE),
            math.ceil(right / SCALE),
            math.ceil(bottom / SCALE),
        )
        self.texts.append(DrawnText(text, box))

    def fitted(self, text: str, size: float, width: float, smallest: float) -> float:
        """The largest whole size from `size` down to `smallest` at which `text` is at most `width` wide (or
        `smallest`). Found from one measure (width grows with size), so few sizes of the font are loaded."""
        measured = self.width(text, size)
        if measured <= width:
            return size
        size = max(smallest, math.floor(size * width / measured))
        while size > smallest and self.width(text, size) > width:
            size = max(smallest, size - 1)
        return size

    def text_fit(
        self, xy: tuple[float, float], text: str, size: float, width: float, fill: tuple[int, int, int], anchor: str
    ) -> float:
        """`text` shrunk a little to fit `width`, and wrapped over lines if it still doesn't; the height it took."""
        size = self.fitted(text, size, width, size * SHRINK)
        lines = self.wrap(text, size, width)
        line_height = size * 1.35
        for n, line in enumerate(lines):
            self.text((xy[0], xy[1] + n * line_height), line, size, fill, anchor)
        return line_height * len(lines)

    def wrap(self, text: str, size: float, width: float) -> list[str]:
        """`text` in lines at most `width` wide: broken at spaces, or between any characters (CJK) if it must."""
        lines: list[str] = []
        rest = text
        while self.width(rest, size) > width and len(rest) > 1:
            cut = len(rest) - 1
            while cut > 1 and self.width(rest[:cut], size) > width:
                cut -= 1
            space = rest.rfind(" ", 0, cut + 1)
            if space > 0:
                cut = space
            lines.append(rest[:cut].rstrip())
            rest = rest[cut:].lstrip()
        return [*lines, rest]

    def x_tick(self, at: tuple[float, float], text: str, span: tuple[float, float]) -> None:
        """A tick on the x axis at `at`, its label centred under it but moved sideways as little as it takes to
        stay within `span`."""
        self.line([at, (at[0], at[1] + 6)], AXIS, 1.5)
        half = self.width(text, TICK_SIZE) / 2
        x = min(max(at[0], span[0] + half), span[1] - half)
        self.text((x, at[1] + 12), text, TICK_SIZE, MUTED, "ma")

    def empty(self, box: tuple[float, float, float, float], text: str) -> None:
        left, top, right, bottom = box
        self.line([(left, bottom), (right, bottom)], AXIS, 1)
        size = self.fitted(text, LEGEND_SIZE, right - left, LEGEND_SIZE * SHRINK)
        lines = self.wrap(text, size, right - left)
        y = (top + bottom) / 2 - size * 1.35 * (len(lines) - 1) / 2
        for n, line in enumerate(lines):
            self.text(((left + right) / 2, y + n * size * 1.35), line, size, MUTED, "mm")

    def legend_rows(self, keys: list[_Key], width: float) -> list[list[_Key]]:
        """The keys in rows that fit `width`, as many to a row as fit."""
        rows: list[list[_Key]] = [[]]
        used = 0.0
        for key in keys:
            needed = self._key_width(key) + (28 if rows[-1] else 0)
            if rows[-1] and used + needed > width:
                rows.append([])
                used, needed = 0.0, self._key_width(key)
            rows[-1].append(key)
            used += needed
        return rows

    def draw_legend(self, rows: list[list[_Key]], span: tuple[float, float], top: float, *, split: bool) -> None:
        """The keys, left to right; with `split`, the last key ends at the right edge, over its axis."""
        left, right = span
        last = rows[-1][-1]
        for n, row in enumerate(rows):
            y = top + n * 34 + 14
            x = left
            for key in row:
                width = min(self._key_width(key), right - left)
                if split and key is last:
                    x = right - width
                self._key(key, (x, y), right - x)
                x += width + 28

    def _key_width(self, key: _Key) -> float:
        return 34 + self.width(key.text, LEGEND_SIZE)

    def _key(self, key: _Key, at: tuple[float, float], room: float) -> None:
        x, y = at
        if key.marker == "box":
            self.rect((x + 3, y - 10, x + 23, y + 10), key.colour)
        elif key.marker == "dot":
            self.line([(x, y), (x + 26, y)], key.colour, 3)
            self.dot((x + 13, y), 5.5, key.colour)
        else:
            self.vertical((x + 13, y - 12, y + 12), key.colour, dashed=key.marker == "dash")
        # A key shrinks as far as it takes: it has one line of the legend.
        self.text((x + 34, y), key.text, self.fitted(key.text, LEGEND_SIZE, room - 34, 1), key.colour, "lm")

    def rect(self, box: tuple[float, float, float, float], fill: tuple[int, int, int]) -> None:
        self.draw.rectangle([round(v * SCALE) for v in box], fill=fill)

    def line(self, points: list[tuple[float, float]], fill: tuple[int, int, int], width: float) -> None:
        scaled = [(x * SCALE, y * SCALE) for x, y in points]
        self.draw.line(scaled, fill=fill, width=round(width * SCALE), joint="curve")

    def dot(self, at: tuple[float, float], radius: float, fill: tuple[int, int, int]) -> None:
        x, y = at
        self.draw.ellipse(
            [(x - radius) * SCALE, (y - radius) * SCALE, (x + radius) * SCALE, (y + radius) * SCALE], fill=fill
        )

    def vertical(self, xs: tuple[float, float, float], fill: tuple[int, int, int], *, dashed: bool) -> None:
        x, top, bottom = xs
        if not dashed:
            self.line([(x, top), (x, bottom)], fill, 2)
            return
        y = top
        while y < bottom:
            self.line([(x, y), (x, min(y + 6, bottom))], fill, 2)
            y += 10


def _every_day(days: list[tuple[str, int, float]]) -> list[tuple[str, int, float]]:
    """`days` with the days between them that had no requests, as zeros, so the axis is time."""
    try:
        dated = {date.fromisoformat(day): (day, n, cost) for day, n, cost in days}
    except ValueError:
        return days
    if not dated:
        return []
    first, last = min(dated), max(dated)
    out = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        out.append(dated.get(day, (day.isoformat(), 0, 0.0)))
    return out


def _nice_step(value: float, intervals: int) -> float:
    """The smallest step of 1, 2 or 5 times a power of ten that reaches `value` in `intervals` steps."""
    raw = value / intervals
    if raw <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))


def _shared_ticks(images: int, cost: float) -> tuple[int, int, float]:
    """(intervals, image step, cost step): the same number of intervals on both axes, so their grid lines are
    one; of 4, 5 or 3 intervals, the one whose scales the bars and the line fill best."""
    best: tuple[float, int, int, float] | None = None
    for intervals in (4, 5, 3):
        image_step = max(1, math.ceil(_nice_step(max(images, 1), intervals)))
        cost_step = _nice_step(cost, intervals) if cost > 0 else 0.01
        fill = max(images, 1) / (image_step * intervals) + (cost / (cost_step * intervals) if cost > 0 else 1)
        if best is None or fill > best[0] + 1e-9:
            best = (fill, intervals, image_step, cost_step)
    assert best is not None
    return best[1], best[2], best[3]


def _percentile(seconds: list[tuple[int, int]], quantile: int) -> int:
    """Nearest rank, as storage.reports counts them: the smallest second with `quantile`% at or below it."""
    total = sum(n for _, n in seconds)
    rank, seen = max(1, math.ceil(total * quantile / 100)), 0
    for second, count in seconds:
        seen += count
        if seen >= rank:
            return second
    return seconds[-1][0]


def _with_spaces(typeface: Typeface, text: str) -> str:
    for space, stand_ins in SPACES.items():
        if space in text and ord(space) not in typeface.codepoints:
            text = text.replace(space, next((s for s in stand_ins if ord(s) in typeface.codepoints), " "))
    return text


@functools.cache
def _face_names(path: Path) -> list[str]:
    """The full name of each face of a font file ("Noto Sans CJK TC"); a collection has several."""
    if path.suffix.lower() in (".ttc", ".otc"):
        collection = TTCollection(str(path), lazy=True)
        try:
            return [str(face["name"].getDebugName(4)) for face in collection.fonts]
        finally:
            collection.close()
    with TTFont(str(path), lazy=True) as face:
        return [str(face["name"].getDebugName(4))]


def _face_for(names: list[str], language: str) -> int:
    proportional = [i for i, name in enumerate(names) if "Mono" not in name] or [0]
    region = REGIONS.get(language) or REGIONS.get(language.split("-")[0])
    wanted = [i for i in proportional if region and names[i].endswith(f" {region}")]
    return (wanted or proportional)[0]


@functools.cache
def _file_coverage(path: Path, index: int) -> Coverage:
    with path.open("rb") as f:
        return _coverage(f, index)


def _coverage(f: BinaryIO, index: int = 0) -> Coverage:
    """The characters of the face's best Unicode character map. Kept as ranges: the map itself, with a glyph
    name for each of a CJK font's 60,000 characters, is dropped once read."""
    with TTFont(f, fontNumber=index, lazy=True) as face:
        cmap = face.getBestCmap()
    if not cmap:
        raise ValueError("the font has no Unicode character map")
    return Coverage.of(codepoint for codepoint, glyph in cmap.items() if glyph != ".notdef")


@functools.lru_cache(maxsize=16)
def _font(path: Path | None, index: int, pixels: int) -> ImageFont.FreeTypeFont:
    if path is None:
        font = ImageFont.load_default(pixels)
        assert isinstance(font, ImageFont.FreeTypeFont)
        return font
    # Basic layout: the same on every machine (Raqm depends on libfribidi being installed); Latin and CJK need
    # no shaping.
    return ImageFont.truetype(str(path), pixels, index=index, layout_engine=ImageFont.Layout.BASIC)
