-- 0021_job_indexes (PostgreSQL): as 0021_job_indexes.sql, and the status index goes. The partial indexes of the
-- jobs waiting and active (0015) answer every question asked by status here, since PostgreSQL proves that
-- `status = 'running'` falls within `status IN ('queued', 'running')`; SQLite's planner doesn't, so there the
-- index stays.

DROP INDEX jobs_result_message;
CREATE INDEX jobs_result_message ON jobs (result_message_id) WHERE result_message_id IS NOT NULL;
DROP INDEX jobs_thread;
CREATE INDEX jobs_thread ON jobs (thread_id, created_at) WHERE thread_id IS NOT NULL;
CREATE INDEX jobs_status_message ON jobs (status_message_id) WHERE status_message_id IS NOT NULL;
DROP INDEX jobs_status;
