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

/// How many tests a replica holds (~600 bytes each: a year of an
/// enterprise programme's tests); past it, half of them are dropped (reads
/// stay correct, the dropped ones are read in full next time).
const CAPACITY: usize = 65_536;

/// The held tests of one replica.
#[derive(Clone, Debug, Default)]
pub struct TestCache {
    held: Arc<Mutex<HashMap<String, Arc<TestRow>>>>,
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
                match held.get(&id) {
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
        if held.len() + read.len() > CAPACITY {
            let mut keep = false;
            held.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
        for (id, t) in read {
            let t = Arc::new(t);
            // A concurrent read may hold a newer version: keep the newer
            // (either is checked before it is served).
            match held.get(&id) {
                Some(h) if h.version > t.version => {}
                _ => {
                    held.insert(id.clone(), t.clone());
                }
            }
            found.insert(id, t);
        }
        Ok(found)
    }
}
