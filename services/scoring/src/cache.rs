//! The score cache for "now": decoded scores held in this replica's memory
//! (no statement, no decoding, no peer call on a hit), dropped by
//! invalidations and by age. Replicas stay coherent through the generation
//! rows of `store::generations`: an invalidation received by any replica
//! bumps the generation in the database, and every replica polls it (one
//! indexed read per interval) and drops the techniques stamped since the
//! generation it last saw (docs/adr/0009).
//!
//! The catalogue side of scoring (tactics, live techniques, each
//! technique's mapped rules, countermeasures and actor count) is held too,
//! and dropped whole when the catalogue generation moves (an invalidation
//! from ingest rather than campaigns). So is each technique's test side
//! (campaigns' tally), dropped with its score by an invalidation that
//! changed its tests — not by ingest's, so the first score after an import
//! asks campaigns nothing.
//!
//! A computation that started before a drop must not put back what it
//! computed from older inputs: every drop moves a local epoch, and a put
//! made with an older epoch is discarded.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use purple_runtime::time::Micros;

use crate::{
    domain::{CatalogSide, Scored, TacticInfo, TechniqueInfo, TestSide},
    engine::Board,
};

#[derive(Debug, Default)]
struct State {
    /// Moves on every drop; puts carry the epoch they started at.
    epoch: u64,
    /// The database generations this replica has applied: scores and
    /// catalogue.
    generation: i64,
    catalogue_generation: i64,
    techniques: HashMap<String, (Micros, Arc<Scored>)>,
    /// The test side of techniques, now.
    tests: HashMap<String, (Micros, Arc<TestSide>)>,
    organization: Option<(Micros, Arc<Board>)>,
    catalogue: Catalogue,
}

/// The catalogue side of scoring, as ingest last answered.
#[derive(Debug, Default)]
struct Catalogue {
    tactics: Option<(Micros, Arc<Vec<TacticInfo>>)>,
    live: Option<(Micros, Arc<Vec<TechniqueInfo>>)>,
    sides: HashMap<String, (Micros, Arc<CatalogSide>)>,
}

/// Scores for now, per technique and for the whole board.
#[derive(Debug)]
pub struct ScoreCache {
    /// How long an entry stays valid, in microseconds.
    ttl: i64,
    state: RwLock<State>,
}

/// What a computation saw when it started: hand it back to `put_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epoch(u64);

