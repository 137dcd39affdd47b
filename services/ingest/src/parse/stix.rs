//! The STIX 2.0/2.1 object model the importers share: a bundle and the
//! fields of its objects that ATT&CK and threat-report bundles carry (a
//! field an object lacks reads as its default, so one type serves every
//! object kind).

use serde::Deserialize;

use super::{ParseError, text};
use purple_runtime::time::Micros;

#[derive(Deserialize)]
struct Bundle {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    objects: Vec<StixObject>,
}

#[derive(Deserialize)]
pub struct ExternalReference {
    pub source_name: String,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Deserialize)]
pub struct KillChainPhase {
    pub kill_chain_name: String,
    pub phase_name: String,
}

/// Any STIX object, with the fields the importers read.
#[derive(Deserialize)]
pub struct StixObject {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default)]
    pub x_mitre_deprecated: bool,
    #[serde(default)]
    pub x_mitre_is_subtechnique: bool,
    #[serde(default)]
    pub external_references: Vec<ExternalReference>,
    #[serde(default)]
    pub kill_chain_phases: Vec<KillChainPhase>,
    #[serde(default)]
    pub x_mitre_platforms: Vec<String>,
    #[serde(default)]
    pub x_mitre_shortname: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub tactic_refs: Vec<String>,
    #[serde(default)]
    pub relationship_type: Option<String>,
    #[serde(default)]
    pub source_ref: Option<String>,
    #[serde(default)]
    pub target_ref: Option<String>,
    #[serde(default)]
    pub x_mitre_version: Option<String>,
    /// The STIX `modified` instant (RFC 3339, so text order is time order).
    #[serde(default)]
    pub modified: String,
    #[serde(default)]
    pub x_mitre_domains: Vec<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub first_seen: Option<String>,
    #[serde(default)]
    pub last_seen: Option<String>,
    /// Reports: when published, and the objects they are about.
    #[serde(default)]
    pub published: Option<String>,
    #[serde(default)]
    pub object_refs: Vec<String>,
}

impl StixObject {
    fn mitre(&self) -> Option<&ExternalReference> {
        self.external_references
            .iter()
            .find(|r| r.source_name == "mitre-attack")
    }

    /// Its ATT&CK id (T1059, G0016, C0022), from its external references.
    pub fn attack_id(&self) -> Option<&str> {
        self.mitre().and_then(|r| r.external_id.as_deref())
    }

    /// Its page on attack.mitre.org.
    pub fn attack_url(&self) -> Option<&str> {
        self.mitre().and_then(|r| r.url.as_deref())
    }
}

/// An RFC 3339 instant (STIX timestamps) in microseconds.
pub fn instant(raw: Option<&str>) -> Option<Micros> {
    raw.and_then(|r| chrono::DateTime::parse_from_rfc3339(r).ok())
        .map(|at| Micros::from_datetime(at.to_utc()))
}

/// The objects of a file that must be a STIX bundle (`what` names the
/// import in the refusal).
pub fn bundle(file: &str, bytes: &[u8], what: &str) -> Result<Vec<StixObject>, ParseError> {
    let text = text(file, bytes)?;
    if !text.trim_start().starts_with('{') {
        return Err(ParseError::new(
            file,
            "line 1, column 1",
            format!("not JSON: {what} takes a STIX bundle"),
        ));
    }
    let bundle: Bundle = serde_json::from_str(text).map_err(|e| ParseError::json(file, &e))?;
    if bundle.kind != "bundle" {
        return Err(ParseError::new(
            file,
            "type",
            format!("a STIX bundle has type \"bundle\", not {:?}", bundle.kind),
        ));
    }
    Ok(bundle.objects)
}
