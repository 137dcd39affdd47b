//! MITRE ATT&CK enterprise STIX bundles, 2.0 and 2.1: tactics, techniques
//! and sub-techniques with their tactics and platforms, groups with their
//! aliases and `uses` of techniques, mitigations, and campaigns as intel
//! reports (their `uses` of techniques and `attributed-to` groups).
//! Revoked and deprecated objects are kept and marked; `revoked-by`
//! between techniques is kept so older mappings can follow it.

use std::collections::HashMap;

use super::{
    ParseError,
    stix::{self, StixObject},
};
use crate::domain::{
    ActorRow, Hashed, IntelDraft, IntelReportRow, MitigationRow, Newest, Parsed, TacticRow,
    TechniqueRow, json_list, normalize_technique_id, parent_of,
};

impl StixObject {
    fn flags(&self) -> (bool, bool) {
        (self.revoked, self.x_mitre_deprecated)
    }

    /// Whether it belongs to ATT&CK Enterprise: objects name their domains
    /// (ICS and Mobile share tactic short names and some ids with
    /// Enterprise); objects that name none (older bundles) are taken.
    fn enterprise(&self) -> bool {
        self.x_mitre_domains.is_empty()
            || self
                .x_mitre_domains
                .iter()
                .any(|d| d == "enterprise-attack")
    }
}

/// Adds the bundle's objects: its tactics, techniques, actors and
/// mitigations, then the actors' uses of techniques.
pub fn parse(file: &str, bytes: &[u8], parsed: &mut Parsed) -> Result<(), ParseError> {
    let objects = bundle_objects(file, bytes)?;
    // The release: STIX 2.1 bundles carry it on their collection object.
    if let Some(version) = objects
        .iter()
        .find(|o| o.kind == "x-mitre-collection")
        .and_then(|o| o.x_mitre_version.clone())
    {
        parsed.attack_version = Some(version);
    }
    let attack_ids = rows(file, &objects, parsed);
    uses(file, &objects, &attack_ids, parsed);
    Ok(())
}

/// The objects of a STIX bundle that holds ATT&CK techniques or tactics.
fn bundle_objects(file: &str, bytes: &[u8]) -> Result<Vec<StixObject>, ParseError> {
    let objects = stix::bundle(file, bytes, "an ATT&CK import")?;
    if !objects
        .iter()
        .any(|o| o.kind == "attack-pattern" || o.kind == "x-mitre-tactic")
    {
        return Err(ParseError::new(
            file,
            "objects",
            "the bundle has no ATT&CK techniques or tactics",
        ));
    }
    Ok(objects)
}

/// Each tactic's position in the kill chain, from the (live) matrix.
fn tactic_order(objects: &[StixObject]) -> HashMap<&str, i64> {
    objects
        .iter()
        .find(|o| o.kind == "x-mitre-matrix" && !o.revoked)
        .map(|m| {
            m.tactic_refs
                .iter()
                .enumerate()
                .map(|(i, r)| (r.as_str(), i as i64 + 1))
                .collect()
        })
        .unwrap_or_default()
}

