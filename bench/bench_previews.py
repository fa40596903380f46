"""Live previews: how early the first draft shows, and what previews cost in CPU.

    .venv/bin/python -m bench.bench_previews [--latency 4] [--requests 20] [--concurrency 10]

The fake image API runs in its own process with realistic PNGs and streams the way Gemini 3 image models
do: a thought headline, drafts at about 40% and 70% of the latency, then the final image (tests/fake_image_api).
For each size, the same requests run twice, interleaved batch by batch on one pooled client: once the
plain way (``generateContent``) and once with previews (``streamGenerateContent`` with thoughts, each draft
shrunk for Discord the way the bot does it). The table gives, per size, the first draft's and the final
image's time (p50 and p90 over the requests), their ratio (target: first preview at <= 60% of the final
time), and the client CPU per request with and without previews (``time.process_time``, all threads).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field

from bench.bench_core import FakeServer
from bot.core.models import model_spec
from bot.core.providers import GeminiProvider, ProviderConfig
from bot.core.types import ImageRequest, Preview
from bot.media.drafts import draft_thumbnail

MODEL = "gemini-3-pro-image-preview"
PROMPT = "an orange cat on a windowsill, golden hour"
SIZES = ("1K", "2K", "4K")
TARGET = 0.60


@dataclass
class Run:
    first_draft: list[float] = field(default_factory=list)
    final: list[float] = field(default_factory=list)
    cpu: float = 0.0
    requests: int = 0
    drafts: int = 0


async def one(provider: GeminiProvider, size: str, run: Run, previews: bool) -> None:
    started = time.perf_counter()
    first: list[float] = []
    shrinking: list[asyncio.Task[bytes]] = []

    def tell(preview: Preview) -> None:
        if preview.draft is not None:
            if not first:
                first.append(time.perf_counter() - started)
            shrinking.append(asyncio.create_task(asyncio.to_thread(draft_thumbnail, preview.draft.data)))

    request = ImageRequest(prompt=PROMPT, size=size, aspect_ratio="16:9")
    result = await provider.generate(request, model_spec(MODEL), on_preview=tell if previews else None)
    run.final.append(time.perf_counter() - started)
    assert result.image.width > 0
    await asyncio.gather(*shrinking)
    run.drafts += len(shrinking)
    if previews:
        assert first, "no draft arrived"
        run.first_draft.extend(first)
    run.requests += 1


async def measure(url: str, args: argparse.Namespace) -> dict[str, tuple[Run, Run]]:
    config = ProviderConfig(name="gemini", base_url=url, api_keys=("k",), model=MODEL)
    provider = GeminiProvider(config)
    results: dict[str, tuple[Run, Run]] = {}
    try:
        await asyncio.gather(*(one(provider, "1K", Run(), previews=True) for _ in range(2)))  # warm up
        for size in SIZES:
            plain, streamed = Run(), Run()
            batches = -(-args.requests // args.concurrency)
            for batch in range(batches):
                count = min(args.concurrency, args.requests - batch * args.concurrency)
                # Alternate which mode goes first, so drift on a shared machine hits both alike.
                order = [(plain, False), (streamed, True)] if batch % 2 == 0 else [(streamed, True), (plain, False)]
                for run, previews in order:
                    cpu = time.process_time()
                    await asyncio.gather(*(one(provider, size, run, previews) for _ in range(count)))
                    run.cpu += time.process_time() - cpu
            results[size] = (plain, streamed)
            print(f"  {size}: done", flush=True)
    finally:
        await provider.aclose()
    return results


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def table(results: dict[str, tuple[Run, Run]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.requests} requests per size and mode, {args.concurrency} at once, fake latency {args.latency:g} s, "
        f"{MODEL}, 16:9, realistic PNGs",
        "",
        "| Size | First draft p50 / p90 | Final p50 / p90 | First / final (p50) | Target <= 0.60 "
        "| CPU per request plain / previews | Extra CPU | Drafts per request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, (plain, streamed) in results.items():
        first50, final50 = statistics.median(streamed.first_draft), statistics.median(streamed.final)
        ratio = first50 / final50
        cpu_plain, cpu_streamed = plain.cpu / plain.requests * 1000, streamed.cpu / streamed.requests * 1000
        lines.append(
            f"| {size} | {first50:.2f} / {pct(streamed.first_draft, 0.9):.2f} s "
            f"| {final50:.2f} / {pct(streamed.final, 0.9):.2f} s | {ratio:.2f} "
            f"| {'PASS' if ratio <= TARGET else 'MISS'} | {cpu_plain:.0f} / {cpu_streamed:.0f} ms "
            f"| {cpu_streamed - cpu_plain:+.0f} ms ({cpu_streamed / cpu_plain:.2f}x) "
            f"| {streamed.drafts / streamed.requests:.1f} |"
        )
    plain_final = {size: statistics.median(p.final) for size, (p, _) in results.items()}
    lines.append("")
    lines.append(
        "Plain final p50 for comparison: "
        + ", ".join(f"{size} {seconds:.2f} s" for size, seconds in plain_final.items())
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=4.0, help="the fake's latency per request (s)")
    parser.add_argument("--requests", type=int, default=20, help="requests per size and mode")
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    with FakeServer(args.latency) as server:
        print(f"fake image API at {server.url}", flush=True)
        results = asyncio.run(measure(server.url, args))
    print()
    print(table(results, args))


if __name__ == "__main__":
    main()
