//! One import, start to finish: receive the streamed files (bounded in
//! size, gzip accepted), parse them off the async threads, sync the result
//! in one transaction together with its run record, then tell scoring which
//! techniques changed. A malformed file, an oversized upload or a stream cut
//! short rolls everything back and leaves only the failed run's record.

use std::io::Read;

use futures::{Stream, StreamExt};
use purple_runtime::{clients::ScoringPeer, time::now_micros};

use crate::{
    domain::{Kind, Parsed, Report},
    error::IngestError,
    parse::{ParseError, parse_file},
    store::{
        CatalogStore,
        write::{self, RunRecord},
    },
};

/// One chunk of an upload, as the API receives it: the kind (named on
/// the first chunk), a file name (naming a new file), bytes, and the
/// end-of-upload marker.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The kind; None when the chunk names none or an unknown one.
    pub kind: Option<Kind>,
    pub file_name: String,
    pub data: Vec<u8>,
    pub last: bool,
}

/// One received file.
pub struct Upload {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Runs imports.
#[derive(Clone, Debug)]
pub struct Importer {
    store: CatalogStore,
    scoring: ScoringPeer,
    max_bytes: usize,
}

impl Importer {
    /// An importer that accepts uploads up to `max_bytes` (compressed and
    /// decompressed alike).
    pub fn new(store: CatalogStore, scoring: ScoringPeer, max_bytes: usize) -> Self {
        Self {
            store,
            scoring,
            max_bytes,
        }
    }

    /// Receives, parses and writes one import stream.
    pub async fn run<S>(&self, stream: S) -> Result<Report, IngestError>
    where
        S: Stream<Item = Result<Chunk, tonic::Status>> + Unpin,
    {
        let mut report = Report {
            run_id: uuid::Uuid::new_v4().to_string(),
            started_at: now_micros(),
            ..Report::default()
        };
        let outcome = self.attempt(stream, &mut report).await;
        report.finished_at = now_micros();
        match outcome {
            Ok(invalidated) => {
                self.invalidate(invalidated).await;
                Ok(report)
            }
            Err(err) => {
                report.error = err.to_string();
                let run = RunRecord {
                    run_id: &report.run_id,
                    kind: &report.kind,
                    succeeded: false,
                    attack_version: &report.attack_version,
                    report_json: serde_json::to_string(&report).expect("reports serialize"),
                    error: &report.error,
                    started_at: report.started_at,
                    finished_at: report.finished_at,
                };
                if let Err(record_err) =
                    write::record_run(self.store.db(), self.store.db().pool(), run).await
                {
                    tracing::error!(%record_err, "cannot record the failed import run");
                }
                Err(err)
            }
        }
    }

    async fn attempt<S>(&self, stream: S, report: &mut Report) -> Result<Vec<String>, IngestError>
    where
        S: Stream<Item = Result<Chunk, tonic::Status>> + Unpin,
    {
        let (kind, uploads) = receive(stream, self.max_bytes, report).await?;
        let max_bytes = self.max_bytes;
        let parsed = tokio::task::spawn_blocking(move || parse_all(kind, uploads, max_bytes))
            .await
            .map_err(|e| IngestError::Internal(format!("parser task: {e}")))??;
        report.attack_version = parsed.attack_version.clone().unwrap_or_default();

        let db = self.store.db();
        let mut tx = db.begin().await?;
        let changes = write::apply(db, &mut tx, kind, &parsed).await?;
        report.counts = changes.counts;
        report.unresolved_references = changes.unresolved.len() as u64;
        report.skipped = parsed.skipped;
        report.skipped.extend(changes.unresolved);
        report.succeeded = true;
        report.finished_at = now_micros();
        let run = RunRecord {
            run_id: &report.run_id,
            kind: kind.name(),
            succeeded: true,
            attack_version: &report.attack_version,
            report_json: serde_json::to_string(&report).expect("reports serialize"),
            error: "",
            started_at: report.started_at,
            finished_at: report.finished_at,
        };
        write::record_run(db, &mut *tx, run).await?;
        tx.commit().await?;
        Ok(changes.invalidated.into_iter().collect())
    }

