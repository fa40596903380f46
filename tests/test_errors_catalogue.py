"""Every error a member can read, rendered in every language: plain words from the catalogue.

No exception names, no English left in a translation, no doubled punctuation, no unfilled placeholder, and
the same list of accepted formats wherever formats are named. The core's errors come from the real code
(real bad images through prepare_reference, real model limits through validate), so a new kind of error
without wording shows up here.
"""

from __future__ import annotations

import builtins
import dataclasses
import io
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

import bot.core.errors as core_errors
from bot.core.errors import (
    AllKeysBenchedError,
    AuthError,
    BatchEndedError,
    BlockedError,
    GenerationError,
    GenerationTimeout,
    InvalidRequest,
    NoImageError,
    RateLimitedError,
    ResponseError,
    UnavailableError,
)
from bot.core.imaging import ACCEPTED_FORMATS, prepare_reference, read_reference_file
from bot.core.models import MODELS, ModelSpec, model_spec
from bot.core.providers.gemini import BLOCK_FINISH_REASONS
from bot.core.service import validate
from bot.core.types import ImageInput, ImageRequest
from bot.i18n import FALLBACK, available_locales, t
from bot.jobs.admission import BudgetExceeded, LimitExceeded
from bot.ui.errors import (
    blocked_reason,
    error_text,
    formats,
    input_error_text,
    limit_text,
    option_label,
    request_problem_text,
    short_reason,
    too_large_text,
    unreadable_text,
)

LOCALES = available_locales()
TRANSLATED = [locale for locale in LOCALES if locale != FALLBACK]
#: Names that are the same in every language: formats, units, brands, Discord's own "@ON".
NAMES = {"png", "jpeg", "webp", "heic", "gif", "mb", "nano", "banana", "pro", "gemini", "openai", "api", "on"}
#: Gemini's prompt block reasons, its finish reasons that withhold an image, and OpenAI-style error codes.
BLOCK_CODES = sorted(
    {"SAFETY", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "IMAGE_SAFETY"}
    | BLOCK_FINISH_REASONS
    | {"moderation_blocked", "content_policy_violation", "content_filter", "safety_violation"}
)
EXCEPTION_NAMES = {
    name
    for module in (builtins, core_errors)
    for name, value in vars(module).items()
    if isinstance(value, type) and issubclass(value, BaseException)
} | {"UnidentifiedImageError", "DecompressionBombError", "DecompressionBombWarning", "HTTPException"}
DOUBLED = re.compile(r"[.。!！?？:：;；,，]\s*[)）]?\s*[.。:：;；,，]")
WORD = re.compile(r"[A-Za-z][A-Za-z']+")


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A valid PNG that claims `width` x `height` pixels in a few hundred bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )


def raised(call: object, *args: object, **kwargs: object) -> InvalidRequest:
    assert callable(call)
    with pytest.raises(InvalidRequest) as info:
        call(*args, **kwargs)
    return info.value


def reference_errors(tmp_path: Path) -> list[InvalidRequest]:
    """What the image checks really raise for each kind of bad file a member can attach."""
    return [
        raised(prepare_reference, b"hello, definitely text", name="reference"),
        raised(prepare_reference, png(256, 256)[:-200], name="reference"),
        raised(prepare_reference, b"\x89PNG\r\n\x1a\n" + bytes(2**20), name="reference", max_bytes=2**20),
        raised(prepare_reference, png_header(8000, 8000), name="reference"),  # over 50 megapixels
        raised(prepare_reference, png_header(20000, 20000), name="reference"),  # a decompression bomb
        raised(read_reference_file, tmp_path / "missing.png"),
    ]


def model_limit_cases() -> Iterator[tuple[ModelSpec, ImageRequest]]:
    """A request each model limit refuses (the real validate refuses each)."""
    pro, flash = model_spec("gemini-3-pro-image-preview"), model_spec("gemini-3.1-flash-image-preview")
    assert not pro.thinking_levels and set(flash.thinking_levels) == {"minimal", "high"}, "the models changed"
    refs = tuple(ImageInput(b"", "image/png") for _ in range(pro.max_reference_images + 1))
    yield pro, ImageRequest(prompt="  ")
    yield pro, ImageRequest(prompt="a cat", aspect_ratio="7:3")
    yield pro, ImageRequest(prompt="a cat", size="512")
    yield pro, ImageRequest(prompt="a cat", thinking="high")  # a remix of a Nano Banana 2 job, say
    yield dataclasses.replace(flash, thinking_levels=("high",)), ImageRequest(prompt="a cat", thinking="minimal")
    yield pro, ImageRequest(prompt="a cat", references=refs)


