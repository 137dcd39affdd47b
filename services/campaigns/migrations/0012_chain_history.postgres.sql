-- Which test of each retest chain was effective when: one row per
-- validated test, effective from its validation until the validation of
-- the next test in rank (docs/design.md §4: latest validated_at, then
-- created last, then the greatest id), valid_to NULL while it still is.
-- A past as_of reads the rows whose interval holds it: one indexed range
-- per technique instead of ranking every chain at read time. Each row
-- carries its test's triggered rules (`source:rule_id`, comma-separated):
-- a validated test's results no longer change, and the join to
-- detection_results was most of a past score's time.
--
-- Kept by a trigger on live validations (so an older release mid-rollout
-- keeps it too), by the history import for the chains it writes, and
-- filled here from the tests already validated.
CREATE TABLE chain_history (
    chain_id      TEXT NOT NULL,
    test_id       TEXT NOT NULL,
    technique_id  TEXT NOT NULL,
    valid_from    BIGINT NOT NULL,
    valid_to      BIGINT,
    outcome       TEXT,
    rule_keys     TEXT NOT NULL,
    PRIMARY KEY (chain_id, test_id)
);
-- The rule keys stay out of the index: a B-tree entry is limited to about
-- a third of a page, and a test may trigger many rules.
CREATE INDEX chain_history_technique ON chain_history (technique_id, valid_from) INCLUDE (valid_to, outcome);

-- The counts of a past as_of (tests, validated and cancelled by then) from
-- the index alone instead of a table lookup per test: it replaces the
-- narrower (technique_id, state), of which it is an extension.
CREATE INDEX tests_technique_counts ON tests (technique_id, state, created_at, validated_at, cancelled_at, updated_at);
DROP INDEX tests_technique;

INSERT INTO chain_history (chain_id, test_id, technique_id, valid_from, valid_to, outcome, rule_keys)
SELECT t.chain_id, t.test_id, t.technique_id, t.validated_at,
       LEAD(t.validated_at) OVER (PARTITION BY t.chain_id ORDER BY t.validated_at, t.created_at, t.test_id),
       t.outcome,
       COALESCE((SELECT string_agg(dr.source || ':' || dr.rule_id, ',') FROM detection_results dr
                 WHERE dr.test_id = t.test_id AND dr.triggered = 1), '')
FROM tests t WHERE t.state = 'validated' AND t.validated_at IS NOT NULL;

-- A validation in the live workflow: the chain's rows again (the new
-- test's, and the valid_to of the one it follows). Validated is final
-- there, so an upsert of the chain's rows is the whole refresh.
CREATE FUNCTION note_chain_validation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
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
    RETURN NULL;
END
$$;

CREATE TRIGGER tests_validated AFTER UPDATE OF state ON tests
    FOR EACH ROW WHEN (NEW.state = 'validated' AND OLD.state <> 'validated')
    EXECUTE FUNCTION note_chain_validation();
