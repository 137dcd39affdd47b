//! The batch reads: one statement per chunk of ids, results keyed by id so
//! the API can answer in request order and list the missing ones.

use std::collections::BTreeMap;

use purple_runtime::{Backend, db::PerBackend, packed, paging::Page, time::Micros};
use sqlx::{Row, any::AnyRow};

use super::CatalogStore;

use crate::domain::views::{
    CatalogInput, Control, Defense, Rule, RuleFilter, Subtechniques, Tactic, Technique, Template,
    ThreatActor,
};

macro_rules! technique_select {
    ($description:literal, $($rest:literal),*) => {
        concat!(
            "SELECT t.technique_id, t.stix_id, t.name, ", $description, ", t.is_subtechnique, ",
            "t.parent_id, t.tactics, t.platforms, t.revoked, t.deprecated, t.attack_version ",
            "FROM techniques t ", $($rest),*
        )
    };
}

/// Packed ([`packed!`]): one row for every technique asked.
macro_rules! techniques_by_ids {
    ($open:literal, $close:literal) => {
        concat!(
            "SELECT ",
            $open,
            "t.technique_id, t.stix_id, t.name, t.description, ",
            "t.is_subtechnique, t.parent_id, t.tactics, t.platforms, t.revoked, t.deprecated, ",
            "t.attack_version",
            $close,
            " ",
            "FROM techniques t WHERE t.technique_id IN (SELECT value FROM json_each($1))"
        )
    };
}
const TECHNIQUES_BY_IDS: PerBackend = packed!(techniques_by_ids);

/// Keyset page: `$6` 1 when the page starts after technique `$7`; `$8` 1
/// leaves the descriptions out (not read: they are most of a row). Packed
/// on SQLite ([`packed!`]): a page is one row, put in order by the caller
/// (the outer ORDER BY orders PostgreSQL's rows, not what SQLite packs).
macro_rules! list_techniques {
    ($open:literal, $close:literal) => {
        concat!(
            "SELECT ", $open, "p.technique_id, p.stix_id, p.name, p.description, ",
            "p.is_subtechnique, p.parent_id, p.tactics, p.platforms, p.revoked, p.deprecated, ",
            "p.attack_version", $close, " FROM (",
            technique_select!(
                "CASE WHEN $8 = 1 THEN '' ELSE t.description END AS description",
                "WHERE ($1 = '' OR EXISTS (SELECT 1 FROM json_each(t.tactics) j WHERE j.value = $1)) ",
                "AND ($2 = '' OR EXISTS (SELECT 1 FROM json_each(t.platforms) j WHERE lower(j.value) = lower($2))) ",
                "AND ($3 = 0 OR ($3 = 1 AND t.is_subtechnique = 0) OR ($3 = 2 AND t.is_subtechnique = 1)) ",
                "AND ($4 = 1 OR (t.revoked = 0 AND t.deprecated = 0)) ",
                "AND ($6 = 0 OR t.technique_id > $7) ",
                "ORDER BY t.technique_id LIMIT $5"
            ),
            ") p ORDER BY p.technique_id"
        )
    };
}
const LIST_TECHNIQUES: PerBackend = packed!(list_techniques);

const LIST_TACTICS: &str = "
    SELECT ta.tactic_id, ta.short_name, ta.name, ta.ordinal, COUNT(lt.technique_id)
    FROM tactics ta
    LEFT JOIN (
        SELECT j.value AS short_name, t.technique_id
        FROM techniques t, json_each(t.tactics) j
        WHERE t.revoked = 0 AND t.deprecated = 0
    ) lt ON lt.short_name = ta.short_name
    WHERE ta.revoked = 0 AND ta.deprecated = 0
    GROUP BY ta.tactic_id, ta.short_name, ta.name, ta.ordinal
    ORDER BY ta.ordinal, ta.tactic_id";

