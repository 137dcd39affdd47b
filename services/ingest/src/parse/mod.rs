//! One parser per source format. Each turns the bytes of one file into rows
//! of [`Parsed`], rejects a malformed file with the file and the place, and
//! counts items it cannot use instead of dropping them silently.

pub mod attack;
pub mod cve;
pub mod d3fend;
pub mod nist;
pub mod rules;
pub mod templates;

use crate::domain::Parsed;

/// A file that cannot be imported: which file, where, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}: {place}: {message}")]
pub struct ParseError {
    /// The file name as uploaded.
    pub file: String,
    /// Line and column, an object id or a path inside the file.
    pub place: String,
    /// What is wrong.
    pub message: String,
}

impl ParseError {
    /// An error at a place.
    pub fn new(file: &str, place: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            place: place.into(),
            message: message.into(),
        }
    }

    /// A JSON syntax or shape error, placed by line and column.
    pub fn json(file: &str, err: &serde_json::Error) -> Self {
        Self::new(
            file,
            format!("line {}, column {}", err.line(), err.column()),
            strip_position(&err.to_string()),
        )
    }

    /// A YAML error, placed by line and column when known.
    pub fn yaml(file: &str, err: &serde_yaml_ng::Error) -> Self {
        let place = err.location().map_or_else(
            || "document".to_owned(),
            |l| format!("line {}, column {}", l.line(), l.column()),
        );
        Self::new(file, place, strip_position(&err.to_string()))
    }

    /// A TOML error, placed by line and column.
    pub fn toml(file: &str, text: &str, err: &toml::de::Error) -> Self {
        let place = err.span().map_or_else(
            || "document".to_owned(),
            |span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}")
            },
        );
        Self::new(file, place, err.message().to_owned())
    }

    /// A CSV error, placed by line.
    pub fn csv(file: &str, err: &csv::Error) -> Self {
        let place = err
            .position()
            .map_or_else(|| "document".to_owned(), |p| format!("line {}", p.line()));
        Self::new(file, place, err.to_string())
    }
}

/// serde's messages end with " at line L column C", which the place says.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The text of a file, which must be UTF-8.
pub fn text<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str, ParseError> {
    std::str::from_utf8(bytes)
        .map_err(|e| ParseError::new(file, format!("byte {}", e.valid_up_to()), "not UTF-8 text"))
}

/// Adds one file of `kind` to `parsed`.
pub fn parse_file(
    kind: crate::domain::Kind,
    file: &str,
    bytes: &[u8],
    parsed: &mut Parsed,
) -> Result<(), ParseError> {
    use crate::domain::Kind;
    match kind {
        Kind::Attack => attack::parse(file, bytes, parsed),
        Kind::D3fend => d3fend::parse(file, bytes, parsed),
        Kind::Sigma => rules::parse_sigma(file, bytes, parsed),
        Kind::Elastic => rules::parse_elastic(file, bytes, parsed),
        Kind::Atomic => templates::parse_atomic(file, bytes, parsed),
        Kind::Caldera => templates::parse_caldera(file, bytes, parsed),
        Kind::Lolbas => templates::parse_lolbas(file, bytes, parsed),
        Kind::Nist => nist::parse(file, bytes, parsed),
        Kind::Cve => cve::parse(file, bytes, parsed),
    }
}
