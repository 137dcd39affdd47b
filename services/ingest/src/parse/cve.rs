//! NVD CVE JSON 2.0: API pages (`vulnerabilities[].cve`) and bare CVE
//! records, with the CISA Known Exploited Vulnerabilities fields. A CVE
//! reaches techniques through the detection rules that name it.

use chrono::NaiveDateTime;
use purple_runtime::time::Micros;
use serde::Deserialize;

use super::{ParseError, text};
use crate::domain::{CveRow, Hashed, Parsed};

#[derive(Deserialize)]
#[serde(untagged)]
enum NvdFile {
    Page { vulnerabilities: Vec<Wrapped> },
    Record(Box<CveRecord>),
}

#[derive(Deserialize)]
struct Wrapped {
    cve: CveRecord,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CveRecord {
    id: String,
    #[serde(default)]
    published: Option<String>,
    #[serde(default)]
    descriptions: Vec<Description>,
    #[serde(default)]
    metrics: std::collections::HashMap<String, Vec<Metric>>,
    #[serde(default)]
    cisa_exploit_add: Option<String>,
}

#[derive(Deserialize)]
struct Description {
    lang: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metric {
    cvss_data: CvssData,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CvssData {
    base_score: f64,
}

/// Adds the CVEs of one file.
pub fn parse(file: &str, bytes: &[u8], parsed: &mut Parsed) -> Result<(), ParseError> {
    let nvd: NvdFile = serde_json::from_str(text(file, bytes)?).map_err(|e| {
        if e.is_data() {
            ParseError::new(
                file,
                "document",
                "not NVD CVE JSON 2.0 (neither vulnerabilities[].cve nor a CVE record)",
            )
        } else {
            ParseError::json(file, &e)
        }
    })?;
    let records = match nvd {
        NvdFile::Page { vulnerabilities } => vulnerabilities.into_iter().map(|w| w.cve).collect(),
        NvdFile::Record(record) => vec![*record],
    };
    for record in records {
        if !record.id.starts_with("CVE-") {
            parsed.skip(file, record.id.clone(), "not a CVE id");
            continue;
        }
        let description = record
            .descriptions
            .iter()
            .find(|d| d.lang == "en")
            .or(record.descriptions.first())
            .map_or("", |d| d.value.as_str());
        let score = record
            .metrics
            .values()
            .flatten()
            .map(|m| m.cvss_data.base_score)
            .fold(0.0_f64, f64::max);
        // NVD writes instants without a zone; they are UTC.
        let published_at = record
            .published
            .as_deref()
            .and_then(|p| NaiveDateTime::parse_from_str(p, "%Y-%m-%dT%H:%M:%S%.f").ok())
            .map(|p| Micros::from_datetime(p.and_utc()));
        parsed.cves.push(
            CveRow {
                link: format!("https://nvd.nist.gov/vuln/detail/{}", record.id),
                cve_id: record.id,
                description: description.to_owned(),
                cvss_score: score,
                known_exploited: record.cisa_exploit_add.is_some(),
                published_at,
                content_hash: String::new(),
            }
            .hashed(),
        );
    }
    Ok(())
}
