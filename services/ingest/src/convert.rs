//! The wire edge of the ingest service: requests checked and turned into
//! domain queries, the catalogue's views and import reports turned into
//! responses. Every refusal names its field.

use std::collections::BTreeMap;

use purple_api::{
    batch::{in_request_order, shown},
    common::v1::RuleRef,
    ingest::v1 as pb,
};
use purple_runtime::{
    paging::Page,
    time::{timestamp, timestamp_opt},
    upload::Chunk,
};

use crate::{
    catalog::{ACTOR_KEY_LEN, RUN_KEY_LEN, TECHNIQUE_KEY_LEN},
    domain::{
        Kind, Report, split_rule_key,
        views::{
            CatalogInput, Control, Cve, Defense, Rule, RuleFilter, Subtechniques, Tactic,
            Technique, TechniqueQuery, Template, ThreatActor,
        },
    },
    error::IngestError,
};

/// The import kind of the wire enum; None for unset or unknown values.
pub fn kind_of(kind: i32) -> Option<Kind> {
    Some(match pb::ImportKind::try_from(kind).ok()? {
        pb::ImportKind::Unspecified => return None,
        pb::ImportKind::Attack => Kind::Attack,
        pb::ImportKind::D3fend => Kind::D3fend,
        pb::ImportKind::Sigma => Kind::Sigma,
        pb::ImportKind::Elastic => Kind::Elastic,
        pb::ImportKind::Atomic => Kind::Atomic,
        pb::ImportKind::Caldera => Kind::Caldera,
        pb::ImportKind::Lolbas => Kind::Lolbas,
        pb::ImportKind::Nist => Kind::Nist,
        pb::ImportKind::Cve => Kind::Cve,
        pb::ImportKind::StixReports => Kind::StixReports,
        pb::ImportKind::Kev => Kind::Kev,
    })
}

/// The wire enum of an import kind.
pub fn kind_pb(kind: Kind) -> pb::ImportKind {
    match kind {
        Kind::Attack => pb::ImportKind::Attack,
        Kind::D3fend => pb::ImportKind::D3fend,
        Kind::Sigma => pb::ImportKind::Sigma,
        Kind::Elastic => pb::ImportKind::Elastic,
        Kind::Atomic => pb::ImportKind::Atomic,
        Kind::Caldera => pb::ImportKind::Caldera,
        Kind::Lolbas => pb::ImportKind::Lolbas,
        Kind::Nist => pb::ImportKind::Nist,
        Kind::Cve => pb::ImportKind::Cve,
        Kind::StixReports => pb::ImportKind::StixReports,
        Kind::Kev => pb::ImportKind::Kev,
    }
}

/// An upload chunk; an unknown kind is named "" (refused on the first
/// chunk).
pub fn chunk(r: pb::ImportRequest) -> Chunk {
    Chunk {
        kind: kind_of(r.kind).map_or("", Kind::name).to_owned(),
        file_name: r.file_name,
        data: r.data,
        last: r.last,
    }
}

/// A report as the API returns it.
pub fn report_pb(report: Report) -> pb::ImportReport {
    pb::ImportReport {
        created: report.created(),
        updated: report.updated(),
        run_id: report.run_id,
        kind: Kind::parse(&report.kind).map_or(pb::ImportKind::Unspecified, kind_pb) as i32,
        status: if report.succeeded {
            pb::ImportStatus::Succeeded
        } else {
            pb::ImportStatus::Failed
        } as i32,
        files: report.files,
        attack_version: report.attack_version,
        counts: report
            .counts
            .into_iter()
            .map(|(name, c)| {
                let counts = pb::EntityCounts {
                    created: c.created,
                    updated: c.updated,
                    unchanged: c.unchanged,
                    revoked: c.revoked,
                    deprecated: c.deprecated,
                    removed: c.removed,
                };
                (name, counts)
            })
            .collect(),
        unresolved_references: report.unresolved_references,
        skipped: report
            .skipped
            .into_iter()
            .map(|s| pb::SkippedItem {
                file_name: s.file_name,
                location: s.location,
                reason: s.reason,
            })
            .collect(),
        error: report.error,
        started_at: Some(timestamp(report.started_at)),
        finished_at: Some(timestamp(report.finished_at)),
    }
}

/// The import run list's page.
pub fn runs_page(r: &pb::ListImportRunsRequest) -> Result<Page, IngestError> {
    Ok(Page::parse(
        r.page_size,
        &r.page_token,
        50,
        "",
        RUN_KEY_LEN,
    )?)
}