/// Adds a row per tactic, technique, actor and mitigation; returns the
/// ATT&CK id of each technique and actor by STIX id, for the relationships.
fn rows<'o>(
    file: &str,
    objects: &'o [StixObject],
    parsed: &mut Parsed,
) -> HashMap<&'o str, String> {
    let order = tactic_order(objects);
    let version = parsed.attack_version.clone().unwrap_or_default();
    let mut attack_ids: HashMap<&str, String> = HashMap::new();
    let mut other_domains = 0;
    for object in objects {
        let place = || format!("object {}", object.id);
        match object.kind.as_str() {
            "x-mitre-tactic" | "attack-pattern" | "intrusion-set" | "course-of-action"
            | "campaign" => {}
            _ => continue,
        }
        if !object.enterprise() {
            other_domains += 1;
            continue;
        }
        let Some(attack_id) = object.attack_id() else {
            parsed.skip(
                file,
                place(),
                format!("{} without an ATT&CK id", object.kind),
            );
            continue;
        };
        let modified = object.modified.as_str();
        match object.kind.as_str() {
            "x-mitre-tactic" => {
                let row = tactic_row(object, attack_id, &order);
                keep_newest(parsed, "tactic", attack_id, modified, row, |p| {
                    &mut p.tactics
                });
            }
            "attack-pattern" => {
                let Some(row) = technique_row(object, attack_id, &version) else {
                    parsed.skip(
                        file,
                        place(),
                        format!("technique id {attack_id:?} is not Tnnnn[.nnn]"),
                    );
                    continue;
                };
                attack_ids.insert(object.id.as_str(), row.technique_id.clone());
                let id = row.technique_id.clone();
                keep_newest(parsed, "technique", &id, modified, row, |p| {
                    &mut p.techniques
                });
            }
            "intrusion-set" => {
                attack_ids.insert(object.id.as_str(), attack_id.to_owned());
                let row = actor_row(object, attack_id);
                keep_newest(parsed, "actor", attack_id, modified, row, |p| &mut p.actors);
            }
            "campaign" => {
                let draft = campaign_draft(object, attack_id);
                attack_ids.insert(object.id.as_str(), draft.row.report_key.clone());
                let key = draft.row.report_key.clone();
                keep_newest(parsed, "intel", &key, modified, draft, |p| &mut p.intel);
            }
            _ => {
                let row = mitigation_row(object, attack_id);
                keep_newest(parsed, "mitigation", attack_id, modified, row, |p| {
                    &mut p.mitigations
                });
            }
        }
    }
    if other_domains > 0 {
        parsed.skip(
            file,
            "objects",
            format!(
                "{other_domains} objects of ATT&CK for ICS or Mobile left out: the catalogue is ATT&CK Enterprise"
            ),
        );
    }
    attack_ids
}

/// Adds `row` under `id`, or, when an import holds the same object twice
/// (two releases of ATT&CK in one directory), keeps the most recently
/// modified one.
fn keep_newest<T>(
    parsed: &mut Parsed,
    entity: &'static str,
    id: &str,
    modified: &str,
    row: T,
    rows: impl Fn(&mut Parsed) -> &mut Vec<T>,
) {
    let position = rows(parsed).len();
    match parsed.newest(entity, id, modified, position) {
        Newest::First => rows(parsed).push(row),
        Newest::Replaces(at) => rows(parsed)[at] = row,
        Newest::Older => {}
    }
}

fn tactic_row(object: &StixObject, attack_id: &str, order: &HashMap<&str, i64>) -> TacticRow {
    let (revoked, deprecated) = object.flags();
    TacticRow {
        tactic_id: attack_id.to_owned(),
        stix_id: object.id.clone(),
        short_name: object.x_mitre_shortname.clone().unwrap_or_default(),
        name: object.name.clone(),
        description: object.description.clone(),
        ordinal: order.get(object.id.as_str()).copied().unwrap_or(0),
        revoked,
        deprecated,
        content_hash: String::new(),
    }
    .hashed()
}

/// A technique or sub-technique; None when its id is not Tnnnn[.nnn].
fn technique_row(object: &StixObject, attack_id: &str, version: &str) -> Option<TechniqueRow> {
    let technique_id = normalize_technique_id(attack_id)?;
    let (revoked, deprecated) = object.flags();
    let tactics: Vec<&str> = object
        .kill_chain_phases
        .iter()
        .filter(|p| p.kill_chain_name == "mitre-attack")
        .map(|p| p.phase_name.as_str())
        .collect();
    let is_sub = object.x_mitre_is_subtechnique || technique_id.contains('.');
    Some(
        TechniqueRow {
            parent_id: is_sub
                .then(|| parent_of(&technique_id).map(str::to_owned))
                .flatten(),
            technique_id,
            stix_id: object.id.clone(),
            name: object.name.clone(),
            description: object.description.clone(),
            is_subtechnique: is_sub,
            tactics: json_list(&tactics),
            platforms: json_list(&object.x_mitre_platforms),
            revoked,
            deprecated,
            attack_version: version.to_owned(),
            content_hash: String::new(),
        }
        .hashed(),
    )
}

fn actor_row(object: &StixObject, attack_id: &str) -> ActorRow {
    let (revoked, deprecated) = object.flags();
    let aliases: Vec<&String> = object
        .aliases
        .iter()
        .filter(|a| **a != object.name)
        .collect();
    ActorRow {
        actor_id: attack_id.to_owned(),
        stix_id: object.id.clone(),
        name: object.name.clone(),
        aliases: json_list(&aliases),
        description: object.description.clone(),
        revoked,
        deprecated,
        content_hash: String::new(),
    }
    .hashed()
}

