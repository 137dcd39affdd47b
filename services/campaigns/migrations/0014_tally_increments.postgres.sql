-- Tallies kept by increments instead of recomputed per transition
-- (docs/adr/0003, amendment of 2026-12-03). A validation changes one
-- chain's effective test: the tally moves by the difference between the
-- test it replaces and the new one, and the triggered rules by a count per
-- (technique, rule) of the effective tests that triggered it, so a rule
-- leaves the tally when its last effective test is replaced. The work is
-- done by the validation trigger (0012, 0013), which every release runs:
-- an older release mid-rollout keeps the counts too, and recomputes its
-- tallies after as before.
CREATE TABLE technique_rule_counts (
    technique_id  TEXT NOT NULL,
    rule_key      TEXT NOT NULL,
    n             BIGINT NOT NULL,
    PRIMARY KEY (technique_id, rule_key)
);

-- Grouped by the key itself: two (source, rule id) pairs may join to one
-- key, and the tally lists it once.
INSERT INTO technique_rule_counts (technique_id, rule_key, n)
SELECT ce.technique_id, dr.source || ':' || dr.rule_id, COUNT(*)
FROM chain_effective ce JOIN detection_results dr ON dr.test_id = ce.test_id AND dr.triggered = 1
GROUP BY ce.technique_id, dr.source || ':' || dr.rule_id;

-- The chain's history as before; then, with the workflow still to make the
-- new test its chain's effective one (after this statement), the tally's
-- move from the chain's previous effective test to it. The chain lock
-- comes first, so the previous one read is the last committed; the tally
-- row's lock (the upsert) comes before the rule counts, and the rule list
-- is read back in a statement of its own, which sees every transaction
-- that held that lock before (READ COMMITTED, a snapshot per statement).
CREATE OR REPLACE FUNCTION note_chain_validation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1347571276, hashtext(NEW.chain_id));
    INSERT INTO chain_history (chain_id, test_id, technique_id, valid_from, valid_to, outcome, rule_keys)
    SELECT t.chain_id, t.test_id, t.technique_id, t.validated_at,
           LEAD(t.validated_at) OVER (ORDER BY t.validated_at, t.created_at, t.test_id),
           t.outcome,
           COALESCE((SELECT string_agg(dr.source || ':' || dr.rule_id, ',') FROM detection_results dr
                     WHERE dr.test_id = t.test_id AND dr.triggered = 1), '')
    FROM tests t WHERE t.chain_id = NEW.chain_id AND t.state = 'validated' AND t.validated_at IS NOT NULL
    ON CONFLICT (chain_id, test_id) DO UPDATE SET technique_id = excluded.technique_id,
        valid_from = excluded.valid_from, valid_to = excluded.valid_to, outcome = excluded.outcome,
        rule_keys = excluded.rule_keys;

    INSERT INTO technique_tallies (technique_id, total, validated, cancelled, effective, blocked, detected,
                                   logged, not_detected, latest_validated_at, triggered_rule_ids)
    SELECT NEW.technique_id, 0, 1, 0,
           CASE WHEN o.test_id IS NULL THEN 1 ELSE 0 END,
           CASE WHEN NEW.outcome = 'blocked' THEN 1 ELSE 0 END - CASE WHEN o.outcome = 'blocked' THEN 1 ELSE 0 END,
           CASE WHEN NEW.outcome = 'detected' THEN 1 ELSE 0 END - CASE WHEN o.outcome = 'detected' THEN 1 ELSE 0 END,
           CASE WHEN NEW.outcome = 'logged' THEN 1 ELSE 0 END - CASE WHEN o.outcome = 'logged' THEN 1 ELSE 0 END,
           CASE WHEN NEW.outcome = 'not_detected' THEN 1 ELSE 0 END
               - CASE WHEN o.outcome = 'not_detected' THEN 1 ELSE 0 END,
           NEW.validated_at, ''
    FROM (SELECT 1) one
    LEFT JOIN (SELECT ce.test_id, t.outcome FROM chain_effective ce JOIN tests t ON t.test_id = ce.test_id
               WHERE ce.chain_id = NEW.chain_id AND ce.test_id <> NEW.test_id) o ON true
    WHERE true
    ON CONFLICT (technique_id) DO UPDATE SET validated = technique_tallies.validated + excluded.validated,
        effective = technique_tallies.effective + excluded.effective,
        blocked = technique_tallies.blocked + excluded.blocked,
        detected = technique_tallies.detected + excluded.detected,
        logged = technique_tallies.logged + excluded.logged,
        not_detected = technique_tallies.not_detected + excluded.not_detected,
        latest_validated_at = GREATEST(technique_tallies.latest_validated_at, excluded.latest_validated_at);

    INSERT INTO technique_rule_counts (technique_id, rule_key, n)
    SELECT NEW.technique_id, dr.source || ':' || dr.rule_id,
           SUM(CASE WHEN dr.test_id = NEW.test_id THEN 1 ELSE -1 END)
    FROM detection_results dr
    WHERE dr.triggered = 1
      AND dr.test_id IN (NEW.test_id, (SELECT ce.test_id FROM chain_effective ce
                                        WHERE ce.chain_id = NEW.chain_id AND ce.test_id <> NEW.test_id))
    GROUP BY dr.source || ':' || dr.rule_id
    ON CONFLICT (technique_id, rule_key) DO UPDATE SET n = technique_rule_counts.n + excluded.n;

    UPDATE technique_tallies SET triggered_rule_ids = COALESCE(
        (SELECT string_agg(c.rule_key, ',' ORDER BY c.rule_key) FROM technique_rule_counts c
         WHERE c.technique_id = NEW.technique_id AND c.n > 0), '')
    WHERE technique_id = NEW.technique_id;
    RETURN NULL;
END
$$;