/// The technique list's filters and page.
pub fn technique_query(
    r: &pb::ListTechniquesRequest,
) -> Result<(TechniqueQuery, Page), IngestError> {
    let subtechniques = match pb::SubtechniqueFilter::try_from(r.subtechniques) {
        Ok(pb::SubtechniqueFilter::Unspecified) => Subtechniques::Both,
        Ok(pb::SubtechniqueFilter::Exclude) => Subtechniques::Exclude,
        Ok(pb::SubtechniqueFilter::Only) => Subtechniques::Only,
        Err(_) => {
            return Err(IngestError::invalid(
                "subtechniques",
                format!("unknown value {}", r.subtechniques),
            ));
        }
    };
    let query = TechniqueQuery {
        tactic: r.tactic.clone(),
        platform: r.platform.clone(),
        subtechniques,
        include_revoked: r.include_revoked,
        brief: r.brief,
    };
    let filters = format!(
        "{}|{}|{:?}|{}",
        query.tactic, query.platform, query.subtechniques, query.include_revoked
    );
    let page = Page::parse(r.page_size, &r.page_token, 100, &filters, TECHNIQUE_KEY_LEN)?;
    Ok((query, page))
}

/// The actor list's page.
pub fn actors_page(r: &pb::ListThreatActorsRequest) -> Result<Page, IngestError> {
    Ok(Page::parse(
        r.page_size,
        &r.page_token,
        100,
        &r.include_revoked.to_string(),
        ACTOR_KEY_LEN,
    )?)
}

/// Items found for the requested ids, in request order, and the ids not
/// found.
pub fn in_order<T, P>(
    ids: &[String],
    found: BTreeMap<String, T>,
    to_pb: impl Fn(T) -> P,
) -> (Vec<P>, Vec<String>) {
    let (items, missing) = in_request_order(ids, found);
    (items.into_iter().map(to_pb).collect(), missing)
}

impl From<Technique> for pb::Technique {
    fn from(t: Technique) -> Self {
        pb::Technique {
            technique_id: t.technique_id,
            name: t.name,
            description: t.description,
            is_subtechnique: t.is_subtechnique,
            parent_id: t.parent_id.unwrap_or_default(),
            tactics: t.tactics,
            platforms: t.platforms,
            revoked: t.revoked,
            deprecated: t.deprecated,
            stix_id: t.stix_id,
            attack_version: t.attack_version,
        }
    }
}

impl From<Tactic> for pb::Tactic {
    fn from(t: Tactic) -> Self {
        pb::Tactic {
            tactic_id: t.tactic_id,
            short_name: t.short_name,
            name: t.name,
            ordinal: t.ordinal as i32,
            technique_count: t.technique_count as i32,
        }
    }
}

impl From<CatalogInput> for pb::CatalogInput {
    fn from(i: CatalogInput) -> Self {
        let enabled_rules: Vec<RuleRef> = i
            .enabled_rule_keys
            .iter()
            .map(|key| {
                let (source, rule_id) = split_rule_key(key);
                RuleRef {
                    source: source.to_owned(),
                    rule_id: rule_id.to_owned(),
                }
            })
            .collect();
        #[allow(deprecated)]
        pb::CatalogInput {
            technique_id: i.technique_id,
            enabled_rule_ids: enabled_rules.iter().map(|r| r.rule_id.clone()).collect(),
            enabled_rules,
            countermeasure_count: i.countermeasure_count as i32,
            actor_count: i.actor_count as i32,
            live: i.live,
        }
    }
}

/// The filter and page of a rule listing.
pub fn rules_query(r: &pb::ListDetectionRulesRequest) -> Result<(RuleFilter, Page), IngestError> {
    let filter = RuleFilter {
        source: r.source.trim().to_ascii_lowercase(),
        enabled: r.enabled,
        technique_id: r.technique_id.trim().to_ascii_uppercase(),
        status: r.status.trim().to_ascii_lowercase(),
    };
    if !matches!(filter.source.as_str(), "" | "sigma" | "elastic") {
        return Err(IngestError::invalid(
            "source",
            format!("{} is neither sigma nor elastic", shown(&r.source)),
        ));
    }
    for (field, value) in [("technique_id", &r.technique_id), ("status", &r.status)] {
        if value.len() > 64 || value.chars().any(char::is_control) {
            return Err(IngestError::invalid(
                field,
                format!("{} is not a plausible {field}", shown(value)),
            ));
        }
    }
    let scope = format!(
        "{}|{:?}|{}|{}",
        filter.source, filter.enabled, filter.technique_id, filter.status
    );
    let page = Page::parse(r.page_size, &r.page_token, 100, &scope, RULE_KEY_LEN)?;
    Ok((filter, page))
}

/// The sort key of the rule listing: (source, rule id).
const RULE_KEY_LEN: usize = 2;