/// A campaign as an intel report keyed by its ATT&CK page; its techniques
/// and groups come from its relationships.
fn campaign_draft(object: &StixObject, attack_id: &str) -> IntelDraft {
    let (revoked, deprecated) = object.flags();
    let url = object.attack_url().unwrap_or_default().to_owned();
    let first_seen = stix::instant(object.first_seen.as_deref());
    let last_seen = stix::instant(object.last_seen.as_deref());
    let published_at = stix::instant(object.created.as_deref());
    IntelDraft {
        row: IntelReportRow {
            report_key: if url.is_empty() {
                object.id.clone()
            } else {
                url.clone()
            },
            source: "attack_campaign".to_owned(),
            campaign_id: attack_id.to_owned(),
            stix_id: object.id.clone(),
            title: object.name.clone(),
            description: object.description.clone(),
            url,
            published_at,
            first_seen,
            last_seen,
            seen_at: IntelReportRow::seen(last_seen, published_at, first_seen),
            techniques: String::new(),
            actor_ids: String::new(),
            revoked,
            deprecated,
            content_hash: String::new(),
        },
        techniques: Default::default(),
        actors: Default::default(),
        stix_refs: Vec::new(),
    }
}

fn mitigation_row(object: &StixObject, attack_id: &str) -> MitigationRow {
    let (revoked, deprecated) = object.flags();
    MitigationRow {
        mitigation_id: attack_id.to_owned(),
        stix_id: object.id.clone(),
        name: object.name.clone(),
        description: object.description.clone(),
        revoked,
        deprecated,
        content_hash: String::new(),
    }
    .hashed()
}

/// Adds each live `uses` relationship from an actor to a technique, the
/// campaigns' techniques and groups, and which technique replaced a
/// revoked one.
fn uses(
    file: &str,
    objects: &[StixObject],
    attack_ids: &HashMap<&str, String>,
    parsed: &mut Parsed,
) {
    let campaigns: HashMap<String, usize> = parsed
        .intel
        .iter()
        .enumerate()
        .map(|(i, d)| (d.row.report_key.clone(), i))
        .collect();
    for relation in objects.iter().filter(|o| o.kind == "relationship") {
        let kind = relation.relationship_type.as_deref().unwrap_or("");
        let (Some(source), Some(target)) = (
            relation.source_ref.as_deref(),
            relation.target_ref.as_deref(),
        ) else {
            continue;
        };
        if kind == "revoked-by"
            && source.starts_with("attack-pattern--")
            && target.starts_with("attack-pattern--")
        {
            if let (Some(old), Some(new)) = (attack_ids.get(source), attack_ids.get(target)) {
                parsed
                    .technique_replacements
                    .insert((old.clone(), new.clone()));
            }
            continue;
        }
        if relation.revoked || relation.x_mitre_deprecated {
            continue;
        }
        if source.starts_with("campaign--") {
            campaign_relation(
                relation, kind, source, target, attack_ids, &campaigns, parsed,
            );
            continue;
        }
        if kind != "uses"
            || !source.starts_with("intrusion-set--")
            || !target.starts_with("attack-pattern--")
        {
            continue;
        }
        match (attack_ids.get(source), attack_ids.get(target)) {
            (Some(actor), Some(technique)) => {
                parsed
                    .actor_techniques
                    .insert((actor.clone(), technique.clone()));
            }
            _ => parsed.skip(
                file,
                format!("object {}", relation.id),
                "uses relationship to an object not in the bundle",
            ),
        }
    }
}

/// A campaign's `uses` of a technique (with what it says) or its
/// `attributed-to` group.
fn campaign_relation(
    relation: &StixObject,
    kind: &str,
    source: &str,
    target: &str,
    attack_ids: &HashMap<&str, String>,
    campaigns: &HashMap<String, usize>,
    parsed: &mut Parsed,
) {
    let Some(&at) = attack_ids.get(source).and_then(|key| campaigns.get(key)) else {
        return;
    };
    let Some(target_id) = attack_ids.get(target) else {
        return;
    };
    let draft = &mut parsed.intel[at];
    match kind {
        "uses" if target.starts_with("attack-pattern--") => {
            draft
                .techniques
                .insert(target_id.clone(), relation.description.clone());
        }
        "attributed-to" if target.starts_with("intrusion-set--") => {
            draft.actors.insert(target_id.clone());
        }
        _ => {}
    }
}
