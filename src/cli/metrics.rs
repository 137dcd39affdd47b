//! `purple metrics`: the operational summary of a window as a table.

use std::fmt::Write;

use chrono::{DateTime, Duration, Utc};
use clap::Args;
use purple_api::{
    common::v1::TimeWindow,
    metrics::v1::{
        DurationStats, GetOperationalSummaryRequest, GetOperationalSummaryResponse, MetricFilter,
        metrics_service_client::MetricsServiceClient,
    },
};
use purple_runtime::time::{Micros, timestamp};

use super::{ServerArg, parse_instant, status_error};

/// Prints MTTD, MTTR, rejection rates and the weekly trend.
#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// Window start (inclusive): RFC 3339 or YYYY-MM-DD. Default: 12 weeks
    /// before --to.
    #[arg(long, value_parser = parse_instant)]
    from: Option<DateTime<Utc>>,
    /// Window end (exclusive). Default: now.
    #[arg(long, value_parser = parse_instant)]
    to: Option<DateTime<Utc>>,
    /// Only these techniques (repeatable).
    #[arg(long = "technique")]
    techniques: Vec<String>,
    /// Only this campaign.
    #[arg(long)]
    campaign: Option<String>,
    #[command(flatten)]
    server: ServerArg,
}

/// Runs the command.
pub async fn run(args: MetricsArgs, client: &super::ClientArgs) -> anyhow::Result<()> {
    let to = args.to.unwrap_or_else(Utc::now);
    let from = args.from.unwrap_or(to - Duration::weeks(12));
    let mut client = MetricsServiceClient::new(args.server.connect(client).await?);
    let summary = client
        .get_operational_summary(GetOperationalSummaryRequest {
            filter: Some(MetricFilter {
                window: Some(TimeWindow {
                    from: Some(timestamp(Micros::from_datetime(from))),
                    to: Some(timestamp(Micros::from_datetime(to))),
                }),
                technique_ids: args.techniques,
                campaign_id: args.campaign.unwrap_or_default(),
            }),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    print!("{}", render(from, to, &summary));
    Ok(())
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |s| format!("{s:.1}s"))
}

fn stats_row(out: &mut String, name: &str, stats: Option<&DurationStats>) {
    let empty = DurationStats::default();
    let s = stats.unwrap_or(&empty);
    let _ = writeln!(
        out,
        "{name:<6} {:>7} {:>12} {:>12} {:>12}",
        s.count,
        seconds(s.mean_seconds),
        seconds(s.p50_seconds),
        seconds(s.p90_seconds)
    );
}

/// The summary as text tables.
pub fn render(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    summary: &GetOperationalSummaryResponse,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Operational summary [{}, {})\n",
        from.to_rfc3339(),
        to.to_rfc3339()
    );
    let _ = writeln!(
        out,
        "{:<6} {:>7} {:>12} {:>12} {:>12}",
        "", "count", "mean", "p50", "p90"
    );
    stats_row(&mut out, "MTTD", summary.mttd.as_ref());
    stats_row(&mut out, "MTTR", summary.mttr.as_ref());
    if let Some(r) = &summary.rejection {
        let _ = writeln!(
            out,
            "\nvalidated {}  rejected {}  red {}/{} ({:.1}%)  blue {}/{} ({:.1}%)",
            r.validated,
            r.rejected,
            r.red_rejected,
            r.red_executed,
            r.red_rate * 100.0,
            r.blue_rejected,
            r.blue_completed,
            r.blue_rate * 100.0
        );
    }
    let _ = writeln!(
        out,
        "\n{:<9} {:>9} {:>10} {:>10} {:>12}",
        "week", "validated", "cumulative", "detected", "MTTD p50"
    );
    for week in &summary.weeks {
        let _ = writeln!(
            out,
            "{:<9} {:>9} {:>10} {:>9.1}% {:>12}",
            week.iso_week,
            week.validated,
            week.cumulative_validated,
            week.detection_rate * 100.0,
            seconds(week.mttd.as_ref().and_then(|m| m.p50_seconds))
        );
    }
    out
}
