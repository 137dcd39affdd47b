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
-- First, the appends: an append committed between the count below and the
-- trigger (an older replica's, in a rolling upgrade) would be in neither.
-- This waits for those in flight and holds new ones until the migration
-- commits; they then meet the trigger.
LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE;

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

-- Once per appending statement, over the rows it stored (a duplicate event
-- skipped by ON CONFLICT is not among them): one upsert of the counts per
-- mark and day, in key order, so that two appends lock the rows they share
-- in the same order.
CREATE FUNCTION events_mark_days() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mark_days (mark, day, n)
    SELECT mark, day, COUNT(*)
    FROM (
        SELECT substr(kind, 6) AS mark, occurred_at / 86400000000 AS day
        FROM added
        WHERE test_id IS NOT NULL
          AND kind IN ('test.validated', 'test.rejected', 'test.red_executed', 'test.blue_completed')
        UNION ALL
        SELECT 'rejected:' || side, occurred_at / 86400000000
        FROM added
        WHERE test_id IS NOT NULL AND kind = 'test.rejected' AND side IN ('red', 'blue')
    ) marks
    GROUP BY mark, day
    ORDER BY mark, day
    ON CONFLICT (mark, day) DO UPDATE SET n = mark_days.n + excluded.n;
    RETURN NULL;
END $$;
CREATE TRIGGER events_mark_days AFTER INSERT ON events
REFERENCING NEW TABLE AS added
FOR EACH STATEMENT EXECUTE FUNCTION events_mark_days();
