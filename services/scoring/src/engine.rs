//! The scorer: gathers inputs for a set of techniques with chunked batch
//! calls, scores them, and keeps "now" in this replica's memory (`cache`).
//! A request with an explicit as_of is always computed afresh.

use std::{collections::BTreeMap, sync::Arc};

use purple_runtime::time::{Micros, now_micros};
use serde::{Deserialize, Serialize};

use crate::{
    cache::ScoreCache,
    clients::Inputs,
    domain::{self, CatalogSide, Scored, TacticInfo, TechniqueInfo, TestSide},
    error::ScoringError,
    store::ScoreStore,
};

/// Every live technique scored at one instant: what organization scores,
/// tactics, heatmaps, layers and snapshots are made of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Board {
    pub as_of: Micros,
    pub tactics: Vec<TacticInfo>,
    pub scores: Vec<Scored>,
    #[serde(skip)]
    pub cached: bool,
}

/// Where a computation takes the two sides of a technique from and
/// whether it keeps what it fetched. The catalogue side is always read
/// from memory where held (ingest invalidates before an import answers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sides {
    /// Held test sides used, what is fetched kept.
    Held,
    /// Held test sides used, nothing kept (the change feed).
    HeldUnkept,
    /// Every test side asked of campaigns, what is fetched kept (a stored
    /// record).
    Asked,
    /// Every test side asked, nothing kept (the feed's sweep for drift).
    Unkept,
}

/// Scores techniques.
#[derive(Clone, Debug)]
pub struct Scorer {
    pub(crate) inputs: Inputs,
    pub(crate) store: ScoreStore,
    /// Scores for now, shared by every request of this replica.
    pub(crate) cache: Arc<ScoreCache>,
    /// Woken by every invalidation from campaigns this replica records:
    /// its feed publishes at once instead of at its next interval.
    pub(crate) changed: Arc<tokio::sync::Notify>,
}

impl Scorer {
    /// Scores `techniques` (catalogue and tests fetched in chunked batches;
    /// both sides from this replica's memory where it has them).
    async fn compute(
        &self,
        techniques: &[TechniqueInfo],
        as_of: Option<Micros>,
        at: Micros,
    ) -> Result<Vec<Scored>, ScoringError> {
        self.compute_with(techniques, as_of, at, Sides::Held).await
    }

    /// [`Self::compute`], reading and keeping what it fetches as `sides`
    /// says.
    async fn compute_with(
        &self,
        techniques: &[TechniqueInfo],
        as_of: Option<Micros>,
        at: Micros,
        sides: Sides,
    ) -> Result<Vec<Scored>, ScoringError> {
        if techniques.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = techniques.iter().map(|t| t.technique_id.clone()).collect();
        let warm = matches!(sides, Sides::Held | Sides::Asked);
        let (catalog, tests) = futures::try_join!(
            self.catalog(techniques, warm),
            self.test_sides(&ids, as_of, warm, sides == Sides::Held)
        )?;
        let untested = TestSide::default();
        Ok(ids
            .iter()
            .filter_map(|id| {
                let tests = tests.get(id).map_or(&untested, |t| &**t);
                catalog.get(id).map(|c| domain::score(c, tests, at))
            })
            .collect())
    }

