"""``banana-bot``: run the bot, or generate images from the command line (one now, or a batch at half price:
see batch_cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import io
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from storage.db import DatabaseError

from .config import DISCORD_TOKEN_HELP, Settings, load_settings
from .core.errors import ConfigError, GenerationError
from .core.imaging import read_reference_file
from .core.models import normalise_aspect_ratio, normalise_size
from .core.types import GenerationResult, ImageRequest, Preview, RequestContext
from .local_files import check_writable, data_dir_error, os_reason
from .observability.logs import configure_logging

if TYPE_CHECKING:
    from storage.reports import UsageReport

    from .runtime import Runtime

TOKEN_REFUSED = "Discord refused DISCORD_TOKEN: reset the token in the Developer Portal and update .env."
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_MIME_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="banana-bot", description="A Discord bot for Nano Banana image models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="connect to Discord and serve commands")
    sub.add_parser("health", help="exit 0 if a running bot has checked in recently (for container health checks)")
    report = sub.add_parser("report", help="usage, speed and cost across all servers (or one), from the log")
    report.add_argument("--since", default="30d", help="7d, 12h, 30m or a date like 2026-11-01 (default 30d)")
    report.add_argument("--guild", type=int, help="one server's id")
    report.add_argument("--csv", type=Path, help="also write the period's rows to this CSV file")
    sync = sub.add_parser("sync", help="push the slash commands to Discord (run also does this when they change)")
    sync.add_argument("--guild", type=int, help="a server id: sync there only (shows up at once; handy for testing)")
    gen = sub.add_parser("generate", help="generate one image and print where the time and money went")
    gen.add_argument("prompt", help="what to draw")
    gen.add_argument("-o", "--output", required=True, type=Path, help="where to write the image (.png/.jpg/.webp)")
    gen.add_argument("--size", default="1K", help="1K, 2K or 4K (also 2k, 2048; 512 on Nano Banana 2)")
    gen.add_argument("--aspect", help="aspect ratio such as 16:9 (default: the model's, usually 1:1)")
    gen.add_argument("--thinking", help="thinking level, for models that take one (Nano Banana 2: minimal, high)")
    gen.add_argument("--ref", action="append", type=Path, default=[], help="a reference image (repeatable)")
    gen.add_argument("--model", help="model id (default: GEMINI_MODEL / OPENAI_IMAGE_MODEL)")
    gen.add_argument("--provider", choices=("gemini", "openai"), help="use only this provider (no failover)")
    gen.add_argument(
        "--previews",
        type=Path,
        metavar="DIR",
        help="write the model's drafts here as they arrive (models that draw them)",
    )
    add_batch_parser(sub)
    return parser


def add_batch_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`banana-bot batch ...` (bot/batch_cli.py, imported only when it runs: every command builds this parser)."""
    batch = sub.add_parser(
        "batch", help="many images from a JSONL or CSV file at half price (Gemini's Batch API, done within 24 h)"
    )
    commands = batch.add_subparsers(dest="batch_command", required=True)
    name_help = "the provider's name (batches/...) or this bot's id (banana-cli-...)"
    submit = commands.add_parser("submit", help="check a JSONL or CSV file of requests and send it as one batch")
    submit.add_argument("file", type=Path, help="requests, one a line: .jsonl (or .json) or .csv with a header row")
    submit.add_argument("--model", help="model id (default: GEMINI_MODEL)")
    submit.add_argument("--wait", action="store_true", help="wait for the batch to finish, showing its progress")
    submit.add_argument("-o", "--output", type=Path, metavar="DIR", help="with --wait: write the images here")
    status = commands.add_parser("status", help="a batch's state, counts and times")
    status.add_argument("name", help=name_help)
    fetch = commands.add_parser("fetch", help="write a finished batch's images to a folder")
    fetch.add_argument("name", help=name_help)
    fetch.add_argument("-o", "--output", type=Path, metavar="DIR", required=True, help="where to write the images")
    fetch.add_argument("--wait", action="store_true", help="wait for the batch to finish first")
    for waits in (submit, fetch):
        waits.add_argument(
            "--poll",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="with --wait: look this often at first, then less often, up to every minute (default 10)",
        )
    listing = commands.add_parser("list", help="the batches the configured Gemini key(s) can see, newest first")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    cancel = commands.add_parser("cancel", help="cancel a batch that has not finished")
    cancel.add_argument("name", help=name_help)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        for line in exc.lines:
            print(f"config: {line}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level if args.command == "run" else "WARNING", settings.log_format)
    if args.command in ("run", "sync", "generate", "batch"):
        # Checked before connecting or spending anything: later it would surface as a traceback.
        try:
            prepare_data_dir(settings)
        except OSError as exc:
            print(data_dir_error(settings, exc), file=sys.stderr)
            return 2
    if args.command == "run":
        return run_bot(settings)
    if args.command == "health":
        return check_health(settings)
    if args.command == "report":
        return asyncio.run(print_report(settings, args))
    if args.command == "sync":
        return asyncio.run(sync_commands(settings, args.guild))
    if args.command == "batch":
        from .batch_cli import run as run_batch

        return run_batch(settings, args)
    try:
        return asyncio.run(generate(settings, args))
    except KeyboardInterrupt:
        return 130


def prepare_data_dir(settings: Settings) -> None:
    """Create BANANA_DATA_DIR if need be and make sure files can be written there; raises OSError if not."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    check_writable(settings.data_dir)
    check_usage_log(settings)


def check_usage_log(settings: Settings) -> None:
    """Raise OSError if something other than a file has the usage log's name.

    SQLite would only say "unable to open database file", and aiosqlite's worker thread, left behind
    by the failed connect, then prints a traceback of its own at exit."""
    if settings.database_path.exists() and not settings.database_path.is_file():
        raise IsADirectoryError(errno.EISDIR, f"{settings.database_path} is not a file")


def run_bot(settings: Settings) -> int:
    if settings.discord_token is None:
        print(DISCORD_TOKEN_HELP, file=sys.stderr)
        return 2
    import discord

    from .client import create_bot
    from .observability.metrics import MetricsServerError

    # Not BananaBot(): create_bot also routes REST through DISCORD_API_BASE.
    bot = create_bot(settings, freeze_gc=True)
    try:
        bot.run(settings.discord_token.reveal(), log_handler=None)
    except discord.LoginFailure:
        print(
            TOKEN_REFUSED,
            file=sys.stderr,
        )
        return 2
    except ConfigError as exc:
        for line in exc.lines:
            print(f"config: {line}", file=sys.stderr)
        return 2
    except (DatabaseError, MetricsServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


async def sync_commands(settings: Settings, guild: int | None) -> int:
    """Log in (no gateway), load the cogs, and sync the command tree globally or to one guild."""
    if settings.discord_token is None:
        print(DISCORD_TOKEN_HELP, file=sys.stderr)
        return 2
    import discord

    from .client import create_bot

    bot = create_bot(settings, sync_commands=False)
    try:
        async with bot:
            await bot.login(settings.discord_token.reveal())  # runs setup_hook: storage and cogs
            synced = await bot.sync(guild)
    except discord.LoginFailure:
        print(TOKEN_REFUSED, file=sys.stderr)
        return 2
    except discord.HTTPException as exc:
        print(f"error: Discord refused the commands: {exc}", file=sys.stderr)
        return 1
    where = f"to server {guild}" if guild else "globally (they can take up to an hour to appear everywhere)"
    print(f"synced {len(synced)} commands {where}: {', '.join('/' + c.name for c in synced)}")
    return 0


async def print_report(settings: Settings, args: argparse.Namespace) -> int:
    """The owner's report: the same numbers as /usage, across every server unless --guild says one."""
    import time

    from storage.db import Database
    from storage.reports import Scope, csv_text, parse_since, usage_report

    now = time.time()
    try:
        since = parse_since(args.since, now)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # A report only reads, so the data directory is not created; stat tells "not there yet" from "unusable".
    try:
        if settings.database_url is None:
            settings.database_path.stat()
            check_usage_log(settings)
    except FileNotFoundError:
        print(f"error: no usage log at {settings.database_path} yet (BANANA_DATA_DIR)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(data_dir_error(settings, exc), file=sys.stderr)
        return 2
    try:
        db = await Database.open(settings.database_target)
    except (OSError, sqlite3.Error) as exc:
        print(data_dir_error(settings, exc), file=sys.stderr)
        return 2
    except DatabaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        scope = Scope(since, now + 1, guild_id=args.guild)
        print(format_report(await usage_report(db, scope, top=10)))
        if args.csv is not None:
            csv = await csv_text(db, scope)
            try:
                await asyncio.to_thread(args.csv.write_text, csv, encoding="utf-8")
            except OSError as exc:
                print(f"error: can't write {args.csv}: {os_reason(exc)}.", file=sys.stderr)
                return 1
            print(f"wrote {args.csv}")
    finally:
        await db.close()
    return 0


def format_report(report: UsageReport) -> str:
    import datetime as dt

    start = dt.datetime.fromtimestamp(report.scope.since, dt.UTC).strftime("%Y-%m-%d %H:%M")
    where = f"server {report.scope.guild_id}" if report.scope.guild_id else "all servers"
    lines = [
        f"usage since {start} UTC, {where}",
        f"requests {report.requests}, images {report.images}, success {report.success_rate:.1%}, "
        f"blocked {report.blocked_rate:.1%}, cost ${report.cost_usd:.2f}",
    ]
    if report.errors:
        lines.append("errors  " + ", ".join(f"{k} {v}" for k, v in sorted(report.errors.items())))
    if report.relax_used:
        lines.append(
            "by speed (s)   requests  images       cost     p50     p95     p99  (fast: generating; relax: turnaround)"
        )
        for speed, usage in report.speeds.items():
            times = "".join(f"{ms / 1000:8.1f}" for ms in usage.total_ms)
            lines.append(
                f"  {speed:<10} {usage.requests:>10} {usage.images:>7} {'$' + format(usage.cost_usd, '.2f'):>10}{times}"
            )
    if report.latency:
        label = "fast latency (s)" if report.relax_used else "latency (s)"
        lines.append(f"{label:<23}count   gen p50   p95   p99  queue p50   p95   p99")
        for row in report.latency:
            gen = "".join(f"{ms / 1000:6.1f}" for ms in row.generation_ms)
            wait = "".join(f"{ms / 1000:6.1f}" for ms in row.queue_ms)
            lines.append(f"  {row.model[:22]:<22} {row.size:>3} {row.count:>6}  {gen}     {wait}")
    if report.top_users:
        lines.append("top users: " + ", ".join(f"{u} {n} images ${c:.2f}" for u, n, c in report.top_users))
    if report.days:
        lines.append("per day: " + ", ".join(f"{d} {n} ${c:.2f}" for d, n, c in report.days[-14:]))
    return "\n".join(lines)


def check_health(settings: Settings) -> int:
    from .health import check

    health = check(settings)
    print(
        ("healthy" if health.healthy else "unhealthy") + ": " + "; ".join(health.lines),
        file=sys.stdout if health.healthy else sys.stderr,
    )
    return 0 if health.healthy else 1


async def generate(settings: Settings, args: argparse.Namespace) -> int:
    from .runtime import Runtime

    try:
        request = ImageRequest(
            prompt=args.prompt,
            size=normalise_size(args.size),
            aspect_ratio=normalise_aspect_ratio(args.aspect) if args.aspect else None,
            thinking=args.thinking.lower() if args.thinking else None,
            model=args.model,
            provider=args.provider,
            references=tuple([await asyncio.to_thread(read_reference_file, p) for p in args.ref]),
        )
        output_format = _FORMATS.get(args.output.suffix.lower())
        if output_format is None:
            raise ConfigError([f"-o {args.output}: use a .png, .jpg or .webp file name."])
        try:
            await asyncio.to_thread(check_output_path, args.output)
        except OSError as exc:
            print(f"error: can't write {args.output}: {os_reason(exc)}.", file=sys.stderr)
            return 1
        try:
            runtime = await Runtime.open(settings)
        except (OSError, sqlite3.Error) as exc:
            print(data_dir_error(settings, exc), file=sys.stderr)
            return 2
        except DatabaseError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    except GenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        for line in exc.lines:
            print(f"config: {line}", file=sys.stderr)
        return 2
    drafts = DraftWriter(args.previews) if args.previews else None
    try:
        context = RequestContext(on_preview=drafts.tell if drafts else None)
        result = await runtime.service.generate(request, context)
    except GenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await runtime.aclose()
        if drafts:
            await drafts.wait()
    try:
        size_written = await asyncio.to_thread(write_image, result, args.output, output_format)
    except OSError as exc:
        kept = await asyncio.to_thread(kept_image, runtime, result)
        print(f"error: can't write {args.output}: {os_reason(exc)}; {kept}.", file=sys.stderr)
        return 1
    print(describe(result, args.output, size_written))
    return 0


def check_output_path(path: Path) -> None:
    """Raise OSError if -o can't be written, before any money is spent on the image."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    check_writable(path.parent)


def kept_image(runtime: Runtime, result: GenerationResult) -> str:
    """Where the image store keeps the image, so a failed -o costs nothing but a copy."""
    lost = "storing it in the image store failed too (see above), so it is lost"
    if result.image_key is None:
        return lost
    try:
        return f"the image is kept at {runtime.images.path(result.image_key)}"
    except (OSError, ValueError):  # stored, then gone (retention, a hand-cleaned folder)
        return lost


class DraftWriter:
    """Writes each draft to DIR/draft-N.<ext> as it arrives and says when it came."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written = 0
        self._writes: list[asyncio.Task[None]] = []

    def tell(self, preview: Preview) -> None:
        if preview.draft is None:
            print(f"thinking {preview.elapsed:6.1f} s  {preview.headline}", flush=True)
            return
        self.written += 1
        suffix = {"image/jpeg": "jpg", "image/webp": "webp"}.get(preview.draft.mime, "png")
        path = self.folder / f"draft-{self.written}.{suffix}"
        print(f"draft    {preview.elapsed:6.1f} s  {path} ({preview.draft.width}x{preview.draft.height})", flush=True)
        self._writes.append(asyncio.create_task(asyncio.to_thread(self._write, path, preview.draft.data)))

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    async def wait(self) -> None:
        await asyncio.gather(*self._writes)


def write_image(result: GenerationResult, path: Path, output_format: str) -> int:
    """Write the image, converting only when the file name asks for another format."""
    image = result.image
    data = image.data
    if _MIME_FORMATS.get(image.mime) != output_format:
        from PIL import Image

        with Image.open(io.BytesIO(image.data)) as img:
            out = io.BytesIO()
            converted = img.convert("RGB") if output_format == "JPEG" else img
            converted.save(out, format=output_format, quality=92)
            data = out.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


def describe(result: GenerationResult, path: Path, size_written: int) -> str:
    t, u, image = result.timing, result.usage, result.image
    via = f"{result.model} via {result.provider}"
    if result.failed_over_from:
        via += " (after " + ", ".join(f"{p} {err}" for p, err in result.failed_over_from) + ")"
    lines = [
        f"wrote {path} ({image.width}x{image.height}, {size_written / 1_048_576:.1f} MB) with {via}",
        f"time    {t.total_ms / 1000:.2f} s total: connect {t.connect_ms:.0f} ms, first byte "
        f"{t.ttfb_ms / 1000:.2f} s, download {t.download_ms:.0f} ms, decode {t.decode_ms:.0f} ms "
        f"({result.attempts} attempt{'s' if result.attempts != 1 else ''})",
        f"data    sent {result.bytes_sent / 1024:.0f} KiB, received {result.bytes_received / 1_048_576:.1f} MiB",
        f"tokens  input {u.input_tokens:,}, output {u.output_tokens:,} (image {u.image_tokens:,}), "
        f"thinking {u.thinking_tokens:,}",
        f"cost    ${u.cost_usd:.4f}",
    ]
    if result.text:
        lines.append(f"model   {result.text[:200]}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
