//! The rules of the test workflow (DESIGN section 3): states, actions, who
//! may take them, what each changes and which events it emits. Pure: the
//! store applies a [`Plan`] in one transaction.

use std::collections::BTreeMap;

use purple_api::common::v1::{Outcome, Role};
use purple_runtime::time::Micros;

use crate::error::CampaignError;

/// The workflow state of a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Planned,
    RedInProgress,
    RedComplete,
    BlueInProgress,
    BlueComplete,
    Validated,
    Cancelled,
}

impl State {
    /// Every state.
    pub const ALL: [State; 7] = [
        State::Planned,
        State::RedInProgress,
        State::RedComplete,
        State::BlueInProgress,
        State::BlueComplete,
        State::Validated,
        State::Cancelled,
    ];

    /// Lower-case name, as stored.
    pub fn key(self) -> &'static str {
        match self {
            State::Planned => "planned",
            State::RedInProgress => "red_in_progress",
            State::RedComplete => "red_complete",
            State::BlueInProgress => "blue_in_progress",
            State::BlueComplete => "blue_complete",
            State::Validated => "validated",
            State::Cancelled => "cancelled",
        }
    }

    /// From a stored name.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.key() == key)
    }
}

/// Lower-case role names, as stored.
pub fn role_key(role: Role) -> Option<&'static str> {
    Some(match role {
        Role::Unspecified => return None,
        Role::Admin => "admin",
        Role::PurpleLead => "purple_lead",
        Role::RedTech => "red_tech",
        Role::BlueTech => "blue_tech",
        Role::Viewer => "viewer",
        Role::Service => "service",
    })
}

/// A role from its stored name.
pub fn role_from_key(key: &str) -> Role {
    [
        Role::Admin,
        Role::PurpleLead,
        Role::RedTech,
        Role::BlueTech,
        Role::Viewer,
        Role::Service,
    ]
    .into_iter()
    .find(|r| role_key(*r) == Some(key))
    .unwrap_or(Role::Unspecified)
}

/// A workflow action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    StartRed,
    CompleteRed,
    StartBlue,
    CompleteBlue,
    Validate,
    RejectRed,
    RejectBlue,
    Cancel,
    Retest,
}

impl Action {
    /// The roles that may take it.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Action::StartRed | Action::CompleteRed => &[Role::RedTech],
            Action::StartBlue | Action::CompleteBlue => &[Role::BlueTech],
            Action::Validate | Action::RejectRed | Action::RejectBlue | Action::Retest => {
                &[Role::PurpleLead]
            }
            Action::Cancel => &[Role::PurpleLead, Role::Admin],
        }
    }

    /// The states it may start from.
    fn sources(self) -> &'static [State] {
        match self {
            Action::StartRed => &[State::Planned],
            Action::CompleteRed => &[State::RedInProgress],
            Action::StartBlue => &[State::RedComplete],
            Action::CompleteBlue => &[State::BlueInProgress],
            Action::Validate | Action::RejectBlue => &[State::BlueComplete],
            Action::RejectRed => &[
                State::RedComplete,
                State::BlueInProgress,
                State::BlueComplete,
            ],
            Action::Cancel => &[
                State::Planned,
                State::RedInProgress,
                State::RedComplete,
                State::BlueInProgress,
                State::BlueComplete,
            ],
            Action::Retest => &[State::Validated],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::StartRed => "start_red",
            Action::CompleteRed => "complete_red",
            Action::StartBlue => "start_blue",
            Action::CompleteBlue => "complete_blue",
            Action::Validate => "validate",
            Action::RejectRed => "reject_red",
            Action::RejectBlue => "reject_blue",
            Action::Cancel => "cancel",
            Action::Retest => "retest",
        }
    }
}

/// A test as the workflow sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct TestRow {
    pub test_id: String,
    pub technique_id: String,
    pub template_id: String,
    pub campaign_id: Option<String>,
    pub title: String,
    pub state: State,
    pub outcome: Option<Outcome>,
    pub retest_of: Option<String>,
    pub chain_id: String,
    pub version: i64,
    pub red_assignee_id: String,
    pub blue_assignee_id: String,
    pub executed_at: Option<Micros>,
    pub detected_at: Option<Micros>,
    pub validated_at: Option<Micros>,
    pub red_notes: String,
    pub blue_notes: String,
    pub rejection_reason: String,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// What the caller asked for, beyond the action.
#[derive(Clone, Debug, Default)]
pub struct Input {
    pub executed_at: Option<Micros>,
    pub outcome: Outcome,
    pub detected_at: Option<Micros>,
    pub notes: String,
    pub reason: String,
    /// Detection results given with complete_blue: (rule, triggered, at, notes).
    pub results: Vec<DetectionResult>,
}

/// Whether one rule fired on one test.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectionResult {
    pub test_id: String,
    pub rule_id: String,
    pub triggered: bool,
    pub triggered_at: Option<Micros>,
    pub notes: String,
}

/// An event to write into the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct EventDraft {
    pub kind: &'static str,
    pub occurred_at: Micros,
    pub outcome: Option<Outcome>,
    pub side: &'static str,
    pub attributes: BTreeMap<String, String>,
}

