//! The batch contract every Purple service shares: a batch RPC takes at most
//! [`MAX_BATCH_IDS`] ids, and callers split larger sets with [`chunked`]
//! instead of writing their own loop of calls.

use std::future::Future;

use futures::{StreamExt, TryStreamExt, stream};

/// The most ids one batch RPC accepts (docs/design.md section 6).
pub const MAX_BATCH_IDS: usize = 1_000;

/// How many chunks of one set are in flight at once by default: enough to
/// overlap round trips, few enough not to flood a peer's connection pool.
pub const DEFAULT_FANOUT: usize = 4;

/// The longest id a batch read accepts: longer than any ATT&CK id, UUID or
/// identity-provider subject, short enough that echoing missing ids back
/// stays small.
pub const MAX_ID_LEN: usize = 256;

/// The longest free text a caller may write (notes, reasons, descriptions):
/// room for any honest note, small enough that a test, a page of tests or a
/// report stays far below the message limit.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// The longest name or title a caller may give (campaigns, tests).
pub const MAX_NAME_BYTES: usize = 1_024;

/// A batch a server refuses: over the limit (INVALID_ARGUMENT naming the
/// field and the limit, so a caller knows to chunk), or holding an id no
/// stored thing can have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchTooLarge {
    /// The repeated field (with the item's index for a bad id).
    pub field: String,
    /// How many items it had.
    pub len: usize,
    /// Set when one id is unusable rather than the batch too long.
    pub bad_id: Option<&'static str>,
}

impl BatchTooLarge {
    /// Why, without the field name.
    pub fn reason(&self) -> String {
        match self.bad_id {
            Some(why) => why.to_owned(),
            None => format!(
                "{} items exceed the batch limit of {MAX_BATCH_IDS}; split the request into chunks",
                self.len
            ),
        }
    }

    /// Whether the batch was too long (rather than holding a bad id).
    pub fn is_over_limit(&self) -> bool {
        self.bad_id.is_none()
    }
}

impl std::fmt::Display for BatchTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason())
    }
}

impl std::error::Error for BatchTooLarge {}

impl From<BatchTooLarge> for tonic::Status {
    fn from(err: BatchTooLarge) -> Self {
        tonic::Status::invalid_argument(err.to_string())
    }
}

/// Refuses a batch larger than [`MAX_BATCH_IDS`].
pub fn check_batch_len(field: &str, len: usize) -> Result<(), BatchTooLarge> {
    if len > MAX_BATCH_IDS {
        return Err(BatchTooLarge {
            field: field.to_owned(),
            len,
            bad_id: None,
        });
    }
    Ok(())
}

/// Refuses a batch of ids larger than [`MAX_BATCH_IDS`], or with an id
/// that is empty, longer than [`MAX_ID_LEN`] or holds a control character
/// (a NUL byte, which PostgreSQL cannot store, among them).
pub fn check_ids(field: &str, ids: &[String]) -> Result<(), BatchTooLarge> {
    check_batch_len(field, ids.len())?;
    for (i, id) in ids.iter().enumerate() {
        let bad = if id.is_empty() {
            Some("an id is empty")
        } else if id.len() > MAX_ID_LEN {
            Some("an id is longer than 256 bytes")
        } else if id.chars().any(char::is_control) {
            Some("an id holds a control character")
        } else {
            None
        };
        if bad.is_some() {
            return Err(BatchTooLarge {
                field: format!("{field}[{i}]"),
                len: ids.len(),
                bad_id: bad,
            });
        }
    }
    Ok(())
}

/// An id as an error message may quote it: at most 64 characters, quoted,
/// so a hostile id is never echoed back whole.
pub fn shown(id: &str) -> String {
    let mut short: String = id.chars().take(64).collect();
    if short.len() < id.len() {
        short.push('…');
    }
    format!("{short:?}")
}

/// Answers a batch in request order: the found items (moved out of
/// `found`, not cloned: some carry long lists), and the requested ids that
/// were not found (each once, in request order).
pub fn in_request_order<T>(
    ids: &[String],
    mut found: std::collections::BTreeMap<String, T>,
) -> (Vec<T>, Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    let (mut items, mut missing) = (Vec::new(), Vec::new());
    for id in ids.iter().filter(|id| seen.insert(id.as_str())) {
        match found.remove(id) {
            Some(item) => items.push(item),
            None => missing.push(id.clone()),
        }
    }
    (items, missing)
}