def generation_errors() -> list[GenerationError]:
    said = "🙅 🎨"  # the model's own words are quoted as they are (no English to find in them here)
    return [
        *(BlockedError("blocked", stage="prompt", reason=code) for code in BLOCK_CODES),
        BlockedError("blocked", stage="output", reason="SOMETHING_NEW", model_text=said),
        NoImageError("The model answered without an image (finish reason STOP).", model_text=said),
        NoImageError("The model returned no answer at all."),
        RateLimitedError("gemini: rate limited", retry_after=None, per_day=False),
        RateLimitedError("gemini: quota exhausted", retry_after=None, per_day=True),
        UnavailableError("gemini is unavailable (503): overloaded", status=503),
        GenerationTimeout("gemini: no answer within 120 s"),
        ResponseError("gemini returned image data that is not an image."),
        AuthError("key #1 (...abcd): API key not valid", key_label="key #1 (...abcd)", status=400),
        AllKeysBenchedError("every gemini key has been refused"),
        InvalidRequest("gemini refused the request: Request contains an invalid argument.", status=400),
        InvalidRequest("gemini: model not found: models/x is not found", status=404),
        InvalidRequest("An image this request uses is no longer stored (deleted by the retention setting)."),
        *(BatchEndedError(f"The batch ended {state}", state=state) for state in ("failed", "cancelled", "expired")),
    ]


def every_error(locale: str, tmp_path: Path) -> list[tuple[str, str]]:
    """(what the core or Discord said, in English or as a code; what the member reads) for each error."""
    texts: list[tuple[str, str]] = []
    for error in [*generation_errors(), *reference_errors(tmp_path)]:
        for attempts in (1, 3):
            error.attempts = attempts
            texts.append((str(error), error_text(locale, error, "12345")))
        texts.append((error.error_class, short_reason(locale, error.error_class)))
    texts.append(("internal", error_text(locale, None, "12345")))
    for option in ("reference", "reference2", "image", "image3", "holiday.heic"):
        for error in reference_errors(tmp_path):
            texts.append((str(error), input_error_text(locale, option, error)))
        texts.append(("too large", too_large_text(locale, option, 50)))
        texts.append(("unreadable", unreadable_text(locale, option)))
    for spec, request in model_limit_cases():
        error = raised(validate, request, spec)
        texts.append((str(error), request_problem_text(locale, spec, request)))
    for refused in (
        LimitExceeded("user_pending", 2, None),
        LimitExceeded("user_daily", 1, 1_800_000_000),
        LimitExceeded("user_daily", 20, 1_800_000_000, needed=4, used=18),
        LimitExceeded("guild_daily", 200, 1_800_000_000),
        LimitExceeded("guild_daily", 200, 1_800_000_000, needed=4, used=199),
        BudgetExceeded(budget=10.0, left=0.2, needed=0.536, resets_at=1_800_000_000),
        LimitExceeded("user_install_daily", 100, 1_800_000_000),
        LimitExceeded("user_install_daily", 100, 1_800_000_000, needed=4, used=98),
        LimitExceeded("user_install_off", 0, None),
    ):
        texts.append((str(refused), limit_text(locale, refused)))
    texts.append(("grid", t(locale, "grid.all_failed", reason=short_reason(locale, "blocked"))))
    for key in ("reply.no_ping", "reply.empty", "result.thread_hint", "error.dm_intro"):
        texts.append((key, t(locale, key, channel="<#1>") if key == "error.dm_intro" else t(locale, key)))
    for key in ("show.not_found", "show.other_server", "show.not_ready", "show.no_image", "show.image_gone"):
        texts.append((key, t(locale, key)))
    texts.append(("show.nsfw_origin", t(locale, "show.nsfw_origin")))
    texts.append(("input.left_out", t(locale, "input.left_out", model="Nano Banana", limit=3, images="d.png, e.png")))
    for key in ("history.no_version", "history.already_current", "history.same_as_current", "history.unchanged"):
        texts.append((key, t(locale, key, name="Mo", version=2, latest=3)))
    return texts


def trigrams(text: str) -> set[tuple[str, ...]]:
    """Three words in a row, but not names alone (a list of formats is the same in every language)."""
    words = [w.lower() for w in WORD.findall(text)]
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)} - {g for g in _grams(words) if set(g) <= NAMES}


