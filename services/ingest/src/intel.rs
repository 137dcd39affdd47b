//! Threat intelligence between the wire and the SQL: analysts' reports
//! checked and written (deduplicated by URL, in one transaction with the
//! same statements an import of reports uses), the report list, the
//! reports of techniques and the signals a threat-informed plan weighs.

use std::collections::{BTreeMap, BTreeSet};

use purple_api::batch::{check_batch_len, check_ids};
use purple_runtime::{paging::Page, time::Micros};

use crate::{
    catalog::ById,
    domain::{
        IntelDraft, IntelReportRow, normalize_technique_id,
        views::{IntelFilter, IntelReport, TechniqueIntel, ThreatSignals},
    },
    error::IngestError,
    store::{CatalogStore, write},
};

/// The sort key of the report list: (seen_at, key), most recent first.
pub const INTEL_KEY_LEN: usize = 2;
/// The longest URL, title and description an analyst's report may have.
const MAX_URL: usize = 2_048;
const MAX_TITLE: usize = 500;
const MAX_DESCRIPTION: usize = 64 * 1024;
/// The most techniques and actors one report may name.
const MAX_LINKS: usize = 1_000;

/// An analyst's report as the API received it.
#[derive(Clone, Debug, Default)]
pub struct NewReport {
    pub url: String,
    pub title: String,
    pub description: String,
    pub published_at: Option<Micros>,
    pub first_seen: Option<Micros>,
    pub last_seen: Option<Micros>,
    /// (technique id, what the report says of it).
    pub techniques: Vec<(String, String)>,
    pub actor_ids: Vec<String>,
}

/// Intel reads and analysts' writes.
#[derive(Clone, Debug)]
pub struct Intel {
    store: CatalogStore,
}

impl Intel {
    /// Over the catalogue's store.
    pub fn new(store: CatalogStore) -> Self {
        Self { store }
    }

    /// Stores analysts' reports, all or nothing; a report whose URL is
    /// known updates it. Returns the stored reports in request order and
    /// (created, updated).
    pub async fn create(
        &self,
        reports: Vec<NewReport>,
    ) -> Result<(Vec<IntelReport>, u64, u64), IngestError> {
        check_batch_len("reports", reports.len())?;
        if reports.is_empty() {
            return Err(IngestError::invalid(
                "reports",
                "at least one report is required",
            ));
        }
        let mut urls = BTreeSet::new();
        let mut drafts = Vec::with_capacity(reports.len());
        for (i, report) in reports.into_iter().enumerate() {
            let draft = draft(i, report)?;
            if !urls.insert(draft.row.report_key.clone()) {
                return Err(IngestError::invalid(
                    format!("reports[{i}].url"),
                    "the same URL is given twice in one request",
                ));
            }
            drafts.push(draft);
        }
        let keys: Vec<String> = drafts.iter().map(|d| d.row.report_key.clone()).collect();
        let db = self.store.db();
        let mut tx = db.begin().await?;
        let changes = write::intel_reports(db, &mut tx, &drafts).await?;
        if let Some(unknown) = changes.unknown.first() {
            return Err(IngestError::invalid(
                "reports.techniques",
                format!("{unknown} is not in the ATT&CK catalogue"),
            ));
        }
        tx.commit().await?;
        let counts = changes
            .counts
            .get("intel_report")
            .copied()
            .unwrap_or_default();
        let mut stored = self.store.intel_by_keys(&keys).await?;
        let reports = keys.iter().filter_map(|k| stored.remove(k)).collect();
        Ok((reports, counts.created, counts.updated))
    }

    /// A filtered page of reports, most recently seen first, and the next
    /// token.
    pub async fn list(
        &self,
        filter: &IntelFilter,
        page: &Page,
    ) -> Result<(Vec<IntelReport>, String), IngestError> {
        let mut reports = self.store.list_intel(filter, page).await?;
        let next = page.finish(&mut reports, |r| {
            vec![r.seen_at.into(), (&r.report_key).into()]
        });
        Ok((reports, next))
    }

    /// The most recent reports of each technique.
    pub async fn for_techniques(
        &self,
        ids: &[String],
        since: Micros,
        limit: i64,
    ) -> Result<ById<TechniqueIntel>, IngestError> {
        check_ids("technique_ids", ids)?;
        Ok(self.store.intel_for(ids, since, limit).await?)
    }

