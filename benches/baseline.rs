//! Purple beside the system it replaces, on that system's own data: the
//! data set `../shared/baseline/generate.py` writes (JSON Lines, one file
//! per table of the replaced system) converted here into Purple's import
//! formats — a STIX 2.1 bundle for its synthetic ATT&CK catalogue, Sigma
//! rules, D3FEND pairs and a history file (docs/formats/history.md) — loaded
//! through the real imports, then every value the baseline computed
//! (`expected-<scale>.json`) compared with what Purple's API answers, and
//! Purple's time per operation measured.
//!
//! Run (the data set first, with the baseline's own generator):
//!
//! ```sh
//! BASELINE_DATASET_DIR=/tmp/bdata python ../shared/baseline/generate.py --scale small --no-pg --no-sqlite
//! BASELINE_DATASET_DIR=/tmp/bdata BASELINE_EXPECTED=../shared/baseline/expected-small.json \
//!   PURPLE_BASELINE_SCALE=small cargo bench --bench baseline
//! ```
//!
//! (`PURPLE_BENCH_DATABASE_URL` as for the other benchmarks;
//! `PURPLE_BASELINE_DUMP=<dir>` keeps the converted files, which `purple
//! import` loads by hand; `PURPLE_BASELINE_RUNS` how many requests each
//! timed operation's median is of, 5 unless set.) Exits non-zero when a
//! value differs.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Instant,
};

use purple_api::{
    common::v1::{TechniqueStatus, TimeWindow},
    ingest::v1::{ImportKind, ImportRequest, ingest_service_client::IngestServiceClient},
    metrics::v1::{
        GetMttdRequest, GetMttrRequest, GetOperationalTrendRequest, GetRejectionRatesRequest,
        MetricFilter, metrics_service_client::MetricsServiceClient,
    },
    scoring::v1::{
        GetOrganizationScoreRequest, ScoreTechniquesRequest,
        scoring_service_client::ScoringServiceClient,
    },
};
use serde_json::{Value, json};
use support::{BenchApp, ms, time};

type Row = serde_json::Map<String, Value>;

fn read(dir: &Path, table: &str) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join(format!("{table}.jsonl")))
        .unwrap_or_else(|e| panic!("{table}.jsonl: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn int(row: &Row, key: &str) -> i64 {
    row[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} in {row:?}"))
}

fn text<'a>(row: &'a Row, key: &str) -> &'a str {
    row[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {row:?}"))
}

fn opt_text<'a>(row: &'a Row, key: &str) -> Option<&'a str> {
    row.get(key).and_then(Value::as_str)
}

fn stix_id(kind: &str, id: i64) -> String {
    format!("{kind}--00000000-0000-4000-8000-{id:012}")
}

fn rule_uuid(id: i64) -> String {
    format!("00000000-0000-4000-9000-{id:012}")
}

/// The data set in Purple's formats.
struct Converted {
    bundle: String,
    sigma: Vec<(String, String)>,
    d3fend: String,
    history: String,
    /// ATT&CK id of each technique row id.
    mitre: BTreeMap<i64, String>,
}

