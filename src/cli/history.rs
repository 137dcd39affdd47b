//! `purple import history <file>` and `purple export history -o <file>`: a
//! program's history (docs/formats/history.md) in and out of a running
//! server, streamed in chunks with a progress bar.

use std::{io::Write, path::PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use futures::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use purple_api::campaigns::v1::{
    ExportHistoryRequest, ImportHistoryRequest, ImportHistoryResponse,
    campaigns_service_client::CampaignsServiceClient,
};
use tonic_types::StatusExt;

use super::{ClientArgs, ServerArg};

/// How much of the file one chunk carries.
const CHUNK_BYTES: usize = 1024 * 1024;

fn bar(total: u64, message: String) -> ProgressBar {
    ProgressBar::new(total)
        .with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        )
        .with_message(message)
}

/// The refusal of an upload, every refused record on its own line.
fn refusal(status: &tonic::Status) -> anyhow::Error {
    let details = status.get_error_details();
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = details.bad_request() {
        for v in &bad.field_violations {
            text.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    anyhow::anyhow!(text)
}

/// Imports a history file into campaigns.
pub async fn import(
    path: &std::path::Path,
    json: bool,
    server: &ServerArg,
    client: &ClientArgs,
) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let name = path.file_name().map_or_else(
        || "history.ndjson".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let progress = bar(total, format!("importing history {name}"));
    let chunks = {
        let progress = progress.clone();
        stream::unfold((Some(file), true), move |(file, first)| {
            let (progress, name) = (progress.clone(), name.clone());
            async move {
                use std::io::Read;
                let mut file = file?;
                let mut data = vec![0; CHUNK_BYTES];
                let read = match file.read(&mut data) {
                    Ok(n) => n,
                    Err(err) => {
                        progress.println(format!("cannot read {name}: {err}"));
                        return None;
                    }
                };
                data.truncate(read);
                progress.inc(read as u64);
                let last = read == 0;
                let chunk = ImportHistoryRequest {
                    file_name: if first { name } else { String::new() },
                    data,
                    last,
                };
                Some((chunk, ((!last).then_some(file), false)))
            }
        })
    };
    let mut campaigns = CampaignsServiceClient::new(server.connect(client).await?)
        .max_encoding_message_size(64 << 20);
    let result = campaigns.import_history(chunks).await;
    progress.finish_and_clear();
    let report = result.map_err(|s| refusal(&s))?.into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&report_json(&report))?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn report_json(r: &ImportHistoryResponse) -> serde_json::Value {
    serde_json::json!({
        "records": r.records,
        "events": r.events,
        "counts": r.counts.iter().map(|c| serde_json::json!({
            "kind": c.kind, "created": c.created, "updated": c.updated, "unchanged": c.unchanged,
        })).collect::<Vec<_>>(),
        "notes": r.notes,
    })
}

fn render(r: &ImportHistoryResponse) -> String {
    let mut out = format!(
        "{:<18} {:>9} {:>9} {:>9}\n",
        "", "created", "updated", "unchanged"
    );
    for c in &r.counts {
        out.push_str(&format!(
            "{:<18} {:>9} {:>9} {:>9}\n",
            c.kind, c.created, c.updated, c.unchanged
        ));
    }
    out.push_str(&format!(
        "{} records; {} audit events written (metrics receives them through the outbox)\n",
        r.records, r.events
    ));
    if !r.notes.is_empty() {
        out.push_str("accepted, worth knowing:\n");
        for note in &r.notes {
            out.push_str(&format!("   {note}\n"));
        }
    }
    out
}

/// What `purple export` writes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportWhat {
    /// The program's history, NDJSON (docs/formats/history.md).
    History,
}

/// Exports data from a running server.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// What to export.
    #[arg(value_enum)]
    what: ExportWhat,
    /// Where to write it ("-" for standard output).
    #[arg(short, long, default_value = "-")]
    output: PathBuf,
    #[command(flatten)]
    server: ServerArg,
}

/// Runs `purple export`.
pub async fn export(args: ExportArgs, client: &ClientArgs) -> anyhow::Result<()> {
    let ExportWhat::History = args.what;
    let mut campaigns = CampaignsServiceClient::new(args.server.connect(client).await?)
        .max_decoding_message_size(64 << 20);
    let mut chunks = campaigns
        .export_history(ExportHistoryRequest {})
        .await
        .map_err(|s| refusal(&s))?
        .into_inner();
    let to_stdout = args.output.as_os_str() == "-";
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&args.output)
                .with_context(|| format!("creating {}", args.output.display()))?,
        ))
    };
    let progress = if to_stdout {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner().with_message("exporting history")
    };
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|s| refusal(&s))?;
        out.write_all(&chunk.data)?;
        progress.inc(chunk.data.len() as u64);
    }
    out.flush()?;
    progress.finish_and_clear();
    Ok(())
}
