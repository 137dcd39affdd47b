//! What each scoring RPC computes, between the wire conversions and the
//! scorer: technique, tactic, threat-actor and organization scores,
//! heatmaps and Navigator layers over one board of every live technique,
//! and snapshots (stored boards) with their comparison.

use std::collections::{BTreeMap, BTreeSet};

use purple_api::batch::check_ids;
use purple_runtime::{
    paging::Page,
    time::{Micros, now_micros},
};

use crate::{
    domain::{self, ActorCoverage, Organization, Scored, Status, TacticInfo, TechniqueDelta},
    engine::{Board, Scorer},
    error::ScoringError,
    layer,
    plan::{self, Planned, Previous, Weights},
    store::SnapshotRow,
};

/// The organization score and what it is made of.
pub struct OrganizationView {
    pub organization: Organization,
    pub status_counts: BTreeMap<Status, i64>,
    pub tactics: Vec<(TacticInfo, f64, usize)>,
    pub top_gaps: Vec<Scored>,
    pub as_of: Micros,
    pub cached: bool,
}

/// Which techniques of the board a heatmap or layer shows.
#[derive(Clone, Debug, Default)]
pub struct BoardQuery {
    pub as_of: Option<Micros>,
    /// Only techniques of this tactic (short name); "" for all.
    pub tactic: String,
    /// Only techniques on this platform (case-insensitive); "" for all.
    pub platform: String,
    /// Only (or, for a layer, enable only) this actor's techniques.
    pub threat_actor_id: String,
    /// A layer coloured by plan priority instead of score.
    pub priority: bool,
}

/// What PlanNextTests asks.
#[derive(Clone, Debug, Default)]
pub struct PlanQuery {
    pub limit: usize,
    /// Short name or id; "" for all.
    pub tactic: String,
    pub platform: String,
    pub threat_actor_id: String,
    pub window_days: i64,
    pub weights: Weights,
}

/// A plan and what it was computed over.
pub struct PlanView {
    pub techniques: Vec<Planned>,
    pub weights: Weights,
    pub as_of: Micros,
    pub considered: usize,
}

/// Two snapshots compared.
pub struct Comparison {
    pub organization_delta: f64,
    pub techniques: Vec<TechniqueDelta>,
}

/// The sort key of the snapshot list: (created_at, snapshot_id), newest
/// first.
pub const SNAPSHOT_KEY_LEN: usize = 2;

/// Scores and aggregates.
#[derive(Clone, Debug)]
pub struct Coverage {
    pub(crate) scorer: Scorer,
    /// K: techniques used by at least K actors are critical.
    pub(crate) critical_k: i64,
}

impl Coverage {
    /// Scores of techniques by id (live or not), with the ids the catalogue
    /// does not know, at `as_of` (now when None).
    pub async fn score_techniques(
        &self,
        ids: &[String],
        as_of: Option<Micros>,
    ) -> Result<(Vec<Scored>, Micros), ScoringError> {
        check_ids("technique_ids", ids)?;
        self.scorer.score_ids(ids, as_of).await
    }

    /// Tactic scores, all or those named (by short name or id).
    pub async fn score_tactics(
        &self,
        wanted: &[String],
        as_of: Option<Micros>,
    ) -> Result<(Vec<(TacticInfo, f64, usize)>, Micros), ScoringError> {
        check_ids("tactics", wanted)?;
        let board = self.scorer.board(as_of).await?;
        let tactics = domain::tactic_scores(&board.tactics, &board.scores)
            .into_iter()
            .filter(|(t, _, _)| {
                wanted.is_empty()
                    || wanted
                        .iter()
                        .any(|w| *w == t.short_name || *w == t.tactic_id)
            })
            .collect();
        Ok((tactics, board.as_of))
    }

    /// Coverage of threat actors; unknown actors are left out.
    pub async fn score_actors(
        &self,
        ids: &[String],
        as_of: Option<Micros>,
        gap_limit: usize,
    ) -> Result<(Vec<ActorCoverage>, Micros), ScoringError> {
        check_ids("actor_ids", ids)?;
        let (actors, board) =
            futures::try_join!(self.scorer.inputs.actors(ids), self.scorer.board(as_of))?;
        let by_id: BTreeMap<&str, &Scored> = board
            .scores
            .iter()
            .map(|s| (s.technique_id.as_str(), s))
            .collect();
        let coverages = actors
            .into_iter()
            .map(|(actor, techniques)| {
                let scores: Vec<&Scored> = techniques
                    .iter()
                    .filter_map(|t| by_id.get(t.as_str()).copied())
                    .collect();
                domain::actor_coverage(actor, &scores, gap_limit)
            })
            .collect();
        Ok((coverages, board.as_of))
    }