/// Rules found per requested upstream id, flattened in request order, and
/// the ids with none.
pub fn rules_in_order(
    ids: &[String],
    found: &BTreeMap<String, Vec<Rule>>,
) -> (Vec<pb::DetectionRule>, Vec<String>) {
    let (mut rules, mut missing) = (Vec::new(), Vec::new());
    for id in ids {
        match found.get(id) {
            Some(list) => rules.extend(list.iter().cloned().map(pb::DetectionRule::from)),
            None => missing.push(id.clone()),
        }
    }
    (rules, missing)
}

impl From<ThreatActor> for pb::ThreatActor {
    fn from(a: ThreatActor) -> Self {
        pb::ThreatActor {
            actor_id: a.actor_id,
            name: a.name,
            aliases: a.aliases,
            description: a.description,
            revoked: a.revoked,
            deprecated: a.deprecated,
            technique_count: a.technique_count as i32,
        }
    }
}

impl From<Defense> for pb::DefensiveTechnique {
    fn from(d: Defense) -> Self {
        pb::DefensiveTechnique {
            defense_id: d.defense_id,
            name: d.name,
            tactic: d.tactic,
        }
    }
}

impl From<Template> for pb::TestTemplate {
    fn from(t: Template) -> Self {
        pb::TestTemplate {
            template_id: t.template_id,
            source: t.source,
            technique_id: t.technique_id,
            name: t.name,
            description: t.description,
            platforms: t.platforms,
            executor: t.executor,
            command: t.command,
        }
    }
}

impl From<Rule> for pb::DetectionRule {
    fn from(r: Rule) -> Self {
        pb::DetectionRule {
            rule_id: r.rule_id,
            source: r.source,
            title: r.title,
            level: r.level,
            status: r.status,
            enabled: r.enabled,
            technique_ids: r.technique_ids,
            file_name: r.file_name,
        }
    }
}

impl From<Cve> for pb::Cve {
    fn from(c: Cve) -> Self {
        pb::Cve {
            cve_id: c.cve_id,
            description: c.description,
            cvss_score: c.cvss_score,
            link: c.link,
            known_exploited: c.known_exploited,
            published_at: timestamp_opt(c.published_at),
            kev: c.kev.map(|k| pb::KevEntry {
                vendor_project: k.vendor_project,
                product: k.product,
                vulnerability_name: k.vulnerability_name,
                date_added: timestamp_opt(k.date_added),
                due_date: timestamp_opt(k.due_date),
                known_ransomware_use: k.ransomware,
                required_action: k.required_action,
                short_description: k.short_description,
            }),
            links: c.links,
        }
    }
}

impl From<Control> for pb::Control {
    fn from(c: Control) -> Self {
        pb::Control {
            control_id: c.control_id,
            name: c.name,
            family: c.family,
        }
    }
}

fn all<T, P: From<T>>(items: Vec<T>) -> Vec<P> {
    items.into_iter().map(P::from).collect()
}

/// Per-technique defenses on the wire.
pub fn technique_defenses(technique_id: String, defenses: Vec<Defense>) -> pb::TechniqueDefenses {
    pb::TechniqueDefenses {
        technique_id,
        defenses: all(defenses),
    }
}

/// Per-technique templates on the wire.
pub fn technique_templates(
    technique_id: String,
    templates: Vec<Template>,
) -> pb::TechniqueTemplates {
    pb::TechniqueTemplates {
        technique_id,
        templates: all(templates),
    }
}

/// Per-technique CVEs on the wire.
pub fn technique_cves(technique_id: String, cves: Vec<Cve>) -> pb::TechniqueCves {
    pb::TechniqueCves {
        technique_id,
        cves: all(cves),
    }
}

/// Per-technique controls on the wire.
pub fn technique_controls(technique_id: String, controls: Vec<Control>) -> pb::TechniqueControls {
    pb::TechniqueControls {
        technique_id,
        controls: all(controls),
    }
}

/// Grouped items for the requested ids, wrapped per id, in request order.
pub fn grouped_in_order<T: Clone, P>(
    ids: &[String],
    found: BTreeMap<String, Vec<T>>,
    wrap: impl Fn(String, Vec<T>) -> P,
) -> (Vec<P>, Vec<String>) {
    let keyed: BTreeMap<String, (String, Vec<T>)> = found
        .into_iter()
        .map(|(k, v)| (k.clone(), (k, v)))
        .collect();
    in_order(ids, keyed, |(id, items)| wrap(id, items))
}

/// An optional request instant, refused when malformed.
fn instant_opt(
    field: &str,
    ts: Option<&prost_types::Timestamp>,
) -> Result<Option<purple_runtime::time::Micros>, IngestError> {
    ts.map(|ts| {
        purple_runtime::time::from_timestamp(ts)
            .map_err(|e| IngestError::invalid(field, e.to_string()))
    })
    .transpose()
}