fn convert(dir: &Path) -> Converted {
    let tactics = read(dir, "tactics");
    let techniques = read(dir, "techniques");
    let technique_tactics = read(dir, "technique_tactics");
    let actors = read(dir, "threat_actors");
    let actor_techniques = read(dir, "actor_techniques");
    let tactic_short: BTreeMap<i64, String> = tactics
        .iter()
        .map(|t| (int(t, "id"), text(t, "shortname").to_owned()))
        .collect();
    let mitre: BTreeMap<i64, String> = techniques
        .iter()
        .map(|t| (int(t, "id"), text(t, "mitre_id").to_owned()))
        .collect();
    let mut phases: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for tt in &technique_tactics {
        phases
            .entry(int(tt, "technique_id"))
            .or_default()
            .push(json!({
                "kill_chain_name": "mitre-attack",
                "phase_name": tactic_short[&int(tt, "tactic_id")],
            }));
    }
    let mut objects: Vec<Value> = Vec::new();
    for t in &tactics {
        objects.push(json!({
            "type": "x-mitre-tactic", "id": stix_id("x-mitre-tactic", int(t, "id")),
            "name": text(t, "name"), "x_mitre_shortname": text(t, "shortname"),
            "external_references": [{"source_name": "mitre-attack", "external_id": text(t, "mitre_id")}],
        }));
    }
    for t in &techniques {
        let id = int(t, "id");
        objects.push(json!({
            "type": "attack-pattern", "id": stix_id("attack-pattern", id),
            "name": text(t, "name"),
            "x_mitre_is_subtechnique": t["is_subtechnique"].as_bool().unwrap_or(false),
            "revoked": t["revoked"].as_bool().unwrap_or(false),
            "x_mitre_deprecated": t["deprecated"].as_bool().unwrap_or(false),
            "kill_chain_phases": phases.get(&id).cloned().unwrap_or_default(),
            "external_references": [{"source_name": "mitre-attack", "external_id": text(t, "mitre_id")}],
        }));
    }
    for a in &actors {
        objects.push(json!({
            "type": "intrusion-set", "id": stix_id("intrusion-set", int(a, "id")),
            "name": text(a, "name"),
            "external_references": [{"source_name": "mitre-attack", "external_id": text(a, "mitre_id")}],
        }));
    }
    for (i, at) in actor_techniques.iter().enumerate() {
        objects.push(json!({
            "type": "relationship", "id": stix_id("relationship", i as i64 + 1),
            "relationship_type": "uses",
            "source_ref": stix_id("intrusion-set", int(at, "actor_id")),
            "target_ref": stix_id("attack-pattern", int(at, "technique_id")),
        }));
    }
    let bundle =
        json!({"type": "bundle", "id": stix_id("bundle", 1), "objects": objects}).to_string();

    // Rules: every one as Sigma (Purple keys rules by source and id, and
    // the baseline's ids are its own), disabled ones deprecated.
    let mut tags: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for rt in read(dir, "rule_techniques") {
        tags.entry(int(&rt, "rule_id")).or_default().push(format!(
            "attack.{}",
            mitre[&int(&rt, "technique_id")].to_ascii_lowercase()
        ));
    }
    let sigma = read(dir, "detection_rules")
        .iter()
        .map(|r| {
            let id = int(r, "id");
            let status = if r["enabled"].as_bool().unwrap_or(true) {
                "stable"
            } else {
                "deprecated"
            };
            let mut yaml = format!(
                "title: {}\nid: {}\nstatus: {status}\nlevel: medium\ntags:\n",
                text(r, "name"),
                rule_uuid(id)
            );
            for tag in tags.get(&id).into_iter().flatten() {
                let _ = writeln!(yaml, "  - {tag}");
            }
            (format!("rule-{id}.yml"), yaml)
        })
        .collect();

    let defensive: BTreeMap<i64, (String, String, String)> = read(dir, "defensive_techniques")
        .iter()
        .map(|d| {
            (
                int(d, "id"),
                (
                    text(d, "d3fend_id").to_owned(),
                    text(d, "name").to_owned(),
                    text(d, "tactic").to_owned(),
                ),
            )
        })
        .collect();
    let mut d3fend = String::from(
        "off_tech_id,off_tech_label,def_tech_id,def_tech_label,def_tactic_label,paths,via_artifacts\n",
    );
    for m in read(dir, "defensive_technique_mappings") {
        let (id, name, tactic) = &defensive[&int(&m, "defensive_technique_id")];
        let _ = writeln!(
            d3fend,
            "{},x,{id},{name},{tactic},1,x",
            mitre[&int(&m, "technique_id")]
        );
    }

    Converted {
        bundle,
        sigma,
        d3fend,
        history: history(dir, &mitre),
        mitre,
    }
}

/// The role a baseline user name carries (`purple_lead-2`).
fn role_of(user: &str) -> &'static str {
    match user.rsplit_once('-').map_or(user, |(role, _)| role) {
        "purple_lead" => "purple_lead",
        "red_tech" => "red_tech",
        "blue_tech" => "blue_tech",
        "admin" => "admin",
        _ => "viewer",
    }
}

