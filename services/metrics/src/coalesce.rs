//! Identical reads asked at once, computed once: a dashboard opened by
//! many people asks the same summary of the same window together, and
//! each is tens of milliseconds of database time at a year's scale, so 32
//! at once on two cores queue (docs/BENCHMARKS.md, "Under load").
//!
//! A request joins the run of its key that has not started yet, or queues
//! one: a run starts only after every request that joined it arrived, so
//! each answer reads what was committed before its request (a client that
//! records events and then asks sees them), and a key has at most one run
//! in progress and one waiting. The run is its own task, so a caller that
//! goes away does not strand the others, and stops when every caller of
//! it went away; a key's entry leaves the map when its last run ends, so
//! the map holds only keys in flight.

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{Arc, Mutex},
};

use futures::FutureExt;
use tokio::sync::watch;
use tonic::Status;
use tracing::Instrument;

type Answer<V> = Option<Result<V, Status>>;

/// A run waiting to start: its answer's channel and the span of the
/// request that queued it (its statements are traced there).
struct Queued<V> {
    answer: watch::Sender<Answer<V>>,
    span: tracing::Span,
}

struct Entry<V> {
    waiting: Option<Queued<V>>,
}

/// Runs of a computation per key, shared by the requests that join them.
pub struct Coalesce<K, V> {
    entries: Arc<Mutex<HashMap<K, Entry<V>>>>,
}

impl<K, V> Clone for Coalesce<K, V> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
        }
    }
}

impl<K, V> Default for Coalesce<K, V> {
    fn default() -> Self {
        Self {
            entries: Default::default(),
        }
    }
}

impl<K, V> Coalesce<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The answer of a run of `compute` for `key` that starts after this
    /// call: the waiting run of the key if there is one, else a new one
    /// (started now, or when the key's run in progress ends).
    pub async fn get<F, Fut>(&self, key: K, compute: F) -> Result<V, Status>
    where
        F: Fn(K) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<V, Status>> + Send + 'static,
    {
        let mut answer = {
            let mut entries = self.entries.lock().expect("coalesce map");
            match entries.get_mut(&key) {
                Some(Entry {
                    waiting: Some(queued),
                }) => queued.answer.subscribe(),
                Some(entry) => {
                    // A run is in progress: queue the next one.
                    let (tx, rx) = watch::channel(None);
                    entry.waiting = Some(Queued {
                        answer: tx,
                        span: tracing::Span::current(),
                    });
                    rx
                }
                None => {
                    let (tx, rx) = watch::channel(None);
                    entries.insert(key.clone(), Entry { waiting: None });
                    let first = Queued {
                        answer: tx,
                        span: tracing::Span::current(),
                    };
                    tokio::spawn(run(self.entries.clone(), key, first, compute));
                    rx
                }
            }
        };
        match answer.wait_for(Option::is_some).await {
            Ok(done) => done.clone().expect("waited for an answer"),
            Err(_) => Err(Status::internal(
                "the shared computation ended without an answer",
            )),
        }
    }

    /// Keys with a run in progress (for tests: the map empties).
    pub fn in_flight(&self) -> usize {
        self.entries.lock().expect("coalesce map").len()
    }
}

/// Runs the key's computation for the run given, then for each run queued
/// meanwhile, and removes the key when none is.
async fn run<K, V, F, Fut>(
    entries: Arc<Mutex<HashMap<K, Entry<V>>>>,
    key: K,
    mut queued: Queued<V>,
    compute: F,
) where
    K: Hash + Eq + Clone,
    V: Clone,
    F: Fn(K) -> Fut,
    Fut: Future<Output = Result<V, Status>>,
{
    loop {
        let computed = std::panic::AssertUnwindSafe(compute(key.clone()).instrument(queued.span))
            .catch_unwind();
        // A run every caller of which went away stops: a caller that asks
        // and leaves at once, over and over, cannot pile up work here.
        let answer = tokio::select! {
            // First, so a queued run nobody waits for any more never starts.
            biased;
            () = queued.answer.closed() => Err(Status::cancelled("every caller went away")),
            answer = computed => {
                answer.unwrap_or_else(|_| Err(Status::internal("the computation failed")))
            }
        };
        queued.answer.send_replace(Some(answer));
        let mut entries = entries.lock().expect("coalesce map");
        match entries.get_mut(&key).and_then(|e| e.waiting.take()) {
            Some(next) => queued = next,
            None => {
                entries.remove(&key);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    /// Counts runs; each takes 50 ms and answers its run number.
    fn counted(
        runs: Arc<AtomicUsize>,
    ) -> impl Fn(u8) -> futures::future::BoxFuture<'static, Result<usize, Status>> {
        move |_| {
            let runs = runs.clone();
            async move {
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(n)
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn requests_at_once_share_a_run_and_a_later_one_gets_a_run_that_starts_after_it() {
        let coalesce: Coalesce<u8, usize> = Coalesce::default();
        let runs = Arc::new(AtomicUsize::new(0));
        // The first starts a run; the nine after it arrive while it runs
        // and share the next one, which starts after all of them.
        let first = tokio::spawn({
            let (c, runs) = (coalesce.clone(), runs.clone());
            async move { c.get(1, counted(runs)).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let rest: Vec<_> = (0..9)
            .map(|_| {
                let (c, runs) = (coalesce.clone(), runs.clone());
                tokio::spawn(async move { c.get(1, counted(runs)).await })
            })
            .collect();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        for r in rest {
            assert_eq!(
                r.await.unwrap().unwrap(),
                2,
                "the run after the one in progress"
            );
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // Another key is not held up, and the map empties.
        assert_eq!(coalesce.get(2, counted(runs.clone())).await.unwrap(), 3);
        assert_eq!(coalesce.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_leaves_the_run_to_the_others_and_a_failure_is_theirs_too() {
        let coalesce: Coalesce<u8, usize> = Coalesce::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let gone = tokio::spawn({
            let (c, runs) = (coalesce.clone(), runs.clone());
            async move { c.get(1, counted(runs)).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let waiting = tokio::spawn({
            let (c, runs) = (coalesce.clone(), runs.clone());
            async move { c.get(1, counted(runs)).await }
        });
        gone.abort();
        assert_eq!(waiting.await.unwrap().unwrap(), 2);

        let failing = |_: u8| async { Err::<usize, _>(Status::unavailable("down")) };
        let err = coalesce.get(3, failing).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        let panicking = |_: u8| async {
            if true {
                panic!("a bug");
            }
            Ok::<usize, Status>(0)
        };
        let err = coalesce.get(4, panicking).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        assert_eq!(coalesce.in_flight(), 0, "no key left behind");

        // Every caller gone: the run stops instead of running on.
        let slow = |_: u8| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<usize, Status>(0)
        };
        let left = tokio::spawn({
            let c = coalesce.clone();
            async move { c.get(5, slow).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(coalesce.in_flight(), 1);
        left.abort();
        for _ in 0..100 {
            if coalesce.in_flight() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(coalesce.in_flight(), 0, "the abandoned run stopped");
    }
}