    /// The organization score with critical threshold `k` (the configured
    /// one when None) and the top `gap_limit` gaps.
    pub async fn organization(
        &self,
        as_of: Option<Micros>,
        k: Option<i64>,
        gap_limit: usize,
    ) -> Result<OrganizationView, ScoringError> {
        let board = self.scorer.board(as_of).await?;
        Ok(self.view(&board, k.unwrap_or(self.critical_k), gap_limit))
    }

    fn view(&self, board: &Board, k: i64, gap_limit: usize) -> OrganizationView {
        OrganizationView {
            organization: domain::organization(&board.scores, k),
            status_counts: domain::status_counts(board.scores.iter()),
            tactics: domain::tactic_scores(&board.tactics, &board.scores),
            top_gaps: domain::gaps(board.scores.iter(), gap_limit)
                .into_iter()
                .cloned()
                .collect(),
            as_of: board.as_of,
            cached: board.cached,
        }
    }

    async fn actor_set(&self, actor_id: &str) -> Result<Option<BTreeSet<String>>, ScoringError> {
        if actor_id.is_empty() {
            return Ok(None);
        }
        let actors = self.scorer.inputs.actors(&[actor_id.to_owned()]).await?;
        let (_, techniques) = actors.into_iter().next().ok_or_else(|| {
            ScoringError::NotFound(format!("threat actor {actor_id} does not exist"))
        })?;
        Ok(Some(techniques.into_iter().collect()))
    }

    /// The heatmap cells: the board filtered by tactic, platform and actor.
    pub async fn heatmap(&self, query: &BoardQuery) -> Result<(Vec<Scored>, Micros), ScoringError> {
        let (board, only) = futures::try_join!(
            self.scorer.board(query.as_of),
            self.actor_set(&query.threat_actor_id)
        )?;
        let cells = filtered(&board, &query.tactic, &query.platform, only.as_ref())
            .into_iter()
            .cloned()
            .collect();
        Ok((cells, board.as_of))
    }

    /// The ATT&CK Navigator layer (4.5) of the board, as JSON text.
    pub async fn navigator_layer(
        &self,
        query: &BoardQuery,
        name: &str,
    ) -> Result<String, ScoringError> {
        if query.priority {
            return self.priority_layer(query, name).await;
        }
        let (board, only) = futures::try_join!(
            self.scorer.board(query.as_of),
            self.actor_set(&query.threat_actor_id)
        )?;
        let scores: Vec<Scored> = filtered(&board, "", &query.platform, None)
            .into_iter()
            .cloned()
            .collect();
        let name = if name.is_empty() {
            "Purple coverage"
        } else {
            name
        };
        let description = format!(
            "Coverage scores as of {}{}",
            board.as_of,
            if query.threat_actor_id.is_empty() {
                String::new()
            } else {
                format!(", techniques of {}", query.threat_actor_id)
            }
        );
        let platforms: Vec<String> = if query.platform.is_empty() {
            Vec::new()
        } else {
            vec![query.platform.clone()]
        };
        let layer = layer::layer(name, &description, "", &scores, only.as_ref(), &platforms);
        Ok(serde_json::to_string_pretty(&layer).expect("layers serialize"))
    }

    /// The techniques to test next: the board now (cached where fresh),
    /// filtered, weighed with ingest's threat signals (one chunked call)
    /// and the latest snapshot's statuses (one statement).
    pub async fn plan(&self, query: &PlanQuery) -> Result<PlanView, ScoringError> {
        let (board, only) = futures::try_join!(
            self.scorer.board(None),
            self.actor_set(&query.threat_actor_id)
        )?;
        let tactic = board
            .tactics
            .iter()
            .find(|t| t.tactic_id == query.tactic || t.short_name == query.tactic)
            .map_or(query.tactic.clone(), |t| t.short_name.clone());
        let candidates = filtered(&board, &tactic, &query.platform, only.as_ref());
        let ids: Vec<String> = candidates.iter().map(|s| s.technique_id.clone()).collect();
        let window_start = board.as_of - query.window_days * purple_runtime::time::MICROS_PER_DAY;
        let (signals, previous) =
            futures::try_join!(self.scorer.inputs.signals(&ids, window_start), async {
                Ok(self.scorer.store.latest_snapshot_statuses().await?)
            })?;
        let previous: BTreeMap<String, Previous> = previous
            .into_iter()
            .map(|(id, (status, label))| (id, Previous { status, label }))
            .collect();
        let techniques = plan::rank(
            &candidates,
            &signals,
            &previous,
            &query.weights,
            window_start,
            query.limit,
        );
        Ok(PlanView {
            techniques,
            weights: query.weights,
            as_of: board.as_of,
            considered: candidates.len(),
        })
    }

