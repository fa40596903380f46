"""``banana-bot batch`` as a person runs it: a real process, the fake API (with its Batch and File APIs) on
loopback, a temporary data directory."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.fake_image_api import FakeImageAPI
from tests.test_cli_generate import KEY, run_cli

pytestmark = pytest.mark.timeout(60)

PRO = "gemini-3-pro-image-preview"
NAME = re.compile(r"submitted (batches/\S+) \((banana-cli-[0-9a-f]{12})\)")


@pytest.fixture
async def fake() -> AsyncIterator[FakeImageAPI]:
    async with FakeImageAPI() as api:
        yield api


async def batch(fake: FakeImageAPI, cwd: Path, *args: str, **env: str) -> tuple[int, str, str]:
    code, out, err = await run_cli(fake, cwd, "batch", *args, **env)
    assert KEY not in out + err
    assert "Traceback" not in err, err
    return code, out, err


def write_jsonl(path: Path, *lines: dict[str, Any] | str) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def reference(path: Path, colour: tuple[int, int, int] = (10, 200, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), colour).save(path)
    return path


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        img.load()  # decodable, not only a header
        assert img.format == "PNG"
        return img.size


def usage_rows(cwd: Path, columns: str = "prompt, status, speed, cost_usd") -> list[tuple[Any, ...]]:
    with sqlite3.connect(cwd / "data" / "banana.sqlite3") as db:
        return db.execute(f"SELECT {columns} FROM generations ORDER BY id").fetchall()


def recorded_batches(cwd: Path) -> list[tuple[Any, ...]]:
    database = cwd / "data" / "banana.sqlite3"
    if not database.exists():
        return []
    with sqlite3.connect(database) as db:
        return db.execute("SELECT id, name, origin, state, delivered_at FROM batches").fetchall()


def status_fields(out: str) -> dict[str, str]:
    """`batch status` prints "label   value" lines."""
    pairs = [re.split(r"\s{2,}", line, maxsplit=1) for line in out.strip().splitlines()]
    return {label: value for label, value in pairs}


def submitted(out: str) -> tuple[str, str]:
    match = NAME.search(out)
    assert match, out
    return match.group(1), match.group(2)


async def test_submit_wait_writes_the_images_logs_them_once_at_half_price(fake: FakeImageAPI, tmp_path: Path) -> None:
    reference(tmp_path / "jobs" / "refs" / "green.png")
    jobs = write_jsonl(
        tmp_path / "jobs" / "batch.jsonl",
        {"key": "cat", "prompt": "an orange cat", "size": "2k", "aspect_ratio": "16:9"},
        {"key": "dog.v2", "prompt": "this dog, but blue", "references": ["refs/green.png"]},
        "",  # blank lines are skipped
        {"prompt": "a fox", "size": "1024"},
    )
    fake.batch_seconds = 1.0
    code, out, err = await batch(fake, tmp_path, "submit", str(jobs), "--wait", "-o", "out", "--poll", "0.1")
    assert code == 0, err
    name, our_id = submitted(out)
    assert f"3 requests for {PRO}, sent inline" in out
    # 3 images at Nano Banana Pro's 1K/2K price, $0.134 each made at once.
    assert "estimated cost $0.202 for 3 images at the batch price ($0.403 if made at once)" in out
    # The progress line on stderr (not a terminal: a line per change) ends with all three done.
    progress = [line for line in err.splitlines() if line.startswith(name)]
    assert progress and "succeeded" in progress[-1] and "3/3" in progress[-1], err
    assert image_size(tmp_path / "out" / "cat.png") == (2752, 1536)
    assert image_size(tmp_path / "out" / "dog.v2.png") == (1024, 1024)
    assert image_size(tmp_path / "out" / "line-4.png") == (1024, 1024)  # the default key: its line number
    assert (tmp_path / "out" / "cat.txt").read_text().strip() == "Here is your image."  # the model's words
    assert "3 images in out; cost $0.2" in out and "logged to the usage log" in out
    # The reference went with its line, as an inline image.
    (sent,) = fake.batches.values()
    assert sent.display_name == our_id and sent.input_kind == "inline"
    assert [line.parsed.prompt_images for line in sent.lines if line.parsed] == [0, 1, 0]

    relaxed = usage_rows(tmp_path, "prompt, status, speed, cost_usd, batch_id, reference_count, command")
    assert [row[:3] for row in relaxed] == [
        ("an orange cat", "ok", "relax"),
        ("this dog, but blue", "ok", "relax"),
        ("a fox", "ok", "relax"),
    ]
    assert {row[4] for row in relaxed} == {our_id} and [row[5] for row in relaxed] == [0, 1, 0]
    assert {row[6] for row in relaxed} == {"cli"}
    # Half of what the same requests cost made at once.
    for args in (
        ("an orange cat", "--size", "2k", "--aspect", "16:9"),
        ("this dog, but blue", "--ref", "jobs/refs/green.png"),
        ("a fox",),
    ):
        code, _, err = await run_cli(fake, tmp_path, "generate", *args, "-o", "fast.png")
        assert code == 0, err
    fast = usage_rows(tmp_path)[3:]
    assert [row[2] for row in fast] == ["fast"] * 3
    for relax_row, fast_row in zip(relaxed, fast, strict=True):
        assert relax_row[3] == pytest.approx(fast_row[3] / 2, abs=1e-6) and relax_row[3] > 0.06

    # Fetching again writes the same files and charges nothing more.
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    (tmp_path / "out" / "cat.png").unlink()
    code, out, err = await batch(fake, tmp_path, "fetch", name, "-o", "out")
    assert code == 0, err
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert "already logged when first fetched" in out
    assert len(usage_rows(tmp_path)) == 6
    # By our id as well.
    code, out, err = await batch(fake, tmp_path, "fetch", our_id, "-o", "again")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted(before)
    assert len(usage_rows(tmp_path)) == 6
    ((_, recorded_name, origin, state, delivered),) = recorded_batches(tmp_path)
    assert (recorded_name, origin, state) == (name, "cli", "succeeded") and delivered is not None


async def test_csv_input(fake: FakeImageAPI, tmp_path: Path) -> None:
    reference(tmp_path / "a.png")
    reference(tmp_path / "b b.png", (200, 10, 10))
    (tmp_path / "batch.csv").write_text(
        "Key,Prompt,Size,Aspect Ratio,References,\n"  # names as a spreadsheet writes them, a trailing comma
        'wide,"a beach, at dusk",2K,16:9,\n'
        'both,"these two, side by side",,,a.png; b b.png\n'
        '"piped","both again",1k,3:4,a.png|b b.png\n'
    )
    code, _, err = await batch(fake, tmp_path, "submit", "batch.csv", "--wait", "-o", "out", "--poll", "0.1")
    assert code == 0, err
    assert image_size(tmp_path / "out" / "wide.png") == (2752, 1536)
    assert image_size(tmp_path / "out" / "both.png") == (1024, 1024)
    assert image_size(tmp_path / "out" / "piped.png") == (896, 1200)
    rows = usage_rows(tmp_path, "prompt, size, aspect_ratio, reference_count, speed")
    assert rows == [
        ("a beach, at dusk", "2K", "16:9", 0, "relax"),
        ("these two, side by side", "1K", "", 2, "relax"),
        ("both again", "1K", "3:4", 2, "relax"),
    ]


async def test_a_failed_line_is_reported_and_the_others_are_written(fake: FakeImageAPI, tmp_path: Path) -> None:
    fake.fail_batch_lines("spider", message="The spider is not allowed.")
    write_jsonl(
        tmp_path / "b.jsonl",
        {"key": "one", "prompt": "a ladybird"},
        {"key": "two", "prompt": "a spider on its web"},
        {"key": "three", "prompt": "a moth"},
    )
    code, out, err = await batch(fake, tmp_path, "submit", "b.jsonl", "--wait", "-o", "out", "--poll", "0.1")
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["one.png", "three.png"]
    failed = [line for line in err.splitlines() if line.startswith("failed")]
    assert failed == ["failed two (line 2): gemini refused the request: The spider is not allowed."]
    assert "2 images in out, 1 failed" in out
    rows = usage_rows(tmp_path, "prompt, status, speed, cost_usd")
    assert [row[:3] for row in rows] == [
        ("a ladybird", "ok", "relax"),
        ("a spider on its web", "error", "relax"),
        ("a moth", "ok", "relax"),
    ]
    assert rows[1][3] == 0


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            [{"key": "a", "prompt": "one"}, {"key": "a", "prompt": "two"}],
            "b.jsonl line 2, key: 'a' is already used on line 1.",
        ),
        (
            [{"key": "Cat", "prompt": "one"}, {"key": "cat", "prompt": "two"}],
            "b.jsonl line 2, key: 'cat' is already used on line 1 (as 'Cat'; file names must differ in more than "
            "case).",
        ),
        (
            [{"key": "../up", "prompt": "one"}],
            "b.jsonl line 1, key: '../up' can't be a file name: use letters, digits, '-', '_' and '.'",
        ),
        ([{"prompt": "one", "size": "8k"}], "b.jsonl line 1, size: Unknown size '8k'"),
        ([{"prompt": "one", "size": "512"}], "b.jsonl line 1, size: Nano Banana Pro doesn't make 512 images"),
        ([{"prompt": "one", "aspect_ratio": "7:3"}], "b.jsonl line 1, aspect_ratio: Nano Banana Pro doesn't take"),
        ([{"prompt": "one", "references": ["nope.png"]}], "b.jsonl line 1, references: Can't read nope.png"),
        ([{"prompt": "one", "references": ["notes.txt"]}], "b.jsonl line 1, references: notes.txt is not an image"),
        ([{"prompt": "one", "references": ["ref.png"] * 15}], "b.jsonl line 1, references: 15 reference images"),
        ([{"prompt": "one"}, {"key": "x"}], "b.jsonl line 2, prompt: missing; every line needs one."),
        ([{"prompt": "   "}], "b.jsonl line 1, prompt: is empty."),
        ([{"prompt": "one"}, '{"prompt": "two",}'], "b.jsonl line 2: not valid JSON"),
        (['["a list"]'], "b.jsonl line 1: each line must be one JSON object"),
        ([{"prompt": "one", "aspect": "16:9"}], "b.jsonl line 1, aspect: unknown field"),
        ([], "b.jsonl: has no requests."),
    ],
)
async def test_bad_lines_are_refused_before_anything_is_sent(
    fake: FakeImageAPI, tmp_path: Path, lines: list[dict[str, Any] | str], expected: str
) -> None:
    reference(tmp_path / "ref.png")
    (tmp_path / "notes.txt").write_text("not a picture")
    write_jsonl(tmp_path / "b.jsonl", *lines)
    code, out, err = await batch(fake, tmp_path, "submit", "b.jsonl", "--wait", "-o", "out")
    assert (code, out) == (2, ""), err
    errors = err.strip().splitlines()
    assert errors[0].startswith("error: " + expected), err
    assert errors[-1] == "nothing was sent: fix b.jsonl and submit it again."
    assert fake.batches == {} and fake.request_count == 0
    assert recorded_batches(tmp_path) == [] and not (tmp_path / "out").exists()


async def test_every_problem_is_listed_at_once(fake: FakeImageAPI, tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("key,prompt,size,references\nok,a cat,1K,\nok,a dog,9K,\nthird,,2K,gone.png\n")
    code, out, err = await batch(fake, tmp_path, "submit", "b.csv", "--model", "gemini-2.5-flash-image")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "error: b.csv line 3, key: 'ok' is already used on line 2.",
        "error: b.csv line 3, size: Unknown size '9K': use 1K, 2K or 4K (or 512 on Nano Banana 2).",
        "error: b.csv line 4, prompt: missing; every line needs one.",
        "error: b.csv line 4, size: Nano Banana doesn't make 2K images; use 1K.",
        "error: b.csv line 4, references: Can't read gone.png: No such file or directory.",
        "nothing was sent: fix b.csv and submit it again.",
    ]
    assert fake.batches == {} and fake.request_count == 0


async def test_status_list_and_cancel_while_it_runs(fake: FakeImageAPI, tmp_path: Path) -> None:
    fake.batch_seconds = 300.0
    write_jsonl(tmp_path / "b.jsonl", {"prompt": "a heron", "size": "4K"}, {"prompt": "an egret"})
    code, out, err = await batch(fake, tmp_path, "submit", "b.jsonl")
    assert code == 0, err
    name, our_id = submitted(out)
    assert "estimated cost $0.187 for 2 images at the batch price ($0.374 if made at once)" in out

    # Sent from elsewhere with the same key: the bot lists it but doesn't claim it.
    async with httpx.AsyncClient(base_url=fake.base_url, headers={"x-goog-api-key": KEY}) as http:
        items = [{"request": {"contents": [{"parts": [{"text": "a crane"}]}]}, "metadata": {"key": "crane"}}]
        body = {"batch": {"displayName": "from-a-notebook", "inputConfig": {"requests": {"requests": items}}}}
        reply = await http.post(f"/v1beta/models/{PRO}:batchGenerateContent", json=body)
        assert reply.status_code == 200, reply.text
        other = reply.json()["name"]

    for which in (name, our_id):
        code, out, err = await batch(fake, tmp_path, "status", which)
        assert code == 0, err
        fields = status_fields(out)
        assert fields["batch"] == name and fields["display name"] == our_id
        assert fields["state"] in ("pending", "running") and fields["requests"].startswith("2: 0 succeeded")
        assert fields["created"].endswith(" UTC") and fields["ended"] == "-"
        assert fields["sent from"] == "this bot's CLI" and fields["input"].startswith("inline")
        assert fields["cost"].startswith("estimated cost $0.187") and fields["fetched"] == "not yet"

    code, out, err = await batch(fake, tmp_path, "list")
    assert code == 0, err
    header, *rows = out.strip().splitlines()
    assert header.split() == ["NAME", "DISPLAY", "NAME", "STATE", "DONE", "CREATED", "HERE"]
    assert [row.split()[0] for row in rows] == [other, name]  # newest first
    assert rows[0].split()[1] == "from-a-notebook" and rows[0].split()[-1] == "-"
    assert rows[1].split()[1] == our_id and rows[1].split()[-1] == "cli" and "0/2" in rows[1]

    code, out, err = await batch(fake, tmp_path, "cancel", our_id)
    assert code == 0, err
    assert out.strip() == f"cancelled {name}: it is cancelled now."
    code, out, _ = await batch(fake, tmp_path, "status", name)
    fields = status_fields(out)
    assert code == 0 and fields["state"] == "cancelled" and fields["ended"].endswith(" UTC")
    code, _, err = await batch(fake, tmp_path, "cancel", name)
    assert (code, err.strip()) == (1, f"error: {name} has already ended (cancelled): there is nothing to cancel.")
    code, out, err = await batch(fake, tmp_path, "fetch", name, "-o", "out")
    assert (code, out) == (1, "") and err.strip() == f"{name} ended cancelled: it was cancelled"
    assert usage_rows(tmp_path) == []


async def test_fetch_without_wait_on_a_running_batch_says_its_state(fake: FakeImageAPI, tmp_path: Path) -> None:
    fake.batch_seconds = 300.0
    write_jsonl(tmp_path / "b.jsonl", {"prompt": "a heron"})
    code, out, err = await batch(fake, tmp_path, "submit", "b.jsonl")
    assert code == 0, err
    name, _ = submitted(out)
    code, out, err = await batch(fake, tmp_path, "fetch", name, "-o", "out")
    assert (code, out) == (1, "")
    assert re.fullmatch(
        rf"{re.escape(name)} is (pending|running) \(0 of 1 done\): nothing to fetch yet; try again later, or add "
        r"--wait\.",
        err.strip(),
    )
    assert list((tmp_path / "out").iterdir()) == [] and usage_rows(tmp_path) == []


async def test_a_batch_over_the_inline_limit_goes_as_a_file(fake: FakeImageAPI, tmp_path: Path) -> None:
    # ~9 MB of noise (it doesn't compress), sent with each of three requests: ~36 MB of base64 in all.
    noise = Image.frombytes("RGB", (1750, 1750), os.urandom(1750 * 1750 * 3))
    noise.save(tmp_path / "noise.png", compress_level=1)
    assert (tmp_path / "noise.png").stat().st_size > 9_000_000
    write_jsonl(
        tmp_path / "big.jsonl",
        *({"key": f"n{i}", "prompt": f"calm this down {i}", "references": ["noise.png"]} for i in range(3)),
    )
    code, out, err = await batch(fake, tmp_path, "submit", "big.jsonl", "--wait", "-o", "out", "--poll", "0.1")
    assert code == 0, err
    assert "3 requests for gemini-3-pro-image-preview, sent file (" in out
    (sent,) = fake.batches.values()
    assert sent.input_kind == "file" and len(fake.uploaded_files) == 1
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["n0.png", "n1.png", "n2.png"]
    assert all(image_size(tmp_path / "out" / f"n{i}.png") == (1024, 1024) for i in range(3))
    assert [row[1:3] for row in usage_rows(tmp_path)] == [("ok", "relax")] * 3


async def test_a_batch_that_fails_says_why(fake: FakeImageAPI, tmp_path: Path) -> None:
    fake.script_batch("FAILED", message="Batch processing failed: the quota ran out.")
    write_jsonl(tmp_path / "b.jsonl", {"prompt": "a heron"})
    code, _, err = await batch(fake, tmp_path, "submit", "b.jsonl", "--wait", "-o", "out", "--poll", "0.1")
    assert code == 1
    assert err.strip().splitlines()[-1].endswith("ended failed: Batch processing failed: the quota ran out.")
    assert usage_rows(tmp_path) == [] and list((tmp_path / "out").iterdir()) == []


async def test_a_batch_sent_elsewhere_is_fetched_without_logging(fake: FakeImageAPI, tmp_path: Path) -> None:
    request = {
        "contents": [{"role": "user", "parts": [{"text": "a quince"}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"imageSize": "1K"}},
    }
    items = [{"request": request, "metadata": {"key": key}} for key in ("plain", "../../escape")]
    async with httpx.AsyncClient(base_url=fake.base_url, headers={"x-goog-api-key": KEY}) as http:
        body = {"batch": {"displayName": "notebook", "inputConfig": {"requests": {"requests": items}}}}
        reply = await http.post(f"/v1beta/models/{PRO}:batchGenerateContent", json=body)
        assert reply.status_code == 200, reply.text
        name = reply.json()["name"]
    code, out, err = await batch(fake, tmp_path, "fetch", name.removeprefix("batches/"), "-o", "out")
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert written[1] == "plain.png" and re.fullmatch(r"escape-[0-9a-f]{8}\.png", written[0])  # kept inside out/
    assert "not logged: this batch was not submitted from this bot's CLI" in out
    assert usage_rows(tmp_path) == [] and recorded_batches(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (("status", "batches/nope"), {}, 2, "error: no batch batches/nope: this bot never sent it, and gemini"),
        (("fetch", "nope", "-o", "out"), {}, 2, "error: no batch nope: "),
        (
            ("list",),
            {"GEMINI_API_KEY": "", "OPENAI_API_KEY": "sk-test-0000", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
            2,
            "error: batches go through Gemini's Batch API, and no Gemini key is configured: set GEMINI_API_KEY.",
        ),
        (("submit", "jobs.txt"), {}, 2, "error: jobs.txt: use a .jsonl (or .json) file"),
        (("submit", "missing.jsonl"), {}, 2, "error: can't read missing.jsonl: No such file or directory."),
        (("submit", "b.jsonl", "-o", "out"), {}, 2, "error: -o needs --wait"),
    ],
)
async def test_mistakes_are_one_line(
    fake: FakeImageAPI, tmp_path: Path, args: tuple[str, ...], env: dict[str, str], code: int, message: str
) -> None:
    write_jsonl(tmp_path / "b.jsonl", {"prompt": "a cat"})
    (tmp_path / "jobs.txt").write_text("a cat\n")
    got, out, err = await batch(fake, tmp_path, *args, **env)
    assert (got, out) == (code, "")
    assert len(err.strip().splitlines()) == 1 and err.startswith(message), err
    assert fake.batches == {}


async def test_a_refused_batch_is_one_line_and_not_recorded(fake: FakeImageAPI, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "b.jsonl", {"prompt": "a cat"})
    code, out, err = await batch(fake, tmp_path, "submit", "b.jsonl", GEMINI_MODEL="gemini-0-imaginary")
    assert (code, out) == (1, "")
    assert err.startswith("error: gemini") and len(err.strip().splitlines()) == 1, err
    assert recorded_batches(tmp_path) == []


async def test_a_batch_deleted_at_the_provider_is_one_line(fake: FakeImageAPI, tmp_path: Path) -> None:
    fake.batch_seconds = 300.0
    write_jsonl(tmp_path / "b.jsonl", {"prompt": "a heron"})
    code, out, err = await batch(fake, tmp_path, "submit", "b.jsonl")
    assert code == 0, err
    name, our_id = submitted(out)
    async with httpx.AsyncClient(base_url=fake.base_url, headers={"x-goog-api-key": KEY}) as http:
        assert (await http.delete(f"/v1beta/{name}")).status_code == 200
    code, out, err = await batch(fake, tmp_path, "fetch", our_id, "-o", "out", "--wait")
    assert (code, out, err.strip()) == (1, "", f"error: gemini no longer has {name} ({our_id}).")


def test_on_a_terminal_the_wait_shows_a_progress_bar() -> None:
    from bot.batch_cli import Progress
    from bot.core.batches import BatchInfo, BatchState

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = Progress(screen)
    progress.show(BatchInfo(name="batches/abc", display_name="d", model="m", state=BatchState.RUNNING, request_count=4))
    progress.show(
        BatchInfo(
            name="batches/abc",
            display_name="d",
            model="m",
            state=BatchState.SUCCEEDED,
            request_count=4,
            succeeded=3,
            failed=1,
        )
    )
    progress.close()
    drawn = screen.getvalue().split("\r")[-1]
    assert "batches/abc succeeded" in drawn and "4/4" in drawn and "1 failed" in drawn and "100%" in drawn