/// Answers a batch whose lookups came back aligned with the request (one
/// slot per requested id, duplicates included): the found items in request
/// order and the ids not found, each id once. What [`in_request_order`]
/// does without a map of the found items to build and search.
pub fn aligned_in_request_order<T, P>(
    ids: &[String],
    found: Vec<Option<T>>,
    mut to_pb: impl FnMut(T) -> P,
) -> (Vec<P>, Vec<String>) {
    debug_assert_eq!(ids.len(), found.len());
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    let (mut items, mut missing) = (Vec::with_capacity(ids.len()), Vec::new());
    for (id, item) in ids.iter().zip(found) {
        if !seen.insert(id.as_str()) {
            continue;
        }
        match item {
            Some(item) => items.push(to_pb(item)),
            None => missing.push(id.clone()),
        }
    }
    (items, missing)
}

/// Sends `items` to `call` in chunks of at most `limit`, at most `fanout`
/// chunks concurrently, and returns the chunk responses in request order.
///
/// An empty set makes no call. The first error ends the whole operation:
/// a partial answer would silently skew whatever the caller computes.
pub async fn chunked<T, R, E, F, Fut>(
    items: &[T],
    limit: usize,
    fanout: usize,
    call: F,
) -> Result<Vec<R>, E>
where
    T: Clone,
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    let limit = limit.max(1);
    let chunks: Vec<Vec<T>> = items.chunks(limit).map(<[T]>::to_vec).collect();
    stream::iter(chunks)
        .map(call)
        .buffered(fanout.max(1))
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[test]
    fn aligned_answers_keep_request_order_and_name_each_missing_id_once() {
        let ids: Vec<String> = ["b", "x", "a", "b", "x"].map(String::from).to_vec();
        let found = vec![Some(2), None, Some(1), Some(2), None];
        let (items, missing) = aligned_in_request_order(&ids, found, |n| n * 10);
        assert_eq!(items, [20, 10]);
        assert_eq!(missing, ["x"]);
    }

    #[tokio::test]
    async fn chunks_respect_the_limit_and_keep_request_order() {
        let ids: Vec<u32> = (0..2_501).collect();
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = chunked(&ids, 1_000, 3, |chunk| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                // Later chunks answer first: order must still hold.
                tokio::time::sleep(std::time::Duration::from_millis(
                    30 - chunk.len() as u64 / 100,
                ))
                .await;
                Ok::<_, ()>(chunk)
            }
        })
        .await
        .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(
            sizes.iter().map(Vec::len).collect::<Vec<_>>(),
            [1_000, 1_000, 501]
        );
        assert_eq!(sizes.concat(), ids);
    }

    #[tokio::test]
    async fn fanout_bounds_concurrency() {
        let ids: Vec<u32> = (0..50).collect();
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        chunked(&ids, 5, 2, |_| {
            let (now, peak) = (now.clone(), peak.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, ()>(())
            }
        })
        .await
        .unwrap();
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn empty_set_makes_no_call_and_errors_propagate() {
        let none: Vec<u8> = Vec::new();
        let out = chunked(&none, 10, 2, |_| async { Err::<(), _>("called") }).await;
        assert_eq!(out, Ok(vec![]));
        let out = chunked(&[1, 2, 3], 1, 2, |c| async move {
            if c == [2] { Err("boom") } else { Ok(c) }
        })
        .await;
        assert_eq!(out, Err("boom"));
    }

    #[test]
    fn bad_ids_are_named_by_index() {
        let ids = vec!["T1059".to_owned(), "a\0b".to_owned()];
        let err = check_ids("technique_ids", &ids).unwrap_err();
        assert_eq!(err.field, "technique_ids[1]");
        assert!(!err.is_over_limit());
        assert!(check_ids("technique_ids", &["x".repeat(257)]).is_err());
        assert!(check_ids("technique_ids", &["T1059".to_owned()]).is_ok());
    }

    #[test]
    fn over_limit_names_field_and_limit() {
        let err: tonic::Status = check_batch_len("technique_ids", 1_001).unwrap_err().into();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("technique_ids") && err.message().contains("1000"));
        assert!(check_batch_len("technique_ids", 1_000).is_ok());
    }
}
