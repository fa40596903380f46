"""Prometheus metrics for one bot process, and the HTTP endpoint that serves them.

Each ``Metrics`` has its own ``CollectorRegistry`` (never prometheus_client's global one), so tests and
embedders can make as many as they like. Who feeds what:

- the generation service (``bot/core/service.py``) calls ``provider_request`` once per provider request;
- the job runner calls ``job_finished`` when a job reaches a final state, ``set_job_counts`` /
  ``set_queue_depth`` whenever its queue changes (see their docstrings), and ``admission`` / ``claim`` with
  the time of each of those transactions;
- ``bot/client.py`` calls ``set_gateway_latencies`` now and then, and attaches ``rate_limits`` (a
  logging handler) to discord.py's ``discord.http`` logger.

Every method is cheap and thread-safe; none of them does I/O.
"""

from __future__ import annotations

import errno
import logging
import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

#: The states a job can end in; ``job_finished`` takes only these (a label per typo would never be seen).
FINAL_JOB_STATES = ("done", "failed", "cancelled", "interrupted")
#: The states ``set_job_counts`` reports.
LIVE_JOB_STATES = ("queued", "running")
#: Seconds: image generation takes from about a second (small, fast models) to minutes (4K at busy hours).
PROVIDER_LATENCY_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300)
#: Seconds: an admission or a claim is one short database transaction, a few milliseconds unless it waits for
#: a lock or a pooled connection (what these show under a burst).
TRANSACTION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
#: The logger discord.py reports REST rate limits on.
DISCORD_HTTP_LOGGER = "discord.http"


