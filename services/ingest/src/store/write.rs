//! Writing an import: for each table the import touches, one statement
//! preloads what exists and at most one multi-row statement writes what
//! changed, all in the caller's transaction. Unchanged rows are not
//! written, so re-importing the same data writes nothing. The number of
//! statements depends on the kind of import, never on its size.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use purple_runtime::{Database, WriteTx, time::Micros};
use serde::Serialize;
use sqlx::{Any, Row};

use crate::domain::{Counts, Entity, Hashed, IntelDraft, Kind, Parsed, Skipped};

/// The preload and upsert of one entity table.
struct EntitySql {
    name: &'static str,
    preload: &'static str,
    upsert: &'static str,
}

/// The preload, insert and delete of one pair table.
struct PairSql {
    preload: &'static str,
    insert: &'static str,
    delete: &'static str,
}

macro_rules! entity_sql {
    ($name:literal, $table:literal, $key:literal, flags: $flags:literal, [$($col:literal as $cast:literal),*]) => {
        EntitySql {
            name: $name,
            preload: concat!("SELECT ", $key, ", content_hash, ", $flags, " FROM ", $table),
            upsert: concat!(
                "INSERT INTO ", $table, " (", $key, $(", ", $col,)* ") ",
                "SELECT json_extract(value, '$.", $key, "')",
                $(", CAST(json_extract(value, '$.", $col, "') AS ", $cast, ")",)*
                " FROM json_each($1) WHERE true ON CONFLICT (", $key, ") DO UPDATE SET ",
                $key, " = excluded.", $key, $(", ", $col, " = excluded.", $col,)*
            ),
        }
    };
}

macro_rules! pair_sql {
    ($table:literal, $a:literal, $b:literal) => {
        PairSql {
            preload: concat!("SELECT ", $a, ", ", $b, " FROM ", $table),
            insert: concat!(
                "INSERT INTO ",
                $table,
                " (",
                $a,
                ", ",
                $b,
                ") ",
                "SELECT json_extract(value, '$.a'), json_extract(value, '$.b') FROM json_each($1) ",
                "WHERE true ON CONFLICT DO NOTHING"
            ),
            delete: concat!(
                "DELETE FROM ",
                $table,
                " WHERE ",
                $a,
                " || '|' || ",
                $b,
                " IN (SELECT value FROM json_each($1))"
            ),
        }
    };
}

const TACTICS: EntitySql = entity_sql!("tactic", "tactics", "tactic_id", flags: "revoked, deprecated", [
    "stix_id" as "TEXT", "short_name" as "TEXT", "name" as "TEXT", "description" as "TEXT",
    "ordinal" as "BIGINT", "revoked" as "BIGINT", "deprecated" as "BIGINT", "content_hash" as "TEXT"]);
const TECHNIQUES: EntitySql = entity_sql!("technique", "techniques", "technique_id", flags: "revoked, deprecated", [
    "stix_id" as "TEXT", "name" as "TEXT", "description" as "TEXT", "is_subtechnique" as "BIGINT",
    "parent_id" as "TEXT", "tactics" as "TEXT", "platforms" as "TEXT", "revoked" as "BIGINT",
    "deprecated" as "BIGINT", "attack_version" as "TEXT", "content_hash" as "TEXT"]);
const ACTORS: EntitySql = entity_sql!("actor", "actors", "actor_id", flags: "revoked, deprecated", [
    "stix_id" as "TEXT", "name" as "TEXT", "aliases" as "TEXT", "description" as "TEXT",
    "revoked" as "BIGINT", "deprecated" as "BIGINT", "content_hash" as "TEXT"]);
const MITIGATIONS: EntitySql = entity_sql!("mitigation", "mitigations", "mitigation_id", flags: "revoked, deprecated", [
    "stix_id" as "TEXT", "name" as "TEXT", "description" as "TEXT",
    "revoked" as "BIGINT", "deprecated" as "BIGINT", "content_hash" as "TEXT"]);
