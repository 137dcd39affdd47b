//! Instants as the stores keep them (BIGINT microseconds since the Unix
//! epoch, identical on SQLite and PostgreSQL) and as the API carries them
//! (`google.protobuf.Timestamp`).

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// Microseconds in one day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The current instant, truncated to microseconds.
pub fn now_micros() -> Micros {
    Utc::now().timestamp_micros()
}

/// A chrono instant as microseconds (sub-microsecond part dropped).
pub fn micros(at: DateTime<Utc>) -> Micros {
    at.timestamp_micros()
}

/// Microseconds back to a chrono instant.
pub fn datetime(micros: Micros) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Microseconds as a protobuf timestamp.
pub fn timestamp(micros: Micros) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// An optional instant as an optional timestamp.
pub fn timestamp_opt(micros: Option<Micros>) -> Option<Timestamp> {
    micros.map(timestamp)
}

/// Why a protobuf timestamp was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimestampError {
    /// nanos outside 0..1e9.
    #[error("nanos must be within 0..999999999")]
    Nanos,
    /// Before year 1 or after 9999, as protobuf's Timestamp allows.
    #[error("must be between 0001-01-01 and 9999-12-31")]
    Range,
}

/// A protobuf timestamp as microseconds, refusing malformed or absurd
/// values rather than wrapping them.
pub fn from_timestamp(ts: &Timestamp) -> Result<Micros, TimestampError> {
    const MIN_SECONDS: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
    const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(TimestampError::Nanos);
    }
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) {
        return Err(TimestampError::Range);
    }
    Ok(ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_protobuf_including_before_epoch() {
        for micros in [0, 1, -1, 1_700_000_000_123_456, -86_400_000_001] {
            assert_eq!(from_timestamp(&timestamp(micros)), Ok(micros));
        }
    }

    #[test]
    fn refuses_malformed_timestamps() {
        let bad_nanos = Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(from_timestamp(&bad_nanos), Err(TimestampError::Nanos));
        let far = Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(from_timestamp(&far), Err(TimestampError::Range));
    }
}
