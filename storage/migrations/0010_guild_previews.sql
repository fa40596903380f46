-- 0010_guild_previews: whether a server shows the model's drafts while an image renders (NULL = yes).

ALTER TABLE guild_settings ADD COLUMN previews INTEGER;
