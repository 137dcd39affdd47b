-- Two tests of one chain validated at once (two retests of the same test)
-- each upserted the chain's history from a snapshot without the other's
-- validation, so both stayed open: two effective tests in one chain at a
-- past as_of. The trigger now takes a transaction lock on the chain first;
-- its upsert, a new statement, then reads the chain with every validation
-- committed before it (READ COMMITTED takes a snapshot per statement).
-- Keyed by a class of its own (the first argument) and the chain id's
-- hash: a collision only makes two chains wait for each other.
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
    RETURN NULL;
END
$$;