const DEFENSES: EntitySql = entity_sql!("defense", "defenses", "defense_id", flags: "0 AS revoked, 0 AS deprecated", [
    "name" as "TEXT", "tactic" as "TEXT", "content_hash" as "TEXT"]);
const RULES: EntitySql = entity_sql!("rule", "rules", "rule_key", flags: "0 AS revoked, 0 AS deprecated", [
    "rule_id" as "TEXT", "source" as "TEXT", "title" as "TEXT", "level" as "TEXT", "status" as "TEXT", "enabled" as "BIGINT",
    "file_name" as "TEXT", "technique_ids" as "TEXT", "cve_ids" as "TEXT", "content_hash" as "TEXT"]);
const TEMPLATES: EntitySql = entity_sql!("template", "templates", "template_id", flags: "0 AS revoked, 0 AS deprecated", [
    "source" as "TEXT", "technique_id" as "TEXT", "name" as "TEXT", "description" as "TEXT",
    "platforms" as "TEXT", "executor" as "TEXT", "command" as "TEXT", "content_hash" as "TEXT"]);
const CONTROLS: EntitySql = entity_sql!("control", "controls", "control_id", flags: "0 AS revoked, 0 AS deprecated", [
    "name" as "TEXT", "family" as "TEXT", "content_hash" as "TEXT"]);
const CVES: EntitySql = entity_sql!("cve", "cves", "cve_id", flags: "0 AS revoked, 0 AS deprecated", [
    "description" as "TEXT", "cvss_score" as "DOUBLE PRECISION", "link" as "TEXT",
    "known_exploited" as "BIGINT", "published_at" as "BIGINT", "content_hash" as "TEXT"]);

const INTEL_REPORTS: EntitySql = entity_sql!("intel_report", "intel_reports", "report_key", flags: "revoked, deprecated", [
    "source" as "TEXT", "campaign_id" as "TEXT", "stix_id" as "TEXT", "title" as "TEXT", "description" as "TEXT",
    "url" as "TEXT", "published_at" as "BIGINT", "first_seen" as "BIGINT", "last_seen" as "BIGINT",
    "seen_at" as "BIGINT", "techniques" as "TEXT", "actor_ids" as "TEXT", "revoked" as "BIGINT",
    "deprecated" as "BIGINT", "content_hash" as "TEXT"]);
const KEV_ENTRIES: EntitySql = entity_sql!("kev_entry", "kev_entries", "cve_id", flags: "0 AS revoked, 0 AS deprecated", [
    "vendor_project" as "TEXT", "product" as "TEXT", "vulnerability_name" as "TEXT", "date_added" as "BIGINT",
    "due_date" as "BIGINT", "ransomware" as "BIGINT", "required_action" as "TEXT",
    "short_description" as "TEXT", "content_hash" as "TEXT"]);
const KEV_MAPPINGS: EntitySql = entity_sql!("kev_mapping", "kev_mappings", "mapping_key", flags: "0 AS revoked, 0 AS deprecated", [
    "cve_id" as "TEXT", "technique_id" as "TEXT", "mapping_type" as "TEXT", "content_hash" as "TEXT"]);
/// Every mapping the upload's mapping file no longer has.
const DELETE_STALE_KEV_MAPPINGS: &str =
    "DELETE FROM kev_mappings WHERE mapping_key NOT IN (SELECT value FROM json_each($1))";

const ACTOR_TECHNIQUES: PairSql = pair_sql!("actor_techniques", "actor_id", "technique_id");
const TECHNIQUE_DEFENSES: PairSql = pair_sql!("technique_defenses", "technique_id", "defense_id");
const RULE_TECHNIQUES: PairSql = pair_sql!("rule_techniques", "rule_key", "technique_id");
const RULE_CVES: PairSql = pair_sql!("rule_cves", "rule_key", "cve_id");
const CONTROL_TECHNIQUES: PairSql = pair_sql!("control_techniques", "control_id", "technique_id");
const INTEL_TECHNIQUES: PairSql =
    pair_sql!("intel_report_techniques", "report_key", "technique_id");
