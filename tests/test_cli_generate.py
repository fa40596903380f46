"""``banana-bot generate`` as a person runs it: a real process, the fake API on loopback."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from tests.fake_image_api import FakeImageAPI, Fault

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-cli-key-0000-9999"


@pytest.fixture
async def fake() -> AsyncIterator[FakeImageAPI]:
    async with FakeImageAPI() as api:
        yield api


async def run_cli(fake: FakeImageAPI, cwd: Path, *args: str, **env: str) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "OPENAI_", "DISCORD_", "BANANA_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        *args,
        cwd=cwd,
        env={
            **clean,
            "PYTHONPATH": str(ROOT),
            "GEMINI_API_KEY": KEY,
            "GEMINI_BASE_URL": fake.base_url,
            "BANANA_RETRY_BACKOFF": "0.01",
            "BANANA_RETRY_BACKOFF_MAX": "0.05",
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_generate_writes_the_image_and_shows_time_and_money(fake: FakeImageAPI, tmp_path: Path) -> None:
    code, out, err = await run_cli(
        fake, tmp_path, "generate", "an orange cat on a windowsill", "--size", "2k", "--aspect", "16:9", "-o", "cat.png"
    )
    assert code == 0, err
    with Image.open(tmp_path / "cat.png") as img:
        assert img.size == (2752, 1536) and img.format == "PNG"
    assert "wrote cat.png (2752x1536" in out and "gemini-3-pro-image-preview via gemini" in out
    for word in ("total", "connect", "first byte", "download", "decode", "tokens", "cost    $0.1"):
        assert word in out
    assert KEY not in out + err
    # Logged like every other request.
    with sqlite3.connect(tmp_path / "data" / "banana.sqlite3") as db:
        rows = db.execute("SELECT command, status, size, aspect_ratio, cost_usd FROM generations").fetchall()
    assert rows == [("cli", "ok", "2K", "16:9", pytest.approx(rows[0][4]))] and rows[0][4] > 0.13


async def test_generate_with_references_and_jpeg_output(fake: FakeImageAPI, tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), (10, 200, 10)).save(tmp_path / "ref.png")
    code, _, err = await run_cli(fake, tmp_path, "generate", "this, but blue", "--ref", "ref.png", "-o", "out.jpg")
    assert code == 0, err
    with Image.open(tmp_path / "out.jpg") as img:
        assert img.format == "JPEG" and img.size == (1024, 1024)
    parts = fake.requests[-1].json["contents"][-1]["parts"]
    assert len([p for p in parts if "inlineData" in p or "inline_data" in p]) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--aspect", "7:3"), "doesn't take aspect ratio 7:3"),
        (("--size", "8k"), "Unknown size '8k'"),
        (("--ref", "missing.png"), "Can't read missing.png"),
        (("--ref", "notes.txt"), "notes.txt is not an image"),
    ],
)
async def test_bad_input_is_one_clear_line_and_writes_nothing(
    fake: FakeImageAPI, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "notes.txt").write_text("not a picture")
    code, out, err = await run_cli(fake, tmp_path, "generate", "cat", *args, "-o", "x.png")
    assert code == 1 and out == ""
    assert err.strip().startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists() and fake.requests == []


async def test_provider_failure_is_one_line_with_nonzero_exit(fake: FakeImageAPI, tmp_path: Path) -> None:
    fake.script(Fault.prompt_block("PROHIBITED_CONTENT"))
    code, out, err = await run_cli(fake, tmp_path, "generate", "cat", "-o", "x.png")
    assert code == 1 and out == ""
    assert err.strip() == "error: The prompt was blocked by the provider's safety filters (PROHIBITED_CONTENT)."
    assert not (tmp_path / "x.png").exists()
    with sqlite3.connect(tmp_path / "data" / "banana.sqlite3") as db:
        assert db.execute("SELECT status, error_class FROM generations").fetchall() == [("blocked", "blocked")]


async def test_previews_are_written_as_they_arrive(fake: FakeImageAPI, tmp_path: Path) -> None:
    code, out, err = await run_cli(fake, tmp_path, "generate", "a fox", "--previews", "drafts", "-o", "fox.png")
    assert code == 0, err
    drafts = sorted((tmp_path / "drafts").iterdir())
    assert drafts and drafts[0].name == "draft-1.png"
    for draft in drafts:
        with Image.open(draft) as img:
            assert img.format == "PNG" and img.width > 0
    lines = out.splitlines()
    # When each came, in order, before the final image's summary.
    assert lines[0].startswith("thinking") and any(
        line.startswith("draft ") and "draft-1.png" in line for line in lines
    )
    assert lines.index(next(line for line in lines if line.startswith("wrote fox.png"))) > 1
    assert fake.requests[-1].path.endswith(":streamGenerateContent")


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("notes.txt/cat.png", "notes.txt is a file, not a directory"),  # a file where a folder must go
        ("taken.png", "Is a directory"),
    ],
)
async def test_unwritable_output_is_refused_before_anything_is_spent(
    fake: FakeImageAPI, tmp_path: Path, output: str, reason: str
) -> None:
    (tmp_path / "notes.txt").write_text("not a folder")
    (tmp_path / "taken.png").mkdir()
    code, out, err = await run_cli(fake, tmp_path, "generate", "cat", "-o", output)
    assert (code, out) == (1, "") and err.strip() == f"error: can't write {output}: {reason}."
    assert fake.request_count == 0


async def test_output_that_breaks_during_generation_says_where_the_image_was_kept(
    fake: FakeImageAPI, tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    fake.script(Fault.slow(1.0))
    cli = asyncio.create_task(run_cli(fake, tmp_path, "generate", "cat", "-o", "out/cat.png"))
    async with asyncio.timeout(30):
        while fake.request_count == 0:  # noqa: ASYNC110 (the request is out: then the folder becomes a file)
            await asyncio.sleep(0.02)
    (tmp_path / "out").rmdir()
    (tmp_path / "out").write_text("not a folder any more")
    code, out, err = await cli
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("error: can't write out/cat.png: out is a file, not a directory; the image is kept at ")
    stored = tmp_path / lines[0].split(" kept at ", 1)[1].removesuffix(".")  # relative to where it ran
    assert stored.is_relative_to(tmp_path / "data" / "images")
    with Image.open(stored) as img:
        assert img.size == (1024, 1024)
    with sqlite3.connect(tmp_path / "data" / "banana.sqlite3") as db:
        assert db.execute("SELECT command, status FROM generations").fetchall() == [("cli", "ok")]


@pytest.mark.parametrize(
    ("data_dir", "reason"),
    [
        ("notes.txt/data", "Not a directory"),
        ("notes.txt", "notes.txt is a file, not a directory"),
        ("broken", "broken/banana.sqlite3 is not a file"),  # a directory has the usage log's name
    ],
)
async def test_unusable_data_dir_is_one_line_before_anything_is_spent(
    fake: FakeImageAPI, tmp_path: Path, data_dir: str, reason: str
) -> None:
    (tmp_path / "notes.txt").write_text("not a folder")
    (tmp_path / "broken" / "banana.sqlite3").mkdir(parents=True)
    code, out, err = await run_cli(fake, tmp_path, "generate", "cat", "-o", "x.png", BANANA_DATA_DIR=data_dir)
    assert code == 2 and out == ""
    assert err.strip() == f"error: can't use the data directory {data_dir} (BANANA_DATA_DIR): {reason}."
    assert fake.requests == [] and not (tmp_path / "x.png").exists()


async def test_oversized_reference_is_refused_before_anything_is_sent(fake: FakeImageAPI, tmp_path: Path) -> None:
    with (tmp_path / "big.png").open("wb") as big:
        big.write(b"\x89PNG\r\n\x1a\n")
        big.truncate(30 * 1024 * 1024)  # sparse: the size is checked before a byte is read
    code, out, err = await run_cli(fake, tmp_path, "generate", "cat", "--ref", "big.png", "-o", "x.png")
    assert code == 1 and out == ""
    assert err.strip() == "error: big.png is 30.0 MB; the limit is 20 MB."
    assert fake.requests == [] and fake.request_count == 0
    assert not (tmp_path / "x.png").exists()


async def test_a_reference_that_is_a_directory_is_one_line(fake: FakeImageAPI, tmp_path: Path) -> None:
    (tmp_path / "refs").mkdir()
    code, out, err = await run_cli(fake, tmp_path, "generate", "cat", "--ref", "refs", "-o", "x.png")
    assert (code, out) == (1, "") and err.strip() == "error: Can't read refs: Is a directory."
    assert fake.request_count == 0 and not (tmp_path / "x.png").exists()
