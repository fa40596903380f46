-- 0004_characters: saved characters (a sheet plus reference images) that keep one character consistent
-- across scenes. A character belongs to one guild; its name is unique there, whatever the case.

CREATE TABLE characters (
    id          INTEGER PRIMARY KEY,
    guild_id    INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    name_key    TEXT    NOT NULL,            -- casefolded name, for lookups and uniqueness
    description TEXT    NOT NULL,
    created_by  INTEGER NOT NULL,
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL,
    version     INTEGER NOT NULL DEFAULT 1,  -- bumped on every change
    UNIQUE (guild_id, name_key)
);

CREATE TABLE character_images (
    character_id INTEGER NOT NULL REFERENCES characters (id) ON DELETE CASCADE,
    image_key    TEXT    NOT NULL,
    version      INTEGER NOT NULL,          -- the character's version when the image was added
    added_at     REAL    NOT NULL,
    PRIMARY KEY (character_id, image_key)
);
