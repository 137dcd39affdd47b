//! The catalogue as the batch reads return it: what a technique, tactic,
//! actor, rule, template, defense, control or CVE is to the other services
//! and to users. The store builds these from its rows; the API's
//! conversions put them on the wire.

use purple_runtime::time::Micros;

/// Which levels of the technique tree a list returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Subtechniques {
    /// Techniques and sub-techniques.
    #[default]
    Both,
    /// Top-level techniques only.
    Exclude,
    /// Sub-techniques only.
    Only,
}

/// Which techniques a list returns.
#[derive(Clone, Debug, Default)]
pub struct TechniqueQuery {
    /// Only techniques of this tactic (short name); "" for all.
    pub tactic: String,
    /// Only techniques on this platform (case-insensitive); "" for all.
    pub platform: String,
    /// Techniques, sub-techniques or both.
    pub subtechniques: Subtechniques,
    /// Revoked and deprecated techniques too.
    pub include_revoked: bool,
    /// Descriptions left empty.
    pub brief: bool,
}

/// An ATT&CK technique or sub-technique.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Technique {
    pub technique_id: String,
    pub stix_id: String,
    pub name: String,
    pub description: String,
    pub is_subtechnique: bool,
    /// The parent's id for a sub-technique.
    pub parent_id: Option<String>,
    /// Tactic short names of its kill-chain phases.
    pub tactics: Vec<String>,
    pub platforms: Vec<String>,
    pub revoked: bool,
    pub deprecated: bool,
    /// The ATT&CK release that last changed it.
    pub attack_version: String,
}

/// A live tactic with its number of live techniques.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tactic {
    pub tactic_id: String,
    pub short_name: String,
    pub name: String,
    /// Position in the kill chain.
    pub ordinal: i64,
    pub technique_count: i64,
}

/// The catalogue side of a technique's score (docs/design.md §4).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CatalogInput {
    pub technique_id: String,
    /// Neither revoked nor deprecated.
    pub live: bool,
    /// Distinct D3FEND techniques of it or its parent.
    pub countermeasure_count: i64,
    /// Live threat actors using it.
    pub actor_count: i64,
    /// Enabled rules mapped directly to it, as rule keys (`source:id`).
    pub enabled_rule_keys: Vec<String>,
}

/// Which rules a listing returns; empty strings and None match any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleFilter {
    pub source: String,
    pub enabled: Option<bool>,
    pub technique_id: String,
    pub status: String,
}

/// An ATT&CK group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThreatActor {
    pub actor_id: String,
    pub name: String,
    pub aliases: Vec<String>,
    pub description: String,
    pub revoked: bool,
    pub deprecated: bool,
    /// Live techniques it uses.
    pub technique_count: i64,
}

/// A D3FEND defensive technique.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Defense {
    pub defense_id: String,
    pub name: String,
    pub tactic: String,
}

/// A test template (Atomic Red Team, CALDERA, LOLBAS).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Template {
    pub template_id: String,
    pub source: String,
    pub technique_id: String,
    pub name: String,
    pub description: String,
    pub platforms: Vec<String>,
    pub executor: String,
    pub command: String,
}

/// A detection rule (Sigma, Elastic).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rule {
    pub rule_id: String,
    pub source: String,
    pub title: String,
    pub level: String,
    pub status: String,
    pub enabled: bool,
    pub file_name: String,
    pub technique_ids: Vec<String>,
}

/// A CVE.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cve {
    pub cve_id: String,
    pub description: String,
    pub cvss_score: f64,
    pub link: String,
    pub known_exploited: bool,
    pub published_at: Option<Micros>,
    /// Its KEV catalogue entry, when listed.
    pub kev: Option<Kev>,
    /// How it reaches the technique: "rule" and/or KEV mapping types.
    pub links: Vec<String>,
}

/// A CVE's KEV catalogue entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Kev {
    pub vendor_project: String,
    pub product: String,
    pub vulnerability_name: String,
    pub date_added: Option<Micros>,
    pub due_date: Option<Micros>,
    pub ransomware: bool,
    pub required_action: String,
    pub short_description: String,
}

/// An intel report with its technique and actor links.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IntelReport {
    pub report_key: String,
    pub source: String,
    pub campaign_id: String,
    pub title: String,
    pub description: String,
    pub url: String,
    pub published_at: Option<Micros>,
    pub first_seen: Option<Micros>,
    pub last_seen: Option<Micros>,
    pub seen_at: Micros,
    pub techniques: Vec<crate::domain::IntelTechniqueLink>,
    pub actor_ids: Vec<String>,
    pub revoked: bool,
}

/// The filters of the intel report list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IntelFilter {
    pub technique_id: String,
    pub actor_id: String,
    pub since: Micros,
}

/// One technique's intel: the most recent reports and how many in all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TechniqueIntel {
    pub technique_id: String,
    pub reports: Vec<IntelReport>,
    pub report_count: i64,
}

/// What a threat-informed plan weighs for one technique.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThreatSignals {
    pub technique_id: String,
    pub recent_reports: i64,
    pub latest_report: Option<Micros>,
    pub report_titles: Vec<String>,
    pub kev_cves: i64,
    pub ransomware_cves: i64,
    pub actor_ids: Vec<String>,
}

/// A NIST 800-53 control.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Control {
    pub control_id: String,
    pub name: String,
    pub family: String,
}
