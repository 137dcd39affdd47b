//! gRPC handlers of the scoring service.

use std::collections::{BTreeMap, BTreeSet};

use purple_api::{
    batch::{check_batch_len, in_request_order},
    scoring::v1::{self as pb, scoring_service_server::ScoringService},
};
use purple_runtime::{
    ServiceContext,
    paging::Page,
    time::{Micros, from_timestamp, now_micros, timestamp},
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{self, Scored, Status as S, round1},
    engine::{Board, Scorer, tactic_scores},
    error::ScoringError,
    inputs::Inputs,
    layer,
    store::{ScoreStore, SnapshotRow},
};

/// The scoring gRPC API.
pub struct ScoringApi {
    scorer: Scorer,
    critical_k: i64,
}

impl ScoringApi {
    /// The API over a service context.
    pub fn new(ctx: ServiceContext) -> Self {
        let scorer = Scorer {
            inputs: Inputs {
                peers: ctx.peers.clone(),
            },
            store: ScoreStore::new(ctx.db.clone()),
            ttl: ctx.settings.domain.score_cache_ttl_secs as Micros * 1_000_000,
        };
        Self {
            scorer,
            critical_k: i64::from(ctx.settings.domain.critical_actor_threshold),
        }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

fn as_of(ts: Option<&prost_types::Timestamp>) -> Result<Option<Micros>, ScoringError> {
    ts.map(|t| from_timestamp(t).map_err(|e| ScoringError::invalid("as_of", e.to_string())))
        .transpose()
}

fn components(s: &Scored) -> pb::ScoreComponents {
    pb::ScoreComponents {
        detection: s.detection,
        rule_coverage: s.rule_coverage,
        countermeasures: s.countermeasures,
        recency: s.recency,
        effective_tests: s.effective_tests as i32,
        mapped_rules: s.mapped_rules as i32,
        triggered_rules: s.triggered_rules as i32,
        countermeasure_count: s.countermeasure_count as i32,
        days_since_validation: s.days_since_validation,
        total_tests: s.total_tests as i32,
    }
}

fn technique_pb(s: &Scored) -> pb::TechniqueScore {
    pb::TechniqueScore {
        technique_id: s.technique_id.clone(),
        name: s.name.clone(),
        score: round1(s.score),
        status: s.status.to_proto() as i32,
        components: Some(components(s)),
        actor_count: s.actor_count as i32,
        tactics: s.tactics.clone(),
    }
}

fn gap_pb(s: &Scored) -> pb::Gap {
    pb::Gap {
        technique_id: s.technique_id.clone(),
        name: s.name.clone(),
        score: round1(s.score),
        status: s.status.to_proto() as i32,
        actor_count: s.actor_count as i32,
    }
}

fn counts_pb<'a>(scores: impl Iterator<Item = &'a Scored>) -> pb::StatusCounts {
    let c = domain::status_counts(scores);
    let n = |s: S| c.get(&s).copied().unwrap_or(0) as i32;
    pb::StatusCounts {
        untested: n(S::Untested),
        in_progress: n(S::InProgress),
        gap: n(S::Gap),
        partial: n(S::Partial),
        covered: n(S::Covered),
    }
}

fn tactics_pb(board: &Board) -> Vec<pb::TacticScore> {
    tactic_scores(board)
        .into_iter()
        .map(|(t, mean, n)| pb::TacticScore {
            tactic_id: t.tactic_id,
            short_name: t.short_name,
            name: t.name,
            score: round1(mean),
            technique_count: n as i32,
        })
        .collect()
}

fn gap_limit(limit: i32) -> usize {
    if limit <= 0 { 10 } else { limit as usize }
}

/// The board's scores filtered by platform (case-insensitive) and tactic.
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

impl ScoringApi {
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

