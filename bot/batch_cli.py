"""``banana-bot batch``: many images at half price through Gemini's Batch API, from a JSONL or CSV file.

``submit`` checks every line of the file (prompt, key, size, aspect ratio, reference images) before anything
is sent, sends one batch, records it (origin 'cli', with its lines) and says what it should cost; ``status``,
``list`` and ``cancel`` look at batches at the provider; ``fetch`` writes a finished batch's images to a
folder, one file per line named by its key, and logs them to the usage log the first time only.

Exit codes: 0 done; 1 the batch or some of its lines failed, it is not finished yet, or the provider refused
a call; 2 the input is wrong (a line of the file, an unknown batch name, no Gemini key, an unusable data
directory); 130 interrupted (a batch being waited for carries on at the provider).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import hashlib
import io
import json
import re
import secrets
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from storage.batches import Batch, claim_delivery, get_batch, insert_batch, unsend, update_batch
from storage.db import DatabaseError

from .config import Settings
from .core.batches import BATCH_PRICE_FACTOR, BatchClient, BatchInfo, BatchState, key_id
from .core.errors import ConfigError, GenerationError, InvalidRequest
from .core.imaging import read_reference_file, sniff_mime
from .core.models import ModelSpec, normalise_aspect_ratio, normalise_size
from .core.service import validate
from .core.types import GeneratedImage, ImageInput, ImageRequest, RequestContext
from .local_files import check_writable, data_dir_error, os_reason
from .runtime import Runtime

#: The fields a line may have; `prompt` is the only one required.
FIELDS = ("key", "prompt", "size", "aspect_ratio", "thinking", "references")
#: A key becomes a file name: letters, digits, '-', '_' and '.', starting with a letter or digit.
KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KEY_RULE = "use letters, digits, '-', '_' and '.' (starting with a letter or digit), at most 64 characters"
JSONL_SUFFIXES = (".jsonl", ".json")
CSV_SUFFIXES = (".csv",)
#: Validation errors shown before the rest are only counted.
MAX_ERRORS_SHOWN = 20
#: Waiting: the first look after --poll seconds (default 10), each next one 1.5 times later, up to this (or
#: --poll if larger).
POLL_MAX = 60.0
POLL_GROWTH = 1.5
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class CliError(Exception):
    """Something the person can act on: one line on stderr, and the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# --- the command line (its parser is in cli.py) ----------------------------------------------------------
