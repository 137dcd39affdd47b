//! The wire edge of the scoring service: requests checked and turned into
//! domain queries, scores and aggregates turned into responses (rounded to
//! one decimal here, and only here: docs/design.md §4).

use std::collections::BTreeMap;

use purple_api::{batch::in_request_order, common::v1::TechniqueStatus, scoring::v1 as pb};
use purple_runtime::{
    paging::Page,
    time::{Micros, from_timestamp, timestamp},
};

use crate::{
    coverage::{BoardQuery, Comparison, OrganizationView, SNAPSHOT_KEY_LEN},
    domain::{ActorCoverage, Change, Scored, Status, TacticInfo, round1},
    error::ScoringError,
    store::SnapshotRow,
};

/// An optional `as_of`, checked.
pub fn as_of(ts: Option<&prost_types::Timestamp>) -> Result<Option<Micros>, ScoringError> {
    ts.map(|t| from_timestamp(t).map_err(|e| ScoringError::invalid("as_of", e.to_string())))
        .transpose()
}

/// A gap list's length: 10 when unset.
pub fn gap_limit(limit: i32) -> usize {
    if limit <= 0 { 10 } else { limit as usize }
}

impl From<Status> for TechniqueStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Untested => TechniqueStatus::Untested,
            Status::InProgress => TechniqueStatus::InProgress,
            Status::Gap => TechniqueStatus::Gap,
            Status::Partial => TechniqueStatus::Partial,
            Status::Covered => TechniqueStatus::Covered,
        }
    }
}

fn status_pb(status: Status) -> i32 {
    TechniqueStatus::from(status) as i32
}

impl TryFrom<&pb::GetHeatmapRequest> for BoardQuery {
    type Error = ScoringError;

    fn try_from(r: &pb::GetHeatmapRequest) -> Result<Self, ScoringError> {
        Ok(BoardQuery {
            as_of: as_of(r.as_of.as_ref())?,
            tactic: r.tactic.clone(),
            platform: r.platform.clone(),
            threat_actor_id: r.threat_actor_id.clone(),
        })
    }
}

impl TryFrom<&pb::ExportNavigatorLayerRequest> for BoardQuery {
    type Error = ScoringError;

    fn try_from(r: &pb::ExportNavigatorLayerRequest) -> Result<Self, ScoringError> {
        Ok(BoardQuery {
            as_of: as_of(r.as_of.as_ref())?,
            tactic: String::new(),
            platform: r.platform.clone(),
            threat_actor_id: r.threat_actor_id.clone(),
        })
    }
}

