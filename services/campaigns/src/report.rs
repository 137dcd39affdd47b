//! Campaign progress and reports. Progress: per campaign, its tests by
//! state and outcome and the share validated, for many campaigns in one
//! statement. A report: per test the technique, tactics, outcome, time to
//! detect, triggered rules and remediation (one chunked ingest call and one
//! statement each for rules and remediations), a summary by tactic and
//! outcome, and the same as Markdown.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write,
};

use purple_api::{batch::check_ids, common::v1::Outcome};

use crate::{
    campaign::Campaigns,
    clients::PeerClients,
    domain::{Remediation, State, TechniqueDetail, TestRow},
    error::CampaignError,
    store::{CampaignStore, campaigns::CampaignRow},
};

/// Where one campaign stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    pub campaign_id: String,
    pub total: i64,
    /// Tests per state name.
    pub by_state: BTreeMap<String, i64>,
    /// Tests per outcome name (tests with an outcome only).
    pub by_outcome: BTreeMap<String, i64>,
    /// Share of non-cancelled tests that are validated, 0-100.
    pub percent_complete: f64,
}

/// One test of a report.
pub struct ReportLine {
    pub test: TestRow,
    pub technique: Option<TechniqueDetail>,
    /// (source, rule id).
    pub triggered_rules: Vec<(String, String)>,
    pub remediation: Option<Remediation>,
}

impl ReportLine {
    /// Seconds from execution to detection; 0 when either is missing.
    pub fn time_to_detect_seconds(&self) -> f64 {
        match (self.test.executed_at, self.test.detected_at) {
            (Some(x), Some(d)) => d.seconds_since(x),
            _ => 0.0,
        }
    }

    /// The tactics of its technique.
    pub fn tactics(&self) -> &[String] {
        self.technique
            .as_ref()
            .map_or(&[], |t| t.tactics.as_slice())
    }
}

/// A campaign report.
pub struct Report {
    pub campaign: CampaignRow,
    pub lines: Vec<ReportLine>,
    /// Per tactic: tests, and tests per outcome name ("none" without one).
    pub summary: BTreeMap<String, BTreeMap<String, i64>>,
    pub markdown: String,
}

/// Progress and reports.
#[derive(Clone, Debug)]
pub struct Reports {
    pub(crate) store: CampaignStore,
    pub(crate) peers: PeerClients,
    pub(crate) campaigns: Campaigns,
}

/// Share of non-cancelled tests that are validated, 0-100.
pub fn percent_complete(counts: &[(String, Option<String>, i64)]) -> f64 {
    let live: i64 = counts
        .iter()
        .filter(|(s, _, _)| s != State::Cancelled.key())
        .map(|(_, _, n)| n)
        .sum();
    let done: i64 = counts
        .iter()
        .filter(|(s, _, _)| s == State::Validated.key())
        .map(|(_, _, n)| n)
        .sum();
    if live == 0 {
        0.0
    } else {
        100.0 * done as f64 / live as f64
    }
}

fn tally<'a>(items: impl Iterator<Item = (&'a str, i64)>) -> BTreeMap<String, i64> {
    let mut map = BTreeMap::new();
    for (name, n) in items {
        *map.entry(name.to_owned()).or_default() += n;
    }
    map
}

impl Reports {
    /// Progress of many campaigns in one statement; unknown ids are left
    /// out.
    pub async fn progress(&self, ids: &[String]) -> Result<Vec<Progress>, CampaignError> {
        check_ids("campaign_ids", ids)?;
        let counts = self.store.progress(ids).await?;
        Ok(counts
            .into_iter()
            .map(|(campaign_id, rows)| Progress {
                campaign_id,
                total: rows.iter().map(|(_, _, n)| *n).sum(),
                by_state: tally(rows.iter().map(|(s, _, n)| (s.as_str(), *n))),
                by_outcome: tally(
                    rows.iter()
                        .filter_map(|(_, o, n)| o.as_deref().map(|o| (o, *n))),
                ),
                percent_complete: percent_complete(&rows),
            })
            .collect())
    }

    /// A campaign's report.
    pub async fn report(&self, campaign_id: &str) -> Result<Report, CampaignError> {
        let campaign = self.campaigns.one(campaign_id).await?;
        let tests = self
            .store
            .tests_of_campaigns(&[campaign_id.to_owned()])
            .await?;
        let test_ids: Vec<String> = tests.iter().map(|t| t.test_id.clone()).collect();
        let techniques: Vec<String> = tests
            .iter()
            .map(|t| t.technique_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let (details, rules, remediations) = futures::try_join!(
            self.peers.technique_details(&techniques),
            async { Ok(self.store.triggered_rules(&test_ids).await?) },
            async { Ok(self.store.remediations_of_tests(&test_ids).await?) },
        )?;
        let mut remediations: BTreeMap<String, Remediation> = remediations
            .into_iter()
            .map(|r| (r.test_id.clone(), r))
            .collect();
        let lines: Vec<ReportLine> = tests
            .into_iter()
            .map(|test| ReportLine {
                technique: details.get(&test.technique_id).cloned(),
                triggered_rules: rules.get(&test.test_id).cloned().unwrap_or_default(),
                remediation: remediations.remove(&test.test_id),
                test,
            })
            .collect();
        let mut summary: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for line in &lines {
            let outcome = line.test.outcome.and_then(Outcome::key).unwrap_or("none");
            for tactic in line.tactics() {
                *summary
                    .entry(tactic.clone())
                    .or_default()
                    .entry(outcome.to_owned())
                    .or_default() += 1;
            }
        }
        let markdown = markdown(&campaign, &lines, &summary);
        Ok(Report {
            campaign,
            lines,
            summary,
            markdown,
        })
    }
}

fn markdown(
    campaign: &CampaignRow,
    lines: &[ReportLine],
    summary: &BTreeMap<String, BTreeMap<String, i64>>,
) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut md = String::new();
    let _ = writeln!(md, "# Campaign report: {}\n", cell(&campaign.name));
    if !campaign.description.is_empty() {
        let _ = writeln!(md, "{}\n", campaign.description);
    }
    let _ = writeln!(
        md,
        "| Technique | Name | Tactics | State | Outcome | Time to detect (s) | Rules triggered | Remediation |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for line in lines {
        let ttd = line.time_to_detect_seconds();
        let ttd = if ttd > 0.0 {
            format!("{ttd:.0}")
        } else {
            "—".into()
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            line.test.technique_id,
            cell(line.technique.as_ref().map_or("", |t| t.name.as_str())),
            line.tactics().join(", "),
            line.test.state.key(),
            line.test.outcome.and_then(Outcome::key).unwrap_or("—"),
            ttd,
            line.triggered_rules.len(),
            line.remediation.as_ref().map_or("—", |r| r.state.key()),
        );
    }
    let _ = writeln!(
        md,
        "\n## Summary by tactic\n\n| Tactic | Tests | Blocked | Detected | Logged | Not detected |\n|---|---|---|---|---|---|"
    );
    for (tactic, outcomes) in summary {
        let n = |k: &str| outcomes.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            tactic,
            outcomes.values().sum::<i64>(),
            n("blocked"),
            n("detected"),
            n("logged"),
            n("not_detected")
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_ignores_cancelled_tests() {
        let counts = vec![
            ("validated".into(), Some("blocked".into()), 1),
            ("planned".into(), None, 2),
            ("cancelled".into(), None, 5),
        ];
        assert!((percent_complete(&counts) - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(percent_complete(&[]), 0.0);
    }
}