    /// Tells scoring, in chunked batches, which techniques' inputs changed.
    /// The catalogue is committed either way: a scoring that is down keeps
    /// its cache until its own expiry, which is logged here.
    async fn invalidate(&self, technique_ids: Vec<String>) {
        if let Err(err) = self.scoring.invalidate(&technique_ids, "ingest").await {
            tracing::warn!(code = ?err.status.code(), message = err.status.message(), techniques = technique_ids.len(), "scoring was not told of changed techniques");
        }
    }
}

/// Collects the files of the stream.
async fn receive<S>(
    mut stream: S,
    max_bytes: usize,
    report: &mut Report,
) -> Result<(Kind, Vec<Upload>), IngestError>
where
    S: Stream<Item = Result<Chunk, tonic::Status>> + Unpin,
{
    let mut kind = None;
    let mut uploads: Vec<Upload> = Vec::new();
    let mut total = 0usize;
    let mut complete = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|status| {
            IngestError::invalid(
                "stream",
                format!(
                    "the upload was cut short ({:?}: {})",
                    status.code(),
                    status.message()
                ),
            )
        })?;
        if complete {
            return Err(IngestError::invalid(
                "last",
                "a chunk followed the one marked last",
            ));
        }
        complete = chunk.last;
        if kind.is_none() {
            let k = chunk.kind.ok_or_else(|| {
                IngestError::invalid("kind", "the first chunk must name the kind")
            })?;
            report.kind = k.name().to_owned();
            kind = Some(k);
        }
        if !chunk.file_name.is_empty() {
            report.files.push(chunk.file_name.clone());
            uploads.push(Upload {
                name: chunk.file_name,
                bytes: Vec::new(),
            });
        }
        let Some(current) = uploads.last_mut() else {
            if chunk.data.is_empty() {
                continue;
            }
            return Err(IngestError::invalid(
                "file_name",
                "the first chunk must name its file",
            ));
        };
        total += chunk.data.len();
        if total > max_bytes {
            return Err(IngestError::invalid(
                "data",
                format!(
                    "{}: the upload exceeds the limit of {max_bytes} bytes",
                    current.name
                ),
            ));
        }
        current.bytes.extend_from_slice(&chunk.data);
    }
    let kind = kind.ok_or_else(|| IngestError::invalid("stream", "no chunk received"))?;
    if !complete {
        return Err(IngestError::invalid(
            "stream",
            "the upload was cut short: no chunk was marked last",
        ));
    }
    Ok((kind, uploads))
}

/// Parses every file; the first malformed one fails the whole import.
fn parse_all(kind: Kind, uploads: Vec<Upload>, max_bytes: usize) -> Result<Parsed, IngestError> {
    let mut parsed = Parsed::default();
    for upload in uploads {
        let bytes = decompress(&upload, max_bytes)?;
        parse_file(kind, &upload.name, &bytes, &mut parsed)?;
    }
    if parsed.is_empty() && parsed.skipped.is_empty() {
        return Err(IngestError::Parse(ParseError::new(
            "upload",
            "files",
            format!("no {} data in the upload", kind.name()),
        )));
    }
    Ok(parsed)
}

/// Gunzips a gzip file (by its magic bytes), bounded in size.
fn decompress(
    upload: &Upload,
    max_bytes: usize,
) -> Result<std::borrow::Cow<'_, [u8]>, IngestError> {
    if !upload.bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(std::borrow::Cow::Borrowed(&upload.bytes));
    }
    let mut out = Vec::new();
    let mut decoder =
        flate2::read::GzDecoder::new(upload.bytes.as_slice()).take(max_bytes as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|e| {
        IngestError::Parse(ParseError::new(
            &upload.name,
            format!("gzip byte {}", out.len()),
            e.to_string(),
        ))
    })?;
    if out.len() > max_bytes {
        return Err(IngestError::invalid(
            "data",
            format!(
                "{}: decompressed size exceeds the limit of {max_bytes} bytes",
                upload.name
            ),
        ));
    }
    Ok(std::borrow::Cow::Owned(out))
}
