//! One import, start to finish: receive the streamed files (bounded in
//! size, gzip accepted), parse them off the async threads, sync the result
//! in one transaction together with its run record, then tell scoring which
//! techniques changed. A malformed file, an oversized upload or a stream cut
//! short rolls everything back and leaves only the failed run's record.

use std::io::Read;

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use purple_runtime::{clients::ScoringPeer, time::now_micros};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    limits: UploadLimits,
}

/// What one upload, and all of them together, may hold.
#[derive(Clone, Debug)]
pub struct UploadLimits {
    /// The most bytes of one import (compressed and decompressed alike).
    pub max_bytes: usize,
    /// The bytes every upload in progress may buffer together, in KiB
    /// permits: an upload that would pass it is refused with
    /// RESOURCE_EXHAUSTED instead of growing the process.
    pub buffer: Arc<Semaphore>,
    /// How long an upload may send nothing before it is abandoned.
    pub idle: Duration,
}

impl UploadLimits {
    /// Limits with a shared buffer of `buffer_bytes`.
    pub fn new(max_bytes: usize, buffer_bytes: usize, idle: Duration) -> Self {
        Self {
            max_bytes,
            buffer: Arc::new(Semaphore::new((buffer_bytes / 1024).max(1))),
            idle,
        }
    }
}

/// The longest file name an upload may give.
const MAX_FILE_NAME: usize = 1_024;
/// The most files one upload may hold.
const MAX_FILES: usize = 100_000;

impl Importer {
    /// An importer within these upload limits.
    pub fn new(store: CatalogStore, scoring: ScoringPeer, limits: UploadLimits) -> Self {
        Self {
            store,
            scoring,
            limits,
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
                report.bound();
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
        let (kind, uploads, permits) = receive(stream, &self.limits, report).await?;
        let max_bytes = self.limits.max_bytes;
        let parsed = tokio::task::spawn_blocking(move || parse_all(kind, uploads, max_bytes))
            .await
            .map_err(|e| IngestError::Internal(format!("parser task: {e}")))??;
        drop(permits);
        report.attack_version = parsed.attack_version.clone().unwrap_or_default();

        let db = self.store.db();
        let mut tx = db.begin().await?;
        let changes = write::apply(db, &mut tx, kind, &parsed).await?;
        report.counts = changes.counts;
        report.unresolved_references = changes.unresolved.len() as u64;
        report.skipped = parsed.skipped;
        report.skipped.extend(changes.unresolved);
        report.bound();
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

/// Collects the files of the stream, holding buffer permits for the bytes
/// it keeps (returned with the files, released when the import ends).
async fn receive<S>(
    mut stream: S,
    limits: &UploadLimits,
    report: &mut Report,
) -> Result<(Kind, Vec<Upload>, Vec<OwnedSemaphorePermit>), IngestError>
where
    S: Stream<Item = Result<Chunk, tonic::Status>> + Unpin,
{
    let max_bytes = limits.max_bytes;
    let mut kind = None;
    let mut uploads: Vec<Upload> = Vec::new();
    let mut permits = Vec::new();
    let (mut total, mut held_kib) = (0usize, 0usize);
    let mut complete = false;
    loop {
        let next = tokio::time::timeout(limits.idle, stream.next())
            .await
            .map_err(|_| {
                IngestError::Stalled(format!(
                    "the upload sent nothing for {} s",
                    limits.idle.as_secs()
                ))
            })?;
        let Some(chunk) = next else { break };
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
            if chunk.file_name.len() > MAX_FILE_NAME || chunk.file_name.contains('\0') {
                return Err(IngestError::invalid(
                    "file_name",
                    "at most 1,024 bytes, without NUL",
                ));
            }
            if uploads.len() >= MAX_FILES {
                return Err(IngestError::invalid(
                    "file_name",
                    "an upload holds at most 100,000 files",
                ));
            }
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
        let need_kib = total.div_ceil(1024).saturating_sub(held_kib);
        if need_kib > 0 {
            let permit = limits
                .buffer
                .clone()
                .try_acquire_many_owned(u32::try_from(need_kib).unwrap_or(u32::MAX))
                .map_err(|_| {
                    IngestError::Exhausted(
                        "uploads in progress hold all the memory set aside for them".into(),
                    )
                })?;
            held_kib += need_kib;
            permits.push(permit);
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
    Ok((kind, uploads, permits))
}

/// Parses every file; the first malformed one fails the whole import.
fn parse_all(kind: Kind, uploads: Vec<Upload>, max_bytes: usize) -> Result<Parsed, IngestError> {
    let mut parsed = Parsed::default();
    for upload in uploads {
        let bytes = decompress(&upload, max_bytes)?;
        parse_file(kind, &upload.name, &bytes, &mut parsed)?;
    }
    parsed.drop_oversized();
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
    // Every member of a multi-member gzip file, not just the first.
    let mut decoder =
        flate2::read::MultiGzDecoder::new(upload.bytes.as_slice()).take(max_bytes as u64 + 1);
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
