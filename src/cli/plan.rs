//! `purple plan` prints what to test next and why (PlanNextTests);
//! `purple watch` follows the change feed (WatchScores), resuming from a
//! cursor after a disconnect.

use std::fmt::Write;

use clap::Args;
use purple_api::{
    common::v1::TechniqueStatus,
    scoring::v1::{
        PlanNextTestsRequest, PlanNextTestsResponse, ScoreChange, ScoreChangeKind,
        WatchScoresRequest, scoring_service_client::ScoringServiceClient,
    },
};

use super::{ServerArg, status_error};

/// Prints the threat-informed plan.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// How many techniques.
    #[arg(long, default_value_t = 20)]
    limit: i32,
    /// Only this platform (e.g. Windows).
    #[arg(long)]
    platform: Option<String>,
    /// Only this tactic (short name or id).
    #[arg(long)]
    tactic: Option<String>,
    /// Only this threat actor's techniques (e.g. G0016).
    #[arg(long)]
    actor: Option<String>,
    /// Count intel reports seen within this many days.
    #[arg(long, default_value_t = 365)]
    intel_window_days: i32,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArg,
}

/// Runs `purple plan`.
pub async fn run_plan(args: PlanArgs, client: &super::ClientArgs) -> anyhow::Result<()> {
    let mut client = ScoringServiceClient::new(args.server.connect(client).await?);
    let plan = client
        .plan_next_tests(PlanNextTestsRequest {
            limit: args.limit,
            platform: args.platform.unwrap_or_default(),
            tactic: args.tactic.unwrap_or_default(),
            threat_actor_id: args.actor.unwrap_or_default(),
            intel_window_days: args.intel_window_days,
            weights: None,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan_json(&plan))?);
    } else {
        print!("{}", render_plan(&plan));
    }
    Ok(())
}

/// The plan as JSON: each technique with its reasons.
fn plan_json(plan: &PlanNextTestsResponse) -> serde_json::Value {
    serde_json::json!({
        "considered": plan.considered,
        "techniques": plan.techniques.iter().map(|t| serde_json::json!({
            "rank": t.rank,
            "technique_id": t.technique_id,
            "name": t.name,
            "priority": t.priority,
            "score": t.score,
            "status": status(t.status),
            "actor_ids": t.actor_ids,
            "reasons": t.reasons.iter().map(|r| serde_json::json!({
                "reason": r.reason,
                "weight": r.weight,
                "factor": r.factor,
                "contribution": r.contribution,
                "detail": r.detail,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn status(value: i32) -> &'static str {
    TechniqueStatus::try_from(value)
        .ok()
        .and_then(TechniqueStatus::key)
        .unwrap_or("-")
}

/// One block per technique: rank, priority, id, name, score and status,
/// then its reasons.
fn render_plan(plan: &PlanNextTestsResponse) -> String {
    let mut out = String::new();
    for t in &plan.techniques {
        let _ = writeln!(
            out,
            "{:>3}. {:>6.1}  {:<10} {}  (score {:.1}, {})",
            t.rank,
            t.priority,
            t.technique_id,
            t.name,
            t.score,
            status(t.status)
        );
        for r in &t.reasons {
            let _ = writeln!(
                out,
                "       +{:>5.1} {:<15} {}",
                r.contribution, r.reason, r.detail
            );
        }
    }
    let _ = writeln!(
        out,
        "{} of {} techniques considered",
        plan.techniques.len(),
        plan.considered
    );
    out
}

/// Follows score changes.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Resume after this cursor (the last one printed).
    #[arg(long)]
    cursor: Option<String>,
    /// Only regressions and organization changes.
    #[arg(long)]
    regressions_only: bool,
    #[command(flatten)]
    server: ServerArg,
}

/// Runs `purple watch`: prints each change; after a disconnect it
/// reconnects with the last cursor, so nothing is missed.
pub async fn run_watch(args: WatchArgs, client: &super::ClientArgs) -> anyhow::Result<()> {
    let mut cursor = args.cursor.unwrap_or_default();
    let mut failures = 0_u32;
    loop {
        let channel = args.server.connect(client).await?;
        let mut scoring = ScoringServiceClient::new(channel);
        let stream = scoring
            .watch_scores(WatchScoresRequest {
                cursor: cursor.clone(),
                regressions_only: args.regressions_only,
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(status) if failures < 5 && status.code() == tonic::Code::Unavailable => {
                failures += 1;
                tokio::time::sleep(std::time::Duration::from_secs(u64::from(failures))).await;
                continue;
            }
            Err(status) => return Err(status_error(status)),
        };
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    failures = 0;
                    if message.changes.is_empty() && cursor.is_empty() {
                        eprintln!("watching from cursor {}", message.cursor);
                    }
                    for change in &message.changes {
                        println!("{}", render_change(change));
                    }
                    cursor = message.cursor;
                }
                Ok(None) => break,
                Err(status) => {
                    eprintln!(
                        "stream ended ({}); resuming after {cursor}",
                        status.message()
                    );
                    break;
                }
            }
        }
        failures += 1;
        if failures > 5 {
            anyhow::bail!("the server keeps ending the stream; resume with --cursor {cursor}");
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

fn render_change(c: &ScoreChange) -> String {
    let at = c
        .observed_at
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map_or_else(String::new, |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    match ScoreChangeKind::try_from(c.kind) {
        Ok(ScoreChangeKind::Organization) => format!(
            "{at} [{}] organization {:.1} -> {:.1}",
            c.cursor, c.old_score, c.new_score
        ),
        kind => format!(
            "{at} [{}] {}{} {:.1} ({}) -> {:.1} ({})",
            c.cursor,
            if kind == Ok(ScoreChangeKind::Regression) {
                "REGRESSION "
            } else {
                ""
            },
            c.technique_id,
            c.old_score,
            status(c.old_status),
            c.new_score,
            status(c.new_status)
        ),
    }
}
