//! The SQL of threat intelligence: intel reports by filter and by
//! technique, CVEs per technique (through rules and the KEV mapping, with
//! their KEV entries), and the per-technique signals a plan weighs. One
//! statement per chunk of ids (two for the signals), whatever the size.

use std::collections::BTreeMap;

use purple_runtime::{paging::Page, time::Micros};
use sqlx::{Row, any::AnyRow};

use super::CatalogStore;
use crate::domain::views::{Cve, IntelFilter, IntelReport, Kev, TechniqueIntel, ThreatSignals};

macro_rules! report_select {
    ($($rest:literal),*) => {
        concat!(
            "SELECT r.report_key, r.source, r.campaign_id, r.title, r.description, r.url, ",
            "r.published_at, r.first_seen, r.last_seen, r.seen_at, r.techniques, r.actor_ids, ",
            "r.revoked, r.deprecated FROM intel_reports r ", $($rest),*
        )
    };
}

/// Keyset page, most recently seen first: `$5` 1 when the page starts
/// after (`$6` seen_at, `$7` key).
const LIST_REPORTS: &str = report_select!(
    "WHERE r.seen_at >= $1 ",
    "AND ($2 = '' OR EXISTS (SELECT 1 FROM intel_report_techniques it WHERE it.report_key = r.report_key AND it.technique_id = $2)) ",
    "AND ($3 = '' OR EXISTS (SELECT 1 FROM intel_report_actors ia WHERE ia.report_key = r.report_key AND ia.actor_id = $3)) ",
    "AND ($5 = 0 OR r.seen_at < $6 OR (r.seen_at = $6 AND r.report_key < $7)) ",
    "ORDER BY r.seen_at DESC, r.report_key DESC LIMIT $4"
);

const REPORTS_BY_KEYS: &str =
    report_select!("WHERE r.report_key IN (SELECT value FROM json_each($1))");

/// The `$3` most recent reports per requested technique seen since `$2`,
/// with each technique's count; a known technique without any still has a
/// row (its report columns null).
/// The report columns are [`report_select!`]'s, from column 2, with an
/// empty technique list: a technique's reports are listed without theirs.
const INTEL_FOR: &str = "
    SELECT t.technique_id, x.n, x.report_key, r.source, r.campaign_id, r.title, r.description, r.url,
           r.published_at, r.first_seen, r.last_seen, r.seen_at, '[]', r.actor_ids, r.revoked, r.deprecated
    FROM techniques t
    LEFT JOIN (
        SELECT it.technique_id, it.report_key,
               ROW_NUMBER() OVER (PARTITION BY it.technique_id ORDER BY r.seen_at DESC, r.report_key DESC) AS rn,
               COUNT(*) OVER (PARTITION BY it.technique_id) AS n
        FROM intel_report_techniques it JOIN intel_reports r ON r.report_key = it.report_key
        WHERE it.technique_id IN (SELECT value FROM json_each($1)) AND r.seen_at >= $2
    ) x ON x.technique_id = t.technique_id AND x.rn <= $3
    LEFT JOIN intel_reports r ON r.report_key = x.report_key
    WHERE t.technique_id IN (SELECT value FROM json_each($1))
    ORDER BY t.technique_id, r.seen_at DESC, r.report_key DESC";

/// CVEs per technique: those named by a rule mapped to it and those the
/// KEV mapping links to it, each with how it is linked and its KEV entry.
const CVES_FOR: &str = "
    SELECT t.technique_id, l.cve_id, c.description, c.cvss_score, c.link, c.known_exploited, c.published_at,
           l.links, k.vendor_project, k.product, k.vulnerability_name, k.date_added, k.due_date,
           k.ransomware, k.required_action, k.short_description
    FROM techniques t
    LEFT JOIN (
        SELECT x.technique_id, x.cve_id, string_agg(x.link, ',' ORDER BY x.link) AS links FROM (
            SELECT DISTINCT rt.technique_id AS technique_id, rc.cve_id AS cve_id, 'rule' AS link
            FROM rule_techniques rt JOIN rule_cves rc ON rc.rule_key = rt.rule_key
            WHERE rt.technique_id IN (SELECT value FROM json_each($1))
            UNION ALL
            SELECT m.technique_id, m.cve_id, m.mapping_type FROM kev_mappings m
            WHERE m.technique_id IN (SELECT value FROM json_each($1))
        ) x GROUP BY x.technique_id, x.cve_id
    ) l ON l.technique_id = t.technique_id
    LEFT JOIN cves c ON c.cve_id = l.cve_id
    LEFT JOIN kev_entries k ON k.cve_id = l.cve_id
    WHERE t.technique_id IN (SELECT value FROM json_each($1))
    ORDER BY t.technique_id, COALESCE(c.cvss_score, 0) DESC, l.cve_id";

