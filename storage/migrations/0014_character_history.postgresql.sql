-- PostgreSQL's twin of 0014_character_history.sql: PostgreSQL has no rowid, so ties in added_at are broken by
-- the image key (a new PostgreSQL database has no characters yet when this runs anyway).
-- 0014_character_history: every version of a character is kept (its sheet and its reference set), so a change
-- can be undone with /character restore and a result can be made again with the version it used.
--
-- A version is never changed once written; a restore writes a new one. `character_images` stays the current
-- reference set (the newest version's, rewritten with each change) for the code that only needs that; the order
-- of a set is `position` here. `characters.created_by` is 0 once its creator has used /forget-me.

CREATE TABLE character_versions (
    character_id  BIGINT NOT NULL REFERENCES characters (id) ON DELETE CASCADE,
    version       BIGINT NOT NULL,
    description   TEXT    NOT NULL,
    -- 'kept': the version a character had when this migration ran (what came before it was not kept)
    change        TEXT    NOT NULL CHECK (change IN ('create', 'edit', 'add_image', 'restore', 'kept')),
    restored_from BIGINT,                  -- the version a 'restore' copied
    changed_by    BIGINT,                  -- NULL: not recorded, or that member has used /forget-me
    changed_at    DOUBLE PRECISION    NOT NULL,
    PRIMARY KEY (character_id, version)
);

CREATE TABLE character_version_images (
    character_id BIGINT NOT NULL,
    version      BIGINT NOT NULL,
    position     BIGINT NOT NULL,          -- 0 is the oldest reference; the newest are sent first when room is short
    image_key    TEXT    NOT NULL,
    PRIMARY KEY (character_id, version, position),
    FOREIGN KEY (character_id, version) REFERENCES character_versions (character_id, version) ON DELETE CASCADE
);

-- Retention and /forget-me ask whether any version still uses an image.
CREATE INDEX character_version_images_key ON character_version_images (image_key);

-- Today's characters: their current version, with who made it where that is known (a first version's creator).
INSERT INTO character_versions (character_id, version, description, change, changed_by, changed_at)
SELECT id, version, description, CASE WHEN version = 1 THEN 'create' ELSE 'kept' END,
       CASE WHEN version = 1 THEN created_by END, updated_at
FROM characters;

INSERT INTO character_version_images (character_id, version, position, image_key)
SELECT ci.character_id, c.version,
       row_number() OVER (PARTITION BY ci.character_id ORDER BY ci.added_at, ci.image_key) - 1, ci.image_key
FROM character_images AS ci JOIN characters AS c ON c.id = ci.character_id;
