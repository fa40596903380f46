"""The /usage chart: images and cost per day, and the latency distribution, as one PNG for Discord's dark theme.

Pure Pillow (no plotting library to install); CPU-bound, so callers run it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 1200, 700
BACKGROUND = (43, 45, 49)  # Discord's dark message background
GRID = (70, 73, 80)
TEXT = (219, 222, 225)
MUTED = (148, 155, 164)
IMAGES = (250, 200, 60)  # banana yellow
COST = (88, 166, 255)
LATENCY = (120, 200, 140)


def usage_chart(
    days: list[tuple[str, int, float]], seconds: list[tuple[int, int]], *, title: str, labels: dict[str, str]
) -> bytes:
    """`seconds`: (whole seconds, how many generations took that long), as storage.reports gives it."""
    """`labels`: the member-facing words (images, cost, per_day, latency, seconds), already translated."""
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    big, small = ImageFont.load_default(26), ImageFont.load_default(16)
    draw.text((30, 18), title, fill=TEXT, font=big)
    _per_day(draw, days, (60, 80, WIDTH - 60, 400), small, labels)
    _histogram(draw, seconds, (60, 470, WIDTH - 60, HEIGHT - 50), small, labels)
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


def _per_day(
    draw: ImageDraw.ImageDraw,
    days: list[tuple[str, int, float]],
    box: tuple[int, int, int, int],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    labels: dict[str, str],
) -> None:
    left, top, right, bottom = box
    draw.text((left, top - 30), labels["per_day"], fill=MUTED, font=font)
    draw.text((right - 260, top - 30), f"■ {labels['images']}", fill=IMAGES, font=font)
    draw.text((right - 130, top - 30), f"● {labels['cost']}", fill=COST, font=font)
    draw.line((left, bottom, right, bottom), fill=GRID, width=2)
    if not days:
        return
    most_images = max(n for _, n, _ in days) or 1
    most_cost = max(c for _, _, c in days) or 1.0
    slot = (right - left) / len(days)
    points = []
    for index, (day, count, cost) in enumerate(days):
        x0 = left + index * slot
        bar_top = bottom - (bottom - top) * count / most_images
        draw.rectangle((x0 + slot * 0.15, bar_top, x0 + slot * 0.85, bottom), fill=IMAGES)
        points.append((x0 + slot / 2, bottom - (bottom - top) * cost / most_cost))
        if len(days) <= 16 or index % max(1, len(days) // 8) == 0:
            draw.text((x0 + slot * 0.1, bottom + 6), day[5:], fill=MUTED, font=font)
    if len(points) > 1:
        draw.line(points, fill=COST, width=3)
    for x, y in points:
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=COST)
    draw.text((left - 50, top - 8), str(most_images), fill=IMAGES, font=font)
    draw.text((right + 6, top - 8), f"${most_cost:.2f}", fill=COST, font=font)


def _histogram(
    draw: ImageDraw.ImageDraw,
    seconds: list[tuple[int, int]],
    box: tuple[int, int, int, int],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    labels: dict[str, str],
) -> None:
    left, top, right, bottom = box
    draw.text((left, top - 30), labels["latency"], fill=MUTED, font=font)
    draw.line((left, bottom, right, bottom), fill=GRID, width=2)
    total = sum(n for _, n in seconds)
    if not total:
        return
    # Up to the second that covers 99% of the generations; the slow tail piles up in the last bar.
    covered, high = 0, seconds[-1][0]
    for second, count in seconds:
        covered += count
        if covered >= total * 0.99:
            high = second
            break
    bars = [0] * (high + 1)
    for second, count in seconds:
        bars[min(second, high)] += count
    tallest = max(bars) or 1
    slot = (right - left) / len(bars)
    for index, count in enumerate(bars):
        x0 = left + index * slot
        draw.rectangle((x0 + 1, bottom - (bottom - top) * count / tallest, x0 + max(slot - 1, 1), bottom), fill=LATENCY)
    for fraction in (0, 0.25, 0.5, 0.75, 1.0):
        x = left + (right - left) * fraction
        draw.text((x - 10, bottom + 6), f"{high * fraction:.0f} {labels['seconds']}", fill=MUTED, font=font)
