"""The /usage chart: Pillow with a real font (what the bot draws) against matplotlib (Agg), side by side.

    .venv/bin/pip install matplotlib           # only for this comparison; the bot doesn't use it
    .venv/bin/python -m bench.bench_charts     # ~1 minute; [--renders 20] [--rounds 2] [--save DIR]

Both draw the same 30-day chart (tests/snapshots/regenerate.py's data, in Simplified Chinese, so the CJK font
is loaded) at 1200 x 700 as a PNG, with the same font file (Noto Sans CJK from noto-cjk-sans-otc): images per
day as bars and cost as a line on two labelled axes, the time-to-image histogram with its median and 95th
percentile, legends. Each library runs in a fresh process, so its import and memory are its own; the order
alternates by round (Pillow, matplotlib, matplotlib, Pillow, ...) to cancel drift on a noisy machine.

Per library, from a process that has already imported what the bot has anyway (discord.py, Pillow, the
catalogue, cogs/usage.py and so bot/media/charts.py): the import of the plotting library (none for Pillow),
the first chart (loading the font and its character map), then `--renders` charts: wall time p50 and p90,
CPU per chart (``time.process_time``), and memory: RSS growth from before the import to after the last
chart, and peak RSS (``ru_maxrss``) growth. Ratios are matplotlib / Pillow.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

LIBRARIES = ("pillow", "matplotlib")
LOCALE = "zh-CN"


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def pillow_chart() -> Callable[[], bytes]:
    from bot.i18n import FALLBACK
    from bot.media.charts import usage_chart
    from cogs.usage import chart_labels
    from tests.snapshots.regenerate import DAYS, PERIOD, SECONDS

    labels, fallback = chart_labels(LOCALE, PERIOD), chart_labels(FALLBACK, PERIOD)
    return lambda: usage_chart(DAYS, SECONDS, labels=labels, fallback=fallback).png


def matplotlib_chart() -> Callable[[], bytes]:
    """The same chart in matplotlib's object API (no pyplot: its global state is not for threads)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from bot.media.charts import BACKGROUND, COST, GRID, IMAGES, LATENCY, MUTED, TEXT, default_fonts
    from cogs.usage import chart_labels
    from tests.snapshots.regenerate import DAYS, PERIOD, SECONDS

    font = next(p for p in default_fonts() if p.is_file())
    font_manager.fontManager.addfont(str(font))  # every face of the collection
    labels = chart_labels(LOCALE, PERIOD)

    def colour(rgb: tuple[int, int, int]) -> str:
        return "#{:02x}{:02x}{:02x}".format(*rgb)

    def render() -> bytes:
        fig = Figure(figsize=(12, 7), dpi=100, facecolor=colour(BACKGROUND), layout="constrained")
        fig.suptitle(labels.title, x=0.02, ha="left", fontsize=28, color=colour(TEXT), family="Noto Sans CJK SC")
        days_ax, time_ax = fig.subplots(1, 2, width_ratios=[62, 38])
        cost_ax = days_ax.twinx()
        for ax in (days_ax, cost_ax, time_ax):
            ax.set_facecolor(colour(BACKGROUND))
            ax.tick_params(colors=colour(MUTED), labelsize=15)
            for side in ax.spines.values():
                side.set_color(colour(GRID))
            for text in ax.get_xticklabels() + ax.get_yticklabels():
                text.set_family("Noto Sans CJK SC")
        names = [day[5:] for day, _, _ in DAYS]
        days_ax.bar(names, [n for _, n, _ in DAYS], color=colour(IMAGES), width=0.72)
        cost_ax.plot(names, [c for _, _, c in DAYS], color=colour(COST), marker="o", linewidth=2.5)
        cost_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: labels.money(v)))
        days_ax.xaxis.set_major_locator(MaxNLocator(7))
        days_ax.grid(axis="y", color=colour(GRID))
        days_ax.set_title(labels.per_day, loc="left", color=colour(MUTED), fontsize=19, family="Noto Sans CJK SC")
        days_ax.legend(
            handles=[
                Patch(color=colour(IMAGES), label=labels.images),
                Line2D([], [], color=colour(COST), marker="o", label=labels.cost),
            ],
            loc="upper left",
            frameon=False,
            labelcolor="linecolor",
            prop={"family": "Noto Sans CJK SC", "size": 16},
        )
        seconds = [s for s, n in SECONDS for _ in range(n)]
        time_ax.hist(seconds, bins=range(0, max(seconds) + 2), color=colour(LATENCY))
        time_ax.axvline(statistics.median_low(seconds) + 0.5, color=colour(TEXT), label=labels.median)
        p95 = sorted(seconds)[max(0, round(len(seconds) * 0.95) - 1)]
        time_ax.axvline(p95 + 0.5, color=colour(TEXT), linestyle="--", label=labels.p95)
        time_ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f} {labels.seconds}"))
        time_ax.grid(axis="y", color=colour(GRID))
        time_ax.set_title(labels.latency, loc="left", color=colour(MUTED), fontsize=19, family="Noto Sans CJK SC")
        time_ax.legend(frameon=False, labelcolor=colour(TEXT), prop={"family": "Noto Sans CJK SC", "size": 16})
        out = io.BytesIO()
        fig.savefig(out, format="png", facecolor=colour(BACKGROUND))
        return out.getvalue()

    return render


