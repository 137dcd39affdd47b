-- The same DDL on SQLite and PostgreSQL (both lists in lib.rs name this file).
-- Scores for now, cached per technique and for the whole organization;
-- entries are dropped by InvalidateTechniques and expire with the TTL.
CREATE TABLE technique_cache (
    technique_id  TEXT PRIMARY KEY,
    payload       TEXT NOT NULL,
    computed_at   BIGINT NOT NULL
);

CREATE TABLE organization_cache (
    cache_key     TEXT PRIMARY KEY,
    payload       TEXT NOT NULL,
    computed_at   BIGINT NOT NULL
);

CREATE TABLE snapshots (
    snapshot_id         TEXT PRIMARY KEY,
    label               TEXT NOT NULL,
    as_of               BIGINT NOT NULL,
    organization_score  DOUBLE PRECISION NOT NULL,
    technique_count     BIGINT NOT NULL,
    status_counts       TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX snapshots_created ON snapshots (created_at);

CREATE TABLE snapshot_scores (
    snapshot_id   TEXT NOT NULL REFERENCES snapshots (snapshot_id),
    technique_id  TEXT NOT NULL,
    score         DOUBLE PRECISION NOT NULL,
    status        TEXT NOT NULL,
    payload       TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, technique_id)
);
