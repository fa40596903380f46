"""Settings from the environment and ``.env``, validated once at start.

Every bad value gives one line naming the variable and what it accepts; all lines are reported together
so a person fixes their ``.env`` in one go. Secrets are kept in ``Secret`` so they never print.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from .core.errors import ConfigError, InvalidRequest
from .core.models import Pricing, normalise_size
from .core.retry import RetryPolicy
from .jobs.limits import ContextBudget, QueueLimits, RelaxSettings

DISCORD_TOKEN_HELP = (
    "DISCORD_TOKEN is not set: create a bot at https://discord.com/developers/applications "
    "(your application -> Bot -> Reset Token) and put DISCORD_TOKEN=<token> in .env or the environment."
)


class Secret:
    """A string that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    discord_token: Secret | None = None
    gemini_api_keys: tuple[Secret, ...] = ()
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    gemini_api_version: str = "v1beta"
    gemini_model: str = "gemini-3-pro-image-preview"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_keys: tuple[Secret, ...] = ()
    openai_image_model: str = "gpt-image-2"
    openai_api_style: str = "images"
    openai_extra_body: dict[str, Any] = field(default_factory=dict)
    openai_thinking_field: str = ""
    provider_order: tuple[str, ...] = ("gemini", "openai")
    data_dir: Path = Path("data")
    #: PostgreSQL, for several processes sharing one database; None is SQLite in `data_dir`.
    database_url: Secret | None = None
    #: Seconds running jobs get to finish after SIGTERM before they are handed back to the queue.
    stop_grace: float = 30.0
    #: Seconds a running job's lease lasts (renewed while it runs): how soon a dead process's jobs move on.
    job_lease: float = 30.0
    #: Relax mode: how batches are gathered (requests per batch, seconds the oldest waits) and polled.
    relax: RelaxSettings = field(default_factory=RelaxSettings)
    connect_timeout: float = 10.0
    timeouts: dict[str, float] = field(default_factory=lambda: {"512": 120.0, "1K": 120.0, "2K": 180.0, "4K": 360.0})
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    price_overrides: dict[str, Pricing] = field(default_factory=dict)
    image_retention_days: float = 0.0
    log_level: str = "INFO"
    #: "text" (one line per entry) or "json" (one JSON object per line, for log collectors).
    log_format: str = "text"
    #: Serve Prometheus metrics at /metrics on this port; None = no endpoint.
    metrics_port: int | None = None
    #: The address the metrics endpoint listens on; loopback unless a scraper elsewhere needs it.
    metrics_host: str = "127.0.0.1"
    #: Discord's REST base, or an HTTP proxy in front of it (nirn-proxy); None = discord.com.
    discord_api_base: str | None = None
    limits: QueueLimits = field(default_factory=QueueLimits)
    #: Seconds between edits of a status message (Discord rate-limits edits; a few seconds is polite).
    status_interval: float = 3.0
    context_budget: ContextBudget = field(default_factory=ContextBudget)
    #: /grid: 'tiles' (four requests) or 'sliced' (one request for a 2x2 image, cut up; cheaper, less reliable).
    grid_mode: str = "tiles"
    #: Shards over all processes; None = as many as Discord recommends (GET /gateway/bot).
    shard_count: int | None = None
    #: The shards this process runs; None = all of them (needs shard_count when set).
    shard_ids: tuple[int, ...] | None = None

    @property
    def database_path(self) -> Path:
        return self.data_dir / "banana.sqlite3"

    @property
    def database_target(self) -> str:
        """What `Database.open` takes: the PostgreSQL URL, or the SQLite file's path."""
        return self.database_url.reveal() if self.database_url is not None else str(self.database_path)

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def configured_providers(self) -> tuple[str, ...]:
        """The provider order, limited to providers that have keys."""
        have = {"gemini": bool(self.gemini_api_keys), "openai": bool(self.openai_api_keys)}
        return tuple(p for p in self.provider_order if have.get(p))


