-- The test side of every technique's score as of now, kept up to date in
-- the transaction of every change to its tests (the same DDL on SQLite and
-- PostgreSQL). Read-time ranking is left to requests with a past as_of.
CREATE TABLE technique_tallies (
    technique_id         TEXT PRIMARY KEY,
    total                BIGINT NOT NULL,
    validated            BIGINT NOT NULL,
    cancelled            BIGINT NOT NULL,
    effective            BIGINT NOT NULL,
    blocked              BIGINT NOT NULL,
    detected             BIGINT NOT NULL,
    logged               BIGINT NOT NULL,
    not_detected         BIGINT NOT NULL,
    latest_validated_at  BIGINT,
    triggered_rule_ids   TEXT NOT NULL
);
