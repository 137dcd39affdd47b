//! Instants as the stores keep them (BIGINT microseconds since the Unix
//! epoch, identical on SQLite and PostgreSQL) and as the API carries them
//! (`google.protobuf.Timestamp`).
//!
//! [`Micros`] is a newtype rather than a bare `i64` so an instant cannot be
//! mixed up with a count or a duration: arithmetic with a duration (plain
//! microseconds, `i64`) gives an instant, the difference of two instants
//! gives a duration. It binds and decodes like the BIGINT it is stored as.

use std::{
    fmt,
    ops::{Add, Sub},
};

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use serde::{Deserialize, Serialize};
use sqlx::{
    Any, Decode, Encode, Type,
    any::{AnyTypeInfo, AnyValueRef},
    encode::IsNull,
    error::BoxDynError,
};

/// An instant: microseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Micros(i64);

/// Microseconds in one second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds in one day.
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

impl Micros {
    /// The earliest instant a store can hold.
    pub const MIN: Micros = Micros(i64::MIN);
    /// The latest instant a store can hold.
    pub const MAX: Micros = Micros(i64::MAX);
    /// 1970-01-01T00:00:00Z.
    pub const EPOCH: Micros = Micros(0);
    /// 2000-01-01T00:00:00Z: the earliest instant a workflow event may
    /// claim. Earlier ones are typing mistakes (year 1, a Unix 0), not
    /// history a purple team could have.
    pub const PLAUSIBLE_FROM: Micros = Micros(946_684_800_000_000);

    /// The instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Micros(micros)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// The current instant, truncated to microseconds.
    pub fn now() -> Self {
        Micros(Utc::now().timestamp_micros())
    }

    /// A chrono instant (sub-microsecond part dropped).
    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Micros(at.timestamp_micros())
    }

    /// As a chrono instant.
    pub fn datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Fractional days from `earlier` to this instant.
    pub fn days_since(self, earlier: Micros) -> f64 {
        (self - earlier) as f64 / MICROS_PER_DAY as f64
    }

    /// Fractional seconds from `earlier` to this instant.
    pub fn seconds_since(self, earlier: Micros) -> f64 {
        (self - earlier) as f64 / MICROS_PER_SECOND as f64
    }
}

impl fmt::Debug for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Micros({})", self.0)
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.datetime().to_rfc3339())
    }
}

/// An instant plus a duration in microseconds (saturating: the far ends of
/// time stay where they are instead of wrapping).
impl Add<i64> for Micros {
    type Output = Micros;
    fn add(self, micros: i64) -> Micros {
        Micros(self.0.saturating_add(micros))
    }
}

/// An instant minus a duration in microseconds (saturating).
impl Sub<i64> for Micros {
    type Output = Micros;
    fn sub(self, micros: i64) -> Micros {
        Micros(self.0.saturating_sub(micros))
    }
}

/// The duration between two instants, in microseconds (saturating).
impl Sub<Micros> for Micros {
    type Output = i64;
    fn sub(self, earlier: Micros) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl Type<Any> for Micros {
    fn type_info() -> AnyTypeInfo {
        <i64 as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        <i64 as Type<Any>>::compatible(ty)
    }
}

impl Encode<'_, Any> for Micros {
    fn encode_by_ref(
        &self,
        buf: &mut <Any as sqlx::Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<'_, Any>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Any> for Micros {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        <i64 as Decode<'r, Any>>::decode(value).map(Micros)
    }
}

/// The current instant; shorthand for [`Micros::now`].
pub fn now_micros() -> Micros {
    Micros::now()
}

/// Microseconds as a protobuf timestamp.
pub fn timestamp(at: Micros) -> Timestamp {
    Timestamp {
        seconds: at.0.div_euclid(MICROS_PER_SECOND),
        nanos: (at.0.rem_euclid(MICROS_PER_SECOND) * 1_000) as i32,
    }
}

/// An optional instant as an optional timestamp.
pub fn timestamp_opt(at: Option<Micros>) -> Option<Timestamp> {
    at.map(timestamp)
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
    Ok(Micros(
        ts.seconds * MICROS_PER_SECOND + i64::from(ts.nanos) / 1_000,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_protobuf_including_before_epoch() {
        for micros in [0, 1, -1, 1_700_000_000_123_456, -86_400_000_001] {
            let at = Micros::from_micros(micros);
            assert_eq!(from_timestamp(&timestamp(at)), Ok(at));
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

    #[test]
    fn instants_and_durations_do_not_mix_up() {
        let t = Micros::from_micros(10 * MICROS_PER_DAY);
        assert_eq!(t - Micros::EPOCH, 10 * MICROS_PER_DAY);
        assert_eq!((t + MICROS_PER_DAY).days_since(t), 1.0);
        assert_eq!(Micros::MAX + 1, Micros::MAX, "saturates");
        assert_eq!(serde_json::to_string(&Micros::from_micros(5)).unwrap(), "5");
    }
}
