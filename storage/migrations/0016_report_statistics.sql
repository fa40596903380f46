-- 0016_report_statistics: nothing to do on SQLite, whose /usage queries already read only the report index
-- (0006). PostgreSQL's twin, 0016_report_statistics.postgresql.sql, gives its planner what it needs to do the
-- same (bench/bench_reports.py).
SELECT 1;
