-- The same DDL on SQLite and PostgreSQL (both lists in lib.rs name this file).
-- Covering indexes for the metric statements (store.rs), measured at the
-- year scale (docs/BENCHMARKS.md "Metrics"): a range of the window reads
-- every column a metric needs from the index, without a lookup into the
-- table per row.

-- MTTD and the trend: the window on validated_at, then what they read.
DROP INDEX test_milestones_validated;
CREATE INDEX test_milestones_window
    ON test_milestones (validated_at, hit, detect_micros, campaign_id, technique_id);

-- MTTR: the window on completed_at, then the opening instant.
DROP INDEX remediation_milestones_completed;
CREATE INDEX remediation_milestones_window
    ON remediation_milestones (completed_at, opened_at, campaign_id, technique_id);

-- Rejection rates: one range per mark, already grouped by mark (SQLite
-- counts each range instead of testing every row of the window against
-- six marks).
DROP INDEX test_marks_window;
CREATE INDEX test_marks_by_mark
    ON test_marks (mark, occurred_at, prev_at, campaign_id, technique_id);