    fn organization(&self, board: &Board, k: i64, gaps: usize) -> pb::GetOrganizationScoreResponse {
        let org = domain::organization(&board.scores, k);
        pb::GetOrganizationScoreResponse {
            score: round1(org.score),
            mean_all: round1(org.mean_all),
            mean_critical: round1(org.mean_critical),
            technique_count: org.technique_count as i32,
            critical_count: org.critical_count as i32,
            status_counts: Some(counts_pb(board.scores.iter())),
            tactics: tactics_pb(board),
            top_gaps: domain::gaps(board.scores.iter(), gaps)
                .into_iter()
                .map(gap_pb)
                .collect(),
            as_of: Some(timestamp(board.as_of)),
            cached: board.cached,
        }
    }
}

fn snapshot_pb(s: SnapshotRow, techniques: Vec<pb::SnapshotTechnique>) -> pb::Snapshot {
    let counts: BTreeMap<String, i32> = serde_json::from_str(&s.status_counts).unwrap_or_default();
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    pb::Snapshot {
        snapshot_id: s.snapshot_id,
        label: s.label,
        as_of: Some(timestamp(s.as_of)),
        organization_score: round1(s.organization_score),
        technique_count: s.technique_count as i32,
        status_counts: Some(pb::StatusCounts {
            untested: n("untested"),
            in_progress: n("in_progress"),
            gap: n("gap"),
            partial: n("partial"),
            covered: n("covered"),
        }),
        created_at: Some(timestamp(s.created_at)),
        techniques,
    }
}

/// The wire status of a key stored in a snapshot row.
fn status_of_key(key: &str) -> i32 {
    purple_api::common::v1::TechniqueStatus::from_key(key).unwrap_or_default() as i32
}

#[tonic::async_trait]
impl ScoringService for ScoringApi {
    async fn score_techniques(
        &self,
        request: Request<pb::ScoreTechniquesRequest>,
    ) -> Rpc<pb::ScoreTechniquesResponse> {
        let r = request.into_inner();
        check_batch_len("technique_ids", r.technique_ids.len()).map_err(ScoringError::from)?;
        let (scores, at) = self
            .scorer
            .score_ids(&r.technique_ids, as_of(r.as_of.as_ref())?)
            .await?;
        let found: BTreeMap<String, pb::TechniqueScore> = scores
            .iter()
            .map(|s| (s.technique_id.clone(), technique_pb(s)))
            .collect();
        let (scores, missing_ids) = in_request_order(&r.technique_ids, &found);
        Ok(Response::new(pb::ScoreTechniquesResponse {
            scores,
            missing_ids,
            as_of: Some(timestamp(at)),
        }))
    }

    async fn score_tactics(
        &self,
        request: Request<pb::ScoreTacticsRequest>,
    ) -> Rpc<pb::ScoreTacticsResponse> {
        let r = request.into_inner();
        let board = self.scorer.board(as_of(r.as_of.as_ref())?).await?;
        let tactics = tactics_pb(&board)
            .into_iter()
            .filter(|t| {
                r.tactics.is_empty()
                    || r.tactics
                        .iter()
                        .any(|w| *w == t.short_name || *w == t.tactic_id)
            })
            .collect();
        Ok(Response::new(pb::ScoreTacticsResponse {
            tactics,
            as_of: Some(timestamp(board.as_of)),
        }))
    }

    async fn score_threat_actors(
        &self,
        request: Request<pb::ScoreThreatActorsRequest>,
    ) -> Rpc<pb::ScoreThreatActorsResponse> {
        let r = request.into_inner();
        check_batch_len("actor_ids", r.actor_ids.len()).map_err(ScoringError::from)?;
        let at = as_of(r.as_of.as_ref())?;
        let (actors, board) = futures::try_join!(
            self.scorer.inputs.actors(&r.actor_ids),
            self.scorer.board(at)
        )?;
        let by_id: BTreeMap<&str, &Scored> = board
            .scores
            .iter()
            .map(|s| (s.technique_id.as_str(), s))
            .collect();
        let found: BTreeMap<String, pb::ThreatActorScore> = actors
            .into_iter()
            .map(|(actor, techniques)| {
                let scores: Vec<&Scored> = techniques
                    .iter()
                    .filter_map(|t| by_id.get(t.as_str()).copied())
                    .collect();
                let (mean, n) = domain::mean(scores.iter().copied());
                let covered = scores.iter().filter(|s| s.status == S::Covered).count();
                let score = pb::ThreatActorScore {
                    actor_id: actor.actor_id.clone(),
                    name: actor.name,
                    score: round1(mean),
                    covered_ratio: if n == 0 {
                        0.0
                    } else {
                        covered as f64 / n as f64
                    },
                    technique_count: n as i32,
                    gaps: domain::gaps(scores.iter().copied(), gap_limit(r.gap_limit))
                        .into_iter()
                        .map(gap_pb)
                        .collect(),
                };
                (actor.actor_id, score)
            })
            .collect();
        let (actors, missing_ids) = in_request_order(&r.actor_ids, &found);
        Ok(Response::new(pb::ScoreThreatActorsResponse {
            actors,
            missing_ids,
            as_of: Some(timestamp(board.as_of)),
        }))
    }

