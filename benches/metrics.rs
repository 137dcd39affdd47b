//! Metrics on 400,000 events: each metric and the summary over a 12-week
//! and a 52-week window. Run: `cargo bench --bench metrics` (SQLite) or
//! `PURPLE_BENCH_DATABASE_URL=postgres://... cargo bench --bench metrics`.

mod support;

use std::time::Instant;

use purple_api::{
    common::v1::{Event, EventKind, Outcome, TimeWindow},
    metrics::v1::{
        GetMttdRequest, GetMttrRequest, GetOperationalSummaryRequest, GetOperationalTrendRequest,
        GetRejectionRatesRequest, MetricFilter, RecordEventsRequest,
        metrics_service_client::MetricsServiceClient,
    },
};
use support::{BenchApp, ms, peak_rss_mib, time};

const START: i64 = 1_736_121_600; // 2025-01-06T00:00:00Z, a Monday
const DAY: i64 = 86_400;
const TESTS: usize = 50_000;

fn ts(secs: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    }
}

/// Eight events a test (some rejected, a share remediated): 400,000 in all.
fn events_of(i: usize) -> Vec<Event> {
    let at = START + (i as i64 * 7919) % (364 * DAY);
    let test = format!("bench-test-{i}");
    let technique = format!("T{}", 1000 + i % 600);
    let outcome = Outcome::ALL[i % 4];
    let ev = |kind: &str, offset: i64| Event {
        event_id: format!("{test}-{kind}-{offset}"),
        event_kind: EventKind::from_key(kind).unwrap_or_default() as i32,
        occurred_at: Some(ts(at + offset)),
        test_id: test.clone(),
        technique_id: technique.clone(),
        campaign_id: format!("bench-campaign-{}", i % 40),
        ..Default::default()
    };
    let mut events = vec![
        ev("test.created", 0),
        ev("test.red_started", 60),
        ev("test.red_executed", 600),
        ev("test.blue_started", 900),
        Event {
            outcome: outcome as i32,
            ..ev("test.blue_completed", 4_000)
        },
        Event {
            outcome: outcome as i32,
            ..ev("test.validated", 8_000)
        },
    ];
    let remediation = |kind: &str, offset: i64| Event {
        remediation_id: format!("bench-rem-{i}"),
        test_id: String::new(),
        ..ev(kind, offset)
    };
    if outcome.is_detection() {
        events.push(Event {
            outcome: outcome as i32,
            ..ev("test.detected", 600 + 60 + (i as i64 % 3_000))
        });
        // A repeated execution: the latest one counts.
        events.push(ev("test.red_executed", 300));
    } else if i.is_multiple_of(2) {
        events.push(Event {
            side: "red".into(),
            ..ev("test.rejected", 3_000)
        });
        events.push(remediation("remediation.opened", 8_000));
    } else {
        events.push(remediation("remediation.opened", 8_000));
        events.push(remediation(
            "remediation.completed",
            8_000 + 3_600 + (i as i64 % 86_400),
        ));
    }
    events
}

fn filter(weeks: i64) -> Option<MetricFilter> {
    let to = START + 364 * DAY;
    Some(MetricFilter {
        window: Some(TimeWindow {
            from: Some(ts(to - weeks * 7 * DAY)),
            to: Some(ts(to)),
        }),
        ..Default::default()
    })
}

#[tokio::main]
async fn main() {
    let app = BenchApp::start().await;
    let mut metrics =
        MetricsServiceClient::new(app.channel.clone()).max_decoding_message_size(64 << 20);

    // RecordEvents is campaigns' relay's RPC: a service token.
    let mut recorder = MetricsServiceClient::new(app.service.clone());
    let events: Vec<Event> = (0..TESTS).flat_map(events_of).collect();
    let started = Instant::now();
    for chunk in events.chunks(1_000) {
        recorder
            .record_events(RecordEventsRequest {
                events: chunk.to_vec(),
            })
            .await
            .unwrap();
    }
    let load = started.elapsed();
    support::analyze(
        app.settings.storage.database_url.as_deref(),
        &app.settings.storage.schema_prefix,
    )
    .await;
    println!(
        "# metrics benchmark — {} events, {}",
        events.len(),
        app.backend
    );
    println!(
        "load: {:.1} s ({:.0} events/s, RecordEvents batches of 1,000)\n",
        load.as_secs_f64(),
        events.len() as f64 / load.as_secs_f64()
    );
    println!("| metric | window | median ms | min ms |");
    println!("|---|---|---|---|");
    for weeks in [12, 52] {
        let runs = 5;
        let (mid, min) = time(runs, || {
            let mut c = metrics.clone();
            async move {
                c.get_mttd(GetMttdRequest {
                    filter: filter(weeks),
                })
                .await
                .unwrap();
            }
        })
        .await;
        println!("| GetMttd | {weeks} weeks | {} | {} |", ms(mid), ms(min));
        let (mid, min) = time(runs, || {
            let mut c = metrics.clone();
            async move {
                c.get_mttr(GetMttrRequest {
                    filter: filter(weeks),
                })
                .await
                .unwrap();
            }
        })
        .await;
        println!("| GetMttr | {weeks} weeks | {} | {} |", ms(mid), ms(min));
        let (mid, min) = time(runs, || {
            let mut c = metrics.clone();
            async move {
                c.get_rejection_rates(GetRejectionRatesRequest {
                    filter: filter(weeks),
                })
                .await
                .unwrap();
            }
        })
        .await;
        println!(
            "| GetRejectionRates | {weeks} weeks | {} | {} |",
            ms(mid),
            ms(min)
        );
        let (mid, min) = time(runs, || {
            let mut c = metrics.clone();
            async move {
                c.get_operational_trend(GetOperationalTrendRequest {
                    filter: filter(weeks),
                })
                .await
                .unwrap();
            }
        })
        .await;
        println!(
            "| GetOperationalTrend | {weeks} weeks | {} | {} |",
            ms(mid),
            ms(min)
        );
        let (mid, min) = time(runs, || {
            let mut c = metrics.clone();
            async move {
                c.get_operational_summary(GetOperationalSummaryRequest {
                    filter: filter(weeks),
                })
                .await
                .unwrap();
            }
        })
        .await;
        println!(
            "| GetOperationalSummary | {weeks} weeks | {} | {} |",
            ms(mid),
            ms(min)
        );
    }
    let check = metrics
        .get_mttd(GetMttdRequest { filter: filter(52) })
        .await
        .unwrap()
        .into_inner();
    println!("\nMTTD over 52 weeks: {:?}", check.mttd.unwrap());
    let mttr = metrics
        .get_mttr(GetMttrRequest { filter: filter(52) })
        .await
        .unwrap()
        .into_inner();
    println!("MTTR over 52 weeks: {:?}", mttr.mttr.unwrap());
    println!(
        "peak RSS (server and client in one process): {:.0} MiB",
        peak_rss_mib()
    );
    app.finish().await;
}
