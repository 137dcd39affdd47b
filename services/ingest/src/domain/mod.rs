//! The catalogue's domain: the rules every importer shares (ATT&CK id
//! normalisation, content hashing for change detection), what is imported
//! ([`Kind`]), what an import yields ([`Parsed`]) and reports ([`Report`]),
//! the rows it writes ([`rows`]) and the catalogue as the batch reads
//! return it ([`views`]).

pub mod rows;
pub mod views;

pub use rows::*;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use purple_runtime::time::Micros;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What an import reads: one public format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Attack,
    D3fend,
    Sigma,
    Elastic,
    Atomic,
    Caldera,
    Lolbas,
    Nist,
    Cve,
    StixReports,
    Kev,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 11] = [
        Kind::Attack,
        Kind::D3fend,
        Kind::Sigma,
        Kind::Elastic,
        Kind::Atomic,
        Kind::Caldera,
        Kind::Lolbas,
        Kind::Nist,
        Kind::Cve,
        Kind::StixReports,
        Kind::Kev,
    ];

    /// Lower-case name, as the CLI and run records spell it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Attack => "attack",
            Kind::D3fend => "d3fend",
            Kind::Sigma => "sigma",
            Kind::Elastic => "elastic",
            Kind::Atomic => "atomic",
            Kind::Caldera => "caldera",
            Kind::Lolbas => "lolbas",
            Kind::Nist => "nist",
            Kind::Cve => "cve",
            Kind::StixReports => "stix-reports",
            Kind::Kev => "kev",
        }
    }

    /// From its name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
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
    /// Intel reports (ATT&CK campaigns, STIX reports) before their
    /// references meet the catalogue.
    pub intel: Vec<IntelDraft>,
    /// (revoked technique, the technique that replaced it).
    pub technique_replacements: BTreeSet<(String, String)>,
    /// KEV catalogue entries and mappings; `kev_mapped` is whether the
    /// upload held a mapping file (an absent file removes nothing).
    pub kev: Vec<KevRow>,
    pub kev_mappings: Vec<KevMappingRow>,
    pub kev_mapped: bool,
    pub skipped: Vec<Skipped>,
    /// Keys already added, per entity: duplicates are found in constant
    /// time, so a hostile file of repeated items cannot make parsing
    /// quadratic.
    seen: HashMap<(&'static str, String), usize>,
    /// The `modified` instant of each object kept, where objects carry one.
    modified: HashMap<(&'static str, String), String>,
}

/// An intel report as a parser read it: its row without the technique
/// and actor lists, which the writer completes once the references that
/// name STIX objects outside the file are resolved against the catalogue.
#[derive(Clone, Debug)]
pub struct IntelDraft {
    pub row: IntelReportRow,
    /// ATT&CK technique id → what the report says of it.
    pub techniques: BTreeMap<String, String>,
    /// ATT&CK group ids.
    pub actors: BTreeSet<String>,
    /// STIX ids of attack-patterns or intrusion-sets not in the file, with
    /// the description of the relationship that named them.
    pub stix_refs: Vec<(String, String)>,
}

/// What [`Parsed::newest`] decided for an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Newest {
    /// The first of its id: add it.
    First,
    /// Newer than the one at this position: replace it.
    Replaces(usize),
    /// Not newer than the one kept: drop it.
    Older,
}

impl Parsed {
    /// The position of `key` among the `entity` rows added so far, or
    /// None (and `position` is recorded for it) the first time it is seen.
    pub fn seen(&mut self, entity: &'static str, key: &str, position: usize) -> Option<usize> {
        match self.seen.entry((entity, key.to_owned())) {
            std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(position);
                None
            }
        }
    }

    /// For an object that may come twice (two releases in one import): the
    /// first of its id is added, a later one replaces it only when
    /// modified later.
    pub fn newest(
        &mut self,
        entity: &'static str,
        key: &str,
        modified: &str,
        position: usize,
    ) -> Newest {
        match self.seen(entity, key, position) {
            None => {
                self.modified
                    .insert((entity, key.to_owned()), modified.to_owned());
                Newest::First
            }
            Some(at) => {
                let kept = self.modified.entry((entity, key.to_owned())).or_default();
                if modified > kept.as_str() {
                    modified.clone_into(kept);
                    Newest::Replaces(at)
                } else {
                    Newest::Older
                }
            }
        }
    }

    /// Records an unusable item.
    pub fn skip(&mut self, file: &str, location: impl Into<String>, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            file_name: file.to_owned(),
            location: location.into(),
            reason: reason.into(),
        });
    }

    /// Leaves out (as skipped) every row larger than [`MAX_ROW_BYTES`]
    /// once serialized (one enormous field would otherwise be stored and
    /// then make every read that returns it fail for good) or holding a
    /// NUL character.
    pub fn drop_oversized(&mut self) {
        let mut skipped = Vec::new();
        oversized(&mut self.tactics, &mut skipped);
        oversized(&mut self.techniques, &mut skipped);
        oversized(&mut self.actors, &mut skipped);
        oversized(&mut self.mitigations, &mut skipped);
        oversized(&mut self.defenses, &mut skipped);
        oversized(&mut self.rules, &mut skipped);
        oversized(&mut self.templates, &mut skipped);
        oversized(&mut self.controls, &mut skipped);
        oversized(&mut self.cves, &mut skipped);
        oversized(&mut self.kev, &mut skipped);
        // Imported reports (STIX): their row and what they say of each
        // technique, which the row does not carry.
        self.intel.retain(|draft| {
            let text = serde_json::to_vec(&(&draft.row, &draft.techniques, &draft.stix_refs))
                .unwrap_or_default();
            if !escapes_nul(&text) {
                return true;
            }
            skipped.push(Skipped {
                file_name: String::new(),
                location: draft.row.key().chars().take(100).collect(),
                reason: "a text field holds a NUL byte, which cannot be stored".to_owned(),
            });
            false
        });
        self.skipped.extend(skipped);
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
            && self.intel.is_empty()
            && self.kev.is_empty()
            && self.kev_mappings.is_empty()
    }
}