    /// The Navigator layer of the plan: every live technique (filtered by
    /// platform, enabled by actor) coloured by its priority with default
    /// weights.
    async fn priority_layer(&self, query: &BoardQuery, name: &str) -> Result<String, ScoringError> {
        let view = self
            .plan(&PlanQuery {
                limit: usize::MAX,
                platform: query.platform.clone(),
                window_days: 365,
                ..PlanQuery::default()
            })
            .await?;
        let only = self.actor_set(&query.threat_actor_id).await?;
        let name = if name.is_empty() {
            "Purple test priorities"
        } else {
            name
        };
        let description = format!(
            "Threat-informed test priorities as of {} (default weights; highest first in red)",
            view.as_of
        );
        let layer = layer::priority_layer(
            name,
            &description,
            &view.techniques,
            view.weights.total(),
            only.as_ref(),
        );
        Ok(serde_json::to_string_pretty(&layer).expect("layers serialize"))
    }

    /// Stores a snapshot of every live technique at `as_of` (now when
    /// None), computed afresh: a stored record is never served from the
    /// cache.
    pub async fn create_snapshot(
        &self,
        label: String,
        as_of: Option<Micros>,
    ) -> Result<SnapshotRow, ScoringError> {
        let board = match as_of {
            None => self.scorer.fresh_board().await?,
            Some(at) => self.scorer.board(Some(at)).await?,
        };
        let org = domain::organization(&board.scores, self.critical_k);
        let counts: BTreeMap<&str, i64> = domain::status_counts(board.scores.iter())
            .into_iter()
            .map(|(s, n)| (s.key(), n))
            .collect();
        let row = SnapshotRow {
            snapshot_id: uuid::Uuid::new_v4().to_string(),
            label,
            as_of: board.as_of,
            organization_score: org.score,
            technique_count: board.scores.len() as i64,
            status_counts: serde_json::to_string(&counts).expect("counts serialize"),
            created_at: now_micros(),
        };
        self.scorer
            .store
            .insert_snapshot(&row, &board.scores)
            .await?;
        Ok(row)
    }

    /// A page of snapshot headers, newest first, and the next token.
    pub async fn list_snapshots(
        &self,
        page: &Page,
    ) -> Result<(Vec<SnapshotRow>, String), ScoringError> {
        let mut rows = self.scorer.store.list_snapshots(page).await?;
        let next = page.finish(&mut rows, |s| {
            vec![s.created_at.into(), (&s.snapshot_id).into()]
        });
        Ok((rows, next))
    }

    /// A snapshot with its technique rows.
    pub async fn snapshot(&self, id: &str) -> Result<(SnapshotRow, Vec<Scored>), ScoringError> {
        let ids = [id.to_owned()];
        let (mut headers, scores) = futures::try_join!(
            self.scorer.store.snapshots(&ids),
            self.scorer.store.snapshot_scores(id)
        )?;
        let header = headers
            .remove(id)
            .ok_or_else(|| ScoringError::NotFound(format!("snapshot {id} does not exist")))?;
        Ok((header, scores))
    }

    /// Two snapshots compared technique by technique (one statement).
    pub async fn compare_snapshots(
        &self,
        base: &str,
        target: &str,
    ) -> Result<Comparison, ScoringError> {
        let ids = [base.to_owned(), target.to_owned()];
        let (headers, rows) = futures::try_join!(
            self.scorer.store.snapshots(&ids),
            self.scorer.store.compare(base, target)
        )?;
        let score_of = |id: &str| {
            headers
                .get(id)
                .map(|s| s.organization_score)
                .ok_or_else(|| ScoringError::NotFound(format!("snapshot {id} does not exist")))
        };
        let organization_delta = domain::round1(score_of(target)? - score_of(base)?);
        let techniques = rows
            .into_iter()
            .map(|(id, b, t)| domain::compare(id, b, t))
            .collect();
        Ok(Comparison {
            organization_delta,
            techniques,
        })
    }

    /// Drops cached scores of techniques, on every replica; how many
    /// entries went here. Anyone but campaigns (ingest after an import)
    /// changed the catalogue, so its cached side goes too.
    pub async fn invalidate(&self, ids: &[String], source: &str) -> Result<u64, ScoringError> {
        check_ids("technique_ids", ids)?;
        // Campaigns: tests changed. Ingest: the catalogue did. Anyone
        // else (an operator forcing a recompute): both, to be safe.
        self.scorer
            .invalidate(ids, source != "campaigns", source != "ingest")
            .await
    }
}

/// The board's scores filtered by platform (case-insensitive), tactic and
/// a set of techniques.
fn filtered<'a>(
    board: &'a Board,
    tactic: &str,
    platform: &str,
    only: Option<&BTreeSet<String>>,
) -> Vec<&'a Scored> {
    board
        .scores
        .iter()
        .filter(|s| tactic.is_empty() || s.tactics.iter().any(|t| t == tactic))
        .filter(|s| {
            platform.is_empty() || s.platforms.iter().any(|p| p.eq_ignore_ascii_case(platform))
        })
        .filter(|s| only.is_none_or(|set| set.contains(&s.technique_id)))
        .collect()
}
