"""Benchmark of the generation core against the official google-genai SDK, on the fake Gemini API.

Run: ``.venv/bin/python -m bench.bench_core`` (about 2 minutes; see bench/README.md).

The fake server (``python -m tests.fake_image_api``) runs in its own process, and every client runs in a
worker subprocess of this module (``--worker ...``), so a client's ``time.process_time()`` is its own CPU
(all its threads, user + system) and nothing else. The parent only starts processes and prints the table.
Both clients speak HTTP/1.1: the core through httpx, the SDK through aiohttp (installed beside discord.py).

1. sequential: the same 2K 16:9 requests through the core and the SDK in one client process, alternating
   which goes first every round to cancel drift.
2. concurrent: 64 simultaneous 2K requests through one core provider whose pool is sized as the bot sizes
   it (cap + headroom), then through the SDK, each against an ideal of latency + (client CPU + fake CPU of
   the batch) / cores: no answer exists before the fixed latency, and after it the client and the fake
   share the machine's cores. The connections each client opened are reported, and the CPU the rest of the
   machine used during each batch (on a shared machine, another process's load shows there, not in the ideal).
3. memory: peak RSS growth with 8 concurrent 4K responses, core vs SDK, a fresh process per run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gemini-3-pro-image-preview"
PROMPT = "a ripe banana on a wooden desk, studio light"
ASPECT = "16:9"
RESULT_PREFIX = "RESULT "
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Targets (bench/README.md).
WALL_RATIO_TARGET = 1.02
CPU_RATIO_TARGET = 1.0
CONCURRENT_SLACK = 0.10
#: A batch during which the rest of the machine used less CPU than this counts as quiet.
QUIET_OTHER_CPU = 0.2
#: A concurrent batch still running after this has stalled: far longer than a healthy batch takes.
BATCH_TIMEOUT = 45.0

CORE = "core (httpx)"
SDK = "google-genai SDK"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- clients (imported lazily: only the worker processes load them) -----------------------------------


@dataclass
class Client:
    name: str
    fetch: Callable[[str], Awaitable[bytes]]  # image size ("2K") -> the decoded image bytes
    close: Callable[[], Awaitable[None]]


def core_client(url: str, concurrency: int = 1) -> Client:
    """A GeminiProvider on its own pooled httpx client, its pool sized as bot/runtime.py sizes it for a
    concurrency cap of ``concurrency``; ``generate`` = the core's full request path."""
    from bot.core.models import model_spec
    from bot.core.providers import GeminiProvider, ProviderConfig
    from bot.core.types import ImageRequest
    from bot.runtime import POOL_HEADROOM

    provider = GeminiProvider(
        ProviderConfig(
            name="gemini",
            base_url=url,
            api_keys=("k",),
            model=MODEL,
            max_connections=concurrency + POOL_HEADROOM,
        )
    )
    spec = model_spec(MODEL)

    async def fetch(size: str) -> bytes:
        result = await provider.generate(ImageRequest(prompt=PROMPT, size=size, aspect_ratio=ASPECT), spec)
        return result.image.data

    return Client(CORE, fetch, provider.aclose)


def sdk_client(url: str) -> Client:
    """The official SDK as documented; it uses aiohttp because aiohttp is installed (beside discord.py)."""
    from google import genai
    from google.genai import types

    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=url, api_version="v1beta"))

    async def fetch(size: str) -> bytes:
        config = types.GenerateContentConfig(
            response_modalities=["TEXT", "IMAGE"],
            image_config=types.ImageConfig(aspect_ratio=ASPECT, image_size=size),
        )
        response = await client.aio.models.generate_content(model=MODEL, contents=PROMPT, config=config)
        image = b""
        for candidate in response.candidates or []:
            for part in (candidate.content.parts if candidate.content else None) or []:
                if part.inline_data is not None and part.inline_data.data and not part.thought:
                    image = part.inline_data.data  # the decoded bytes, as the core returns them
        return image

    return Client(SDK, fetch, client.aio.aclose)


