-- 0007_budgets: a guild's monthly budget in USD (NULL = none). Jobs are refused before they are queued
-- when their estimated cost would take the month's spending past it.

ALTER TABLE guild_settings ADD COLUMN monthly_budget_usd REAL CHECK (monthly_budget_usd IS NULL OR monthly_budget_usd >= 0);