/// Scoring's inputs as kept on write (migration 0005). Packed
/// ([`packed!`]): one row for every technique asked.
macro_rules! catalog_inputs {
    ($open:literal, $close:literal) => {
        concat!(
            "SELECT ",
            $open,
            "i.technique_id, i.revoked, i.deprecated, ",
            "i.countermeasure_count, i.actor_count, i.enabled_rule_keys",
            $close,
            " ",
            "FROM technique_inputs i WHERE i.technique_id IN (SELECT value FROM json_each($1))"
        )
    };
}
const CATALOG_INPUTS: PerBackend = packed!(catalog_inputs);

macro_rules! actor_select {
    ($($rest:literal),*) => {
        concat!(
            "SELECT a.actor_id, a.name, a.aliases, a.description, a.revoked, a.deprecated, ",
            "(SELECT COUNT(*) FROM actor_techniques at JOIN techniques t ON t.technique_id = at.technique_id ",
            " WHERE at.actor_id = a.actor_id AND t.revoked = 0 AND t.deprecated = 0) ",
            "FROM actors a ", $($rest),*
        )
    };
}

/// Keyset page: `$3` 1 when the page starts after (`$4` name, `$5` id).
const LIST_ACTORS: &str = actor_select!(
    "WHERE ($1 = 1 OR (a.revoked = 0 AND a.deprecated = 0)) ",
    "AND ($3 = 0 OR a.name > $4 OR (a.name = $4 AND a.actor_id > $5)) ",
    "ORDER BY a.name, a.actor_id LIMIT $2"
);
const ACTORS_BY_IDS: &str = actor_select!("WHERE a.actor_id IN (SELECT value FROM json_each($1))");

const ACTOR_TECHNIQUES: &str = "
    SELECT a.actor_id, lt.technique_id
    FROM actors a
    LEFT JOIN (
        SELECT at.actor_id, at.technique_id FROM actor_techniques at
        JOIN techniques t ON t.technique_id = at.technique_id
        WHERE t.revoked = 0 AND t.deprecated = 0
    ) lt ON lt.actor_id = a.actor_id
    WHERE a.actor_id IN (SELECT value FROM json_each($1))
    ORDER BY a.actor_id, lt.technique_id";

const DEFENSES_FOR: &str = "
    SELECT DISTINCT t.technique_id, d.defense_id, d.name, d.tactic
    FROM techniques t
    LEFT JOIN technique_defenses td ON td.technique_id = t.technique_id OR td.technique_id = t.parent_id
    LEFT JOIN defenses d ON d.defense_id = td.defense_id
    WHERE t.technique_id IN (SELECT value FROM json_each($1))
    ORDER BY t.technique_id, d.defense_id";

const TEMPLATES_FOR: &str = "
    SELECT t.technique_id, p.template_id, p.source, p.name, p.description, p.platforms, p.executor, p.command
    FROM techniques t
    LEFT JOIN templates p ON p.technique_id = t.technique_id
         AND ($2 = '' OR EXISTS (SELECT 1 FROM json_each(p.platforms) j WHERE lower(j.value) = lower($2)))
    WHERE t.technique_id IN (SELECT value FROM json_each($1))
    ORDER BY t.technique_id,
             CASE p.source WHEN 'atomic' THEN 0 WHEN 'caldera' THEN 1 ELSE 2 END, p.name, p.template_id";

const RULES_BY_IDS: &str = "
    SELECT rule_id, source, title, level, status, enabled, file_name, technique_ids
    FROM rules WHERE rule_id IN (SELECT value FROM json_each($1)) ORDER BY rule_id, source";

