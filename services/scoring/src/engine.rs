//! The scorer: gathers inputs for a set of techniques with chunked batch
//! calls, scores them, and keeps "now" in the cache. A request with an
//! explicit as_of is always computed afresh.

use std::collections::{BTreeMap, BTreeSet};

use purple_runtime::time::{Micros, now_micros};
use serde::{Deserialize, Serialize};

use crate::{
    clients::Inputs,
    domain::{self, Scored, TacticInfo, TechniqueInfo},
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

/// Scores techniques.
#[derive(Clone, Debug)]
pub struct Scorer {
    pub(crate) inputs: Inputs,
    pub(crate) store: ScoreStore,
    /// How long a cached score for "now" stays valid, in microseconds.
    pub(crate) ttl: i64,
}

impl Scorer {
    /// Scores `techniques` (catalogue and tests fetched in chunked batches).
    async fn compute(
        &self,
        techniques: &[TechniqueInfo],
        as_of: Option<Micros>,
        at: Micros,
    ) -> Result<Vec<Scored>, ScoringError> {
        if techniques.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = techniques.iter().map(|t| t.technique_id.clone()).collect();
        let (catalog, tests) = futures::try_join!(
            self.inputs.catalog(techniques),
            self.inputs.tests(&ids, as_of)
        )?;
        Ok(ids
            .iter()
            .filter_map(|id| {
                catalog
                    .get(id)
                    .map(|c| domain::score(c, &tests.get(id).cloned().unwrap_or_default(), at))
            })
            .collect())
    }

    /// Scores for `techniques` now: cached where fresh, computed (and
    /// cached) otherwise.
    async fn now_scores(
        &self,
        techniques: &[TechniqueInfo],
        now: Micros,
    ) -> Result<Vec<Scored>, ScoringError> {
        let ids: Vec<String> = techniques.iter().map(|t| t.technique_id.clone()).collect();
        let cached = self.store.cached_techniques(&ids, now - self.ttl).await?;
        let have: BTreeSet<&str> = cached.iter().map(|s| s.technique_id.as_str()).collect();
        let missing: Vec<TechniqueInfo> = techniques
            .iter()
            .filter(|t| !have.contains(t.technique_id.as_str()))
            .cloned()
            .collect();
        let computed = self.compute(&missing, None, now).await?;
        self.store.cache_techniques(&computed, now).await?;
        let mut by_id: BTreeMap<String, Scored> = cached
            .into_iter()
            .chain(computed)
            .map(|s| (s.technique_id.clone(), s))
            .collect();
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    /// Scores of techniques by id (live or not); unknown ids are returned
    /// as missing.
    pub async fn score_ids(
        &self,
        ids: &[String],
        as_of: Option<Micros>,
    ) -> Result<(Vec<Scored>, Micros), ScoringError> {
        let now = now_micros();
        let techniques = self.inputs.techniques(ids).await?;
        let scores = match as_of {
            None => self.now_scores(&techniques, now).await?,
            Some(at) => self.compute(&techniques, Some(at), at).await?,
        };
        Ok((scores, as_of.unwrap_or(now)))
    }

    /// Every live technique scored now, computed afresh (never read from
    /// the cache, which it refreshes): what a stored record is made of.
    pub async fn fresh_board(&self) -> Result<Board, ScoringError> {
        let now = now_micros();
        let (tactics, techniques) =
            futures::try_join!(self.inputs.tactics(), self.inputs.live_techniques())?;
        let scores = self.compute(&techniques, None, now).await?;
        self.store.cache_techniques(&scores, now).await?;
        let board = Board {
            as_of: now,
            tactics,
            scores,
            cached: false,
        };
        self.store.cache_organization(&board, now).await?;
        Ok(board)
    }

    /// Every live technique scored: from the organization cache when fresh
    /// and no as_of is given, which then costs no call to any peer.
    pub async fn board(&self, as_of: Option<Micros>) -> Result<Board, ScoringError> {
        let now = now_micros();
        if as_of.is_none()
            && let Some(mut board) = self
                .store
                .cached_organization::<Board>(now - self.ttl)
                .await?
        {
            board.cached = true;
            return Ok(board);
        }
        let (tactics, techniques) =
            futures::try_join!(self.inputs.tactics(), self.inputs.live_techniques())?;
        let board = match as_of {
            None => {
                let board = Board {
                    as_of: now,
                    tactics,
                    scores: self.now_scores(&techniques, now).await?,
                    cached: false,
                };
                self.store.cache_organization(&board, now).await?;
                board
            }
            Some(at) => Board {
                as_of: at,
                tactics,
                scores: self.compute(&techniques, Some(at), at).await?,
                cached: false,
            },
        };
        Ok(board)
    }
}
