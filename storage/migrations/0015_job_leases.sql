-- The job system in the database, shared by every process: where each job waits (its lane), which request
-- it belongs to, what it reserves of the monthly budget, and the lease of the process running it.

-- The guild, or minus the member for their own jobs (DMs, user installs): lanes take turns.
ALTER TABLE jobs ADD COLUMN lane INTEGER;
-- The request a job belongs to (a grid's four tiles share one): a member's caps count requests.
ALTER TABLE jobs ADD COLUMN job_group TEXT;
-- The estimated cost the budget counts until the real cost is in the usage log.
ALTER TABLE jobs ADD COLUMN reserved_usd REAL NOT NULL DEFAULT 0;
-- 1 while the job runs and its provider call is not over: what the concurrency caps count.
ALTER TABLE jobs ADD COLUMN holds_slot INTEGER NOT NULL DEFAULT 0;
-- The process running the job, and until when; it renews the lease while it works. When a lease runs out,
-- the job is queued again and any process takes it over.
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires REAL;

UPDATE jobs SET lane = CASE WHEN guild_id IS NOT NULL AND user_install = 0 THEN guild_id ELSE -user_id END,
                job_group = coalesce(grid_id, id);

CREATE INDEX jobs_waiting ON jobs (lane, created_at) WHERE status = 'queued';
CREATE INDEX jobs_active ON jobs (user_id) WHERE status IN ('queued', 'running');

-- When each lane was last served (a counter): the least recently served lane goes next.
CREATE TABLE lanes (
    lane    INTEGER NOT NULL PRIMARY KEY,
    served  INTEGER NOT NULL
);

-- A job taken over after its provider answered is finished from its logged generation, not paid again.
CREATE INDEX generations_job ON generations (job_id);
