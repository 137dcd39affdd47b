//! A generated program history in the format of docs/formats/history.md,
//! and its import measured: how the benchmarks load their tests (through
//! the supported path, never by SQL into a service's tables).

use std::time::{Duration, Instant};

use futures::StreamExt;
use purple_api::campaigns::v1::{
    ImportHistoryRequest, ImportHistoryResponse, campaigns_service_client::CampaignsServiceClient,
};
use purple_runtime::time::Micros;
use serde_json::json;

use super::Authed;

const DAY: i64 = 86_400_000_000;
const HOUR: i64 = 3_600_000_000;

/// A deterministic pseudo-random stream (no dependency for a benchmark).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The shape of a generated history.
pub struct Shape {
    pub tests: usize,
    /// Results per validated test.
    pub results_per_validated: usize,
    pub remediations: usize,
}

/// What was generated.
pub struct Generated {
    pub ndjson: String,
    pub tests: usize,
    pub validated: usize,
    pub results: usize,
    pub remediations: usize,
}

fn rfc(at: Micros) -> String {
    at.datetime()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Tests per generated campaign: test `i` is in campaign `bench-c{i / 100}`.
pub const TESTS_PER_CAMPAIGN: usize = 100;

/// A year of tests over `techniques`, in campaigns of
/// [`TESTS_PER_CAMPAIGN`], each validated test with detection
/// results on `rules` (Sigma rule ids): every fifth test retests the one
/// before; 60 % validated, outcomes uniform; some unvalidated ones
/// cancelled; remediations for the first validated logged or undetected
/// tests.
pub fn generate(shape: &Shape, techniques: &[String], rules: &[String], now: Micros) -> Generated {
    let mut rng = Lcg(7);
    let mut out = String::with_capacity(shape.tests * 600);
    for (user, role) in [
        ("lead", "purple_lead"),
        ("red", "red_tech"),
        ("blue", "blue_tech"),
    ] {
        out.push_str(&json!({"kind": "user", "user_id": user, "role": role}).to_string());
        out.push('\n');
    }
    for c in 0..shape.tests.div_ceil(TESTS_PER_CAMPAIGN) {
        let campaign = json!({"kind": "campaign", "campaign_id": format!("bench-c{c}"),
                              "name": format!("Campaign {c}"), "created_by": "lead",
                              "created_at": rfc(now - 400 * DAY)});
        out.push_str(&campaign.to_string());
        out.push('\n');
    }
    let outcomes = ["blocked", "detected", "logged", "not_detected"];
    let (mut validated_count, mut results, mut remediations) = (0, 0, 0);
    let mut previous: Option<(String, String)> = None;
    let mut results_text = String::new();
    let mut remediations_text = String::new();
    for i in 0..shape.tests {
        let test_id = format!("bench-{i}");
        let (technique, retest_of) = match (&previous, i % 5 == 4) {
            (Some((prev, technique)), true) => (technique.clone(), Some(prev.clone())),
            _ => (
                techniques[rng.next(techniques.len() as u64) as usize].clone(),
                None,
            ),
        };
        let created = now - 400 * DAY + i as i64;
        let validated = rng.next(10) < 6;
        let mut test = json!({
            "kind": "test", "test_id": test_id, "technique_id": technique,
            "campaign_id": format!("bench-c{}", i / TESTS_PER_CAMPAIGN),
            "red_assignee_id": "red", "blue_assignee_id": "blue",
            "created_at": rfc(created),
        });
        if let Some(of) = &retest_of {
            test["retest_of"] = json!(of);
        }
        if validated {
            validated_count += 1;
            let outcome = outcomes[rng.next(4) as usize];
            let executed = created + HOUR;
            let validated_at = now - (rng.next(365) as i64) * DAY - i as i64;
            test["state"] = json!("validated");
            test["outcome"] = json!(outcome);
            test["red_started_at"] = json!(rfc(created + HOUR / 2));
            test["executed_at"] = json!(rfc(executed));
            test["blue_started_at"] = json!(rfc(executed + HOUR / 2));
            if outcome == "blocked" || outcome == "detected" {
                let minutes = 1 + rng.next(120) as i64;
                test["detected_at"] = json!(rfc(executed + minutes * 60_000_000));
            }
            test["blue_completed_at"] = json!(rfc(executed + 3 * HOUR));
            test["validated_at"] = json!(rfc(validated_at));
            let base = rng.next(rules.len() as u64) as usize;
            for r in 0..shape.results_per_validated {
                let rule = &rules[(base + r) % rules.len()];
                results_text.push_str(
                    &json!({"kind": "detection_result", "test_id": test_id, "source": "sigma",
                            "rule_id": rule, "triggered": rng.next(2) == 1})
                    .to_string(),
                );
                results_text.push('\n');
                results += 1;
            }
            if (outcome == "logged" || outcome == "not_detected")
                && remediations < shape.remediations
            {
                remediations += 1;
                // Completed within a month, when the month is over.
                let completed = rng.next(2) == 1 && validated_at < now - 31 * DAY;
                let mut r = json!({
                    "kind": "remediation", "remediation_id": format!("rem-{i}"), "test_id": test_id,
                    "state": if completed { "completed" } else { "open" },
                    "opened_at": rfc(validated_at),
                });
                if completed {
                    r["started_at"] = json!(rfc(validated_at + HOUR));
                    r["completed_at"] = json!(rfc(validated_at + (1 + rng.next(30) as i64) * DAY));
                }
                remediations_text.push_str(&r.to_string());
                remediations_text.push('\n');
            }
        } else if rng.next(10) == 0 {
            test["state"] = json!("cancelled");
            test["cancelled_at"] = json!(rfc(created + DAY));
        } else {
            test["state"] = json!("planned");
        }
        out.push_str(&test.to_string());
        out.push('\n');
        previous = Some((test_id, technique));
    }
    out.push_str(&results_text);
    out.push_str(&remediations_text);
    Generated {
        ndjson: out,
        tests: shape.tests,
        validated: validated_count,
        results,
        remediations,
    }
}

/// One import, timed, its statements counted from the trace `trace_id`
/// the request carries.
pub async fn import(
    channel: &Authed,
    ndjson: &str,
    trace_id: &str,
) -> (ImportHistoryResponse, Duration) {
    let bytes = ndjson.as_bytes().to_vec();
    let mut chunks: Vec<ImportHistoryRequest> = bytes
        .chunks(1 << 20)
        .enumerate()
        .map(|(i, data)| ImportHistoryRequest {
            file_name: if i == 0 {
                "history.ndjson".into()
            } else {
                String::new()
            },
            data: data.to_vec(),
            last: false,
        })
        .collect();
    chunks.push(ImportHistoryRequest {
        last: true,
        ..Default::default()
    });
    let mut request = tonic::Request::new(futures::stream::iter(chunks).boxed());
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let start = Instant::now();
    let report = CampaignsServiceClient::new(channel.clone())
        .max_encoding_message_size(64 << 20)
        .import_history(request)
        .await
        .unwrap()
        .into_inner();
    (report, start.elapsed())
}