/// The history file: users from the audit log, campaigns, tests with the
/// instants of their audit events and their rejections (with what each
/// voided), detection results, remediations. Follows the mapping guide of
/// docs/formats/history.md.
fn history(dir: &Path, mitre: &BTreeMap<i64, String>) -> String {
    let audit = read(dir, "audit_log");
    let mut users: BTreeSet<String> = BTreeSet::new();
    // Per test, its audit rows in log order.
    let mut by_test: BTreeMap<i64, Vec<&Row>> = BTreeMap::new();
    let mut remediation_started: BTreeMap<i64, String> = BTreeMap::new();
    for row in &audit {
        if let Some(user) = opt_text(row, "user") {
            users.insert(user.to_owned());
        }
        let entity: i64 = text(row, "entity_id").parse().unwrap();
        match text(row, "entity_type") {
            "test" => by_test.entry(entity).or_default().push(row),
            "remediation" if text(row, "action") == "remediation.started" => {
                remediation_started.insert(entity, text(row, "timestamp").to_owned());
            }
            _ => {}
        }
    }
    let mut out = String::new();
    let mut line = |v: Value| {
        out.push_str(&v.to_string());
        out.push('\n');
    };
    for user in &users {
        line(json!({"kind": "user", "user_id": user, "role": role_of(user)}));
    }
    for c in read(dir, "campaigns") {
        line(
            json!({"kind": "campaign", "campaign_id": format!("c{}", int(&c, "id")),
                    "name": text(&c, "name"), "created_at": text(&c, "created_at")}),
        );
    }
    for t in read(dir, "tests") {
        let id = int(&t, "id");
        let mut test = json!({
            "kind": "test", "test_id": format!("t{id}"),
            "technique_id": mitre[&int(&t, "technique_id")],
            "state": text(&t, "state"), "created_at": text(&t, "created_at"),
        });
        if let Some(c) = t["campaign_id"].as_i64() {
            test["campaign_id"] = json!(format!("c{c}"));
        }
        if let Some(r) = t["retest_of"].as_i64() {
            test["retest_of"] = json!(format!("t{r}"));
        }
        if let Some(o) = opt_text(&t, "outcome") {
            test["outcome"] = json!(o);
        }
        for (field, column) in [
            ("executed_at", "red_executed_at"),
            ("detected_at", "detected_at"),
            ("validated_at", "validated_at"),
        ] {
            if let Some(at) = opt_text(&t, column) {
                test[field] = json!(at);
            }
        }
        let mut rejections = Vec::new();
        let (mut executed, mut completed): (Option<&str>, Option<(&str, Option<&str>)>) =
            (None, None);
        for row in by_test.get(&id).into_iter().flatten() {
            let at = text(row, "timestamp");
            let details = row["details"].as_object();
            let detail = |k: &str| details.and_then(|d| d.get(k)).and_then(Value::as_str);
            match text(row, "action") {
                "test.red_started" => test["red_started_at"] = json!(at),
                "test.red_executed" => executed = Some(at),
                "test.blue_started" => test["blue_started_at"] = json!(at),
                "test.blue_completed" => {
                    test["blue_completed_at"] = json!(at);
                    completed = Some((at, detail("outcome")));
                    // A test cancelled after blue completed keeps the
                    // completion's outcome (the replaced system clears it).
                    if t["outcome"].is_null()
                        && let Some(o) = detail("outcome")
                    {
                        test["outcome"] = json!(o);
                    }
                }
                "test.cancelled" => test["cancelled_at"] = json!(at),
                "test.rejected" => {
                    let side = detail("side").unwrap_or("red");
                    let mut r = json!({"side": side, "at": at,
                                       "reason": detail("reason").unwrap_or(""),
                                       "actor_id": opt_text(row, "user").unwrap_or("")});
                    if side == "red"
                        && let Some(e) = executed
                    {
                        r["voided_executed_at"] = json!(e);
                    }
                    // A red rejection of a completed test voids blue's
                    // completion too.
                    if let Some((c, outcome)) =
                        completed.filter(|(c, _)| executed.is_some_and(|e| e <= *c))
                    {
                        r["voided_completed_at"] = json!(c);
                        if let Some(o) = outcome {
                            r["voided_outcome"] = json!(o);
                        }
                    }
                    rejections.push(r);
                    completed = None;
                    if side == "red" {
                        executed = None;
                    }
                }
                _ => {}
            }
        }
        if !rejections.is_empty() {
            test["rejections"] = json!(rejections);
        }
        // The replaced system leaves a rejected submission's values on the
        // row; in Purple they are the rejection's (voided above), and a test
        // has only the instants of the steps its state has passed.
        let passed: &[&str] = match text(&t, "state") {
            "planned" => &[],
            "red_in_progress" => &["red_started_at"],
            "red_complete" => &["red_started_at", "executed_at"],
            "blue_in_progress" => &["red_started_at", "executed_at", "blue_started_at"],
            _ => &["*"],
        };
        if passed != ["*"] {
            let object = test.as_object_mut().unwrap();
            for field in [
                "red_started_at",
                "executed_at",
                "blue_started_at",
                "blue_completed_at",
                "detected_at",
                "outcome",
            ] {
                if !passed.contains(&field) {
                    object.remove(field);
                }
            }
        }
        line(test);
    }
    for r in read(dir, "test_detection_results") {
        line(
            json!({"kind": "detection_result", "test_id": format!("t{}", int(&r, "test_id")),
                    "source": "sigma", "rule_id": rule_uuid(int(&r, "rule_id")),
                    "triggered": r["triggered"].as_bool().unwrap_or(false)}),
        );
    }
    for r in read(dir, "remediations") {
        let id = int(&r, "id");
        let mut rem = json!({"kind": "remediation", "remediation_id": format!("r{id}"),
                             "test_id": format!("t{}", int(&r, "test_id")),
                             "state": match text(&r, "status") { "completed" => "completed", "in_progress" => "in_progress", _ => "open" },
                             "opened_at": text(&r, "opened_at")});
        if let Some(at) = opt_text(&r, "completed_at") {
            rem["completed_at"] = json!(at);
        }
        if let Some(at) = remediation_started.get(&id) {
            rem["started_at"] = json!(at);
        }
        line(rem);
    }
    out
}

