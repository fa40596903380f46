-- 0019_reserved_index: admission sums what a budgeted guild's admitted jobs still reserve (storage/queue.py's
-- admission_counts) for every request there. Only jobs not yet finished hold a reservation (finishing or
-- cancelling sets it to 0), so this index of those alone stays as small as the queue, where the guild index
-- made the sum read every job the guild ever had.

CREATE INDEX jobs_reserved ON jobs (guild_id) WHERE reserved_usd > 0;