const INTEL_ACTORS: PairSql = pair_sql!("intel_report_actors", "report_key", "actor_id");
const REPLACEMENTS: PairSql = pair_sql!("technique_replacements", "technique_id", "replaced_by");

const KNOWN_TECHNIQUES: &str = "SELECT technique_id, revoked, deprecated FROM techniques";
/// What a STIX id outside an uploaded file may name: a technique or an actor.
const STIX_IDS: &str = "
    SELECT stix_id, technique_id, 't' FROM techniques
    UNION ALL SELECT stix_id, actor_id, 'a' FROM actors";
const ALL_REPLACEMENTS: &str = "SELECT technique_id, replaced_by FROM technique_replacements";

/// Scoring's catalogue inputs, rebuilt for every technique (migration
/// 0005, whose fill is the same select): by an import that wrote
/// techniques, actors, D3FEND mappings or rules, in its transaction. All of
/// them, not the changed ones: ~20 ms of an import, and no path can leave a
/// technique's row behind its catalogue.
const CLEAR_INPUTS: &str = "DELETE FROM technique_inputs";
const FILL_INPUTS: &str = "
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
    ) x ON x.technique_id = t.technique_id";

const INSERT_RUN: &str = "
    INSERT INTO import_runs (run_id, kind, status, attack_version, report, error, started_at, finished_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// What an import changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Per entity type.
    pub counts: BTreeMap<String, Counts>,
    /// References to unknown, revoked or deprecated techniques (kept).
    pub unresolved: Vec<Skipped>,
    /// Of those, where a technique the catalogue does not know is named.
    pub unknown: Vec<String>,
    /// Techniques whose score inputs changed.
    pub invalidated: BTreeSet<String>,
}

/// A run record.
pub struct RunRecord<'a> {
    pub run_id: &'a str,
    pub kind: &'a str,
    pub succeeded: bool,
    pub attack_version: &'a str,
    pub report_json: String,
    pub error: &'a str,
    pub started_at: Micros,
    pub finished_at: Micros,
}

/// Writes a run record (in the import's transaction on success, alone on
/// failure).
pub async fn record_run<'c, E>(
    db: &Database,
    executor: E,
    run: RunRecord<'_>,
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    db.stmt(INSERT_RUN)
        .bind(run.run_id.to_owned())
        .bind(run.kind.to_owned())
        .bind(if run.succeeded { "succeeded" } else { "failed" })
        .bind(run.attack_version.to_owned())
        .bind(run.report_json)
        .bind(run.error.to_owned())
        .bind(run.started_at)
        .bind(run.finished_at)
        .execute(executor)
        .await?;
    Ok(())
}

/// Syncs what `parsed` holds for an import of `kind`.
pub async fn apply(
    db: &Database,
    tx: &mut WriteTx,
    kind: Kind,
    parsed: &Parsed,
) -> Result<Changes, sqlx::Error> {
    let mut changes = Changes::default();
    let mut w = Writer {
        db,
        tx,
        changes: &mut changes,
    };
    match kind {
        Kind::Attack => w.attack(parsed).await?,
        Kind::D3fend => w.d3fend(parsed).await?,
        Kind::Sigma | Kind::Elastic => w.rules(parsed).await?,
        Kind::Atomic | Kind::Caldera | Kind::Lolbas => w.templates(parsed).await?,
        Kind::Nist => w.controls(parsed).await?,
        Kind::Cve => {
            w.entities(&CVES, &parsed.cves).await?;
        }
        Kind::StixReports => w.intel(&parsed.intel).await?,
        Kind::Kev => w.kev(parsed).await?,
    }
    if matches!(
        kind,
        Kind::Attack | Kind::D3fend | Kind::Sigma | Kind::Elastic
    ) {
        w.refresh_inputs().await?;
    }
    Ok(changes)
}

