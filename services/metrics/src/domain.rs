//! The rules of the event log and of metric windows (docs/design.md §5):
//! which events are accepted (known kinds, their required fields, sane
//! instants and sizes), what a window and a filter are, and how ISO weeks
//! are cut. No SQL, no gRPC; the kinds and outcomes are the shared
//! vocabulary of `purple.common.v1`.

use std::collections::BTreeMap;

use purple_api::common::v1::{EventKind, Outcome};
use purple_runtime::time::{MICROS_PER_DAY, Micros};
use serde::Serialize;

use crate::error::MetricsError;

/// A validated event, as the store writes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NewEvent {
    /// Deduplication key.
    pub event_id: String,
    /// Wire name of the kind.
    pub kind: &'static str,
    /// When it happened, microseconds.
    pub occurred_at: Micros,
    /// The test, if any.
    pub test_id: Option<String>,
    /// The technique.
    pub technique_id: Option<String>,
    /// The campaign, if any.
    pub campaign_id: Option<String>,
    /// The remediation (remediation events).
    pub remediation_id: Option<String>,
    /// Outcome key, when the kind carries one.
    pub outcome: Option<&'static str>,
    /// `red` or `blue` for rejections.
    pub side: Option<&'static str>,
    /// Who caused it.
    pub actor_id: Option<String>,
    /// Details, as JSON object text.
    pub attributes: String,
}

/// The earliest instant an event may claim (2000-01-01T00:00:00Z).
pub const EARLIEST: Micros = Micros::PLAUSIBLE_FROM;
/// How far ahead of the receiver's clock an event may be (clock skew).
const MAX_SKEW: i64 = MICROS_PER_DAY;
/// The longest id (event, test, technique, campaign, remediation, actor).
const MAX_ID_LEN: usize = 128;
/// The most bytes of attributes (keys and values) one event carries.
const MAX_ATTRIBUTE_BYTES: usize = 16 * 1024;

/// What a received event looks like before validation.
pub struct RawEvent<'a> {
    /// Deduplication key.
    pub event_id: &'a str,
    /// The kind, Unspecified when none or an unknown name was given.
    pub kind: EventKind,
    /// The name the sender gave, for the error message.
    pub kind_name: &'a str,
    /// When, if given.
    pub occurred_at: Option<Result<Micros, String>>,
    /// The test.
    pub test_id: &'a str,
    /// The technique.
    pub technique_id: &'a str,
    /// The campaign.
    pub campaign_id: &'a str,
    /// The remediation.
    pub remediation_id: &'a str,
    /// The outcome.
    pub outcome: Outcome,
    /// The side.
    pub side: &'a str,
    /// The actor.
    pub actor_id: &'a str,
    /// Details.
    pub attributes: &'a std::collections::HashMap<String, String>,
}

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// Checks one event; `index` names it in the error (`events[3].kind`).
pub fn validate_event(
    index: usize,
    raw: &RawEvent<'_>,
    now: Micros,
) -> Result<NewEvent, MetricsError> {
    let field = |name: &str| format!("events[{index}].{name}");
    let invalid = |name: &str, reason: String| MetricsError::Invalid {
        field: field(name),
        reason,
    };
    let required = |name: &str, value: &str| {
        if value.is_empty() {
            Err(invalid(name, "required for this kind".into()))
        } else {
            Ok(())
        }
    };

    if raw.event_id.is_empty() || raw.event_id.len() > MAX_ID_LEN {
        return Err(invalid("event_id", "must be 1 to 128 characters".into()));
    }
    for (name, value) in [
        ("test_id", raw.test_id),
        ("technique_id", raw.technique_id),
        ("campaign_id", raw.campaign_id),
        ("remediation_id", raw.remediation_id),
        ("actor_id", raw.actor_id),
    ] {
        if value.len() > MAX_ID_LEN || value.contains('\0') {
            return Err(invalid(
                name,
                "must be at most 128 characters, without NUL".into(),
            ));
        }
    }
    let attribute_bytes: usize = raw.attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
    if attribute_bytes > MAX_ATTRIBUTE_BYTES
        || raw
            .attributes
            .iter()
            .any(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Err(invalid(
            "attributes",
            format!("must total at most {MAX_ATTRIBUTE_BYTES} bytes, without NUL"),
        ));
    }
    let kind = match raw.kind {
        EventKind::Unspecified => {
            let shown: String = raw.kind_name.chars().take(40).collect();
            return Err(invalid(
                "event_kind",
                format!("unknown or missing kind {shown:?}"),
            ));
        }
        kind => kind,
    };
    let occurred_at = match &raw.occurred_at {
        None => return Err(invalid("occurred_at", "required".into())),
        Some(Err(reason)) => return Err(invalid("occurred_at", reason.clone())),
        Some(Ok(at)) if *at < EARLIEST => {
            return Err(invalid(
                "occurred_at",
                "before 2000-01-01 is not a plausible event time".into(),
            ));
        }
        Some(Ok(at)) if *at > now + MAX_SKEW => {
            return Err(invalid(
                "occurred_at",
                "more than a day in the future".into(),
            ));
        }
        Some(Ok(at)) => *at,
    };

    required("technique_id", raw.technique_id)?;
    if kind.is_remediation() {
        required("remediation_id", raw.remediation_id)?;
    } else {
        required("test_id", raw.test_id)?;
    }

    let outcome = match kind {
        EventKind::TestBlueCompleted | EventKind::TestValidated => Some(
            raw.outcome
                .key()
                .ok_or_else(|| invalid("outcome", "required for this kind".into()))?,
        ),
        EventKind::TestDetected => match raw.outcome {
            Outcome::Unspecified => None,
            o if o.is_detection() => o.key(),
            _ => {
                return Err(invalid(
                    "outcome",
                    "test.detected carries blocked or detected".into(),
                ));
            }
        },
        _ => raw.outcome.key(),
    };
    let side = match (kind, raw.side) {
        (EventKind::TestRejected, "red") => Some("red"),
        (EventKind::TestRejected, "blue") => Some("blue"),
        (EventKind::TestRejected, _) => {
            return Err(invalid("side", "must be \"red\" or \"blue\"".into()));
        }
        (_, "") => None,
        (_, _) => return Err(invalid("side", "only test.rejected carries a side".into())),
    };
    let attributes: BTreeMap<&String, &String> = raw.attributes.iter().collect();

    Ok(NewEvent {
        event_id: raw.event_id.to_owned(),
        kind: kind.key().unwrap_or_default(),
        occurred_at,
        test_id: some(raw.test_id),
        technique_id: some(raw.technique_id),
        campaign_id: some(raw.campaign_id),
        remediation_id: some(raw.remediation_id),
        outcome,
        side,
        actor_id: some(raw.actor_id),
        attributes: serde_json::to_string(&attributes).expect("a string map serializes"),
    })
}

