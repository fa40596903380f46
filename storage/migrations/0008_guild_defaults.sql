-- 0008_guild_defaults: more of what a server's admins can set in /settings (NULL = the bot-wide default).

ALTER TABLE guild_settings ADD COLUMN default_size TEXT;
ALTER TABLE guild_settings ADD COLUMN default_aspect_ratio TEXT;
ALTER TABLE guild_settings ADD COLUMN default_thinking TEXT;
ALTER TABLE guild_settings ADD COLUMN guild_concurrency INTEGER CHECK (guild_concurrency IS NULL OR guild_concurrency >= 1);
ALTER TABLE guild_settings ADD COLUMN user_concurrency INTEGER CHECK (user_concurrency IS NULL OR user_concurrency >= 1);
ALTER TABLE guild_settings ADD COLUMN user_pending INTEGER CHECK (user_pending IS NULL OR user_pending >= 1);
ALTER TABLE guild_settings ADD COLUMN user_daily INTEGER CHECK (user_daily IS NULL OR user_daily >= 0);
ALTER TABLE guild_settings ADD COLUMN guild_daily INTEGER CHECK (guild_daily IS NULL OR guild_daily >= 0);
-- JSON list of channel ids where the bot may be used; NULL = everywhere.
ALTER TABLE guild_settings ADD COLUMN allowed_channels_json TEXT;
-- Who may change characters: 'creators' (their creator or Manage Server) or 'admins' (Manage Server only).
ALTER TABLE guild_settings ADD COLUMN character_managers TEXT CHECK (character_managers IN ('creators', 'admins'));