/// Writes intel reports outside an import (analysts' reports, through the
/// API): the same statements as an import of reports.
pub async fn intel_reports(
    db: &Database,
    tx: &mut WriteTx,
    drafts: &[IntelDraft],
) -> Result<Changes, sqlx::Error> {
    let mut changes = Changes::default();
    let mut w = Writer {
        db,
        tx,
        changes: &mut changes,
    };
    w.intel(drafts).await?;
    Ok(changes)
}

impl Writer<'_, '_> {
    /// Scoring's catalogue inputs, every technique's again.
    async fn refresh_inputs(&mut self) -> Result<(), sqlx::Error> {
        for sql in [CLEAR_INPUTS, FILL_INPUTS] {
            self.db.stmt(sql).execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Tactics, techniques, actors, mitigations and the actors' uses.
    async fn attack(&mut self, parsed: &Parsed) -> Result<(), sqlx::Error> {
        self.entities(&TACTICS, &parsed.tactics).await?;
        let changed = self.entities(&TECHNIQUES, &parsed.techniques).await?;
        self.changes.invalidated.extend(changed);
        self.entities(&ACTORS, &parsed.actors).await?;
        self.entities(&MITIGATIONS, &parsed.mitigations).await?;
        let scope = keys(&parsed.actors);
        let (added, removed) = self
            .pairs(
                &ACTOR_TECHNIQUES,
                "actor_technique",
                &scope,
                &parsed.actor_techniques,
            )
            .await?;
        self.changes
            .invalidated
            .extend(added.into_iter().chain(removed).map(|(_, t)| t));
        let scope = keys(&parsed.techniques);
        self.pairs(
            &REPLACEMENTS,
            "technique_replacement",
            &scope,
            &parsed.technique_replacements,
        )
        .await?;
        self.intel(&parsed.intel).await?;
        Ok(())
    }

    /// Intel reports: references by STIX id resolved against the
    /// catalogue, techniques revoked since the report followed to their
    /// replacement, then the reports and their technique and actor links.
    async fn intel(&mut self, drafts: &[IntelDraft]) -> Result<(), sqlx::Error> {
        let known = self.known_techniques().await?;
        let replacements = self.replacements().await?;
        let stix = if drafts.iter().any(|d| !d.stix_refs.is_empty()) {
            self.stix_ids().await?
        } else {
            HashMap::new()
        };
        let mut rows = Vec::with_capacity(drafts.len());
        let (mut techniques, mut actors) = (BTreeSet::new(), BTreeSet::new());
        for draft in drafts {
            let mut draft = draft.clone();
            let key = draft.row.report_key.clone();
            for (stix_id, description) in std::mem::take(&mut draft.stix_refs) {
                match stix.get(&stix_id) {
                    Some((id, true)) => {
                        let entry = draft.techniques.entry(id.clone()).or_default();
                        if entry.is_empty() {
                            *entry = description;
                        }
                    }
                    Some((id, false)) => {
                        draft.actors.insert(id.clone());
                    }
                    None => self.changes.unresolved.push(Skipped {
                        file_name: String::new(),
                        location: format!("report {key}"),
                        reason: format!("unresolved: {stix_id} is not in the catalogue"),
                    }),
                }
            }
            draft.techniques = std::mem::take(&mut draft.techniques)
                .into_iter()
                .map(|(t, d)| (follow(&replacements, &t), d))
                .collect();
            self.unresolved(
                &known,
                draft
                    .techniques
                    .keys()
                    .map(|t| (format!("report {key}"), t)),
            );
            techniques.extend(draft.techniques.keys().map(|t| (key.clone(), t.clone())));
            actors.extend(draft.actors.iter().map(|a| (key.clone(), a.clone())));
            rows.push(crate::parse::intel::finish(draft));
        }
        self.entities(&INTEL_REPORTS, &rows).await?;
        let scope = keys(&rows);
        self.pairs(&INTEL_TECHNIQUES, "intel_technique", &scope, &techniques)
            .await?;
        self.pairs(&INTEL_ACTORS, "intel_actor", &scope, &actors)
            .await?;
        Ok(())
    }

    /// KEV entries and mappings; a mapping to a technique revoked since the
    /// mapping's ATT&CK release follows its replacement, one to a technique
    /// the catalogue does not have is kept and reported unresolved. An
    /// upload with a mapping file makes the stored mappings exactly its own.
    async fn kev(&mut self, parsed: &Parsed) -> Result<(), sqlx::Error> {
        if !parsed.kev.is_empty() {
            self.entities(&KEV_ENTRIES, &parsed.kev).await?;
        }
        if !parsed.kev_mapped {
            return Ok(());
        }
        let known = self.known_techniques().await?;
        let replacements = self.replacements().await?;
        let mut seen = HashSet::new();
        let mut rows = Vec::with_capacity(parsed.kev_mappings.len());
        for row in &parsed.kev_mappings {
            let technique = follow(&replacements, &row.technique_id);
            let key = format!("{}|{technique}|{}", row.cve_id, row.mapping_type);
            if !seen.insert(key.clone()) {
                continue;
            }
            rows.push(
                crate::domain::KevMappingRow {
                    mapping_key: key,
                    technique_id: technique,
                    content_hash: String::new(),
                    ..row.clone()
                }
                .hashed(),
            );
        }
        self.unresolved(
            &known,
            rows.iter()
                .map(|r| (format!("CVE {}", r.cve_id), &r.technique_id)),
        );
        self.entities(&KEV_MAPPINGS, &rows).await?;
        let keep: Vec<&str> = rows.iter().map(|r| r.mapping_key.as_str()).collect();
        let removed = self
            .db
            .stmt(DELETE_STALE_KEV_MAPPINGS)
            .bind_ids(&keep)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        if let Some(counts) = self.changes.counts.get_mut(KEV_MAPPINGS.name) {
            counts.removed = removed;
        }
        Ok(())
    }

    /// Defensive techniques and the technique → defense pairs.
    async fn d3fend(&mut self, parsed: &Parsed) -> Result<(), sqlx::Error> {
        let known = self.known_techniques().await?;
        self.entities(&DEFENSES, &parsed.defenses).await?;
        let scope: BTreeSet<String> = parsed
            .technique_defenses
            .iter()
            .map(|(t, _)| t.clone())
            .collect();
        self.unresolved(
            &known,
            parsed
                .technique_defenses
                .iter()
                .map(|(t, d)| (format!("defense {d}"), t)),
        );
        let (added, removed) = self
            .pairs(
                &TECHNIQUE_DEFENSES,
                "technique_defense",
                &scope,
                &parsed.technique_defenses,
            )
            .await?;
        self.changes
            .invalidated
            .extend(added.into_iter().chain(removed).map(|(t, _)| t));
        Ok(())
    }

    /// Detection rules with their technique and CVE mappings.
    async fn rules(&mut self, parsed: &Parsed) -> Result<(), sqlx::Error> {
        let known = self.known_techniques().await?;
        let changed: HashSet<String> = self
            .entities(&RULES, &parsed.rules)
            .await?
            .into_iter()
            .collect();
        let scope = keys(&parsed.rules);
        self.unresolved(
            &known,
            parsed
                .rule_techniques
                .iter()
                .map(|(r, t)| (format!("rule {r}"), t)),
        );
        let (added, removed) = self
            .pairs(
                &RULE_TECHNIQUES,
                "rule_technique",
                &scope,
                &parsed.rule_techniques,
            )
            .await?;
        self.pairs(&RULE_CVES, "rule_cve", &scope, &parsed.rule_cves)
            .await?;
        // A rule whose enabled flag or mappings changed moves C of its techniques.
        let touched = parsed
            .rule_techniques
            .iter()
            .filter(|(r, _)| changed.contains(r))
            .cloned();
        self.changes.invalidated.extend(
            added
                .into_iter()
                .chain(removed)
                .chain(touched)
                .map(|(_, t)| t),
        );
        Ok(())
    }

    /// Test templates.
    async fn templates(&mut self, parsed: &Parsed) -> Result<(), sqlx::Error> {
        let known = self.known_techniques().await?;
        self.unresolved(
            &known,
            parsed
                .templates
                .iter()
                .map(|t| (format!("template {}", t.template_id), &t.technique_id)),
        );
        self.entities(&TEMPLATES, &parsed.templates).await?;
        Ok(())
    }

    /// Compliance controls and their technique mappings.
    async fn controls(&mut self, parsed: &Parsed) -> Result<(), sqlx::Error> {
        let known = self.known_techniques().await?;
        self.entities(&CONTROLS, &parsed.controls).await?;
        let scope = keys(&parsed.controls);
        self.unresolved(
            &known,
            parsed
                .control_techniques
                .iter()
                .map(|(c, t)| (format!("control {c}"), t)),
        );
        self.pairs(
            &CONTROL_TECHNIQUES,
            "control_technique",
            &scope,
            &parsed.control_techniques,
        )
        .await?;
        Ok(())
    }
}

/// A technique, or the one that replaced it (followed through at most a
/// few revocations: a cycle in hostile data cannot loop).
fn follow(replacements: &HashMap<String, String>, technique: &str) -> String {
    let mut at = technique;
    for _ in 0..8 {
        match replacements.get(at) {
            Some(next) => at = next,
            None => break,
        }
    }
    at.to_owned()
}

fn keys<E: Entity>(rows: &[E]) -> BTreeSet<String> {
    rows.iter().map(|r| r.key().to_owned()).collect()
}

#[derive(Serialize)]
struct Pair<'a> {
    a: &'a str,
    b: &'a str,
}

struct Writer<'a, 't> {
    db: &'a Database,
    tx: &'t mut WriteTx,
    changes: &'a mut Changes,
}

impl Writer<'_, '_> {
    /// Upserts created and updated rows; returns their keys.
    async fn entities<E: Entity>(
        &mut self,
        sql: &EntitySql,
        rows: &[E],
    ) -> Result<Vec<String>, sqlx::Error> {
        let existing: HashMap<String, (String, bool, bool)> = self
            .db
            .stmt(sql.preload)
            .fetch_all(&mut *self.tx)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<String, _>(0)?,
                    (
                        row.try_get::<String, _>(1)?,
                        row.try_get::<i64, _>(2)? != 0,
                        row.try_get::<i64, _>(3)? != 0,
                    ),
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?;
        let mut counts = Counts::default();
        let mut seen = HashSet::new();
        let mut changed: Vec<&E> = Vec::new();
        for row in rows {
            if !seen.insert(row.key()) {
                continue;
            }
            let hash = row.hash();
            let (was_revoked, was_deprecated) = match existing.get(row.key()) {
                None => {
                    counts.created += 1;
                    changed.push(row);
                    (false, false)
                }
                Some((old_hash, revoked, deprecated)) => {
                    if old_hash == hash {
                        counts.unchanged += 1;
                    } else {
                        counts.updated += 1;
                        changed.push(row);
                    }
                    (*revoked, *deprecated)
                }
            };
            counts.revoked += u64::from(row.revoked() && !was_revoked);
            counts.deprecated += u64::from(row.deprecated() && !was_deprecated);
        }
        if !changed.is_empty() {
            self.db
                .stmt(sql.upsert)
                .bind_rows(&changed)
                .execute(&mut *self.tx)
                .await?;
        }
        self.changes.counts.insert(sql.name.to_owned(), counts);
        Ok(changed.iter().map(|r| r.key().to_owned()).collect())
    }

