//! One parser per source format. Each turns the bytes of one file into rows
//! of [`Parsed`], rejects a malformed file with the file and the place, and
//! counts items it cannot use instead of dropping them silently.

pub mod attack;
pub mod cve;
pub mod d3fend;
pub mod intel;
pub mod kev;
pub mod nist;
pub mod rules;
pub mod stix;
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

/// The most characters of a file name, place or message an error quotes:
/// an error never echoes a hostile input back whole.
const QUOTE: usize = 300;

fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(QUOTE).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

impl ParseError {
    /// An error at a place.
    pub fn new(file: &str, place: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: excerpt(file),
            place: excerpt(&place.into()),
            message: excerpt(&message.into()),
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

/// The text of a file, which must be UTF-8 and nest flow collections
/// (`[`, `{`) at most [`MAX_NESTING`] deep: YAML parsers take time that
/// grows faster than the input with nesting (100,000 nested flow mappings
/// take a parser minutes, and a parse cannot be cancelled), so depth is
/// checked in one linear pass before any parser sees the text.
pub fn text<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ParseError::new(file, format!("byte {}", e.valid_up_to()), "not UTF-8 text")
    })?;
    check_nesting(file, text)?;
    Ok(text)
}

/// The deepest nesting of flow collections a file may have.
pub const MAX_NESTING: usize = 64;

/// Refuses text whose `[`/`{` nesting, outside quoted strings and
/// comments, goes deeper than [`MAX_NESTING`]. JSON, YAML and TOML quote
/// alike for this purpose: `'` and `"` strings (triple-quoted TOML strings
/// by parity), `\` escapes in `"` strings, `#` comments to the end of the
/// line.
fn check_nesting(file: &str, text: &str) -> Result<(), ParseError> {
    let (mut depth, mut line) = (0_usize, 1_usize);
    let (mut single, mut double, mut escaped, mut comment) = (false, false, false, false);
    for c in text.chars() {
        if c == '\n' {
            line += 1;
            comment = false;
            continue;
        }
        if comment {
            continue;
        }
        if double {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => double = false,
                _ => {}
            }
            continue;
        }
        if single {
            single = c != '\'';
            continue;
        }
        match c {
            '"' => double = true,
            '\'' => single = true,
            '#' => comment = true,
            '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(ParseError::new(
                        file,
                        format!("line {line}"),
                        format!("nested more than {MAX_NESTING} levels deep"),
                    ));
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
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
        Kind::StixReports => intel::parse(file, bytes, parsed),
        Kind::Kev => kev::parse(file, bytes, parsed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_nesting_is_refused_before_any_parser_runs() {
        let deep = "{a: ".repeat(100_000) + "x" + &"}".repeat(100_000);
        let started = std::time::Instant::now();
        let err = text("evil.yml", deep.as_bytes()).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(err.place, "line 1");
        // Brackets in strings and comments do not count.
        let b = "[".repeat(100);
        let quoted = format!("a: '{b}'\nb: \"{b}\\\"\"\n# {b}\nc: '''{b}'''\n");
        assert!(text("ok.toml", quoted.as_bytes()).is_ok());
        assert!(text("ok.json", b"[[[[1]]]]").is_ok());
    }

    #[test]
    fn errors_quote_only_an_excerpt() {
        let err = ParseError::new(&"f".repeat(10_000), "x", "y".repeat(10_000));
        assert!(err.file.chars().count() <= 301 && err.message.chars().count() <= 301);
    }
}