impl EventDraft {
    fn new(kind: &'static str, at: Micros) -> Self {
        Self {
            kind,
            occurred_at: at,
            outcome: None,
            side: "",
            attributes: BTreeMap::new(),
        }
    }

    fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }
}

/// What an accepted transition changes.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The test after the transition (version not yet bumped).
    pub after: TestRow,
    /// Events of the test, in order.
    pub events: Vec<EventDraft>,
    /// Validation of a logged or not-detected test opens a remediation.
    pub open_remediation: bool,
    /// Validation makes this test its chain's effective test.
    pub becomes_effective: bool,
    /// Retest: the new planned test to create.
    pub retest: Option<TestRow>,
}

/// Checks an action against the test, the actor's role and the version,
/// and says what it changes. Refusals come in this order: role
/// (PERMISSION_DENIED), version (ABORTED), state (FAILED_PRECONDITION),
/// inputs (INVALID_ARGUMENT).
pub fn plan(
    test: &TestRow,
    action: Action,
    role: Role,
    expected_version: i64,
    input: &Input,
    now: Micros,
    new_test_id: impl FnOnce() -> String,
) -> Result<Plan, CampaignError> {
    if !action.roles().contains(&role) {
        return Err(CampaignError::Forbidden(format!(
            "{} needs the role {}",
            action.name(),
            action
                .roles()
                .iter()
                .filter_map(|r| role_key(*r))
                .collect::<Vec<_>>()
                .join(" or ")
        )));
    }
    if expected_version != test.version {
        return Err(CampaignError::Stale {
            expected: expected_version,
            actual: test.version,
        });
    }
    if !action.sources().contains(&test.state) {
        return Err(CampaignError::WrongState(format!(
            "{} is not allowed from {}",
            action.name(),
            test.state.key()
        )));
    }

    let mut after = test.clone();
    after.updated_at = now;
    let mut events = Vec::new();
    let mut open_remediation = false;
    let mut becomes_effective = false;
    let mut retest = None;
    match action {
        Action::StartRed => {
            after.state = State::RedInProgress;
            events.push(EventDraft::new("test.red_started", now));
        }
        Action::CompleteRed => {
            let executed_at = input.executed_at.unwrap_or(now);
            if executed_at > now {
                return Err(CampaignError::invalid("executed_at", "is in the future"));
            }
            after.state = State::RedComplete;
            after.executed_at = Some(executed_at);
            after.red_notes = input.notes.clone();
            events.push(EventDraft::new("test.red_executed", executed_at));
        }
        Action::StartBlue => {
            after.state = State::BlueInProgress;
            events.push(EventDraft::new("test.blue_started", now));
        }
        Action::CompleteBlue => {
            let outcome = match input.outcome {
                Outcome::Unspecified => return Err(CampaignError::invalid("outcome", "required")),
                outcome => outcome,
            };
            let detected_at = match (outcome.is_detection(), input.detected_at) {
                (true, None) => {
                    return Err(CampaignError::invalid(
                        "detected_at",
                        "required when the outcome is blocked or detected",
                    ));
                }
                (true, Some(at)) if at > now => {
                    return Err(CampaignError::invalid("detected_at", "is in the future"));
                }
                (true, Some(at)) => Some(at),
                (false, _) => None,
            };
            if let (Some(detected), Some(executed)) = (detected_at, test.executed_at)
                && detected < executed
            {
                return Err(CampaignError::invalid(
                    "detected_at",
                    "is before the execution",
                ));
            }
            after.state = State::BlueComplete;
            after.outcome = Some(outcome);
            after.detected_at = detected_at;
            after.blue_notes = input.notes.clone();
            events.push(EventDraft::new("test.blue_completed", now).outcome(outcome));
            if let Some(at) = detected_at {
                events.push(EventDraft::new("test.detected", at).outcome(outcome));
            }
        }
        Action::Validate => {
            after.state = State::Validated;
            after.validated_at = Some(now);
            let outcome = test.outcome.unwrap_or(Outcome::NotDetected);
            events.push(EventDraft::new("test.validated", now).outcome(outcome));
            becomes_effective = true;
            open_remediation = !outcome.is_detection();
        }
        Action::RejectRed | Action::RejectBlue => {
            if input.reason.trim().is_empty() {
                return Err(CampaignError::invalid("reason", "required"));
            }
            let red = action == Action::RejectRed;
            after.state = if red {
                State::RedInProgress
            } else {
                State::BlueInProgress
            };
            after.rejection_reason = input.reason.clone();
            if red {
                // Red redoes the attack: blue's work on it is void.
                after.executed_at = None;
                after.outcome = None;
                after.detected_at = None;
            } else {
                after.outcome = None;
                after.detected_at = None;
            }
            let mut event = EventDraft::new("test.rejected", now);
            event.side = if red { "red" } else { "blue" };
            event
                .attributes
                .insert("reason".into(), input.reason.clone());
            event
                .attributes
                .insert("from_state".into(), test.state.key().into());
            events.push(event);
        }
        Action::Cancel => {
            after.state = State::Cancelled;
            events.push(EventDraft::new("test.cancelled", now));
        }
        Action::Retest => {
            let new = TestRow {
                test_id: new_test_id(),
                state: State::Planned,
                outcome: None,
                retest_of: Some(test.chain_id.clone()),
                chain_id: test.chain_id.clone(),
                version: 1,
                executed_at: None,
                detected_at: None,
                validated_at: None,
                red_notes: String::new(),
                blue_notes: String::new(),
                rejection_reason: String::new(),
                created_at: now,
                updated_at: now,
                ..test.clone()
            };
            retest = Some(new);
            after = test.clone();
        }
    }
    Ok(Plan {
        after,
        events,
        open_remediation,
        becomes_effective,
        retest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_in(state: State) -> TestRow {
        TestRow {
            test_id: "t".into(),
            technique_id: "T1059".into(),
            template_id: String::new(),
            campaign_id: None,
            title: "x".into(),
            state,
            outcome: None,
            retest_of: None,
            chain_id: "t".into(),
            version: 3,
            red_assignee_id: String::new(),
            blue_assignee_id: String::new(),
            executed_at: Some(100),
            detected_at: None,
            validated_at: None,
            red_notes: String::new(),
            blue_notes: String::new(),
            rejection_reason: String::new(),
            created_at: 1,
            updated_at: 1,
        }
    }

    fn run(state: State, action: Action, role: Role, input: Input) -> Result<Plan, CampaignError> {
        plan(&test_in(state), action, role, 3, &input, 1_000, || {
            "new".into()
        })
    }

    #[test]
    fn every_refusal_has_its_own_kind() {
        assert!(matches!(
            run(
                State::Planned,
                Action::StartRed,
                Role::BlueTech,
                Input::default()
            ),
            Err(CampaignError::Forbidden(_))
        ));
        assert!(matches!(
            plan(
                &test_in(State::Planned),
                Action::StartRed,
                Role::RedTech,
                2,
                &Input::default(),
                1_000,
                || "n".into()
            ),
            Err(CampaignError::Stale {
                expected: 2,
                actual: 3
            })
        ));
        assert!(matches!(
            run(
                State::Validated,
                Action::Cancel,
                Role::Admin,
                Input::default()
            ),
            Err(CampaignError::WrongState(_))
        ));
        assert!(matches!(
            run(
                State::BlueComplete,
                Action::RejectBlue,
                Role::PurpleLead,
                Input::default()
            ),
            Err(CampaignError::Invalid { .. })
        ));
        assert!(matches!(
            run(
                State::BlueInProgress,
                Action::CompleteBlue,
                Role::BlueTech,
                Input::default()
            ),
            Err(CampaignError::Invalid { .. })
        ));
    }

    #[test]
    fn complete_blue_with_a_detection_emits_the_detection_at_its_time() {
        let input = Input {
            outcome: Outcome::Detected,
            detected_at: Some(500),
            ..Input::default()
        };
        let plan = run(
            State::BlueInProgress,
            Action::CompleteBlue,
            Role::BlueTech,
            input,
        )
        .unwrap();
        let kinds: Vec<(&str, Micros)> = plan
            .events
            .iter()
            .map(|e| (e.kind, e.occurred_at))
            .collect();
        assert_eq!(
            kinds,
            [("test.blue_completed", 1_000), ("test.detected", 500)]
        );
        assert_eq!(plan.after.state, State::BlueComplete);
    }

    #[test]
    fn validating_a_logged_test_opens_a_remediation_and_retest_joins_the_chain() {
        let mut logged = test_in(State::BlueComplete);
        logged.outcome = Some(Outcome::Logged);
        let plan = plan(
            &logged,
            Action::Validate,
            Role::PurpleLead,
            3,
            &Input::default(),
            2_000,
            || "n".into(),
        )
        .unwrap();
        assert!(plan.open_remediation && plan.becomes_effective);
        assert_eq!(plan.events[0].outcome, Some(Outcome::Logged));

        let mut validated = test_in(State::Validated);
        validated.chain_id = "root".into();
        let plan = plan_retest(&validated);
        let new = plan.retest.unwrap();
        assert_eq!(
            (new.retest_of.as_deref(), new.chain_id.as_str(), new.state),
            (Some("root"), "root", State::Planned)
        );
    }

    fn plan_retest(test: &TestRow) -> Plan {
        plan(
            test,
            Action::Retest,
            Role::PurpleLead,
            3,
            &Input::default(),
            3_000,
            || "n".into(),
        )
        .unwrap()
    }

    #[test]
    fn reject_red_voids_blue_work_and_carries_the_side() {
        let mut done = test_in(State::BlueComplete);
        done.outcome = Some(Outcome::Detected);
        let input = Input {
            reason: "wrong host".into(),
            ..Input::default()
        };
        let plan = plan(
            &done,
            Action::RejectRed,
            Role::PurpleLead,
            3,
            &input,
            4_000,
            || "n".into(),
        )
        .unwrap();
        assert_eq!(
            (plan.after.state, plan.after.outcome, plan.after.executed_at),
            (State::RedInProgress, None, None)
        );
        assert_eq!(plan.events[0].side, "red");
    }
}
