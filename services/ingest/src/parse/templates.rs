//! Test templates: Atomic Red Team technique files, CALDERA abilities (the
//! classic `technique`/`platforms` shape and the newer
//! `technique_id`/`executors` shape) and LOLBAS entries (one template per
//! command). Technique ids are trimmed and normalised; platforms are lower
//! case, with CALDERA's `darwin` named `macos` like the others.

use serde_yaml_ng::Value;

use super::{ParseError, text};
use crate::domain::{Hashed, Parsed, TemplateRow, json_list, normalize_technique_id};

fn yaml(file: &str, bytes: &[u8]) -> Result<Value, ParseError> {
    serde_yaml_ng::from_str(text(file, bytes)?).map_err(|e| ParseError::yaml(file, &e))
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("").trim()
}

fn platform(name: &str) -> String {
    match name.trim().to_ascii_lowercase().as_str() {
        "darwin" => "macos".to_owned(),
        other => other.to_owned(),
    }
}

#[allow(clippy::too_many_arguments)]
fn push(
    parsed: &mut Parsed,
    template_id: String,
    source: &str,
    technique_id: String,
    name: &str,
    description: &str,
    mut platforms: Vec<String>,
    executor: &str,
    command: &str,
) {
    platforms.sort();
    platforms.dedup();
    parsed.templates.push(
        TemplateRow {
            template_id,
            source: source.to_owned(),
            technique_id,
            name: name.to_owned(),
            description: description.to_owned(),
            platforms: json_list(&platforms),
            executor: executor.to_owned(),
            command: command.to_owned(),
            content_hash: String::new(),
        }
        .hashed(),
    );
}

/// Adds the tests of one Atomic Red Team technique file.
pub fn parse_atomic(file: &str, bytes: &[u8], parsed: &mut Parsed) -> Result<(), ParseError> {
    let doc = yaml(file, bytes)?;
    let raw_id = str_of(&doc, "attack_technique");
    let Some(technique_id) = normalize_technique_id(raw_id) else {
        return Err(ParseError::new(
            file,
            "attack_technique",
            format!("{raw_id:?} is not an ATT&CK technique id (is this an Atomic Red Team file?)"),
        ));
    };
    let Some(tests) = doc.get("atomic_tests").and_then(Value::as_sequence) else {
        return Err(ParseError::new(
            file,
            "atomic_tests",
            "missing: not an Atomic Red Team technique file",
        ));
    };
    for (i, test) in tests.iter().enumerate() {
        let name = str_of(test, "name");
        if name.is_empty() {
            parsed.skip(file, format!("atomic_tests[{i}]"), "a test without a name");
            continue;
        }
        let guid = str_of(test, "auto_generated_guid");
        let template_id = if guid.is_empty() {
            format!("atomic:{technique_id}:{}", i + 1)
        } else {
            format!("atomic:{guid}")
        };
        let platforms = test
            .get("supported_platforms")
            .and_then(Value::as_sequence)
            .map(|p| p.iter().filter_map(Value::as_str).map(platform).collect())
            .unwrap_or_default();
        let executor = test.get("executor").cloned().unwrap_or(Value::Null);
        let command = match str_of(&executor, "command") {
            "" => str_of(&executor, "steps"),
            command => command,
        };
        push(
            parsed,
            template_id,
            "atomic",
            technique_id.clone(),
            name,
            str_of(test, "description"),
            platforms,
            str_of(&executor, "name"),
            command,
        );
    }
    Ok(())
}

/// Adds the abilities of one CALDERA file (a YAML list).
pub fn parse_caldera(file: &str, bytes: &[u8], parsed: &mut Parsed) -> Result<(), ParseError> {
    let doc = yaml(file, bytes)?;
    let Some(abilities) = doc.as_sequence() else {
        return Err(ParseError::new(
            file,
            "document",
            "a CALDERA ability file is a YAML list",
        ));
    };
    for (i, ability) in abilities.iter().enumerate() {
        let place = format!("[{i}]");
        let id = str_of(ability, "id");
        let raw_technique = match ability.get("technique") {
            Some(technique) => str_of(technique, "attack_id"),
            None => str_of(ability, "technique_id"),
        };
        let Some(technique_id) = normalize_technique_id(raw_technique) else {
            parsed.skip(
                file,
                place,
                format!("technique id {raw_technique:?} is not Tnnnn[.nnn]"),
            );
            continue;
        };
        if id.is_empty() {
            parsed.skip(file, place, "an ability without an id");
            continue;
        }
        // (platform, executor, command) in file order.
        let mut runs: Vec<(String, String, String)> = Vec::new();
        if let Some(platforms) = ability.get("platforms").and_then(Value::as_mapping) {
            for (os, executors) in platforms {
                let Some(executors) = executors.as_mapping() else {
                    continue;
                };
                for os in os.as_str().unwrap_or("").split(',') {
                    for (executor, body) in executors {
                        runs.push((
                            platform(os),
                            executor.as_str().unwrap_or("").to_owned(),
                            str_of(body, "command").to_owned(),
                        ));
                    }
                }
            }
        } else if let Some(executors) = ability.get("executors").and_then(Value::as_sequence) {
            for executor in executors {
                runs.push((
                    platform(str_of(executor, "platform")),
                    str_of(executor, "name").to_owned(),
                    str_of(executor, "command").to_owned(),
                ));
            }
        }
        let Some((_, executor, command)) = runs.first().cloned() else {
            parsed.skip(file, place, "an ability without an executor");
            continue;
        };
        let platforms = runs
            .into_iter()
            .map(|(p, _, _)| p)
            .filter(|p| !p.is_empty())
            .collect();
        push(
            parsed,
            format!("caldera:{id}"),
            "caldera",
            technique_id,
            str_of(ability, "name"),
            str_of(ability, "description"),
            platforms,
            &executor,
            &command,
        );
    }
    Ok(())
}

/// Adds the commands of one LOLBAS entry.
pub fn parse_lolbas(file: &str, bytes: &[u8], parsed: &mut Parsed) -> Result<(), ParseError> {
    let doc = yaml(file, bytes)?;
    let name = str_of(&doc, "Name");
    let Some(commands) = doc.get("Commands").and_then(Value::as_sequence) else {
        return Err(ParseError::new(
            file,
            "Commands",
            "missing: not a LOLBAS entry",
        ));
    };
    if name.is_empty() {
        return Err(ParseError::new(file, "Name", "missing: not a LOLBAS entry"));
    }
    for (i, command) in commands.iter().enumerate() {
        let place = format!("Commands[{i}]");
        let raw = str_of(command, "MitreID");
        let Some(technique_id) = normalize_technique_id(raw) else {
            parsed.skip(file, place, format!("MitreID {raw:?} is not Tnnnn[.nnn]"));
            continue;
        };
        let description = str_of(command, "Description");
        push(
            parsed,
            format!("lolbas:{name}:{}", i + 1),
            "lolbas",
            technique_id,
            &format!("{name}: {}", str_of(command, "Category")),
            description,
            vec!["windows".to_owned()],
            "command_prompt",
            str_of(command, "Command"),
        );
    }
    Ok(())
}
