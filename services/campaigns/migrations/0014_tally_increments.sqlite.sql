-- Tallies kept by increments instead of recomputed per transition
-- (docs/adr/0003, amendment of 2026-12-03); see the PostgreSQL file. Here
-- a trigger of its own beside the chain history's (0012): SQLite
-- serialises writers, so no lock comes first.
CREATE TABLE technique_rule_counts (
    technique_id  TEXT NOT NULL,
    rule_key      TEXT NOT NULL,
    n             BIGINT NOT NULL,
    PRIMARY KEY (technique_id, rule_key)
);

INSERT INTO technique_rule_counts (technique_id, rule_key, n)
SELECT ce.technique_id, dr.source || ':' || dr.rule_id, COUNT(*)
FROM chain_effective ce JOIN detection_results dr ON dr.test_id = ce.test_id AND dr.triggered = 1
GROUP BY ce.technique_id, dr.source || ':' || dr.rule_id;

CREATE TRIGGER tests_validated_tally AFTER UPDATE OF state ON tests
WHEN new.state = 'validated' AND old.state <> 'validated'
BEGIN
    INSERT INTO technique_tallies (technique_id, total, validated, cancelled, effective, blocked, detected,
                                   logged, not_detected, latest_validated_at, triggered_rule_ids)
    SELECT new.technique_id, 0, 1, 0,
           CASE WHEN o.test_id IS NULL THEN 1 ELSE 0 END,
           CASE WHEN new.outcome = 'blocked' THEN 1 ELSE 0 END - CASE WHEN o.outcome = 'blocked' THEN 1 ELSE 0 END,
           CASE WHEN new.outcome = 'detected' THEN 1 ELSE 0 END - CASE WHEN o.outcome = 'detected' THEN 1 ELSE 0 END,
           CASE WHEN new.outcome = 'logged' THEN 1 ELSE 0 END - CASE WHEN o.outcome = 'logged' THEN 1 ELSE 0 END,
           CASE WHEN new.outcome = 'not_detected' THEN 1 ELSE 0 END
               - CASE WHEN o.outcome = 'not_detected' THEN 1 ELSE 0 END,
           new.validated_at, ''
    FROM (SELECT 1) one
    LEFT JOIN (SELECT ce.test_id, t.outcome FROM chain_effective ce JOIN tests t ON t.test_id = ce.test_id
               WHERE ce.chain_id = new.chain_id AND ce.test_id <> new.test_id) o ON true
    WHERE true
    ON CONFLICT (technique_id) DO UPDATE SET validated = technique_tallies.validated + excluded.validated,
        effective = technique_tallies.effective + excluded.effective,
        blocked = technique_tallies.blocked + excluded.blocked,
        detected = technique_tallies.detected + excluded.detected,
        logged = technique_tallies.logged + excluded.logged,
        not_detected = technique_tallies.not_detected + excluded.not_detected,
        latest_validated_at = CASE
            WHEN technique_tallies.latest_validated_at IS NULL
              OR technique_tallies.latest_validated_at < excluded.latest_validated_at
            THEN excluded.latest_validated_at ELSE technique_tallies.latest_validated_at END;

    INSERT INTO technique_rule_counts (technique_id, rule_key, n)
    SELECT new.technique_id, dr.source || ':' || dr.rule_id,
           SUM(CASE WHEN dr.test_id = new.test_id THEN 1 ELSE -1 END)
    FROM detection_results dr
    WHERE dr.triggered = 1
      AND dr.test_id IN (new.test_id, (SELECT ce.test_id FROM chain_effective ce
                                        WHERE ce.chain_id = new.chain_id AND ce.test_id <> new.test_id))
    GROUP BY dr.source || ':' || dr.rule_id
    ON CONFLICT (technique_id, rule_key) DO UPDATE SET n = technique_rule_counts.n + excluded.n;

    UPDATE technique_tallies SET triggered_rule_ids = COALESCE(
        (SELECT string_agg(c.rule_key, ',' ORDER BY c.rule_key) FROM technique_rule_counts c
         WHERE c.technique_id = new.technique_id AND c.n > 0), '')
    WHERE technique_id = new.technique_id;
END;
