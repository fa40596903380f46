"""Characters without Discord: the sheet, names, how a request uses one, and the repository."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.core.models import model_spec
from bot.jobs.characters import SHEET_SECTIONS, apply_character, name_problem, sheet_text
from storage.characters import (
    DuplicateName,
    add_character_images,
    character_images,
    create_character,
    delete_character,
    get_character,
    list_characters,
    update_description,
)
from storage.db import Database


@pytest.fixture
async def db() -> AsyncIterator[Database]:
    database = await Database.open(":memory:")
    yield database
    await database.close()


def test_names() -> None:
    assert name_problem("Mira") is None
    assert name_problem("  ") == "character.name_empty"
    assert name_problem("x" * 33) == "character.name_long"
    assert name_problem("@everyone") == "character.name_chars"
    assert name_problem("two\nlines") == "character.name_chars"


def test_sheet_text_labels_filled_sections_in_order() -> None:
    text = sheet_text({"sheet.style": "ink and  wash", "sheet.appearance": "about 30, freckles", "sheet.marks": ""})
    assert text == "Appearance and face: about 30, freckles\nArt style and colour palette: ink and wash"
    assert len(SHEET_SECTIONS) == 5  # a Discord modal holds at most five inputs


async def test_apply_character_keeps_the_words_and_fits_the_image_limit(db: Database) -> None:
    mira = await create_character(db, guild_id=1, name="Mira", description="Red braid, green coat.", created_by=7)
    spec = model_spec("gemini-3-pro-image-preview")
    keys = [f"{n:064x}" for n in range(16)]
    prompt, sent, left_out = apply_character("Mira reads in a café", mira, keys, user_reference_count=3, spec=spec)
    assert prompt.endswith("Scene: Mira reads in a café") and "Red braid, green coat." in prompt
    assert sent == keys[-11:] and left_out == 5  # 14 images in all, 3 of them the member's own
    assert "The first 11 reference images show Mira" in prompt
    prompt, sent, left_out = apply_character("a walk", mira, [], user_reference_count=0, spec=spec)
    assert sent == [] and left_out == 0 and "reference image" not in prompt


async def test_repository_is_per_guild_case_insensitive_and_caps_images(db: Database) -> None:
    mira = await create_character(db, guild_id=1, name="Mira", description="d", created_by=7)
    with pytest.raises(DuplicateName):
        await create_character(db, guild_id=1, name="mira", description="d", created_by=8)
    other = await create_character(db, guild_id=2, name="Mira", description="elsewhere", created_by=9)
    assert (await get_character(db, 1, "MIRA")) == mira
    assert (await get_character(db, 2, "mira")) == other
    assert [c.name for c in await list_characters(db, 1, "mi")] == ["Mira"]
    assert await list_characters(db, 1, "%") == []  # LIKE wildcards are taken literally

    keys = [f"{n:064x}" for n in range(5)]
    assert await add_character_images(db, mira.id, keys[:3], max_images=4) == []
    assert await add_character_images(db, mira.id, keys[3:], max_images=4) == [keys[0]]
    assert await character_images(db, mira.id) == keys[1:]
    await update_description(db, mira.id, "new")
    changed = await get_character(db, 1, "Mira")
    assert changed is not None and changed.description == "new" and changed.version == 4
    await delete_character(db, mira.id)
    assert await get_character(db, 1, "Mira") is None and await character_images(db, mira.id) == []
    assert await get_character(db, 2, "Mira") is not None
