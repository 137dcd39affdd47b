//! Tests recently read by id, held in this replica's memory and kept
//! coherent by the database's own record of changes. Every write to a
//! test's row notes the test in `test_changes` with a mark in commit order
//! (a trigger, migration 0011). Before answering from memory, a read makes
//! sure a check of that record started after the read arrived: the check
//! (one small statement) drops every held test changed since the previous
//! one, whichever replica or process wrote it. Reads that arrive while a
//! check runs share the next one, so under load a read costs a fraction of
//! a statement; a read of tests not held reads them in full (a second
//! statement, only then).
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Instant,
};

use crate::{domain::TestRow, store::CampaignStore};

/// How many bytes of tests a replica holds (~600 bytes a test with short
/// notes: about 100,000 tests, a year of an enterprise programme's); past
/// it, half of them are dropped (reads stay correct, the dropped ones are
/// read in full next time). Counted in bytes, not tests: notes have no
/// length limit but the message size, and a caller writing huge notes must
/// not make a replica hold gigabytes.
const BUDGET_BYTES: usize = 64 << 20;

/// A test bigger than this is served but not held.
const MAX_HELD_BYTES: usize = 64 << 10;

/// How many recent batches of changed tests are remembered, and how many
/// ids in all, so that a full read racing a check does not hold what the
/// check dropped. Past either, the oldest are forgotten (a read that raced
/// them holds nothing): on PostgreSQL a long transaction makes every check
/// return the same changes again, and memory must not grow with that.
const RECENT_CHANGES: usize = 256;
const RECENT_IDS: usize = 1 << 16;

/// The held tests of one replica and their bytes.
#[derive(Clone, Debug, Default)]
pub struct TestCache {
    held: Arc<Mutex<Held>>,
    /// The latest check of `test_changes`; locked while one runs.
    check: Arc<tokio::sync::Mutex<Check>>,
}

#[derive(Debug, Default)]
struct Held {
    tests: HashMap<String, Arc<TestRow>>,
    bytes: usize,
    /// Counts the checks that dropped tests (or could have).
    generation: u64,
    /// The tests each recent generation dropped, oldest first, and how
    /// many they are.
    recent: VecDeque<(u64, Vec<String>)>,
    recent_ids: usize,
}

/// Where the record of changes was last read.
#[derive(Debug, Default)]
struct Check {
    /// When the latest check started (None: never).
    started: Option<Instant>,
    /// The mark to ask from next time.
    horizon: Option<i64>,
    /// The held tests' generation once it was applied.
    generation: u64,
}

/// What holding a test costs, near enough: its text and a fixed part for
/// the row, the map entry and its key.
fn bytes_of(t: &TestRow) -> usize {
    let text = [
        &t.test_id,
        &t.technique_id,
        &t.template_id,
        &t.title,
        &t.chain_id,
        &t.red_assignee_id,
        &t.blue_assignee_id,
        &t.red_notes,
        &t.blue_notes,
        &t.rejection_reason,
    ]
    .iter()
    .map(|s| s.len())
    .sum::<usize>();
    let optional =
        t.campaign_id.as_ref().map_or(0, String::len) + t.retest_of.as_ref().map_or(0, String::len);
    text + optional + t.test_id.len() + 512
}

impl TestCache {
    /// Tests by id as stored now, aligned with `ids` (None where a test is
    /// not stored): held copies are answered from memory once a check
    /// started after this call, the others are read and held.
    pub async fn read(
        &self,
        store: &CampaignStore,
        ids: &[String],
    ) -> Result<Vec<Option<Arc<TestRow>>>, sqlx::Error> {
        let generation = self.checked_since(store, Instant::now()).await?;
        let mut missing = Vec::new();
        let mut found: Vec<Option<Arc<TestRow>>> = {
            let held = self.held.lock().expect("test cache poisoned");
            ids.iter()
                .map(|id| {
                    let t = held.tests.get(id).cloned();
                    if t.is_none() {
                        missing.push(id.clone());
                    }
                    t
                })
                .collect()
        };
        if missing.is_empty() {
            return Ok(found);
        }
        let read = store.tests_by_ids(&missing).await?;
        let mut read_now = HashMap::with_capacity(read.len());
        let mut held = self.held.lock().expect("test cache poisoned");
        // A check since this read's own may have dropped a test this read
        // then read at its older version: such a test is served (it was
        // current when read) but not held.
        let changed = held.changed_after(generation);
        for (id, t) in read {
            let t = Arc::new(t);
            let size = bytes_of(&t);
            let holdable = changed
                .as_ref()
                .is_some_and(|changed| !changed.contains(&id));
            // A concurrent read may hold a newer version: keep the newer.
            let newer_held = held.tests.get(&id).is_some_and(|h| h.version > t.version);
            if size <= MAX_HELD_BYTES && holdable && !newer_held {
                held.hold(id.clone(), t.clone(), size);
            }
            read_now.insert(id, t);
        }
        for (slot, id) in found.iter_mut().zip(ids) {
            if slot.is_none() {
                *slot = read_now.get(id).cloned();
            }
        }
        Ok(found)
    }

