//! MITRE D3FEND: the defensive technique catalogue (`d3fend.csv`), the
//! ATT&CK→D3FEND pairs (`*-attack-to-d3fend-pairs.csv`, the complete
//! mapping) and the per-technique API answers (`off_to_def` SPARQL
//! results). The file's header or keys say which one it is.

use serde::Deserialize;

use super::{ParseError, text};
use crate::domain::{DefenseRow, Hashed, Parsed, normalize_technique_id};

/// Adds one D3FEND file.
pub fn parse(file: &str, bytes: &[u8], parsed: &mut Parsed) -> Result<(), ParseError> {
    let text = text(file, bytes)?;
    if text.trim_start().starts_with('{') {
        return parse_api(file, text, parsed);
    }
    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| ParseError::csv(file, &e))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h == name);
    match (
        column("off_tech_id"),
        column("def_tech_id"),
        column("ID"),
        column("D3FEND Tactic"),
    ) {
        (Some(off), Some(def), _, _) => {
            let columns = PairColumns {
                off,
                def,
                label: column("def_tech_label"),
                tactic: column("def_tactic_label"),
            };
            parse_pairs(file, reader, &columns, parsed)
        }
        (_, _, Some(id), Some(tactic)) => parse_catalogue(file, reader, id, tactic, parsed),
        _ => Err(ParseError::new(
            file,
            "line 1",
            "not D3FEND data: expected the catalogue (ID, D3FEND Tactic, ...) or the pairs (off_tech_id, def_tech_id, ...)",
        )),
    }
}

/// Where the pairs file keeps each field.
struct PairColumns {
    off: usize,
    def: usize,
    label: Option<usize>,
    tactic: Option<usize>,
}

/// The ATT&CK→D3FEND pairs: one technique pair (and its defense) a row.
fn parse_pairs(
    file: &str,
    mut reader: csv::Reader<&[u8]>,
    columns: &PairColumns,
    parsed: &mut Parsed,
) -> Result<(), ParseError> {
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|e| ParseError::csv(file, &e))?;
        let get = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("").trim();
        add_pair(
            file,
            &format!("row {}", row + 2),
            get(Some(columns.off)),
            get(Some(columns.def)),
            get(columns.label),
            get(columns.tactic),
            parsed,
        );
    }
    Ok(())
}

/// The defensive technique catalogue: one defense a row.
fn parse_catalogue(
    file: &str,
    mut reader: csv::Reader<&[u8]>,
    id: usize,
    tactic: usize,
    parsed: &mut Parsed,
) -> Result<(), ParseError> {
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|e| ParseError::csv(file, &e))?;
        let defense_id = record.get(id).unwrap_or("").trim();
        // The name sits in whichever hierarchy column is filled.
        let name = (2..5)
            .filter_map(|i| record.get(i))
            .map(str::trim)
            .find(|n| !n.is_empty());
        match (defense_id, name) {
            ("", _) | (_, None) => {
                parsed.skip(file, format!("row {}", row + 2), "no D3FEND id or name");
            }
            (defense_id, Some(name)) => add_defense(
                defense_id,
                name,
                record.get(tactic).unwrap_or("").trim(),
                parsed,
            ),
        }
    }
    Ok(())
}

fn add_defense(defense_id: &str, name: &str, tactic: &str, parsed: &mut Parsed) {
    let position = parsed.defenses.len();
    if let Some(at) = parsed.seen("defense", defense_id, position) {
        // A later, fuller row (with a tactic) wins over an earlier one.
        let existing = &mut parsed.defenses[at];
        if existing.tactic.is_empty() && !tactic.is_empty() {
            *existing = DefenseRow {
                tactic: tactic.to_owned(),
                ..existing.clone()
            }
            .hashed();
        }
        return;
    }
    parsed.defenses.push(
        DefenseRow {
            defense_id: defense_id.to_owned(),
            name: name.to_owned(),
            tactic: tactic.to_owned(),
            content_hash: String::new(),
        }
        .hashed(),
    );
}

fn add_pair(
    file: &str,
    place: &str,
    off: &str,
    def: &str,
    label: &str,
    tactic: &str,
    parsed: &mut Parsed,
) {
    if def.is_empty() {
        // An inference path that reaches no defensive technique.
        return;
    }
    let Some(technique_id) = normalize_technique_id(off) else {
        parsed.skip(file, place, format!("ATT&CK id {off:?} is not Tnnnn[.nnn]"));
        return;
    };
    add_defense(
        def,
        if label.is_empty() { def } else { label },
        tactic,
        parsed,
    );
    parsed
        .technique_defenses
        .insert((technique_id, def.to_owned()));
}

#[derive(Deserialize)]
struct ApiAnswer {
    off_to_def: SparqlResults,
}

#[derive(Deserialize)]
struct SparqlResults {
    results: Bindings,
}

#[derive(Deserialize)]
struct Bindings {
    bindings: Vec<std::collections::HashMap<String, SparqlValue>>,
}

#[derive(Deserialize)]
struct SparqlValue {
    value: String,
}

fn parse_api(file: &str, text: &str, parsed: &mut Parsed) -> Result<(), ParseError> {
    let answer: ApiAnswer = serde_json::from_str(text).map_err(|e| ParseError::json(file, &e))?;
    for (i, binding) in answer.off_to_def.results.bindings.iter().enumerate() {
        let get = |key: &str| binding.get(key).map_or("", |v| v.value.trim());
        add_pair(
            file,
            &format!("results.bindings[{i}]"),
            get("off_tech_id"),
            get("def_tech_id"),
            get("def_tech_label"),
            get("def_tactic_label"),
            parsed,
        );
    }
    Ok(())
}
