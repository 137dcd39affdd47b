//! The roles table: for every RPC, the roles it accepts — data in one
//! place, checked by the gate before any handler runs, and rendered in
//! SECURITY.md (a test keeps the two equal). Finer rules that depend on
//! the request (which workflow action, whose notifications) stay in the
//! services, which see the caller.
//!
//! Reads need any human role; internal RPCs (the catalogue inputs and test
//! aggregates scoring computes from, the audit events and invalidations the
//! outbox delivers) accept only the `service` role.

use purple_api::common::v1::Role::{self, *};

/// Every role a person can hold.
const PEOPLE: &[Role] = &[Admin, PurpleLead, RedTech, BlueTech, Viewer];
/// Anyone who may read: people and services.
const READERS: &[Role] = &[Admin, PurpleLead, RedTech, BlueTech, Viewer, Service];
/// Those who plan the program.
const PLANNERS: &[Role] = &[Admin, PurpleLead];
/// Another Purple service only.
const INTERNAL: &[Role] = &[Service];

/// (full method name, the roles it accepts).
pub const TABLE: &[(&str, &[Role])] = &[
    // ingest
    ("purple.ingest.v1.IngestService/Import", &[Admin, Service]),
    ("purple.ingest.v1.IngestService/ListImportRuns", READERS),
    ("purple.ingest.v1.IngestService/GetTechniquesByIds", READERS),
    ("purple.ingest.v1.IngestService/ListTechniques", READERS),
    ("purple.ingest.v1.IngestService/ListTactics", READERS),
    ("purple.ingest.v1.IngestService/GetCatalogInputs", INTERNAL),
    ("purple.ingest.v1.IngestService/ListThreatActors", READERS),
    ("purple.ingest.v1.IngestService/ListDetectionRules", READERS),
    (
        "purple.ingest.v1.IngestService/GetThreatActorsByIds",
        READERS,
    ),
    ("purple.ingest.v1.IngestService/GetActorTechniques", READERS),
    (
        "purple.ingest.v1.IngestService/GetDefensesForTechniques",
        READERS,
    ),
    (
        "purple.ingest.v1.IngestService/GetTemplatesForTechniques",
        READERS,
    ),
    (
        "purple.ingest.v1.IngestService/GetDetectionRulesByIds",
        READERS,
    ),
    (
        "purple.ingest.v1.IngestService/GetCvesForTechniques",
        READERS,
    ),
    (
        "purple.ingest.v1.IngestService/GetControlsForTechniques",
        READERS,
    ),
    (
        "purple.ingest.v1.IngestService/CreateIntelReports",
        &[Admin, PurpleLead, Service],
    ),
    ("purple.ingest.v1.IngestService/ListIntelReports", READERS),
    (
        "purple.ingest.v1.IngestService/GetIntelForTechniques",
        READERS,
    ),
    ("purple.ingest.v1.IngestService/GetThreatSignals", READERS),
    // campaigns
    ("purple.campaigns.v1.CampaignsService/CreateUsers", &[Admin]),
    ("purple.campaigns.v1.CampaignsService/ListUsers", READERS),
    ("purple.campaigns.v1.CampaignsService/CreateTests", PLANNERS),
    (
        "purple.campaigns.v1.CampaignsService/GetTestsByIds",
        READERS,
    ),
    ("purple.campaigns.v1.CampaignsService/ListTests", READERS),
    (
        "purple.campaigns.v1.CampaignsService/TransitionTest",
        &[Admin, PurpleLead, RedTech, BlueTech],
    ),
    (
        "purple.campaigns.v1.CampaignsService/RecordDetectionResults",
        &[PurpleLead, BlueTech],
    ),
    (
        "purple.campaigns.v1.CampaignsService/AggregateTestsByTechnique",
        INTERNAL,
    ),
    (
        "purple.campaigns.v1.CampaignsService/GetRetestChain",
        READERS,
    ),
    (
        "purple.campaigns.v1.CampaignsService/ListStaleTests",
        READERS,
    ),
    (
        "purple.campaigns.v1.CampaignsService/CreateCampaign",
        PLANNERS,
    ),
    (
        "purple.campaigns.v1.CampaignsService/GetCampaignsByIds",
        READERS,
    ),
    (
        "purple.campaigns.v1.CampaignsService/ListCampaigns",
        READERS,
    ),
    (
        "purple.campaigns.v1.CampaignsService/GetCampaignProgress",
        READERS,
    ),
    (
        "purple.campaigns.v1.CampaignsService/GenerateCampaignFromThreatActor",
        PLANNERS,
    ),
    (
        "purple.campaigns.v1.CampaignsService/CloneCampaign",
        PLANNERS,
    ),
    (
        "purple.campaigns.v1.CampaignsService/SetCampaignSchedule",
        PLANNERS,
    ),
    (
        "purple.campaigns.v1.CampaignsService/RunDueCampaigns",
        &[Admin, Service],
    ),
    (
        "purple.campaigns.v1.CampaignsService/GetCampaignReport",
        READERS,
    ),
    (
        "purple.campaigns.v1.CampaignsService/GetDetectionResults",
        READERS,
    ),
    (
        "purple.campaigns.v1.CampaignsService/ImportHistory",
        &[Admin],
    ),
    (
        "purple.campaigns.v1.CampaignsService/ExportHistory",
        PLANNERS,
    ),
    (
        "purple.campaigns.v1.CampaignsService/ListRemediations",
        READERS,
    ),
    (
        "purple.campaigns.v1.CampaignsService/TransitionRemediation",
        &[Admin, PurpleLead, BlueTech],
    ),
    (
        "purple.campaigns.v1.CampaignsService/ListNotifications",
        PEOPLE,
    ),
    (
        "purple.campaigns.v1.CampaignsService/MarkNotificationsRead",
        PEOPLE,
    ),
    (
        "purple.campaigns.v1.CampaignsService/AddWorklog",
        &[Admin, PurpleLead, RedTech, BlueTech],
    ),
    ("purple.campaigns.v1.CampaignsService/ListWorklogs", READERS),
    (
        "purple.campaigns.v1.CampaignsService/ListDeadLetters",
        &[Admin],
    ),
    (
        "purple.campaigns.v1.CampaignsService/NotifyRegressions",
        INTERNAL,
    ),
    // scoring
    ("purple.scoring.v1.ScoringService/ScoreTechniques", READERS),
    ("purple.scoring.v1.ScoringService/ScoreTactics", READERS),
    (
        "purple.scoring.v1.ScoringService/ScoreThreatActors",
        READERS,
    ),
    (
        "purple.scoring.v1.ScoringService/GetOrganizationScore",
        READERS,
    ),
    ("purple.scoring.v1.ScoringService/GetHeatmap", READERS),
    (
        "purple.scoring.v1.ScoringService/ExportNavigatorLayer",
        READERS,
    ),
    (
        "purple.scoring.v1.ScoringService/CreateSnapshot",
        &[Admin, PurpleLead, Service],
    ),
    ("purple.scoring.v1.ScoringService/ListSnapshots", READERS),
    ("purple.scoring.v1.ScoringService/GetSnapshot", READERS),
    ("purple.scoring.v1.ScoringService/CompareSnapshots", READERS),
    (
        "purple.scoring.v1.ScoringService/InvalidateTechniques",
        INTERNAL,
    ),
    ("purple.scoring.v1.ScoringService/PlanNextTests", READERS),
    ("purple.scoring.v1.ScoringService/WatchScores", READERS),
    // metrics
    ("purple.metrics.v1.MetricsService/RecordEvents", INTERNAL),
    ("purple.metrics.v1.MetricsService/GetMttd", READERS),
    ("purple.metrics.v1.MetricsService/GetMttr", READERS),
    (
        "purple.metrics.v1.MetricsService/GetRejectionRates",
        READERS,
    ),
    (
        "purple.metrics.v1.MetricsService/GetOperationalTrend",
        READERS,
    ),
    (
        "purple.metrics.v1.MetricsService/GetOperationalSummary",
        READERS,
    ),
    ("purple.metrics.v1.MetricsService/ListAuditEvents", READERS),
];

