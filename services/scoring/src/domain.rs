//! Scoring model v1 (docs/design.md §4), pure: one technique's score from
//! its catalogue and test inputs, and the aggregates over many (tactics,
//! threat actors, the organization, snapshot comparisons). Everything is
//! computed in double precision; rounding to one decimal happens at the
//! API, and status thresholds use the unrounded score.

use std::collections::{BTreeMap, HashMap};

use purple_runtime::time::Micros;
use serde::{Deserialize, Serialize};

/// A technique as the catalogue lists it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TechniqueInfo {
    pub technique_id: String,
    pub name: String,
    /// Short names of the tactics of its kill-chain phases.
    pub tactics: Vec<String>,
    pub platforms: Vec<String>,
}

/// A live tactic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TacticInfo {
    pub tactic_id: String,
    pub short_name: String,
    pub name: String,
}

/// A threat actor.
#[derive(Clone, Debug, PartialEq)]
pub struct ActorInfo {
    pub actor_id: String,
    pub name: String,
}

/// A technique as scoring needs it from the catalogue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CatalogSide {
    pub technique_id: String,
    pub name: String,
    pub tactics: Vec<String>,
    pub platforms: Vec<String>,
    /// Enabled rules mapped directly to the technique, as rule keys
    /// ([`rule_key`]).
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
    /// Rules triggered on effective tests, as rule keys ([`rule_key`]).
    pub triggered_rules: Vec<String>,
}

/// A rule's key, `source:rule_id`; an empty source (a detection result
/// that names none) stands for the id in any source.
pub fn rule_key(source: &str, rule_id: &str) -> String {
    format!("{source}:{rule_id}")
}

/// A rule key's source and id; a key without a source (no `:`) names the
/// id in any source.
fn split_rule_key(key: &str) -> (&str, &str) {
    key.split_once(':').unwrap_or(("", key))
}

/// How many of `mapped` were triggered: a triggered rule is the mapped one
/// when it has the same id, and the same source unless either names none.
/// One pass over each list (a technique can have hundreds of each, and the
/// board scores every technique).
fn triggered_count(mapped: &[String], triggered: &[String]) -> i64 {
    if mapped.is_empty() || triggered.is_empty() {
        return 0;
    }
    // Per triggered id: whether one of them names no source, and the
    // sources the others name.
    let mut by_id: HashMap<&str, (bool, Vec<&str>)> = HashMap::with_capacity(triggered.len());
    for key in triggered {
        let (source, id) = split_rule_key(key);
        let entry = by_id.entry(id).or_default();
        if source.is_empty() {
            entry.0 = true;
        } else {
            entry.1.push(source);
        }
    }
    mapped
        .iter()
        .filter(|key| {
            let (source, id) = split_rule_key(key);
            by_id.get(id).is_some_and(|(any_source, sources)| {
                *any_source || source.is_empty() || sources.contains(&source)
            })
        })
        .count() as i64
}

/// A scored technique: the components, the counts behind them, the status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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

#[cfg(test)]
impl Scored {
    /// A technique's score and status, the rest default: for unit tests.
    pub fn stub(technique_id: &str, score: f64, status: Status) -> Self {
        Self {
            technique_id: technique_id.into(),
            score,
            status,
            ..Self::default()
        }
    }
}

/// The coverage status.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Status {
    #[default]
    Untested,
    InProgress,
    Gap,
    Partial,
    Covered,
}

impl Status {
    /// Every status, worst first.
    pub const ALL: [Status; 5] = [
        Status::Untested,
        Status::InProgress,
        Status::Gap,
        Status::Partial,
        Status::Covered,
    ];