/// Compares `actual` with `expected`; records a difference.
struct Check {
    lines: Vec<String>,
    failures: usize,
    compared: usize,
}

impl Check {
    fn num(&mut self, what: &str, actual: f64, expected: f64, tolerance: f64) {
        self.compared += 1;
        if (actual - expected).abs() > tolerance {
            self.failures += 1;
            if self.failures <= 40 {
                self.lines
                    .push(format!("  {what}: Purple {actual} vs baseline {expected}"));
            }
        }
    }

    fn eq(&mut self, what: &str, actual: &str, expected: &str) {
        self.compared += 1;
        if actual != expected {
            self.failures += 1;
            if self.failures <= 40 {
                self.lines.push(format!(
                    "  {what}: Purple {actual:?} vs baseline {expected:?}"
                ));
            }
        }
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn status_key(status: i32) -> &'static str {
    TechniqueStatus::try_from(status)
        .ok()
        .and_then(TechniqueStatus::key)
        .unwrap_or("?")
}

fn instant(text: &str) -> prost_types::Timestamp {
    let at = chrono::DateTime::parse_from_rfc3339(text).unwrap();
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

#[tokio::main]
async fn main() {
    let scale = std::env::var("PURPLE_BASELINE_SCALE").unwrap_or_else(|_| "small".into());
    let Ok(data) = std::env::var("BASELINE_DATASET_DIR") else {
        eprintln!("set BASELINE_DATASET_DIR (see this file's header for how to generate it)");
        return;
    };
    let dir = PathBuf::from(data).join(&scale);
    let expected_path = std::env::var("BASELINE_EXPECTED").map_or_else(
        |_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../shared/baseline/expected-{scale}.json"))
        },
        PathBuf::from,
    );
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(&expected_path).unwrap()).unwrap();
    let values = &expected["values"];
    let as_of = instant(expected["as_of"].as_str().unwrap());
    let window = TimeWindow {
        from: Some(instant(expected["window"]["from"].as_str().unwrap())),
        to: Some(instant(expected["window"]["to"].as_str().unwrap())),
    };