def worker(library: str, renders: int, save: str | None) -> dict[str, Any]:
    # What the bot has loaded anyway (discord.py, Pillow, the catalogue, the chart module), before measuring.
    import cogs.usage  # noqa: F401
    import tests.snapshots.regenerate  # noqa: F401

    before = rss_mb()
    peak_before = peak_mb()
    started = time.perf_counter()
    render = pillow_chart() if library == "pillow" else matplotlib_chart()
    imported = time.perf_counter() - started
    started = time.perf_counter()
    png = render()
    first = time.perf_counter() - started
    walls, cpus = [], []
    for _ in range(renders):
        wall, cpu = time.perf_counter(), time.process_time()
        png = render()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    if save:
        Path(save, f"{library}.png").write_bytes(png)
    walls.sort()
    return {
        "import_s": imported,
        "first_ms": first * 1000,
        "p50_ms": statistics.median(walls) * 1000,
        "p90_ms": walls[int(len(walls) * 0.9) - 1] * 1000,
        "cpu_ms": statistics.fmean(cpus) * 1000,
        "rss_mb": rss_mb() - before,
        "peak_mb": peak_mb() - peak_before,
        "png_kb": len(png) / 1024,
    }


def run_worker(library: str, args: argparse.Namespace) -> dict[str, Any] | None:
    command = [sys.executable, "-m", "bench.bench_charts", "--worker", library, "--renders", str(args.renders)]
    if args.save:
        command += ["--save", args.save]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ)
    if done.returncode != 0:
        print(f"{library}: failed\n{done.stderr.strip().splitlines()[-1]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


COLUMNS = (
    ("import_s", "import s", "{:.2f}"),
    ("first_ms", "1st chart ms", "{:.0f}"),
    ("p50_ms", "p50 ms", "{:.0f}"),
    ("p90_ms", "p90 ms", "{:.0f}"),
    ("cpu_ms", "CPU ms", "{:.0f}"),
    ("rss_mb", "RSS +MB", "{:.1f}"),
    ("peak_mb", "peak +MB", "{:.1f}"),
    ("png_kb", "PNG KB", "{:.0f}"),
)


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Medians over the rounds, and matplotlib / Pillow."""
    rows = {
        lib: {key: statistics.median(r[key] for r in runs) for key, _, _ in COLUMNS} for lib, runs in results.items()
    }
    lines = ["| | " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for lib, row in rows.items():
        lines.append(f"| {lib} | " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |")
    if len(rows) == 2:
        pillow, mpl = rows["pillow"], rows["matplotlib"]
        ratios = [f"{mpl[key] / pillow[key]:.1f}x" if pillow[key] else "-" for key, _, _ in COLUMNS]
        lines.append("| matplotlib / Pillow | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=20, help="charts timed per process, after the first")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per library")
    parser.add_argument("--save", help="write each library's chart to DIR/<library>.png")
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.renders, args.save)))
        return
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        print("matplotlib is not installed (.venv/bin/pip install matplotlib): measuring Pillow alone")
        libraries: tuple[str, ...] = ("pillow",)
    else:
        libraries = LIBRARIES
    results: dict[str, list[dict[str, Any]]] = {lib: [] for lib in libraries}
    for round_ in range(args.rounds):
        order = libraries if round_ % 2 == 0 else tuple(reversed(libraries))
        for lib in order:
            result = run_worker(lib, args)
            if result is not None:
                results[lib].append(result)
                print(f"round {round_ + 1} {lib}: p50 {result['p50_ms']:.0f} ms, peak +{result['peak_mb']:.0f} MB")
    print(f"\n{args.renders} charts per process, {args.rounds} processes per library, medians:\n")
    print(table({lib: runs for lib, runs in results.items() if runs}))


if __name__ == "__main__":
    main()
