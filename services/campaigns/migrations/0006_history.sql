-- Every instant of a test's life, so its history can be exported and
-- imported with the scores and metrics it implies (docs/formats/history.md).
-- Expand-only: older binaries ignore the new columns and table.
ALTER TABLE tests ADD COLUMN red_started_at BIGINT;
ALTER TABLE tests ADD COLUMN blue_started_at BIGINT;
ALTER TABLE tests ADD COLUMN blue_completed_at BIGINT;
ALTER TABLE tests ADD COLUMN cancelled_at BIGINT;
-- Before this migration a cancelled test's last change was its
-- cancellation, and a test in blue_complete was last changed by blue.
UPDATE tests SET cancelled_at = updated_at WHERE state = 'cancelled';
UPDATE tests SET blue_completed_at = updated_at WHERE state = 'blue_complete';
ALTER TABLE remediations ADD COLUMN started_at BIGINT;

-- Each rejection of a test: which side, when, why, by whom, and the
-- instants of the submission it voided (the execution for red; blue's
-- completion and its outcome for both sides), which the audit trail keeps.
CREATE TABLE test_rejections (
    test_id              TEXT NOT NULL REFERENCES tests (test_id),
    side                 TEXT NOT NULL,
    rejected_at          BIGINT NOT NULL,
    reason               TEXT NOT NULL,
    actor_id             TEXT NOT NULL,
    voided_executed_at   BIGINT,
    voided_completed_at  BIGINT,
    voided_outcome       TEXT,
    PRIMARY KEY (test_id, rejected_at, side)
);
