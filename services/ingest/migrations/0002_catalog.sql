-- The same DDL on SQLite and PostgreSQL (both lists in lib.rs name this file).
-- The threat catalogue. Every entity row carries content_hash (of the
-- fields the importer derives) so a re-import can tell created, updated and
-- unchanged rows apart from one preload, and write only what changed.
-- Lists (tactics, platforms, aliases, technique ids) are JSON array text.

CREATE TABLE tactics (
    tactic_id      TEXT PRIMARY KEY,            -- TA0002
    stix_id        TEXT NOT NULL,
    short_name     TEXT NOT NULL UNIQUE,        -- execution
    name           TEXT NOT NULL,
    description    TEXT NOT NULL,
    ordinal        BIGINT NOT NULL,
    revoked        BIGINT NOT NULL,
    deprecated     BIGINT NOT NULL,
    content_hash   TEXT NOT NULL
);

CREATE TABLE techniques (
    technique_id     TEXT PRIMARY KEY,          -- T1059, T1059.001
    stix_id          TEXT NOT NULL,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    is_subtechnique  BIGINT NOT NULL,
    parent_id        TEXT,
    tactics          TEXT NOT NULL,             -- ["execution"]
    platforms        TEXT NOT NULL,             -- ["Windows"]
    revoked          BIGINT NOT NULL,
    deprecated       BIGINT NOT NULL,
    attack_version   TEXT NOT NULL,
    content_hash     TEXT NOT NULL
);
CREATE INDEX techniques_parent ON techniques (parent_id);

CREATE TABLE actors (
    actor_id       TEXT PRIMARY KEY,            -- G0016
    stix_id        TEXT NOT NULL,
    name           TEXT NOT NULL,
    aliases        TEXT NOT NULL,
    description    TEXT NOT NULL,
    revoked        BIGINT NOT NULL,
    deprecated     BIGINT NOT NULL,
    content_hash   TEXT NOT NULL
);

CREATE TABLE actor_techniques (
    actor_id       TEXT NOT NULL,
    technique_id   TEXT NOT NULL,
    PRIMARY KEY (actor_id, technique_id)
);
CREATE INDEX actor_techniques_technique ON actor_techniques (technique_id);

CREATE TABLE mitigations (
    mitigation_id  TEXT PRIMARY KEY,            -- M1038
    stix_id        TEXT NOT NULL,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL,
    revoked        BIGINT NOT NULL,
    deprecated     BIGINT NOT NULL,
    content_hash   TEXT NOT NULL
);

CREATE TABLE defenses (
    defense_id     TEXT PRIMARY KEY,            -- D3-PSA
    name           TEXT NOT NULL,
    tactic         TEXT NOT NULL,
    content_hash   TEXT NOT NULL
);

CREATE TABLE technique_defenses (
    technique_id   TEXT NOT NULL,
    defense_id     TEXT NOT NULL,
    PRIMARY KEY (technique_id, defense_id)
);

CREATE TABLE rules (
    rule_id        TEXT PRIMARY KEY,
    source         TEXT NOT NULL,               -- sigma, elastic
    title          TEXT NOT NULL,
    level          TEXT NOT NULL,
    status         TEXT NOT NULL,
    enabled        BIGINT NOT NULL,
    file_name      TEXT NOT NULL,
    technique_ids  TEXT NOT NULL,
    cve_ids        TEXT NOT NULL,
    content_hash   TEXT NOT NULL
);

CREATE TABLE rule_techniques (
    rule_id        TEXT NOT NULL,
    technique_id   TEXT NOT NULL,
    PRIMARY KEY (rule_id, technique_id)
);
CREATE INDEX rule_techniques_technique ON rule_techniques (technique_id);

-- CVEs named by rules (Sigma cve.* tags): how a CVE reaches techniques.
CREATE TABLE rule_cves (
    rule_id        TEXT NOT NULL,
    cve_id         TEXT NOT NULL,
    PRIMARY KEY (rule_id, cve_id)
);
CREATE INDEX rule_cves_cve ON rule_cves (cve_id);

CREATE TABLE templates (
    template_id    TEXT PRIMARY KEY,            -- atomic:<guid>, caldera:<id>, lolbas:<name>:<n>
    source         TEXT NOT NULL,
    technique_id   TEXT NOT NULL,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL,
    platforms      TEXT NOT NULL,
    executor       TEXT NOT NULL,
    command        TEXT NOT NULL,
    content_hash   TEXT NOT NULL
);
CREATE INDEX templates_technique ON templates (technique_id);

CREATE TABLE controls (
    control_id     TEXT PRIMARY KEY,            -- AC-2, AC-2(1)
    name           TEXT NOT NULL,
    family         TEXT NOT NULL,
    content_hash   TEXT NOT NULL
);

CREATE TABLE control_techniques (
    control_id     TEXT NOT NULL,
    technique_id   TEXT NOT NULL,
    PRIMARY KEY (control_id, technique_id)
);
CREATE INDEX control_techniques_technique ON control_techniques (technique_id);

CREATE TABLE cves (
    cve_id          TEXT PRIMARY KEY,
    description     TEXT NOT NULL,
    cvss_score      DOUBLE PRECISION NOT NULL,
    link            TEXT NOT NULL,
    known_exploited BIGINT NOT NULL,
    published_at    BIGINT,
    content_hash    TEXT NOT NULL
);

CREATE TABLE import_runs (
    run_id          TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,              -- succeeded, failed
    attack_version  TEXT NOT NULL,
    report          TEXT NOT NULL,              -- the ImportReport as JSON
    error           TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    finished_at     BIGINT NOT NULL
);
CREATE INDEX import_runs_started ON import_runs (started_at);
