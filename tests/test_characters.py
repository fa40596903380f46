"""Characters without Discord: the sheet, names, how a request uses one, the repository and its versions, and
the thumbnail strip of /character history."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from bot.core.models import model_spec
from bot.jobs.characters import SHEET_SECTIONS, apply_character, name_problem, sheet_text, summarize
from bot.media.strips import CELL, MISSING_MARK, THUMB, StripRow, compose_strip
from storage.characters import (
    CharacterGone,
    DuplicateName,
    UnknownVersion,
    change_character,
    character_images,
    character_versions,
    count_versions,
    create_character,
    delete_character,
    get_character,
    get_version,
    list_characters,
    restore_version,
)
from storage.db import Database
from tests.bot_harness import png


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
    spec = model_spec("gemini-3-pro-image-preview")
    keys = [f"{n:064x}" for n in range(16)]
    mira = await create_character(
        db, guild_id=1, name="Mira", description="Red braid, green coat.", created_by=7, image_keys=keys
    )
    version = await get_version(db, mira.id, mira.version)
    assert version is not None and version.image_keys == tuple(keys)
    prompt, sent, left_out = apply_character("Mira reads in a café", "Mira", version, user_reference_count=3, spec=spec)
    assert prompt.endswith("Scene: Mira reads in a café") and "Red braid, green coat." in prompt
    assert sent == keys[-11:] and left_out == 5  # 14 images in all, 3 of them the member's own
    assert "The first 11 reference images show Mira" in prompt
    bare = await create_character(db, guild_id=1, name="Bare", description="d", created_by=7)
    empty = await get_version(db, bare.id, 1)
    assert empty is not None
    prompt, sent, left_out = apply_character("a walk", "Bare", empty, user_reference_count=0, spec=spec)
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
    first = await change_character(db, mira.id, changed_by=7, change="edit", max_images=4, add_keys=keys[:3])
    assert first.changed and first.dropped == ()
    second = await change_character(db, mira.id, changed_by=7, change="add_image", max_images=4, add_keys=keys[3:])
    assert second.dropped == (keys[0],)
    assert await character_images(db, mira.id) == keys[1:]
    renamed = await change_character(db, mira.id, changed_by=8, change="edit", max_images=4, description="new")
    changed = await get_character(db, 1, "Mira")
    assert changed is not None and changed.description == "new" and changed.version == 4 == renamed.character.version
    await delete_character(db, mira.id)
    assert await get_character(db, 1, "Mira") is None and await character_images(db, mira.id) == []
    assert await character_versions(db, mira.id) == [] and await get_version(db, mira.id, 1) is None
    assert await get_character(db, 2, "Mira") is not None


KEYS = [f"{n:064x}" for n in range(1, 9)]


async def test_every_change_keeps_the_previous_sheet_and_references_as_a_version(db: Database) -> None:
    mira = await create_character(
        db, guild_id=1, name="Mira", description="red braid", created_by=7, image_keys=KEYS[:2], max_images=3
    )
    assert mira.version == 1  # one change, one version: the sheet and its images together
    edit = await change_character(
        db, mira.id, changed_by=8, change="edit", max_images=3, description="blue hair", add_keys=KEYS[2:4]
    )
    assert edit.character.version == 2 and edit.dropped == (KEYS[0],)
    await change_character(db, mira.id, changed_by=7, change="add_image", max_images=3, add_keys=[KEYS[4]])
    versions = await character_versions(db, mira.id)
    assert [(v.version, v.change, v.changed_by, v.description) for v in versions] == [
        (3, "add_image", 7, "blue hair"),
        (2, "edit", 8, "blue hair"),
        (1, "create", 7, "red braid"),
    ]
    assert [v.image_keys for v in versions] == [tuple(KEYS[2:5]), tuple(KEYS[1:4]), tuple(KEYS[:2])]
    # The same image again moves to the newest place (a new version) rather than counting twice.
    again = await change_character(db, mira.id, changed_by=7, change="add_image", max_images=3, add_keys=[KEYS[2]])
    assert again.changed and await character_images(db, mira.id) == [KEYS[3], KEYS[4], KEYS[2]]
    # A change that changes nothing writes no version.
    same = await change_character(db, mira.id, changed_by=7, change="edit", max_images=3, description="blue hair")
    assert not same.changed and same.character.version == 4 and await count_versions(db, mira.id) == 4

    summary = summarize(versions[1], versions[2])
    assert (summary.sheet_changed, summary.added, summary.removed, summary.images) == (True, 2, 1, 3)
    assert summarize(versions[2], None).images == 2


async def test_restore_makes_an_old_version_current_as_a_new_one(db: Database) -> None:
    mira = await create_character(
        db, guild_id=1, name="Mira", description="red braid", created_by=7, image_keys=KEYS[:1]
    )
    await change_character(
        db, mira.id, changed_by=7, change="edit", max_images=1, description="blue hair", add_keys=[KEYS[1]]
    )
    restored = await restore_version(db, mira.id, 1, changed_by=9)
    assert restored.changed and restored.dropped == (KEYS[1],)
    now = await get_character(db, 1, "Mira")
    assert now is not None and now.version == 3 and now.description == "red braid"
    assert await character_images(db, mira.id) == [KEYS[0]]
    latest = await get_version(db, mira.id, 3)
    assert latest is not None and (latest.change, latest.restored_from, latest.changed_by) == ("restore", 1, 9)
    # Version 2 is still there to go back to.
    second = await get_version(db, mira.id, 2)
    assert second is not None and second.description == "blue hair" and second.image_keys == (KEYS[1],)
    # Restoring what it already is writes nothing.
    assert not (await restore_version(db, mira.id, 1, changed_by=9)).changed
    assert await count_versions(db, mira.id) == 3


async def test_restoring_an_unknown_version_or_character_changes_nothing(db: Database) -> None:
    mira = await create_character(
        db, guild_id=1, name="Mira", description="red braid", created_by=7, image_keys=KEYS[:1]
    )
    with pytest.raises(UnknownVersion) as raised:
        await restore_version(db, mira.id, 5, changed_by=7)
    assert (raised.value.version, raised.value.latest) == (5, 1)
    assert await get_character(db, 1, "Mira") == mira and await count_versions(db, mira.id) == 1
    with pytest.raises(CharacterGone):
        await restore_version(db, mira.id + 100, 1, changed_by=7)
    with pytest.raises(CharacterGone):
        await change_character(db, mira.id + 100, changed_by=7, change="edit", max_images=3, description="x")
    with pytest.raises(ValueError, match="not a change"):
        await change_character(db, mira.id, changed_by=7, change="restore", max_images=3, description="x")


def near(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=False))


def test_the_history_strip_draws_each_versions_references_in_its_row() -> None:
    red, blue = png(300, 150, (220, 30, 30)), png(100, 200, (30, 30, 220))
    rows = [StripRow("第2版", "2", ["blue", "gone"]), StripRow("第1版", "1", ["red"]), StripRow("第0版", "0", [])]
    jpeg, layout = compose_strip(rows, {"red": red, "blue": blue, "gone": None}, language="zh-CN")
    with Image.open(io.BytesIO(jpeg)) as img:
        assert img.format == "JPEG"
        assert img.size == (layout.cell(0, 2)[0], layout.cell(3, 0)[1])  # two columns, three rows
        rgb = img.convert("RGB")

        def centre(row: int, column: int) -> tuple[int, ...]:
            x, y = layout.cell(row, column)
            return tuple(rgb.getpixel((x + THUMB // 2, y + THUMB // 2)))  # type: ignore[arg-type]

        assert near(centre(0, 0), (30, 30, 220)) and near(centre(1, 0), (220, 30, 30))
        assert near(centre(0, 1), MISSING_MARK)  # an image no longer stored: crossed out
        x, y = layout.cell(0, 1)
        assert near(tuple(rgb.getpixel((x + 4, y + THUMB // 2))), CELL)  # type: ignore[arg-type]
        # A wide image is fitted inside its cell, with the cell's grey above and below it.
        x, y = layout.cell(1, 0)
        assert near(tuple(rgb.getpixel((x + THUMB // 2, y + 4))), CELL)  # type: ignore[arg-type]
        # The label column holds drawn text (CJK here): something brighter than the background.
        label = rgb.crop((0, layout.cell(0, 0)[1], layout.label_width, layout.cell(1, 0)[1]))
        assert max(high for _, high in label.getextrema()) > 150  # type: ignore[misc]
