-- The same DDL on SQLite and PostgreSQL (both lists in lib.rs name this file).
-- What a by-id read checks first (store/workflow.rs TEST_VERSIONS, the
-- replica's held tests in test_cache.rs): each test's current version,
-- answered from this index without reading the table's rows.
CREATE INDEX tests_version ON tests (test_id, version);