    async fn get_organization_score(
        &self,
        request: Request<pb::GetOrganizationScoreRequest>,
    ) -> Rpc<pb::GetOrganizationScoreResponse> {
        let r = request.into_inner();
        let k = if r.critical_actor_threshold > 0 {
            i64::from(r.critical_actor_threshold)
        } else {
            self.critical_k
        };
        let board = self.scorer.board(as_of(r.as_of.as_ref())?).await?;
        Ok(Response::new(self.organization(
            &board,
            k,
            gap_limit(r.gap_limit),
        )))
    }

    async fn get_heatmap(
        &self,
        request: Request<pb::GetHeatmapRequest>,
    ) -> Rpc<pb::GetHeatmapResponse> {
        let r = request.into_inner();
        let (board, only) = futures::try_join!(
            self.scorer.board(as_of(r.as_of.as_ref())?),
            self.actor_set(&r.threat_actor_id)
        )?;
        let cells = filtered(&board, &r.tactic, &r.platform, only.as_ref())
            .into_iter()
            .map(|s| pb::HeatmapCell {
                technique_id: s.technique_id.clone(),
                name: s.name.clone(),
                tactics: s.tactics.clone(),
                score: round1(s.score),
                status: s.status.to_proto() as i32,
                test_count: s.total_tests as i32,
                rule_count: s.mapped_rules as i32,
            })
            .collect();
        Ok(Response::new(pb::GetHeatmapResponse {
            cells,
            as_of: Some(timestamp(board.as_of)),
        }))
    }

