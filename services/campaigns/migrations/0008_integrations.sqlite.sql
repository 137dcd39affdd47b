-- The work-tracking integrations (docs/design.md §3, "Work tracking"):
-- what is to be told to Jira and Tempo, written in the transaction of the
-- change it records (a remediation opened or moved, a worklog added) and
-- only while an integration is on; delivered in order per receiver, with
-- the attempts made, when the next may run, and a permanent refusal kept
-- (the row is then also a dead letter). Expand-only.
CREATE TABLE integration_outbox (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver           TEXT NOT NULL,           -- jira, tempo
    subject_id         TEXT NOT NULL,           -- the remediation or worklog
    action             TEXT NOT NULL,           -- open, start, complete, worklog
    payload            TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    attempts           BIGINT NOT NULL,
    next_attempt_at    BIGINT NOT NULL,
    progress           TEXT NOT NULL,           -- the calls of this row already made
    last_error         TEXT NOT NULL,
    delivered_at       BIGINT,
    dead_at            BIGINT
);
CREATE INDEX integration_outbox_pending ON integration_outbox (receiver, delivered_at, dead_at, seq);

-- The Jira issue of each remediation, and its status as last read back.
CREATE TABLE jira_issues (
    remediation_id     TEXT PRIMARY KEY,
    issue_id           TEXT NOT NULL,
    issue_key          TEXT NOT NULL,
    status             TEXT NOT NULL,
    synced_at          BIGINT NOT NULL
);

-- The Tempo worklog of each Purple worklog.
CREATE TABLE tempo_worklogs (
    worklog_id         TEXT PRIMARY KEY,
    tempo_worklog_id   TEXT NOT NULL,
    delivered_at       BIGINT NOT NULL
);
