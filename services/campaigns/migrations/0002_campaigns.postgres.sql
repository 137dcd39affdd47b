-- Tests, their workflow and everything around them. Instants are BIGINT
-- microseconds; enums are lower-case text.

CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    display_name  TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX users_role ON users (role, display_name);

CREATE TABLE campaigns (
    campaign_id        TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    description        TEXT NOT NULL,
    threat_actor_id    TEXT NOT NULL,
    cloned_from        TEXT NOT NULL,
    created_by         TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    interval_seconds   BIGINT,
    cron               TEXT,
    next_run_at        BIGINT
);
CREATE INDEX campaigns_created ON campaigns (created_at);
CREATE INDEX campaigns_due ON campaigns (next_run_at);

-- chain_id is the retest chain's root (a root's own id); created_at orders
-- tests within a batch too (each gets its own microsecond).
CREATE TABLE tests (
    test_id           TEXT PRIMARY KEY,
    technique_id      TEXT NOT NULL,
    template_id       TEXT NOT NULL,
    campaign_id       TEXT REFERENCES campaigns (campaign_id),
    title             TEXT NOT NULL,
    state             TEXT NOT NULL,
    outcome           TEXT,
    retest_of         TEXT,
    chain_id          TEXT NOT NULL,
    version           BIGINT NOT NULL,
    red_assignee_id   TEXT NOT NULL,
    blue_assignee_id  TEXT NOT NULL,
    executed_at       BIGINT,
    detected_at       BIGINT,
    validated_at      BIGINT,
    red_notes         TEXT NOT NULL,
    blue_notes        TEXT NOT NULL,
    rejection_reason  TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX tests_technique ON tests (technique_id, state);
CREATE INDEX tests_chain ON tests (chain_id, validated_at);
CREATE INDEX tests_campaign ON tests (campaign_id);
CREATE INDEX tests_created ON tests (created_at);

-- The effective test of every chain that has one, as of now: maintained in
-- the transaction that validates a test, so scoring "now" needs no ranking.
CREATE TABLE chain_effective (
    chain_id      TEXT PRIMARY KEY,
    technique_id  TEXT NOT NULL,
    test_id       TEXT NOT NULL,
    validated_at  BIGINT NOT NULL
);
CREATE INDEX chain_effective_technique ON chain_effective (technique_id);
CREATE INDEX chain_effective_validated ON chain_effective (validated_at);

CREATE TABLE detection_results (
    test_id       TEXT NOT NULL REFERENCES tests (test_id),
    rule_id       TEXT NOT NULL,
    triggered     BIGINT NOT NULL,
    triggered_at  BIGINT,
    notes         TEXT NOT NULL,
    recorded_at   BIGINT NOT NULL,
    PRIMARY KEY (test_id, rule_id)
);

CREATE TABLE remediations (
    remediation_id  TEXT PRIMARY KEY,
    test_id         TEXT NOT NULL REFERENCES tests (test_id),
    technique_id    TEXT NOT NULL,
    state           TEXT NOT NULL,
    version         BIGINT NOT NULL,
    assignee_id     TEXT NOT NULL,
    notes           TEXT NOT NULL,
    opened_at       BIGINT NOT NULL,
    completed_at    BIGINT
);
CREATE INDEX remediations_test ON remediations (test_id);
CREATE INDEX remediations_state ON remediations (state, opened_at);

CREATE TABLE notifications (
    notification_id  TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    kind             TEXT NOT NULL,
    message          TEXT NOT NULL,
    campaign_id      TEXT NOT NULL,
    is_read          BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX notifications_user ON notifications (user_id, created_at);

CREATE TABLE worklogs (
    worklog_id  TEXT PRIMARY KEY,
    test_id     TEXT NOT NULL REFERENCES tests (test_id),
    user_id     TEXT NOT NULL,
    minutes     BIGINT NOT NULL,
    note        TEXT NOT NULL,
    logged_at   BIGINT NOT NULL
);
CREATE INDEX worklogs_test ON worklogs (test_id, logged_at);
CREATE INDEX worklogs_user ON worklogs (user_id, logged_at);

-- The transactional outbox: every accepted transition's event, written in
-- the transition's transaction; the relay delivers in seq order and marks
-- each receiver's delivery.
CREATE TABLE outbox (
    seq                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id              TEXT NOT NULL UNIQUE,
    technique_id          TEXT NOT NULL,
    payload               TEXT NOT NULL,
    created_at            BIGINT NOT NULL,
    metrics_delivered_at  BIGINT,
    scoring_delivered_at  BIGINT
);
CREATE INDEX outbox_metrics_pending ON outbox (metrics_delivered_at, seq);
CREATE INDEX outbox_scoring_pending ON outbox (scoring_delivered_at, seq);