def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(settings, args))
    except KeyboardInterrupt:
        return 130


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    if getattr(args, "poll", 1.0) <= 0:
        print("error: --poll takes a number of seconds above 0.", file=sys.stderr)
        return 2
    if args.batch_command == "submit" and args.output is not None and not args.wait:
        print(
            "error: -o needs --wait (or fetch the images later: banana-bot batch fetch NAME -o DIR).", file=sys.stderr
        )
        return 2
    try:
        runtime = await Runtime.open(settings)
    except ConfigError as exc:
        for line in exc.lines:
            print(f"config: {line}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:
        print(data_dir_error(settings, exc), file=sys.stderr)
        return 2
    except DatabaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        commands = BatchCommands(runtime)
        if args.batch_command == "submit":
            return await commands.submit(
                args.file, model=args.model, wait=args.wait, output=args.output, poll=args.poll
            )
        if args.batch_command == "status":
            return await commands.status(args.name)
        if args.batch_command == "fetch":
            return await commands.fetch(args.name, args.output, wait=args.wait, poll=args.poll)
        if args.batch_command == "list":
            return await commands.list(limit=args.limit)
        return await commands.cancel(args.name)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except GenerationError as exc:
        # The provider refused or could not be reached (after its retries); the message never holds a key.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await runtime.aclose()


# --- reading the file ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    field: str | None
    message: str

    def describe(self, source: Path) -> str:
        where = f"{source.name} line {self.line}" if self.line else source.name
        return f"{where}, {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class RawLine:
    """One request as read from the file: its line number and its fields (JSON values, or CSV text)."""

    number: int
    values: dict[str, Any]


@dataclass(slots=True)
class Line:
    """One checked request, ready to send."""

    number: int
    key: str
    request: ImageRequest
    #: The reference paths as written in the file.
    references: list[str] = field(default_factory=list)

    def item(self) -> dict[str, Any]:
        """The line as recorded with the batch (size and ratio normalised)."""
        r = self.request
        return {
            "line": self.number,
            "key": self.key,
            "prompt": r.prompt,
            "size": r.size,
            "aspect_ratio": r.aspect_ratio,
            "thinking": r.thinking,
            "references": self.references,
        }


def read_rows(path: Path) -> tuple[list[RawLine], list[LineError]]:
    """The file's requests, and what is wrong with its structure (bad JSON, unknown fields, CSV columns)."""
    suffix = path.suffix.lower()
    if suffix not in JSONL_SUFFIXES + CSV_SUFFIXES:
        raise CliError(f"{path}: use a .jsonl (or .json) file, one JSON object a line, or a .csv file.", 2)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text.", 2) from None
    except OSError as exc:
        raise CliError(f"can't read {path}: {os_reason(exc)}.", 2) from None
    return _read_csv(text) if suffix in CSV_SUFFIXES else _read_jsonl(text)


def _read_jsonl(text: str) -> tuple[list[RawLine], list[LineError]]:
    rows: list[RawLine] = []
    errors: list[LineError] = []
    # Only \n ends a line: JSON strings may hold the other characters str.splitlines() splits at.
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors.append(LineError(number, None, f"not valid JSON: {exc.msg} (column {exc.colno})."))
            continue
        if not isinstance(value, dict):
            errors.append(LineError(number, None, 'each line must be one JSON object, like {"prompt": "a cat"}.'))
            continue
        unknown = [name for name in value if name not in FIELDS]
        for name in unknown:
            errors.append(LineError(number, str(name), f"unknown field; the fields are {', '.join(FIELDS)}."))
        if not unknown:
            rows.append(RawLine(number, value))
    return rows, errors


def _header_name(raw: str) -> str:
    return raw.strip().lower().replace(" ", "_").replace("-", "_")


def _read_csv(text: str) -> tuple[list[RawLine], list[LineError]]:
    rows: list[RawLine] = []
    errors: list[LineError] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    start = 1  # the line a record begins on (a quoted cell may span lines)
    try:
        for cells in reader:
            number, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = [_header_name(cell) for cell in cells]
                # A column without a name (a trailing comma) is left out.
                bad = [(raw, name) for raw, name in zip(cells, header, strict=True) if name and name not in FIELDS]
                for raw, _ in bad:
                    errors.append(
                        LineError(number, raw.strip(), f"unknown column; the columns are {', '.join(FIELDS)}.")
                    )
                if "prompt" not in header:
                    errors.append(LineError(number, "prompt", "the header row has no prompt column."))
                named = [name for name in header if name]
                if len(set(named)) != len(named):
                    errors.append(LineError(number, None, "the header row names a column twice."))
                if errors:
                    return [], errors
                continue
            if len(cells) > len(header):
                errors.append(LineError(number, None, f"{len(cells)} cells, but the header names {len(header)}."))
                continue
            values = {name: cell for name, cell in zip(header, cells, strict=False) if name and cell.strip()}
            rows.append(RawLine(number, values))
    except csv.Error as exc:
        errors.append(LineError(reader.line_num, None, f"not valid CSV: {exc}."))
    return rows, errors


# --- checking the requests -------------------------------------------------------------------------------------
class _Checker:
    """Turns raw lines into requests for one model; each problem becomes a LineError naming its field."""

    def __init__(self, spec: ModelSpec, folder: Path) -> None:
        self.spec = spec
        self.folder = folder
        self.keys: dict[str, tuple[int, str]] = {}  # casefolded key -> (line, key): file names must differ
        self._references: dict[Path, ImageInput | InvalidRequest] = {}
        # What each field is checked against: a request that is fine but for that field.
        self._probe = ImageRequest(prompt="probe", size=spec.sizes[0], model=spec.model_id)

    def _check(self, errors: list[LineError], number: int, name: str, **changes: Any) -> bool:
        try:
            validate(replace(self._probe, **changes), self.spec)
        except InvalidRequest as exc:
            errors.append(LineError(number, name, str(exc)))
            return False
        return True

    async def line(self, raw: RawLine, errors: list[LineError]) -> Line | None:
        number, values = raw.number, raw.values
        found = len(errors)
        prompt = values.get("prompt")
        if prompt is None:
            errors.append(LineError(number, "prompt", "missing; every line needs one."))
        elif not isinstance(prompt, str):
            errors.append(LineError(number, "prompt", "must be text."))
        elif not prompt.strip():
            errors.append(LineError(number, "prompt", "is empty."))
        key = self._key(number, values.get("key", f"line-{number}"), errors)
        size = "1K" if "1K" in self.spec.sizes else self.spec.sizes[0]
        if values.get("size") is not None:
            size = self._normalised(number, "size", values["size"], normalise_size, errors) or size
            self._check(errors, number, "size", size=size)
        ratio = None
        if values.get("aspect_ratio") is not None:
            ratio = self._normalised(number, "aspect_ratio", values["aspect_ratio"], normalise_aspect_ratio, errors)
            if ratio is not None:
                self._check(errors, number, "aspect_ratio", aspect_ratio=ratio)
        thinking = None
        if values.get("thinking") is not None:
            if isinstance(values["thinking"], str):
                thinking = values["thinking"].strip().lower()
                self._check(errors, number, "thinking", thinking=thinking)
            else:
                errors.append(LineError(number, "thinking", "must be text."))
        paths = self._paths(number, values.get("references"), errors)
        references = await self._read_references(number, paths, errors)
        if len(errors) > found or not isinstance(prompt, str) or key is None:
            return None
        request = ImageRequest(
            prompt=prompt,
            size=size,
            aspect_ratio=ratio,
            thinking=thinking,
            model=self.spec.model_id,
            references=tuple(references),
        )
        try:
            validate(request, self.spec)  # the whole request, as a fast one would be checked
        except InvalidRequest as exc:
            errors.append(LineError(number, None, str(exc)))
            return None
        return Line(number, key, request, paths)

    def _key(self, number: int, raw: Any, errors: list[LineError]) -> str | None:
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = str(raw)
        if not isinstance(raw, str):
            errors.append(LineError(number, "key", "must be text."))
            return None
        key = raw.strip()
        if not KEY_PATTERN.fullmatch(key):
            errors.append(LineError(number, "key", f"{key!r} can't be a file name: {KEY_RULE}."))
            return None
        earlier = self.keys.get(key.casefold())
        if earlier is not None:
            same = "" if earlier[1] == key else f" (as {earlier[1]!r}; file names must differ in more than case)"
            errors.append(LineError(number, "key", f"{key!r} is already used on line {earlier[0]}{same}."))
            return None
        self.keys[key.casefold()] = (number, key)
        return key

    def _normalised(
        self, number: int, name: str, raw: Any, normalise: Callable[[str], str], errors: list[LineError]
    ) -> str | None:
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = str(raw)
        if not isinstance(raw, str):
            errors.append(LineError(number, name, "must be text."))
            return None
        try:
            value = normalise(raw)
        except InvalidRequest as exc:
            errors.append(LineError(number, name, str(exc)))
            return None
        return value

    def _paths(self, number: int, raw: Any, errors: list[LineError]) -> list[str]:
        if raw is None:
            return []
        if isinstance(raw, str):  # CSV, or one path in JSON
            return [p.strip() for p in re.split(r"[;|]", raw) if p.strip()]
        if isinstance(raw, list) and all(isinstance(p, str) for p in raw):
            return [p.strip() for p in raw if p.strip()]
        errors.append(LineError(number, "references", "must be a list of file paths."))
        return []

    async def _read_references(self, number: int, paths: list[str], errors: list[LineError]) -> list[ImageInput]:
        placeholders = tuple(ImageInput(b"", "image/png") for _ in paths)
        if not paths or not self._check(errors, number, "references", references=placeholders):
            return []  # too many: not worth reading them
        images: list[ImageInput] = []
        resolved = await asyncio.to_thread(lambda: [(self.folder / Path(p).expanduser()).resolve() for p in paths])
        for written, path in zip(paths, resolved, strict=True):
            if path not in self._references:  # a reference used by many lines is read once
                try:
                    self._references[path] = await asyncio.to_thread(read_reference_file, path)
                except InvalidRequest as exc:
                    self._references[path] = exc
            found = self._references[path]
            if isinstance(found, InvalidRequest):
                errors.append(LineError(number, "references", str(found).replace(str(path), written)))
            else:
                images.append(found)
        if len(images) == len(paths):
            self._check(errors, number, "references", references=tuple(images))  # their size together
        return images


async def check_file(path: Path, spec: ModelSpec) -> tuple[list[Line], list[LineError]]:
    """Every request in the file, checked for `spec`; nothing is sent unless the errors are empty."""
    rows, errors = await asyncio.to_thread(read_rows, path)
    checker = _Checker(spec, path.parent)
    lines = [line for raw in rows if (line := await checker.line(raw, errors)) is not None]
    if not rows and not errors:
        errors.append(LineError(0, None, "has no requests."))
    errors.sort(key=lambda e: e.line)
    return lines, errors


# --- prices ----------------------------------------------------------------------------------------------------
def estimate(spec: ModelSpec, sizes: list[str]) -> tuple[float, float] | None:
    """What the images should cost at the batch price and fast (images only: the prompt's and thinking's tokens
    add a little), or None when the model has no known price."""
    fast = sum(spec.pricing.image_price(size) for size in sizes)
    if fast <= 0:
        return None
    return fast * BATCH_PRICE_FACTOR, fast


def describe_estimate(spec: ModelSpec, sizes: list[str]) -> str:
    prices = estimate(spec, sizes)
    count = f"{len(sizes)} image{'s' if len(sizes) != 1 else ''}"
    if prices is None:
        return f"estimated cost unknown: no price for {spec.model_id} ({count})"
    batch, fast = prices
    return f"estimated cost ${batch:.3f} for {count} at the batch price (${fast:.3f} if made at once)"


# --- waiting ---------------------------------------------------------------------------------------------------
class Progress:
    """Requests done out of the batch's, on stderr: a tqdm bar on a terminal (state, count, elapsed time and
    rate, fitted to the terminal's width); elsewhere (a log, a pipe) a plain line each time it changes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last: tuple[str, int, int] | None = None
        self._bar: tqdm[Any] | None = None
        if self.tty:
            self._bar = tqdm(total=0, file=self.stream, unit="image", dynamic_ncols=True, leave=True)

    def show(self, info: BatchInfo, note: str = "") -> None:
        total, done = info.request_count, info.succeeded + info.failed
        failed = f"{info.failed} failed" if info.failed else ""
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = done
            self._bar.set_description_str(f"{info.name} {info.state}", refresh=False)
            self._bar.set_postfix_str("  ".join(p for p in (failed, note) if p), refresh=False)
            self._bar.refresh()
            return
        if (str(info.state), done, info.failed) != self._last or note:
            text = (
                f"{info.name}  {info.state:<9} {done}/{total}"
                + (f" ({failed})" if failed else "")
                + f"  {_duration(time.monotonic() - self.started)}"
                + (f"  {note}" if note else "")
            )
            self.stream.write(text + "\n")
            self.stream.flush()
        self._last = (str(info.state), done, info.failed)

    async def sleep(self, seconds: float, info: BatchInfo) -> None:
        """Wait before the next look; on a terminal the bar's clock keeps ticking meanwhile."""
        if self._bar is None:
            await asyncio.sleep(seconds)
            return
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(1.0, left))
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds // 60 % 60:02d}m"


