-- 0001_initial: the usage log (one row per image request) and the image store's index.
--
-- storage/db.py runs each migration file inside one transaction and bumps
-- PRAGMA user_version itself, so files must not contain BEGIN/COMMIT or PRAGMAs
-- that are not allowed inside a transaction.

CREATE TABLE generations (
    id               INTEGER PRIMARY KEY,
    created_at       REAL    NOT NULL,               -- unix seconds, UTC

    -- who asked (Discord snowflakes fit in SQLite's signed 64-bit INTEGER)
    guild_id         INTEGER,                        -- NULL in DMs and from the CLI
    channel_id       INTEGER,
    user_id          INTEGER,
    command          TEXT    NOT NULL,               -- 'cli', 'imagine', ...

    -- what was asked for
    provider         TEXT    NOT NULL,
    model            TEXT    NOT NULL,
    size             TEXT    NOT NULL,               -- '1K', '2K', '4K', ...
    aspect_ratio     TEXT    NOT NULL,
    thinking         TEXT,
    reference_count  INTEGER NOT NULL DEFAULT 0,
    prompt           TEXT    NOT NULL,

    -- outcome
    status           TEXT    NOT NULL CHECK (status IN ('ok', 'blocked', 'error')),
    error_class      TEXT,
    attempts         INTEGER NOT NULL DEFAULT 1,

    -- timings in milliseconds, NULL when unknown
    queue_ms         REAL,
    connect_ms       REAL,
    ttfb_ms          REAL,
    download_ms      REAL,
    decode_ms        REAL,
    total_ms         REAL,

    -- usage as reported by the provider
    input_tokens     INTEGER NOT NULL DEFAULT 0,
    output_tokens    INTEGER NOT NULL DEFAULT 0,
    thinking_tokens  INTEGER NOT NULL DEFAULT 0,
    image_tokens     INTEGER NOT NULL DEFAULT 0,
    total_tokens     INTEGER NOT NULL DEFAULT 0,
    cost_usd         REAL    NOT NULL DEFAULT 0,
    bytes_sent       INTEGER NOT NULL DEFAULT 0,
    bytes_received   INTEGER NOT NULL DEFAULT 0,

    -- the result; deliberately not a foreign key to images, so pruning old
    -- images never touches the usage log
    image_key        TEXT,
    width            INTEGER,
    height           INTEGER
);

-- Per-guild and per-user reports filter on the id and a time range.
CREATE INDEX generations_guild_created ON generations (guild_id, created_at);
CREATE INDEX generations_user_created ON generations (user_id, created_at);
-- Whole-bot per-day reports.
CREATE INDEX generations_created ON generations (created_at);
-- "Recent latency for this model and size" (storage.generations.recent_latencies_ms).
CREATE INDEX generations_model_size_created ON generations (model, size, created_at);


CREATE TABLE images (
    key         TEXT    PRIMARY KEY,                 -- sha256 of the bytes, lowercase hex
    mime        TEXT    NOT NULL,
    bytes       INTEGER NOT NULL,
    width       INTEGER,
    height      INTEGER,
    created_at  REAL    NOT NULL                     -- unix seconds, UTC; refreshed on re-put
);

-- ImageStore.prune deletes by age.
CREATE INDEX images_created ON images (created_at);
