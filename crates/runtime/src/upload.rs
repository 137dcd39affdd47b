//! Receiving a client-streamed upload (ingest's catalogue imports,
//! campaigns' history import): files in chunks, bounded in size per upload
//! and in memory across all uploads in progress, abandoned when it goes
//! quiet, refused when cut short (no chunk marked last), gzip undone by its
//! magic bytes (every member of a multi-member file) within the same size
//! bound.

use std::{borrow::Cow, io::Read, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One chunk as a service's API receives it.
#[derive(Debug, Default)]
pub struct Chunk {
    /// What the upload is (the import kind), named on the first chunk.
    pub kind: String,
    /// Set on the first chunk of each file: starts a new file.
    pub file_name: String,
    /// The next bytes of the current file.
    pub data: Vec<u8>,
    /// The end-of-upload marker.
    pub last: bool,
}

/// One received file.
#[derive(Debug)]
pub struct Upload {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A complete upload: its kind and files, holding its share of the upload
/// buffer until dropped.
#[derive(Debug)]
pub struct Received {
    /// The first chunk's kind.
    pub kind: String,
    /// The files, in order.
    pub files: Vec<Upload>,
    /// Released when the upload is dropped.
    pub permits: Vec<OwnedSemaphorePermit>,
}

/// What one upload, and all of them together, may hold.
#[derive(Clone, Debug)]
pub struct UploadLimits {
    /// The most bytes of one upload (compressed and decompressed alike).
    pub max_bytes: usize,
    /// The bytes every upload in progress may buffer together, in KiB
    /// permits: an upload that would pass it is refused instead of growing
    /// the process.
    pub buffer: Arc<Semaphore>,
    /// How long an upload may send nothing before it is abandoned.
    pub idle: Duration,
    /// The most files one upload may hold.
    pub max_files: usize,
}

impl UploadLimits {
    /// Limits with a shared buffer of `buffer_bytes`.
    pub fn new(max_bytes: usize, buffer_bytes: usize, idle: Duration, max_files: usize) -> Self {
        Self {
            max_bytes,
            buffer: Arc::new(Semaphore::new((buffer_bytes / 1024).max(1))),
            idle,
            max_files,
        }
    }
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The client's mistake (INVALID_ARGUMENT).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The upload went quiet (DEADLINE_EXCEEDED).
    #[error("{0}")]
    Stalled(String),
    /// The server's upload memory is taken (RESOURCE_EXHAUSTED).
    #[error("{0}")]
    Exhausted(String),
}

fn invalid(field: &str, reason: impl Into<String>) -> UploadError {
    UploadError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// The longest file name an upload may give.
const MAX_FILE_NAME: usize = 1_024;

/// Collects the files of a stream within the limits.
pub async fn receive<S>(mut stream: S, limits: &UploadLimits) -> Result<Received, UploadError>
where
    S: Stream<Item = Result<Chunk, tonic::Status>> + Unpin,
{
    let max_bytes = limits.max_bytes;
    let mut kind: Option<String> = None;
    let mut files: Vec<Upload> = Vec::new();
    let mut permits = Vec::new();
    let (mut total, mut held_kib) = (0usize, 0usize);
    let mut complete = false;
    loop {
        let next = tokio::time::timeout(limits.idle, stream.next())
            .await
            .map_err(|_| {
                UploadError::Stalled(format!(
                    "the upload sent nothing for {} s",
                    limits.idle.as_secs()
                ))
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|status| {
            invalid(
                "stream",
                format!(
                    "the upload was cut short ({:?}: {})",
                    status.code(),
                    status.message()
                ),
            )
        })?;
        if complete {
            return Err(invalid("last", "a chunk followed the one marked last"));
        }
        complete = chunk.last;
        if kind.is_none() {
            kind = Some(chunk.kind.clone());
        }
        if !chunk.file_name.is_empty() {
            if chunk.file_name.len() > MAX_FILE_NAME || chunk.file_name.contains('\0') {
                return Err(invalid("file_name", "at most 1,024 bytes, without NUL"));
            }
            if files.len() >= limits.max_files {
                return Err(invalid(
                    "file_name",
                    format!("an upload holds at most {} files", limits.max_files),
                ));
            }
            files.push(Upload {
                name: chunk.file_name,
                bytes: Vec::new(),
            });
        }
        let Some(current) = files.last_mut() else {
            if chunk.data.is_empty() {
                continue;
            }
            return Err(invalid("file_name", "the first chunk must name its file"));
        };
        total += chunk.data.len();
        if total > max_bytes {
            return Err(invalid(
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
                    UploadError::Exhausted(
                        "uploads in progress hold all the memory set aside for them".into(),
                    )
                })?;
            held_kib += need_kib;
            permits.push(permit);
        }
        current.bytes.extend_from_slice(&chunk.data);
    }
    let kind = kind.ok_or_else(|| invalid("stream", "no chunk received"))?;
    if !complete {
        return Err(invalid(
            "stream",
            "the upload was cut short: no chunk was marked last",
        ));
    }
    Ok(Received {
        kind,
        files,
        permits,
    })
}

/// A gzip file's content (by its magic bytes; every member of a
/// multi-member file), bounded in size; any other file as it is. The error
/// names the byte where decompression failed.
pub fn gunzip(upload: &Upload, max_bytes: usize) -> Result<Cow<'_, [u8]>, GunzipError> {
    if !upload.bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(Cow::Borrowed(&upload.bytes));
    }
    let mut out = Vec::new();
    let mut decoder =
        flate2::read::MultiGzDecoder::new(upload.bytes.as_slice()).take(max_bytes as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| GunzipError::Corrupt {
            at: out.len(),
            reason: e.to_string(),
        })?;
    if out.len() > max_bytes {
        return Err(GunzipError::TooLarge(max_bytes));
    }
    Ok(Cow::Owned(out))
}

/// A gzip file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GunzipError {
    /// Malformed at this decompressed offset.
    #[error("gzip byte {at}: {reason}")]
    Corrupt { at: usize, reason: String },
    /// Larger than the upload limit once decompressed.
    #[error("decompressed size exceeds the limit of {0} bytes")]
    TooLarge(usize),
}
