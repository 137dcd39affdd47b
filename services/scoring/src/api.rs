//! gRPC handlers of the scoring service: each converts its request (see
//! `convert`), calls one [`Coverage`] function and converts the answer
//! back; errors become a status once, through `ScoringError`.

use purple_api::scoring::v1::{self as pb, scoring_service_server::ScoringService};
use purple_runtime::{ServiceContext, time::timestamp};
use tonic::{Request, Response, Status};

use std::sync::Arc;

use crate::{
    cache::ScoreCache,
    clients::Inputs,
    convert::{self, as_of, gap_limit},
    coverage::{BoardQuery, Coverage},
    engine::Scorer,
    error::ScoringError,
    feed::Feed,
    store::ScoreStore,
};

/// The scoring gRPC API.
pub struct ScoringApi {
    coverage: Coverage,
    feed: Feed,
    shutdown: tokio_util::sync::CancellationToken,
}

impl ScoringApi {
    /// The API over a service context.
    pub fn new(ctx: ServiceContext) -> Self {
        let scorer = Scorer {
            inputs: Inputs::new(&ctx.peers),
            store: ScoreStore::new(ctx.db.clone()),
            cache: Arc::new(ScoreCache::new(
                ctx.settings.domain.score_cache_ttl_secs as i64 * 1_000_000,
            )),
            changed: Arc::default(),
        };
        let critical_k = i64::from(ctx.settings.domain.critical_actor_threshold);
        Self {
            feed: Feed::new(scorer.clone(), ctx.peers.campaigns(), critical_k),
            coverage: Coverage { scorer, critical_k },
            shutdown: ctx.shutdown.clone(),
        }
    }

    /// The feed, for the background task that keeps the cache coherent
    /// and publishes changes.
    pub fn feed(&self) -> Feed {
        self.feed.clone()
    }
}

type Rpc<T> = Result<Response<T>, Status>;