/// Per known technique, one row: the live actors using it (ids joined by
/// commas) and its KEV CVEs, all and used by ransomware. One row per
/// technique rather than per use: SQLite hands rows over one at a time.
const SIGNAL_TECHNIQUES: &str = "
    SELECT t.technique_id, ua.actors, k.cves, k.ransomware
    FROM techniques t
    LEFT JOIN (
        SELECT at.technique_id, string_agg(a.actor_id, ',' ORDER BY a.actor_id) AS actors
        FROM actor_techniques at
        JOIN actors a ON a.actor_id = at.actor_id AND a.revoked = 0 AND a.deprecated = 0
        WHERE at.technique_id IN (SELECT value FROM json_each($1))
        GROUP BY at.technique_id
    ) ua ON ua.technique_id = t.technique_id
    LEFT JOIN (
        SELECT m.technique_id, COUNT(DISTINCT m.cve_id) AS cves,
               COUNT(DISTINCT CASE WHEN e.ransomware = 1 THEN m.cve_id END) AS ransomware
        FROM kev_mappings m LEFT JOIN kev_entries e ON e.cve_id = m.cve_id
        WHERE m.technique_id IN (SELECT value FROM json_each($1))
        GROUP BY m.technique_id
    ) k ON k.technique_id = t.technique_id
    WHERE t.technique_id IN (SELECT value FROM json_each($1))";
/// Per technique: live reports seen since `$2`, the three most recent.
const SIGNAL_INTEL: &str = "
    SELECT technique_id, title, seen_at, n FROM (
        SELECT it.technique_id, r.title, r.seen_at,
               ROW_NUMBER() OVER (PARTITION BY it.technique_id ORDER BY r.seen_at DESC, r.report_key DESC) AS rn,
               COUNT(*) OVER (PARTITION BY it.technique_id) AS n
        FROM intel_report_techniques it JOIN intel_reports r ON r.report_key = it.report_key
        WHERE it.technique_id IN (SELECT value FROM json_each($1))
          AND r.seen_at >= $2 AND r.revoked = 0 AND r.deprecated = 0
    ) x WHERE rn <= 3
    ORDER BY technique_id, rn";
