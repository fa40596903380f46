-- 0012_moderation: who may use the bot in a server, what may be asked there, and where moderators read
-- what was made. All of it belongs to the server and goes with /purge-server.

-- Roles allowed to use the bot (JSON list of role ids; NULL = everyone), age-restricted channels only, the
-- moderators' log channel, an admin's regular expression for the ban list, and the last reason the log
-- channel could not be posted to (shown once in /settings, cleared when a post succeeds or the channel changes).
ALTER TABLE guild_settings ADD COLUMN access_roles_json TEXT;
ALTER TABLE guild_settings ADD COLUMN nsfw_only INTEGER;
ALTER TABLE guild_settings ADD COLUMN log_channel_id INTEGER;
ALTER TABLE guild_settings ADD COLUMN banned_pattern TEXT;
ALTER TABLE guild_settings ADD COLUMN log_problem TEXT;

-- Images per day for members with a role; a member gets the highest of their roles'.
CREATE TABLE role_limits (
    guild_id    INTEGER NOT NULL,
    role_id     INTEGER NOT NULL,
    daily       INTEGER NOT NULL CHECK (daily >= 0),
    PRIMARY KEY (guild_id, role_id)
);

CREATE TABLE blocked_members (
    guild_id    INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    blocked_by  INTEGER NOT NULL,
    blocked_at  REAL    NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

-- Words and phrases refused in prompts; `phrase_key` is the phrase as it is matched (case and accents folded).
CREATE TABLE banned_phrases (
    guild_id    INTEGER NOT NULL,
    phrase_key  TEXT    NOT NULL,
    phrase      TEXT    NOT NULL,
    added_by    INTEGER NOT NULL,
    added_at    REAL    NOT NULL,
    PRIMARY KEY (guild_id, phrase_key)
);

-- Requests refused before anything was spent, by rule ('access', 'blocked', 'nsfw_only', 'banned_word',
-- 'banned_pattern'); no prompt is kept.
CREATE TABLE refusals (
    id          INTEGER PRIMARY KEY,
    guild_id    INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    rule        TEXT    NOT NULL,
    created_at  REAL    NOT NULL
);
CREATE INDEX refusals_by_guild ON refusals (guild_id, created_at);
