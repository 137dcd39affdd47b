//! Detection rules: Sigma (YAML, one rule per document; legacy rule
//! collections read as the Sigma specification defines them: an
//! `action: global` document is merged into every rule after it, `action:
//! repeat` repeats the previous rule with changes, `action: reset` clears
//! the global part) with techniques from
//! `attack.tNNNN[.NNN]` tags and CVEs from `cve.YYYY-NNNN` tags, and Elastic
//! (TOML) with techniques from `[[rule.threat]]` tables. Deprecated rules
//! are imported disabled.

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::{ParseError, text};
use crate::domain::{Hashed, Parsed, RuleRow, json_list, normalize_technique_id, rule_key};

/// Whether the file sits in a folder of retired rules.
fn in_deprecated_folder(file: &str) -> bool {
    file.split(['/', '\\'])
        .any(|part| part == "deprecated" || part == "_deprecated")
}

/// `base` with `over`'s keys laid on top, mappings merged recursively.
fn merged(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            let mut out = base.clone();
            for (key, value) in over {
                let value = match out.get(key) {
                    Some(existing) => merged(existing, value),
                    None => value.clone(),
                };
                out.insert(key.clone(), value);
            }
            Value::Mapping(out)
        }
        (_, over) => over.clone(),
    }
}

/// The rules of a file's documents, each with its 1-based document number:
/// a plain file's documents as they are; a collection's after applying
/// its `action` documents.
fn collection_rules(documents: Vec<Value>) -> Vec<(usize, Value)> {
    let empty = Value::Mapping(serde_yaml_ng::Mapping::new());
    let mut global = empty.clone();
    let mut previous: Option<Value> = None;
    let mut rules = Vec::new();
    for (index, mut document) in documents.into_iter().enumerate() {
        let action = str_of(&document, "action").to_owned();
        if let Value::Mapping(map) = &mut document {
            map.remove("action");
        }
        match action.as_str() {
            "global" => global = document,
            "reset" => global = empty.clone(),
            "repeat" => {
                let base = previous.clone().unwrap_or_else(|| global.clone());
                let rule = merged(&base, &document);
                previous = Some(rule.clone());
                rules.push((index + 1, rule));
            }
            _ => {
                let rule = merged(&global, &document);
                previous = Some(rule.clone());
                rules.push((index + 1, rule));
            }
        }
    }
    // A lone global document is a rule of its own.
    if rules.is_empty() && global != empty {
        rules.push((1, global));
    }
    rules
}

fn str_of<'a>(doc: &'a Value, key: &str) -> &'a str {
    doc.get(key).and_then(Value::as_str).unwrap_or("").trim()
}

/// Adds the rules of one Sigma file.
pub fn parse_sigma(file: &str, bytes: &[u8], parsed: &mut Parsed) -> Result<(), ParseError> {
    let text = text(file, bytes)?;
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|e| ParseError::yaml(file, &e))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    let Some(first) = documents.first() else {
        return Err(ParseError::new(file, "document", "no YAML document"));
    };
    if !first.is_mapping() {
        return Err(ParseError::new(
            file,
            "document 1",
            "a Sigma rule is a YAML mapping",
        ));
    }
    let rules = collection_rules(documents);
    // A collection's rules share the global id: one rule, the union of
    // their mappings.
    let mut found: Vec<NewRule> = Vec::new();
    for (number, document) in &rules {
        let (id, title) = (str_of(document, "id"), str_of(document, "title"));
        if id.is_empty() || title.is_empty() {
            parsed.skip(
                file,
                format!("document {number}"),
                "a Sigma rule needs an id and a title",
            );
            continue;
        }
        let (techniques, cves) = sigma_tags(document);
        if let Some(same) = found.iter_mut().find(|r| r.id == id) {
            same.techniques.extend(techniques);
            same.cves.extend(cves);
            continue;
        }
        let status = str_of(document, "status");
        found.push(NewRule {
            id: id.to_owned(),
            source: "sigma",
            title: title.to_owned(),
            level: str_of(document, "level").to_owned(),
            status: status.to_owned(),
            enabled: status != "deprecated" && !in_deprecated_folder(file),
            techniques,
            cves,
        });
    }
    for rule in found {
        add_rule(parsed, file, rule);
    }
    Ok(())
}

