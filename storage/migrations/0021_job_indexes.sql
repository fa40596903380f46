-- 0021_job_indexes: every index of jobs costs each new job, and each update that changes an indexed column, an
-- entry. The result message and thread indexes now hold only the jobs that have one (lookups ask for one
-- message or thread, never NULL), so a new job no longer enters them. The status message gets such an index
-- too: a reply to a bot message looks its job up by either message (storage/jobs.py's job_for_message), which
-- read the whole table.

DROP INDEX jobs_result_message;
CREATE INDEX jobs_result_message ON jobs (result_message_id) WHERE result_message_id IS NOT NULL;
DROP INDEX jobs_thread;
CREATE INDEX jobs_thread ON jobs (thread_id, created_at) WHERE thread_id IS NOT NULL;
CREATE INDEX jobs_status_message ON jobs (status_message_id) WHERE status_message_id IS NOT NULL;