/// Which events a metric reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Inclusive start.
    pub from: Micros,
    /// Exclusive end.
    pub to: Micros,
    /// Only these techniques (empty: all).
    pub technique_ids: Vec<String>,
    /// Only this campaign (empty: all).
    pub campaign_id: String,
}

/// One ISO week in microseconds.
pub const WEEK: i64 = 7 * MICROS_PER_DAY;

/// The longest window a trend covers (ten years of weeks).
pub const MAX_TREND_WEEKS: i64 = 530;

/// Monday 00:00 UTC of the ISO week containing `at`. 1970-01-05 was a
/// Monday; Euclidean division keeps instants before it right too.
pub fn iso_week_start(at: Micros) -> Micros {
    const FIRST_MONDAY: Micros = Micros::from_micros(4 * MICROS_PER_DAY);
    FIRST_MONDAY + (at - FIRST_MONDAY).div_euclid(WEEK) * WEEK
}

/// A duration distribution in seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DurationStats {
    /// Items.
    pub count: i64,
    /// Mean, when count > 0.
    pub mean: Option<f64>,
    /// Continuous median.
    pub p50: Option<f64>,
    /// Continuous 90th percentile.
    pub p90: Option<f64>,
}

impl DurationStats {
    /// The distribution of durations given in microseconds, ascending,
    /// with their mean in seconds. Percentiles are continuous (PostgreSQL's
    /// `percentile_cont`): position p·(n−1) in the sorted values,
    /// interpolated between the two closest ranks; the position's whole
    /// and fractional parts are taken in integers so the value is exact
    /// whatever n.
    pub fn of_sorted(mean: f64, micros: &[i64]) -> Self {
        if micros.is_empty() {
            return Self::default();
        }
        let seconds = |i: usize| micros[i] as f64 / 1_000_000.0;
        let percentile = |p: usize| {
            let m = micros.len() - 1;
            let lo = p * m / 100;
            let frac = (p * m - 100 * lo) as f64 / 100.0;
            let low = seconds(lo);
            let high = if lo < m { seconds(lo + 1) } else { low };
            low + frac * (high - low)
        };
        Self {
            count: micros.len() as i64,
            mean: Some(mean),
            p50: Some(percentile(50)),
            p90: Some(percentile(90)),
        }
    }
}

/// Rejection counts over a window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rejections {
    /// Tests validated.
    pub validated: i64,
    /// Distinct tests rejected.
    pub rejected: i64,
    /// Distinct tests rejected on the red side.
    pub red_rejected: i64,
    /// Distinct tests executed by red.
    pub red_executed: i64,
    /// Distinct tests rejected on the blue side.
    pub blue_rejected: i64,
    /// Distinct tests completed by blue.
    pub blue_completed: i64,
}

