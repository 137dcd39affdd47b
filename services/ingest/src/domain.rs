//! The catalogue's rows as importers produce them and stores write them,
//! and the rules every importer shares: ATT&CK id normalisation, content
//! hashing for change detection, and what an import yields.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

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

/// A stable hash of a row's content: what a re-import compares.
pub fn content_hash<T: Serialize>(row: &T) -> String {
    let bytes = serde_json::to_vec(row).expect("rows serialize");
    let digest = Sha256::digest(&bytes);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// `T1059`, ` t1059.001 ` → `T1059`, `T1059.001`; anything else is None.
pub fn normalize_technique_id(raw: &str) -> Option<String> {
    let id = raw.trim().to_ascii_uppercase();
    let bytes = id.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        range
            .clone()
            .all(|i| bytes.get(i).is_some_and(u8::is_ascii_digit))
    };
    let ok = match bytes.len() {
        5 => bytes[0] == b'T' && digits(1..5),
        9 => bytes[0] == b'T' && digits(1..5) && bytes[5] == b'.' && digits(6..9),
        _ => false,
    };
    ok.then_some(id)
}

/// The parent of a sub-technique id.
pub fn parent_of(technique_id: &str) -> Option<&str> {
    technique_id.split_once('.').map(|(parent, _)| parent)
}

/// JSON array text of a list.
pub fn json_list<S: Serialize>(items: &[S]) -> String {
    serde_json::to_string(items).expect("lists serialize")
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
    pub revoked: i64,
    pub deprecated: i64,
    pub content_hash: String,
}

/// An ATT&CK technique or sub-technique.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TechniqueRow {
    pub technique_id: String,
    pub stix_id: String,
    pub name: String,
    pub description: String,
    pub is_subtechnique: i64,
    pub parent_id: Option<String>,
    pub tactics: String,
    pub platforms: String,
    pub revoked: i64,
    pub deprecated: i64,
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
    pub revoked: i64,
    pub deprecated: i64,
    pub content_hash: String,
}

/// An ATT&CK mitigation.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MitigationRow {
    pub mitigation_id: String,
    pub stix_id: String,
    pub name: String,
    pub description: String,
    pub revoked: i64,
    pub deprecated: i64,
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

/// A detection rule.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RuleRow {
    pub rule_id: String,
    pub source: String,
    pub title: String,
    pub level: String,
    pub status: String,
    pub enabled: i64,
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
    pub known_exploited: i64,
    pub published_at: Option<i64>,
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
                self.revoked != 0
            }
            fn deprecated(&self) -> bool {
                self.deprecated != 0
            }
        }
    };
}

attack_entity!(TacticRow, tactic_id);
attack_entity!(TechniqueRow, technique_id);
attack_entity!(ActorRow, actor_id);
attack_entity!(MitigationRow, mitigation_id);
entity!(DefenseRow, defense_id);
entity!(RuleRow, rule_id);
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
    CveRow
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

/// An item of a valid file that could not be used, or a reference left
/// unresolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Skipped {
    /// The file.
    pub file_name: String,
    /// Where in it.
    pub location: String,
    /// Why.
    pub reason: String,
}

/// Everything one import yields, before it meets the database.
#[derive(Debug, Default)]
pub struct Parsed {
    pub attack_version: Option<String>,
    pub tactics: Vec<TacticRow>,
    pub techniques: Vec<TechniqueRow>,
    pub actors: Vec<ActorRow>,
    pub mitigations: Vec<MitigationRow>,
    /// (actor, technique) uses.
    pub actor_techniques: BTreeSet<(String, String)>,
    pub defenses: Vec<DefenseRow>,
    /// (technique, defense).
    pub technique_defenses: BTreeSet<(String, String)>,
    pub rules: Vec<RuleRow>,
    /// (rule, technique).
    pub rule_techniques: BTreeSet<(String, String)>,
    /// (rule, cve).
    pub rule_cves: BTreeSet<(String, String)>,
    pub templates: Vec<TemplateRow>,
    pub controls: Vec<ControlRow>,
    /// (control, technique).
    pub control_techniques: BTreeSet<(String, String)>,
    pub cves: Vec<CveRow>,
    pub skipped: Vec<Skipped>,
}

impl Parsed {
    /// Records an unusable item.
    pub fn skip(&mut self, file: &str, location: impl Into<String>, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            file_name: file.to_owned(),
            location: location.into(),
            reason: reason.into(),
        });
    }

    /// Whether it holds anything at all.
    pub fn is_empty(&self) -> bool {
        self.tactics.is_empty()
            && self.techniques.is_empty()
            && self.actors.is_empty()
            && self.defenses.is_empty()
            && self.technique_defenses.is_empty()
            && self.rules.is_empty()
            && self.templates.is_empty()
            && self.controls.is_empty()
            && self.cves.is_empty()
    }
}

/// Counts of one entity type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counts {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub revoked: u64,
    pub deprecated: u64,
    /// Links the new data no longer has.
    pub removed: u64,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Report {
    pub run_id: String,
    pub kind: String,
    pub succeeded: bool,
    pub files: Vec<String>,
    pub attack_version: String,
    pub counts: BTreeMap<String, Counts>,
    pub unresolved_references: u64,
    pub skipped: Vec<Skipped>,
    pub error: String,
    pub started_at: i64,
    pub finished_at: i64,
}

impl Report {
    /// Created over every entity type.
    pub fn created(&self) -> u64 {
        self.counts.values().map(|c| c.created).sum()
    }

    /// Updated over every entity type.
    pub fn updated(&self) -> u64 {
        self.counts.values().map(|c| c.updated).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn technique_ids_are_trimmed_upper_cased_and_checked() {
        assert_eq!(
            normalize_technique_id(" t1564.001"),
            Some("T1564.001".into())
        );
        assert_eq!(normalize_technique_id("T1059"), Some("T1059".into()));
        assert_eq!(normalize_technique_id("T105"), None);
        assert_eq!(normalize_technique_id("T1059.1"), None);
        assert_eq!(normalize_technique_id("TA0002"), None);
        assert_eq!(parent_of("T1059.001"), Some("T1059"));
        assert_eq!(parent_of("T1059"), None);
    }

    #[test]
    fn hashes_ignore_the_release_of_a_technique() {
        let row = TechniqueRow {
            technique_id: "T1".into(),
            stix_id: "s".into(),
            name: "n".into(),
            description: String::new(),
            is_subtechnique: 0,
            parent_id: None,
            tactics: "[]".into(),
            platforms: "[]".into(),
            revoked: 0,
            deprecated: 0,
            attack_version: "18.1".into(),
            content_hash: String::new(),
        };
        let a = row.clone().hashed();
        let b = TechniqueRow {
            attack_version: String::new(),
            ..row.clone()
        }
        .hashed();
        assert_eq!(a.content_hash, b.content_hash);
        let c = TechniqueRow {
            name: "other".into(),
            ..row
        }
        .hashed();
        assert_ne!(a.content_hash, c.content_hash);
    }
}
