-- Where each test last changed, in commit order: what a replica holding
-- tests in memory (test_cache.rs) asks to learn which changed since it
-- last asked. Kept by a trigger, so every write to a test's row is noted
-- whichever statement or binary made it (an older release mid-rollout
-- included). SQLite serialises writers, so a counter taken under the
-- write lock is commit order. One row per test changed since this
-- migration, so the table stays the size of tests.
CREATE TABLE test_changes (
    test_id TEXT PRIMARY KEY NOT NULL,
    change_mark BIGINT NOT NULL
);
CREATE INDEX test_changes_mark ON test_changes (change_mark);

CREATE TRIGGER tests_changed AFTER UPDATE ON tests
BEGIN
    INSERT INTO test_changes (test_id, change_mark)
    VALUES (new.test_id, COALESCE((SELECT MAX(change_mark) FROM test_changes), 0) + 1)
    ON CONFLICT (test_id) DO UPDATE SET change_mark = excluded.change_mark;
END;

-- The version check this replaces (0009) has no reader left; an older
-- release mid-rollout still runs it, from the primary key.
DROP INDEX tests_version;