def check_image(client: Client, data: bytes, expected: int | None) -> int:
    if not data.startswith(PNG_MAGIC):
        raise RuntimeError(f"{client.name} returned {len(data)} bytes that are not a PNG")
    if expected is not None and len(data) != expected:
        raise RuntimeError(f"{client.name} returned {len(data)} bytes, expected {expected}")
    return len(data)


class Control:
    """The fake's control endpoints over one kept-alive HTTP/1.1 connection (counted once by the fake)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)

    def call(self, method: str, path: str, body: bytes | None = None) -> Any:
        headers = {"content-type": "application/json"} if body is not None else {}
        self._conn.request(method, path, body=body, headers=headers)
        response = self._conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}: {data[:200]!r}")
        return json.loads(data)

    def generate(self, size: str) -> int:
        """One request straight to the fake (warms its image cache); returns the body size."""
        body = json.dumps(
            {
                "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
                "generationConfig": {
                    "responseModalities": ["TEXT", "IMAGE"],
                    "imageConfig": {"aspectRatio": ASPECT, "imageSize": size},
                },
            }
        ).encode()
        path = f"/v1beta/models/{MODEL}:generateContent"
        self._conn.request("POST", path, body=body, headers={"content-type": "application/json", "x-goog-api-key": "k"})
        response = self._conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"warm-up {size}: HTTP {response.status}: {data[:200]!r}")
        return len(data)

    def close(self) -> None:
        self._conn.close()


# ---- workers --------------------------------------------------------------------------------------------


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy: what else ran during a batch shows in the table."""
    times = psutil.cpu_times()
    return float(sum(times)) - times.idle - getattr(times, "iowait", 0.0)


async def gather_with_deadline(client: Client, size: str, concurrency: int) -> tuple[list[bytes], int]:
    """``concurrency`` simultaneous fetches: (images, finished). A batch still running after BATCH_TIMEOUT
    is cancelled and returns no images, with how many had finished."""
    tasks = [asyncio.ensure_future(client.fetch(size)) for _ in range(concurrency)]
    done, pending = await asyncio.wait(tasks, timeout=BATCH_TIMEOUT)
    if not pending:
        return [task.result() for task in tasks], len(done)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return [], sum(1 for task in done if task.exception() is None)


async def gather_or_fail(client: Client, size: str, concurrency: int) -> list[bytes]:
    results, finished = await gather_with_deadline(client, size, concurrency)
    if not results:
        raise RuntimeError(
            f"{client.name}: {finished} of {concurrency} concurrent {size} requests finished in "
            f"{BATCH_TIMEOUT:.0f} s (stalled)"
        )
    return results


async def worker_sequential(url: str, requests: int, warmup: int, server_pid: int) -> dict[str, Any]:
    server = psutil.Process(server_pid)
    clients = [core_client(url), sdk_client(url)]
    expected: int | None = None
    for client in clients:
        for _ in range(warmup):
            expected = check_image(client, await client.fetch("2K"), expected)
    samples: dict[str, dict[str, list[float]]] = {c.name: {"wall": [], "cpu": [], "server_cpu": []} for c in clients}
    for i in range(requests):
        shift = i % len(clients)
        for client in clients[shift:] + clients[:shift]:
            server0 = server.cpu_times()
            wall0, cpu0 = time.perf_counter(), time.process_time()
            data = await client.fetch("2K")
            wall1, cpu1 = time.perf_counter(), time.process_time()
            server1 = server.cpu_times()
            check_image(client, data, expected)
            del data
            samples[client.name]["wall"].append(wall1 - wall0)
            samples[client.name]["cpu"].append(cpu1 - cpu0)
            samples[client.name]["server_cpu"].append((server1.user + server1.system) - (server0.user + server0.system))
    for client in clients:
        await client.close()
    return {"image_bytes": expected, "samples": samples}


