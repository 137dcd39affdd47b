//! Metrics (docs/design.md section 5) against hand-computed expectations, and the
//! one-statement-per-metric budget at two data sizes.
//!
//! The data set: B = Monday 2026-03-02 00:00 UTC; the window is three ISO
//! weeks [B, B+21d). Detect times of the tests validated blocked/detected in
//! the window: T1 1800 s (latest detection minus latest execution, both
//! repeated), T2 600 s, T3 3600 s and T7 900 s.

use purple_api::{
    common::v1::{Event, EventKind, Outcome, TimeWindow},
    metrics::v1::{
        DurationStats, GetMttdRequest, GetMttrRequest, GetOperationalSummaryRequest,
        GetOperationalTrendRequest, GetRejectionRatesRequest, ListAuditEventsRequest, MetricFilter,
        RecordEventsRequest, metrics_service_client::MetricsServiceClient,
    },
};
use tonic::Code;

use crate::helpers::{AuthChannel, Cost, TestApp, Trace, spawn_app, ts};

const B: i64 = 1_772_409_600; // 2026-03-02T00:00:00Z, a Monday
const H: i64 = 3_600;
const D: i64 = 86_400;

/// An event; `subject` is the test id, or the remediation id for
/// remediation events.
fn ev(id: &str, kind: &str, subject: &str, technique: &str, at: i64) -> Event {
    let remediation = kind.starts_with("remediation.");
    Event {
        event_id: id.into(),
        event_kind: EventKind::from_key(kind).unwrap_or(EventKind::Unspecified) as i32,
        occurred_at: Some(ts(at)),
        test_id: if remediation {
            String::new()
        } else {
            subject.into()
        },
        remediation_id: if remediation {
            subject.into()
        } else {
            String::new()
        },
        technique_id: technique.into(),
        ..Default::default()
    }
}

fn with_outcome(mut e: Event, outcome: Outcome) -> Event {
    e.outcome = outcome as i32;
    e
}

fn with_side(mut e: Event, side: &str) -> Event {
    e.side = side.into();
    e
}

fn in_campaign(mut e: Event, campaign: &str) -> Event {
    e.campaign_id = campaign.into();
    e
}

