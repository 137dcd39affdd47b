//! Detection rules: Sigma (YAML, one rule per document; legacy files whose
//! first document is `action: global` are one rule) with techniques from
//! `attack.tNNNN[.NNN]` tags and CVEs from `cve.YYYY-NNNN` tags, and Elastic
//! (TOML) with techniques from `[[rule.threat]]` tables. Deprecated rules
//! are imported disabled.

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::{ParseError, text};
use crate::domain::{Hashed, Parsed, RuleRow, json_list, normalize_technique_id};

/// Whether the file sits in a folder of retired rules.
fn in_deprecated_folder(file: &str) -> bool {
    file.split(['/', '\\'])
        .any(|part| part == "deprecated" || part == "_deprecated")
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
    // `action: global` files repeat detection parts in later documents; the
    // rule's identity is the global one.
    let rules: Vec<(usize, &Value)> = if str_of(first, "action") == "global" {
        vec![(1, first)]
    } else {
        documents
            .iter()
            .enumerate()
            .map(|(i, d)| (i + 1, d))
            .collect()
    };
    for (number, document) in rules {
        let place = format!("document {number}");
        let (id, title) = (str_of(document, "id"), str_of(document, "title"));
        if id.is_empty() || title.is_empty() {
            parsed.skip(file, place, "a Sigma rule needs an id and a title");
            continue;
        }
        let status = str_of(document, "status");
        let tags: Vec<&str> = document
            .get("tags")
            .and_then(Value::as_sequence)
            .map(|tags| tags.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut techniques = Vec::new();
        let mut cves = Vec::new();
        for tag in tags {
            let tag = tag.trim().to_ascii_lowercase();
            if let Some(rest) = tag.strip_prefix("attack.t")
                && let Some(technique) = normalize_technique_id(&format!("t{rest}"))
            {
                techniques.push(technique);
            } else if let Some(rest) = tag.strip_prefix("cve.") {
                cves.push(format!("CVE-{}", rest.to_ascii_uppercase()));
            }
        }
        let enabled = status != "deprecated" && !in_deprecated_folder(file);
        add_rule(
            parsed,
            file,
            id,
            "sigma",
            title,
            str_of(document, "level"),
            status,
            enabled,
            techniques,
            cves,
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn add_rule(
    parsed: &mut Parsed,
    file: &str,
    id: &str,
    source: &str,
    title: &str,
    level: &str,
    status: &str,
    enabled: bool,
    mut techniques: Vec<String>,
    mut cves: Vec<String>,
) {
    techniques.sort();
    techniques.dedup();
    cves.sort();
    cves.dedup();
    for technique in &techniques {
        parsed
            .rule_techniques
            .insert((id.to_owned(), technique.clone()));
    }
    for cve in &cves {
        parsed.rule_cves.insert((id.to_owned(), cve.clone()));
    }
    let position = parsed.rules.len();
    if parsed.seen("rule", id, position).is_some() {
        parsed.skip(
            file,
            format!("rule {id}"),
            "rule id already imported from another file; kept the first",
        );
        return;
    }
    parsed.rules.push(
        RuleRow {
            rule_id: id.to_owned(),
            source: source.to_owned(),
            title: title.to_owned(),
            level: level.to_owned(),
            status: status.to_owned(),
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
    let enabled = maturity != "deprecated" && !in_deprecated_folder(file);
    add_rule(
        parsed,
        file,
        rule.rule.rule_id.trim(),
        "elastic",
        rule.rule.name.trim(),
        rule.rule.severity.trim(),
        maturity,
        enabled,
        techniques,
        Vec::new(),
    );
    Ok(())
}
