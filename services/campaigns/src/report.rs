//! A campaign report: per test the technique, tactics, outcome, time to
//! detect, triggered rules and remediation; a summary by tactic and
//! outcome; the same as Markdown.

use std::{collections::BTreeMap, fmt::Write};

use purple_api::{campaigns::v1 as pb, common::v1::Outcome};

use crate::{
    convert::{campaign_pb, remediation_pb, state_pb, tally},
    planner::ReportRow,
    store::campaigns::CampaignRow,
};

/// Builds the report.
pub fn build(campaign: CampaignRow, rows: Vec<ReportRow>) -> pb::GetCampaignReportResponse {
    let mut by_tactic: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    let rows: Vec<pb::ReportRow> = rows
        .into_iter()
        .map(|r| {
            let tactics = r
                .technique
                .as_ref()
                .map(|t| t.tactics.clone())
                .unwrap_or_default();
            let outcome = r.test.outcome.unwrap_or(Outcome::Unspecified);
            for tactic in &tactics {
                by_tactic
                    .entry(tactic.clone())
                    .or_default()
                    .push(outcome.key().unwrap_or("none"));
            }
            let ttd = match (r.test.executed_at, r.test.detected_at) {
                (Some(x), Some(d)) => (d - x) as f64 / 1e6,
                _ => 0.0,
            };
            pb::ReportRow {
                test_id: r.test.test_id,
                technique_id: r.test.technique_id,
                technique_name: r.technique.map(|t| t.name).unwrap_or_default(),
                tactics,
                state: state_pb(r.test.state) as i32,
                outcome: outcome as i32,
                time_to_detect_seconds: ttd,
                triggered_rule_ids: r.triggered_rule_ids,
                remediation: r.remediation.map(remediation_pb),
            }
        })
        .collect();
    let summary: Vec<pb::ReportSummaryRow> = by_tactic
        .into_iter()
        .map(|(tactic, outcomes)| pb::ReportSummaryRow {
            tests: outcomes.len() as i32,
            by_outcome: tally(outcomes.iter().map(|o| (*o, 1))),
            tactic,
        })
        .collect();
    let markdown = markdown(&campaign, &rows, &summary);
    pb::GetCampaignReportResponse {
        campaign: Some(campaign_pb(campaign)),
        rows,
        summary,
        markdown,
    }
}

fn outcome_name(outcome: i32) -> &'static str {
    Outcome::try_from(outcome)
        .ok()
        .and_then(Outcome::key)
        .unwrap_or("—")
}

fn markdown(
    campaign: &CampaignRow,
    rows: &[pb::ReportRow],
    summary: &[pb::ReportSummaryRow],
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Campaign report: {}\n", campaign.name);
    if !campaign.description.is_empty() {
        let _ = writeln!(md, "{}\n", campaign.description);
    }
    let _ = writeln!(
        md,
        "| Technique | Name | Tactics | State | Outcome | Time to detect (s) | Rules triggered | Remediation |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for r in rows {
        let state = pb::TestState::try_from(r.state)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("TEST_STATE_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let ttd = if r.time_to_detect_seconds > 0.0 {
            format!("{:.0}", r.time_to_detect_seconds)
        } else {
            "—".into()
        };
        let remediation = r.remediation.as_ref().map_or("—".to_owned(), |m| {
            pb::RemediationState::try_from(m.state)
                .map(|s| {
                    s.as_str_name()
                        .trim_start_matches("REMEDIATION_STATE_")
                        .to_ascii_lowercase()
                })
                .unwrap_or_default()
        });
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.technique_id,
            r.technique_name.replace('|', "\\|"),
            r.tactics.join(", "),
            state,
            outcome_name(r.outcome),
            ttd,
            r.triggered_rule_ids.len(),
            remediation
        );
    }
    let _ = writeln!(
        md,
        "\n## Summary by tactic\n\n| Tactic | Tests | Blocked | Detected | Logged | Not detected |\n|---|---|---|---|---|---|"
    );
    for s in summary {
        let n = |k: &str| s.by_outcome.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            s.tactic,
            s.tests,
            n("blocked"),
            n("detected"),
            n("logged"),
            n("not_detected")
        );
    }
    md
}
