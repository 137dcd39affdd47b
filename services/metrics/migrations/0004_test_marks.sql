-- The same DDL on SQLite and PostgreSQL (both lists in lib.rs name this file).
-- Rejection rates count distinct tests with an event of a kind in a window.
-- Each such event is kept here with the instant of the test's previous one
-- of the same mark: the event counts for its test exactly when that
-- previous instant is before the window (or there is none), so the rates
-- are plain counts over an index range, no deduplication. Marks: the kinds
-- below, and rejections once more per side ('rejected:red',
-- 'rejected:blue'). Rebuilt from the log for every test an append touches
-- (store.rs REFRESH_MARKS), so events arriving out of order are placed
-- right.
CREATE TABLE test_marks (
    test_id       TEXT   NOT NULL,
    mark          TEXT   NOT NULL,
    occurred_at   BIGINT NOT NULL,
    seq           BIGINT NOT NULL,
    prev_at       BIGINT,
    technique_id  TEXT,
    campaign_id   TEXT,
    PRIMARY KEY (test_id, mark, occurred_at, seq)
);
CREATE INDEX test_marks_window ON test_marks (occurred_at, mark, prev_at, campaign_id, technique_id);

INSERT INTO test_marks (test_id, mark, occurred_at, seq, prev_at, technique_id, campaign_id)
SELECT test_id, mark, occurred_at, seq,
       LAG(occurred_at) OVER (PARTITION BY test_id, mark ORDER BY occurred_at, seq),
       technique_id, campaign_id
FROM (
    SELECT test_id, substr(kind, 6) AS mark, occurred_at, seq, technique_id, campaign_id
    FROM events
    WHERE test_id IS NOT NULL
      AND kind IN ('test.validated', 'test.rejected', 'test.red_executed', 'test.blue_completed')
    UNION ALL
    SELECT test_id, 'rejected:' || side, occurred_at, seq, technique_id, campaign_id
    FROM events
    WHERE test_id IS NOT NULL AND kind = 'test.rejected' AND side IN ('red', 'blue')
) marks;

-- Replaced by the marks: the covering index of 0003 served the rates.
DROP INDEX events_kind_time_cover;