/// The snapshot list's page.
pub fn snapshot_page(r: &pb::ListSnapshotsRequest) -> Result<Page, ScoringError> {
    Ok(Page::parse(
        r.page_size,
        &r.page_token,
        50,
        "",
        SNAPSHOT_KEY_LEN,
    )?)
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

/// A technique's score on the wire.
pub fn technique_pb(s: &Scored) -> pb::TechniqueScore {
    pb::TechniqueScore {
        technique_id: s.technique_id.clone(),
        name: s.name.clone(),
        score: round1(s.score),
        status: status_pb(s.status),
        components: Some(components(s)),
        actor_count: s.actor_count as i32,
        tactics: s.tactics.clone(),
    }
}

/// Scores in request order, with the ids not found.
pub fn scores_response(
    ids: &[String],
    scores: &[Scored],
    at: Micros,
) -> pb::ScoreTechniquesResponse {
    let found: BTreeMap<String, pb::TechniqueScore> = scores
        .iter()
        .map(|s| (s.technique_id.clone(), technique_pb(s)))
        .collect();
    let (scores, missing_ids) = in_request_order(ids, &found);
    pb::ScoreTechniquesResponse {
        scores,
        missing_ids,
        as_of: Some(timestamp(at)),
    }
}

fn gap_pb(s: &Scored) -> pb::Gap {
    pb::Gap {
        technique_id: s.technique_id.clone(),
        name: s.name.clone(),
        score: round1(s.score),
        status: status_pb(s.status),
        actor_count: s.actor_count as i32,
    }
}

fn counts_pb(counts: &BTreeMap<Status, i64>) -> pb::StatusCounts {
    let n = |s: Status| counts.get(&s).copied().unwrap_or(0) as i32;
    pb::StatusCounts {
        untested: n(Status::Untested),
        in_progress: n(Status::InProgress),
        gap: n(Status::Gap),
        partial: n(Status::Partial),
        covered: n(Status::Covered),
    }
}

/// Tactic scores on the wire.
pub fn tactics_pb(tactics: Vec<(TacticInfo, f64, usize)>) -> Vec<pb::TacticScore> {
    tactics
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

/// Actor coverages in request order, with the ids not found.
pub fn actors_response(
    ids: &[String],
    coverages: Vec<ActorCoverage>,
    at: Micros,
) -> pb::ScoreThreatActorsResponse {
    let found: BTreeMap<String, pb::ThreatActorScore> = coverages
        .into_iter()
        .map(|c| {
            let score = pb::ThreatActorScore {
                actor_id: c.actor.actor_id.clone(),
                name: c.actor.name,
                score: round1(c.score),
                covered_ratio: c.covered_ratio,
                technique_count: c.technique_count as i32,
                gaps: c.gaps.iter().map(gap_pb).collect(),
            };
            (c.actor.actor_id, score)
        })
        .collect();
    let (actors, missing_ids) = in_request_order(ids, &found);
    pb::ScoreThreatActorsResponse {
        actors,
        missing_ids,
        as_of: Some(timestamp(at)),
    }
}

impl From<OrganizationView> for pb::GetOrganizationScoreResponse {
    fn from(v: OrganizationView) -> Self {
        let org = v.organization;
        pb::GetOrganizationScoreResponse {
            score: round1(org.score),
            mean_all: round1(org.mean_all),
            mean_critical: round1(org.mean_critical),
            technique_count: org.technique_count as i32,
            critical_count: org.critical_count as i32,
            status_counts: Some(counts_pb(&v.status_counts)),
            tactics: tactics_pb(v.tactics),
            top_gaps: v.top_gaps.iter().map(gap_pb).collect(),
            as_of: Some(timestamp(v.as_of)),
            cached: v.cached,
        }
    }
}

/// A heatmap cell.
pub fn cell_pb(s: &Scored) -> pb::HeatmapCell {
    pb::HeatmapCell {
        technique_id: s.technique_id.clone(),
        name: s.name.clone(),
        tactics: s.tactics.clone(),
        score: round1(s.score),
        status: status_pb(s.status),
        test_count: s.total_tests as i32,
        rule_count: s.mapped_rules as i32,
    }
}

/// A snapshot header, with its technique rows when given.
pub fn snapshot_pb(s: SnapshotRow, techniques: &[Scored]) -> pb::Snapshot {
    let stored: BTreeMap<String, i64> = serde_json::from_str(&s.status_counts).unwrap_or_default();
    let counts: BTreeMap<Status, i64> = stored
        .iter()
        .filter_map(|(k, n)| Status::from_key(k).map(|s| (s, *n)))
        .collect();
    pb::Snapshot {
        snapshot_id: s.snapshot_id,
        label: s.label,
        as_of: Some(timestamp(s.as_of)),
        organization_score: round1(s.organization_score),
        technique_count: s.technique_count as i32,
        status_counts: Some(counts_pb(&counts)),
        created_at: Some(timestamp(s.created_at)),
        techniques: techniques
            .iter()
            .map(|t| pb::SnapshotTechnique {
                technique_id: t.technique_id.clone(),
                score: round1(t.score),
                status: status_pb(t.status),
                components: Some(components(t)),
            })
            .collect(),
    }
}

impl From<Comparison> for pb::CompareSnapshotsResponse {
    fn from(c: Comparison) -> Self {
        let mut response = pb::CompareSnapshotsResponse {
            organization_delta: c.organization_delta,
            ..Default::default()
        };
        for t in c.techniques {
            let change = match t.change {
                Change::Improved => {
                    response.improved += 1;
                    pb::Change::Improved
                }
                Change::Regressed => {
                    response.regressed += 1;
                    pb::Change::Regressed
                }
                Change::Unchanged => {
                    response.unchanged += 1;
                    pb::Change::Unchanged
                }
            };
            response.techniques.push(pb::TechniqueDelta {
                technique_id: t.technique_id,
                base_score: t.base_score,
                target_score: t.target_score,
                delta: t.delta,
                change: change as i32,
                base_status: t.base.map_or(0, |(_, s)| status_pb(s)),
                target_status: t.target.map_or(0, |(_, s)| status_pb(s)),
            });
        }
        response
    }
}
