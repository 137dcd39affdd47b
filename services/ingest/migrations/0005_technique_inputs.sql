-- Scoring's catalogue inputs per technique, kept on write (issue 13):
-- GetCatalogInputs reads a row per technique instead of grouping the
-- actors', rules' and countermeasures' joins on every cold score. Every
-- import that writes techniques, actors, D3FEND mappings or rules rebuilds
-- it in its own transaction (store/write.rs, refresh_inputs), with the
-- same select as below. Expand-only: a new table beside the catalogue's.

CREATE TABLE technique_inputs (
    technique_id          TEXT PRIMARY KEY,
    revoked               BIGINT NOT NULL,
    deprecated            BIGINT NOT NULL,
    -- Distinct D3FEND techniques of it or its parent.
    countermeasure_count  BIGINT NOT NULL,
    -- Live actors that use it.
    actor_count           BIGINT NOT NULL,
    -- Enabled rules mapped to it, rule keys sorted and comma-separated.
    enabled_rule_keys     TEXT NOT NULL
);

INSERT INTO technique_inputs (technique_id, revoked, deprecated, countermeasure_count, actor_count,
                              enabled_rule_keys)
SELECT t.technique_id, t.revoked, t.deprecated,
       COALESCE(d.n, 0), COALESCE(u.n, 0), COALESCE(x.ids, '')
FROM techniques t
LEFT JOIN (
    SELECT y.technique_id, COUNT(DISTINCT y.defense_id) AS n FROM (
        SELECT r.technique_id, td.defense_id FROM techniques r
        JOIN technique_defenses td ON td.technique_id = r.technique_id
        UNION ALL
        SELECT r.technique_id, td.defense_id FROM techniques r
        JOIN technique_defenses td ON td.technique_id = r.parent_id
    ) y GROUP BY y.technique_id
) d ON d.technique_id = t.technique_id
LEFT JOIN (
    SELECT at.technique_id, COUNT(*) AS n FROM actor_techniques at
    JOIN actors a ON a.actor_id = at.actor_id AND a.revoked = 0 AND a.deprecated = 0
    GROUP BY at.technique_id
) u ON u.technique_id = t.technique_id
LEFT JOIN (
    SELECT rt.technique_id, string_agg(ru.rule_key, ',' ORDER BY ru.rule_key) AS ids
    FROM rule_techniques rt JOIN rules ru ON ru.rule_key = rt.rule_key AND ru.enabled = 1
    GROUP BY rt.technique_id
) x ON x.technique_id = t.technique_id;