    /// Makes the pairs whose left side is in `scope` exactly `pairs`;
    /// returns (added, removed).
    async fn pairs(
        &mut self,
        sql: &PairSql,
        name: &str,
        scope: &BTreeSet<String>,
        pairs: &BTreeSet<(String, String)>,
    ) -> Result<(Vec<(String, String)>, Vec<(String, String)>), sqlx::Error> {
        let existing: BTreeSet<(String, String)> = self
            .db
            .stmt(sql.preload)
            .fetch_all(&mut *self.tx)
            .await?
            .iter()
            .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        let added: Vec<(String, String)> = pairs.difference(&existing).cloned().collect();
        let removed: Vec<(String, String)> = existing
            .iter()
            .filter(|(a, _)| scope.contains(a))
            .filter(|pair| !pairs.contains(*pair))
            .cloned()
            .collect();
        if !added.is_empty() {
            let rows: Vec<Pair> = added.iter().map(|(a, b)| Pair { a, b }).collect();
            self.db
                .stmt(sql.insert)
                .bind_rows(&rows)
                .execute(&mut *self.tx)
                .await?;
        }
        if !removed.is_empty() {
            let keys: Vec<String> = removed.iter().map(|(a, b)| format!("{a}|{b}")).collect();
            self.db
                .stmt(sql.delete)
                .bind_ids(&keys)
                .execute(&mut *self.tx)
                .await?;
        }
        let unchanged = pairs.len() - added.len();
        self.changes.counts.insert(
            name.to_owned(),
            Counts {
                created: added.len() as u64,
                updated: 0,
                unchanged: unchanged as u64,
                removed: removed.len() as u64,
                ..Counts::default()
            },
        );
        Ok((added, removed))
    }