    async fn export_navigator_layer(
        &self,
        request: Request<pb::ExportNavigatorLayerRequest>,
    ) -> Rpc<pb::ExportNavigatorLayerResponse> {
        let r = request.into_inner();
        let (board, only) = futures::try_join!(
            self.scorer.board(as_of(r.as_of.as_ref())?),
            self.actor_set(&r.threat_actor_id)
        )?;
        let scores: Vec<Scored> = filtered(&board, "", &r.platform, None)
            .into_iter()
            .cloned()
            .collect();
        let name = if r.name.is_empty() {
            "Purple coverage".to_owned()
        } else {
            r.name
        };
        let description = format!(
            "Coverage scores as of {}{}",
            purple_runtime::time::datetime(board.as_of).to_rfc3339(),
            if r.threat_actor_id.is_empty() {
                String::new()
            } else {
                format!(", techniques of {}", r.threat_actor_id)
            }
        );
        let platforms: Vec<String> = if r.platform.is_empty() {
            Vec::new()
        } else {
            vec![r.platform]
        };
        let layer = layer::layer(&name, &description, "", &scores, only.as_ref(), &platforms);
        Ok(Response::new(pb::ExportNavigatorLayerResponse {
            layer_json: serde_json::to_string_pretty(&layer).expect("layers serialize"),
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<pb::CreateSnapshotRequest>,
    ) -> Rpc<pb::CreateSnapshotResponse> {
        let r = request.into_inner();
        // A stored record is computed afresh, never served from the cache.
        let board = match as_of(r.as_of.as_ref())? {
            None => self.scorer.fresh_board().await?,
            Some(at) => self.scorer.board(Some(at)).await?,
        };
        let org = domain::organization(&board.scores, self.critical_k);
        let counts: BTreeMap<&str, i64> = domain::status_counts(board.scores.iter())
            .into_iter()
            .map(|(s, n)| (s.to_proto().key().unwrap_or(""), n))
            .collect();
        let row = SnapshotRow {
            snapshot_id: uuid::Uuid::new_v4().to_string(),
            label: r.label,
            as_of: board.as_of,
            organization_score: org.score,
            technique_count: board.scores.len() as i64,
            status_counts: serde_json::to_string(&counts).expect("counts serialize"),
            created_at: now_micros(),
        };
        self.scorer
            .store
            .insert_snapshot(&row, &board.scores)
            .await
            .map_err(ScoringError::from)?;
        Ok(Response::new(pb::CreateSnapshotResponse {
            snapshot: Some(snapshot_pb(row, Vec::new())),
        }))
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Rpc<pb::ListSnapshotsResponse> {
        let r = request.into_inner();
        let page = Page::parse(r.page_size, &r.page_token, 50).map_err(ScoringError::from)?;
        let mut rows = self
            .scorer
            .store
            .list_snapshots(page)
            .await
            .map_err(ScoringError::from)?;
        let next_page_token = page.finish(&mut rows);
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots: rows
                .into_iter()
                .map(|s| snapshot_pb(s, Vec::new()))
                .collect(),
            next_page_token,
        }))
    }

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Rpc<pb::GetSnapshotResponse> {
        let id = request.into_inner().snapshot_id;
        let (mut headers, scores) = futures::try_join!(
            self.scorer.store.snapshots(std::slice::from_ref(&id)),
            self.scorer.store.snapshot_scores(&id)
        )
        .map_err(ScoringError::from)?;
        let header = headers
            .remove(&id)
            .ok_or_else(|| ScoringError::NotFound(format!("snapshot {id} does not exist")))?;
        let techniques = scores
            .iter()
            .map(|s| pb::SnapshotTechnique {
                technique_id: s.technique_id.clone(),
                score: round1(s.score),
                status: s.status.to_proto() as i32,
                components: Some(components(s)),
            })
            .collect();
        Ok(Response::new(pb::GetSnapshotResponse {
            snapshot: Some(snapshot_pb(header, techniques)),
        }))
    }

    async fn compare_snapshots(
        &self,
        request: Request<pb::CompareSnapshotsRequest>,
    ) -> Rpc<pb::CompareSnapshotsResponse> {
        let r = request.into_inner();
        let ids = [r.base_snapshot_id.clone(), r.target_snapshot_id.clone()];
        let (headers, rows) = futures::try_join!(
            self.scorer.store.snapshots(&ids),
            self.scorer.store.compare(&ids[0], &ids[1])
        )
        .map_err(ScoringError::from)?;
        let score_of = |id: &str| {
            headers
                .get(id)
                .map(|s| s.organization_score)
                .ok_or_else(|| ScoringError::NotFound(format!("snapshot {id} does not exist")))
        };
        let organization_delta = round1(score_of(&ids[1])? - score_of(&ids[0])?);
        let mut response = pb::CompareSnapshotsResponse {
            organization_delta,
            ..Default::default()
        };
        for (technique_id, base, target) in rows {
            // Compared as shown: a change below the displayed precision is
            // no change.
            let (b, t) = (
                base.as_ref().map_or(0.0, |(s, _)| round1(*s)),
                target.as_ref().map_or(0.0, |(s, _)| round1(*s)),
            );
            let delta = round1(t - b);
            let change = if delta > 0.0 {
                pb::Change::Improved
            } else if delta < 0.0 {
                pb::Change::Regressed
            } else {
                pb::Change::Unchanged
            };
            match change {
                pb::Change::Improved => response.improved += 1,
                pb::Change::Regressed => response.regressed += 1,
                _ => response.unchanged += 1,
            }
            response.techniques.push(pb::TechniqueDelta {
                technique_id,
                base_score: b,
                target_score: t,
                delta,
                change: change as i32,
                base_status: base.map_or(0, |(_, s)| status_of_key(&s)),
                target_status: target.map_or(0, |(_, s)| status_of_key(&s)),
            });
        }
        Ok(Response::new(response))
    }

    async fn invalidate_techniques(
        &self,
        request: Request<pb::InvalidateTechniquesRequest>,
    ) -> Rpc<pb::InvalidateTechniquesResponse> {
        let r = request.into_inner();
        check_batch_len("technique_ids", r.technique_ids.len()).map_err(ScoringError::from)?;
        let invalidated = self
            .scorer
            .store
            .invalidate(&r.technique_ids)
            .await
            .map_err(ScoringError::from)?;
        Ok(Response::new(pb::InvalidateTechniquesResponse {
            invalidated: invalidated as i32,
        }))
    }
}