def poll_delays(poll: float) -> Iterator[float]:
    """--poll seconds at first, then 1.5 times longer each time, up to a minute (or --poll, if longer)."""
    delay, ceiling = poll, max(poll, POLL_MAX)
    while True:
        yield delay
        delay = min(ceiling, delay * POLL_GROWTH)


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    return f"{count / 1024:.0f} KiB" if count < 1_048_576 else f"{count / 1_048_576:.1f} MiB"


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- the commands ----------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Target:
    """A batch the commands act on: its provider name, the key that sees it, and our record if we have one."""

    name: str
    key: str
    record: Batch | None


class BatchCommands:
    def __init__(self, runtime: Runtime, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.runtime = runtime
        self.db = runtime.db
        self.out = stdout or sys.stdout
        self.err = stderr or sys.stderr
        provider = runtime.service.batch_provider()
        if provider is None:
            raise CliError(
                "batches go through Gemini's Batch API, and no Gemini key is configured: set GEMINI_API_KEY.", 2
            )
        self.client = BatchClient(provider)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def warn(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def spec(self, model: str | None) -> ModelSpec:
        return self.runtime.service.spec_for(self.client.provider, ImageRequest(prompt="", model=model))

    # --- submit ---
    async def submit(self, path: Path, *, model: str | None, wait: bool, output: Path | None, poll: float) -> int:
        spec = self.spec(model)
        lines, errors = await check_file(path, spec)
        if errors:
            for error in errors[:MAX_ERRORS_SHOWN]:
                self.warn(f"error: {error.describe(path)}")
            more = len(errors) - MAX_ERRORS_SHOWN
            if more > 0:
                self.warn(f"error: ... and {more} more")
            self.warn(f"nothing was sent: fix {path.name} and submit it again.")
            return 2
        if output is not None:
            await self._check_output(output)
        now = time.time()
        record = Batch(
            id=f"banana-cli-{secrets.token_hex(6)}",
            origin="cli",
            provider=self.client.name,
            model=spec.model_id,
            key_id=self.client.next_key(),
            state="sending",
            request_count=len(lines),
            created_at=now,
            items=[line.item() for line in lines],
        )
        # Recorded before it is sent, under the id it is sent as: a create call cut off (no answer) may still have
        # made the batch, and `status` finds it at the provider by that id.
        await insert_batch(self.db, record)
        try:
            info, kind, size = await self.client.create(
                [(line.key, line.request) for line in lines], spec, display_name=record.id, key=record.key_id
            )
        except GenerationError as exc:
            # No answer, or a server error that may have come after the batch was made.
            if (exc.status is None or exc.status >= 500) and exc.error_class != "no_keys":
                raise CliError(
                    f"{exc} The batch may have been created anyway: `banana-bot batch status {record.id}` tells.", 1
                ) from None
            await unsend(self.db, record.id, time.time())  # refused: nothing was made, nothing stays recorded
            raise
        sent = {"name": info.name, "state": str(info.state), "input_kind": kind, "input_bytes": size}
        await update_batch(self.db, record.id, sent_at=time.time(), **sent)
        record.name = info.name
        self.say(
            f"submitted {info.name} ({record.id}): {len(lines)} request{'s' if len(lines) != 1 else ''} for "
            f"{spec.model_id}, sent {kind} ({_size(size)})"
        )
        self.say(describe_estimate(spec, [line.request.size for line in lines]))
        if not wait:
            self.say(f"see it with: banana-bot batch status {info.name}")
            self.say(f"get the images with: banana-bot batch fetch {info.name} -o DIR [--wait]")
            return 0
        target = Target(info.name, record.key_id, record)
        info = await self._wait(target, info, poll, output)
        if output is None:
            self.say(f"{info.name} ended {info.state}; get the images with: banana-bot batch fetch {info.name} -o DIR")
            return 0 if info.state is BatchState.SUCCEEDED else 1
        return await self._deliver(target, info, output)

    # --- status ---
    async def status(self, name: str) -> int:
        target, info = await self._resolve(name)
        record = target.record
        total, done = info.request_count, info.succeeded + info.failed
        rows = [
            ("batch", info.name),
            ("display name", info.display_name or "-"),
            ("model", info.model or (record.model if record else "-")),
            ("state", str(info.state) + (f": {info.error}" if info.error else "")),
            ("requests", f"{total}: {info.succeeded} succeeded, {info.failed} failed, {max(0, total - done)} to go"),
            ("created", _when(info.created_at or (record.created_at if record else None))),
            ("ended", _when(info.ended_at or (record.ended_at if record else None))),
        ]
        if record is not None:
            rows.append(("sent from", "this bot's CLI" if record.origin == "cli" else f"this bot ({record.origin})"))
            rows.append(("input", f"{record.input_kind}, {_size(record.input_bytes)}"))
            if record.origin == "cli" and record.items:
                rows.append(("cost", describe_estimate(self.spec(record.model), [i["size"] for i in record.items])))
                fetched = "not yet" if record.delivered_at is None else f"{_when(record.delivered_at)}, logged"
                rows.append(("fetched", fetched))
        else:
            rows.append(("sent from", "elsewhere (not in this bot's database)"))
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            self.say(f"{label:<{width}}  {value}")
        return 0

    # --- list ---
    async def list(self, *, limit: int) -> int:
        found: dict[str, BatchInfo] = {}
        keys = list(dict.fromkeys(key_id(secret) for secret in self.client.provider.config.api_keys))
        for kid in keys:
            for info in await self.client.list_batches(kid, limit=limit):
                found.setdefault(info.name, info)
        batches = sorted(found.values(), key=lambda b: b.created_at or 0.0, reverse=True)[:limit]
        if not batches:
            self.say(f"no batches at {self.client.name} for the configured key{'s' if len(keys) > 1 else ''}.")
            return 0
        table = [("NAME", "DISPLAY NAME", "STATE", "DONE", "CREATED", "HERE")]
        for info in batches:
            record = await get_batch(self.db, info.name) or (
                await get_batch(self.db, info.display_name) if info.display_name else None
            )
            here = "-" if record is None else record.origin
            done = f"{info.succeeded + info.failed}/{info.request_count}" + (
                f" ({info.failed} failed)" if info.failed else ""
            )
            created = _when(info.created_at).removesuffix(" UTC") if info.created_at else "-"
            table.append((info.name, info.display_name or "-", str(info.state), done, created, here))
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
        for row in table:
            self.say("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
        return 0

    # --- cancel ---
    async def cancel(self, name: str) -> int:
        target, info = await self._resolve(name)
        if info.state.final:
            raise CliError(f"{info.name} has already ended ({info.state}): there is nothing to cancel.", 1)
        await self.client.cancel(target.name, target.key)
        info = await self.client.get(target.name, target.key)
        await self._remember(target, info)
        self.say(f"cancelled {info.name}: it is {info.state} now.")
        return 0

    # --- fetch ---
    async def fetch(self, name: str, output: Path, *, wait: bool, poll: float) -> int:
        await self._check_output(output)
        target, info = await self._resolve(name)
        if not info.state.final:
            if not wait:
                done = info.succeeded + info.failed
                self.warn(
                    f"{info.name} is {info.state} ({done} of {info.request_count} done): nothing to fetch yet; "
                    "try again later, or add --wait."
                )
                return 1
            info = await self._wait(target, info, poll, output)
        return await self._deliver(target, info, output)

    # --- shared ---
    async def _resolve(self, name: str) -> tuple[Target, BatchInfo]:
        """The batch called `name` (our id or the provider's name) and what the provider says of it now."""
        name = name.strip()
        if not name:
            raise CliError("name a batch: batches/... or banana-cli-...", 2)
        record = await get_batch(self.db, name)
        if record is None and "/" not in name:
            record = await get_batch(self.db, f"batches/{name}")
        if record is not None:
            if record.provider != self.client.name:
                raise CliError(f"{record.id} went to {record.provider}, which is no longer configured.", 2)
            if record.name is None:
                info = await self._reconcile(record)
            else:
                try:
                    info = await self.client.get(record.name, record.key_id)
                except GenerationError as exc:
                    if exc.status != 404:
                        raise
                    raise CliError(f"{self.client.name} no longer has {record.name} ({record.id}).", 1) from None
            target = Target(info.name, record.key_id, record)
            await self._remember(target, info)
            return target, info
        # Not sent from here: any configured key may be the one that sees it.
        wanted = name if name.startswith("batches/") else f"batches/{name}"
        for secret in self.client.provider.config.api_keys:
            kid = key_id(secret)
            try:
                info = await self.client.get(wanted, kid)
            except GenerationError as exc:
                if exc.status == 404:
                    continue
                raise
            return Target(info.name or wanted, kid, None), info
        raise CliError(f"no batch {name}: this bot never sent it, and {self.client.name} doesn't know it.", 2)

    async def _reconcile(self, record: Batch) -> BatchInfo:
        """A batch recorded as being sent whose create call got no answer: look for it at the provider."""
        found = await self.client.find(record.id, record.key_id)
        if found is None:
            raise CliError(
                f"{record.id} was never confirmed by {self.client.name} (its create call got no answer), and "
                f"{self.client.name} doesn't list it: it was not created. Submit the file again.",
                1,
            )
        await update_batch(self.db, record.id, name=found.name, state=str(found.state), sent_at=record.created_at)
        record.name = found.name
        return await self.client.get(found.name, record.key_id)

    async def _remember(self, target: Target, info: BatchInfo) -> None:
        """Keep our record's state up to date with what the provider said."""
        record = target.record
        if record is None:
            return
        changes: dict[str, Any] = {"state": str(info.state), "polls": record.polls + 1}
        if info.state.final and record.ended_at is None:
            changes["ended_at"] = info.ended_at or time.time()
            changes["error"] = info.error
        await update_batch(self.db, record.id, **changes)
        for name, value in changes.items():
            setattr(record, name, value)

    async def _wait(self, target: Target, info: BatchInfo, poll: float, output: Path | None) -> BatchInfo:
        progress = Progress(self.err)
        progress.show(info)
        delays = poll_delays(poll)
        try:
            while not info.state.final:
                await progress.sleep(next(delays), info)
                try:
                    info = await self.client.get(target.name, target.key)
                except GenerationError as exc:
                    if not exc.retryable:
                        raise
                    progress.show(info, note=f"(could not look: {exc}; trying again)")
                    continue
                await self._remember(target, info)
                progress.show(info)
        except asyncio.CancelledError:
            progress.close()
            self.warn(
                f"stopped waiting; {target.name} carries on at {self.client.name}: "
                f"banana-bot batch fetch {target.name} -o {output or 'DIR'} --wait"
            )
            raise
        progress.close()
        return info

    async def _check_output(self, output: Path) -> None:
        def check() -> None:
            output.mkdir(parents=True, exist_ok=True)
            check_writable(output)

        try:
            await asyncio.to_thread(check)
        except OSError as exc:
            raise CliError(f"can't write to {output}: {os_reason(exc)}.", 1) from None

    async def _deliver(self, target: Target, info: BatchInfo, output: Path) -> int:
        """Write a finished batch's images to `output`; log them the first time only."""
        if info.state is not BatchState.SUCCEEDED:
            self.warn(f"{info.name} ended {info.state}: {info.error or _ENDINGS.get(info.state, 'no results')}")
            return 1
        record = target.record
        ours = record is not None and record.origin == "cli" and record.items is not None
        spec = self.spec(record.model if record is not None else (info.model or None))
        asked: dict[str, tuple[ImageRequest, ModelSpec]] = {}
        numbers: dict[str, int] = {}
        if ours:
            assert record is not None and record.items is not None
            for item in record.items:
                asked[item["key"]] = (_request_of(item, spec), spec)
                numbers[item["key"]] = int(item.get("line") or 0)
        # A batch sent elsewhere (or a relax batch, which the bot delivers itself): its keys come from its output.
        others = None if ours else (ImageRequest(prompt="", model=spec.model_id), spec)
        try:
            lines = await self.client.lines(info, target.key, asked, others=others)
        except GenerationError as exc:
            if exc.status != 404:
                raise
            raise CliError(f"{self.client.name} no longer has the results of {info.name}.", 1) from None
        # Claimed before logging: two fetches at once log (and charge) the images once.
        first = ours and record is not None and await claim_delivery(self.db, record.id, time.time())
        if first:
            assert record is not None
            total_ms = ((record.ended_at or time.time()) - record.created_at) * 1000
            context = RequestContext(command="cli")
            for line in lines:
                request = asked[line.key][0]
                await self.runtime.service.record_batched(
                    request, context, spec, batch_id=record.id, total_ms=total_ms, result=line.result, error=line.error
                )
        written, failed, cost = 0, 0, 0.0
        for line in lines:
            if line.result is None:
                failed += 1
                where = f" (line {numbers[line.key]})" if numbers.get(line.key) else ""
                self.warn(f"failed {line.key}{where}: {line.error}")
                continue
            stem = file_stem(line.key)
            image = line.result.image
            path = output / f"{stem}.{extension(image)}"
            text = (line.result.text or "").strip()
            try:
                await asyncio.to_thread(_write, path, image.data, output / f"{stem}.txt", text)
            except OSError as exc:
                raise CliError(f"can't write {path}: {os_reason(exc)}.", 1) from None
            written += 1
            cost += line.result.usage.cost_usd
            self.say(f"wrote {path} ({image.width}x{image.height})" + (" and its text" if text else ""))
        summary = f"{written} image{'s' if written != 1 else ''} in {output}" + (f", {failed} failed" if failed else "")
        if first:
            summary += f"; cost ${cost:.3f} at the batch price, logged to the usage log"
        elif ours:
            summary += "; already logged when first fetched"
        else:
            summary += "; not logged: this batch was not submitted from this bot's CLI"
        self.say(summary)
        return 1 if failed else 0


_ENDINGS = {
    BatchState.CANCELLED: "it was cancelled",
    BatchState.EXPIRED: "it did not finish within 48 hours",
    BatchState.FAILED: "the provider gave no reason",
}


def _request_of(item: dict[str, Any], spec: ModelSpec) -> ImageRequest:
    """A recorded line as a request again, to price and log its answer. Its reference images are not read
    again: only their number is logged."""
    return ImageRequest(
        prompt=str(item.get("prompt") or ""),
        size=str(item.get("size") or "1K"),
        aspect_ratio=item.get("aspect_ratio"),
        thinking=item.get("thinking"),
        model=spec.model_id,
        references=tuple(ImageInput(b"", "image/png") for _ in item.get("references") or []),
    )


def file_stem(key: str) -> str:
    """The key itself when it is a safe file name (ours always are); else a safe name made from it, with a
    hash so that two keys never share one (a batch sent elsewhere may use any key)."""
    if KEY_PATTERN.fullmatch(key):
        return key
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._-")[:48] or "line"
    return f"{cleaned}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def extension(image: GeneratedImage) -> str:
    """From the bytes themselves, not what the answer claimed."""
    mime = sniff_mime(image.data) or image.mime
    return _EXTENSIONS.get(mime, mime.rpartition("/")[2] or "img")


def _write(path: Path, data: bytes, text_path: Path, text: str) -> None:
    path.write_bytes(data)
    if text:
        text_path.write_text(text + "\n", encoding="utf-8")
