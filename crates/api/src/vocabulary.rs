//! The lower-case names that stores, events and reports use for the shared
//! enums, so every service spells an outcome or a status the same way.

use crate::common::v1::{EventKind, Outcome, Role, TechniqueStatus};

impl EventKind {
    /// Every real kind, in workflow order.
    pub const ALL: [EventKind; 12] = [
        EventKind::TestCreated,
        EventKind::TestRedStarted,
        EventKind::TestRedExecuted,
        EventKind::TestBlueStarted,
        EventKind::TestBlueCompleted,
        EventKind::TestDetected,
        EventKind::TestValidated,
        EventKind::TestRejected,
        EventKind::TestCancelled,
        EventKind::RemediationOpened,
        EventKind::RemediationStarted,
        EventKind::RemediationCompleted,
    ];

    /// The dotted name stores and the audit trail use, e.g.
    /// `test.red_executed`; None when unset.
    pub fn key(self) -> Option<&'static str> {
        Some(match self {
            EventKind::Unspecified => return None,
            EventKind::TestCreated => "test.created",
            EventKind::TestRedStarted => "test.red_started",
            EventKind::TestRedExecuted => "test.red_executed",
            EventKind::TestBlueStarted => "test.blue_started",
            EventKind::TestBlueCompleted => "test.blue_completed",
            EventKind::TestDetected => "test.detected",
            EventKind::TestValidated => "test.validated",
            EventKind::TestRejected => "test.rejected",
            EventKind::TestCancelled => "test.cancelled",
            EventKind::RemediationOpened => "remediation.opened",
            EventKind::RemediationStarted => "remediation.started",
            EventKind::RemediationCompleted => "remediation.completed",
        })
    }

    /// The kind of a dotted name written by [`EventKind::key`].
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.key() == Some(key))
    }

    /// Whether it concerns a remediation (and must name it).
    pub fn is_remediation(self) -> bool {
        matches!(
            self,
            EventKind::RemediationOpened
                | EventKind::RemediationStarted
                | EventKind::RemediationCompleted
        )
    }
}

impl Role {
    /// Every real role.
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::PurpleLead,
        Role::RedTech,
        Role::BlueTech,
        Role::Viewer,
        Role::Service,
    ];

    /// `admin`, `purple_lead`, `red_tech`, `blue_tech`, `viewer`,
    /// `service`: how stores and tokens spell it; None when unset.
    pub fn key(self) -> Option<&'static str> {
        Some(match self {
            Role::Unspecified => return None,
            Role::Admin => "admin",
            Role::PurpleLead => "purple_lead",
            Role::RedTech => "red_tech",
            Role::BlueTech => "blue_tech",
            Role::Viewer => "viewer",
            Role::Service => "service",
        })
    }

    /// The role of a key written by [`Role::key`].
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.key() == Some(key))
    }
}

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
    fn event_kind_and_role_keys_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_key(kind.key().unwrap()), Some(kind));
        }
        for role in Role::ALL {
            assert_eq!(Role::from_key(role.key().unwrap()), Some(role));
        }
        assert_eq!(EventKind::from_key("test.unknown"), None);
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
