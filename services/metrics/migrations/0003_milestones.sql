-- The same DDL on SQLite and PostgreSQL (both lists in lib.rs name this file).
-- What each metric reads, kept per test and per remediation in the
-- transaction that records their events (store.rs REFRESH_*), so a metric
-- over a year is one indexed range aggregate instead of a scan of the log.
-- The event log stays the record; these rows are derived from it and are
-- rebuilt from it for every test or remediation an append touches.
CREATE TABLE test_milestones (
    test_id        TEXT PRIMARY KEY,
    -- Of the test's validation (the filter of MTTD and the trend).
    technique_id   TEXT,
    campaign_id    TEXT,
    -- The test.validated recorded last, and whether its outcome was
    -- blocked or detected (1) or not (0).
    validated_at   BIGINT,
    hit            BIGINT NOT NULL,
    -- test.detected recorded last minus test.red_executed recorded last
    -- (the accepted submission's); NULL when either is missing.
    detect_micros  BIGINT
);
CREATE INDEX test_milestones_validated ON test_milestones (validated_at);

CREATE TABLE remediation_milestones (
    remediation_id TEXT PRIMARY KEY,
    -- Of the completion (the filter of MTTR).
    technique_id   TEXT,
    campaign_id    TEXT,
    -- Latest remediation.opened and remediation.completed.
    opened_at      BIGINT,
    completed_at   BIGINT
);
CREATE INDEX remediation_milestones_completed ON remediation_milestones (completed_at);

-- Rejection rates count distinct tests per kind over a window: this index
-- answers them without reading the table.
CREATE INDEX events_kind_time_cover ON events (kind, occurred_at, test_id, side, campaign_id, technique_id);

-- The milestones of the events recorded before this migration.
INSERT INTO test_milestones (test_id, technique_id, campaign_id, validated_at, hit, detect_micros)
SELECT test_id,
       MAX(CASE WHEN kind = 'test.validated' THEN technique_id END),
       MAX(CASE WHEN kind = 'test.validated' THEN campaign_id END),
       MAX(CASE WHEN kind = 'test.validated' THEN occurred_at END),
       COALESCE(MAX(CASE WHEN kind = 'test.validated' AND outcome IN ('blocked', 'detected') THEN 1 END), 0),
       MAX(CASE WHEN kind = 'test.detected' THEN occurred_at END)
         - MAX(CASE WHEN kind = 'test.red_executed' THEN occurred_at END)
FROM (
    SELECT test_id, kind, occurred_at, outcome, technique_id, campaign_id,
           ROW_NUMBER() OVER (PARTITION BY test_id, kind ORDER BY seq DESC) AS rn
    FROM events
    WHERE test_id IS NOT NULL AND kind IN ('test.validated', 'test.detected', 'test.red_executed')
) latest
WHERE rn = 1
GROUP BY test_id;

INSERT INTO remediation_milestones (remediation_id, technique_id, campaign_id, opened_at, completed_at)
SELECT remediation_id,
       MAX(CASE WHEN kind = 'remediation.completed' THEN technique_id END),
       MAX(CASE WHEN kind = 'remediation.completed' THEN campaign_id END),
       MAX(CASE WHEN kind = 'remediation.opened' THEN occurred_at END),
       MAX(CASE WHEN kind = 'remediation.completed' THEN occurred_at END)
FROM events
WHERE remediation_id IS NOT NULL AND kind IN ('remediation.opened', 'remediation.completed')
GROUP BY remediation_id;