fn json<T: serde::de::DeserializeOwned + Default>(text: Option<String>) -> T {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// A report from column `at` on, in [`report_select!`]'s order: key,
/// source, campaign, title, description, url, published, first seen, last
/// seen, seen_at, technique links, actors, revoked, deprecated.
fn report(row: &AnyRow, at: usize) -> Result<IntelReport, sqlx::Error> {
    let col = |i: usize| at + i;
    Ok(IntelReport {
        report_key: row.try_get(col(0))?,
        source: row.try_get(col(1))?,
        campaign_id: row.try_get(col(2))?,
        title: row.try_get(col(3))?,
        description: row.try_get(col(4))?,
        url: row.try_get(col(5))?,
        published_at: row.try_get(col(6))?,
        first_seen: row.try_get(col(7))?,
        last_seen: row.try_get(col(8))?,
        seen_at: row.try_get(col(9))?,
        techniques: json(row.try_get(col(10))?),
        actor_ids: json(row.try_get(col(11))?),
        revoked: row.try_get::<i64, _>(col(12))? != 0 || row.try_get::<i64, _>(col(13))? != 0,
    })
}

impl CatalogStore {
    /// A filtered page of intel reports, most recently seen first.
    pub async fn list_intel(
        &self,
        filter: &IntelFilter,
        page: &Page,
    ) -> Result<Vec<IntelReport>, sqlx::Error> {
        self.db
            .stmt(LIST_REPORTS)
            .bind(filter.since)
            .bind(filter.technique_id.clone())
            .bind(filter.actor_id.clone())
            .bind(page.limit())
            .bind(page.has_cursor())
            .bind(page.instant(0))
            .bind(page.text(1))
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| report(row, 0))
            .collect()
    }

    /// Intel reports by key.
    pub async fn intel_by_keys(
        &self,
        keys: &[String],
    ) -> Result<BTreeMap<String, IntelReport>, sqlx::Error> {
        self.db
            .stmt(REPORTS_BY_KEYS)
            .bind_ids(keys)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| report(row, 0).map(|r| (r.report_key.clone(), r)))
            .collect()
    }

    /// The most recent `limit` reports per technique seen since `since`.
    pub async fn intel_for(
        &self,
        ids: &[String],
        since: Micros,
        limit: i64,
    ) -> Result<BTreeMap<String, TechniqueIntel>, sqlx::Error> {
        let rows = self
            .db
            .stmt(INTEL_FOR)
            .bind_ids(ids)
            .bind(since)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        let mut out: BTreeMap<String, TechniqueIntel> = BTreeMap::new();
        for row in &rows {
            let id: String = row.try_get(0)?;
            let entry = out.entry(id.clone()).or_insert_with(|| TechniqueIntel {
                technique_id: id,
                ..TechniqueIntel::default()
            });
            // A technique without reports has one row, its report null.
            if row.try_get::<Option<String>, _>(2)?.is_none() {
                continue;
            }
            entry.report_count = row.try_get(1)?;
            entry.reports.push(report(row, 2)?);
        }
        Ok(out)
    }

    /// CVEs per technique, through rules and the KEV mapping.
    pub async fn cves_for(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, Vec<Cve>>, sqlx::Error> {
        let rows = self
            .db
            .stmt(CVES_FOR)
            .bind_ids(ids)
            .fetch_all(self.db.pool())
            .await?;
        let mut out: BTreeMap<String, Vec<Cve>> = BTreeMap::new();
        for row in &rows {
            let entry = out.entry(row.try_get(0)?).or_default();
            if let Some(cve) = cve(row)? {
                entry.push(cve);
            }
        }
        Ok(out)
    }

    /// The plan's signals per known technique (two statements).
    pub async fn threat_signals(
        &self,
        ids: &[String],
        intel_since: Micros,
    ) -> Result<BTreeMap<String, ThreatSignals>, sqlx::Error> {
        let pool = self.db.pool();
        let (techniques, intel) = futures::try_join!(
            self.db
                .stmt(SIGNAL_TECHNIQUES)
                .bind_ids(ids)
                .fetch_all(pool),
            self.db
                .stmt(SIGNAL_INTEL)
                .bind_ids(ids)
                .bind(intel_since)
                .fetch_all(pool),
        )?;
        let mut out: BTreeMap<String, ThreatSignals> = BTreeMap::new();
        for row in &techniques {
            let id: String = row.try_get(0)?;
            let actors: Option<String> = row.try_get(1)?;
            out.insert(
                id.clone(),
                ThreatSignals {
                    technique_id: id,
                    actor_ids: actors
                        .filter(|a| !a.is_empty())
                        .map(|a| a.split(',').map(str::to_owned).collect())
                        .unwrap_or_default(),
                    kev_cves: row.try_get::<Option<i64>, _>(2)?.unwrap_or(0),
                    ransomware_cves: row.try_get::<Option<i64>, _>(3)?.unwrap_or(0),
                    ..ThreatSignals::default()
                },
            );
        }
        for row in &intel {
            if let Some(entry) = out.get_mut(&row.try_get::<String, _>(0)?) {
                entry.report_titles.push(row.try_get(1)?);
                let seen: Micros = row.try_get(2)?;
                entry.latest_report = Some(entry.latest_report.map_or(seen, |l| l.max(seen)));
                entry.recent_reports = row.try_get(3)?;
            }
        }
        Ok(out)
    }
}

/// A CVES_FOR row's CVE; None for a technique without any.
fn cve(row: &AnyRow) -> Result<Option<Cve>, sqlx::Error> {
    let Some(cve_id) = row.try_get::<Option<String>, _>(1)? else {
        return Ok(None);
    };
    let vendor: Option<String> = row.try_get(8)?;
    let kev = match vendor {
        None => None,
        Some(vendor_project) => Some(Kev {
            vendor_project,
            product: row.try_get(9)?,
            vulnerability_name: row.try_get(10)?,
            date_added: row.try_get(11)?,
            due_date: row.try_get(12)?,
            ransomware: row.try_get::<i64, _>(13)? != 0,
            required_action: row.try_get(14)?,
            short_description: row.try_get(15)?,
        }),
    };
    let description: Option<String> = row.try_get(2)?;
    let links: Option<String> = row.try_get(7)?;
    Ok(Some(Cve {
        description: description
            .or_else(|| kev.as_ref().map(|k| k.short_description.clone()))
            .unwrap_or_default(),
        cvss_score: row.try_get::<Option<f64>, _>(3)?.unwrap_or(0.0),
        link: row
            .try_get::<Option<String>, _>(4)?
            .unwrap_or_else(|| format!("https://nvd.nist.gov/vuln/detail/{cve_id}")),
        known_exploited: row.try_get::<Option<i64>, _>(5)?.unwrap_or(0) != 0 || kev.is_some(),
        published_at: row.try_get(6)?,
        links: links
            .map(|l| l.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        kev,
        cve_id,
    }))
}