/// The largest row an import stores, serialized.
pub const MAX_ROW_BYTES: usize = 256 * 1024;

fn oversized<T: Entity>(rows: &mut Vec<T>, skipped: &mut Vec<Skipped>) {
    rows.retain(|row| {
        let json = serde_json::to_vec(row).unwrap_or_default();
        let reason = if json.is_empty() || json.len() > MAX_ROW_BYTES {
            format!("larger than {} KiB once stored", MAX_ROW_BYTES / 1024)
        } else if escapes_nul(&json) {
            // PostgreSQL cannot store one, SQLite would: left out on both.
            "a text field holds a NUL byte, which cannot be stored".to_owned()
        } else {
            return true;
        };
        skipped.push(Skipped {
            file_name: String::new(),
            location: row.key().chars().take(100).collect(),
            reason,
        });
        false
    });
}

/// Whether serialized JSON holds a NUL character: JSON spells it only as
/// the escape `\u0000`, which counts when an even number of backslashes
/// (escapes of their own) precede it.
fn escapes_nul(json: &[u8]) -> bool {
    let pattern = b"\\u0000";
    json.windows(pattern.len()).enumerate().any(|(at, w)| {
        w == pattern && json[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
    })
}

/// The most skipped items a report lists; past it, one line counts the
/// rest, so a file of a million bad items cannot make the report itself
/// too large to read back.
pub const MAX_REPORTED_ITEMS: usize = 1_000;

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
    pub started_at: Micros,
    pub finished_at: Micros,
}

impl Report {
    /// Keeps the report small enough to store and read back: at most
    /// [`MAX_REPORTED_ITEMS`] skipped items (then a line counting the
    /// rest) and at most 1,000 file names.
    pub fn bound(&mut self) {
        if self.skipped.len() > MAX_REPORTED_ITEMS {
            let rest = self.skipped.len() - MAX_REPORTED_ITEMS;
            self.skipped.truncate(MAX_REPORTED_ITEMS);
            self.skipped.push(Skipped {
                file_name: String::new(),
                location: String::new(),
                reason: format!("… and {rest} more items not listed"),
            });
        }
        if self.files.len() > 1_000 {
            let rest = self.files.len() - 1_000;
            self.files.truncate(1_000);
            self.files.push(format!("… and {rest} more files"));
        }
    }

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
    fn a_nul_is_found_in_json_and_its_spelling_is_not() {
        let json = |s: &str| serde_json::to_vec(&serde_json::json!({ "t": s })).unwrap();
        assert!(escapes_nul(&json("a\0b")));
        assert!(escapes_nul(&json("\\\0")), "a backslash, then a NUL");
        assert!(!escapes_nul(&json("the text \\u0000")));
        assert!(!escapes_nul(&json("plain")));
    }

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
    fn flags_hash_as_the_integers_they_are_stored_as() {
        let row = CveRow {
            cve_id: "CVE-1".into(),
            description: String::new(),
            cvss_score: 1.0,
            link: String::new(),
            known_exploited: true,
            published_at: None,
            content_hash: String::new(),
        };
        let json = serde_json::to_string(&row).unwrap();
        assert!(json.contains("\"known_exploited\":1"), "{json}");
    }

    #[test]
    fn hashes_ignore_the_release_of_a_technique() {
        let row = TechniqueRow {
            technique_id: "T1".into(),
            stix_id: "s".into(),
            name: "n".into(),
            description: String::new(),
            is_subtechnique: false,
            parent_id: None,
            tactics: "[]".into(),
            platforms: "[]".into(),
            revoked: false,
            deprecated: false,
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
