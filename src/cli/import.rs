//! `purple import <kind> <file-or-directory>`: streams the files to the
//! server in chunks with a progress bar and prints the import report.

use std::path::{Path, PathBuf};

use clap::Args;
use futures::stream;
use indicatif::{ProgressBar, ProgressStyle};
use purple_api::ingest::v1::{
    ImportKind, ImportReport, ImportRequest, ImportStatus,
    ingest_service_client::IngestServiceClient,
};
use purple_ingest::domain::Kind;

use super::{ServerArg, status_error};

/// How much of a file one chunk carries.
const CHUNK_BYTES: usize = 1024 * 1024;

/// What an import feeds: a catalogue kind (ingest) or a history
/// (campaigns).
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Catalogue(Kind),
    History,
}

/// Imports files of one kind.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// attack, d3fend, sigma, elastic, atomic, caldera, lolbas, nist, cve,
    /// stix-reports, kev, or history (one NDJSON file,
    /// docs/formats/history.md).
    #[arg(value_parser = parse_kind)]
    kind: Target,
    /// A file, or a directory whose matching files are imported together.
    path: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArg,
}

fn parse_kind(name: &str) -> Result<Target, String> {
    if name == "history" {
        return Ok(Target::History);
    }
    Kind::parse(name).map(Target::Catalogue).ok_or_else(|| {
        format!("unknown kind {name:?}; expected attack, d3fend, sigma, elastic, atomic, caldera, lolbas, nist, cve, stix-reports, kev or history")
    })
}

/// The file endings each kind imports from a directory.
fn matches(kind: Kind, path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let any = |endings: &[&str]| endings.iter().any(|e| name.ends_with(e));
    match kind {
        Kind::Attack | Kind::Cve => any(&[".json", ".json.gz"]),
        Kind::D3fend => any(&[".csv", ".json"]),
        Kind::Sigma | Kind::Caldera | Kind::Lolbas => any(&[".yml", ".yaml"]),
        Kind::Atomic => any(&[".yml", ".yaml"]) && name.starts_with('t'),
        Kind::Elastic => any(&[".toml"]),
        Kind::Nist => any(&[".json", ".tsv"]),
        Kind::StixReports => any(&[".json", ".json.gz"]),
        // A JSON Schema shipped beside the catalogue is not data.
        Kind::Kev => any(&[".json", ".json.gz"]) && !name.contains("schema"),
    }
}

/// The files to import, sorted so runs are repeatable.
pub fn collect_files(kind: Kind, path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if matches(kind, &path) {
                files.push(path);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        anyhow::bail!("no {} files under {}", kind.name(), path.display());
    }
    Ok(files)
}

/// The chunks of the files, read lazily: the first carries the kind, the
/// first of each file its name (relative to `root`), and a final empty chunk
/// marks the upload complete. A file that cannot be read ends the stream
/// without that marker, so the server refuses the partial upload.
pub fn chunks(
    kind: Kind,
    root: &Path,
    files: Vec<PathBuf>,
    progress: ProgressBar,
) -> impl futures::Stream<Item = ImportRequest> + Send + 'static {
    use std::io::Read;

    struct State {
        files: std::vec::IntoIter<PathBuf>,
        current: Option<(String, std::fs::File)>,
        first: bool,
        done: bool,
    }

    let root = if root.is_file() {
        root.parent().unwrap_or(root).to_path_buf()
    } else {
        root.to_path_buf()
    };
    let state = State {
        files: files.into_iter(),
        current: None,
        first: true,
        done: false,
    };
    stream::unfold(state, move |mut state| {
        let (root, progress) = (root.clone(), progress.clone());
        async move {
            if state.done {
                return None;
            }
            loop {
                let (starting, name, mut file) = match state.current.take() {
                    Some((name, file)) => (false, name, file),
                    None => match state.files.next() {
                        None => {
                            state.done = true;
                            let last = ImportRequest {
                                kind: if state.first {
                                    purple_ingest::convert::kind_pb(kind) as i32
                                } else {
                                    0
                                },
                                last: true,
                                ..ImportRequest::default()
                            };
                            return Some((last, state));
                        }
                        Some(path) => {
                            let name = path
                                .strip_prefix(&root)
                                .unwrap_or(&path)
                                .to_string_lossy()
                                .into_owned();
                            match std::fs::File::open(&path) {
                                Ok(file) => (true, name, file),
                                Err(err) => {
                                    progress
                                        .println(format!("cannot read {}: {err}", path.display()));
                                    return None;
                                }
                            }
                        }
                    },
                };
                let mut data = vec![0; CHUNK_BYTES];
                let read = match file.read(&mut data) {
                    Ok(n) => n,
                    Err(err) => {
                        progress.println(format!("cannot read {name}: {err}"));
                        return None;
                    }
                };
                if read == 0 && !starting {
                    continue;
                }
                data.truncate(read);
                progress.inc(read as u64);
                let chunk = ImportRequest {
                    kind: if state.first {
                        purple_ingest::convert::kind_pb(kind) as i32
                    } else {
                        0
                    },
                    file_name: if starting {
                        name.clone()
                    } else {
                        String::new()
                    },
                    data,
                    last: false,
                };
                state.first = false;
                if read > 0 {
                    state.current = Some((name, file));
                }
                return Some((chunk, state));
            }
        }
    })
}

