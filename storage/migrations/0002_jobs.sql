-- 0002_jobs: Discord jobs (the queue, quotas, persistent buttons and thread conversations).
--
-- A job is one request by a member: queued, then running, then done / failed / cancelled.
-- Quotas count the jobs that hold a reservation (queued, running, done), so a failed or
-- cancelled job is refunded by its status alone.
-- A job's conversation is the chain of parent jobs: each done job keeps the user turn it sent and
-- the model turn it got back (JSON parts; image bytes live in the image store by key).

CREATE TABLE jobs (
    id                 TEXT    PRIMARY KEY,             -- short random id, carried in button custom ids
    created_at         REAL    NOT NULL,                -- unix seconds, UTC
    guild_id           INTEGER,                         -- NULL in DMs
    channel_id         INTEGER NOT NULL,
    user_id            INTEGER NOT NULL,
    kind               TEXT    NOT NULL,                -- 'imagine', 'reroll', 'edit', 'upscale', 'reply'
    locale             TEXT    NOT NULL DEFAULT 'en-US',
    status             TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    request_json       TEXT    NOT NULL,                -- prompt, size, aspect, thinking, model, reference keys
    parent_id          TEXT    REFERENCES jobs (id),    -- the job whose image this one continues from
    version            INTEGER NOT NULL DEFAULT 1,      -- number of the image in its thread's version tree
    thread_id          INTEGER,                         -- where the conversation continues
    status_message_id  INTEGER,                         -- a channel message kept current (replies in threads)
    result_message_id  INTEGER,                         -- the message that shows the image and the buttons
    user_turn_json     TEXT,                            -- what was sent (done jobs)
    model_turn_json    TEXT,                            -- what came back, thought signatures included
    image_key          TEXT,
    generation_id      INTEGER,                         -- the usage row
    error_class        TEXT,
    error_detail       TEXT,
    defer_ms           REAL,                            -- interaction arrival -> deferral sent
    queue_ms           REAL,
    started_at         REAL,
    finished_at        REAL,
    attempts_started   INTEGER NOT NULL DEFAULT 0       -- how often it was started (restarts re-run it)
);

CREATE INDEX jobs_status ON jobs (status);
CREATE INDEX jobs_user_created ON jobs (user_id, created_at);
CREATE INDEX jobs_guild_created ON jobs (guild_id, created_at);
CREATE INDEX jobs_result_message ON jobs (result_message_id);
CREATE INDEX jobs_thread ON jobs (thread_id, created_at);

-- Key/value facts about the bot itself, e.g. the hash of the last synced command tree.
CREATE TABLE bot_state (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- Every job's usage row points back at it; defer_ms is the time to the Discord deferral.
ALTER TABLE generations ADD COLUMN job_id TEXT;
ALTER TABLE generations ADD COLUMN defer_ms REAL;
