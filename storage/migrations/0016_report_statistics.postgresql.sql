-- 0016_report_statistics (PostgreSQL): /usage's queries (storage/reports.py) over a guild's 30 days, found with
-- EXPLAIN (ANALYZE, BUFFERS) on bench/bench_reports.py's 1,000,000-row log (~100,000 rows in scope):
--
-- 1. They group by computed values (the UTC day, the 0.1 s latency step). Without statistics on those
--    expressions the planner takes each for as many groups as rows, so it sorts all ~100,000 rows and spills
--    the sort to disk (external merge) instead of hashing them into the ~100 (days) or ~6,000 (steps) groups
--    there are. Expression statistics (ANALYZE fills them in) give it the real counts; the expressions must be
--    written exactly as storage/reports.py's queries write them (Database.whole on PostgreSQL).
CREATE STATISTICS generations_report_day ON ((floor(created_at / 86400))::bigint) FROM generations;
CREATE STATISTICS generations_report_total_step ON ((floor(total_ms / 100))::bigint) FROM generations;
CREATE STATISTICS generations_report_queue_step ON ((floor(coalesce(queue_ms, 0) / 100))::bigint) FROM generations;

-- 2. They read only the report index (0006), but an index-only scan still visits the table for every page the
--    visibility map doesn't mark all-visible, and newly logged rows (the ones a 30-day report reads) stay
--    unmarked until autovacuum visits the table: by default after inserts of 20% of its rows. Fresh from a
--    load, the busiest guild's report took ~500 ms (bitmap heap scans over ~30,000 table pages), against
--    ~200 ms once vacuumed. Visit it after 1% instead; vacuuming an insert-only table reads only the new pages.
ALTER TABLE generations SET (autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);
