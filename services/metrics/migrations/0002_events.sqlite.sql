-- The append-only event log: the audit trail of every workflow state change
-- and the only input of the operational metrics.
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT    NOT NULL UNIQUE,
    kind           TEXT    NOT NULL,
    occurred_at    BIGINT  NOT NULL,
    recorded_at    BIGINT  NOT NULL,
    test_id        TEXT,
    technique_id   TEXT,
    campaign_id    TEXT,
    remediation_id TEXT,
    outcome        TEXT,
    side           TEXT,
    actor_id       TEXT,
    attributes     TEXT    NOT NULL DEFAULT '{}'
);

-- Metrics scan one kind over a window; per-test lookups join by test.
CREATE INDEX events_kind_time ON events (kind, occurred_at);
CREATE INDEX events_test ON events (test_id, kind, occurred_at);
CREATE INDEX events_remediation ON events (remediation_id, kind, occurred_at);
CREATE INDEX events_technique ON events (technique_id, occurred_at);
CREATE INDEX events_campaign ON events (campaign_id, occurred_at);
CREATE INDEX events_time ON events (occurred_at, seq);

-- Append-only: the audit trail cannot be edited or erased.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