def load_settings(environ: Mapping[str, str] | None = None, *, env_file: Path | None = Path(".env")) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``) over the values in ``env_file``.

    Raises ConfigError listing every problem found.
    """
    values: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    parser = _Parser(values)
    settings = parser.parse()
    if parser.errors:
        raise ConfigError(parser.errors)
    return settings


class _Parser:
    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.errors: list[str] = []

    def get(self, name: str, default: str = "") -> str:
        return (self.values.get(name) or default).strip()

    def number(self, name: str, default: float, *, minimum: float = 0.0, maximum: float | None = None) -> float:
        raw = self.get(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        # nan fails every comparison and inf (also '1e999') passes any minimum: both are refused by name.
        if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
            accepts = f"of at least {minimum:g}" if maximum is None else f"from {minimum:g} to {maximum:g}"
            self.errors.append(f"{name}={raw!r}: expected a number {accepts}.")
            return default
        return value

    def integer(self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        raw = self.get(name)
        if not raw:
            return default
        # isdigit() alone lets through digits int() refuses ('²') and int() refuses over 4300 digits.
        value: int | None
        try:
            value = int(raw) if raw.isascii() and raw.isdigit() else None
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            accepts = f"of at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            self.errors.append(f"{name}={raw!r}: expected a whole number {accepts}.")
            return default
        return value

    def url(self, name: str, default: str) -> str:
        raw = self.get(name, default).rstrip("/")
        if not raw.startswith(("http://", "https://")):
            self.errors.append(f"{name}={raw!r}: expected a URL starting with http:// or https://.")
            return default
        return raw

    def keys(self, name: str) -> tuple[Secret, ...]:
        raw = self.get(name)
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        if any(any(c.isspace() for c in k) for k in keys):
            self.errors.append(f"{name}: a key contains spaces; separate several keys with commas only.")
        return tuple(Secret(k) for k in keys)

    def parse(self) -> Settings:
        token = self.get("DISCORD_TOKEN")
        provider_order = tuple(p.strip().lower() for p in self.get("BANANA_PROVIDERS", "gemini,openai").split(","))
        bad = [p for p in provider_order if p not in ("gemini", "openai")]
        if bad or not provider_order:
            self.errors.append(
                f"BANANA_PROVIDERS={self.get('BANANA_PROVIDERS')!r}: expected a comma-separated order of "
                "gemini and openai, e.g. 'gemini,openai'."
            )
            provider_order = ("gemini", "openai")
        style = self.get("OPENAI_API_STYLE", "images").lower()
        if style not in ("images", "chat"):
            self.errors.append(f"OPENAI_API_STYLE={style!r}: expected 'images' or 'chat'.")
            style = "images"
        timeouts = {"512": 120.0, "1K": 120.0, "2K": 180.0, "4K": 360.0}
        for size in ("1K", "2K", "4K"):
            timeouts[size] = self.number(f"BANANA_TIMEOUT_{size}", timeouts[size], minimum=0.1)
        timeouts["512"] = timeouts["1K"]
        # 0 (unset or refused) means no count: discord.py then asks Discord how many shards to run.
        shard_count = self.integer("BANANA_SHARD_COUNT", 0, minimum=1) or None
        shard_ids = self._shard_ids(shard_count)
        log_level = self.get("BANANA_LOG_LEVEL", "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            self.errors.append(f"BANANA_LOG_LEVEL={log_level!r}: expected DEBUG, INFO, WARNING or ERROR.")
            log_level = "INFO"
        log_format = self.get("BANANA_LOG_FORMAT", "text").lower()
        if log_format not in ("text", "json"):
            self.errors.append(f"BANANA_LOG_FORMAT={log_format!r}: expected text or json.")
            log_format = "text"
        job_lease = self.number("BANANA_JOB_LEASE", 30.0, minimum=3, maximum=3600)
        return Settings(
            discord_token=Secret(token) if token else None,
            gemini_api_keys=self.keys("GEMINI_API_KEY"),
            gemini_base_url=self.url("GEMINI_BASE_URL", "https://generativelanguage.googleapis.com"),
            gemini_api_version=self._choice("GEMINI_API_VERSION", "v1beta", ("v1beta", "v1")),
            gemini_model=self.get("GEMINI_MODEL", "gemini-3-pro-image-preview"),
            openai_base_url=self.url("OPENAI_BASE_URL", "https://api.openai.com/v1"),
            openai_api_keys=self.keys("OPENAI_API_KEY"),
            openai_image_model=self.get("OPENAI_IMAGE_MODEL", "gpt-image-2"),
            openai_api_style=style,
            openai_extra_body=self._json_object("OPENAI_EXTRA_BODY"),
            openai_thinking_field=self.get("OPENAI_THINKING_FIELD"),
            provider_order=provider_order,
            data_dir=Path(self.get("BANANA_DATA_DIR", "data")).expanduser(),
            database_url=self._database_url(),
            stop_grace=self.number("BANANA_STOP_GRACE", 30.0, minimum=0),
            job_lease=job_lease,
            relax=RelaxSettings(
                # The batcher's lease, like a job's: how soon another process takes over from a dead one.
                lease=job_lease,
                batch_size=self.integer("BANANA_RELAX_BATCH_SIZE", 16, minimum=1, maximum=1000),
                max_wait=self.number("BANANA_RELAX_MAX_WAIT", 300.0, minimum=0),
                poll_min=self.number("BANANA_RELAX_POLL_MIN", 10.0, minimum=0.05),
                poll_max=self.number("BANANA_RELAX_POLL_MAX", 300.0, minimum=0.05),
            ),
            connect_timeout=self.number("BANANA_CONNECT_TIMEOUT", 10.0, minimum=0.1),
            timeouts=timeouts,
            retry=RetryPolicy(
                max_attempts=int(self.number("BANANA_RETRY_ATTEMPTS", 4, minimum=1)),
                backoff_base=self.number("BANANA_RETRY_BACKOFF", 1.0),
                backoff_max=self.number("BANANA_RETRY_BACKOFF_MAX", 30.0),
                hint_cap=self.number("BANANA_RETRY_HINT_CAP", 60.0),
                deadline=self.number("BANANA_RETRY_DEADLINE", 900.0, minimum=1),
            ),
            price_overrides=self._prices(),
            image_retention_days=self.number("BANANA_IMAGE_RETENTION_DAYS", 0.0),
            log_level=log_level,
            log_format=log_format,
            # 0 is refused: it would mean "any free port", which no scraper could be pointed at.
            metrics_port=self.integer("BANANA_METRICS_PORT", 0, minimum=1, maximum=65535) or None,
            metrics_host=self.get("BANANA_METRICS_HOST", "127.0.0.1"),
            discord_api_base=self.url("DISCORD_API_BASE", "") if self.get("DISCORD_API_BASE") else None,
            limits=QueueLimits(
                global_concurrency=self.integer("BANANA_MAX_CONCURRENT", 4, minimum=1),
                guild_concurrency=self.integer("BANANA_GUILD_CONCURRENT", 2, minimum=1),
                user_concurrency=self.integer("BANANA_USER_CONCURRENT", 1, minimum=1),
                user_pending=self.integer("BANANA_USER_PENDING", 3, minimum=1),
                user_daily=self.integer("BANANA_USER_DAILY", 50),
                guild_daily=self.integer("BANANA_GUILD_DAILY", 500),
                user_install_daily=self.integer("BANANA_USER_INSTALL_DAILY", 100),
            ),
            status_interval=self.number("BANANA_STATUS_INTERVAL", 3.0, minimum=0.05),
            grid_mode=self._choice("BANANA_GRID_MODE", "tiles", ("tiles", "sliced")),
            shard_count=shard_count,
            shard_ids=shard_ids,
            context_budget=ContextBudget(
                max_images=self.integer("BANANA_CONTEXT_IMAGES", 6, minimum=1),
                # Capped so the byte count stays a sane whole number; an edit never carries anywhere near 1 GB.
                max_bytes=int(self.number("BANANA_CONTEXT_MB", 24.0, minimum=1, maximum=1024) * 1024 * 1024),
            ),
        )

    def _database_url(self) -> Secret | None:
        value = self.get("BANANA_DATABASE_URL")
        if not value:
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            # Not echoed: the URL may carry a password.
            self.errors.append(
                "BANANA_DATABASE_URL: expected a postgresql://user:password@host/database URL "
                "(leave it empty to use SQLite in BANANA_DATA_DIR)."
            )
            return None
        return Secret(value)

    def _choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.get(name, default)
        if value not in allowed:
            self.errors.append(f"{name}={value!r}: expected one of {', '.join(allowed)}.")
            return default
        return value

    def _shard_ids(self, count: int | None) -> tuple[int, ...] | None:
        """``BANANA_SHARD_IDS``: shard numbers and ranges, e.g. ``0,1``, ``0-3`` or ``0-1,4``; empty = all."""
        name = "BANANA_SHARD_IDS"
        raw = self.get(name)
        if not raw:
            return None
        spans: list[tuple[int, int]] = []
        for part in raw.split(","):
            ends = [end.strip() for end in part.split("-")]
            # isascii + isdigit: no signs, no '²'; short, so int() never meets its 4300-digit limit.
            if len(ends) > 2 or not all(e.isascii() and e.isdigit() and len(e) <= 9 for e in ends):
                self.errors.append(
                    f"{name}={raw!r}: expected shard numbers separated by commas, and ranges like 0-3 "
                    "(e.g. '0,1', '0-3' or '0-1,4')."
                )
                return None
            low, high = int(ends[0]), int(ends[-1])
            if low > high:
                self.errors.append(f"{name}={raw!r}: expected ranges from low to high; {part.strip()} runs backwards.")
                return None
            spans.append((low, high))
        if count is None:
            if not self.get("BANANA_SHARD_COUNT"):  # a refused count has its own line already
                self.errors.append(
                    f"{name}={raw!r}: expected BANANA_SHARD_COUNT to be set too: the shards of every process "
                    "together, which Discord needs along with the shards this process runs."
                )
            return None
        too_high = sorted({high for _, high in spans if high >= count})
        if too_high:
            self.errors.append(
                f"{name}={raw!r}: expected shards numbered 0 to {count - 1}, as BANANA_SHARD_COUNT is {count}; "
                f"{', '.join(map(str, too_high))} is beyond that."
            )
            return None
        ids = [i for low, high in spans for i in range(low, high + 1)]
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)
        if twice:
            listed = ", ".join(map(str, twice))
            self.errors.append(f"{name}={raw!r}: expected each shard once; {listed} is listed more than once.")
            return None
        return tuple(ids)

    def _json_object(self, name: str) -> dict[str, Any]:
        raw = self.get(name)
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            self.errors.append(f'{name}: expected a JSON object, e.g. {{"thinking_level": "high"}}.')
            return {}
        return value

    def _prices(self) -> dict[str, Pricing]:
        """``BANANA_PRICES``: JSON, model id -> {per_image | input_per_m, text_output_per_m,
        image_output_per_m, image_tokens{size: n}}. ``OPENAI_PRICE_PER_IMAGE`` is the usual relay case."""
        out: dict[str, Pricing] = {}
        per_image = self.get("OPENAI_PRICE_PER_IMAGE")
        if per_image:
            value = self.number("OPENAI_PRICE_PER_IMAGE", 0.0)
            out[self.get("OPENAI_IMAGE_MODEL", "gpt-image-2")] = Pricing(per_image=value)
        table = self._json_object("BANANA_PRICES")
        for model, entry in table.items():
            try:
                tokens = {normalise_size(k): int(_price(v)) for k, v in (entry.get("image_tokens") or {}).items()}
                out[model] = Pricing(
                    input_per_m=_price(entry.get("input_per_m", 0)),
                    text_output_per_m=_price(entry.get("text_output_per_m", 0)),
                    image_output_per_m=_price(entry.get("image_output_per_m", 0)),
                    image_tokens=tokens,
                    per_image=_price(entry["per_image"]) if "per_image" in entry else None,
                )
            except (AttributeError, TypeError, ValueError, InvalidRequest):
                self.errors.append(
                    f"BANANA_PRICES[{model!r}]: expected an object with per_image or input_per_m, "
                    "text_output_per_m, image_output_per_m and image_tokens."
                )
        return out


def _price(raw: Any) -> float:
    """A price or token count from BANANA_PRICES; ValueError unless finite and not negative.

    JSON itself admits NaN, Infinity and 1e999, and any of them would turn every cost into nonsense."""
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a usable price: {raw!r}")
    return value