/// Keyset page over (source, rule id): `$6` 1 when the page starts after
/// (`$7` source, `$8` rule id). Filters: `$1` source, `$2` enabled (-1
/// any), `$3` technique, `$4` status, "" for any.
const LIST_RULES: &str = "
    SELECT r.rule_id, r.source, r.title, r.level, r.status, r.enabled, r.file_name, r.technique_ids
    FROM rules r
    WHERE ($1 = '' OR r.source = $1)
      AND ($2 < 0 OR r.enabled = $2)
      AND ($3 = '' OR EXISTS (SELECT 1 FROM rule_techniques rt
                              WHERE rt.rule_key = r.rule_key AND rt.technique_id = $3))
      AND ($4 = '' OR r.status = $4)
      AND ($6 = 0 OR r.source > $7 OR (r.source = $7 AND r.rule_id > $8))
    ORDER BY r.source, r.rule_id LIMIT $5";

const CONTROLS_FOR: &str = "
    SELECT t.technique_id, c.control_id, c.name, c.family
    FROM techniques t
    LEFT JOIN control_techniques ct ON ct.technique_id = t.technique_id
    LEFT JOIN controls c ON c.control_id = ct.control_id
    WHERE t.technique_id IN (SELECT value FROM json_each($1))
    ORDER BY t.technique_id, c.control_id";

/// Keyset page: `$2` 1 when the page starts after (`$3` started_at, `$4`
/// run id).
const IMPORT_RUNS: &str = "
    SELECT report, started_at, run_id FROM import_runs
    WHERE ($2 = 0 OR started_at < $3 OR (started_at = $3 AND run_id > $4))
    ORDER BY started_at DESC, run_id LIMIT $1";

