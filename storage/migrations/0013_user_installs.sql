-- 0013_user_installs: jobs made through a member's own install of the app (in DMs, and in servers that haven't
-- added the bot). They count against a bot-wide daily cap, and no server's settings or budget apply to them.

ALTER TABLE jobs ADD COLUMN user_install INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_user_installs ON jobs (created_at) WHERE user_install = 1;
