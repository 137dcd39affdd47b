//! One import, start to finish: receive the streamed files (bounded in
//! size, gzip accepted), parse them off the async threads, sync the result
//! in one transaction together with its run record, then tell scoring which
//! techniques changed. A malformed file, an oversized upload or a stream cut
//! short rolls everything back and leaves only the failed run's record.

use futures::Stream;
use purple_runtime::{
    clients::ScoringPeer,
    time::now_micros,
    upload::{self, Chunk, GunzipError, Upload, UploadLimits},
};
use tokio::sync::OwnedSemaphorePermit;

use crate::{
    domain::{Kind, Parsed, Report},
    error::IngestError,
    parse::{ParseError, parse_file},
    store::{
        CatalogStore,
        write::{self, RunRecord},
    },
};

/// Runs imports.
#[derive(Clone, Debug)]
pub struct Importer {
    store: CatalogStore,
    scoring: ScoringPeer,
    limits: UploadLimits,
}

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
                // In a write transaction of its own: on SQLite that takes
                // the writer turn instead of the busy handler's sleeps.
                let db = self.store.db();
                let recorded = async {
                    let mut tx = db.begin().await?;
                    write::record_run(db, &mut tx, run).await?;
                    tx.commit().await
                }
                .await;
                if let Err(record_err) = recorded {
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
        write::record_run(db, &mut tx, run).await?;
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

/// Collects the files of the stream within the process's upload limits;
/// the buffer permits come back with the files, released when parsed.
async fn receive<S>(
    stream: S,
    limits: &UploadLimits,
    report: &mut Report,
) -> Result<(Kind, Vec<Upload>, Vec<OwnedSemaphorePermit>), IngestError>
where
    S: Stream<Item = Result<Chunk, tonic::Status>> + Unpin,
{
    let received = upload::receive(stream, limits).await?;
    let kind = Kind::parse(&received.kind)
        .ok_or_else(|| IngestError::invalid("kind", "the first chunk must name the kind"))?;
    report.kind = kind.name().to_owned();
    report.files = received.files.iter().map(|f| f.name.clone()).collect();
    Ok((kind, received.files, received.permits))
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
    upload::gunzip(upload, max_bytes).map_err(|err| match err {
        GunzipError::Corrupt { at, reason } => IngestError::Parse(ParseError::new(
            &upload.name,
            format!("gzip byte {at}"),
            reason,
        )),
        GunzipError::TooLarge(max) => IngestError::invalid(
            "data",
            format!(
                "{}: decompressed size exceeds the limit of {max} bytes",
                upload.name
            ),
        ),
    })
}