/// A share that is 0 over an empty denominator.
pub fn rate(numerator: i64, denominator: i64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// One week of the trend.
#[derive(Clone, Debug, PartialEq)]
pub struct Week {
    /// Monday 00:00 UTC.
    pub start: Micros,
    /// Tests validated in the clipped week.
    pub validated: i64,
    /// Validated from the start of the log to min(week end, window end).
    pub cumulative_validated: i64,
    /// Of those validated this week, blocked or detected.
    pub detections: i64,
    /// MTTD of the tests validated this week.
    pub mttd: DurationStats,
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const NOW: Micros = Micros::from_micros(1_780_000_000_000_000);

    fn raw<'a>(kind: &'a str, attrs: &'a HashMap<String, String>) -> RawEvent<'a> {
        RawEvent {
            event_id: "e1",
            kind: EventKind::from_key(kind).unwrap_or(EventKind::Unspecified),
            kind_name: kind,
            occurred_at: Some(Ok(NOW - 1)),
            test_id: "t1",
            technique_id: "T1059",
            campaign_id: "",
            remediation_id: "",
            outcome: Outcome::Unspecified,
            side: "",
            actor_id: "",
            attributes: attrs,
        }
    }

    #[test]
    fn percentiles_are_continuous_between_ranks() {
        // Ten values 1..=10 s: p50 at position 4.5 (5.5 s), p90 at 8.1
        // (9.1 s), as PostgreSQL's percentile_cont answers.
        let micros: Vec<i64> = (1..=10).map(|s| s * 1_000_000).collect();
        let stats = DurationStats::of_sorted(5.5, &micros);
        assert_eq!(stats.count, 10);
        assert_eq!(stats.p50, Some(5.5));
        assert!((stats.p90.unwrap() - 9.1).abs() < 1e-9, "{stats:?}");
        // One value is every percentile; none is no distribution.
        let one = DurationStats::of_sorted(2.0, &[2_000_000]);
        assert_eq!((one.p50, one.p90), (Some(2.0), Some(2.0)));
        assert_eq!(DurationStats::of_sorted(0.0, &[]), DurationStats::default());
        // Two values: p90 is 90 % of the way from the first to the second.
        let two = DurationStats::of_sorted(5.0, &[0, 10_000_000]);
        assert_eq!((two.p50, two.p90), (Some(5.0), Some(9.0)));
    }

    fn field_of(err: MetricsError) -> String {
        match err {
            MetricsError::Invalid { field, .. } => field,
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn iso_weeks_start_on_monday_midnight_utc() {
        // 2026-03-04 (a Wednesday) 15:00 UTC -> Monday 2026-03-02 00:00 UTC.
        let at = Micros::from_micros;
        let wednesday = at(1_772_636_400_000_000);
        assert_eq!(iso_week_start(wednesday), at(1_772_409_600_000_000));
        // A Monday at midnight is its own week start.
        assert_eq!(
            iso_week_start(at(1_772_409_600_000_000)),
            at(1_772_409_600_000_000)
        );
        // Before the first Monday of 1970: the Monday before, 1969-12-29.
        assert_eq!(iso_week_start(Micros::EPOCH), at(-3 * MICROS_PER_DAY));
    }

    #[test]
    fn events_are_checked_field_by_field() {
        let attrs = HashMap::new();
        assert!(validate_event(0, &raw("test.red_started", &attrs), NOW).is_ok());
        assert_eq!(
            field_of(validate_event(4, &raw("test.nope", &attrs), NOW).unwrap_err()),
            "events[4].event_kind"
        );
        assert_eq!(
            field_of(validate_event(0, &raw("test.validated", &attrs), NOW).unwrap_err()),
            "events[0].outcome"
        );
        assert_eq!(
            field_of(validate_event(0, &raw("test.rejected", &attrs), NOW).unwrap_err()),
            "events[0].side"
        );
        assert_eq!(
            field_of(validate_event(0, &raw("remediation.opened", &attrs), NOW).unwrap_err()),
            "events[0].remediation_id"
        );
        let mut late = raw("test.created", &attrs);
        late.occurred_at = Some(Ok(NOW + 2 * MICROS_PER_DAY));
        assert_eq!(
            field_of(validate_event(1, &late, NOW).unwrap_err()),
            "events[1].occurred_at"
        );
        let mut long = raw("test.created", &attrs);
        let huge = "x".repeat(200);
        long.actor_id = &huge;
        assert_eq!(
            field_of(validate_event(3, &long, NOW).unwrap_err()),
            "events[3].actor_id"
        );
        let mut missing = raw("test.created", &attrs);
        missing.occurred_at = None;
        assert_eq!(
            field_of(validate_event(1, &missing, NOW).unwrap_err()),
            "events[1].occurred_at"
        );
        let mut undetected = raw("test.detected", &attrs);
        undetected.outcome = Outcome::Logged;
        assert_eq!(
            field_of(validate_event(2, &undetected, NOW).unwrap_err()),
            "events[2].outcome"
        );
    }

    #[test]
    fn rates_over_nothing_are_zero() {
        assert_eq!(rate(3, 0), 0.0);
        assert_eq!(rate(1, 4), 0.25);
    }
}
