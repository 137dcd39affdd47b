-- The latest execution a test ever had, kept across red rejections (which
-- clear executed_at) so that a re-execution cannot be backdated before it.
-- Expand-only: older binaries ignore the column.
ALTER TABLE tests ADD COLUMN last_executed_at BIGINT;
UPDATE tests SET last_executed_at = executed_at WHERE executed_at IS NOT NULL;