    let converted = convert(&dir);
    // PURPLE_BASELINE_DUMP=<dir>: keep the converted files, to import by hand.
    if let Ok(out) = std::env::var("PURPLE_BASELINE_DUMP") {
        let out = PathBuf::from(out);
        std::fs::create_dir_all(out.join("sigma")).unwrap();
        std::fs::write(out.join("attack.json"), &converted.bundle).unwrap();
        std::fs::write(out.join("d3fend.csv"), &converted.d3fend).unwrap();
        std::fs::write(out.join("history.ndjson"), &converted.history).unwrap();
        for (name, yaml) in &converted.sigma {
            std::fs::write(out.join("sigma").join(name), yaml).unwrap();
        }
    }
    let app = BenchApp::start().await;
    println!(
        "# Purple beside the replaced system — {scale}, {}",
        app.backend
    );
    let mut ingest =
        IngestServiceClient::new(app.channel.clone()).max_encoding_message_size(64 << 20);
    let started = Instant::now();
    let one = |kind: ImportKind, name: &str, data: Vec<u8>| ImportRequest {
        kind: kind as i32,
        file_name: name.into(),
        data,
        last: true,
    };
    ingest
        .import(futures::stream::iter([one(
            ImportKind::Attack,
            "baseline-attack.json",
            converted.bundle.into_bytes(),
        )]))
        .await
        .unwrap();
    ingest
        .import(futures::stream::iter(support::catalogue::sigma_upload(
            converted.sigma,
        )))
        .await
        .unwrap();
    ingest
        .import(futures::stream::iter([one(
            ImportKind::D3fend,
            "baseline-d3fend.csv",
            converted.d3fend.into_bytes(),
        )]))
        .await
        .unwrap();
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let (report, _) = support::history::import(&app.channel, &converted.history, &trace).await;
    println!(
        "converted and imported in {:.1} s: {} history records",
        started.elapsed().as_secs_f64(),
        report.records
    );
    // Metrics are fed by the outbox: wait until the validated count settles.
    let filter = || MetricFilter {
        window: Some(window),
        ..Default::default()
    };
    let mut metrics = MetricsServiceClient::new(app.channel.clone());
    let want_validated = values["rejection_rates_365d"]["validated"]
        .as_i64()
        .unwrap();
    // Every implied event must have reached metrics: wait until the counts
    // hold still for two seconds (the relay delivers 1,000 events a round).
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    let mut last = None;
    loop {
        let rates = metrics
            .get_rejection_rates(GetRejectionRatesRequest {
                filter: Some(filter()),
            })
            .await
            .unwrap()
            .into_inner();
        let mttr = metrics
            .get_mttr(GetMttrRequest {
                filter: Some(filter()),
            })
            .await
            .unwrap()
            .into_inner()
            .mttr
            .unwrap_or_default()
            .count;
        let now = (
            rates.validated,
            rates.red_executed,
            rates.blue_completed,
            mttr,
        );
        if (rates.validated == want_validated && last == Some(now)) || Instant::now() > deadline {
            break;
        }
        last = Some(now);
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    // PostgreSQL: plans and visibility as autovacuum leaves them a minute
    // after a bulk load (support::analyze).
    support::analyze(
        app.settings.storage.database_url.as_deref(),
        &app.settings.storage.schema_prefix,
    )
    .await;

    let mut check = Check {
        lines: Vec::new(),
        failures: 0,
        compared: 0,
    };
    let mut timings: Vec<(&str, String)> = Vec::new();
    let mut scoring =
        ScoringServiceClient::new(app.channel.clone()).max_decoding_message_size(64 << 20);

    // Technique scores of the baseline's 50 picks, at its as_of.
    let picks = values["technique_scores_50"].as_object().unwrap();
    let ids: Vec<String> = picks.keys().cloned().collect();
    let request = ScoreTechniquesRequest {
        technique_ids: ids.clone(),
        as_of: Some(as_of),
    };
    let scored = scoring
        .score_techniques(request.clone())
        .await
        .unwrap()
        .into_inner();
    for s in &scored.scores {
        let e = &picks[&s.technique_id];
        let c = s.components.unwrap();
        let id = &s.technique_id;
        check.num(
            &format!("{id} score"),
            s.score,
            (f(&e["score"]) * 10.0).round() / 10.0,
            1e-9,
        );
        check.eq(
            &format!("{id} status"),
            status_key(s.status),
            e["status"].as_str().unwrap(),
        );
        // (what, Purple's value, the baseline's key, tolerance)
        let components = [
            ("detection", c.detection, "detection", 1e-9),
            ("rule_coverage", c.rule_coverage, "rule_coverage", 1e-9),
            (
                "countermeasures",
                c.countermeasures,
                "countermeasures",
                1e-9,
            ),
            ("recency", c.recency, "recency", 1e-6),
            (
                "effective",
                f64::from(c.effective_tests),
                "effective_tests",
                0.0,
            ),
            ("mapped", f64::from(c.mapped_rules), "mapped_rules", 0.0),
            (
                "triggered",
                f64::from(c.triggered_rules),
                "triggered_rules",
                0.0,
            ),
            ("tests", f64::from(c.total_tests), "tests", 0.0),
        ];
        for (what, actual, key, tolerance) in components {
            check.num(&format!("{id} {what}"), actual, f(&e[key]), tolerance);
        }
    }
    check.num(
        "techniques found",
        scored.scores.len() as f64,
        ids.len() as f64,
        0.0,
    );
    let client = scoring.clone();
    let (median, _) = time(runs(), || {
        let (mut client, request) = (client.clone(), request.clone());
        async move {
            client.score_techniques(request).await.unwrap();
        }
    })
    .await;
    timings.push(("technique scores, 50 ids (as_of)", ms(median)));

    // The organization score at as_of.
    let org_request = GetOrganizationScoreRequest {
        as_of: Some(as_of),
        ..Default::default()
    };
    let org = scoring
        .get_organization_score(org_request)
        .await
        .unwrap()
        .into_inner();
    let e = &values["organization_score"];
    check.num(
        "organization score",
        org.score,
        (f(&e["score"]) * 10.0).round() / 10.0,
        1e-9,
    );
    check.num(
        "organization mean_all",
        org.mean_all,
        f(&e["mean_all"]),
        0.051,
    );
    check.num(
        "organization mean_critical",
        org.mean_critical,
        f(&e["mean_critical"]),
        0.051,
    );
    check.num(
        "live techniques",
        f64::from(org.technique_count),
        f(&e["live_techniques"]),
        0.0,
    );
    check.num(
        "critical techniques",
        f64::from(org.critical_count),
        f(&e["critical_techniques"]),
        0.0,
    );
    let counts = org.status_counts.unwrap();
    for (name, n) in [
        ("untested", counts.untested),
        ("in_progress", counts.in_progress),
        ("gap", counts.gap),
        ("partial", counts.partial),
        ("covered", counts.covered),
    ] {
        check.num(
            &format!("status count {name}"),
            f64::from(n),
            f(&e["status_counts"][name]),
            0.0,
        );
    }
    for t in &org.tactics {
        check.num(
            &format!("tactic {}", t.tactic_id),
            t.score,
            (f(&values["tactic_scores"][&t.tactic_id]) * 10.0).round() / 10.0,
            0.051,
        );
    }
    let client = scoring.clone();
    let (median, _) = time(runs(), || {
        let (mut client, request) = (client.clone(), org_request);
        async move {
            client.get_organization_score(request).await.unwrap();
        }
    })
    .await;
    timings.push(("organization score (as_of)", ms(median)));

    // The metrics of the year before as_of.
    let mttd = metrics
        .get_mttd(GetMttdRequest {
            filter: Some(filter()),
        })
        .await
        .unwrap()
        .into_inner()
        .mttd
        .unwrap();
    let mttr = metrics
        .get_mttr(GetMttrRequest {
            filter: Some(filter()),
        })
        .await
        .unwrap()
        .into_inner()
        .mttr
        .unwrap();
    for (name, stats, e) in [
        ("MTTD", mttd, &values["mttd_365d"]),
        ("MTTR", mttr, &values["mttr_365d"]),
    ] {
        check.num(
            &format!("{name} count"),
            stats.count as f64,
            f(&e["count"]),
            0.0,
        );
        check.num(
            &format!("{name} mean"),
            stats.mean_seconds.unwrap_or(f64::NAN),
            f(&e["mean"]),
            1e-6,
        );
        check.num(
            &format!("{name} p50"),
            stats.p50_seconds.unwrap_or(f64::NAN),
            f(&e["p50"]),
            1e-6,
        );
        check.num(
            &format!("{name} p90"),
            stats.p90_seconds.unwrap_or(f64::NAN),
            f(&e["p90"]),
            1e-6,
        );
    }
    let rates = metrics
        .get_rejection_rates(GetRejectionRatesRequest {
            filter: Some(filter()),
        })
        .await
        .unwrap()
        .into_inner();
    let e = &values["rejection_rates_365d"];
    for (name, actual, key) in [
        ("validated", rates.validated as f64, "validated"),
        ("rejected", rates.rejected as f64, "rejected"),
        ("rejected red", rates.red_rejected as f64, "rejected_red"),
        ("red executed", rates.red_executed as f64, "red_executed"),
        ("rejected blue", rates.blue_rejected as f64, "rejected_blue"),
        (
            "blue completed",
            rates.blue_completed as f64,
            "blue_completed",
        ),
        ("red rate", rates.red_rate, "red_rate"),
        ("blue rate", rates.blue_rate, "blue_rate"),
    ] {
        check.num(&format!("rejections {name}"), actual, f(&e[key]), 1e-9);
    }
    let weeks = metrics
        .get_operational_trend(GetOperationalTrendRequest {
            filter: Some(filter()),
        })
        .await
        .unwrap()
        .into_inner()
        .weeks;
    let expected_weeks = values["weekly_trend_365d"].as_array().unwrap();
    check.num(
        "trend weeks",
        weeks.len() as f64,
        expected_weeks.len() as f64,
        0.0,
    );
    for (w, e) in weeks.iter().zip(expected_weeks) {
        let week = e["week_start"].as_str().unwrap();
        check.num(
            &format!("week {week} validated"),
            w.validated as f64,
            f(&e["validated"]),
            0.0,
        );
        check.num(
            &format!("week {week} cumulative"),
            w.cumulative_validated as f64,
            f(&e["cumulative_validated"]),
            0.0,
        );
        check.num(
            &format!("week {week} detection rate"),
            w.detection_rate,
            f(&e["detection_rate"]),
            1e-9,
        );
        let m = w.mttd.unwrap_or_default();
        check.num(
            &format!("week {week} MTTD count"),
            m.count as f64,
            f(&e["mttd"]["count"]),
            0.0,
        );
    }
    for (name, op) in [
        ("MTTD (year)", 0),
        ("MTTR (year)", 1),
        ("rejection rates (year)", 2),
        ("weekly trend (year)", 3),
    ] {
        let client = metrics.clone();
        let (median, _) = time(runs(), || {
            let mut client = client.clone();
            async move {
                let filter = Some(filter());
                match op {
                    0 => drop(client.get_mttd(GetMttdRequest { filter }).await.unwrap()),
                    1 => drop(client.get_mttr(GetMttrRequest { filter }).await.unwrap()),
                    2 => drop(
                        client
                            .get_rejection_rates(GetRejectionRatesRequest { filter })
                            .await
                            .unwrap(),
                    ),
                    _ => drop(
                        client
                            .get_operational_trend(GetOperationalTrendRequest { filter })
                            .await
                            .unwrap(),
                    ),
                }
            }
        })
        .await;
        timings.push((name, ms(median)));
    }

    println!(
        "\n| operation | Purple ms (median of {}) |\n|---|---:|",
        runs()
    );
    for (name, t) in &timings {
        println!("| {name} | {t} |");
    }
    println!(
        "\n{} values compared with expected-{scale}.json, {} differ{}",
        check.compared,
        check.failures,
        if check.failures == 0 { "" } else { ":" }
    );
    for line in &check.lines {
        println!("{line}");
    }
    let _ = converted.mitre;
    app.finish().await;
    if check.failures > 0 {
        std::process::exit(1);
    }
}

/// How many requests each timed operation's median is of
/// (`PURPLE_BASELINE_RUNS`, 5 unless set).
fn runs() -> usize {
    std::env::var("PURPLE_BASELINE_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(5)
}
