//! The threat-informed plan (docs/design.md §4, "Plan"): every candidate
//! technique gets a priority, the sum of weighted reasons — recent intel,
//! known exploited vulnerabilities and ransomware, the actors using it,
//! how weak its coverage is, how long since it was validated, mapped rules
//! never seen to trigger, countermeasures to validate, and a regression
//! since the latest snapshot — and the plan is the highest priorities,
//! each with the reasons that ranked it.

use std::collections::BTreeMap;

use purple_runtime::time::Micros;

use crate::domain::{Scored, Status};

/// The weight of each reason; the defaults are the design's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    pub intel: f64,
    pub kev: f64,
    pub ransomware: f64,
    pub actors: f64,
    pub weakness: f64,
    pub staleness: f64,
    pub rules: f64,
    pub countermeasures: f64,
    pub regression: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            intel: 20.0,
            kev: 15.0,
            ransomware: 10.0,
            actors: 15.0,
            weakness: 25.0,
            staleness: 10.0,
            rules: 5.0,
            countermeasures: 5.0,
            regression: 20.0,
        }
    }
}

impl Weights {
    /// The largest weight a request may set.
    pub const MAX: f64 = 1_000.0;

    /// The sum of every weight: the highest priority a technique can have.
    pub fn total(&self) -> f64 {
        self.intel
            + self.kev
            + self.ransomware
            + self.actors
            + self.weakness
            + self.staleness
            + self.rules
            + self.countermeasures
            + self.regression
    }
}

/// The counts at which the intel, KEV, ransomware and actor factors reach
/// one half: each factor is n / (n + half), which grows with every report,
/// CVE or actor and never saturates, so the techniques most threatened
/// stay apart (with a cap, most of ATT&CK would tie at the cap).
pub const INTEL_HALF: i64 = 2;
pub const KEV_HALF: i64 = 5;
pub const RANSOMWARE_HALF: i64 = 2;
pub const ACTORS_HALF: i64 = 10;

/// n / (n + half); 0 for none.
pub fn saturating(n: i64, half: i64) -> f64 {
    let n = n.max(0) as f64;
    n / (n + half as f64)
}

/// What ingest knows of a technique's threat (GetThreatSignals).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signals {
    pub recent_reports: i64,
    pub latest_title: Option<String>,
    pub kev_cves: i64,
    pub ransomware_cves: i64,
    pub actor_ids: Vec<String>,
}

/// A status the latest snapshot recorded, with its label.
#[derive(Clone, Debug, PartialEq)]
pub struct Previous {
    pub status: Status,
    pub label: String,
}

/// One weighted reason.
#[derive(Clone, Debug, PartialEq)]
pub struct Reason {
    pub reason: &'static str,
    pub weight: f64,
    pub factor: f64,
    pub detail: String,
}

impl Reason {
    /// What it adds to the priority.
    pub fn contribution(&self) -> f64 {
        self.weight * self.factor
    }
}

/// One technique in the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub score: Scored,
    pub priority: f64,
    /// Non-zero contributions, largest first (ties: reason name).
    pub reasons: Vec<Reason>,
    pub actor_ids: Vec<String>,
}

/// Whether going from `before` to `after` is a regression: the status went
/// down from one that had been assessed (gap or better). An untested
/// technique that gets tests is no regression, nor is a cancelled plan.
pub fn is_regression(before: Status, after: Status) -> bool {
    before >= Status::Gap && after < before
}

