"""Draw the /usage chart's reference images again, after a change to its layout made on purpose:

    .venv/bin/python -m tests.snapshots.regenerate

writes tests/snapshots/usage-<language>.png from the fixed data below, for every language, and the README's
picture, docs/usage-chart.png (the English one). Look at them before committing them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bot.i18n import FALLBACK, available_locales
from bot.media.charts import Chart, usage_chart
from cogs.usage import chart_labels

HERE = Path(__file__).resolve().parent
README_PICTURE = HERE.parents[1] / "docs" / "usage-chart.png"

#: 30 days in November 2026 (two without requests), about $0.134 an image.
DAYS: list[tuple[str, int, float]] = [
    (f"2026-{day}", images, cost)
    for day, images, cost in [
        ("11-03", 18, 2.64), ("11-04", 11, 1.45), ("11-05", 41, 5.7), ("11-06", 40, 4.46), ("11-07", 3, 0.5),
        ("11-08", 33, 4.11), ("11-10", 17, 2.04), ("11-11", 48, 6.66), ("11-12", 56, 8.07), ("11-13", 28, 4.2),
        ("11-14", 12, 1.47), ("11-15", 12, 1.98), ("11-17", 36, 4.8), ("11-18", 3, 0.46), ("11-19", 7, 0.83),
        ("11-20", 40, 4.4), ("11-21", 52, 5.68), ("11-22", 58, 7.26), ("11-23", 41, 6.37), ("11-24", 59, 7.86),
        ("11-25", 53, 8.95), ("11-26", 28, 4.37), ("11-27", 39, 5.34), ("11-28", 11, 1.83), ("11-29", 9, 0.99),
        ("11-30", 34, 4.14), ("12-01", 46, 6.28), ("12-02", 43, 7.07),
    ]
]  # fmt: skip
#: (whole seconds, images): about 20 s, with a slow tail.
SECONDS: list[tuple[int, int]] = [
    (5, 1), (6, 4), (8, 4), (9, 8), (10, 17), (11, 30), (12, 41), (13, 41), (14, 56), (15, 53), (16, 54),
    (17, 56), (18, 46), (19, 63), (20, 45), (21, 47), (22, 48), (23, 38), (24, 34), (25, 20), (26, 29), (27, 28),
    (28, 18), (29, 18), (30, 17), (31, 20), (32, 5), (33, 6), (34, 11), (35, 3), (36, 5), (37, 4), (38, 2), (39, 4),
    (40, 5), (41, 3), (42, 1), (44, 3), (45, 1), (47, 2), (48, 1), (49, 1), (50, 2), (51, 2), (52, 1), (56, 1),
    (65, 1),
]  # fmt: skip
PERIOD = "30d"


def render(locale: str) -> Chart:
    """The chart of the fixed data in `locale`, as /usage draws it."""
    return usage_chart(DAYS, SECONDS, labels=chart_labels(locale, PERIOD), fallback=chart_labels(FALLBACK, PERIOD))


def reference(locale: str) -> Path:
    return HERE / f"usage-{locale}.png"


def main() -> None:
    for locale in available_locales():
        reference(locale).write_bytes(render(locale).png)
        print("wrote", reference(locale))
    README_PICTURE.parent.mkdir(exist_ok=True)
    shutil.copyfile(reference(FALLBACK), README_PICTURE)
    print("wrote", README_PICTURE)


if __name__ == "__main__":
    main()