pub fn dataset() -> Vec<Event> {
    use Outcome::*;
    vec![
        // T1: executed twice, detected twice, rejected once on red; latest pair: 1800 s.
        in_campaign(ev("t1-x1", "test.red_executed", "T1", "T1059", B + H), "c1"),
        in_campaign(
            with_side(
                ev("t1-rj", "test.rejected", "T1", "T1059", B + H + H / 2),
                "red",
            ),
            "c1",
        ),
        in_campaign(
            with_outcome(
                ev("t1-d1", "test.detected", "T1", "T1059", B + H + 600),
                Detected,
            ),
            "c1",
        ),
        in_campaign(
            ev("t1-x2", "test.red_executed", "T1", "T1059", B + 2 * H),
            "c1",
        ),
        in_campaign(
            with_outcome(
                ev("t1-d2", "test.detected", "T1", "T1059", B + 2 * H + 1_800),
                Detected,
            ),
            "c1",
        ),
        in_campaign(
            with_outcome(
                ev(
                    "t1-bc",
                    "test.blue_completed",
                    "T1",
                    "T1059",
                    B + 2 * H + 2_700,
                ),
                Detected,
            ),
            "c1",
        ),
        in_campaign(
            with_outcome(
                ev("t1-v", "test.validated", "T1", "T1059", B + 3 * H),
                Detected,
            ),
            "c1",
        ),
        // T2: 600 s, rejected once on blue.
        ev("t2-x", "test.red_executed", "T2", "T1059", B + D),
        ev("t2-d", "test.detected", "T2", "T1059", B + D + 600),
        with_side(
            ev("t2-rj", "test.rejected", "T2", "T1059", B + D + H / 2),
            "blue",
        ),
        with_outcome(
            ev("t2-bc", "test.blue_completed", "T2", "T1059", B + D + 2_880),
            Blocked,
        ),
        with_outcome(
            ev("t2-v", "test.validated", "T2", "T1059", B + D + H),
            Blocked,
        ),
        // T3: 3600 s, validated in week 2.
        in_campaign(
            ev("t3-x", "test.red_executed", "T3", "T1003", B + 2 * D),
            "c1",
        ),
        in_campaign(
            ev("t3-d", "test.detected", "T3", "T1003", B + 2 * D + H),
            "c1",
        ),
        in_campaign(
            with_outcome(
                ev("t3-bc", "test.blue_completed", "T3", "T1003", B + 7 * D),
                Detected,
            ),
            "c1",
        ),
        in_campaign(
            with_outcome(
                ev("t3-v", "test.validated", "T3", "T1003", B + 7 * D + H),
                Detected,
            ),
            "c1",
        ),
        // T4: logged, rejected twice on red (counts once): no detect time.
        ev("t4-x", "test.red_executed", "T4", "T1003", B + 50 * H),
        with_side(
            ev("t4-rj1", "test.rejected", "T4", "T1003", B + 50 * H + 1_800),
            "red",
        ),
        with_side(
            ev("t4-rj2", "test.rejected", "T4", "T1003", B + 50 * H + 2_520),
            "red",
        ),
        with_outcome(
            ev(
                "t4-bc",
                "test.blue_completed",
                "T4",
                "T1003",
                B + 50 * H + 3_240,
            ),
            Logged,
        ),
        with_outcome(
            ev("t4-v", "test.validated", "T4", "T1003", B + 51 * H),
            Logged,
        ),
        // T5: validated before the window (counts in the cumulative only).
        ev("t5-x", "test.red_executed", "T5", "T1003", B - 10 * D),
        ev("t5-d", "test.detected", "T5", "T1003", B - 10 * D + 120),
        with_outcome(
            ev("t5-v", "test.validated", "T5", "T1003", B - 9 * D),
            Blocked,
        ),
        // T6: validated after the window.
        ev("t6-x", "test.red_executed", "T6", "T1003", B + 20 * D),
        ev("t6-d", "test.detected", "T6", "T1003", B + 20 * D + 60),
        with_outcome(
            ev("t6-v", "test.validated", "T6", "T1003", B + 21 * D + H),
            Detected,
        ),
        // T7: 900 s, week 2.
        ev("t7-x", "test.red_executed", "T7", "T1003", B + 8 * D),
        ev("t7-d", "test.detected", "T7", "T1003", B + 8 * D + 900),
        with_outcome(
            ev(
                "t7-bc",
                "test.blue_completed",
                "T7",
                "T1003",
                B + 8 * D + 1_800,
            ),
            Detected,
        ),
        with_outcome(
            ev("t7-v", "test.validated", "T7", "T1003", B + 8 * D + H),
            Detected,
        ),
        // Remediations: 7200 s, 3 days (opened before the window), 60 s; R3 completes after.
        ev("r1-o", "remediation.opened", "R1", "T1003", B + 3 * H),
        ev("r1-c", "remediation.completed", "R1", "T1003", B + 5 * H),
        ev("r2-o", "remediation.opened", "R2", "T1003", B - 2 * D),
        ev("r2-c", "remediation.completed", "R2", "T1003", B + D),
        ev("r3-o", "remediation.opened", "R3", "T1003", B + D),
        ev("r3-c", "remediation.completed", "R3", "T1003", B + 30 * D),
        ev("r4-o", "remediation.opened", "R4", "T1003", B + 2 * D),
        ev("r4-s", "remediation.started", "R4", "T1003", B + 2 * D + 10),
        ev(
            "r4-c",
            "remediation.completed",
            "R4",
            "T1003",
            B + 2 * D + 60,
        ),
    ]
}

fn window(from: i64, to: i64) -> Option<MetricFilter> {
    Some(MetricFilter {
        window: Some(TimeWindow {
            from: Some(ts(from)),
            to: Some(ts(to)),
        }),
        ..Default::default()
    })
}

fn client(app: &TestApp) -> MetricsServiceClient<AuthChannel> {
    MetricsServiceClient::new(app.channel.clone())
}