    /// The shared vocabulary key (`untested`, `in_progress`, `gap`,
    /// `partial`, `covered`), as snapshots store it.
    pub fn key(self) -> &'static str {
        match self {
            Status::Untested => "untested",
            Status::InProgress => "in_progress",
            Status::Gap => "gap",
            Status::Partial => "partial",
            Status::Covered => "covered",
        }
    }

    /// The status of a stored key.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.key() == key)
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
    let triggered = triggered_count(&catalog.mapped_rules, &tests.triggered_rules);
    let rule_coverage = if catalog.mapped_rules.is_empty() {
        0.0
    } else {
        triggered as f64 / catalog.mapped_rules.len() as f64
    };
    let countermeasures = catalog.countermeasures.min(5) as f64 / 5.0;
    let (recency, days) = match (tests.effective, tests.latest_validated_at) {
        (n, Some(latest)) if n > 0 => {
            let days = as_of.days_since(latest);
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

/// Gaps (untested or gap) in docs/design.md §4 order: lowest score, then most actors,
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

/// The mean score of each tactic's live techniques (a technique counts in
/// every tactic of its kill-chain phases), 0 for a tactic with none, with
/// the number of techniques.
pub fn tactic_scores(tactics: &[TacticInfo], scores: &[Scored]) -> Vec<(TacticInfo, f64, usize)> {
    tactics
        .iter()
        .map(|tactic| {
            let (mean, n) = mean(
                scores
                    .iter()
                    .filter(|s| s.tactics.contains(&tactic.short_name)),
            );
            (tactic.clone(), mean, n)
        })
        .collect()
}

/// A threat actor's coverage: the mean over the live techniques it uses,
/// the share of them covered, and its gaps in gap order.
#[derive(Clone, Debug, PartialEq)]
pub struct ActorCoverage {
    pub actor: ActorInfo,
    pub score: f64,
    pub covered_ratio: f64,
    pub technique_count: usize,
    pub gaps: Vec<Scored>,
}

/// The coverage of one actor over the scores of its live techniques.
pub fn actor_coverage(actor: ActorInfo, scores: &[&Scored], gap_limit: usize) -> ActorCoverage {
    let (score, n) = mean(scores.iter().copied());
    let covered = scores
        .iter()
        .filter(|s| s.status == Status::Covered)
        .count();
    ActorCoverage {
        actor,
        score,
        covered_ratio: if n == 0 {
            0.0
        } else {
            covered as f64 / n as f64
        },
        technique_count: n,
        gaps: gaps(scores.iter().copied(), gap_limit)
            .into_iter()
            .cloned()
            .collect(),
    }
}

/// How a technique moved between two snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Improved,
    Regressed,
    Unchanged,
}

/// One technique in two snapshots, as shown: scores rounded to one decimal
/// (a technique absent from a snapshot counts as 0 there), the delta the
/// difference of the rounded scores, rounded again, so a change below the
/// displayed precision is no change (docs/design.md §4).
#[derive(Clone, Debug, PartialEq)]
pub struct TechniqueDelta {
    pub technique_id: String,
    pub base: Option<(f64, Status)>,
    pub target: Option<(f64, Status)>,
    pub base_score: f64,
    pub target_score: f64,
    pub delta: f64,
    pub change: Change,
}

/// Compares one technique's two snapshot rows.
pub fn compare(
    technique_id: String,
    base: Option<(f64, Status)>,
    target: Option<(f64, Status)>,
) -> TechniqueDelta {
    let base_score = base.map_or(0.0, |(s, _)| round1(s));
    let target_score = target.map_or(0.0, |(s, _)| round1(s));
    let delta = round1(target_score - base_score);
    let change = if delta > 0.0 {
        Change::Improved
    } else if delta < 0.0 {
        Change::Regressed
    } else {
        Change::Unchanged
    };
    TechniqueDelta {
        technique_id,
        base,
        target,
        base_score,
        target_score,
        delta,
        change,
    }
}

#[cfg(test)]
mod tests {
    use purple_runtime::time::MICROS_PER_DAY;

    use super::*;

    const DAY: i64 = MICROS_PER_DAY;

    fn catalog(rules: &[&str], countermeasures: i64) -> CatalogSide {
        CatalogSide {
            technique_id: "T1".into(),
            mapped_rules: rules.iter().map(std::string::ToString::to_string).collect(),
            countermeasures,
            ..Default::default()
        }
    }

    #[test]
    fn triggered_rules_match_by_id_and_source_unless_either_names_none() {
        // The definition, pair by pair.
        let same = |t: &str, m: &str| {
            let ((ts, ti), (ms, mi)) = (split_rule_key(t), split_rule_key(m));
            ti == mi && (ts == ms || ts.is_empty() || ms.is_empty())
        };
        let keys = [
            "sigma:r1",
            "elastic:r1",
            ":r1",
            "r1",
            "sigma:r2",
            ":r2",
            "elastic:r3",
            "sigma:r4",
        ];
        // Every mapped list and triggered list drawn from the keys (as
        // bit masks), duplicates in the mapped list included.
        for mapped_mask in 0u32..256 {
            for triggered_mask in 0u32..256 {
                let pick = |mask: u32| -> Vec<String> {
                    keys.iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << i) != 0)
                        .map(|(_, k)| (*k).to_owned())
                        .collect()
                };
                let mut mapped = pick(mapped_mask);
                mapped.extend(pick(mapped_mask & 0b1001));
                let triggered = pick(triggered_mask);
                let expected = mapped
                    .iter()
                    .filter(|m| triggered.iter().any(|t| same(t, m)))
                    .count() as i64;
                assert_eq!(
                    triggered_count(&mapped, &triggered),
                    expected,
                    "{mapped:?} {triggered:?}"
                );
            }
        }
    }

    #[test]
    fn components_follow_the_model() {
        let tests = TestSide {
            total: 3,
            effective: 2,
            blocked: 1,
            logged: 1,
            latest_validated_at: Some(Micros::EPOCH),
            triggered_rules: vec!["a".into(), "x".into()],
            ..Default::default()
        };
        let s = score(
            &catalog(&["a", "b", "c"], 7),
            &tests,
            Micros::from_micros(90 * DAY),
        );
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
        let none = score(&catalog(&[], 5), &TestSide::default(), Micros::EPOCH);
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
            Micros::EPOCH,
        );
        assert_eq!((pending.status, pending.recency), (Status::InProgress, 0.0));
        let full = TestSide {
            total: 1,
            effective: 1,
            blocked: 1,
            latest_validated_at: Some(Micros::EPOCH),
            ..Default::default()
        };
        // 50 + 0 + 10 + 20 = 80 at day 0.
        assert_eq!(
            score(&catalog(&[], 5), &full, Micros::EPOCH).status,
            Status::Covered
        );
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

    #[test]
    fn snapshot_deltas_compare_what_users_see() {
        // 40.04 and 40.01 both show as 40.0: no change.
        let same = compare(
            "T1".into(),
            Some((40.04, Status::Partial)),
            Some((40.01, Status::Partial)),
        );
        assert_eq!((same.delta, same.change), (0.0, Change::Unchanged));
        // 40.04 -> 40.06 shows as 40.0 -> 40.1: improved by 0.1.
        let up = compare(
            "T1".into(),
            Some((40.04, Status::Partial)),
            Some((40.06, Status::Partial)),
        );
        assert_eq!((up.delta, up.change), (0.1, Change::Improved));
        // Absent from the target counts as 0 there.
        let gone = compare("T1".into(), Some((12.0, Status::Gap)), None);
        assert_eq!(
            (gone.target_score, gone.delta, gone.change),
            (0.0, -12.0, Change::Regressed)
        );
    }
}
