-- 0018_report_speed: /usage tells fast from relax (migration 0017's `speed`). storage/reports.py reads the
-- period's relax requests apart, through this index of those alone, and takes fast as all less relax: the
-- report's other queries still read only the guild report index (0006) as they did, so a server that never
-- used relax pays nothing for it, and one that did pays for its relax rows only. Every column those queries
-- read is here (speed too, for SQLite to serve them from the index alone).

CREATE INDEX generations_relax_report ON generations (
    guild_id, created_at, status, model, size, total_ms, queue_ms, cost_usd, user_id, speed
) WHERE speed = 'relax';
