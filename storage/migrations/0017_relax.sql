-- 0017_relax: relax mode, images at half price through the provider's Batch API.
--
-- A relax job waits (status 'queued', speed 'relax') until the batcher gathers it into a batch; while its
-- batch is at the provider it is 'running' with its batch_id set and no lease (the batch poller, not a
-- process's lease, answers for it). Claims of fast jobs never look at relax jobs.

ALTER TABLE jobs ADD COLUMN speed TEXT NOT NULL DEFAULT 'fast';
ALTER TABLE jobs ADD COLUMN batch_id TEXT;
-- The member cancelled delivery after the batch was sent: the image is paid for, logged, and not posted.
ALTER TABLE jobs ADD COLUMN delivery_cancelled INTEGER NOT NULL DEFAULT 0;

CREATE INDEX jobs_relax_waiting ON jobs (created_at) WHERE status = 'queued' AND speed = 'relax';
CREATE INDEX jobs_batch ON jobs (batch_id) WHERE batch_id IS NOT NULL;

-- One batch sent to a provider (or being sent). `id` is ours and is sent as the batch's display name, so a
-- batch whose create call was cut off can be found again at the provider; `name` is the provider's
-- ('batches/...'), NULL until it answered.
CREATE TABLE batches (
    id             TEXT    PRIMARY KEY,
    name           TEXT,
    origin         TEXT    NOT NULL,            -- 'discord' (relax jobs) or 'cli' (banana-bot batch submit)
    provider       TEXT    NOT NULL,
    model          TEXT    NOT NULL,
    -- Which configured API key created it (a fingerprint, never the key): only that key can see it.
    key_id         TEXT    NOT NULL,
    -- sending, pending, running, succeeded, failed, cancelled, expired (the provider's), then delivered
    state          TEXT    NOT NULL,
    request_count  INTEGER NOT NULL,
    input_bytes    INTEGER NOT NULL DEFAULT 0,
    input_kind     TEXT    NOT NULL DEFAULT 'inline',  -- 'inline' or 'file'
    created_at     REAL    NOT NULL,
    sent_at        REAL,
    ended_at       REAL,                          -- when the provider's state became final
    delivered_at   REAL,                          -- when every result was recorded (and, for jobs, posted)
    next_poll_at   REAL,
    polls          INTEGER NOT NULL DEFAULT 0,
    error          TEXT,
    -- CLI batches: each line's key, prompt and options, as submitted (JSON)
    items_json     TEXT
);

CREATE INDEX batches_open ON batches (next_poll_at) WHERE delivered_at IS NULL;

-- Who runs a role that one process at a time must (the batch poller), and until when.
CREATE TABLE leases (
    name     TEXT PRIMARY KEY,
    owner    TEXT NOT NULL,
    expires  REAL NOT NULL
);

-- The usage log tells fast from relax: the batch price is half, and turnaround is reported apart.
ALTER TABLE generations ADD COLUMN speed TEXT NOT NULL DEFAULT 'fast';
ALTER TABLE generations ADD COLUMN batch_id TEXT;
-- A relax job's answer is logged (and charged) once, whichever process delivers it.
CREATE UNIQUE INDEX generations_relax_job ON generations (job_id) WHERE speed = 'relax' AND status = 'ok';

-- A server's default speed ('fast' or 'relax'; NULL = fast) and whether it allows relax only.
ALTER TABLE guild_settings ADD COLUMN default_speed TEXT;
ALTER TABLE guild_settings ADD COLUMN relax_only INTEGER;