impl ScoreCache {
    /// An empty cache whose entries live `ttl` microseconds.
    pub fn new(ttl: i64) -> Self {
        Self {
            ttl,
            state: RwLock::default(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half
        // updated (every write is one insert or remove), so poison is moot.
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The epoch a computation starts at.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.read().epoch)
    }

    /// Fresh cached scores of `ids`, in the order of `ids`; the ids not
    /// cached are left out.
    pub fn techniques(&self, ids: &[String], now: Micros) -> Vec<Arc<Scored>> {
        let state = self.read();
        ids.iter()
            .filter_map(|id| state.techniques.get(id))
            .filter(|(at, _)| now - *at < self.ttl)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// The fresh cached board, if any.
    pub fn organization(&self, now: Micros) -> Option<Arc<Board>> {
        let state = self.read();
        state
            .organization
            .as_ref()
            .filter(|(at, _)| now - *at < self.ttl)
            .map(|(_, b)| b.clone())
    }

    /// Caches scores computed at `at` by a computation started at `epoch`
    /// (nothing when a drop happened since).
    pub fn put_techniques(&self, scores: &[Scored], at: Micros, epoch: Epoch) {
        let mut state = self.write();
        if state.epoch != epoch.0 {
            return;
        }
        for s in scores {
            state
                .techniques
                .insert(s.technique_id.clone(), (at, Arc::new(s.clone())));
        }
    }

    /// Caches the board (and its scores) computed at `at`.
    pub fn put_organization(&self, board: Arc<Board>, at: Micros, epoch: Epoch) {
        let mut state = self.write();
        if state.epoch != epoch.0 {
            return;
        }
        for s in &board.scores {
            state
                .techniques
                .insert(s.technique_id.clone(), (at, Arc::new(s.clone())));
        }
        state.organization = Some((at, board));
    }

    /// The generations this replica has applied: (scores, catalogue).
    pub fn generations(&self) -> (i64, i64) {
        let state = self.read();
        (state.generation, state.catalogue_generation)
    }

    /// Applies generation `generation`, which changed `changed` (each
    /// technique with whether its tests changed): drops their scores, the
    /// test sides of those whose tests changed, and the board. Returns how
    /// many scores went (the board counted as one).
    pub fn apply(&self, generation: i64, changed: &[(String, bool)]) -> u64 {
        let mut state = self.write();
        if generation <= state.generation {
            return 0;
        }
        state.generation = generation;
        state.epoch += 1;
        let mut dropped = 0;
        for (id, tests) in changed {
            dropped += u64::from(state.techniques.remove(id).is_some());
            if *tests {
                state.tests.remove(id);
            }
        }
        dropped + u64::from(state.organization.take().is_some())
    }

    /// Fresh cached test sides of `ids`; the ids not cached are left out.
    pub fn test_sides(&self, ids: &[String], now: Micros) -> Vec<(String, Arc<TestSide>)> {
        let state = self.read();
        ids.iter()
            .filter_map(|id| {
                let (at, side) = state.tests.get(id)?;
                (now - *at < self.ttl).then(|| (id.clone(), side.clone()))
            })
            .collect()
    }

    /// Caches test sides fetched at `at` (nothing when a drop happened
    /// since).
    pub fn put_test_sides(&self, sides: &[(String, Arc<TestSide>)], at: Micros, epoch: Epoch) {
        let mut state = self.write();
        if state.epoch != epoch.0 {
            return;
        }
        for (id, side) in sides {
            state.tests.insert(id.clone(), (at, side.clone()));
        }
    }

    /// Applies catalogue generation `generation`: the whole catalogue side
    /// goes (an import may have changed any of it).
    pub fn apply_catalogue(&self, generation: i64) {
        let mut state = self.write();
        if generation <= state.catalogue_generation {
            return;
        }
        state.catalogue_generation = generation;
        state.epoch += 1;
        state.catalogue = Catalogue::default();
    }

    /// The fresh cached live tactics.
    pub fn tactics(&self, now: Micros) -> Option<Arc<Vec<TacticInfo>>> {
        let state = self.read();
        fresh(state.catalogue.tactics.as_ref(), now, self.ttl)
    }

    /// The fresh cached live techniques.
    pub fn live_techniques(&self, now: Micros) -> Option<Arc<Vec<TechniqueInfo>>> {
        let state = self.read();
        fresh(state.catalogue.live.as_ref(), now, self.ttl)
    }

    /// Caches the live tactics and techniques fetched at `at`.
    pub fn put_catalogue(
        &self,
        tactics: Arc<Vec<TacticInfo>>,
        live: Arc<Vec<TechniqueInfo>>,
        at: Micros,
        epoch: Epoch,
    ) {
        let mut state = self.write();
        if state.epoch == epoch.0 {
            state.catalogue.tactics = Some((at, tactics));
            state.catalogue.live = Some((at, live));
        }
    }

    /// Fresh cached catalogue sides of `ids`; the ids not cached are left
    /// out.
    pub fn sides(&self, ids: &[String], now: Micros) -> Vec<Arc<CatalogSide>> {
        let state = self.read();
        ids.iter()
            .filter_map(|id| state.catalogue.sides.get(id))
            .filter(|(at, _)| now - *at < self.ttl)
            .map(|(_, side)| side.clone())
            .collect()
    }

    /// Caches catalogue sides fetched at `at`.
    pub fn put_sides(&self, sides: &[Arc<CatalogSide>], at: Micros, epoch: Epoch) {
        let mut state = self.write();
        if state.epoch != epoch.0 {
            return;
        }
        for side in sides {
            state
                .catalogue
                .sides
                .insert(side.technique_id.clone(), (at, side.clone()));
        }
    }
}

fn fresh<T>(entry: Option<&(Micros, Arc<T>)>, now: Micros, ttl: i64) -> Option<Arc<T>> {
    entry
        .filter(|(at, _)| now - *at < ttl)
        .map(|(_, value)| value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: i64) -> Micros {
        Micros::from_micros(micros)
    }

    fn scored(id: &str) -> Scored {
        Scored {
            technique_id: id.into(),
            ..Scored::default()
        }
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Techniques whose tests changed.
    fn tested(list: &[&str]) -> Vec<(String, bool)> {
        list.iter().map(|s| ((*s).to_owned(), true)).collect()
    }

    #[test]
    fn a_put_started_before_a_drop_is_discarded() {
        let cache = ScoreCache::new(1_000);
        let before = cache.epoch();
        assert_eq!(cache.apply(1, &tested(&["T1"])), 0);
        cache.put_techniques(&[scored("T1")], at(10), before);
        assert!(cache.techniques(&ids(&["T1"]), at(10)).is_empty());
        cache.put_techniques(&[scored("T1")], at(10), cache.epoch());
        assert_eq!(cache.techniques(&ids(&["T1"]), at(10)).len(), 1);
    }

    #[test]
    fn entries_expire_and_a_generation_applies_once() {
        let cache = ScoreCache::new(1_000);
        cache.put_techniques(&[scored("T1"), scored("T2")], at(10), cache.epoch());
        assert_eq!(
            cache.techniques(&ids(&["T2", "T1", "T3"]), at(1_009)).len(),
            2
        );
        assert!(
            cache.techniques(&ids(&["T1"]), at(1_010)).is_empty(),
            "expired"
        );
        assert_eq!(cache.apply(3, &tested(&["T1"])), 1);
        assert_eq!(cache.apply(3, &tested(&["T2"])), 0, "seen already");
        assert_eq!(cache.apply(2, &tested(&["T2"])), 0, "older");
        assert_eq!(cache.generations(), (3, 0));
        assert_eq!(cache.techniques(&ids(&["T1", "T2"]), at(20)).len(), 1);
    }

    #[test]
    fn test_sides_survive_a_catalogue_change_not_a_test_change() {
        let cache = ScoreCache::new(1_000);
        let side = |total| {
            Arc::new(TestSide {
                total,
                ..TestSide::default()
            })
        };
        cache.put_test_sides(
            &[("T1".into(), side(1)), ("T2".into(), side(2))],
            at(10),
            cache.epoch(),
        );
        cache.put_techniques(&[scored("T1"), scored("T2")], at(10), cache.epoch());
        // An import: every score goes, the test sides stay.
        cache.apply(1, &[("T1".into(), false), ("T2".into(), false)]);
        cache.apply_catalogue(1);
        assert!(cache.techniques(&ids(&["T1", "T2"]), at(20)).is_empty());
        assert_eq!(cache.test_sides(&ids(&["T1", "T2"]), at(20)).len(), 2);
        // A transition of T2's tests: its test side goes too.
        cache.apply(2, &[("T2".into(), true)]);
        let held = cache.test_sides(&ids(&["T1", "T2"]), at(20));
        assert_eq!(held.len(), 1);
        assert_eq!((held[0].0.as_str(), held[0].1.total), ("T1", 1));
        // They expire like scores, and a put from before a drop is dropped.
        assert!(cache.test_sides(&ids(&["T1"]), at(1_010)).is_empty());
        let before = cache.epoch();
        cache.apply(3, &[("T3".into(), true)]);
        cache.put_test_sides(&[("T2".into(), side(5))], at(30), before);
        assert!(cache.test_sides(&ids(&["T2"]), at(30)).is_empty());
    }
}