    /// Every technique id with its (revoked, deprecated) flags.
    async fn known_techniques(&mut self) -> Result<HashMap<String, (bool, bool)>, sqlx::Error> {
        self.db
            .stmt(KNOWN_TECHNIQUES)
            .fetch_all(&mut *self.tx)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    (
                        row.try_get::<i64, _>(1)? != 0,
                        row.try_get::<i64, _>(2)? != 0,
                    ),
                ))
            })
            .collect()
    }

    /// Each revoked technique's replacement.
    async fn replacements(&mut self) -> Result<HashMap<String, String>, sqlx::Error> {
        self.db
            .stmt(ALL_REPLACEMENTS)
            .fetch_all(&mut *self.tx)
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// What each STIX id of a technique or actor names: (ATT&CK id, whether
    /// a technique).
    async fn stix_ids(&mut self) -> Result<HashMap<String, (String, bool)>, sqlx::Error> {
        self.db
            .stmt(STIX_IDS)
            .fetch_all(&mut *self.tx)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    (row.try_get(1)?, row.try_get::<String, _>(2)? == "t"),
                ))
            })
            .collect()
    }

    /// Counts references to techniques that are unknown or not live.
    fn unresolved<'r>(
        &mut self,
        known: &HashMap<String, (bool, bool)>,
        references: impl Iterator<Item = (String, &'r String)>,
    ) {
        for (location, technique) in references {
            let reason = match known.get(technique) {
                None => {
                    self.changes
                        .unknown
                        .push(format!("{location}: {technique}"));
                    format!("unresolved: {technique} is not in the ATT&CK catalogue")
                }
                Some((true, _)) => format!("unresolved: {technique} is revoked"),
                Some((_, true)) => format!("unresolved: {technique} is deprecated"),
                Some(_) => continue,
            };
            self.changes.unresolved.push(Skipped {
                file_name: String::new(),
                location,
                reason,
            });
        }
    }
}
