//! NIST SP 800-53 ↔ ATT&CK mappings of the Center for Threat-Informed
//! Defense: the mappings-explorer JSON (`mitigates` rows in 16.x, `protects`
//! in ≤ 14.x; `non_mappable` rows without a control) and the legacy TSV.
//! Repeated control → technique pairs collapse into one.

use std::collections::HashMap;

use serde::Deserialize;

use super::{ParseError, text};
use crate::domain::{ControlRow, Hashed, Parsed, normalize_technique_id};

#[derive(Deserialize)]
struct MappingFile {
    #[serde(default)]
    metadata: Metadata,
    mapping_objects: Vec<MappingObject>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    capability_groups: HashMap<String, String>,
}

#[derive(Deserialize)]
struct MappingObject {
    capability_id: Option<String>,
    #[serde(default)]
    capability_group: Option<String>,
    #[serde(default)]
    capability_description: Option<String>,
    #[serde(default)]
    mapping_type: Option<String>,
    #[serde(default)]
    attack_object_id: Option<String>,
}

fn add(
    parsed: &mut Parsed,
    file: &str,
    place: String,
    control: &str,
    name: &str,
    family: &str,
    technique: &str,
) {
    let Some(technique_id) = normalize_technique_id(technique) else {
        parsed.skip(
            file,
            place,
            format!("technique id {technique:?} is not Tnnnn[.nnn]"),
        );
        return;
    };
    let position = parsed.controls.len();
    if parsed.seen("control", control, position).is_none() {
        parsed.controls.push(
            ControlRow {
                control_id: control.to_owned(),
                name: name.to_owned(),
                family: family.to_owned(),
                content_hash: String::new(),
            }
            .hashed(),
        );
    }
    parsed
        .control_techniques
        .insert((control.to_owned(), technique_id));
}

/// Adds one mapping file.
pub fn parse(file: &str, bytes: &[u8], parsed: &mut Parsed) -> Result<(), ParseError> {
    let text = text(file, bytes)?;
    if !text.trim_start().starts_with('{') {
        return parse_tsv(file, text, parsed);
    }
    let mapping: MappingFile =
        serde_json::from_str(text).map_err(|e| ParseError::json(file, &e))?;
    for (i, object) in mapping.mapping_objects.iter().enumerate() {
        let place = format!("mapping_objects[{i}]");
        let technique = object.attack_object_id.as_deref().unwrap_or("");
        let Some(control) = object
            .capability_id
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        else {
            parsed.skip(
                file,
                place,
                format!("{technique} is non-mappable (no control)"),
            );
            continue;
        };
        match object.mapping_type.as_deref() {
            Some("mitigates" | "protects") => {}
            other => {
                parsed.skip(
                    file,
                    place,
                    format!("mapping type {other:?} is not mitigates or protects"),
                );
                continue;
            }
        }
        let group = object.capability_group.as_deref().unwrap_or("");
        let family = mapping
            .metadata
            .capability_groups
            .get(group)
            .map_or(group, String::as_str);
        add(
            parsed,
            file,
            place,
            control,
            object.capability_description.as_deref().unwrap_or(""),
            family,
            technique,
        );
    }
    Ok(())
}

fn parse_tsv(file: &str, text: &str, parsed: &mut Parsed) -> Result<(), ParseError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| ParseError::csv(file, &e))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(control), Some(technique)) = (column("controlID"), column("techniqueID")) else {
        return Err(ParseError::new(
            file,
            "line 1",
            "not a NIST 800-53 mapping: expected JSON mapping objects or a TSV with controlID and techniqueID",
        ));
    };
    let name = column("controlName");
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|e| ParseError::csv(file, &e))?;
        let get = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("").trim();
        let control_id = get(Some(control));
        let family = control_id.split('-').next().unwrap_or("");
        add(
            parsed,
            file,
            format!("row {}", row + 2),
            control_id,
            get(name),
            family,
            get(Some(technique)),
        );
    }
    Ok(())
}
