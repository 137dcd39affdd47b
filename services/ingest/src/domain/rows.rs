//! The catalogue's rows as importers produce them and the store writes
//! them: one struct per table, each with its key and a content hash that
//! a re-import compares. Flags are `bool` here; they serialize as 0/1, the
//! portable representation every migration uses (and the one the content
//! hashes were first computed over, so a hash does not change with it).

use serde::{Serialize, Serializer};

use purple_runtime::time::Micros;

use super::content_hash;

/// A flag as the stores keep it: 0 or 1.
pub fn flag<S: Serializer>(value: &bool, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_i64(i64::from(*value))
}

/// A row with a key and a hash of its content.
pub trait Entity: Serialize {
    /// The primary key.
    fn key(&self) -> &str;
    /// The content hash.
    fn hash(&self) -> &str;
    /// Whether the row is revoked (ATT&CK objects only).
    fn revoked(&self) -> bool {
        false
    }
    /// Whether the row is deprecated (ATT&CK objects only).
    fn deprecated(&self) -> bool {
        false
    }
}

macro_rules! entity {
    ($name:ident, $key:ident) => {
        impl Entity for $name {
            fn key(&self) -> &str {
                &self.$key
            }
            fn hash(&self) -> &str {
                &self.content_hash
            }
        }
    };
}

/// An ATT&CK tactic.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TacticRow {
    pub tactic_id: String,
    pub stix_id: String,
    pub short_name: String,
    pub name: String,
    pub description: String,
    pub ordinal: i64,
    #[serde(serialize_with = "flag")]
    pub revoked: bool,
    #[serde(serialize_with = "flag")]
    pub deprecated: bool,
    pub content_hash: String,
}

/// An ATT&CK technique or sub-technique.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TechniqueRow {
    pub technique_id: String,
    pub stix_id: String,
    pub name: String,
    pub description: String,
    #[serde(serialize_with = "flag")]
    pub is_subtechnique: bool,
    pub parent_id: Option<String>,
    pub tactics: String,
    pub platforms: String,
    #[serde(serialize_with = "flag")]
    pub revoked: bool,
    #[serde(serialize_with = "flag")]
    pub deprecated: bool,
    /// Not hashed: which release last changed the row.
    pub attack_version: String,
    pub content_hash: String,
}

/// An ATT&CK group.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ActorRow {
    pub actor_id: String,
    pub stix_id: String,
    pub name: String,
    pub aliases: String,
    pub description: String,
    #[serde(serialize_with = "flag")]
    pub revoked: bool,
    #[serde(serialize_with = "flag")]
    pub deprecated: bool,
    pub content_hash: String,
}

/// An ATT&CK mitigation.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MitigationRow {
    pub mitigation_id: String,
    pub stix_id: String,
    pub name: String,
    pub description: String,
    #[serde(serialize_with = "flag")]
    pub revoked: bool,
    #[serde(serialize_with = "flag")]
    pub deprecated: bool,
    pub content_hash: String,
}

/// A D3FEND defensive technique.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DefenseRow {
    pub defense_id: String,
    pub name: String,
    pub tactic: String,
    pub content_hash: String,
}

/// A detection rule, keyed by source and upstream id together.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RuleRow {
    /// `source:rule_id` ([`rule_key`]).
    pub rule_key: String,
    pub rule_id: String,
    pub source: String,
    pub title: String,
    pub level: String,
    pub status: String,
    #[serde(serialize_with = "flag")]
    pub enabled: bool,
    pub file_name: String,
    pub technique_ids: String,
    pub cve_ids: String,
    pub content_hash: String,
}

/// A test template.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TemplateRow {
    pub template_id: String,
    pub source: String,
    pub technique_id: String,
    pub name: String,
    pub description: String,
    pub platforms: String,
    pub executor: String,
    pub command: String,
    pub content_hash: String,
}

/// A NIST 800-53 control.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ControlRow {
    pub control_id: String,
    pub name: String,
    pub family: String,
    pub content_hash: String,
}

/// A CVE.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CveRow {
    pub cve_id: String,
    pub description: String,
    pub cvss_score: f64,
    pub link: String,
    #[serde(serialize_with = "flag")]
    pub known_exploited: bool,
    pub published_at: Option<Micros>,
    pub content_hash: String,
}