/// The reasons of one technique, zero ones included.
pub fn reasons(
    s: &Scored,
    signals: &Signals,
    previous: Option<&Previous>,
    weights: &Weights,
    window_start: Micros,
) -> Vec<Reason> {
    let mut out = Vec::with_capacity(9);
    let since = window_start.datetime().format("%Y-%m-%d");
    out.push(Reason {
        reason: "intel",
        weight: weights.intel,
        factor: saturating(signals.recent_reports, INTEL_HALF),
        detail: match (&signals.latest_title, signals.recent_reports) {
            (_, 0) | (None, _) => format!("no intel report seen since {since}"),
            (Some(title), n) => {
                format!("named by {n} intel reports seen since {since} (latest: {title})")
            }
        },
    });
    out.push(Reason {
        reason: "kev",
        weight: weights.kev,
        factor: saturating(signals.kev_cves, KEV_HALF),
        detail: format!(
            "{} known exploited vulnerabilities (CISA KEV) map to it",
            signals.kev_cves
        ),
    });
    out.push(Reason {
        reason: "ransomware",
        weight: weights.ransomware,
        factor: saturating(signals.ransomware_cves, RANSOMWARE_HALF),
        detail: format!(
            "{} of them used in ransomware campaigns",
            signals.ransomware_cves
        ),
    });
    let shown: Vec<&str> = signals
        .actor_ids
        .iter()
        .take(5)
        .map(String::as_str)
        .collect();
    let more = signals.actor_ids.len().saturating_sub(shown.len());
    out.push(Reason {
        reason: "actors",
        weight: weights.actors,
        factor: saturating(signals.actor_ids.len() as i64, ACTORS_HALF),
        detail: format!(
            "used by {} threat actors{}{}",
            signals.actor_ids.len(),
            if shown.is_empty() {
                String::new()
            } else {
                format!(" ({})", shown.join(", "))
            },
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ),
    });
    out.push(Reason {
        reason: "weakness",
        weight: weights.weakness,
        factor: (1.0 - s.score / 100.0).clamp(0.0, 1.0),
        detail: format!("score {:.1} ({})", s.score, s.status.key()),
    });
    let (factor, detail) = if s.effective_tests == 0 {
        (1.0, "never validated".to_owned())
    } else {
        (
            s.days_since_validation.clamp(0.0, 365.0) / 365.0,
            format!("last validated {:.0} days ago", s.days_since_validation),
        )
    };
    out.push(Reason {
        reason: "staleness",
        weight: weights.staleness,
        factor,
        detail,
    });
    let (factor, detail) = if s.mapped_rules == 0 {
        (1.0, "no enabled detection rule is mapped to it".to_owned())
    } else {
        (
            1.0 - s.rule_coverage,
            format!(
                "{} of {} mapped detection rules not yet seen to trigger",
                s.mapped_rules - s.triggered_rules,
                s.mapped_rules
            ),
        )
    };
    out.push(Reason {
        reason: "rules",
        weight: weights.rules,
        factor,
        detail,
    });
    out.push(Reason {
        reason: "countermeasures",
        weight: weights.countermeasures,
        factor: s.countermeasures,
        detail: format!(
            "{} D3FEND countermeasures available to validate",
            s.countermeasure_count
        ),
    });
    let regressed = previous.filter(|p| is_regression(p.status, s.status));
    out.push(Reason {
        reason: "regression",
        weight: weights.regression,
        factor: if regressed.is_some() { 1.0 } else { 0.0 },
        detail: match regressed {
            Some(p) => format!(
                "went from {} to {} since snapshot {:?}",
                p.status.key(),
                s.status.key(),
                p.label
            ),
            None => "no regression since the latest snapshot".to_owned(),
        },
    });
    out
}

/// Ranks `candidates` and returns the first `limit`, highest priority
/// first (ties: ATT&CK id).
pub fn rank(
    candidates: &[&Scored],
    signals: &BTreeMap<String, Signals>,
    previous: &BTreeMap<String, Previous>,
    weights: &Weights,
    window_start: Micros,
    limit: usize,
) -> Vec<Planned> {
    let none = Signals::default();
    let mut planned: Vec<Planned> = candidates
        .iter()
        .map(|s| {
            let signal = signals.get(&s.technique_id).unwrap_or(&none);
            let mut reasons = reasons(
                s,
                signal,
                previous.get(&s.technique_id),
                weights,
                window_start,
            );
            let priority = reasons.iter().map(Reason::contribution).sum();
            reasons.retain(|r| r.contribution() > 0.0);
            reasons.sort_by(|a, b| {
                b.contribution()
                    .total_cmp(&a.contribution())
                    .then(a.reason.cmp(b.reason))
            });
            Planned {
                score: (*s).clone(),
                priority,
                reasons,
                actor_ids: signal.actor_ids.clone(),
            }
        })
        .collect();
    planned.sort_by(|a, b| {
        b.priority
            .total_cmp(&a.priority)
            .then_with(|| a.score.technique_id.cmp(&b.score.technique_id))
    });
    planned.truncate(limit);
    planned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(id: &str, score: f64, status: Status) -> Scored {
        Scored::stub(id, score, status)
    }

    #[test]
    fn a_regression_is_a_status_going_down_from_an_assessed_one() {
        assert!(is_regression(Status::Covered, Status::Partial));
        assert!(is_regression(Status::Gap, Status::Untested));
        assert!(!is_regression(Status::InProgress, Status::Untested));
        assert!(!is_regression(Status::Partial, Status::Covered));
    }

    #[test]
    fn priorities_are_weighted_sums_and_ties_go_by_id() {
        let a = scored("T1002", 0.0, Status::Untested);
        let b = scored("T1001", 0.0, Status::Untested);
        let mut signals = BTreeMap::new();
        signals.insert(
            "T1002".to_owned(),
            Signals {
                recent_reports: 6,
                latest_title: Some("r".into()),
                kev_cves: 1,
                ransomware_cves: 1,
                actor_ids: vec!["G0001".into(); 5],
            },
        );
        let w = Weights::default();
        let plan = rank(&[&a, &b], &signals, &BTreeMap::new(), &w, Micros::EPOCH, 10);
        // Untested, no rules, no countermeasures: weakness + staleness + rules.
        let base = w.weakness + w.staleness + w.rules;
        assert_eq!(plan[1].score.technique_id, "T1001");
        assert!((plan[1].priority - base).abs() < 1e-9);
        let expected =
            base + w.intel * 6.0 / 8.0 + w.kev / 6.0 + w.ransomware / 3.0 + w.actors / 3.0;
        assert!(
            (plan[0].priority - expected).abs() < 1e-9,
            "{}",
            plan[0].priority
        );
        assert_eq!(plan[0].reasons[0].reason, "weakness");
    }
}
