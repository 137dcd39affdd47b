-- PostgreSQL only (SQLite plans its own json_each from the real input).
-- The planner takes a set-returning SQL function to return 1,000 rows
-- unless told otherwise. RecordEvents refreshes the milestones and marks
-- of the tests a batch touches (`test_id IN (SELECT value FROM
-- json_each($1))`, a few ids for a live transition): with 1,000 those
-- refreshes can be planned as scans of the whole event log; with 1 they
-- walk the indexes from the ids. The same estimate as campaigns' 0010.
ALTER FUNCTION json_each(text) ROWS 1;
