"""Characters: the sheet that describes one, and how a request that uses one is put together.

The field notes' finding: a detailed sheet in every prompt plus clear reference images, with words on
what must stay the same, keeps a character most consistent (85-90%). No Discord here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.core.models import ModelSpec
from storage.characters import CharacterVersion

MAX_NAME = 32
MAX_DESCRIPTION = 3000


@dataclass(frozen=True)
class SheetSection:
    key: str  # catalogue key of its label, and of its modal placeholder (+ ".hint")
    label: str  # the English label inside the stored sheet text


#: The sheet as a modal asks for it: five inputs (Discord's maximum) covering the sheet's nine parts.
SHEET_SECTIONS = (
    SheetSection("sheet.appearance", "Appearance and face"),
    SheetSection("sheet.hair_eyes", "Hair and eyes"),
    SheetSection("sheet.build_outfit", "Build and outfit"),
    SheetSection("sheet.style", "Art style and colour palette"),
    SheetSection("sheet.marks", "Distinguishing marks"),
)

_NAME_FORBIDDEN = re.compile(r"[\n\r\t@#:`*_~|<>]")


def name_problem(name: str) -> str | None:
    """A catalogue key saying what's wrong with a character name, or None if it's fine."""
    stripped = name.strip()
    if not stripped:
        return "character.name_empty"
    if len(stripped) > MAX_NAME:
        return "character.name_long"
    if _NAME_FORBIDDEN.search(stripped):
        return "character.name_chars"
    return None


def sheet_text(sections: dict[str, str]) -> str:
    """The structured form's answers as one description: a labelled line per filled-in section."""
    lines = []
    for section in SHEET_SECTIONS:
        value = " ".join(sections.get(section.key, "").split())
        if value:
            lines.append(f"{section.label}: {value}")
    return "\n".join(lines)


def apply_character(
    prompt: str, name: str, version: CharacterVersion, user_reference_count: int, spec: ModelSpec
) -> tuple[str, list[str], int]:
    """The prompt with the sheet of one version of the character, and which of its reference images go along.

    The member's words are kept verbatim. References share the model's limit with the member's own images;
    the newest character images are kept. Returns (prompt, keys to send, character images left out)."""
    character_keys = list(version.image_keys)
    room = max(0, spec.max_reference_images - user_reference_count)
    keys = character_keys[-room:] if room else []
    left_out = len(character_keys) - len(keys)
    refs = f" The first {len(keys)} reference image{'s show' if len(keys) != 1 else ' shows'} {name}." if keys else ""
    combined = (
        f"Character: {name}.{refs} Keep {name} exactly consistent with this description"
        f"{' and those images' if keys else ''}: same face, hair, body, outfit and art style; only the pose, "
        f"expression and setting may change.\n"
        f"Character sheet:\n{version.description}\n\n"
        f"Scene: {prompt}"
    )
    return combined, keys, left_out


@dataclass(frozen=True)
class ChangeSummary:
    """What one version changed, against the version before it (for /character history)."""

    change: str  # what made it: one of storage.characters.CHANGES
    restored_from: int | None
    sheet_changed: bool
    added: int  # references that were not in the version before
    removed: int  # references of the version before that are gone
    images: int  # references this version has


def summarize(version: CharacterVersion, previous: CharacterVersion | None) -> ChangeSummary:
    """`previous` is the version numbered one lower, None if there is none (the first, or one not kept)."""
    keys = set(version.image_keys)
    if previous is None:
        return ChangeSummary(version.change, version.restored_from, False, 0, 0, len(keys))
    before = set(previous.image_keys)
    return ChangeSummary(
        change=version.change,
        restored_from=version.restored_from,
        sheet_changed=previous.description != version.description,
        added=len(keys - before),
        removed=len(before - keys),
        images=len(keys),
    )
