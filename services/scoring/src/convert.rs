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
            priority: false,
        })
    }
}

impl TryFrom<&pb::ExportNavigatorLayerRequest> for BoardQuery {
    type Error = ScoringError;

    fn try_from(r: &pb::ExportNavigatorLayerRequest) -> Result<Self, ScoringError> {
        if r.priority && r.as_of.is_some() {
            return Err(ScoringError::invalid(
                "as_of",
                "a priority layer is the plan for now: leave as_of unset",
            ));
        }
        Ok(BoardQuery {
            as_of: as_of(r.as_of.as_ref())?,
            tactic: String::new(),
            platform: r.platform.clone(),
            threat_actor_id: r.threat_actor_id.clone(),
            priority: r.priority,
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
    let (scores, missing_ids) = in_request_order(ids, found);
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
    let (actors, missing_ids) = in_request_order(ids, found);
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

/// PlanNextTests' query: limits checked, weights defaulted and bounded.
pub fn plan_query(
    r: &pb::PlanNextTestsRequest,
) -> Result<crate::coverage::PlanQuery, ScoringError> {
    let limit = match r.limit {
        0 => 20,
        n if (1..=1_000).contains(&n) => n as usize,
        _ => {
            return Err(ScoringError::invalid(
                "limit",
                "between 1 and 1,000 (0 for 20)",
            ));
        }
    };
    let window_days = match r.intel_window_days {
        0 => 365,
        n if (1..=36_500).contains(&n) => i64::from(n),
        _ => {
            return Err(ScoringError::invalid(
                "intel_window_days",
                "between 1 and 36,500 (0 for 365)",
            ));
        }
    };
    let mut weights = crate::plan::Weights::default();
    if let Some(w) = &r.weights {
        let fields: [(&str, Option<f64>, &mut f64); 9] = [
            ("intel", w.intel, &mut weights.intel),
            ("kev", w.kev, &mut weights.kev),
            ("ransomware", w.ransomware, &mut weights.ransomware),
            ("actors", w.actors, &mut weights.actors),
            ("weakness", w.weakness, &mut weights.weakness),
            ("staleness", w.staleness, &mut weights.staleness),
            ("rules", w.rules, &mut weights.rules),
            (
                "countermeasures",
                w.countermeasures,
                &mut weights.countermeasures,
            ),
            ("regression", w.regression, &mut weights.regression),
        ];
        for (name, value, slot) in fields {
            if let Some(v) = value {
                if !(0.0..=crate::plan::Weights::MAX).contains(&v) {
                    return Err(ScoringError::invalid(
                        format!("weights.{name}"),
                        "between 0 and 1,000",
                    ));
                }
                *slot = v;
            }
        }
    }
    Ok(crate::coverage::PlanQuery {
        limit,
        tactic: r.tactic.trim().to_owned(),
        platform: r.platform.trim().to_owned(),
        threat_actor_id: r.threat_actor_id.trim().to_owned(),
        window_days,
        weights,
    })
}

fn weights_pb(w: &crate::plan::Weights) -> pb::PlanWeights {
    pb::PlanWeights {
        intel: Some(w.intel),
        kev: Some(w.kev),
        ransomware: Some(w.ransomware),
        actors: Some(w.actors),
        weakness: Some(w.weakness),
        staleness: Some(w.staleness),
        rules: Some(w.rules),
        countermeasures: Some(w.countermeasures),
        regression: Some(w.regression),
    }
}

impl From<crate::coverage::PlanView> for pb::PlanNextTestsResponse {
    fn from(view: crate::coverage::PlanView) -> Self {
        pb::PlanNextTestsResponse {
            techniques: view
                .techniques
                .into_iter()
                .enumerate()
                .map(|(i, p)| pb::PlannedTechnique {
                    rank: i as i32 + 1,
                    technique_id: p.score.technique_id.clone(),
                    name: p.score.name.clone(),
                    priority: p.priority,
                    score: round1(p.score.score),
                    status: status_pb(p.score.status),
                    reasons: p
                        .reasons
                        .into_iter()
                        .map(|r| pb::PlanReason {
                            contribution: r.contribution(),
                            reason: r.reason.to_owned(),
                            weight: r.weight,
                            factor: r.factor,
                            detail: r.detail,
                        })
                        .collect(),
                    actor_ids: p.actor_ids,
                })
                .collect(),
            weights: Some(weights_pb(&view.weights)),
            as_of: Some(timestamp(view.as_of)),
            considered: view.considered as i32,
        }
    }
}

/// A watch cursor: the number of the last change received ("" for the
/// current end).
pub fn watch_cursor(cursor: &str) -> Result<Option<i64>, ScoringError> {
    if cursor.is_empty() {
        return Ok(None);
    }
    cursor
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .map(Some)
        .ok_or_else(|| ScoringError::invalid("cursor", "not a cursor this feed issued"))
}

/// A numbered change on the wire.
pub fn change_pb(c: &crate::store::feed::ChangeRow) -> pb::ScoreChange {
    use crate::store::feed::ChangeKind;
    let status = |s: Option<Status>| s.map_or(0, status_pb);
    pb::ScoreChange {
        cursor: c.seq.to_string(),
        kind: match c.kind {
            ChangeKind::Technique => pb::ScoreChangeKind::Technique,
            ChangeKind::Regression => pb::ScoreChangeKind::Regression,
            ChangeKind::Organization => pb::ScoreChangeKind::Organization,
        } as i32,
        technique_id: c.technique_id.clone(),
        old_score: c.old_score,
        new_score: c.new_score,
        old_status: status(c.old_status),
        new_status: status(c.new_status),
        observed_at: Some(timestamp(c.observed_at)),
    }
}