async def worker_concurrent(
    url: str, kind: str, concurrency: int, batches: int, server_pid: int, warmup_batches: int = 1
) -> dict[str, Any]:
    server = psutil.Process(server_pid)
    client = sdk_client(url) if kind == "sdk" else core_client(url, concurrency)
    control = Control(url)
    expected = check_image(client, await client.fetch("2K"), None)  # connection up, thread pool started
    single: list[float] = []  # a few lone requests: the overhead beyond the latency, when [1] is skipped
    for _ in range(3):
        wall0 = time.perf_counter()
        check_image(client, await client.fetch("2K"), expected)
        single.append(time.perf_counter() - wall0)
    runs: list[dict[str, Any]] = []
    for index in range(warmup_batches + batches):
        # Forget the connections seen so far, so the warm connection counts again if the batch reuses it;
        # then diff the stats before/after (whether or not the fake counts the control connection).
        control.call("POST", "/_fake/reset")
        before = control.call("GET", "/_fake/stats")
        gc.collect()
        server0, machine0 = server.cpu_times(), busy_seconds()
        wall0, cpu0, loop0 = time.perf_counter(), time.process_time(), time.thread_time()
        results, finished = await gather_with_deadline(client, "2K", concurrency)
        wall1, cpu1, loop1 = time.perf_counter(), time.process_time(), time.thread_time()
        server1, machine1 = server.cpu_times(), busy_seconds()
        stats = control.call("GET", "/_fake/stats")
        stalled = not results
        for data in results:
            check_image(client, data, expected)
        del results
        runs.append(
            {
                "wall": wall1 - wall0,
                "cpu": cpu1 - cpu0,
                "loop_cpu": loop1 - loop0,  # the event-loop thread alone (reading); the rest is worker threads
                "server_cpu": (server1.user + server1.system) - (server0.user + server0.system),
                "machine_cpu": machine1 - machine0,
                "requests": stats["requests"] - before["requests"],
                "connections": stats["connections_seen"] - before["connections_seen"],
                "max_in_flight": stats["max_in_flight"],
                "by_http_version": stats["by_http_version"],
                "finished": finished,
                "stalled": stalled,
                # The first batch of a process pays for fresh memory and new connections: shown, not
                # counted, as a long-running bot lives in the steady state.
                "warmup": index < warmup_batches,
            }
        )
        if stalled:
            break  # later batches would only wait again
    control.close()
    async with asyncio.timeout(10):
        await client.close()
    return {"image_bytes": expected, "runs": runs, "single_wall": single}


async def worker_memory(url: str, kind: str, concurrency: int, size: str) -> dict[str, Any]:
    client = sdk_client(url) if kind == "sdk" else core_client(url, concurrency)
    check_image(client, await client.fetch("1K"), None)  # warm-up on a small image keeps the baseline low
    gc.collect()
    me = psutil.Process()
    baseline = me.memory_info().rss
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = baseline
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, me.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wall0 = time.perf_counter()
    results = await gather_or_fail(client, size, concurrency)
    wall = time.perf_counter() - wall0
    stop.set()
    sampler.join()
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    image_bytes = check_image(client, results[0], None)
    for data in results:
        check_image(client, data, image_bytes)
    held = me.memory_info().rss
    del results
    await client.close()
    return {
        "baseline": baseline,
        "sampled_peak": peak,
        "maxrss_before": maxrss_before,
        "maxrss_after": maxrss_after,
        "rss_holding_results": held,
        "image_bytes": image_bytes,
        "wall": wall,
    }


def run_worker(args: argparse.Namespace) -> None:
    if args.worker == "sequential":
        result = asyncio.run(worker_sequential(args.url, args.requests, args.warmup, args.server_pid))
    elif args.worker.startswith("concurrent-"):
        kind = args.worker.split("-", 1)[1]
        result = asyncio.run(
            worker_concurrent(args.url, kind, args.concurrency, args.batches, args.server_pid, args.warmup_batches)
        )
    else:
        result = asyncio.run(worker_memory(args.url, args.worker.split("-", 1)[1], args.rss_concurrency, "4K"))
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---- parent: server, workers, table ---------------------------------------------------------------------


