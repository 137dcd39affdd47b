-- Where each test last changed, in commit order: what a replica holding
-- tests in memory (test_cache.rs) asks to learn which changed since it
-- last asked. Kept by a trigger, so every write to a test's row is noted
-- whichever statement or binary made it (an older release mid-rollout
-- included). The mark is the writing transaction's id: a reader that
-- remembers the oldest transaction still running when it last asked
-- (its snapshot's xmin) and asks for marks from there on sees every
-- change committed since, in whatever order transactions commit. One row
-- per test changed since this migration, so the table stays the size of
-- tests.
CREATE TABLE test_changes (
    test_id TEXT PRIMARY KEY,
    change_mark BIGINT NOT NULL
);
CREATE INDEX test_changes_mark ON test_changes (change_mark);

CREATE FUNCTION note_test_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_changes (test_id, change_mark)
    VALUES (NEW.test_id, CAST(CAST(pg_current_xact_id() AS TEXT) AS BIGINT))
    ON CONFLICT (test_id) DO UPDATE SET change_mark = excluded.change_mark;
    RETURN NULL;
END
$$;

CREATE TRIGGER tests_changed AFTER UPDATE ON tests
    FOR EACH ROW EXECUTE FUNCTION note_test_change();

-- The version check this replaces (0009) has no reader left; an older
-- release mid-rollout still runs it, from the primary key.
DROP INDEX tests_version;
