"""Run the fake in its own process: ``python -m tests.fake_image_api --port 0 --latency 0.5``.

Prints ``READY http://127.0.0.1:PORT`` once serving, then serves until SIGTERM/SIGINT. Counters are at
``GET /_fake/stats``; ``POST /_fake/config`` (JSON: latency, payload, always_thoughts) and
``POST /_fake/reset`` adjust a running fake.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from .server import FakeImageAPI


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeImageAPI(latency=args.latency, payload=args.payload, host=args.host, port=args.port, record=args.record)
    if args.keys:
        fake.valid_keys = set(args.keys.split(","))
    fake.always_thoughts = args.always_thoughts
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with fake:
        print(f"READY {fake.base_url}", flush=True)
        await stop.wait()
    print(f"STOPPED {fake.stats()}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_image_api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before each answer")
    parser.add_argument("--payload", choices=("small", "realistic"), default="small")
    parser.add_argument("--keys", default="", help="comma-separated valid API keys (default: any non-empty key)")
    parser.add_argument("--always-thoughts", action="store_true", help="emit thought parts even when not asked")
    parser.add_argument(
        "--record",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep every request in memory (default: counters only)",
    )
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
