-- 0005_guild_settings: what a server's admins changed from the bot's defaults (NULL = the default).

CREATE TABLE guild_settings (
    guild_id    INTEGER PRIMARY KEY,
    grid_mode   TEXT CHECK (grid_mode IN ('tiles', 'sliced')),
    updated_at  REAL    NOT NULL,
    updated_by  INTEGER NOT NULL
);
