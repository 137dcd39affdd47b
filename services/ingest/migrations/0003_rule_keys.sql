-- Detection rules are identified by (source, rule id): upstream ids are
-- unique within a source only (three real UUIDs are both a Sigma and an
-- Elastic rule). `rule_key` = source || ':' || rule_id keys the rule and
-- its mappings. A rebuild, before the first release: it changes the
-- conflict key of rule writes, so it is not expand-only (docs/adr/0007).
CREATE TABLE rules_keyed (
    rule_key       TEXT PRIMARY KEY,
    rule_id        TEXT NOT NULL,
    source         TEXT NOT NULL,
    title          TEXT NOT NULL,
    level          TEXT NOT NULL,
    status         TEXT NOT NULL,
    enabled        BIGINT NOT NULL,
    file_name      TEXT NOT NULL,
    technique_ids  TEXT NOT NULL,
    cve_ids        TEXT NOT NULL,
    content_hash   TEXT NOT NULL
);
INSERT INTO rules_keyed (rule_key, rule_id, source, title, level, status, enabled, file_name,
                         technique_ids, cve_ids, content_hash)
SELECT source || ':' || rule_id, rule_id, source, title, level, status, enabled, file_name,
       technique_ids, cve_ids, content_hash
FROM rules;

CREATE TABLE rule_techniques_keyed (
    rule_key       TEXT NOT NULL,
    technique_id   TEXT NOT NULL,
    PRIMARY KEY (rule_key, technique_id)
);
INSERT INTO rule_techniques_keyed (rule_key, technique_id)
SELECT r.source || ':' || r.rule_id, rt.technique_id
FROM rule_techniques rt JOIN rules r ON r.rule_id = rt.rule_id;

CREATE TABLE rule_cves_keyed (
    rule_key       TEXT NOT NULL,
    cve_id         TEXT NOT NULL,
    PRIMARY KEY (rule_key, cve_id)
);
INSERT INTO rule_cves_keyed (rule_key, cve_id)
SELECT r.source || ':' || r.rule_id, rc.cve_id
FROM rule_cves rc JOIN rules r ON r.rule_id = rc.rule_id;

DROP TABLE rule_cves;
DROP TABLE rule_techniques;
DROP TABLE rules;
ALTER TABLE rules_keyed RENAME TO rules;
ALTER TABLE rule_techniques_keyed RENAME TO rule_techniques;
ALTER TABLE rule_cves_keyed RENAME TO rule_cves;
CREATE INDEX rules_by_id ON rules (rule_id);
CREATE INDEX rules_listing ON rules (source, rule_id);
CREATE INDEX rule_techniques_technique ON rule_techniques (technique_id);
CREATE INDEX rule_cves_cve ON rule_cves (cve_id);
