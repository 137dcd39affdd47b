//! Threat-intelligence reports in STIX 2.1 bundles, as threat-intel
//! platforms (OpenCTI, MISP) export them: each `report` object whose
//! `object_refs` reach attack-patterns becomes an intel report. A
//! reference resolves in the file when it names an object the bundle
//! carries (an attack-pattern or intrusion-set with its ATT&CK id, or a
//! `uses`/`attributed-to` relationship between them); a reference to an
//! object the file does not carry is kept by STIX id and resolved against
//! the catalogue when written (a bundle may point at MITRE's own objects).

use std::collections::HashMap;

use super::{
    ParseError,
    stix::{self, StixObject, instant},
};
use crate::domain::{
    Hashed, IntelDraft, IntelReportRow, Parsed, json_list, normalize_technique_id,
};

/// What a bundle object stands for, once resolved in the file.
enum Resolved<'o> {
    Technique(String),
    Actor(String),
    Relationship(&'o StixObject),
}

/// Adds the reports of one STIX bundle.
pub fn parse(file: &str, bytes: &[u8], parsed: &mut Parsed) -> Result<(), ParseError> {
    let objects = stix::bundle(file, bytes, "a STIX reports import")?;
    if !objects.iter().any(|o| o.kind == "report") {
        return Err(ParseError::new(
            file,
            "objects",
            "the bundle has no report objects",
        ));
    }
    let mut in_file: HashMap<&str, Resolved> = HashMap::new();
    for object in &objects {
        let resolved = match object.kind.as_str() {
            "attack-pattern" => object
                .attack_id()
                .and_then(normalize_technique_id)
                .map(Resolved::Technique),
            "intrusion-set" => object.attack_id().map(|id| Resolved::Actor(id.to_owned())),
            "relationship" => Some(Resolved::Relationship(object)),
            _ => None,
        };
        if let Some(resolved) = resolved {
            in_file.insert(object.id.as_str(), resolved);
        }
    }
    for (i, report) in objects.iter().enumerate() {
        if report.kind != "report" {
            continue;
        }
        let place = format!("objects[{i}] {}", report.id);
        let draft = draft(report, &in_file);
        if draft.techniques.is_empty() && draft.stix_refs.is_empty() {
            parsed.skip(file, place, "report names no attack-pattern");
            continue;
        }
        let position = parsed.intel.len();
        match parsed.newest("intel", &draft.row.report_key, &report.modified, position) {
            crate::domain::Newest::First => parsed.intel.push(draft),
            crate::domain::Newest::Replaces(at) => parsed.intel[at] = draft,
            crate::domain::Newest::Older => {}
        }
    }
    Ok(())
}

/// A report's draft: its row and what its references resolve to in the
/// file; the rest kept by STIX id.
fn draft(report: &StixObject, in_file: &HashMap<&str, Resolved>) -> IntelDraft {
    let url = report
        .external_references
        .iter()
        .find_map(|r| r.url.clone())
        .unwrap_or_default();
    let published_at = instant(report.published.as_deref());
    let mut draft = IntelDraft {
        row: IntelReportRow {
            report_key: if url.is_empty() {
                report.id.clone()
            } else {
                url.clone()
            },
            source: "stix_report".to_owned(),
            campaign_id: String::new(),
            stix_id: report.id.clone(),
            title: report.name.clone(),
            description: report.description.clone(),
            url,
            published_at: published_at.or_else(|| instant(report.created.as_deref())),
            first_seen: None,
            last_seen: None,
            seen_at: purple_runtime::time::Micros::EPOCH,
            techniques: String::new(),
            actor_ids: String::new(),
            revoked: report.revoked,
            deprecated: false,
            content_hash: String::new(),
        },
        techniques: Default::default(),
        actors: Default::default(),
        stix_refs: Vec::new(),
    };
    draft.row.seen_at = IntelReportRow::seen(None, draft.row.published_at, None);
    for reference in &report.object_refs {
        match in_file.get(reference.as_str()) {
            Some(Resolved::Technique(id)) => {
                draft.techniques.entry(id.clone()).or_default();
            }
            Some(Resolved::Actor(id)) => {
                draft.actors.insert(id.clone());
            }
            Some(Resolved::Relationship(relation)) => relationship(relation, in_file, &mut draft),
            None => {
                if reference.starts_with("attack-pattern--")
                    || reference.starts_with("intrusion-set--")
                {
                    draft.stix_refs.push((reference.clone(), String::new()));
                }
            }
        }
    }
    draft
}

/// A relationship a report names: its attack-pattern target becomes a
/// technique of the report (with the relationship's description), its
/// intrusion-set ends become actors.
fn relationship(relation: &StixObject, in_file: &HashMap<&str, Resolved>, draft: &mut IntelDraft) {
    if relation.revoked
        || !matches!(
            relation.relationship_type.as_deref(),
            Some("uses" | "attributed-to")
        )
    {
        return;
    }
    for end in [
        relation.source_ref.as_deref(),
        relation.target_ref.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        match in_file.get(end) {
            Some(Resolved::Technique(id)) => {
                let description = draft.techniques.entry(id.clone()).or_default();
                if description.is_empty() {
                    description.clone_from(&relation.description);
                }
            }
            Some(Resolved::Actor(id)) => {
                draft.actors.insert(id.clone());
            }
            _ if end.starts_with("attack-pattern--") || end.starts_with("intrusion-set--") => {
                draft
                    .stix_refs
                    .push((end.to_owned(), relation.description.clone()));
            }
            _ => {}
        }
    }
}

/// Completes a draft's row once every reference is an ATT&CK id: the
/// technique and actor lists, then the content hash.
pub fn finish(mut draft: IntelDraft) -> IntelReportRow {
    let techniques: Vec<crate::domain::IntelTechniqueLink> = draft
        .techniques
        .iter()
        .map(|(id, description)| crate::domain::IntelTechniqueLink {
            technique_id: id.clone(),
            description: description.clone(),
        })
        .collect();
    draft.row.techniques = serde_json::to_string(&techniques).expect("links serialize");
    let actors: Vec<&String> = draft.actors.iter().collect();
    draft.row.actor_ids = json_list(&actors);
    draft.row.hashed()
}