/// What the gate does with a request path (`/package.Service/Method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// No token needed: health checks (and reflection when it is on).
    Open,
    /// A token with one of these roles.
    Roles(&'static [Role]),
    /// Not a method Purple serves: refused whatever the token.
    Unknown,
}

/// The rule of a request path.
pub fn rule(path: &str) -> Rule {
    let method = path.trim_start_matches('/');
    if method.starts_with("grpc.health.v1.Health/") || method.starts_with("grpc.reflection.") {
        return Rule::Open;
    }
    TABLE
        .iter()
        .find(|(name, _)| *name == method)
        .map_or(Rule::Unknown, |(_, roles)| Rule::Roles(roles))
}

/// The roles table as a Markdown table (method, roles), for SECURITY.md.
pub fn markdown() -> String {
    let mut out = String::from("| RPC | roles |\n|---|---|\n");
    for (method, roles) in TABLE {
        let names: Vec<&str> = roles.iter().filter_map(|r| r.key()).collect();
        out.push_str(&format!("| `{method}` | {} |\n", names.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_open_and_unknown_methods_are_refused() {
        assert_eq!(rule("/grpc.health.v1.Health/Check"), Rule::Open);
        assert_eq!(
            rule("/purple.metrics.v1.MetricsService/Nope"),
            Rule::Unknown
        );
        assert_eq!(
            rule("/purple.metrics.v1.MetricsService/RecordEvents"),
            Rule::Roles(&[Service])
        );
    }

    #[test]
    fn the_table_names_each_method_once() {
        let mut names: Vec<&str> = TABLE.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