class FakeServer:
    """``python -m tests.fake_image_api`` in its own process; stopped with SIGTERM."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> FakeServer:
        cmd = [sys.executable, "-m", "tests.fake_image_api", "--port", "0", "--latency", str(self.latency)]
        cmd += ["--payload", "realistic", "--no-record"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY ") or not line:
                break
        if not line.startswith("READY "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"fake server did not start (last line: {line!r})")
        self.url = line.split()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def spawn(mode: str, url: str, args: argparse.Namespace, extra: list[str] | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_core", "--worker", mode, "--url", url]
    cmd += ["--requests", str(args.requests), "--warmup", str(args.warmup)]
    cmd += ["--concurrency", str(args.concurrency), "--batches", str(args.batches)]
    cmd += ["--warmup-batches", str(args.warmup_batches)]
    cmd += ["--rss-concurrency", str(args.rss_concurrency), *(extra or [])]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return dict(json.loads(line[len(RESULT_PREFIX) :]))
    raise RuntimeError(f"worker {mode} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def mb(n: float) -> str:
    return f"{n / 1_048_576:7.1f}"


def versions() -> str:
    names = ("httpx", "httpcore", "google-genai", "aiohttp", "orjson", "pybase64")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


def report_sequential(seq: dict[str, Any], args: argparse.Namespace) -> list[str]:
    samples: dict[str, dict[str, list[float]]] = seq["samples"]
    mean = {name: {k: statistics.fmean(v) for k, v in s.items()} for name, s in samples.items()}
    median = {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}
    sdk, core = mean[SDK], mean[CORE]
    lines = [
        f"[1] {args.requests} sequential 2K {ASPECT} requests per client, "
        f"{args.latency:.2f} s server latency, image {seq['image_bytes'] / 1e6:.2f} MB, order alternated every round",
        f"    {'client':<22}{'wall mean':>10}{'wall p50':>10}{'cpu mean':>10}{'cpu p50':>10}"
        f"{'wall/SDK':>10}{'cpu/SDK':>10}{'fake cpu':>10}   (ms per request)",
    ]
    for name in (CORE, SDK):
        m, p = mean[name], median[name]
        lines.append(
            f"    {name:<22}{ms(m['wall']):>10}{ms(p['wall']):>10}{ms(m['cpu']):>10}{ms(p['cpu']):>10}"
            f"{m['wall'] / sdk['wall']:>10.3f}{m['cpu'] / sdk['cpu']:>10.2f}{ms(m['server_cpu']):>10}"
        )
    wall_ratio, cpu_ratio = core["wall"] / sdk["wall"], core["cpu"] / sdk["cpu"]
    lines += [
        "    cpu = the client process's process_time (all threads, user + system); "
        "fake cpu = the server process's, for the same request",
        f"    core / SDK: wall {wall_ratio:.3f} (target <= {WALL_RATIO_TARGET:.2f}) "
        f"{verdict(wall_ratio <= WALL_RATIO_TARGET)} ({(core['wall'] - sdk['wall']) * 1000:+.1f} ms/request); "
        f"cpu {cpu_ratio:.2f} (target <= {CPU_RATIO_TARGET:.2f}) "
        f"{verdict(cpu_ratio <= CPU_RATIO_TARGET)} ({(core['cpu'] - sdk['cpu']) * 1000:+.1f} ms/request)",
    ]
    return lines


def report_concurrent(
    conc: dict[str, dict[str, Any]], seq: dict[str, Any] | None, args: argparse.Namespace
) -> list[str]:
    cores = os.cpu_count() or 1
    lines = [
        f"[2] {args.concurrency} concurrent 2K requests per batch, one client at a time, {cores} cores",
        "    ideal = latency + (client cpu + fake cpu) / cores: every answer exists only after the fixed latency,",
        "    and from then on the client and the fake share this machine's cores;",
        "    overhead = one lone request's wall beyond the latency; conns = connections the client opened;",
        "    other cpu = what the rest of the machine used meanwhile (another process's load slows the batch)",
        f"    {'client':<22}{'batch':<12}{'wall s':>8}{'client cpu':>12}{'loop cpu':>10}{'fake cpu':>10}"
        f"{'other cpu':>11}{'ideal':>8}{'wall/ideal':>12}{'conns':>7}{'requests':>10}",
    ]
    # name -> (mean wall / ideal, mean wall, connections, wall / ideal of the quiet batches)
    summary: dict[str, tuple[float, float, int, list[float]]] = {}
    for name, result in conc.items():
        runs = result["runs"]
        for i, run in enumerate(runs, 1):
            label = f"{i} (warm-up)" if run.get("warmup") else str(i)
            if run.get("stalled"):
                lines.append(
                    f"    {name:<22}{label:<12}STALLED: {run['finished']} of {args.concurrency} finished in "
                    f"{BATCH_TIMEOUT:.0f} s ({run['requests']} requests on {run['connections']} connection(s)); "
                    "batch cancelled"
                )
                continue
            ideal = args.latency + (run["cpu"] + run["server_cpu"]) / cores
            other = run["other_cpu"] = max(0.0, run["machine_cpu"] - run["cpu"] - run["server_cpu"])
            lines.append(
                f"    {name:<22}{label:<12}{run['wall']:>8.2f}{run['cpu']:>12.2f}{run['loop_cpu']:>10.2f}"
                f"{run['server_cpu']:>10.2f}{other:>11.2f}{ideal:>8.2f}{run['wall'] / ideal:>12.3f}"
                f"{run['connections']:>7}{run['requests']:>10}"
            )
        counted = [run for run in runs if not run.get("warmup")]
        if any(run.get("stalled") for run in runs) or not counted:
            continue
        ratios = [run["wall"] / (args.latency + (run["cpu"] + run["server_cpu"]) / cores) for run in counted]
        summary[name] = (
            statistics.fmean(ratios),
            statistics.fmean(run["wall"] for run in counted),
            max(run["connections"] for run in runs),
            [r for r, run in zip(ratios, counted, strict=True) if run["other_cpu"] < QUIET_OTHER_CPU],
        )
    for name, result in conc.items():
        if seq is not None:
            lone, source = statistics.fmean(seq["samples"][name]["wall"]), "mean wall in [1]"
        else:
            lone, source = statistics.fmean(result["single_wall"]), "3 lone requests"
        if name not in summary:
            lines.append(f"    {name}: MISS, a batch stalled")
            continue
        ratio, _, connections, quiet = summary[name]
        target = (
            f" (target <= {1 + CONCURRENT_SLACK:.2f}) {verdict(ratio <= 1 + CONCURRENT_SLACK)}" if name == CORE else ""
        )
        in_quiet = f"{statistics.fmean(quiet):.3f}" if quiet else "-"
        lines.append(
            f"    {name}: wall / ideal mean {ratio:.3f}{target}, {in_quiet} over the {len(quiet)} batches with "
            f"other cpu < {QUIET_OTHER_CPU} s; {connections} connections for {args.concurrency} requests; "
            f"overhead {max(0.0, lone - args.latency) * 1000:.0f} ms ({source})"
        )
    if CORE in summary and SDK in summary:
        lines.append(f"    core / SDK: batch wall {summary[CORE][1] / summary[SDK][1]:.3f}")
    lines.append(
        "    seconds; loop cpu = the client's event-loop thread, the rest of client cpu is JSON + base64 in "
        "worker threads"
    )
    return lines


def report_memory(mem: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> list[str]:
    lines = [
        f"[3] peak RSS growth, {args.rss_concurrency} concurrent 4K responses, fresh process per run "
        f"(growth = peak - RSS before the batch; peak from ru_maxrss and a 5 ms psutil sampler)",
        f"    {'client':<22}{'run':>4}{'baseline MB':>13}{'ru_maxrss +MB':>15}{'sampled +MB':>13}"
        f"{'MB/image':>10}{'holding MB':>12}{'wall s':>8}",
    ]
    growth: dict[str, float] = {}
    for name, runs in mem.items():
        values = []
        for i, run in enumerate(runs, 1):
            base = run["baseline"]
            by_maxrss = run["maxrss_after"] - base
            sampled = run["sampled_peak"] - base
            best = max(by_maxrss, sampled)
            values.append(best)
            lines.append(
                f"    {name:<22}{i:>4}{mb(base):>13}{mb(by_maxrss):>15}{mb(sampled):>13}"
                f"{mb(best / args.rss_concurrency):>10}{mb(run['rss_holding_results'] - base):>12}{run['wall']:>8.2f}"
            )
        growth[name] = statistics.fmean(values)
    image = mem[SDK][0]["image_bytes"]
    lines.append(
        f"    mean peak growth: core {growth[CORE] / 1_048_576:.0f} MB, SDK {growth[SDK] / 1_048_576:.0f} MB, "
        f"core/SDK {growth[CORE] / growth[SDK]:.2f} (target <= 1.00) {verdict(growth[CORE] <= growth[SDK])}  "
        f"(one 4K PNG = {image / 1e6:.1f} MB; "
        f"'holding' = RSS while the {args.rss_concurrency} decoded images are still referenced)"
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_core", description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.5, help="fake server latency per request, seconds")
    parser.add_argument("--requests", type=int, default=50, help="sequential requests per client in [1]")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured requests per client before [1]")
    parser.add_argument("--concurrency", type=int, default=64, help="simultaneous requests in [2]")
    parser.add_argument("--batches", type=int, default=4, help="concurrent batches in [2] per client")
    parser.add_argument(
        "--warmup-batches", type=int, default=1, help="concurrent batches run first, shown but not counted"
    )
    parser.add_argument("--rss-concurrency", type=int, default=8, help="simultaneous 4K responses in [3]")
    parser.add_argument("--rss-runs", type=int, default=2, help="fresh processes per client in [3] (ABBA order)")
    parser.add_argument(
        "--only",
        choices=("sequential", "concurrent", "memory"),
        action="append",
        help="run only this part (repeatable); [2] then takes its overhead from 3 lone requests",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return

    parts = set(args.only or ("sequential", "concurrent", "memory"))
    started = time.perf_counter()
    log(f"starting the fake server (latency {args.latency} s, realistic payload)")
    with FakeServer(args.latency) as server:
        assert server.proc is not None
        control = Control(server.url)
        for size in ("1K", "2K", "4K"):  # build the fake's cached images before anything is timed
            control.generate(size)
        control.close()
        seq: dict[str, Any] | None = None
        conc: dict[str, dict[str, Any]] | None = None
        mem: dict[str, list[dict[str, Any]]] | None = None
        if "sequential" in parts:
            log(f"[1] sequential: {args.requests} x 2 clients")
            seq = spawn("sequential", server.url, args, ["--server-pid", str(server.proc.pid)])
        if "concurrent" in parts:
            conc = {}
            for kind, name in (("core", CORE), ("sdk", SDK)):
                log(f"[2] concurrent: {kind}, {args.batches} x {args.concurrency}")
                conc[name] = spawn(f"concurrent-{kind}", server.url, args, ["--server-pid", str(server.proc.pid)])
        if "memory" in parts:
            mem = {CORE: [], SDK: []}
            order = ["core", "sdk", "sdk", "core"] * ((args.rss_runs + 1) // 2)
            for kind in order[: 2 * args.rss_runs]:
                log(f"[3] memory: {kind}")
                mem[CORE if kind == "core" else SDK].append(spawn(f"memory-{kind}", server.url, args))

    lines = [
        "Banana Bot core benchmark: fake Gemini API in a separate process (hypercorn, HTTP/1.1), realistic PNG payload",
        f"machine: {os.cpu_count()} cores (shared, noisy), {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}; {versions()}",
        *(["", *report_sequential(seq, args)] if seq is not None else []),
        *(["", *report_concurrent(conc, seq, args)] if conc is not None else []),
        *(["", *report_memory(mem, args)] if mem is not None else []),
        "",
        f"total {time.perf_counter() - started:.0f} s",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
