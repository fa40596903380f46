"""Log lines as text (the default) or one JSON object per line, tagged with the job being worked on.

``job_context`` sets the job's ids in a context variable, so every line logged inside it carries them:
from the job's own code, from libraries it calls, and from tasks created inside it (asyncio copies the
context into each new task, and ``asyncio.to_thread`` into its thread)::

    with job_context(job_id=job.id, guild_id=job.guild_id, shard=shard_id):
        await run(job)

``configure_logging`` installs the chosen format on the root logger; ``banana-bot`` calls it at start.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, TextIO

import orjson

#: Today's text format; the job's fields are appended to it inside a job_context.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True, slots=True)
class JobFields:
    job_id: str | None = None
    guild_id: int | None = None
    shard: int | None = None

    def items(self) -> list[tuple[str, str | int]]:
        """The fields that are set, in a fixed order."""
        pairs: list[tuple[str, str | int | None]] = [
            ("job_id", self.job_id),
            ("guild_id", self.guild_id),
            ("shard", self.shard),
        ]
        return [(name, value) for name, value in pairs if value is not None]


_job: ContextVar[JobFields | None] = ContextVar("banana_job", default=None)


@contextmanager
def job_context(*, job_id: str | None = None, guild_id: int | None = None, shard: int | None = None) -> Iterator[None]:
    """Tag every line logged inside with these fields (None: left out; DMs have no guild)."""
    token = _job.set(JobFields(job_id=job_id, guild_id=guild_id, shard=shard))
    try:
        yield
    finally:
        _job.reset(token)


def current_job() -> JobFields | None:
    """The fields of the job_context this code runs in, if any."""
    return _job.get()


def _fields(record: logging.LogRecord) -> JobFields | None:
    # Stamped on the record when a handler (or a QueueHandler) formats it in another context; else now.
    stamped = getattr(record, "banana_job", None)
    return stamped if isinstance(stamped, JobFields) else _job.get()


class JobContextFilter(logging.Filter):
    """Stamps the current job's fields on each record, for handlers that format later or elsewhere."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "banana_job"):
            record.banana_job = _job.get()
        return True


class TextFormatter(logging.Formatter):
    """The classic one-line format, plus ``[job=… guild=… shard=…]`` inside a job_context."""

    _SHORT: ClassVar[dict[str, str]] = {"job_id": "job", "guild_id": "guild", "shard": "shard"}

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        job = _fields(record)
        if job is None or not job.items():
            return line
        # On the message's own line: a traceback, if any, follows it.
        return f"{line} [{' '.join(f'{self._SHORT[name]}={value}' for name, value in job.items())}]"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, exception (when there is
    one), stack (when asked for), and job_id, guild_id and shard inside a job_context."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            # Cached on the record like logging.Formatter does, so other handlers don't format it again.
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        job = _fields(record)
        if job is not None:
            entry.update(job.items())
        # default=str: a message argument orjson can't serialise still logs, as its str().
        return orjson.dumps(entry, default=str).decode()


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter for BANANA_LOG_FORMAT: "text" or "json"."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {log_format!r} (expected one of {', '.join(LOG_FORMATS)})")


def configure_logging(level: str | int, log_format: str = "text", *, stream: TextIO | None = None) -> None:
    """Log to `stream` (stderr) in `log_format` from the root logger, as logging.basicConfig would: if the
    root logger has handlers already (an embedder's, pytest's), nothing is changed."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(make_formatter(log_format))
    handler.addFilter(JobContextFilter())
    logging.basicConfig(level=level, handlers=[handler])
