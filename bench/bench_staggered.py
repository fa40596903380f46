"""Staggered requests on one HTTP/2 connection: does a response that has arrived wait for another's answer?

    .venv/bin/python -m bench.bench_staggered     # ~1.5 minutes; prints the table

The bot never sends its requests in waves: a job starts as soon as a slot frees, so at any moment some
streams on the one connection are receiving their body while others wait for their headers (the whole
generation time). httpcore reads for every stream under one FIFO lock, and a stream looks at its own queued
events only once it holds that lock, so a stream queued behind a request blocked on its headers waited for
that request's answer although its own body had been read (fixed in ``bot/core/h2tuning.py``, item 6).

`--requests` 1K requests (realistic PNGs) through one GeminiProvider, `--concurrency` in flight, each new one
as one finishes, against the fake Gemini API in its own process at a fixed latency. Three clients, each in a
fresh worker process, order rotated per round: the core as shipped; the core with item 6 taken out (the
stall); httpcore untuned (no h2tuning at all). Ideal wall = ceil(requests / concurrency) x latency. A request
is "late" when it took more than 1.5 x the latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import subprocess
import sys
import time

from bench.bench_core import ROOT, Control, FakeServer

MODEL = "gemini-3-pro-image-preview"
VARIANTS = ("core", "core without fix 6", "httpcore untuned")
RESULT_PREFIX = "STAGGERED-RESULT "


def worker(url: str, variant: str, requests: int, concurrency: int) -> None:
    from bot.core import h2tuning

    if variant == "httpcore untuned":
        h2tuning.apply = lambda: False  # before bot.core.http imports and applies it
    from httpcore._async import http2

    from bot.core.models import model_spec
    from bot.core.providers import GeminiProvider, ProviderConfig
    from bot.core.types import ImageRequest

    if variant == "core without fix 6":
        tuned = http2.AsyncHTTP2Connection
        tuned._receive_events = tuned.__mro__[1]._receive_events  # type: ignore[method-assign]

    async def run() -> dict[str, object]:
        config = ProviderConfig(name="gemini", base_url=url, api_keys=("k",), model=MODEL, http_version="2-prior")
        provider = GeminiProvider(config)
        slots = asyncio.Semaphore(concurrency)
        took: list[float] = []

        async def one(i: int) -> None:
            async with slots:
                started = time.perf_counter()
                await provider.generate(ImageRequest(prompt=f"p{i}", size="1K"), model_spec(MODEL))
                took.append(time.perf_counter() - started)

        await asyncio.gather(*(one(i) for i in range(4)))  # warm up: the connection, the first images
        took.clear()
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(requests)))
        result = {"wall": time.perf_counter() - started, "cpu": time.process_time() - cpu, "took": took}
        await provider.aclose()
        return result

    print(RESULT_PREFIX + json.dumps(asyncio.run(run())), flush=True)


def run_variant(url: str, variant: str, args: argparse.Namespace) -> dict[str, object]:
    cmd = [sys.executable, "-m", "bench.bench_staggered", "--worker", url, variant]
    cmd += [str(args.requests), str(args.concurrency)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith(RESULT_PREFIX))
    return json.loads(line[len(RESULT_PREFIX) :])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1], argv[2], int(argv[3]), int(argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, object]]] = {v: [] for v in VARIANTS}
    with FakeServer(args.latency) as server:
        control = Control(server.url)
        control.generate("1K")
        control.close()
        for round_ in range(args.rounds):
            order = VARIANTS[round_ % 3 :] + VARIANTS[: round_ % 3]
            for variant in order:
                results[variant].append(run_variant(server.url, variant, args))
    ideal = math.ceil(args.requests / args.concurrency) * args.latency
    print(
        f"{args.requests} 1K requests, {args.concurrency} in flight (a new one as each finishes), one HTTP/2"
        f" connection, fake latency {args.latency:g} s, realistic PNGs; {args.rounds} rounds, order rotated"
    )
    rule = f"ideal wall = ceil({args.requests} / {args.concurrency}) x latency = {ideal:.2f} s"
    print(f"{rule}; late = over 1.5 x latency")
    print("| Client | Wall s (each round) | Wall / ideal | Request p50 / p90 / max ms | Late | CPU s per round |")
    print("|---|---|---|---|---|---|")
    for variant, runs in results.items():
        took = sorted(t for run in runs for t in run["took"])  # type: ignore[attr-defined]
        walls = [float(run["wall"]) for run in runs]  # type: ignore[arg-type]
        cpus = [float(run["cpu"]) for run in runs]  # type: ignore[arg-type]
        late = sum(1 for t in took if t > 1.5 * args.latency)
        p90 = took[min(len(took) - 1, int(0.9 * len(took)))]
        print(
            f"| {variant} | {' / '.join(f'{w:.2f}' for w in walls)} | {statistics.mean(walls) / ideal:.3f} "
            f"| {statistics.median(took) * 1000:.0f} / {p90 * 1000:.0f} / {took[-1] * 1000:.0f} "
            f"| {late} of {len(took)} | {statistics.mean(cpus):.2f} |"
        )


if __name__ == "__main__":
    main()