/// Analysts' reports as the domain checks them.
pub fn new_reports(
    r: pb::CreateIntelReportsRequest,
) -> Result<Vec<crate::intel::NewReport>, IngestError> {
    purple_api::batch::check_batch_len("reports", r.reports.len())?;
    r.reports
        .into_iter()
        .enumerate()
        .map(|(i, report)| {
            let field = |name: &str| format!("reports[{i}].{name}");
            Ok(crate::intel::NewReport {
                published_at: instant_opt(&field("published_at"), report.published_at.as_ref())?,
                first_seen: instant_opt(&field("first_seen"), report.first_seen.as_ref())?,
                last_seen: instant_opt(&field("last_seen"), report.last_seen.as_ref())?,
                url: report.url,
                title: report.title,
                description: report.description,
                techniques: report
                    .techniques
                    .into_iter()
                    .map(|t| (t.technique_id, t.description))
                    .collect(),
                actor_ids: report.actor_ids,
            })
        })
        .collect()
}

/// The report list's filters and page.
pub fn intel_query(
    r: &pb::ListIntelReportsRequest,
) -> Result<(crate::domain::views::IntelFilter, Page), IngestError> {
    let since =
        instant_opt("since", r.since.as_ref())?.unwrap_or(purple_runtime::time::Micros::MIN);
    let filter = crate::domain::views::IntelFilter {
        technique_id: r.technique_id.trim().to_ascii_uppercase(),
        actor_id: r.actor_id.trim().to_ascii_uppercase(),
        since,
    };
    let fingerprint = format!(
        "{}|{}|{}",
        filter.technique_id,
        filter.actor_id,
        since.as_micros()
    );
    let page = Page::parse(
        r.page_size,
        &r.page_token,
        100,
        &fingerprint,
        crate::intel::INTEL_KEY_LEN,
    )?;
    Ok((filter, page))
}

/// The "since" and per-technique limit of GetIntelForTechniques.
pub fn intel_for_query(
    r: &pb::GetIntelForTechniquesRequest,
) -> Result<(purple_runtime::time::Micros, i64), IngestError> {
    let since =
        instant_opt("since", r.since.as_ref())?.unwrap_or(purple_runtime::time::Micros::MIN);
    let limit = match r.limit_per_technique {
        0 => 20,
        n if (1..=100).contains(&n) => n,
        _ => {
            return Err(IngestError::invalid(
                "limit_per_technique",
                "between 1 and 100 (0 for the default, 20)",
            ));
        }
    };
    Ok((since, i64::from(limit)))
}

/// The "since" of GetThreatSignals (unset: every report).
pub fn signals_since(
    r: &pb::GetThreatSignalsRequest,
) -> Result<purple_runtime::time::Micros, IngestError> {
    Ok(instant_opt("intel_since", r.intel_since.as_ref())?
        .unwrap_or(purple_runtime::time::Micros::MIN))
}

fn intel_source(source: &str) -> pb::IntelSource {
    match source {
        "attack_campaign" => pb::IntelSource::AttackCampaign,
        "stix_report" => pb::IntelSource::StixReport,
        "analyst" => pb::IntelSource::Analyst,
        _ => pb::IntelSource::Unspecified,
    }
}

impl From<crate::domain::views::IntelReport> for pb::IntelReport {
    fn from(r: crate::domain::views::IntelReport) -> Self {
        pb::IntelReport {
            report_key: r.report_key,
            source: intel_source(&r.source).into(),
            title: r.title,
            description: r.description,
            url: r.url,
            published_at: timestamp_opt(r.published_at),
            first_seen: timestamp_opt(r.first_seen),
            last_seen: timestamp_opt(r.last_seen),
            techniques: r
                .techniques
                .into_iter()
                .map(|t| pb::IntelTechnique {
                    technique_id: t.technique_id,
                    description: t.description,
                })
                .collect(),
            actor_ids: r.actor_ids,
            campaign_id: r.campaign_id,
            revoked: r.revoked,
        }
    }
}

impl From<crate::domain::views::ThreatSignals> for pb::ThreatSignals {
    fn from(s: crate::domain::views::ThreatSignals) -> Self {
        pb::ThreatSignals {
            technique_id: s.technique_id,
            recent_reports: s.recent_reports as i32,
            latest_report: timestamp_opt(s.latest_report),
            report_titles: s.report_titles,
            kev_cves: s.kev_cves as i32,
            ransomware_cves: s.ransomware_cves as i32,
            actor_ids: s.actor_ids,
        }
    }
}
