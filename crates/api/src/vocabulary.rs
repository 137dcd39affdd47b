//! The lower-case names that stores, events and reports use for the shared
//! enums, so every service spells an outcome or a status the same way.

use crate::common::v1::{Outcome, TechniqueStatus};

impl Outcome {
    /// Every real outcome, best first.
    pub const ALL: [Outcome; 4] = [
        Outcome::Blocked,
        Outcome::Detected,
        Outcome::Logged,
        Outcome::NotDetected,
    ];

    /// `blocked`, `detected`, `logged`, `not_detected`; None when unset.
    pub fn key(self) -> Option<&'static str> {
        match self {
            Outcome::Unspecified => None,
            Outcome::Blocked => Some("blocked"),
            Outcome::Detected => Some("detected"),
            Outcome::Logged => Some("logged"),
            Outcome::NotDetected => Some("not_detected"),
        }
    }

    /// The outcome of a key written by [`Outcome::key`].
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.key() == Some(key))
    }

    /// Blocked and detected are the outcomes where defence worked.
    pub fn is_detection(self) -> bool {
        matches!(self, Outcome::Blocked | Outcome::Detected)
    }
}

impl TechniqueStatus {
    /// Every real status, worst first.
    pub const ALL: [TechniqueStatus; 5] = [
        TechniqueStatus::Untested,
        TechniqueStatus::InProgress,
        TechniqueStatus::Gap,
        TechniqueStatus::Partial,
        TechniqueStatus::Covered,
    ];

    /// The status of a key written by [`TechniqueStatus::key`].
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.key() == Some(key))
    }

    /// `untested`, `in_progress`, `gap`, `partial`, `covered`.
    pub fn key(self) -> Option<&'static str> {
        match self {
            TechniqueStatus::Unspecified => None,
            TechniqueStatus::Untested => Some("untested"),
            TechniqueStatus::InProgress => Some("in_progress"),
            TechniqueStatus::Gap => Some("gap"),
            TechniqueStatus::Partial => Some("partial"),
            TechniqueStatus::Covered => Some("covered"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_keys_round_trip() {
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::from_key(outcome.key().unwrap()), Some(outcome));
        }
        assert_eq!(Outcome::from_key("OUTCOME_BLOCKED"), None);
    }

    #[test]
    fn status_keys_round_trip() {
        for status in TechniqueStatus::ALL {
            assert_eq!(
                TechniqueStatus::from_key(status.key().unwrap()),
                Some(status)
            );
        }
        assert_eq!(TechniqueStatus::from_key("Covered"), None);
    }
}