class Metrics:
    """The process's metrics, in ``self.registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Not banana_jobs_total: a counter family named banana_jobs would clash with the banana_jobs gauge
        # (prometheus_client refuses the pair, and OpenMetrics scrapes would be invalid).
        self._jobs_finished = Counter(
            "banana_jobs_finished", "Jobs this process finished, by final state.", ["state"], registry=r
        )
        self._jobs = Gauge("banana_jobs", "Jobs by state, as the job runner last reported.", ["state"], registry=r)
        self._queue_depth = Gauge("banana_queue_depth", "Jobs waiting for a slot.", registry=r)
        self._provider_seconds = Histogram(
            "banana_provider_request_seconds",
            "Seconds one provider took to return an image (its retries included; failed requests are in "
            "banana_provider_errors_total).",
            ["provider", "model", "size"],
            buckets=PROVIDER_LATENCY_BUCKETS,
            registry=r,
        )
        self._provider_errors = Counter(
            "banana_provider_errors", "Provider requests that failed, by error class.", ["error_class"], registry=r
        )
        self._images = Counter(
            "banana_images", "Images the providers returned.", ["provider", "model", "size"], registry=r
        )
        self._cost = Counter(
            "banana_cost_usd", "What the images cost, in US dollars, as priced.", ["provider", "model"], registry=r
        )
        self._admission_seconds = Histogram(
            "banana_admission_seconds",
            "Seconds an admission took: its transaction (limits, quotas and budget checked, jobs stored), from "
            "asking for a pooled connection to the commit.",
            buckets=TRANSACTION_BUCKETS,
            registry=r,
        )
        self._claim_seconds = Histogram(
            "banana_claim_seconds",
            "Seconds a claim took: the transaction that takes queued jobs within the caps, from asking for a "
            "pooled connection to the commit.",
            buckets=TRANSACTION_BUCKETS,
            registry=r,
        )
        self._gateway_latency = Gauge(
            "banana_gateway_latency_seconds", "Discord gateway heartbeat latency per shard.", ["shard"], registry=r
        )
        self._shards: set[str] = set()
        self._shards_lock = threading.Lock()
        self.rate_limits = DiscordRateLimits()
        r.register(self.rate_limits)
        # Every state shows from the first scrape, so a rate() over a fresh process has a starting point.
        for state in FINAL_JOB_STATES:
            self._jobs_finished.labels(state=state)
        for state in LIVE_JOB_STATES:
            self._jobs.labels(state=state).set(0)

    # --- jobs (fed by bot/jobs/runner.py) --------------------------------------------------------------
    def job_finished(self, state: str) -> None:
        """Count a job that reached a final state: done, failed, cancelled or interrupted.

        Call it once per job, where its final state is written. ValueError for any other state."""
        if state not in FINAL_JOB_STATES:
            raise ValueError(f"not a final job state: {state!r} (expected one of {', '.join(FINAL_JOB_STATES)})")
        self._jobs_finished.labels(state=state).inc()

    def set_job_counts(self, counts: Mapping[str, int]) -> None:
        """How many jobs are queued and running now; a state left out is 0. ValueError for other states.

        Call it after every change (admitted, started, finished) or on a timer: it only stores numbers."""
        unknown = set(counts) - set(LIVE_JOB_STATES)
        if unknown:
            raise ValueError(f"unknown job states {sorted(unknown)} (expected {', '.join(LIVE_JOB_STATES)})")
        for state in LIVE_JOB_STATES:
            self._jobs.labels(state=state).set(counts.get(state, 0))

    def set_queue_depth(self, depth: int) -> None:
        """How many jobs are waiting for a slot now."""
        self._queue_depth.set(depth)

    def admission(self, seconds: float) -> None:
        """One admission's transaction, refused or not."""
        self._admission_seconds.observe(seconds)

    def claim(self, seconds: float) -> None:
        """One claim's transaction, whether it took jobs or found none it may start."""
        self._claim_seconds.observe(seconds)

    # --- providers (fed by bot/core/service.py; satisfies bot.core.metrics.GenerationMetrics) ----------
    def provider_request(
        self,
        *,
        provider: str,
        model: str,
        size: str,
        seconds: float,
        error_class: str | None = None,
        images: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        """One provider request's outcome: an image (error_class None) or a failure of that class."""
        if error_class is not None:
            self._provider_errors.labels(error_class=error_class).inc()
            return
        self._provider_seconds.labels(provider=provider, model=model, size=size).observe(seconds)
        self._images.labels(provider=provider, model=model, size=size).inc(images)
        if cost_usd > 0:
            self._cost.labels(provider=provider, model=model).inc(cost_usd)

    # --- Discord (fed by bot/client.py) ----------------------------------------------------------------
    def set_gateway_latencies(self, latencies: Iterable[tuple[int, float]]) -> None:
        """Each shard's heartbeat latency in seconds; shards not listed, or not measured yet (inf, nan),
        are dropped so a gone shard doesn't report its last value forever."""
        fresh = {str(shard): seconds for shard, seconds in latencies if math.isfinite(seconds)}
        with self._shards_lock:
            for shard in self._shards - fresh.keys():
                self._gateway_latency.remove(shard)
            for shard, seconds in fresh.items():
                self._gateway_latency.labels(shard=shard).set(seconds)
            self._shards = set(fresh)

    # --- exposition ------------------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format, as /metrics serves them."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> MetricsServer:
        """Serve /metrics on host:port from a daemon thread (port 0: any free port); MetricsServerError
        with a sentence for the operator if it can't. Close the returned server on shutdown."""
        try:
            httpd, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsServerError(host, port, exc) from None
        server = MetricsServer(httpd, thread)
        log.info("serving metrics at %s", server.url)
        return server


@dataclass
class MetricsServer:
    """The running /metrics endpoint."""

    httpd: WSGIServer
    thread: threading.Thread

    @property
    def host(self) -> str:
        return str(self.httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port. Blocks up to half a second (the server's poll interval)."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class MetricsServerError(Exception):
    """The metrics endpoint could not be opened; str() says why and what to change."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        if cause.errno == errno.EADDRINUSE:
            reason = "the port is already in use; stop what listens there or pick another BANANA_METRICS_PORT"
        elif cause.errno == errno.EADDRNOTAVAIL:
            reason = "this machine has no such address; set BANANA_METRICS_HOST to one of its own, e.g. 127.0.0.1"
        elif cause.errno == errno.EACCES:
            reason = "permission denied; ports below 1024 need privileges, pick a higher BANANA_METRICS_PORT"
        else:
            reason = cause.strerror or str(cause)
        super().__init__(f"can't serve metrics on {host}:{port}: {reason}.")
        self.host, self.port, self.cause = host, port, cause


class DiscordRateLimits(logging.Handler):
    """Counts Discord REST 429s from the warnings discord.py logs about them, as
    ``banana_discord_rate_limited_total{scope}``: scope ``route`` (a route's or bucket's limit) or
    ``global`` (Discord's global limit).

    Attach it to the ``discord.http`` logger (``DISCORD_HTTP_LOGGER``); it needs that logger to let
    WARNING through, which it does unless someone raised its level. Public log records are the only
    outside view of a 429 that discord.py retries by itself.

    discord.py logs every 429 as "We are being rate limited. ..." and, when the limit was the global one,
    "Global rate limit has been hit ..." right after it (no await in between). So a retried 429 is held
    until the next record or the next scrape, whichever comes first, to tell which scope it was."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self._counts = {"route": 0, "global": 0}
        self._pending = False
        self._counts_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        # The message template, not the formatted text: it names the event without the URL and numbers.
        template = record.msg if isinstance(record.msg, str) else ""
        with self._counts_lock:
            if template.startswith("Global rate limit has been hit"):
                # The 429 logged just before was this one (or, if a scrape settled it in between, a second
                # count for the same 429: rare, and it never makes a counter go down).
                self._pending = False
                self._counts["global"] += 1
                return
            self._settle()
            if template.startswith("We are being rate limited."):
                if "Retrying in" in template:
                    self._pending = True
                else:
                    # "Timeout ... too long, erroring instead": raised at once, no global line follows.
                    self._counts["route"] += 1

    def _settle(self) -> None:
        if self._pending:
            self._pending = False
            self._counts["route"] += 1

    def count(self, scope: str) -> int:
        """429s seen so far in `scope` (route or global)."""
        with self._counts_lock:
            self._settle()
            return self._counts[scope]

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        with self._counts_lock:
            self._settle()
            counts = dict(self._counts)
        family = self._family()
        for scope, value in counts.items():
            family.add_metric([scope], value)
        yield family

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "banana_discord_rate_limited",
            "Discord REST answers with 429 (rate limited), as discord.py reported them.",
            labels=["scope"],
        )