def _grams(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def test_every_kind_of_core_error_is_rendered() -> None:
    """A new error class or image check shows up here, so it can't reach members unworded."""

    def subclasses(cls: type[GenerationError]) -> set[type[GenerationError]]:
        return {cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))}

    rendered = {type(e) for e in generation_errors()}
    assert subclasses(GenerationError) - {GenerationError} <= rendered
    assert {e.kind for e in generation_errors() if isinstance(e, InvalidRequest)} == {"refused", "not_found", "other"}


def test_reference_checks_give_every_kind(tmp_path: Path) -> None:
    kinds = [e.kind for e in reference_errors(tmp_path)]
    assert kinds == ["not_image", "damaged", "too_large", "too_many_pixels", "too_many_pixels", "unreadable"]
    assert reference_errors(tmp_path)[2].fields == {"mb": 1.0, "limit_mb": 1}


@pytest.mark.parametrize("locale", LOCALES)
def test_errors_are_plain_words_in_the_members_language(locale: str, tmp_path: Path) -> None:
    english = dict(enumerate(every_error(FALLBACK, tmp_path)))
    for index, (source, text) in enumerate(every_error(locale, tmp_path)):
        where = f"{locale} #{index}: {text!r}"
        assert not {w for w in re.findall(r"\w+", text) if w in EXCEPTION_NAMES}, where
        assert not DOUBLED.search(text), where
        assert "{" not in text and "}" not in text, where
        if len(source) > 20:  # an English sentence from the core: never shown as it is
            assert source not in text, where
        assert not any(code in text for code in BLOCK_CODES), where  # safety codes become words
        if locale == FALLBACK:
            continue
        # Nothing English is left: no three English words in a row from the English text of the same error.
        assert not trigrams(text) & trigrams(english[index][1]), where
        if locale.startswith("zh"):
            # A slash command is named as members type it ("/forget-me"), in any language.
            typed = " ".join(w for w in text.split() if not w.startswith("/"))
            latin = {w.lower() for w in WORD.findall(typed) if len(w) >= 3} - NAMES - {"discord", "holiday"}
            assert not latin, where


@pytest.mark.parametrize("locale", LOCALES)
def test_every_message_naming_formats_names_the_same_list_with_heic(locale: str, tmp_path: Path) -> None:
    listed = formats(locale)
    assert all(name in listed for name in ACCEPTED_FORMATS) and "HEIC" in listed
    naming = [text for _, text in every_error(locale, tmp_path) if "PNG" in text]
    assert len(naming) >= 10
    for text in naming:
        assert listed in text, text


@pytest.mark.parametrize("locale", TRANSLATED)
def test_options_are_named_as_discord_shows_them_to_the_member(locale: str, tmp_path: Path) -> None:
    truncated = reference_errors(tmp_path)[1]
    label = option_label(locale, "reference")
    text = input_error_text(locale, "reference", truncated)
    assert text.startswith(label) and text != input_error_text(FALLBACK, "reference", truncated)
    if locale in ("fr", "id", "zh-CN", "zh-TW"):
        assert label != "reference"
    # A thread reply's attachment is named by its file name, in every language.
    assert input_error_text(locale, "holiday.heic", truncated).startswith("holiday.heic")


def test_english_answers_say_what_to_do(tmp_path: Path) -> None:
    not_image, damaged, too_large, pixels, _, _ = reference_errors(tmp_path)
    assert input_error_text("en-US", "reference", damaged) == (
        "reference: that image is damaged or cut short, so I can't read it. "
        "Save it again as PNG, JPEG, WebP, HEIC, or GIF and attach it again."
    )
    assert input_error_text("en-US", "image2", not_image) == (
        "image2: that file isn't an image I can use. Send PNG, JPEG, WebP, HEIC, or GIF."
    )
    assert "the limit is 50 megapixels" in input_error_text("en-US", "reference", pixels)
    assert blocked_reason("en-US", "PROHIBITED_CONTENT") == "prohibited content"
    pro = MODELS["gemini-3-pro-image-preview"]
    assert request_problem_text("en-US", pro, ImageRequest(prompt="a cat", size="512")) == (
        "Nano Banana Pro doesn't make 512 images. Pick 1K, 2K, or 4K."
    )
    refused = InvalidRequest("gemini refused the request: Request contains an invalid argument.", status=400)
    assert error_text("en-US", refused, "12345").startswith("The image service refused this request.")
    assert too_large.kind == "too_large"
