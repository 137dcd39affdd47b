//! Scoring model v1 (DESIGN section 4), pure: one technique's score from
//! its catalogue and test inputs, and the aggregates over many. Everything
//! is computed in double precision; rounding to one decimal happens at the
//! API, and status thresholds use the unrounded score.

use std::collections::BTreeMap;

use purple_api::common::v1::TechniqueStatus;
use purple_runtime::time::{MICROS_PER_DAY, Micros};
use serde::{Deserialize, Serialize};

/// A technique as scoring needs it from the catalogue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CatalogSide {
    pub technique_id: String,
    pub name: String,
    pub tactics: Vec<String>,
    pub platforms: Vec<String>,
    /// Enabled rules mapped directly to the technique.
    pub mapped_rules: Vec<String>,
    /// Distinct D3FEND techniques of it or its parent.
    pub countermeasures: i64,
    /// Live threat actors using it.
    pub actor_count: i64,
}

/// A technique's tests, as campaigns aggregates them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TestSide {
    pub total: i64,
    pub effective: i64,
    pub blocked: i64,
    pub detected: i64,
    pub logged: i64,
    pub not_detected: i64,
    pub latest_validated_at: Option<Micros>,
    pub triggered_rules: Vec<String>,
}

/// A scored technique: the components, the counts behind them, the status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub technique_id: String,
    pub name: String,
    pub tactics: Vec<String>,
    pub platforms: Vec<String>,
    pub actor_count: i64,
    pub detection: f64,
    pub rule_coverage: f64,
    pub countermeasures: f64,
    pub recency: f64,
    pub score: f64,
    pub status: Status,
    pub effective_tests: i64,
    pub total_tests: i64,
    pub mapped_rules: i64,
    pub triggered_rules: i64,
    pub countermeasure_count: i64,
    pub days_since_validation: f64,
}

/// The coverage status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Status {
    Untested,
    InProgress,
    Gap,
    Partial,
    Covered,
}

impl Status {
    /// The wire enum.
    pub fn to_proto(self) -> TechniqueStatus {
        match self {
            Status::Untested => TechniqueStatus::Untested,
            Status::InProgress => TechniqueStatus::InProgress,
            Status::Gap => TechniqueStatus::Gap,
            Status::Partial => TechniqueStatus::Partial,
            Status::Covered => TechniqueStatus::Covered,
        }
    }

    /// Whether it is a gap to close: untested or gap.
    pub fn is_gap(self) -> bool {
        matches!(self, Status::Untested | Status::Gap)
    }
}

/// One decimal, as the API shows scores.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Scores one technique as of `as_of`.
pub fn score(catalog: &CatalogSide, tests: &TestSide, as_of: Micros) -> Scored {
    let detection = if tests.effective == 0 {
        0.0
    } else {
        (tests.blocked as f64 + 0.75 * tests.detected as f64 + 0.25 * tests.logged as f64)
            / tests.effective as f64
    };
    let triggered = catalog
        .mapped_rules
        .iter()
        .filter(|r| tests.triggered_rules.contains(r))
        .count() as i64;
    let rule_coverage = if catalog.mapped_rules.is_empty() {
        0.0
    } else {
        triggered as f64 / catalog.mapped_rules.len() as f64
    };
    let countermeasures = catalog.countermeasures.min(5) as f64 / 5.0;
    let (recency, days) = match (tests.effective, tests.latest_validated_at) {
        (n, Some(latest)) if n > 0 => {
            let days = (as_of - latest) as f64 / MICROS_PER_DAY as f64;
            (0.5_f64.powf(days / 90.0), days)
        }
        _ => (0.0, 0.0),
    };
    let score =
        100.0 * (0.5 * detection + 0.2 * rule_coverage + 0.1 * countermeasures + 0.2 * recency);
    let status = if tests.total == 0 {
        Status::Untested
    } else if tests.effective == 0 {
        Status::InProgress
    } else if score < 40.0 {
        Status::Gap
    } else if score < 75.0 {
        Status::Partial
    } else {
        Status::Covered
    };
    Scored {
        technique_id: catalog.technique_id.clone(),
        name: catalog.name.clone(),
        tactics: catalog.tactics.clone(),
        platforms: catalog.platforms.clone(),
        actor_count: catalog.actor_count,
        detection,
        rule_coverage,
        countermeasures,
        recency,
        score,
        status,
        effective_tests: tests.effective,
        total_tests: tests.total,
        mapped_rules: catalog.mapped_rules.len() as i64,
        triggered_rules: triggered,
        countermeasure_count: catalog.countermeasures,
        days_since_validation: days,
    }
}

/// Mean of scores; 0 for none.
pub fn mean<'a>(scores: impl Iterator<Item = &'a Scored>) -> (f64, usize) {
    let (sum, n) = scores.fold((0.0, 0usize), |(s, n), x| (s + x.score, n + 1));
    (if n == 0 { 0.0 } else { sum / n as f64 }, n)
}

