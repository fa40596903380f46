"""A server's rules, checked before anything is queued or spent: who may use the bot, and what may be asked.

Banned words and phrases match whole words, whatever their case and accents ("Café" bans "cafe" and
"CAFÉ", but not "cafeteria"). An admin's regular expression is matched with a time limit, and refused when
it is set if it could take longer than that on some prompt.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import unicodedata
from dataclasses import dataclass

import regex

from storage.guild_settings import GuildSettings
from storage.moderation import BannedPhrase, Block

log = logging.getLogger(__name__)

#: Every rule that can refuse a request; /usage counts refusals by these names.
RULES = ("access", "blocked", "nsfw_only", "banned_word", "banned_pattern")
MAX_PHRASE = 100
MAX_PATTERN = 300
#: How long one prompt may take to check against the pattern. A prompt is at most a few thousand characters:
#: a sane pattern answers in microseconds, so this only ever stops a pathological one.
PATTERN_TIMEOUT = 0.1
#: The text the pattern is tried on when it is set: long runs of the characters it names, which is what makes
#: a backtracking pattern blow up.
PROBE_LENGTH = 5000
#: All the probes together; a sane pattern needs a few milliseconds.
PROBE_BUDGET = 3.0


@dataclass(frozen=True)
class Refusal(Exception):
    """A rule refuses the request. `detail` (a block's reason, the matched phrase) is for the member privately
    and for the moderators' log, never for the channel."""

    rule: str
    detail: str | None = None


class PatternProblem(ValueError):
    """An admin's pattern can't be used: `kind` is 'too_long', 'invalid' or 'slow'."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind, self.detail = kind, detail


def fold(text: str) -> str:
    """Case and accents folded, and invisible format characters (zero-width spaces and joiners) dropped, so
    'Crème BRÛLÉE' and 'cre\u200bme brulee' both read 'creme brulee'."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c) and unicodedata.category(c) != "Cf")


#: Scripts written without spaces between words: a banned word there is matched wherever it appears.
_UNSPACED = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x20000, 0x2FA1F),  # CJK Extensions B-F and supplements
)


def _unspaced(char: str) -> bool:
    return any(first <= ord(char) <= last for first, last in _UNSPACED)


def banned_phrase(phrase: str) -> BannedPhrase:
    """The phrase as the ban list stores it; ValueError if it is empty or too long."""
    key = " ".join(fold(phrase).split())
    if not key or len(key) > MAX_PHRASE:
        raise ValueError(phrase)
    return BannedPhrase(key=key, phrase=" ".join(phrase.split()))


@functools.lru_cache(maxsize=4096)
def _phrase_regex(key: str) -> re.Pattern[str]:
    # Whole words: no word character right before or after, so 'ass' doesn't match 'class'. Where the phrase
    # starts or ends in a script without spaces (Chinese, Japanese, Thai), any neighbour will do.
    body = r"\s+".join(re.escape(word) for word in key.split())
    before = "" if _unspaced(key[0]) else r"(?<!\w)"
    after = "" if _unspaced(key[-1]) else r"(?!\w)"
    return re.compile(f"{before}{body}{after}")


def matching_phrase(text: str, phrases: list[BannedPhrase]) -> BannedPhrase | None:
    folded = fold(text)
    return next((p for p in phrases if _phrase_regex(p.key).search(folded)), None)


def compile_pattern(pattern: str) -> regex.Pattern[str]:
    """The admin's pattern, checked for size, syntax and time; raises PatternProblem."""
    if len(pattern) > MAX_PATTERN:
        raise PatternProblem("too_long")
    try:
        compiled = regex.compile(pattern, regex.IGNORECASE)
    except regex.error as exc:
        raise PatternProblem("invalid", str(exc)) from None
    # Long runs of each character and each short piece of the words the pattern names, ended by nothing, a line
    # break, or one of its other characters: a required character present but not where the pattern wants it
    # is what makes a backtracking pattern retry every way of splitting the run.
    folded = fold(pattern)
    words = re.findall(r"[^\W_]{2,}", folded)[:10]
    pieces = {word[i : i + n] for word in words for n in (2, 3) for i in range(len(word) - n + 1)}
    runs = sorted({c for c in folded if c.isalnum() or c in " -_.'"} | {"a", "0", " "} | set(list(pieces)[:30]))
    stops = sorted({c for c in folded if not c.isalnum() and c.isprintable()} | {"!"})
    ends = ["", "\n", *(stop + tail for stop in stops for tail in ("", "x"))]
    budget = time.monotonic() + PROBE_BUDGET
    for run in runs:
        for end in ends:
            try:
                compiled.search(run * (PROBE_LENGTH // len(run)) + end, timeout=PATTERN_TIMEOUT)
            except TimeoutError:
                raise PatternProblem("slow") from None
            if time.monotonic() > budget:  # each probe in time, but so many of them: too slow overall
                raise PatternProblem("slow")
    return compiled


async def check_pattern(pattern: str) -> regex.Pattern[str]:
    """`compile_pattern` off the event loop: the probes may take a second on a bad pattern."""
    return await asyncio.to_thread(compile_pattern, pattern)


def pattern_matches(compiled: regex.Pattern[str], text: str) -> bool | None:
    """Whether the pattern matches the prompt, folded or as typed (an admin may write accents); None if it
    ran out of time, which the probes make rare."""
    try:
        return any(compiled.search(form, timeout=PATTERN_TIMEOUT) for form in (fold(text), text))
    except TimeoutError:
        return None


async def check_texts(texts: list[str], phrases: list[BannedPhrase], pattern: str | None) -> Refusal | None:
    """The first rule of the ban list that one of `texts` (prompt, instruction, sheet) breaks."""
    for text in texts:
        # Off the event loop: a long ban list over a long prompt is real work.
        found = await asyncio.to_thread(matching_phrase, text, phrases)
        if found is not None:
            return Refusal("banned_word", found.phrase)
    if pattern:
        compiled = regex.compile(pattern, regex.IGNORECASE)
        for text in texts:
            matched = await asyncio.to_thread(pattern_matches, compiled, text)
            if matched is None:
                # Refusing on a timeout would refuse harmless prompts with no reason anyone could see.
                log.warning("a server's ban-list pattern ran out of time on a prompt; letting it through")
            elif matched:
                return Refusal("banned_pattern")
    return None


def check_member(
    settings: GuildSettings, block: Block | None, roles: frozenset[int], *, in_nsfw_channel: bool, is_admin: bool
) -> Refusal | None:
    """Whether this member may use the bot here at all. Admins (Manage Server) pass the role gate."""
    if block is not None:
        return Refusal("blocked", block.reason)
    if settings.access_roles and not is_admin and not roles & set(settings.access_roles):
        return Refusal("access")
    if settings.nsfw_only and not in_nsfw_channel:
        return Refusal("nsfw_only")
    return None


def member_daily_limit(limits: dict[int, int], roles: frozenset[int]) -> int | None:
    """The highest daily limit among the member's roles (@everyone is a role too), or None if none has one."""
    own = [daily for role, daily in limits.items() if role in roles]
    return max(own) if own else None