/// Runs the command.
pub async fn run(args: ImportArgs, client: &super::ClientArgs) -> anyhow::Result<()> {
    let kind = match args.kind {
        Target::History => {
            return super::history::import(&args.path, args.json, &args.server, client).await;
        }
        Target::Catalogue(kind) => kind,
    };
    let files = collect_files(kind, &args.path)?;
    let total: u64 = files
        .iter()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum();
    let progress = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    progress.set_message(format!("importing {} {} file(s)", files.len(), kind.name()));
    let mut client = IngestServiceClient::new(args.server.connect(client).await?)
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    let result = client
        .import(chunks(kind, &args.path, files, progress.clone()))
        .await;
    progress.finish_and_clear();
    let report = result
        .map_err(status_error)?
        .into_inner()
        .report
        .ok_or_else(|| anyhow::anyhow!("the server answered without a report"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report_json(&report))?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The report as JSON.
pub fn report_json(report: &ImportReport) -> serde_json::Value {
    let counts: serde_json::Map<String, serde_json::Value> = report
        .counts
        .iter()
        .map(|(name, c)| {
            (
                name.clone(),
                serde_json::json!({
                    "created": c.created, "updated": c.updated, "unchanged": c.unchanged,
                    "revoked": c.revoked, "deprecated": c.deprecated, "removed": c.removed,
                }),
            )
        })
        .collect();
    serde_json::json!({
        "run_id": report.run_id,
        "kind": ImportKind::try_from(report.kind).map(|k| k.as_str_name()).unwrap_or("?"),
        "status": ImportStatus::try_from(report.status).map(|s| s.as_str_name()).unwrap_or("?"),
        "files": report.files.len(),
        "attack_version": report.attack_version,
        "created": report.created,
        "updated": report.updated,
        "counts": counts,
        "unresolved_references": report.unresolved_references,
        "skipped": report.skipped.iter().map(|s| serde_json::json!({
            "file": s.file_name, "location": s.location, "reason": s.reason,
        })).collect::<Vec<_>>(),
    })
}

/// The report as text.
pub fn render(report: &ImportReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "import {} — {} file(s), {} created, {} updated",
        report.run_id,
        report.files.len(),
        report.created,
        report.updated
    );
    if !report.attack_version.is_empty() {
        let _ = writeln!(out, "ATT&CK version {}", report.attack_version);
    }
    let _ = writeln!(
        out,
        "{:<18} {:>8} {:>8} {:>9} {:>8} {:>10} {:>8}",
        "", "created", "updated", "unchanged", "revoked", "deprecated", "removed"
    );
    for (name, c) in &report.counts {
        let _ = writeln!(
            out,
            "{name:<18} {:>8} {:>8} {:>9} {:>8} {:>10} {:>8}",
            c.created, c.updated, c.unchanged, c.revoked, c.deprecated, c.removed
        );
    }
    // Say what the two counts mean where people read them: one is kept
    // data waiting for the catalogue, the other is data left out.
    let _ = writeln!(
        out,
        "unresolved references: {} (kept: they name ATT&CK ids this server does not know \
         or that were revoked; they resolve when a catalogue that has them is imported)",
        report.unresolved_references
    );
    let _ = writeln!(
        out,
        "skipped items: {} (not imported: the file, place and reason of each follow)",
        report.skipped.len()
    );
    for skipped in report.skipped.iter().take(20) {
        let _ = writeln!(
            out,
            "  {} {}: {}",
            skipped.file_name, skipped.location, skipped.reason
        );
    }
    if report.skipped.len() > 20 {
        let _ = writeln!(
            out,
            "  … {} more (use --json for all)",
            report.skipped.len() - 20
        );
    }
    out
}