    /// The plan's signals of each technique.
    pub async fn signals(
        &self,
        ids: &[String],
        since: Micros,
    ) -> Result<ById<ThreatSignals>, IngestError> {
        check_ids("technique_ids", ids)?;
        Ok(self.store.threat_signals(ids, since).await?)
    }
}

/// Checks one analyst's report and makes its draft.
fn draft(i: usize, report: NewReport) -> Result<IntelDraft, IngestError> {
    let field = |name: &str| format!("reports[{i}].{name}");
    let url = report.url.trim().to_owned();
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.len() > MAX_URL
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(IngestError::invalid(
            field("url"),
            format!(
                "an http(s) URL of at most {MAX_URL} bytes is required: it is the report's key"
            ),
        ));
    }
    let title = report.title.trim().to_owned();
    if title.is_empty() || title.chars().count() > MAX_TITLE {
        return Err(IngestError::invalid(
            field("title"),
            format!("required, at most {MAX_TITLE} characters"),
        ));
    }
    if report.description.len() > MAX_DESCRIPTION {
        return Err(IngestError::invalid(
            field("description"),
            format!("at most {MAX_DESCRIPTION} bytes"),
        ));
    }
    // PostgreSQL cannot store a NUL; refused here with the field on both
    // backends rather than by the database at commit.
    for (name, text) in [("title", &title), ("description", &report.description)] {
        if text.contains('\0') {
            return Err(IngestError::invalid(field(name), "holds a NUL byte"));
        }
    }
    if report.techniques.is_empty() || report.techniques.len() > MAX_LINKS {
        return Err(IngestError::invalid(
            field("techniques"),
            format!("between 1 and {MAX_LINKS} techniques"),
        ));
    }
    if report.actor_ids.len() > MAX_LINKS {
        return Err(IngestError::invalid(
            field("actor_ids"),
            format!("at most {MAX_LINKS} actors"),
        ));
    }
    let mut techniques = BTreeMap::new();
    for (j, (id, description)) in report.techniques.into_iter().enumerate() {
        let Some(id) = normalize_technique_id(&id) else {
            return Err(IngestError::invalid(
                format!("reports[{i}].techniques[{j}].technique_id"),
                "not an ATT&CK technique id (Tnnnn or Tnnnn.nnn)",
            ));
        };
        if description.len() > MAX_DESCRIPTION || description.contains('\0') {
            return Err(IngestError::invalid(
                format!("reports[{i}].techniques[{j}].description"),
                format!("at most {MAX_DESCRIPTION} bytes, no NUL byte"),
            ));
        }
        techniques.insert(id, description);
    }
    let mut actors = BTreeSet::new();
    for (j, actor) in report.actor_ids.into_iter().enumerate() {
        let actor = actor.trim().to_ascii_uppercase();
        let valid = actor.len() == 5
            && actor.starts_with('G')
            && actor[1..].bytes().all(|b| b.is_ascii_digit());
        if !valid {
            return Err(IngestError::invalid(
                format!("reports[{i}].actor_ids[{j}]"),
                "not an ATT&CK group id (Gnnnn)",
            ));
        }
        actors.insert(actor);
    }
    let now = Micros::now();
    for (name, at) in [
        ("published_at", report.published_at),
        ("first_seen", report.first_seen),
        ("last_seen", report.last_seen),
    ] {
        if at
            .is_some_and(|at| at < Micros::EPOCH || at > now + purple_runtime::time::MICROS_PER_DAY)
        {
            return Err(IngestError::invalid(
                field(name),
                "must be after 1970 and not more than a day ahead",
            ));
        }
    }
    Ok(IntelDraft {
        row: IntelReportRow {
            report_key: url.clone(),
            source: "analyst".to_owned(),
            campaign_id: String::new(),
            stix_id: String::new(),
            title,
            description: report.description,
            url,
            published_at: report.published_at,
            first_seen: report.first_seen,
            last_seen: report.last_seen,
            seen_at: IntelReportRow::seen(report.last_seen, report.published_at, report.first_seen),
            techniques: String::new(),
            actor_ids: String::new(),
            revoked: false,
            deprecated: false,
            content_hash: String::new(),
        },
        techniques,
        actors,
        stix_refs: Vec::new(),
    })
}