/// Gaps (untested or gap) in DESIGN order: lowest score, then most actors,
/// then ATT&CK id.
pub fn gaps<'a>(scores: impl Iterator<Item = &'a Scored>, limit: usize) -> Vec<&'a Scored> {
    let mut gaps: Vec<&Scored> = scores.filter(|s| s.status.is_gap()).collect();
    gaps.sort_by(|a, b| {
        a.score
            .total_cmp(&b.score)
            .then(b.actor_count.cmp(&a.actor_count))
            .then(a.technique_id.cmp(&b.technique_id))
    });
    gaps.truncate(limit);
    gaps
}

/// Counts of techniques per status.
pub fn status_counts<'a>(scores: impl Iterator<Item = &'a Scored>) -> BTreeMap<Status, i64> {
    let mut counts = BTreeMap::new();
    for s in scores {
        *counts.entry(s.status).or_default() += 1;
    }
    counts
}

/// The organization score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub score: f64,
    pub mean_all: f64,
    pub mean_critical: f64,
    pub technique_count: i64,
    pub critical_count: i64,
}

/// 0.5 × mean(all) + 0.5 × mean(critical), or mean(all) with no critical
/// technique; critical = used by at least `k` actors.
pub fn organization(scores: &[Scored], k: i64) -> Organization {
    let (mean_all, n) = mean(scores.iter());
    let (mean_critical, critical) = mean(scores.iter().filter(|s| s.actor_count >= k));
    let score = if critical == 0 {
        mean_all
    } else {
        0.5 * mean_all + 0.5 * mean_critical
    };
    Organization {
        score,
        mean_all,
        mean_critical,
        technique_count: n as i64,
        critical_count: critical as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Micros = MICROS_PER_DAY;

    fn catalog(rules: &[&str], countermeasures: i64) -> CatalogSide {
        CatalogSide {
            technique_id: "T1".into(),
            mapped_rules: rules.iter().map(|r| r.to_string()).collect(),
            countermeasures,
            ..Default::default()
        }
    }

    #[test]
    fn components_follow_the_model() {
        let tests = TestSide {
            total: 3,
            effective: 2,
            blocked: 1,
            logged: 1,
            latest_validated_at: Some(0),
            triggered_rules: vec!["a".into(), "x".into()],
            ..Default::default()
        };
        let s = score(&catalog(&["a", "b", "c"], 7), &tests, 90 * DAY);
        assert!((s.detection - 0.625).abs() < 1e-12);
        assert!((s.rule_coverage - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.countermeasures, 1.0);
        assert!((s.recency - 0.5).abs() < 1e-12, "one half-life");
        let expected = 100.0 * (0.5 * 0.625 + 0.2 / 3.0 + 0.1 + 0.2 * 0.5);
        assert!((s.score - expected).abs() < 1e-9);
        assert_eq!(s.status, Status::Partial);
    }

    #[test]
    fn statuses_of_the_edge_cases() {
        let none = score(&catalog(&[], 5), &TestSide::default(), 0);
        assert_eq!(
            (none.status, none.score),
            (Status::Untested, 10.0),
            "countermeasures alone"
        );
        let pending = score(
            &catalog(&[], 0),
            &TestSide {
                total: 2,
                ..Default::default()
            },
            0,
        );
        assert_eq!((pending.status, pending.recency), (Status::InProgress, 0.0));
        let full = TestSide {
            total: 1,
            effective: 1,
            blocked: 1,
            latest_validated_at: Some(0),
            ..Default::default()
        };
        // 50 + 0 + 10 + 20 = 80 at day 0.
        assert_eq!(score(&catalog(&[], 5), &full, 0).status, Status::Covered);
    }

    #[test]
    fn organization_weighs_critical_techniques_and_gaps_sort() {
        let mk = |id: &str, score: f64, actors: i64, status: Status| Scored {
            technique_id: id.into(),
            name: String::new(),
            tactics: vec![],
            platforms: vec![],
            actor_count: actors,
            detection: 0.0,
            rule_coverage: 0.0,
            countermeasures: 0.0,
            recency: 0.0,
            score,
            status,
            effective_tests: 0,
            total_tests: 0,
            mapped_rules: 0,
            triggered_rules: 0,
            countermeasure_count: 0,
            days_since_validation: 0.0,
        };
        let scores = vec![
            mk("T3", 10.0, 12, Status::Gap),
            mk("T1", 10.0, 3, Status::Untested),
            mk("T2", 90.0, 0, Status::Covered),
            mk("T4", 10.0, 3, Status::Gap),
        ];
        let org = organization(&scores, 10);
        assert!((org.score - (0.5 * 30.0 + 0.5 * 10.0)).abs() < 1e-12);
        assert_eq!(
            organization(&scores, 100).score,
            30.0,
            "no critical technique"
        );
        let order: Vec<&str> = gaps(scores.iter(), 10)
            .iter()
            .map(|s| s.technique_id.as_str())
            .collect();
        assert_eq!(order, ["T3", "T1", "T4"]);
    }
}
