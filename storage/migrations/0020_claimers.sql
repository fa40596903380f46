-- 0020_claimers: the processes taking jobs from the queue, each with when it last said so. A claim spreads new
-- jobs evenly over the processes claiming (storage/queue.py's claim_jobs): one with nothing in hand counts,
-- one stopping (it leaves the table) or dead (it stops saying so) doesn't.

CREATE TABLE claimers (
    owner TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
);
