"""Metrics (bot/observability/metrics.py) and log formats (bot/observability/logs.py), on their own and fed by
the generation core, real discord.py and the CLI; every network on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import discord
import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bot.config import Secret, load_settings
from bot.core.errors import ConfigError, InvalidRequest
from bot.core.types import ImageRequest
from bot.observability.logs import TEXT_FORMAT, JsonFormatter, TextFormatter, configure_logging, job_context
from bot.observability.metrics import DISCORD_HTTP_LOGGER, Metrics, MetricsServerError
from bot.runtime import Runtime
from tests.fake_image_api import FakeImageAPI, Fault

ROOT = Path(__file__).resolve().parent.parent
Labels = tuple[tuple[str, str], ...]


def samples(metrics: Metrics) -> dict[tuple[str, Labels], float]:
    """(sample name, sorted labels) -> value, parsed back from the exposition text as a scraper would."""
    return samples_of(metrics.exposition().decode())


def samples_of(text: str) -> dict[tuple[str, Labels], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


GEMINI_1K = (("model", "gemini-3-pro-image-preview"), ("provider", "gemini"), ("size", "1K"))


# --- the metrics themselves ------------------------------------------------------------------------------
def test_recorded_events_show_in_the_exposition() -> None:
    m = Metrics()
    m.job_finished("done")
    m.job_finished("done")
    m.job_finished("failed")
    m.set_job_counts({"queued": 3, "running": 1})
    m.set_queue_depth(3)
    m.provider_request(
        provider="gemini", model="gemini-3-pro-image-preview", size="1K", seconds=2.5, images=1, cost_usd=0.134
    )
    m.provider_request(
        provider="gemini", model="gemini-3-pro-image-preview", size="1K", seconds=40, images=1, cost_usd=0.134
    )
    m.provider_request(
        provider="gemini", model="gemini-3-pro-image-preview", size="1K", seconds=9, error_class="timeout"
    )
    m.set_gateway_latencies([(0, 0.042), (1, 0.051)])

    got = samples(m)
    assert got[("banana_jobs_finished_total", (("state", "done"),))] == 2
    assert got[("banana_jobs_finished_total", (("state", "failed"),))] == 1
    assert got[("banana_jobs_finished_total", (("state", "cancelled"),))] == 0  # there from the start
    assert got[("banana_jobs", (("state", "queued"),))] == 3
    assert got[("banana_jobs", (("state", "running"),))] == 1
    assert got[("banana_queue_depth", ())] == 3
    # Only the two images are timed; the failure is counted by its class.
    assert got[("banana_provider_request_seconds_count", GEMINI_1K)] == 2
    assert got[("banana_provider_request_seconds_sum", GEMINI_1K)] == pytest.approx(42.5)
    buckets = {
        dict(labels)["le"]: value
        for (name, labels), value in got.items()
        if name == "banana_provider_request_seconds_bucket"
    }
    assert (buckets["0.5"], buckets["3.0"], buckets["30.0"], buckets["45.0"], buckets["300.0"]) == (0, 1, 1, 2, 2)
    assert got[("banana_provider_errors_total", (("error_class", "timeout"),))] == 1
    assert got[("banana_images_total", GEMINI_1K)] == 2
    cost_labels = (("model", "gemini-3-pro-image-preview"), ("provider", "gemini"))
    assert got[("banana_cost_usd_total", cost_labels)] == pytest.approx(0.268)
    assert got[("banana_gateway_latency_seconds", (("shard", "0"),))] == pytest.approx(0.042)
    assert got[("banana_gateway_latency_seconds", (("shard", "1"),))] == pytest.approx(0.051)
    assert got[("banana_discord_rate_limited_total", (("scope", "route"),))] == 0

    # Each Metrics has its own registry: a second one starts from nothing.
    assert samples(Metrics())[("banana_jobs_finished_total", (("state", "done"),))] == 0


def test_job_states_are_checked_and_counts_replace_the_last_ones() -> None:
    m = Metrics()
    with pytest.raises(ValueError, match="not a final job state: 'finished'"):
        m.job_finished("finished")
    with pytest.raises(ValueError, match="unknown job states"):
        m.set_job_counts({"waiting": 1})
    m.set_job_counts({"queued": 2, "running": 2})
    m.set_job_counts({"running": 1})  # queued left out: none waiting any more
    got = samples(m)
    assert got[("banana_jobs", (("state", "queued"),))] == 0
    assert got[("banana_jobs", (("state", "running"),))] == 1


def test_gateway_latency_drops_unmeasured_and_gone_shards() -> None:
    m = Metrics()
    m.set_gateway_latencies([(0, 0.03), (1, 0.04)])
    m.set_gateway_latencies([(0, float("inf")), (2, 0.05)])  # 0 not measured yet after a reconnect, 1 gone
    shards = {dict(labels)["shard"]: v for (name, labels), v in samples(m).items() if name.startswith("banana_gate")}
    assert shards == {"2": pytest.approx(0.05)}


async def test_the_endpoint_serves_a_real_scrape_and_frees_its_port() -> None:
    m = Metrics()
    m.job_finished("cancelled")
    server = m.serve("127.0.0.1", 0)
    try:
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        async with httpx.AsyncClient(timeout=5) as client:
            reply = await client.get(server.url)
            m.set_queue_depth(7)  # read at scrape time, not copied at start
            again = await client.get(server.url)
    finally:
        await asyncio.to_thread(server.close)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    assert samples_of(reply.text)[("banana_jobs_finished_total", (("state", "cancelled"),))] == 1
    assert samples_of(again.text)[("banana_queue_depth", ())] == 7
    assert not server.thread.is_alive()
    with socket.socket() as probe:
        # SO_REUSEADDR: the closed connections' TIME_WAIT doesn't count, only a socket still listening.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", server.port))


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def test_a_port_in_use_is_one_clear_sentence(busy_port: int) -> None:
    with pytest.raises(MetricsServerError) as info:
        Metrics().serve("127.0.0.1", busy_port)
    assert str(info.value) == (
        f"can't serve metrics on 127.0.0.1:{busy_port}: the port is already in use; "
        "stop what listens there or pick another BANANA_METRICS_PORT."
    )


# --- the generation core feeds the provider metrics -------------------------------------------------------
@pytest.fixture
async def runtime(fake_api: FakeImageAPI, tmp_path: Path) -> AsyncIterator[tuple[Runtime, Metrics]]:
    settings = load_settings(
        {"GEMINI_API_KEY": "test-key-0001", "GEMINI_BASE_URL": fake_api.base_url, "BANANA_DATA_DIR": str(tmp_path)},
        env_file=None,
    )
    metrics = Metrics()
    rt = await Runtime.open(settings, metrics=metrics)
    yield rt, metrics
    await rt.aclose()


async def test_a_generation_moves_latency_images_and_cost(runtime: tuple[Runtime, Metrics]) -> None:
    rt, metrics = runtime
    result = await rt.service.generate(ImageRequest(prompt="an orange cat", size="2K"))
    got = samples(metrics)
    labels = (("model", "gemini-3-pro-image-preview"), ("provider", "gemini"), ("size", "2K"))
    assert got[("banana_provider_request_seconds_count", labels)] == 1
    assert 0 < got[("banana_provider_request_seconds_sum", labels)] <= result.timing.total_ms / 1000
    assert got[("banana_images_total", labels)] == 1
    assert result.usage.cost_usd > 0
    cost = got[("banana_cost_usd_total", (("model", "gemini-3-pro-image-preview"), ("provider", "gemini")))]
    assert cost == pytest.approx(result.usage.cost_usd)
    assert not [k for k in got if k[0] == "banana_provider_errors_total"]


async def test_a_failed_request_counts_its_error_class_and_no_image(
    fake_api: FakeImageAPI, runtime: tuple[Runtime, Metrics]
) -> None:
    rt, metrics = runtime
    fake_api.script(Fault.bad_request("Request contains an invalid argument."))
    with pytest.raises(InvalidRequest):
        await rt.service.generate(ImageRequest(prompt="an orange cat"))
    got = samples(metrics)
    assert got[("banana_provider_errors_total", (("error_class", "invalid_request"),))] == 1
    assert not [k for k in got if k[0] in ("banana_images_total", "banana_provider_request_seconds_count")]
    # Refused before anything is sent: not a provider request, so nothing is counted.
    with pytest.raises(InvalidRequest):
        await rt.service.generate(ImageRequest(prompt="   "))
    assert samples(metrics)[("banana_provider_errors_total", (("error_class", "invalid_request"),))] == 1


async def test_a_broken_metrics_hook_never_fails_a_generation(
    runtime: tuple[Runtime, Metrics], caplog: pytest.LogCaptureFixture
) -> None:
    rt, _ = runtime

    class Broken:
        def provider_request(self, **outcome: object) -> None:
            raise RuntimeError("metrics backend fell over")

    rt.service.metrics = Broken()
    result = await rt.service.generate(ImageRequest(prompt="an orange cat"))
    assert result.image.data
    assert "the metrics hook failed" in caplog.text


# --- Discord 429s, from real discord.py ------------------------------------------------------------------
class RateLimitingDiscord:
    """Answers GET /api/v10/users/@me with one 429 (as Discord sends it: JSON body, a Via header), then 200."""

    def __init__(self, *, global_limit: bool) -> None:
        self.global_limit = global_limit
        self.calls = 0

    async def users_me(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls == 1:
            headers = {
                "Via": "1.1 google",
                "Retry-After": "1",
                "X-RateLimit-Scope": "global" if self.global_limit else "user",
            }
            if self.global_limit:
                headers["X-RateLimit-Global"] = "true"
            body = {"message": "You are being rate limited.", "retry_after": 0.01, "global": self.global_limit}
            return json_reply(body, status=429, headers=headers)
        return json_reply({"id": "1", "username": "banana", "discriminator": "0", "avatar": None, "bot": True})


def json_reply(body: object, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Exactly "application/json", as Discord sends it: discord.py compares the header literally.
    headers = {**(headers or {}), "Content-Type": "application/json"}
    return web.Response(status=status, body=json.dumps(body).encode(), headers=headers)


@pytest.mark.parametrize("global_limit", [False, True])
async def test_rate_limits_are_counted_from_real_discord_py(global_limit: bool) -> None:
    fake = RateLimitingDiscord(global_limit=global_limit)
    app = web.Application()
    app.router.add_get("/api/v10/users/@me", fake.users_me)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    metrics = Metrics()
    logger = logging.getLogger(DISCORD_HTTP_LOGGER)
    logger.addHandler(metrics.rate_limits)
    saved = discord.http.Route.BASE
    discord.http.Route.BASE = f"http://127.0.0.1:{port}/api/v10"
    client = discord.Client(intents=discord.Intents.none())
    try:
        user = await asyncio.wait_for(client.http.static_login("fake-token"), 10)  # retried after the 429
        assert user["username"] == "banana" and fake.calls == 2
    finally:
        discord.http.Route.BASE = saved
        logger.removeHandler(metrics.rate_limits)
        await client.http.close()
        await runner.cleanup()
    got = samples(metrics)
    scope, other = ("global", "route") if global_limit else ("route", "global")
    assert got[("banana_discord_rate_limited_total", (("scope", scope),))] == 1
    assert got[("banana_discord_rate_limited_total", (("scope", other),))] == 0


def discord_record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(DISCORD_HTTP_LOGGER, logging.WARNING, "http.py", 1, message, args, None)


def test_rate_limit_records_are_told_apart() -> None:
    limits = Metrics().rate_limits
    retrying = "We are being rate limited. %s %s responded with 429. Retrying in %.2f seconds."
    limits.handle(discord_record(retrying, "POST", "https://discord.com/api/v10/channels/1/messages", 1.5))
    limits.handle(discord_record(retrying, "PATCH", "https://discord.com/api/v10/webhooks/2/t/messages/@original", 2))
    limits.handle(discord_record("Global rate limit has been hit. Retrying in %.2f seconds.", 2))
    too_long = "We are being rate limited. %s %s responded with 429. Timeout of %.2f was too long, erroring instead."
    limits.handle(discord_record(too_long, "POST", "https://discord.com/api/v10/channels/1/messages", 900))
    limits.handle(discord_record("Shard ID %s has connected to Gateway (Session ID: %s).", 0, "abc"))
    assert (limits.count("route"), limits.count("global")) == (2, 1)


# --- logs ------------------------------------------------------------------------------------------------
def make_logger(formatter: logging.Formatter, name: str) -> tuple[io.StringIO, logging.Logger]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"tests.observability.{name}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return stream, logger


async def test_json_lines_carry_the_job_fields_also_from_child_tasks_and_threads() -> None:
    stream, logger = make_logger(JsonFormatter(), "json")

    async def child() -> None:
        await asyncio.sleep(0)
        logger.warning("from a child task")

    logger.info("before the job")
    with job_context(job_id="j-123", guild_id=42, shard=3):
        logger.info("working on %s", "it")
        task = asyncio.create_task(child())
        await asyncio.to_thread(logger.info, "from a thread")
    await task  # created inside, so it keeps the job's fields though it finishes outside
    logger.info("after the job")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("it failed")

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == [
        "before the job",
        "working on it",
        "from a thread",
        "from a child task",
        "after the job",
        "it failed",
    ]
    for line in lines:
        assert line["logger"] == "tests.observability.json"
        assert line["time"].endswith("+00:00") and "T" in line["time"]
    assert lines[0]["level"] == "INFO" and lines[3]["level"] == "WARNING"
    job = {"job_id": "j-123", "guild_id": 42, "shard": 3}
    for line in lines[1:4]:
        assert {k: line[k] for k in job} == job
    for line in (lines[0], lines[4]):
        assert not set(job) & set(line)
    assert "exception" not in lines[0]
    assert lines[5]["level"] == "ERROR"
    assert lines[5]["exception"].startswith("Traceback") and "RuntimeError: boom" in lines[5]["exception"]


def test_text_lines_are_unchanged_outside_a_job_and_tagged_inside() -> None:
    stream, logger = make_logger(TextFormatter(), "text")
    record = logger.makeRecord(logger.name, logging.INFO, "f.py", 1, "queued %d jobs", (3,), None)
    assert TextFormatter().format(record) == logging.Formatter(TEXT_FORMAT).format(record)

    with job_context(job_id="j-9", guild_id=None, shard=0):  # a DM: no guild
        try:
            raise ValueError("bad")
        except ValueError:
            logger.exception("job failed")
    first, *traceback = stream.getvalue().splitlines()
    assert first.endswith(" ERROR tests.observability.text: job failed [job=j-9 shard=0]")
    assert traceback[0] == "Traceback (most recent call last):" and traceback[-1] == "ValueError: bad"


def test_secrets_stay_hidden_in_json_lines() -> None:
    stream, logger = make_logger(JsonFormatter(), "secret")
    token = Secret("MTIz.discord-token-value")
    logger.info("settings %s", load_settings({"DISCORD_TOKEN": token.reveal()}, env_file=None))
    logger.info("token %s", token)
    assert "discord-token-value" not in stream.getvalue()


def test_configure_logging_installs_the_format_once() -> None:
    root = logging.getLogger()
    saved = root.handlers, root.level
    root.handlers = []
    try:
        stream = io.StringIO()
        configure_logging("INFO", "json", stream=stream)
        configure_logging("DEBUG", "text", stream=io.StringIO())  # like basicConfig: the first one stays
        logging.getLogger("tests.observability.root").info("hello")
        assert json.loads(stream.getvalue())["message"] == "hello"
        assert root.level == logging.INFO and len(root.handlers) == 1
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, _ = saved
        root.setLevel(saved[1])


# --- settings and the command line ---------------------------------------------------------------------
def test_settings_parse_and_refuse_with_one_line_each() -> None:
    settings = load_settings({}, env_file=None)
    assert (settings.log_format, settings.metrics_port, settings.metrics_host) == ("text", None, "127.0.0.1")
    settings = load_settings(
        {"BANANA_LOG_FORMAT": "JSON", "BANANA_METRICS_PORT": "9100", "BANANA_METRICS_HOST": "0.0.0.0"}, env_file=None
    )
    assert (settings.log_format, settings.metrics_port, settings.metrics_host) == ("json", 9100, "0.0.0.0")
    with pytest.raises(ConfigError) as info:
        load_settings({"BANANA_LOG_FORMAT": "xml", "BANANA_METRICS_PORT": "65536"}, env_file=None)
    assert info.value.lines == [
        "BANANA_LOG_FORMAT='xml': expected text or json.",
        "BANANA_METRICS_PORT='65536': expected a whole number from 1 to 65535.",
    ]
    for bad in ("0", "-1", "http", "91.5"):
        with pytest.raises(ConfigError, match="BANANA_METRICS_PORT"):
            load_settings({"BANANA_METRICS_PORT": bad}, env_file=None)


def run_python(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "OPENAI_", "DISCORD_", "BANANA_"))}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_logs_json_when_asked_and_refuses_an_unknown_format(tmp_path: Path) -> None:
    code = (
        "import logging, sys\n"
        "from bot.cli import main\n"
        "code = main(['health'])\n"
        "logging.getLogger('bot.test').warning('health said %s', code)\n"
    )
    proc = run_python(code, {"BANANA_LOG_FORMAT": "json", "BANANA_DATA_DIR": str(tmp_path)}, tmp_path)
    last = json.loads(proc.stderr.splitlines()[-1])
    assert (last["level"], last["logger"], last["message"]) == ("WARNING", "bot.test", "health said 1")

    proc = run_python(
        "from bot.cli import main; raise SystemExit(main(['health']))", {"BANANA_LOG_FORMAT": "xml"}, tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "config: BANANA_LOG_FORMAT='xml': expected text or json."