/// The techniques (`attack.tNNNN[.NNN]`) and CVEs (`cve.YYYY-NNNN`) a Sigma
/// rule's tags name.
fn sigma_tags(document: &Value) -> (Vec<String>, Vec<String>) {
    let mut techniques = Vec::new();
    let mut cves = Vec::new();
    let tags = document.get("tags").and_then(Value::as_sequence);
    for tag in tags.into_iter().flatten().filter_map(Value::as_str) {
        let tag = tag.trim().to_ascii_lowercase();
        if let Some(rest) = tag.strip_prefix("attack.t")
            && let Some(technique) = normalize_technique_id(&format!("t{rest}"))
        {
            techniques.push(technique);
        } else if let Some(rest) = tag.strip_prefix("cve.") {
            cves.push(format!("CVE-{}", rest.to_ascii_uppercase()));
        }
    }
    (techniques, cves)
}

/// A rule read from a file, before it is added.
struct NewRule {
    id: String,
    source: &'static str,
    title: String,
    level: String,
    status: String,
    enabled: bool,
    techniques: Vec<String>,
    cves: Vec<String>,
}

fn add_rule(parsed: &mut Parsed, file: &str, rule: NewRule) {
    let NewRule {
        id,
        source,
        title,
        level,
        status,
        enabled,
        mut techniques,
        mut cves,
    } = rule;
    let id = id.as_str();
    techniques.sort();
    techniques.dedup();
    cves.sort();
    cves.dedup();
    let key = rule_key(source, id);
    let position = parsed.rules.len();
    if parsed.seen("rule", &key, position).is_some() {
        parsed.skip(
            file,
            format!("rule {id}"),
            format!("{source} rule id already imported from another file; kept the first"),
        );
        return;
    }
    for technique in &techniques {
        parsed
            .rule_techniques
            .insert((key.clone(), technique.clone()));
    }
    for cve in &cves {
        parsed.rule_cves.insert((key.clone(), cve.clone()));
    }
    parsed.rules.push(
        RuleRow {
            rule_key: key,
            rule_id: id.to_owned(),
            source: source.to_owned(),
            title,
            level,
            status,
            enabled,
            file_name: file.to_owned(),
            technique_ids: json_list(&techniques),
            cve_ids: json_list(&cves),
            content_hash: String::new(),
        }
        .hashed(),
    );
}

#[derive(Deserialize)]
struct ElasticFile {
    #[serde(default)]
    metadata: ElasticMetadata,
    rule: ElasticRule,
}

#[derive(Deserialize, Default)]
struct ElasticMetadata {
    #[serde(default)]
    maturity: String,
}

#[derive(Deserialize)]
struct ElasticRule {
    rule_id: String,
    name: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    threat: Vec<ElasticThreat>,
}

#[derive(Deserialize)]
struct ElasticThreat {
    #[serde(default)]
    framework: String,
    #[serde(default)]
    technique: Vec<ElasticTechnique>,
}

#[derive(Deserialize)]
struct ElasticTechnique {
    id: String,
    #[serde(default)]
    subtechnique: Vec<ElasticSubtechnique>,
}

#[derive(Deserialize)]
struct ElasticSubtechnique {
    id: String,
}

/// Adds the rule of one Elastic TOML file.
pub fn parse_elastic(file: &str, bytes: &[u8], parsed: &mut Parsed) -> Result<(), ParseError> {
    let text = text(file, bytes)?;
    let rule: ElasticFile = toml::from_str(text).map_err(|e| ParseError::toml(file, text, &e))?;
    let mut techniques = Vec::new();
    for threat in rule
        .rule
        .threat
        .iter()
        .filter(|t| t.framework.is_empty() || t.framework == "MITRE ATT&CK")
    {
        for technique in &threat.technique {
            let ids = std::iter::once(technique.id.as_str())
                .chain(technique.subtechnique.iter().map(|s| s.id.as_str()));
            for id in ids {
                match normalize_technique_id(id) {
                    Some(id) => techniques.push(id),
                    None => parsed.skip(
                        file,
                        format!("rule {}", rule.rule.rule_id),
                        format!("technique id {id:?} is not Tnnnn[.nnn]"),
                    ),
                }
            }
        }
    }
    let maturity = rule.metadata.maturity.trim();
    add_rule(
        parsed,
        file,
        NewRule {
            id: rule.rule.rule_id.trim().to_owned(),
            source: "elastic",
            title: rule.rule.name.trim().to_owned(),
            level: rule.rule.severity.trim().to_owned(),
            status: maturity.to_owned(),
            enabled: maturity != "deprecated" && !in_deprecated_folder(file),
            techniques,
            cves: Vec::new(),
        },
    );
    Ok(())
}
