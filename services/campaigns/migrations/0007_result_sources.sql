-- Detection results name the rule's source too: upstream rule ids are
-- unique within a source only. An empty source (every result recorded
-- before this migration, and any that names none) matches the id in any
-- source. A rebuild before the first release: the primary key changes,
-- so this one is not expand-only (docs/adr/0007).
CREATE TABLE detection_results_keyed (
    test_id       TEXT NOT NULL REFERENCES tests (test_id),
    source        TEXT NOT NULL,
    rule_id       TEXT NOT NULL,
    triggered     BIGINT NOT NULL,
    triggered_at  BIGINT,
    notes         TEXT NOT NULL,
    recorded_at   BIGINT NOT NULL,
    PRIMARY KEY (test_id, source, rule_id)
);
INSERT INTO detection_results_keyed (test_id, source, rule_id, triggered, triggered_at, notes, recorded_at)
SELECT test_id, '', rule_id, triggered, triggered_at, notes, recorded_at FROM detection_results;
DROP TABLE detection_results;
ALTER TABLE detection_results_keyed RENAME TO detection_results;
