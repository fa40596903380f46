"""The job system, knowing nothing of Discord: admission (limits, quotas, budgets), the fair queue, the runner
(run, resume, finish, refund) and the conversation behind each image."""
