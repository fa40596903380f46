"""Everything that speaks discord.py: surfaces, the status ticker, result messages, intake, buttons, the
command translator, and picking jobs up again after a restart. Cogs (``cogs/``) stand on this."""