/// A threat-intelligence report (docs/design.md §2, "Intel and KEV").
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IntelReportRow {
    /// The URL, or the STIX id when there is none.
    pub report_key: String,
    /// `attack_campaign`, `stix_report` or `analyst`.
    pub source: String,
    pub campaign_id: String,
    pub stix_id: String,
    pub title: String,
    pub description: String,
    pub url: String,
    pub published_at: Option<Micros>,
    pub first_seen: Option<Micros>,
    pub last_seen: Option<Micros>,
    /// last_seen, else published_at, else first_seen, else 0.
    pub seen_at: Micros,
    /// JSON `[{"technique_id","description"}]`, by technique id.
    pub techniques: String,
    /// JSON `["G0032"]`, sorted.
    pub actor_ids: String,
    #[serde(serialize_with = "flag")]
    pub revoked: bool,
    #[serde(serialize_with = "flag")]
    pub deprecated: bool,
    pub content_hash: String,
}

impl IntelReportRow {
    /// The instant windows read: last seen, else published, else first seen.
    pub fn seen(
        last_seen: Option<Micros>,
        published_at: Option<Micros>,
        first_seen: Option<Micros>,
    ) -> Micros {
        last_seen
            .or(published_at)
            .or(first_seen)
            .unwrap_or(Micros::EPOCH)
    }
}

/// A technique an intel report names, with what the report says of it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct IntelTechniqueLink {
    pub technique_id: String,
    pub description: String,
}

/// A CVE's entry in CISA's Known Exploited Vulnerabilities catalogue.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KevRow {
    pub cve_id: String,
    pub vendor_project: String,
    pub product: String,
    pub vulnerability_name: String,
    pub date_added: Option<Micros>,
    pub due_date: Option<Micros>,
    #[serde(serialize_with = "flag")]
    pub ransomware: bool,
    pub required_action: String,
    pub short_description: String,
    pub content_hash: String,
}

/// One (CVE, technique, mapping type) of the KEV → ATT&CK mapping.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KevMappingRow {
    /// `cve|technique|type`.
    pub mapping_key: String,
    pub cve_id: String,
    pub technique_id: String,
    pub mapping_type: String,
    pub content_hash: String,
}

macro_rules! attack_entity {
    ($name:ident, $key:ident) => {
        impl Entity for $name {
            fn key(&self) -> &str {
                &self.$key
            }
            fn hash(&self) -> &str {
                &self.content_hash
            }
            fn revoked(&self) -> bool {
                self.revoked
            }
            fn deprecated(&self) -> bool {
                self.deprecated
            }
        }
    };
}

attack_entity!(TacticRow, tactic_id);
attack_entity!(TechniqueRow, technique_id);
attack_entity!(ActorRow, actor_id);
attack_entity!(MitigationRow, mitigation_id);
attack_entity!(IntelReportRow, report_key);
entity!(KevRow, cve_id);
entity!(KevMappingRow, mapping_key);
entity!(DefenseRow, defense_id);
entity!(RuleRow, rule_key);
entity!(TemplateRow, template_id);
entity!(ControlRow, control_id);
entity!(CveRow, cve_id);

/// Sets the row's content hash from its other fields.
pub trait Hashed: Serialize + Sized {
    /// The hash field.
    fn hash_field(&mut self) -> &mut String;
    /// Computes and stores the hash; returns the row.
    fn hashed(mut self) -> Self {
        self.hash_field().clear();
        let hash = content_hash(&self);
        *self.hash_field() = hash;
        self
    }
}

macro_rules! hashed {
    ($($name:ident),*) => {
        $(impl Hashed for $name {
            fn hash_field(&mut self) -> &mut String {
                &mut self.content_hash
            }
        })*
    };
}

hashed!(
    TacticRow,
    ActorRow,
    MitigationRow,
    DefenseRow,
    RuleRow,
    TemplateRow,
    ControlRow,
    CveRow,
    IntelReportRow,
    KevRow,
    KevMappingRow
);

impl Hashed for TechniqueRow {
    fn hash_field(&mut self) -> &mut String {
        &mut self.content_hash
    }

    fn hashed(mut self) -> Self {
        // The release is bookkeeping, not content: the same technique from
        // a 2.0 and a 2.1 bundle is unchanged.
        let version = std::mem::take(&mut self.attack_version);
        self.content_hash.clear();
        self.content_hash = content_hash(&self);
        self.attack_version = version;
        self
    }
}

/// The key of a rule: upstream ids are unique within a source only.
pub fn rule_key(source: &str, rule_id: &str) -> String {
    format!("{source}:{rule_id}")
}

/// The (source, rule id) of a key; a key without a source (`:id`, or a
/// bare id) names the id in any source.
pub fn split_rule_key(key: &str) -> (&str, &str) {
    key.split_once(':').unwrap_or(("", key))
}
