-- Rejection rates without a filter, at the year scale, without counting
-- every mark of the window (docs/BENCHMARKS.md, 2026-12-05): a test
-- counts for a mark when one of its marks lies in the window and the one
-- before it does not (0004), so the count is every mark in the window less
-- the repeats, the marks whose previous one is in the window too. The
-- first term is kept here per mark and UTC day: the days wholly inside the
-- window are summed and the partial days at its two ends counted from
-- test_marks (store.rs REJECTIONS_BY_DAY); the repeats are a range of the
-- index below.
--
-- A mark is one per test event of the four kinds (two for a rejection with
-- a side), and events are append-only, so the counts only grow. A trigger
-- on the event log keeps them, in the statement that appends the events:
-- whichever release writes the log (an older one after a rollback,
-- docs/adr/0007) keeps them right.
CREATE TABLE mark_days (
    mark  TEXT   NOT NULL,
    -- occurred_at / 86400000000: days since 1970-01-01 UTC (events are
    -- after 2000, so the division truncates as a floor would).
    day   BIGINT NOT NULL,
    n     BIGINT NOT NULL,
    PRIMARY KEY (mark, day)
);

INSERT INTO mark_days (mark, day, n)
SELECT mark, occurred_at / 86400000000, COUNT(*)
FROM test_marks
GROUP BY mark, occurred_at / 86400000000;

-- The repeats of a window: marks whose previous one is in it.
CREATE INDEX test_marks_repeats ON test_marks (mark, prev_at, occurred_at);

-- Per event, in the appending statement: two upserts of a row of the
-- table's primary key (SQLite has no statement-level trigger).
CREATE TRIGGER events_mark_days AFTER INSERT ON events
WHEN NEW.test_id IS NOT NULL
 AND NEW.kind IN ('test.validated', 'test.rejected', 'test.red_executed', 'test.blue_completed')
BEGIN
    INSERT INTO mark_days (mark, day, n)
    VALUES (substr(NEW.kind, 6), NEW.occurred_at / 86400000000, 1)
    ON CONFLICT (mark, day) DO UPDATE SET n = n + 1;
    INSERT INTO mark_days (mark, day, n)
    SELECT 'rejected:' || NEW.side, NEW.occurred_at / 86400000000, 1
    WHERE NEW.kind = 'test.rejected' AND NEW.side IN ('red', 'blue')
    ON CONFLICT (mark, day) DO UPDATE SET n = n + 1;
END;