async fn seeded() -> (TestApp, MetricsServiceClient<AuthChannel>) {
    let app = spawn_app().await;
    let mut metrics = client(&app);
    let recorded = metrics
        .record_events(RecordEventsRequest { events: dataset() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((recorded.recorded, recorded.duplicates), (40, 0));
    (app, metrics)
}

fn assert_close(actual: Option<f64>, expected: f64) {
    let actual = actual.expect("a value");
    assert!((actual - expected).abs() < 1e-6, "{actual} != {expected}");
}

fn assert_stats(stats: &DurationStats, count: i64, mean: f64, p50: f64, p90: f64) {
    assert_eq!(stats.count, count);
    assert_close(stats.mean_seconds, mean);
    assert_close(stats.p50_seconds, p50);
    assert_close(stats.p90_seconds, p90);
}

#[tokio::test]
async fn mttd_uses_the_latest_detection_and_execution_of_tests_validated_in_the_window() {
    let (_app, mut metrics) = seeded().await;
    let mttd = metrics
        .get_mttd(GetMttdRequest {
            filter: window(B, B + 21 * D),
        })
        .await
        .unwrap()
        .into_inner()
        .mttd
        .unwrap();
    // [600, 900, 1800, 3600]: p50 at 1.5 -> 1350, p90 at 2.7 -> 3060.
    assert_stats(&mttd, 4, 1_725.0, 1_350.0, 3_060.0);

    let mut by_technique = window(B, B + 21 * D);
    by_technique.as_mut().unwrap().technique_ids = vec!["T1059".into()];
    let mttd = metrics
        .get_mttd(GetMttdRequest {
            filter: by_technique,
        })
        .await
        .unwrap()
        .into_inner()
        .mttd
        .unwrap();
    assert_stats(&mttd, 2, 1_200.0, 1_200.0, 1_680.0);

    // A set of one: every percentile is that value.
    let mut one = window(B, B + 21 * D);
    one.as_mut().unwrap().technique_ids = vec!["T1059".into()];
    one.as_mut().unwrap().campaign_id = "c1".into();
    let mttd = metrics
        .get_mttd(GetMttdRequest { filter: one })
        .await
        .unwrap()
        .into_inner()
        .mttd
        .unwrap();
    assert_stats(&mttd, 1, 1_800.0, 1_800.0, 1_800.0);
}

#[tokio::test]
async fn mttr_counts_remediations_completed_in_the_window() {
    let (_app, mut metrics) = seeded().await;
    let mttr = metrics
        .get_mttr(GetMttrRequest {
            filter: window(B, B + 21 * D),
        })
        .await
        .unwrap()
        .into_inner()
        .mttr
        .unwrap();
    // [60, 7200, 259200]: p50 at 1 -> 7200, p90 at 1.8 -> 208800.
    assert_stats(&mttr, 3, 88_820.0, 7_200.0, 208_800.0);
}

#[tokio::test]
async fn rejection_rates_count_distinct_tests_per_side() {
    let (_app, mut metrics) = seeded().await;
    let rates = metrics
        .get_rejection_rates(GetRejectionRatesRequest {
            filter: window(B, B + 21 * D),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            rates.validated,
            rates.rejected,
            rates.red_rejected,
            rates.red_executed,
            rates.blue_rejected,
            rates.blue_completed
        ),
        (5, 3, 2, 6, 1, 5)
    );
    // T6 executed inside the window although it was validated after it.
    assert_close(Some(rates.red_rate), 2.0 / 6.0);
    assert_close(Some(rates.blue_rate), 0.2);
}

/// Rejection rates over many windows (within a day, across one midnight,
/// on midnights, over weeks, edges on an event's instant) equal a count of
/// distinct tests per mark made here from the events: the unfiltered rates
/// add kept day counts to the partial ends and subtract repeats, the
/// filtered ones count marks, and both must agree with the events, also
/// after late events land before earlier ones and a batch is sent twice.
#[tokio::test]
async fn rejection_rates_equal_distinct_tests_counted_from_the_events_in_any_window() {
    let app = spawn_app().await;
    let mut metrics = client(&app);
    // (test, mark kind, side, instant, campaign): 30 tests over 6 days,
    // each with marks repeated within a day and across days.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let kinds = [
        "test.validated",
        "test.rejected",
        "test.red_executed",
        "test.blue_completed",
    ];
    let mut events = Vec::new();
    let mut marks: Vec<(String, &str, &str, i64, &str)> = Vec::new();
    for t in 0..30 {
        let test = format!("RR{t}");
        let campaign = if t % 3 == 0 { "c1" } else { "c2" };
        for k in 0..8 {
            let kind = kinds[next(4) as usize];
            // Some on a midnight exactly, the rest anywhere in 6 days.
            let at = if k == 0 {
                B + next(6) as i64 * D
            } else {
                B + next(6 * D as u64) as i64
            };
            let side = if kind == "test.rejected" {
                ["red", "blue"][next(2) as usize]
            } else {
                ""
            };
            let mut e = in_campaign(
                ev(&format!("{test}-{k}"), kind, &test, "T1003", at),
                campaign,
            );
            if matches!(kind, "test.validated" | "test.blue_completed") {
                e = with_outcome(e, Outcome::Detected);
            }
            events.push(with_side(e, side));
            marks.push((test.clone(), kind, side, at, campaign));
        }
    }
    // Later events first, then the earlier ones, then the first half again.
    let (early, late) = events.split_at(events.len() / 2);
    for batch in [late, early, early] {
        metrics
            .record_events(RecordEventsRequest {
                events: batch.to_vec(),
            })
            .await
            .unwrap();
    }

    let expected = |from: i64, to: i64, campaign: &str| {
        let tests = |kind: &str, side: Option<&str>| {
            marks
                .iter()
                .filter(|(_, k, s, at, c)| {
                    *k == kind
                        && side.is_none_or(|side| *s == side)
                        && (from..to).contains(at)
                        && (campaign.is_empty() || *c == campaign)
                })
                .map(|m| m.0.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len() as i64
        };
        (
            tests("test.validated", None),
            tests("test.rejected", None),
            tests("test.rejected", Some("red")),
            tests("test.red_executed", None),
            tests("test.rejected", Some("blue")),
            tests("test.blue_completed", None),
        )
    };
    let instant = marks[7].3;
    let mut windows = vec![
        (B, B + 6 * D),
        (B - D, B + 10 * D),
        (B + D, B + 3 * D),
        (B + D / 2, B + D / 2 + H),
        (B + D / 2, B + 3 * D / 2),
        (B + D - 1, B + D + 1),
        (B + 5 * H, B + 4 * D + 7 * H),
        (instant, instant + 1),
        (instant, B + 6 * D),
        (B, instant),
        (instant + 1, instant + 2 * D + 1),
    ];
    for _ in 0..20 {
        let from = B - D + next(8 * D as u64) as i64;
        windows.push((from, from + 1 + next(4 * D as u64) as i64));
    }
    for (from, to) in windows {
        for campaign in ["", "c1"] {
            let mut filter = window(from, to);
            filter.as_mut().unwrap().campaign_id = campaign.into();
            let r = metrics
                .get_rejection_rates(GetRejectionRatesRequest { filter })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                (
                    r.validated,
                    r.rejected,
                    r.red_rejected,
                    r.red_executed,
                    r.blue_rejected,
                    r.blue_completed
                ),
                expected(from, to, campaign),
                "window [B{:+}s, B{:+}s) campaign {campaign:?}",
                from - B,
                to - B
            );
        }
    }
}

#[tokio::test]
async fn weekly_trend_covers_every_iso_week_including_empty_ones() {
    let (_app, mut metrics) = seeded().await;
    let weeks = metrics
        .get_operational_trend(GetOperationalTrendRequest {
            filter: window(B, B + 21 * D),
        })
        .await
        .unwrap()
        .into_inner()
        .weeks;
    let labels: Vec<&str> = weeks.iter().map(|w| w.iso_week.as_str()).collect();
    assert_eq!(labels, ["2026-W10", "2026-W11", "2026-W12"]);
    assert_eq!(weeks[0].week_start, Some(ts(B)));
    let counts: Vec<(i64, i64)> = weeks
        .iter()
        .map(|w| (w.validated, w.cumulative_validated))
        .collect();
    assert_eq!(counts, [(3, 4), (2, 6), (0, 6)]);
    assert_close(Some(weeks[0].detection_rate), 2.0 / 3.0);
    assert_close(Some(weeks[1].detection_rate), 1.0);
    assert_eq!(weeks[2].detection_rate, 0.0);
    assert_stats(
        weeks[0].mttd.as_ref().unwrap(),
        2,
        1_200.0,
        1_200.0,
        1_680.0,
    );
    assert_stats(
        weeks[1].mttd.as_ref().unwrap(),
        2,
        2_250.0,
        2_250.0,
        3_330.0,
    );
    let empty = weeks[2].mttd.as_ref().unwrap();
    assert_eq!(
        (empty.count, empty.mean_seconds, empty.p50_seconds),
        (0, None, None)
    );
}

#[tokio::test]
async fn trend_weeks_are_clipped_to_a_window_that_starts_mid_week() {
    let (_app, mut metrics) = seeded().await;
    // Wednesday B+2d to Wednesday B+9d: week 1 counts only from B+2d on.
    let weeks = metrics
        .get_operational_trend(GetOperationalTrendRequest {
            filter: window(B + 2 * D, B + 9 * D),
        })
        .await
        .unwrap()
        .into_inner()
        .weeks;
    let counts: Vec<(i64, i64)> = weeks
        .iter()
        .map(|w| (w.validated, w.cumulative_validated))
        .collect();
    // Before B+2d: T5, T1, T2. Week 1 clipped: T4. Week 2 up to B+9d: T3, T7.
    assert_eq!(counts, [(1, 4), (2, 6)]);
    assert_eq!(weeks[0].detection_rate, 0.0);
}

#[tokio::test]
async fn an_empty_window_has_zero_counts_and_no_means() {
    let (_app, mut metrics) = seeded().await;
    let summary = metrics
        .get_operational_summary(GetOperationalSummaryRequest {
            filter: window(B - 400 * D, B - 390 * D),
        })
        .await
        .unwrap()
        .into_inner();
    for stats in [summary.mttd.unwrap(), summary.mttr.unwrap()] {
        assert_eq!(
            stats,
            DurationStats {
                count: 0,
                ..Default::default()
            }
        );
    }
    let rejection = summary.rejection.unwrap();
    assert_eq!(
        (rejection.validated, rejection.red_rate, rejection.blue_rate),
        (0, 0.0, 0.0)
    );
    assert!(
        summary
            .weeks
            .iter()
            .all(|w| w.validated == 0 && w.cumulative_validated == 0)
    );
    // B-400d is a Sunday and B-390d a Wednesday: three ISO weeks touched.
    assert_eq!(summary.weeks.len(), 3);
}

#[tokio::test]
async fn record_events_is_idempotent_and_all_or_nothing() {
    let (_app, mut metrics) = seeded().await;
    let again = metrics
        .record_events(RecordEventsRequest { events: dataset() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.recorded, again.duplicates), (0, 40));

    let mut bad = vec![
        ev("n1", "test.created", "T9", "T1003", B),
        ev("n2", "test.created", "T9", "T1003", B),
        ev("n3", "test.exploded", "T9", "T1003", B),
    ];
    let err = metrics
        .record_events(RecordEventsRequest {
            events: bad.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("events[2].event_kind"),
        "{}",
        err.message()
    );
    // A sender of the deprecated dotted name is still understood.
    #[allow(deprecated)]
    {
        bad[2].kind = "test.created".into();
    }
    bad[2].occurred_at = None;
    let err = metrics
        .record_events(RecordEventsRequest { events: bad })
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("events[2].occurred_at"),
        "{}",
        err.message()
    );

    let audit = metrics
        .list_audit_events(ListAuditEventsRequest {
            test_id: "T9".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(audit.events.is_empty(), "a refused batch wrote nothing");
}

#[tokio::test]
async fn audit_trail_is_newest_first_filtered_and_paged() {
    let (_app, mut metrics) = seeded().await;
    let first = metrics
        .list_audit_events(ListAuditEventsRequest {
            test_id: "T1".into(),
            page_size: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = first.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["t1-v", "t1-bc", "t1-d2", "t1-x2"]);
    assert_eq!(first.events[0].campaign_id, "c1");
    assert_eq!(first.events[0].outcome, Outcome::Detected as i32);
    let rest = metrics
        .list_audit_events(ListAuditEventsRequest {
            test_id: "T1".into(),
            page_size: 4,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = rest.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["t1-rj", "t1-d1", "t1-x1"]);
    assert!(rest.next_page_token.is_empty());
    let rejections = metrics
        .list_audit_events(ListAuditEventsRequest {
            event_kind: EventKind::TestRejected as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rejections.events.len(), 4);
    #[allow(deprecated)]
    let legacy = ListAuditEventsRequest {
        kind: "test.rejected".into(),
        ..Default::default()
    };
    let by_name = metrics
        .list_audit_events(legacy)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        by_name.events.len(),
        4,
        "the deprecated name filter still works"
    );
    let unknown = metrics
        .list_audit_events(ListAuditEventsRequest {
            event_kind: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn bad_windows_are_refused_with_the_field() {
    let app = spawn_app().await;
    let mut metrics = client(&app);
    let err = metrics
        .get_mttd(GetMttdRequest {
            filter: window(B, B),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::InvalidArgument,
            "filter.window: from must be before to"
        )
    );
    let err = metrics
        .get_mttd(GetMttdRequest { filter: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = metrics
        .get_operational_trend(GetOperationalTrendRequest {
            filter: window(B - 4_000 * D, B),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("at most 530"), "{}", err.message());
}

/// Events of `tests` synthetic tests, each executed, detected and
/// validated within the window.
fn synthetic(tests: usize) -> Vec<Event> {
    (0..tests)
        .flat_map(|i| {
            let at = B + (i as i64 % 20) * D + 60 * i as i64 % D;
            let test = format!("S{i}");
            vec![
                ev(
                    &format!("{test}-x"),
                    "test.red_executed",
                    &test,
                    "T1003",
                    at,
                ),
                ev(
                    &format!("{test}-d"),
                    "test.detected",
                    &test,
                    "T1003",
                    at + 60 + i as i64,
                ),
                with_outcome(
                    ev(
                        &format!("{test}-v"),
                        "test.validated",
                        &test,
                        "T1003",
                        at + H,
                    ),
                    Outcome::Detected,
                ),
                with_side(
                    ev(
                        &format!("{test}-r"),
                        "test.rejected",
                        &test,
                        "T1003",
                        at + 30,
                    ),
                    "red",
                ),
                ev(
                    &format!("R{i}-o"),
                    "remediation.opened",
                    &format!("R{i}"),
                    "T1003",
                    at,
                ),
                ev(
                    &format!("R{i}-c"),
                    "remediation.completed",
                    &format!("R{i}"),
                    "T1003",
                    at + D,
                ),
            ]
        })
        .collect()
}

async fn metric_costs(app: &TestApp) -> Vec<usize> {
    let mut metrics = client(app);
    let mut costs = Vec::new();
    macro_rules! cost {
        ($method:ident, $request:expr, $path:literal) => {{
            let trace = Trace::new($path);
            metrics.$method(trace.request($request)).await.unwrap();
            let cost = Cost::of(&app.trace(&trace).await);
            assert_eq!(cost.rpcs, 1, "{} made no other call", $path);
            costs.push(cost.statements.get("metrics").copied().unwrap_or(0));
        }};
    }
    let w = || window(B, B + 21 * D);
    cost!(
        get_mttd,
        GetMttdRequest { filter: w() },
        "purple.metrics.v1.MetricsService/GetMttd"
    );
    cost!(
        get_mttr,
        GetMttrRequest { filter: w() },
        "purple.metrics.v1.MetricsService/GetMttr"
    );
    cost!(
        get_rejection_rates,
        GetRejectionRatesRequest { filter: w() },
        "purple.metrics.v1.MetricsService/GetRejectionRates"
    );
    cost!(
        get_operational_trend,
        GetOperationalTrendRequest { filter: w() },
        "purple.metrics.v1.MetricsService/GetOperationalTrend"
    );
    cost!(
        get_operational_summary,
        GetOperationalSummaryRequest { filter: w() },
        "purple.metrics.v1.MetricsService/GetOperationalSummary"
    );
    costs
}

#[tokio::test]
async fn each_metric_is_one_statement_at_any_size() {
    for tests in [10, 600] {
        let app = spawn_app().await;
        let mut metrics = client(&app);
        let events = synthetic(tests);
        for chunk in events.chunks(1_000) {
            let trace = Trace::new("purple.metrics.v1.MetricsService/RecordEvents");
            metrics
                .record_events(trace.request(RecordEventsRequest {
                    events: chunk.to_vec(),
                }))
                .await
                .unwrap();
            let cost = Cost::of(&app.trace(&trace).await);
            assert_eq!(
                cost.statements.get("metrics"),
                Some(&5),
                "per batch of {}: the insert (its trigger keeps the marks' day counts), \
                 the tests' milestones and marks (two), the remediations' milestones",
                chunk.len()
            );
        }
        // MTTD, MTTR, rejections, trend: one each; the summary runs the four.
        assert_eq!(
            metric_costs(&app).await,
            [1, 1, 1, 1, 4],
            "with {tests} tests"
        );
        let mttd = metrics
            .get_mttd(GetMttdRequest {
                filter: window(B, B + 21 * D),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            mttd.mttd.unwrap().count > 0,
            "the metrics read real data at {tests} tests"
        );
    }
}

/// Identical summaries asked at once share their computation (a request
/// joins the run that has not started yet, so it still reads everything
/// committed before it): sixteen at once answer the same and cost far
/// fewer statements than sixteen runs of four; the next one after an event
/// is recorded counts it.
#[tokio::test]
async fn identical_summaries_at_once_share_a_run_and_still_read_what_came_before() {
    let app = spawn_app().await;
    let mut metrics = client(&app);
    for chunk in synthetic(600).chunks(1_000) {
        metrics
            .record_events(RecordEventsRequest {
                events: chunk.to_vec(),
            })
            .await
            .unwrap();
    }
    let filter = || window(B, B + 400 * D);
    let path = "purple.metrics.v1.MetricsService/GetOperationalSummary";
    let traces: Vec<Trace> = (0..16).map(|_| Trace::new(path)).collect();
    let answers = futures::future::join_all(traces.iter().map(|trace| {
        let mut metrics = client(&app);
        async move {
            metrics
                .get_operational_summary(
                    trace.request(GetOperationalSummaryRequest { filter: filter() }),
                )
                .await
                .unwrap()
                .into_inner()
        }
    }))
    .await;
    assert!(answers.iter().all(|a| *a == answers[0]));
    let mut statements = 0;
    for trace in &traces {
        statements += Cost::of(&app.trace(trace).await)
            .statements
            .get("metrics")
            .copied()
            .unwrap_or(0);
    }
    assert!(
        (4..=32).contains(&statements),
        "16 summaries cost {statements} statements, against 64 run one by one"
    );

    let before = answers[0].mttd.unwrap().count;
    metrics
        .record_events(RecordEventsRequest {
            events: vec![
                ev("late-x", "test.red_executed", "late", "T1003", B + 200 * D),
                ev("late-d", "test.detected", "late", "T1003", B + 200 * D + 60),
                with_outcome(
                    ev("late-v", "test.validated", "late", "T1003", B + 200 * D + H),
                    Outcome::Detected,
                ),
            ],
        })
        .await
        .unwrap();
    let after = metrics
        .get_operational_summary(GetOperationalSummaryRequest { filter: filter() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.mttd.unwrap().count, before + 1, "{after:?}");
}

#[tokio::test]
async fn purple_metrics_prints_the_summary_as_a_table() {
    let (app, _metrics) = seeded().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_purple"))
        .args([
            "metrics",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-23T00:00:00Z",
        ])
        .args(["--server", &format!("http://{}", app.addr)])
        .env(
            "PURPLE_TOKEN",
            app.token("viewer-1", purple_api::common::v1::Role::Viewer),
        )
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout).unwrap();
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("MTTD"),
        ["MTTD", "4", "1725.0s", "1350.0s", "3060.0s"],
        "{table}"
    );
    assert_eq!(
        row("MTTR"),
        ["MTTR", "3", "88820.0s", "7200.0s", "208800.0s"],
        "{table}"
    );
    assert_eq!(
        row("2026-W11"),
        ["2026-W11", "2", "6", "100.0%", "2250.0s"],
        "{table}"
    );
    assert!(table.contains("red 2/6 (33.3%)"), "{table}");
}