    /// Makes sure a check of the record of changes started after `arrived`
    /// (running one unless a check that started since has finished) and
    /// returns the held tests' generation after it.
    async fn checked_since(
        &self,
        store: &CampaignStore,
        arrived: Instant,
    ) -> Result<u64, sqlx::Error> {
        let mut check = self.check.lock().await;
        if check.started.is_some_and(|started| started > arrived) {
            return Ok(check.generation);
        }
        let started = Instant::now();
        let (horizon, changed) = store
            .test_changes(check.horizon.unwrap_or(i64::MAX))
            .await?;
        // A horizon going back means another database (a restore): drop
        // everything.
        let rewound = check.horizon.is_some_and(|before| horizon < before);
        let generation = self
            .held
            .lock()
            .expect("test cache poisoned")
            .forget(changed, rewound);
        *check = Check {
            started: Some(started),
            horizon: Some(horizon),
            generation,
        };
        Ok(generation)
    }
}

impl Held {
    /// Drops the held copies of `changed` (all of them when `everything`)
    /// and returns the generation after.
    fn forget(&mut self, changed: Vec<String>, everything: bool) -> u64 {
        if everything {
            self.tests.clear();
            self.bytes = 0;
            self.recent.clear();
            self.recent_ids = 0;
            self.generation += 1;
            return self.generation;
        }
        if changed.is_empty() {
            return self.generation;
        }
        for id in &changed {
            if let Some(old) = self.tests.remove(id) {
                self.bytes -= bytes_of(&old);
            }
        }
        self.generation += 1;
        self.recent_ids += changed.len();
        self.recent.push_back((self.generation, changed));
        while self.recent.len() > RECENT_CHANGES || self.recent_ids > RECENT_IDS {
            let Some((_, ids)) = self.recent.pop_front() else {
                break;
            };
            self.recent_ids -= ids.len();
        }
        self.generation
    }

    /// The tests dropped after `generation`, or None when that is longer
    /// ago than what is remembered.
    fn changed_after(&self, generation: u64) -> Option<HashSet<String>> {
        if generation == self.generation {
            return Some(HashSet::new());
        }
        let remembered = self
            .recent
            .front()
            .is_some_and(|(g, _)| *g <= generation + 1);
        remembered.then(|| {
            self.recent
                .iter()
                .filter(|(g, _)| *g > generation)
                .flat_map(|(_, ids)| ids.iter().cloned())
                .collect()
        })
    }

    /// Holds `t`, first dropping half of what is held when the budget
    /// would be passed.
    fn hold(&mut self, id: String, t: Arc<TestRow>, size: usize) {
        if self.bytes + size > BUDGET_BYTES {
            let mut keep = false;
            self.tests.retain(|_, _| {
                keep = !keep;
                keep
            });
            self.bytes = self.tests.values().map(|t| bytes_of(t)).sum();
        }
        if let Some(old) = self.tests.insert(id, t) {
            self.bytes -= bytes_of(&old);
        }
        self.bytes += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, notes: usize) -> Arc<TestRow> {
        Arc::new(TestRow {
            test_id: id.into(),
            red_notes: "n".repeat(notes),
            ..TestRow::stub(crate::domain::State::Planned)
        })
    }

    #[test]
    fn holding_stays_within_the_byte_budget_whatever_the_notes() {
        let mut held = Held::default();
        // Tests with 60 KiB of notes each: 64 MiB would be ~1,090 of them.
        for i in 0..5_000 {
            let t = row(&format!("t{i}"), 60 << 10);
            let size = bytes_of(&t);
            held.hold(t.test_id.clone(), t, size);
            assert!(held.bytes <= BUDGET_BYTES, "{} bytes held", held.bytes);
        }
        assert_eq!(
            held.bytes,
            held.tests.values().map(|t| bytes_of(t)).sum::<usize>()
        );
        assert!(held.tests.len() > 500, "{} held", held.tests.len());
        // Holding a test again replaces it and its bytes.
        let before = held.bytes;
        let t = row("t4999", 60 << 10);
        let size = bytes_of(&t);
        held.hold("t4999".into(), t, size);
        assert_eq!(held.bytes, before);
    }

    #[test]
    fn a_read_racing_a_check_does_not_hold_what_the_check_dropped() {
        let mut held = Held::default();
        let t = row("t1", 10);
        let size = bytes_of(&t);
        held.hold("t1".into(), t, size);
        // Nothing changed: the same generation, everything holdable.
        let read_at = held.forget(Vec::new(), false);
        assert_eq!(held.changed_after(read_at), Some(HashSet::new()));
        // A check while the read was under way dropped t1 and t2.
        held.forget(vec!["t1".into(), "t2".into()], false);
        assert!(!held.tests.contains_key("t1") && held.bytes == 0);
        let changed = held.changed_after(read_at).expect("remembered");
        assert!(changed.contains("t2") && !changed.contains("t3"));
        // Longer ago than remembered: nothing is holdable.
        for i in 0..RECENT_CHANGES {
            held.forget(vec![format!("x{i}")], false);
        }
        assert_eq!(held.changed_after(read_at), None);
        let now = held.generation;
        assert_eq!(held.changed_after(now), Some(HashSet::new()));
        // So is a batch bigger than what is remembered in ids.
        held.forget((0..=RECENT_IDS).map(|i| format!("y{i}")).collect(), false);
        assert!(held.recent.is_empty() && held.recent_ids == 0);
        assert_eq!(held.changed_after(now), None);
        let now = held.generation;
        // Another database (a restore) drops everything, and a read from
        // before it holds nothing.
        let t = row("t4", 10);
        let size = bytes_of(&t);
        held.hold("t4".into(), t, size);
        held.forget(Vec::new(), true);
        assert!(held.tests.is_empty() && held.bytes == 0);
        assert_eq!(held.changed_after(now), None);
    }
}
