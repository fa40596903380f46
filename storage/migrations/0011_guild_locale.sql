-- 0011_guild_locale: a server's pinned language for public messages (a Discord locale such as 'id'; NULL =
-- the server's own Discord language).

ALTER TABLE guild_settings ADD COLUMN locale TEXT;
