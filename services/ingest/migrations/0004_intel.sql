-- Threat intelligence (docs/design.md §2, "Intel and KEV"): reports linked
-- to techniques and actors (ATT&CK campaigns, STIX report bundles,
-- analysts), CISA's Known Exploited Vulnerabilities and their ATT&CK
-- mapping, and which technique replaced a revoked one. Expand-only: new
-- tables beside the catalogue's.

CREATE TABLE intel_reports (
    report_key     TEXT PRIMARY KEY,            -- the URL, or the STIX id
    source         TEXT NOT NULL,               -- attack_campaign, stix_report, analyst
    campaign_id    TEXT NOT NULL,               -- C0022 for ATT&CK campaigns, else ''
    stix_id        TEXT NOT NULL,
    title          TEXT NOT NULL,
    description    TEXT NOT NULL,
    url            TEXT NOT NULL,
    published_at   BIGINT,
    first_seen     BIGINT,
    last_seen      BIGINT,
    -- last_seen, else published_at, else first_seen, else 0: what windows
    -- filter on and lists order by.
    seen_at        BIGINT NOT NULL,
    techniques     TEXT NOT NULL,               -- [{"technique_id","description"}]
    actor_ids      TEXT NOT NULL,               -- ["G0032"]
    revoked        BIGINT NOT NULL,
    deprecated     BIGINT NOT NULL,
    content_hash   TEXT NOT NULL
);
CREATE INDEX intel_reports_seen ON intel_reports (seen_at, report_key);

CREATE TABLE intel_report_techniques (
    report_key     TEXT NOT NULL,
    technique_id   TEXT NOT NULL,
    PRIMARY KEY (report_key, technique_id)
);
CREATE INDEX intel_report_techniques_technique ON intel_report_techniques (technique_id);

CREATE TABLE intel_report_actors (
    report_key     TEXT NOT NULL,
    actor_id       TEXT NOT NULL,
    PRIMARY KEY (report_key, actor_id)
);
CREATE INDEX intel_report_actors_actor ON intel_report_actors (actor_id);

CREATE TABLE kev_entries (
    cve_id              TEXT PRIMARY KEY,
    vendor_project      TEXT NOT NULL,
    product             TEXT NOT NULL,
    vulnerability_name  TEXT NOT NULL,
    date_added          BIGINT,
    due_date            BIGINT,
    ransomware          BIGINT NOT NULL,
    required_action     TEXT NOT NULL,
    short_description   TEXT NOT NULL,
    content_hash        TEXT NOT NULL
);

-- One row per (CVE, technique, mapping type) of the KEV → ATT&CK mapping.
CREATE TABLE kev_mappings (
    mapping_key    TEXT PRIMARY KEY,            -- cve|technique|type
    cve_id         TEXT NOT NULL,
    technique_id   TEXT NOT NULL,
    mapping_type   TEXT NOT NULL,               -- exploitation_technique, primary_impact, secondary_impact
    content_hash   TEXT NOT NULL
);
CREATE INDEX kev_mappings_technique ON kev_mappings (technique_id);

-- ATT&CK `revoked-by`: the technique that replaced a revoked one, so
-- mappings made against an older release follow it.
CREATE TABLE technique_replacements (
    technique_id   TEXT NOT NULL,
    replaced_by    TEXT NOT NULL,
    PRIMARY KEY (technique_id, replaced_by)
);