/// The stream WatchScores answers with.
type ChangeStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::WatchScoresResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ScoringService for ScoringApi {
    type WatchScoresStream = ChangeStream;

    async fn plan_next_tests(
        &self,
        request: Request<pb::PlanNextTestsRequest>,
    ) -> Rpc<pb::PlanNextTestsResponse> {
        let query = convert::plan_query(request.get_ref())?;
        let view = self.coverage.plan(&query).await?;
        Ok(Response::new(view.into()))
    }

    async fn watch_scores(
        &self,
        request: Request<pb::WatchScoresRequest>,
    ) -> Rpc<Self::WatchScoresStream> {
        let r = request.into_inner();
        let cursor = convert::watch_cursor(&r.cursor)?;
        let permit = self.feed.admit().ok_or_else(|| {
            purple_runtime::status::refused(
                tonic::Code::ResourceExhausted,
                purple_runtime::status::reason::RESOURCE_EXHAUSTED,
                format!(
                    "this replica serves {} watchers already; retry later or elsewhere",
                    crate::feed::MAX_WATCHERS
                ),
                &[],
            )
        })?;
        let store = self.feed.scorer().store.clone();
        let start = match cursor {
            Some(c) => c,
            None => {
                store
                    .feed_state()
                    .await
                    .map_err(ScoringError::from)?
                    .last_seq
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut tip = self.feed.subscribe();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut cursor = start;
            let hello = pb::WatchScoresResponse {
                changes: Vec::new(),
                cursor: cursor.to_string(),
            };
            if tx.send(Ok(hello)).await.is_err() {
                return;
            }
            loop {
                let rows = match store.changes_after(cursor, crate::feed::BATCH).await {
                    Ok(rows) => rows,
                    Err(err) => {
                        let _ = tx.send(Err(ScoringError::from(err).into())).await;
                        return;
                    }
                };
                let full = rows.len() as i64 == crate::feed::BATCH;
                if let Some(last) = rows.last() {
                    cursor = last.seq;
                    let changes: Vec<pb::ScoreChange> = rows
                        .iter()
                        .filter(|c| {
                            !r.regressions_only
                                || c.kind != crate::store::feed::ChangeKind::Technique
                        })
                        .map(convert::change_pb)
                        .collect();
                    if !changes.is_empty() {
                        let message = pb::WatchScoresResponse {
                            changes,
                            cursor: cursor.to_string(),
                        };
                        if tx.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    changed = tip.changed() => if changed.is_err() {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    },
                    () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    () = tx.closed() => return,
                    () = shutdown.cancelled() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn score_techniques(
        &self,
        request: Request<pb::ScoreTechniquesRequest>,
    ) -> Rpc<pb::ScoreTechniquesResponse> {
        let r = request.into_inner();
        let at = as_of(r.as_of.as_ref())?;
        let (scores, at) = self.coverage.score_techniques(&r.technique_ids, at).await?;
        Ok(Response::new(convert::scores_response(
            &r.technique_ids,
            &scores,
            at,
        )))
    }

    async fn score_tactics(
        &self,
        request: Request<pb::ScoreTacticsRequest>,
    ) -> Rpc<pb::ScoreTacticsResponse> {
        let r = request.into_inner();
        let at = as_of(r.as_of.as_ref())?;
        let (tactics, at) = self.coverage.score_tactics(&r.tactics, at).await?;
        Ok(Response::new(pb::ScoreTacticsResponse {
            tactics: convert::tactics_pb(tactics),
            as_of: Some(timestamp(at)),
        }))
    }

    async fn score_threat_actors(
        &self,
        request: Request<pb::ScoreThreatActorsRequest>,
    ) -> Rpc<pb::ScoreThreatActorsResponse> {
        let r = request.into_inner();
        let at = as_of(r.as_of.as_ref())?;
        let (coverages, at) = self
            .coverage
            .score_actors(&r.actor_ids, at, gap_limit(r.gap_limit))
            .await?;
        Ok(Response::new(convert::actors_response(
            &r.actor_ids,
            coverages,
            at,
        )))
    }

    async fn get_organization_score(
        &self,
        request: Request<pb::GetOrganizationScoreRequest>,
    ) -> Rpc<pb::GetOrganizationScoreResponse> {
        let r = request.into_inner();
        let at = as_of(r.as_of.as_ref())?;
        let k = (r.critical_actor_threshold > 0).then(|| i64::from(r.critical_actor_threshold));
        let view = self
            .coverage
            .organization(at, k, gap_limit(r.gap_limit))
            .await?;
        Ok(Response::new(view.into()))
    }

    async fn get_heatmap(
        &self,
        request: Request<pb::GetHeatmapRequest>,
    ) -> Rpc<pb::GetHeatmapResponse> {
        let query = BoardQuery::try_from(request.get_ref())?;
        let (cells, at) = self.coverage.heatmap(&query).await?;
        Ok(Response::new(pb::GetHeatmapResponse {
            cells: cells.iter().map(convert::cell_pb).collect(),
            as_of: Some(timestamp(at)),
        }))
    }

    async fn export_navigator_layer(
        &self,
        request: Request<pb::ExportNavigatorLayerRequest>,
    ) -> Rpc<pb::ExportNavigatorLayerResponse> {
        let query = BoardQuery::try_from(request.get_ref())?;
        let layer_json = self
            .coverage
            .navigator_layer(&query, &request.get_ref().name)
            .await?;
        Ok(Response::new(pb::ExportNavigatorLayerResponse {
            layer_json,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<pb::CreateSnapshotRequest>,
    ) -> Rpc<pb::CreateSnapshotResponse> {
        let r = request.into_inner();
        let at = as_of(r.as_of.as_ref())?;
        let row = self.coverage.create_snapshot(r.label, at).await?;
        Ok(Response::new(pb::CreateSnapshotResponse {
            snapshot: Some(convert::snapshot_pb(row, &[])),
        }))
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Rpc<pb::ListSnapshotsResponse> {
        let page = convert::snapshot_page(request.get_ref())?;
        let (rows, next_page_token) = self.coverage.list_snapshots(&page).await?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots: rows
                .into_iter()
                .map(|s| convert::snapshot_pb(s, &[]))
                .collect(),
            next_page_token,
        }))
    }

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Rpc<pb::GetSnapshotResponse> {
        let (header, scores) = self
            .coverage
            .snapshot(&request.get_ref().snapshot_id)
            .await?;
        Ok(Response::new(pb::GetSnapshotResponse {
            snapshot: Some(convert::snapshot_pb(header, &scores)),
        }))
    }

    async fn compare_snapshots(
        &self,
        request: Request<pb::CompareSnapshotsRequest>,
    ) -> Rpc<pb::CompareSnapshotsResponse> {
        let r = request.into_inner();
        let comparison = self
            .coverage
            .compare_snapshots(&r.base_snapshot_id, &r.target_snapshot_id)
            .await?;
        Ok(Response::new(comparison.into()))
    }

    async fn invalidate_techniques(
        &self,
        request: Request<pb::InvalidateTechniquesRequest>,
    ) -> Rpc<pb::InvalidateTechniquesResponse> {
        let r = request.get_ref();
        let invalidated = self
            .coverage
            .invalidate(&r.technique_ids, &r.source)
            .await?;
        Ok(Response::new(pb::InvalidateTechniquesResponse {
            invalidated: invalidated as i32,
        }))
    }
}