fn list(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// A technique's packed columns, in [`technique_select!`]'s order.
type TechniqueColumns = (
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    String,
    String,
    i64,
    i64,
    String,
);

fn technique(c: TechniqueColumns) -> Technique {
    Technique {
        technique_id: c.0,
        stix_id: c.1,
        name: c.2,
        description: c.3,
        is_subtechnique: c.4 != 0,
        parent_id: c.5,
        tactics: list(&c.6),
        platforms: list(&c.7),
        revoked: c.8 != 0,
        deprecated: c.9 != 0,
        attack_version: c.10,
    }
}

fn rule(row: &AnyRow) -> Result<Rule, sqlx::Error> {
    Ok(Rule {
        rule_id: row.try_get(0)?,
        source: row.try_get(1)?,
        title: row.try_get(2)?,
        level: row.try_get(3)?,
        status: row.try_get(4)?,
        enabled: row.try_get::<i64, _>(5)? != 0,
        file_name: row.try_get(6)?,
        technique_ids: list(&row.try_get::<String, _>(7)?),
    })
}

fn actor(row: &AnyRow) -> Result<ThreatActor, sqlx::Error> {
    Ok(ThreatActor {
        actor_id: row.try_get(0)?,
        name: row.try_get(1)?,
        aliases: list(&row.try_get::<String, _>(2)?),
        description: row.try_get(3)?,
        revoked: row.try_get::<i64, _>(4)? != 0,
        deprecated: row.try_get::<i64, _>(5)? != 0,
        technique_count: row.try_get(6)?,
    })
}

/// Rows grouped by their first column, for one-to-many reads; a group whose
/// joined side is NULL is present but empty.
fn grouped<T>(
    rows: &[AnyRow],
    item: impl Fn(&AnyRow) -> Result<Option<T>, sqlx::Error>,
) -> Result<BTreeMap<String, Vec<T>>, sqlx::Error> {
    let mut groups: BTreeMap<String, Vec<T>> = BTreeMap::new();
    for row in rows {
        let entry = groups.entry(row.try_get(0)?).or_default();
        if let Some(value) = item(row)? {
            entry.push(value);
        }
    }
    Ok(groups)
}

impl CatalogStore {
    async fn by_ids(&self, sql: &'static str, ids: &[String]) -> Result<Vec<AnyRow>, sqlx::Error> {
        self.db
            .stmt(sql)
            .bind_ids(ids)
            .fetch_all(self.db.pool())
            .await
    }

    /// [`Self::by_ids`] of a [`packed!`] statement, each row decoded as `T`.
    async fn by_ids_packed<T>(&self, sql: PerBackend, ids: &[String]) -> Result<Vec<T>, sqlx::Error>
    where
        T: serde::de::DeserializeOwned + for<'r> sqlx::FromRow<'r, AnyRow>,
    {
        self.db
            .stmt_for(sql)
            .bind_ids(ids)
            .fetch_packed(self.db.pool())
            .await
    }

    /// Techniques by ATT&CK id.
    pub async fn techniques_by_ids(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, Technique>, sqlx::Error> {
        Ok(self
            .by_ids_packed::<TechniqueColumns>(TECHNIQUES_BY_IDS, ids)
            .await?
            .into_iter()
            .map(|c| {
                let t = technique(c);
                (t.technique_id.clone(), t)
            })
            .collect())
    }

    /// A filtered page of techniques.
    pub async fn list_techniques(
        &self,
        tactic: &str,
        platform: &str,
        subtechniques: Subtechniques,
        include_revoked: bool,
        brief: bool,
        page: &Page,
    ) -> Result<Vec<Technique>, sqlx::Error> {
        let mut page: Vec<Technique> = self
            .db
            .stmt_for(LIST_TECHNIQUES)
            .bind(tactic.to_owned())
            .bind(platform.to_owned())
            .bind(match subtechniques {
                Subtechniques::Both => 0_i64,
                Subtechniques::Exclude => 1,
                Subtechniques::Only => 2,
            })
            .bind(i64::from(include_revoked))
            .bind(page.limit())
            .bind(page.has_cursor())
            .bind(page.text(0))
            .bind(i64::from(brief))
            .fetch_packed::<TechniqueColumns, _>(self.db.pool())
            .await?
            .into_iter()
            .map(technique)
            .collect();
        // Packed rows (SQLite's) come in no promised order; SQLite orders
        // text by its bytes, as this sort does. PostgreSQL's rows are in its
        // collation's order, which the page token follows.
        if matches!(self.db.backend(), Backend::Sqlite) {
            page.sort_by(|a, b| a.technique_id.cmp(&b.technique_id));
        }
        Ok(page)
    }

    /// Live tactics in kill-chain order with their live technique counts.
    pub async fn tactics(&self) -> Result<Vec<Tactic>, sqlx::Error> {
        self.db
            .stmt(LIST_TACTICS)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| {
                Ok(Tactic {
                    tactic_id: row.try_get(0)?,
                    short_name: row.try_get(1)?,
                    name: row.try_get(2)?,
                    ordinal: row.try_get(3)?,
                    technique_count: row.try_get(4)?,
                })
            })
            .collect()
    }

    /// Scoring's inputs per technique.
    pub async fn catalog_inputs(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, CatalogInput>, sqlx::Error> {
        type Columns = (String, i64, i64, i64, i64, Option<String>);
        Ok(self
            .by_ids_packed::<Columns>(CATALOG_INPUTS, ids)
            .await?
            .into_iter()
            .map(
                |(technique_id, revoked, deprecated, countermeasures, actors, rules)| {
                    let input = CatalogInput {
                        technique_id,
                        live: revoked == 0 && deprecated == 0,
                        countermeasure_count: countermeasures,
                        actor_count: actors,
                        enabled_rule_keys: rules
                            .filter(|r| !r.is_empty())
                            .map(|r| r.split(',').map(str::to_owned).collect())
                            .unwrap_or_default(),
                    };
                    (input.technique_id.clone(), input)
                },
            )
            .collect())
    }

    /// A page of actors by name.
    pub async fn list_actors(
        &self,
        include_revoked: bool,
        page: &Page,
    ) -> Result<Vec<ThreatActor>, sqlx::Error> {
        self.db
            .stmt(LIST_ACTORS)
            .bind(i64::from(include_revoked))
            .bind(page.limit())
            .bind(page.has_cursor())
            .bind(page.text(0))
            .bind(page.text(1))
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(actor)
            .collect()
    }

    /// Actors by ATT&CK id.
    pub async fn actors_by_ids(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, ThreatActor>, sqlx::Error> {
        self.by_ids(ACTORS_BY_IDS, ids)
            .await?
            .iter()
            .map(|row| actor(row).map(|a| (a.actor_id.clone(), a)))
            .collect()
    }

    /// The live techniques of actors.
    pub async fn actor_techniques(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, sqlx::Error> {
        let rows = self.by_ids(ACTOR_TECHNIQUES, ids).await?;
        grouped(&rows, |row| row.try_get::<Option<String>, _>(1))
    }

    /// Defenses per technique (own and parent's).
    pub async fn defenses_for(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, Vec<Defense>>, sqlx::Error> {
        let rows = self.by_ids(DEFENSES_FOR, ids).await?;
        grouped(&rows, |row| {
            Ok(row
                .try_get::<Option<String>, _>(1)?
                .map(|defense_id| Defense {
                    defense_id,
                    name: row
                        .try_get::<Option<String>, _>(2)
                        .ok()
                        .flatten()
                        .unwrap_or_default(),
                    tactic: row
                        .try_get::<Option<String>, _>(3)
                        .ok()
                        .flatten()
                        .unwrap_or_default(),
                }))
        })
    }

    /// Templates per technique, best first.
    pub async fn templates_for(
        &self,
        ids: &[String],
        platform: &str,
    ) -> Result<BTreeMap<String, Vec<Template>>, sqlx::Error> {
        let rows = self
            .db
            .stmt(TEMPLATES_FOR)
            .bind_ids(ids)
            .bind(platform.to_owned())
            .fetch_all(self.db.pool())
            .await?;
        grouped(&rows, |row| {
            let Some(template_id) = row.try_get::<Option<String>, _>(1)? else {
                return Ok(None);
            };
            Ok(Some(Template {
                template_id,
                technique_id: row.try_get(0)?,
                source: row.try_get(2)?,
                name: row.try_get(3)?,
                description: row.try_get(4)?,
                platforms: list(&row.try_get::<String, _>(5)?),
                executor: row.try_get(6)?,
                command: row.try_get(7)?,
            }))
        })
    }

    /// Rules by upstream id: every source's, grouped by id.
    pub async fn rules_by_ids(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, Vec<Rule>>, sqlx::Error> {
        let mut found: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
        for row in self.by_ids(RULES_BY_IDS, ids).await? {
            let rule = rule(&row)?;
            found.entry(rule.rule_id.clone()).or_default().push(rule);
        }
        Ok(found)
    }

    /// A page of rules by (source, rule id).
    pub async fn list_rules(
        &self,
        filter: &RuleFilter,
        page: &Page,
    ) -> Result<Vec<Rule>, sqlx::Error> {
        self.db
            .stmt(LIST_RULES)
            .bind(filter.source.clone())
            .bind(filter.enabled.map_or(-1, i64::from))
            .bind(filter.technique_id.clone())
            .bind(filter.status.clone())
            .bind(page.limit())
            .bind(page.has_cursor())
            .bind(page.text(0))
            .bind(page.text(1))
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(rule)
            .collect()
    }

    /// Controls per technique.
    pub async fn controls_for(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, Vec<Control>>, sqlx::Error> {
        let rows = self.by_ids(CONTROLS_FOR, ids).await?;
        grouped(&rows, |row| {
            let Some(control_id) = row.try_get::<Option<String>, _>(1)? else {
                return Ok(None);
            };
            Ok(Some(Control {
                control_id,
                name: row.try_get(2)?,
                family: row.try_get(3)?,
            }))
        })
    }

    /// A page of import run reports (JSON), newest first, with each run's
    /// sort key (started_at, run id).
    pub async fn import_runs(
        &self,
        page: &Page,
    ) -> Result<Vec<(String, Micros, String)>, sqlx::Error> {
        self.db
            .stmt(IMPORT_RUNS)
            .bind(page.limit())
            .bind(page.has_cursor())
            .bind(page.instant(0))
            .bind(page.text(1))
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    }
}
