//! CISA's Known Exploited Vulnerabilities: the catalogue
//! (`known_exploited_vulnerabilities.json`: `vulnerabilities[]` with
//! `cveID`, `dateAdded`, `dueDate`, `knownRansomwareCampaignUse`, …) and
//! the Center for Threat-Informed Defense's KEV → ATT&CK mapping (the
//! Mappings Explorer envelope the NIST import reads: `mapping_objects[]`
//! with `capability_id` a CVE, `mapping_type` exploitation_technique,
//! primary_impact or secondary_impact, `attack_object_id`). Which is which
//! is told by the file's shape; an upload may hold either or both.

use chrono::NaiveDate;
use purple_runtime::time::Micros;
use serde::Deserialize;

use super::{ParseError, text};
use crate::domain::{Hashed, KevMappingRow, KevRow, Parsed, normalize_technique_id};

/// The mapping types of the KEV mapping that link a CVE to a technique.
pub const MAPPING_TYPES: [&str; 3] = [
    "exploitation_technique",
    "primary_impact",
    "secondary_impact",
];

#[derive(Deserialize)]
#[serde(untagged)]
enum KevFile {
    Catalogue { vulnerabilities: Vec<Vulnerability> },
    Mapping { mapping_objects: Vec<MappingObject> },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Vulnerability {
    #[serde(rename = "cveID")]
    cve_id: String,
    #[serde(default)]
    vendor_project: String,
    #[serde(default)]
    product: String,
    #[serde(default)]
    vulnerability_name: String,
    #[serde(default)]
    date_added: Option<String>,
    #[serde(default)]
    short_description: String,
    #[serde(default)]
    required_action: String,
    #[serde(default)]
    due_date: Option<String>,
    #[serde(default)]
    known_ransomware_campaign_use: Option<String>,
}

#[derive(Deserialize)]
struct MappingObject {
    #[serde(default)]
    capability_id: Option<String>,
    #[serde(default)]
    mapping_type: Option<String>,
    #[serde(default)]
    attack_object_id: Option<String>,
}

/// A CVE id as both files spell it: `CVE-YYYY-N…`, upper-cased.
fn cve_id(raw: &str) -> Option<String> {
    let id = raw.trim().to_ascii_uppercase();
    let rest = id.strip_prefix("CVE-")?;
    let (year, number) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (year.len() == 4 && digits(year) && number.len() >= 4 && number.len() <= 12 && digits(number))
        .then_some(id)
}

/// A `YYYY-MM-DD` date as midnight UTC.
fn date(raw: Option<&str>) -> Result<Option<Micros>, String> {
    match raw.map(str::trim).filter(|r| !r.is_empty()) {
        None => Ok(None),
        Some(r) => NaiveDate::parse_from_str(r, "%Y-%m-%d")
            .map(|d| {
                Some(Micros::from_datetime(
                    d.and_hms_opt(0, 0, 0).expect("midnight").and_utc(),
                ))
            })
            .map_err(|_| format!("date {r:?} is not YYYY-MM-DD")),
    }
}

/// Adds one KEV catalogue or KEV mapping file.
pub fn parse(file: &str, bytes: &[u8], parsed: &mut Parsed) -> Result<(), ParseError> {
    let text = text(file, bytes)?;
    let kev: KevFile = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            ParseError::new(
                file,
                "document",
                "neither a KEV catalogue (vulnerabilities[]) nor a KEV mapping (mapping_objects[])",
            )
        } else {
            ParseError::json(file, &e)
        }
    })?;
    match kev {
        KevFile::Catalogue { vulnerabilities } => catalogue(file, vulnerabilities, parsed),
        KevFile::Mapping { mapping_objects } => mapping(file, mapping_objects, parsed),
    }
    Ok(())
}

fn catalogue(file: &str, vulnerabilities: Vec<Vulnerability>, parsed: &mut Parsed) {
    for (i, v) in vulnerabilities.into_iter().enumerate() {
        let place = format!("vulnerabilities[{i}]");
        let Some(id) = cve_id(&v.cve_id) else {
            parsed.skip(file, place, format!("{:?} is not a CVE id", v.cve_id));
            continue;
        };
        let (date_added, due_date) =
            match (date(v.date_added.as_deref()), date(v.due_date.as_deref())) {
                (Ok(a), Ok(d)) => (a, d),
                (Err(e), _) | (_, Err(e)) => {
                    parsed.skip(file, format!("{place} {id}"), e);
                    continue;
                }
            };
        let position = parsed.kev.len();
        if parsed.seen("kev", &id, position).is_some() {
            parsed.skip(
                file,
                format!("{place} {id}"),
                "listed twice: the first entry is kept",
            );
            continue;
        }
        parsed.kev.push(
            KevRow {
                cve_id: id,
                vendor_project: v.vendor_project,
                product: v.product,
                vulnerability_name: v.vulnerability_name,
                date_added,
                due_date,
                ransomware: v
                    .known_ransomware_campaign_use
                    .as_deref()
                    .is_some_and(|k| k.eq_ignore_ascii_case("known")),
                required_action: v.required_action,
                short_description: v.short_description,
                content_hash: String::new(),
            }
            .hashed(),
        );
    }
}

fn mapping(file: &str, objects: Vec<MappingObject>, parsed: &mut Parsed) {
    parsed.kev_mapped = true;
    for (i, object) in objects.into_iter().enumerate() {
        let place = format!("mapping_objects[{i}]");
        let raw_cve = object.capability_id.as_deref().unwrap_or("");
        let Some(cve) = cve_id(raw_cve) else {
            parsed.skip(file, place, format!("{raw_cve:?} is not a CVE id"));
            continue;
        };
        let kind = object.mapping_type.as_deref().unwrap_or("");
        if !MAPPING_TYPES.contains(&kind) {
            parsed.skip(
                file,
                format!("{place} {cve}"),
                format!("mapping type {kind:?} links no technique"),
            );
            continue;
        }
        let raw_technique = object.attack_object_id.as_deref().unwrap_or("");
        let Some(technique) = normalize_technique_id(raw_technique) else {
            parsed.skip(
                file,
                format!("{place} {cve}"),
                format!("technique id {raw_technique:?} is not Tnnnn[.nnn]"),
            );
            continue;
        };
        let key = format!("{cve}|{technique}|{kind}");
        let position = parsed.kev_mappings.len();
        if parsed.seen("kev_mapping", &key, position).is_some() {
            continue;
        }
        parsed.kev_mappings.push(
            KevMappingRow {
                mapping_key: key,
                cve_id: cve,
                technique_id: technique,
                mapping_type: kind.to_owned(),
                content_hash: String::new(),
            }
            .hashed(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cve_ids_and_dates_are_checked() {
        assert_eq!(cve_id(" cve-2021-44228"), Some("CVE-2021-44228".into()));
        assert_eq!(cve_id("CVE-21-1"), None);
        assert_eq!(cve_id("GHSA-1"), None);
        assert!(date(Some("2025-08-25")).unwrap().is_some());
        assert!(date(Some("25/08/2025")).is_err());
        assert_eq!(date(None), Ok(None));
    }
}
