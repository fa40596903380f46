-- 0003_grids: /grid. A grid is four variations shown as one 2x2 preview. In 'tiles' mode each tile is
-- its own job (four images of quota and cost); in 'sliced' mode one job asks for a 2x2 image and the
-- tiles are cut from it. Tiles taken further (U buttons) become jobs of their own.

CREATE TABLE grids (
    id              TEXT    PRIMARY KEY,
    created_at      REAL    NOT NULL,
    guild_id        INTEGER,
    channel_id      INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    mode            TEXT    NOT NULL CHECK (mode IN ('tiles', 'sliced')),
    request_json    TEXT    NOT NULL,
    message_id      INTEGER,                 -- the preview message with the U/V buttons
    thread_id       INTEGER,
    tile_keys_json  TEXT                     -- image-store keys of the four tiles (NULL where one failed)
);

CREATE INDEX grids_message ON grids (message_id);

-- A job that is one tile of a grid, and which tile (1-4).
ALTER TABLE jobs ADD COLUMN grid_id TEXT REFERENCES grids (id);
ALTER TABLE jobs ADD COLUMN tile INTEGER;