    /// The test side of `ids`: as of an instant always asked of campaigns;
    /// now from this replica's memory where held (and `held` allows), the
    /// rest asked in one chunked batch (and held when `warm`).
    async fn test_sides(
        &self,
        ids: &[String],
        as_of: Option<Micros>,
        warm: bool,
        held: bool,
    ) -> Result<BTreeMap<String, Arc<TestSide>>, ScoringError> {
        let shared = |sides: BTreeMap<String, TestSide>| {
            sides
                .into_iter()
                .map(|(id, side)| (id, Arc::new(side)))
                .collect::<Vec<_>>()
        };
        if as_of.is_some() {
            return Ok(shared(self.inputs.tests(ids, as_of).await?)
                .into_iter()
                .collect());
        }
        let now = now_micros();
        let epoch = self.cache.epoch();
        let mut sides: BTreeMap<String, Arc<TestSide>> = if held {
            self.cache.test_sides(ids, now).into_iter().collect()
        } else {
            BTreeMap::new()
        };
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !sides.contains_key(*id))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let fetched = shared(self.inputs.tests(&missing, None).await?);
            if warm {
                self.cache.put_test_sides(&fetched, now, epoch);
            }
            sides.extend(fetched);
        }
        Ok(sides)
    }

    /// The catalogue side of `techniques`: cached, the rest fetched from
    /// ingest in one chunked batch (and cached when `warm`).
    async fn catalog(
        &self,
        techniques: &[TechniqueInfo],
        warm: bool,
    ) -> Result<BTreeMap<String, Arc<CatalogSide>>, ScoringError> {
        let now = now_micros();
        let epoch = self.cache.epoch();
        let ids: Vec<String> = techniques.iter().map(|t| t.technique_id.clone()).collect();
        let mut sides: BTreeMap<String, Arc<CatalogSide>> = self
            .cache
            .sides(&ids, now)
            .into_iter()
            .map(|side| (side.technique_id.clone(), side))
            .collect();
        let missing: Vec<TechniqueInfo> = techniques
            .iter()
            .filter(|t| !sides.contains_key(&t.technique_id))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let fetched: Vec<Arc<CatalogSide>> = self
                .inputs
                .catalog(&missing)
                .await?
                .into_values()
                .map(Arc::new)
                .collect();
            if warm {
                self.cache.put_sides(&fetched, now, epoch);
            }
            sides.extend(
                fetched
                    .into_iter()
                    .map(|side| (side.technique_id.clone(), side)),
            );
        }
        Ok(sides)
    }

    /// The live tactics and techniques: cached, or fetched (and cached).
    async fn live_catalogue(
        &self,
    ) -> Result<(Arc<Vec<TacticInfo>>, Arc<Vec<TechniqueInfo>>), ScoringError> {
        let now = now_micros();
        if let (Some(tactics), Some(live)) =
            (self.cache.tactics(now), self.cache.live_techniques(now))
        {
            return Ok((tactics, live));
        }
        let epoch = self.cache.epoch();
        let (tactics, live) =
            futures::try_join!(self.inputs.tactics(), self.inputs.live_techniques())?;
        let (tactics, live) = (Arc::new(tactics), Arc::new(live));
        self.cache
            .put_catalogue(tactics.clone(), live.clone(), now, epoch);
        Ok((tactics, live))
    }

    /// Techniques by id: from the cached live catalogue where it has them,
    /// the rest (revoked, deprecated, unknown) from ingest.
    async fn techniques(&self, ids: &[String]) -> Result<Vec<TechniqueInfo>, ScoringError> {
        let now = now_micros();
        let Some(live) = self.cache.live_techniques(now) else {
            return self.inputs.techniques(ids).await;
        };
        let by_id: BTreeMap<&str, &TechniqueInfo> =
            live.iter().map(|t| (t.technique_id.as_str(), t)).collect();
        let others: Vec<String> = ids
            .iter()
            .filter(|id| !by_id.contains_key(id.as_str()))
            .cloned()
            .collect();
        let mut found: BTreeMap<String, TechniqueInfo> = if others.is_empty() {
            BTreeMap::new()
        } else {
            self.inputs
                .techniques(&others)
                .await?
                .into_iter()
                .map(|t| (t.technique_id.clone(), t))
                .collect()
        };
        Ok(ids
            .iter()
            .filter_map(|id| {
                by_id
                    .get(id.as_str())
                    .map(|t| (*t).clone())
                    .or_else(|| found.remove(id))
            })
            .collect())
    }

    /// Scores of `ids` now: cached where fresh; the rest fetched and
    /// computed (and cached). A request whose every id is cached costs no
    /// statement and no call to a peer.
    async fn now_scores(&self, ids: &[String], now: Micros) -> Result<Vec<Scored>, ScoringError> {
        let epoch = self.cache.epoch();
        let cached = self.cache.techniques(ids, now);
        if cached.len() == ids.len() {
            return Ok(cached.iter().map(|s| Scored::clone(s)).collect());
        }
        let mut by_id: BTreeMap<&str, Scored> = cached
            .iter()
            .map(|s| (s.technique_id.as_str(), Scored::clone(s)))
            .collect();
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !by_id.contains_key(id.as_str()))
            .cloned()
            .collect();
        let techniques = self.techniques(&missing).await?;
        let computed = self.compute(&techniques, None, now).await?;
        self.cache.put_techniques(&computed, now, epoch);
        by_id.extend(
            computed
                .iter()
                .map(|s| (s.technique_id.as_str(), s.clone())),
        );
        Ok(ids
            .iter()
            .filter_map(|id| by_id.remove(id.as_str()))
            .collect())
    }

    /// Scores of techniques by id (live or not); unknown ids are returned
    /// as missing.
    pub async fn score_ids(
        &self,
        ids: &[String],
        as_of: Option<Micros>,
    ) -> Result<(Vec<Scored>, Micros), ScoringError> {
        let now = now_micros();
        let scores = match as_of {
            None => self.now_scores(ids, now).await?,
            Some(at) => {
                let techniques = self.techniques(ids).await?;
                self.compute(&techniques, Some(at), at).await?
            }
        };
        Ok((scores, as_of.unwrap_or(now)))
    }

    /// Every live technique scored now, for the change feed: the scores
    /// this replica holds fresh read from memory and the rest computed
    /// (all of them when `afresh`, as a sweep for drift wants), nothing put
    /// in the cache — the feed must not change what a request costs behind
    /// its back. The catalogue side is read from memory where a request
    /// left it.
    pub async fn survey(&self, afresh: bool) -> Result<Vec<Scored>, ScoringError> {
        let now = now_micros();
        let techniques = match self.cache.live_techniques(now) {
            Some(live) => live,
            None => Arc::new(self.inputs.live_techniques().await?),
        };
        if afresh {
            return self
                .compute_with(&techniques, None, now, Sides::Unkept)
                .await;
        }
        let ids: Vec<String> = techniques.iter().map(|t| t.technique_id.clone()).collect();
        let mut scores: BTreeMap<String, Scored> = self
            .cache
            .techniques(&ids, now)
            .iter()
            .map(|s| (s.technique_id.clone(), Scored::clone(s)))
            .collect();
        let missing: Vec<TechniqueInfo> = techniques
            .iter()
            .filter(|t| !scores.contains_key(&t.technique_id))
            .cloned()
            .collect();
        let computed = self
            .compute_with(&missing, None, now, Sides::HeldUnkept)
            .await?;
        scores.extend(computed.into_iter().map(|s| (s.technique_id.clone(), s)));
        Ok(ids.iter().filter_map(|id| scores.remove(id)).collect())
    }

    /// Every live technique scored now, computed afresh (never read from
    /// the cache, which it refreshes): what a stored record is made of.
    pub async fn fresh_board(&self) -> Result<Arc<Board>, ScoringError> {
        self.now_board(true).await
    }

    /// Every live technique scored: from this replica's cache when fresh
    /// and no as_of is given, which then costs no statement and no call.
    pub async fn board(&self, as_of: Option<Micros>) -> Result<Arc<Board>, ScoringError> {
        let Some(at) = as_of else {
            if let Some(board) = self.cache.organization(now_micros()) {
                return Ok(board);
            }
            return self.now_board(false).await;
        };
        let (tactics, techniques) = self.live_catalogue().await?;
        Ok(Arc::new(Board {
            as_of: at,
            tactics: tactics.to_vec(),
            scores: self.compute(&techniques, Some(at), at).await?,
            cached: false,
        }))
    }

    /// The board for now, cached: every technique computed when `fresh`,
    /// else only those an invalidation dropped (the rest from memory).
    async fn now_board(&self, fresh: bool) -> Result<Arc<Board>, ScoringError> {
        let now = now_micros();
        let epoch = self.cache.epoch();
        let (tactics, techniques) = self.live_catalogue().await?;
        let scores = if fresh {
            // Campaigns' invalidations arrive through its relay, after the
            // transitions: a stored record asks campaigns afresh.
            self.compute_with(&techniques, None, now, Sides::Asked)
                .await?
        } else {
            let ids: Vec<String> = techniques.iter().map(|t| t.technique_id.clone()).collect();
            self.now_scores(&ids, now).await?
        };
        let board = Board {
            as_of: now,
            tactics: tactics.to_vec(),
            scores,
            cached: false,
        };
        self.cache
            .put_organization(Arc::new(board.cached()), now, epoch);
        Ok(Arc::new(board))
    }

    /// Records an invalidation of `ids` for every replica and applies it
    /// here at once; how many cached entries went. `catalogue`: the
    /// catalogue changed too (an import), so every replica drops it;
    /// `tests`: their tests changed, so their test sides go too.
    pub async fn invalidate(
        &self,
        ids: &[String],
        catalogue: bool,
        tests: bool,
    ) -> Result<u64, ScoringError> {
        self.store.invalidate(ids, catalogue, tests).await?;
        let dropped = self.sync().await?;
        // Test changes are published at once; an import (the whole
        // catalogue, every technique) waits for the next interval rather
        // than compete with the requests that rebuild the board.
        if !catalogue {
            self.changed.notify_one();
        }
        Ok(dropped)
    }

    /// Applies the invalidations any replica recorded since the generations
    /// this one has seen: one statement when nothing changed, two when
    /// scores did.
    pub async fn sync(&self) -> Result<u64, sqlx::Error> {
        let (seen, seen_catalogue) = self.cache.generations();
        let (current, catalogue) = self.store.generations().await?;
        if catalogue > seen_catalogue {
            self.cache.apply_catalogue(catalogue);
        }
        if current <= seen {
            return Ok(0);
        }
        let changed = self.store.changed_since(seen).await?;
        Ok(self.cache.apply(current, &changed))
    }
}

impl Board {
    /// This board as the cache serves it.
    fn cached(&self) -> Self {
        Self {
            cached: true,
            ..self.clone()
        }
    }
}
