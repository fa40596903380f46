"""Settings validation, secret hygiene, and the CLI's front door."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import Secret, load_settings
from bot.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_need_nothing(tmp_path: Path) -> None:
    settings = load_settings({}, env_file=None)
    assert settings.gemini_model == "gemini-3-pro-image-preview"
    assert settings.data_dir == Path("data")
    assert settings.configured_providers == ()


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("GEMINI_API_KEY=from-file-key-1234\nGEMINI_MODEL=gemini-3.1-flash-image-preview\n")
    settings = load_settings({"GEMINI_MODEL": "gemini-2.5-flash-image"}, env_file=env)
    assert settings.gemini_api_keys == (Secret("from-file-key-1234"),)
    assert settings.gemini_model == "gemini-2.5-flash-image"


def test_key_lists_rotate_and_never_print() -> None:
    settings = load_settings({"GEMINI_API_KEY": "AIzaFIRSTKEY0001, AIzaSECONDKEY002"}, env_file=None)
    assert [k.reveal() for k in settings.gemini_api_keys] == ["AIzaFIRSTKEY0001", "AIzaSECONDKEY002"]
    assert "AIza" not in repr(settings) and "AIza" not in str(settings)


def test_every_bad_value_gets_one_line_naming_it() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "GEMINI_BASE_URL": "generativelanguage.googleapis.com",
                "BANANA_PROVIDERS": "gemini,midjourney",
                "BANANA_TIMEOUT_2K": "soon",
                "OPENAI_API_STYLE": "grpc",
                "OPENAI_EXTRA_BODY": "[1,2]",
                "BANANA_RETRY_ATTEMPTS": "0",
                "BANANA_PRICES": '{"m": {"image_tokens": {"9K": 1}}}',
            },
            env_file=None,
        )
    lines = info.value.lines
    named = [line.split("=")[0].split(":")[0].split("[")[0] for line in lines]
    assert named == [
        "BANANA_PROVIDERS",
        "OPENAI_API_STYLE",
        "BANANA_TIMEOUT_2K",
        "GEMINI_BASE_URL",
        "OPENAI_EXTRA_BODY",
        "BANANA_RETRY_ATTEMPTS",
        "BANANA_PRICES",
    ]
    assert all("expected" in line for line in lines)


def test_a_retired_setting_left_in_env_is_ignored() -> None:
    # BANANA_HTTP_VERSION chose HTTP/2; HTTP/1.1 is now the only path, and an old .env must still start.
    assert load_settings({"BANANA_HTTP_VERSION": "2-prior"}, env_file=None) == load_settings({}, env_file=None)


def numeric_settings() -> list[str]:
    """Every variable config.py reads through its number or whole-number parser."""
    import re

    source = (ROOT / "bot" / "config.py").read_text()
    names = set(re.findall(r'\.(?:number|integer)\("([A-Z0-9_]+)"', source))
    return sorted(names | {f"BANANA_TIMEOUT_{size}" for size in ("1K", "2K", "4K")})


@pytest.mark.parametrize(
    "raw",
    ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999", "²", pytest.param("9" * 5000, id="5000-digits")],
)
@pytest.mark.parametrize("name", numeric_settings())
def test_every_numeric_setting_refuses_what_is_not_a_usable_number(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({name: raw}, env_file=None)
    [line] = info.value.lines
    assert line.startswith(f"{name}={raw!r}: expected a ") and "number" in line


def test_context_megabytes_must_fit_in_a_byte_count() -> None:
    # Finite, but times 1024 * 1024 it is inf, which int() can't take.
    with pytest.raises(ConfigError) as info:
        load_settings({"BANANA_CONTEXT_MB": "1e303"}, env_file=None)
    assert info.value.lines == ["BANANA_CONTEXT_MB='1e303': expected a number from 1 to 1024."]


@pytest.mark.parametrize(
    "entry",
    [
        '{"per_image": NaN}',
        '{"per_image": Infinity}',
        '{"per_image": "inf"}',
        '{"per_image": -0.1}',
        '{"input_per_m": 1e999}',
        '{"text_output_per_m": "nan"}',
        '{"image_output_per_m": -Infinity}',
        '{"image_output_per_m": 120, "image_tokens": {"1K": Infinity}}',
        '{"image_output_per_m": 120, "image_tokens": {"1K": NaN}}',
        '{"image_output_per_m": 120, "image_tokens": {"1K": -1120}}',
    ],
)
def test_prices_must_be_finite_and_not_negative(entry: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"BANANA_PRICES": f'{{"m": {entry}}}'}, env_file=None)
    [line] = info.value.lines
    assert line.startswith("BANANA_PRICES['m']: expected an object")


def test_price_overrides() -> None:
    settings = load_settings(
        {"OPENAI_PRICE_PER_IMAGE": "0.05", "BANANA_PRICES": '{"gemini-3-pro-image-preview": {"per_image": 0.1}}'},
        env_file=None,
    )
    assert settings.price_overrides["gpt-image-2"].per_image == 0.05
    assert settings.price_overrides["gemini-3-pro-image-preview"].image_price("4K") == 0.1


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "OPENAI_", "DISCORD_", "BANANA_"))}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_without_token_says_what_to_set_and_no_traceback(tmp_path: Path) -> None:
    proc = run_cli(["run"], {}, tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "DISCORD_TOKEN" in lines[0] and "discord.com/developers/applications" in lines[0]
    assert "Traceback" not in proc.stderr


def test_bad_config_is_reported_before_anything_runs(tmp_path: Path) -> None:
    proc = run_cli(["generate", "cat", "-o", "x.png"], {"BANANA_TIMEOUT_4K": "-3"}, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "config: BANANA_TIMEOUT_4K='-3': expected a number of at least 0.1."
    assert not (tmp_path / "x.png").exists()


def test_generate_without_any_provider_is_one_clear_line(tmp_path: Path) -> None:
    proc = run_cli(["generate", "cat", "-o", "x.png"], {}, tmp_path)
    assert proc.returncode == 2
    assert "No image provider is configured: set GEMINI_API_KEY" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["run", "sync", "report"])
@pytest.mark.parametrize(
    ("data_dir", "reason"),
    [
        ("notes.txt/data", "Not a directory"),
        ("notes.txt", "notes.txt is a file, not a directory"),
        ("broken", "broken/banana.sqlite3 is not a file"),
    ],
)
def test_unusable_data_dir_is_one_line_for_every_command(
    tmp_path: Path, command: str, data_dir: str, reason: str
) -> None:
    (tmp_path / "notes.txt").write_text("not a folder")
    (tmp_path / "broken" / "banana.sqlite3").mkdir(parents=True)
    # A token, so run and sync get as far as storage (and would otherwise try to reach discord.com).
    proc = run_cli([command], {"DISCORD_TOKEN": "not-a-real-token", "BANANA_DATA_DIR": data_dir}, tmp_path)
    if command == "report" and data_dir == "notes.txt":
        reason = "Not a directory"  # a report only reads: it looks for the log inside, and creates nothing
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"error: can't use the data directory {data_dir} (BANANA_DATA_DIR): {reason}."


async def test_report_csv_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    from storage.db import Database

    await (await Database.open(tmp_path / "data" / "banana.sqlite3")).close()
    (tmp_path / "notes.txt").write_text("not a folder")
    proc = run_cli(["report", "--csv", "notes.txt/usage.csv"], {}, tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: can't write notes.txt/usage.csv: Not a directory."


def test_env_example_documents_every_setting_and_loads_cleanly() -> None:
    import re

    source = (ROOT / "bot" / "config.py").read_text()
    read = set(re.findall(r'\.(?:get|number|integer|url|keys|_choice|_json_object)\("([A-Z0-9_]+)"', source))
    read |= {f"BANANA_TIMEOUT_{size}" for size in ("1K", "2K", "4K")}
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", example, flags=re.M))
    assert read - documented == set()
    load_settings({}, env_file=ROOT / ".env.example")  # the example as shipped is valid


@pytest.mark.parametrize(
    ("count", "ids", "expected"),
    [
        ("", "", (None, None)),
        ("4", "", (4, None)),
        ("2", "1", (2, (1,))),
        ("2", "0,1", (2, (0, 1))),
        ("4", "0-3", (4, (0, 1, 2, 3))),
        ("8", " 0-1, 4 ", (8, (0, 1, 4))),
        ("8", "5,2-3", (8, (5, 2, 3))),
    ],
)
def test_shard_settings(count: str, ids: str, expected: tuple[int | None, tuple[int, ...] | None]) -> None:
    settings = load_settings({"BANANA_SHARD_COUNT": count, "BANANA_SHARD_IDS": ids}, env_file=None)
    assert (settings.shard_count, settings.shard_ids) == expected


@pytest.mark.parametrize(
    ("count", "ids", "line"),
    [
        ("0", "", "BANANA_SHARD_COUNT='0': expected a whole number of at least 1."),
        ("two", "", "BANANA_SHARD_COUNT='two': expected a whole number of at least 1."),
        # A refused count is the one line: the ids are not blamed for it.
        ("-1", "0", "BANANA_SHARD_COUNT='-1': expected a whole number of at least 1."),
        (
            "",
            "0,1",
            "BANANA_SHARD_IDS='0,1': expected BANANA_SHARD_COUNT to be set too: the shards of every process "
            "together, which Discord needs along with the shards this process runs.",
        ),
        (
            "2",
            "0-2",
            "BANANA_SHARD_IDS='0-2': expected shards numbered 0 to 1, as BANANA_SHARD_COUNT is 2; 2 is beyond that.",
        ),
        (
            "4",
            "4,7",
            "BANANA_SHARD_IDS='4,7': expected shards numbered 0 to 3, as BANANA_SHARD_COUNT is 4; 4, 7 is beyond that.",
        ),
        ("4", "0,0-1", "BANANA_SHARD_IDS='0,0-1': expected each shard once; 0 is listed more than once."),
        ("4", "3-1", "BANANA_SHARD_IDS='3-1': expected ranges from low to high; 3-1 runs backwards."),
    ]
    + [
        (
            "4",
            bad,
            f"BANANA_SHARD_IDS={bad!r}: expected shard numbers separated by commas, and ranges like 0-3 "
            "(e.g. '0,1', '0-3' or '0-1,4').",
        )
        for bad in ("a", "1,", "0-", "-1", "0-1-2", "1.5", "²", "0;1", "9" * 5000)
    ],
)
def test_shard_settings_refused_in_plain_words(count: str, ids: str, line: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"BANANA_SHARD_COUNT": count, "BANANA_SHARD_IDS": ids}, env_file=None)
    assert info.value.lines == [line]


def test_a_database_url_that_is_not_postgresql_is_refused_without_echoing_it(tmp_path: Path) -> None:
    proc = run_cli(["report"], {"BANANA_DATABASE_URL": "mysql://bot:hunter2@db/banana"}, tmp_path)
    assert proc.returncode == 2
    assert "BANANA_DATABASE_URL: expected a postgresql://" in proc.stderr and "hunter2" not in proc.stderr
    assert not (tmp_path / "data").exists()  # nothing was created on the way


def test_an_unreachable_postgresql_is_one_line_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql://bot:hunter2@/banana?host={tmp_path / 'no-server'}"
    for command in (["report"], ["generate", "a cat", "-o", str(tmp_path / "cat.png")]):
        proc = run_cli(command, {"BANANA_DATABASE_URL": url, "GEMINI_API_KEY": "k"}, tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: can't connect to PostgreSQL at postgresql://bot:***@")
        assert "hunter2" not in proc.stderr and "Traceback" not in proc.stderr
