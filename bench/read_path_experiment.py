"""Experiment: what would cut the core's client CPU on HTTP/2 reads? (not part of the benchmark table)

Run: ``.venv/bin/python -m bench.read_path_experiment [--rounds 30] [--size 2K]`` (about 1.5 minutes).

Written against the core of commit 1107eed, before ``bot/core/h2tuning.py``; at later commits the core installs
part of this tuning itself, so "base" no longer means the untuned core.

The fake server runs in its own process; this process is the only client. Each round runs every variant
once, in a rotated order, so drift cancels. The variants patch third-party classes *in this process only*
(nothing in bot/ is changed), to measure changes that bot/core/http.py could make:

- ``base``: the core as it is (HTTP/2 prior knowledge).
- ``+repr``: h2 builds ``repr(frame)`` for a trace log it never writes (``H2Connection._receive_frame``);
  for a DATA frame that hexlifies the whole payload (``hyperframe.frame._raw_data_repr``). Replace
  ``DataFrame._body_repr`` with a length-only repr.
- ``+read``: also read 256 KiB per socket read instead of httpcore's 64 KiB (``READ_NUM_BYTES``), so each
  read hands h2 up to 16 frames and the per-read anyio/lock overhead is paid 4x less often.
- ``+frame``: also advertise SETTINGS_MAX_FRAME_SIZE = 256 KiB (a second SETTINGS frame after httpcore's),
  so a server that honours it (hypercorn does) sends 16x fewer DATA frames; every frame costs a parse,
  an event, a flow-control ack and a lock. This connection also opens a 1 GiB connection window.
- ``SDK``: google-genai on aiohttp, the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import h2.settings
import httpcore._async.http2 as httpcore_h2
import hyperframe.frame

from .bench_core import Client, FakeServer, check_image, core_client, log, sdk_client

READ_BYTES = 256 * 1024
FRAME_BYTES = 256 * 1024
CONNECTION_WINDOW = 1 << 30

_original_repr = hyperframe.frame.DataFrame._body_repr
_original_init = httpcore_h2.AsyncHTTP2Connection._send_connection_init
_original_read = httpcore_h2.AsyncHTTP2Connection.READ_NUM_BYTES
_big_frames = False


def _short_repr(self: hyperframe.frame.DataFrame) -> str:
    return f"data=<{len(self.data)} bytes>"


async def _init_with_big_frames(self: Any, request: Any) -> None:
    """httpcore's _send_connection_init, then (when ``_big_frames`` is on) a second SETTINGS frame asking
    for bigger DATA frames; h2 accepts them once the server acknowledges it."""
    await _original_init(self, request)
    if _big_frames:
        state = self._h2_state
        # Bigger reads/frames need a bigger connection window, or many concurrent streams deadlock
        # httpcore (see the README); harmless here, where requests are sequential.
        state.increment_flow_control_window(CONNECTION_WINDOW - state.inbound_flow_control_window)
        state.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: FRAME_BYTES})
        await self._write_outgoing_data(request)


def _apply(short_repr: bool, big_read: bool) -> None:
    hyperframe.frame.DataFrame._body_repr = _short_repr if short_repr else _original_repr  # type: ignore[method-assign]
    httpcore_h2.AsyncHTTP2Connection.READ_NUM_BYTES = READ_BYTES if big_read else _original_read


async def run(url: str, rounds: int, size: str) -> None:
    global _big_frames
    httpcore_h2.AsyncHTTP2Connection._send_connection_init = _init_with_big_frames  # type: ignore[method-assign]
    base = core_client(url, "2-prior")
    _big_frames = True
    framed = core_client(url, "2-prior")
    expected = check_image(framed, await framed.fetch(size), None)  # its connection advertises big frames
    _big_frames = False
    sdk = sdk_client(url)
    # name -> (client, short repr, big reads)
    variants: dict[str, tuple[Client, bool, bool]] = {
        "base": (base, False, False),
        "+repr": (base, True, False),
        "+repr +read": (base, True, True),
        "+repr +read +frame": (framed, True, True),
        "SDK": (sdk, False, False),
    }
    for client, short_repr, big_read in variants.values():
        _apply(short_repr, big_read)
        check_image(client, await client.fetch(size), expected)
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in variants}
    names = list(variants)
    for i in range(rounds):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            client, short_repr, big_read = variants[name]
            _apply(short_repr, big_read)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            data = await client.fetch(size)
            wall1, cpu1 = time.perf_counter(), time.process_time()
            check_image(client, data, expected)
            del data
            samples[name][0].append(wall1 - wall0)
            samples[name][1].append(cpu1 - cpu0)
    _apply(False, False)
    for client in (base, framed, sdk):
        await client.close()

    sdk_wall, sdk_cpu = (statistics.fmean(v) for v in samples["SDK"])
    base_cpu = statistics.fmean(samples["base"][1])
    print(f"{rounds} rounds of {size} 16:9 requests, image {expected / 1e6:.2f} MB, order rotated every round")
    print(f"{'variant':<22}{'wall ms':>9}{'cpu ms':>9}{'cpu p50':>9}{'cpu/base':>10}{'wall/SDK':>10}{'cpu/SDK':>9}")
    for name, (walls, cpus) in samples.items():
        wall, cpu = statistics.fmean(walls), statistics.fmean(cpus)
        print(
            f"{name:<22}{wall * 1000:>9.1f}{cpu * 1000:>9.1f}{statistics.median(cpus) * 1000:>9.1f}"
            f"{cpu / base_cpu:>10.2f}{wall / sdk_wall:>10.3f}{cpu / sdk_cpu:>9.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.read_path_experiment", description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--size", default="2K", choices=("1K", "2K", "4K"))
    args = parser.parse_args(argv)
    log(f"read-path experiment: {args.rounds} rounds x 5 variants, {args.size}")
    with FakeServer(args.latency) as server:
        asyncio.run(run(server.url, args.rounds, args.size))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
