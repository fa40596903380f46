-- 0006_report_index: /usage for a guild reads only this index (no table lookups), so its queries stay
-- fast as the log grows (bench/bench_reports.py: 100,000 rows in a guild's 30 days). It starts with the
-- same columns as generations_guild_created, which it replaces.

DROP INDEX generations_guild_created;
CREATE INDEX generations_guild_report ON generations (
    guild_id, created_at, status, model, size, total_ms, queue_ms, cost_usd, user_id, error_class
);
