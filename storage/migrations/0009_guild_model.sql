-- 0009_guild_model: a server's own default model and thinking level (NULL = the bot-wide default).

ALTER TABLE guild_settings ADD COLUMN default_model TEXT;
