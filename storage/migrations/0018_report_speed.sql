-- 0018_report_speed: /usage tells fast from relax (storage/reports.py groups by `speed`, migration 0017), and a
-- guild's report must still read only its covering index (0006), not the table row by row: the same index
-- with `speed` at the end. Rebuilding it reads the log once (a few seconds for a million rows).

DROP INDEX generations_guild_report;
CREATE INDEX generations_guild_report ON generations (
    guild_id, created_at, status, model, size, total_ms, queue_ms, cost_usd, user_id, error_class, speed
);
