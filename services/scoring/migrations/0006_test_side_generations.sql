-- The same DDL on SQLite and PostgreSQL (both lists in lib.rs name this file).
-- Replicas also hold each technique's test side (campaigns' tallies: counts,
-- outcomes, triggered rules) in memory, which only a change to its tests
-- can make stale: an import of the catalogue invalidates every technique
-- but leaves the test sides as they are. Per technique: the latest
-- generation whose invalidation changed its tests, and the latest that
-- did not (an invalidation by ingest). A stamp from a binary older than
-- this migration sets neither, so a replica takes it as a test change:
-- `tests_kept_generation <> generation`.
ALTER TABLE technique_generations ADD COLUMN tests_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE technique_generations ADD COLUMN tests_kept_generation BIGINT NOT NULL DEFAULT 0;
