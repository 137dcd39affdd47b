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
//! from ingest rather than campaigns).
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
    domain::{CatalogSide, Scored, TacticInfo, TechniqueInfo},
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
    organization: Option<(Micros, Arc<Board>)>,
    catalogue: Catalogue,
}

/// The catalogue side of scoring, as ingest last answered.
#[derive(Debug, Default)]
struct Catalogue {
    tactics: Option<(Micros, Arc<Vec<TacticInfo>>)>,
    live: Option<(Micros, Arc<Vec<TechniqueInfo>>)>,
    sides: HashMap<String, (Micros, CatalogSide)>,
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

    /// Applies generation `generation`, which changed `technique_ids`:
    /// drops them and the board. Returns how many entries went.
    pub fn apply(&self, generation: i64, technique_ids: &[String]) -> u64 {
        let mut state = self.write();
        if generation <= state.generation {
            return 0;
        }
        state.generation = generation;
        state.epoch += 1;
        let mut dropped = 0;
        for id in technique_ids {
            dropped += u64::from(state.techniques.remove(id).is_some());
        }
        dropped + u64::from(state.organization.take().is_some())
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
    pub fn sides(&self, ids: &[String], now: Micros) -> Vec<CatalogSide> {
        let state = self.read();
        ids.iter()
            .filter_map(|id| state.catalogue.sides.get(id))
            .filter(|(at, _)| now - *at < self.ttl)
            .map(|(_, side)| side.clone())
            .collect()
    }

    /// Caches catalogue sides fetched at `at`.
    pub fn put_sides(&self, sides: &[CatalogSide], at: Micros, epoch: Epoch) {
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

    #[test]
    fn a_put_started_before_a_drop_is_discarded() {
        let cache = ScoreCache::new(1_000);
        let before = cache.epoch();
        assert_eq!(cache.apply(1, &ids(&["T1"])), 0);
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
        assert_eq!(cache.apply(3, &ids(&["T1"])), 1);
        assert_eq!(cache.apply(3, &ids(&["T2"])), 0, "seen already");
        assert_eq!(cache.apply(2, &ids(&["T2"])), 0, "older");
        assert_eq!(cache.generations(), (3, 0));
        assert_eq!(cache.techniques(&ids(&["T1", "T2"]), at(20)).len(), 1);
    }
}
