//! Tests recently read by id, held in this replica's memory and checked
//! against the database on every read. A test's row changes only with its
//! version (a transition bumps it, the history import's update bumps it,
//! nothing else writes the row), so a held copy whose version the database
//! still has is the row, whichever replica wrote since. A read first asks
//! the versions (one statement, answered from an index), then reads in
//! full only the tests not held or held at an older version (a second
//! statement, only then). Nothing here is served without that check, so
//! there is no invalidation to miss.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
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

/// The held tests of one replica and their bytes.
#[derive(Clone, Debug, Default)]
pub struct TestCache {
    held: Arc<Mutex<Held>>,
}

#[derive(Debug, Default)]
struct Held {
    tests: HashMap<String, Arc<TestRow>>,
    bytes: usize,
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
    /// Tests by id as stored now: held copies still current are answered
    /// from memory, the others are read and held. Ids not stored are
    /// absent.
    pub async fn read(
        &self,
        store: &CampaignStore,
        ids: &[String],
    ) -> Result<BTreeMap<String, Arc<TestRow>>, sqlx::Error> {
        let versions = store.test_versions(ids).await?;
        let mut found = BTreeMap::new();
        let mut stale = Vec::new();
        {
            let held = self.held.lock().expect("test cache poisoned");
            for (id, version) in versions {
                match held.tests.get(&id) {
                    Some(t) if t.version == version => {
                        found.insert(id, t.clone());
                    }
                    _ => stale.push(id),
                }
            }
        }
        if stale.is_empty() {
            return Ok(found);
        }
        let read = store.tests_by_ids(&stale).await?;
        let mut held = self.held.lock().expect("test cache poisoned");
        for (id, t) in read {
            let t = Arc::new(t);
            let size = bytes_of(&t);
            // A concurrent read may hold a newer version: keep the newer
            // (either is checked before it is served).
            let newer_held = held.tests.get(&id).is_some_and(|h| h.version > t.version);
            if size <= MAX_HELD_BYTES && !newer_held {
                held.hold(id.clone(), t.clone(), size);
            }
            found.insert(id, t);
        }
        Ok(found)
    }
}

impl Held {
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
}
