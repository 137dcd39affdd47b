//! The rules of the test workflow (docs/design.md §3): states, actions, who
//! may take them, what each changes and which events it emits; how
//! remediations move; what new tests and their events look like. Pure: no
//! SQL, no gRPC (the roles, outcomes and event kinds are the shared
//! vocabulary of `purple.common.v1`). The workflow applies a [`Plan`] in
//! one transaction.

use std::collections::BTreeMap;

use purple_api::common::v1::{EventKind, Outcome, Role};
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

/// "admin or purple_lead" style list of roles, for refusals.
pub fn role_list(roles: &[Role]) -> String {
    roles
        .iter()
        .filter_map(|r| r.key())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Refuses a caller who holds none of `roles`.
pub fn require_role(held: &[Role], roles: &[Role], what: &str) -> Result<(), CampaignError> {
    if held.iter().any(|r| roles.contains(r)) {
        Ok(())
    } else {
        Err(CampaignError::Forbidden(format!(
            "{what} needs the role {}",
            role_list(roles)
        )))
    }
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

    pub fn name(self) -> &'static str {
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
    /// The latest execution the test ever had, kept across rejections so a
    /// re-execution cannot be backdated before it.
    pub last_executed_at: Option<Micros>,
    pub detected_at: Option<Micros>,
    pub validated_at: Option<Micros>,
    pub red_notes: String,
    pub blue_notes: String,
    pub rejection_reason: String,
    pub created_at: Micros,
    pub updated_at: Micros,
    /// The other instants of its life.
    pub milestones: Milestones,
}

#[cfg(test)]
impl TestRow {
    /// A test of T1059 in `state`, version 3, executed 100 µs after its
    /// creation: what unit tests start from.
    pub(crate) fn stub(state: State) -> Self {
        let at = |micros: i64| Micros::from_micros(1_780_000_000_000_000 + micros);
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
            executed_at: Some(at(100)),
            last_executed_at: Some(at(100)),
            detected_at: None,
            validated_at: None,
            red_notes: String::new(),
            blue_notes: String::new(),
            rejection_reason: String::new(),
            created_at: at(1),
            updated_at: at(1),
            milestones: Milestones::default(),
        }
    }
}

/// When each step of a test last happened, beyond the instants the score
/// and the workflow read: what a history export carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Milestones {
    pub red_started_at: Option<Micros>,
    pub blue_started_at: Option<Micros>,
    /// Blue's completion that stands (cleared by a rejection).
    pub blue_completed_at: Option<Micros>,
    pub cancelled_at: Option<Micros>,
}

/// One rejection of a test, with the instants of the submission it voided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub test_id: String,
    /// "red" or "blue".
    pub side: String,
    pub rejected_at: Micros,
    pub reason: String,
    pub actor_id: String,
    pub voided_executed_at: Option<Micros>,
    pub voided_completed_at: Option<Micros>,
    pub voided_outcome: Option<Outcome>,
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
    /// The rule's source; "" for the id in any source.
    pub source: String,
    pub rule_id: String,
    pub triggered: bool,
    pub triggered_at: Option<Micros>,
    pub notes: String,
}

/// An event to write into the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct EventDraft {
    pub kind: EventKind,
    pub occurred_at: Micros,
    pub outcome: Option<Outcome>,
    pub side: &'static str,
    pub attributes: BTreeMap<String, String>,
}

impl EventDraft {
    fn new(kind: EventKind, at: Micros) -> Self {
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

/// An event as the outbox keeps it and metrics receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Globally unique; receivers deduplicate by it.
    pub event_id: String,
    pub kind: EventKind,
    pub occurred_at: Micros,
    pub test_id: String,
    pub technique_id: String,
    pub campaign_id: String,
    pub remediation_id: String,
    pub outcome: Option<Outcome>,
    /// "red" or "blue" for rejections.
    pub side: String,
    pub actor_id: String,
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// The event of a test built from a draft.
    pub fn of_test(test: &TestRow, draft: &EventDraft, actor_id: &str, event_id: String) -> Self {
        Event {
            event_id,
            kind: draft.kind,
            occurred_at: draft.occurred_at,
            test_id: test.test_id.clone(),
            technique_id: test.technique_id.clone(),
            campaign_id: test.campaign_id.clone().unwrap_or_default(),
            remediation_id: String::new(),
            outcome: draft.outcome,
            side: draft.side.to_owned(),
            actor_id: actor_id.to_owned(),
            attributes: draft.attributes.clone(),
        }
    }

    /// The `test.created` event of a new test (naming its chain's root
    /// when it is a retest).
    pub fn created(test: &TestRow, actor_id: &str, event_id: String) -> Self {
        let mut draft = EventDraft::new(EventKind::TestCreated, test.created_at);
        if let Some(root) = &test.retest_of {
            draft.attributes.insert("retest_of".into(), root.clone());
        }
        Self::of_test(test, &draft, actor_id, event_id)
    }

    /// An event of a remediation.
    pub fn of_remediation(
        r: &Remediation,
        kind: EventKind,
        at: Micros,
        actor_id: &str,
        campaign_id: &str,
        event_id: String,
    ) -> Self {
        Event {
            event_id,
            kind,
            occurred_at: at,
            test_id: r.test_id.clone(),
            technique_id: r.technique_id.clone(),
            campaign_id: campaign_id.to_owned(),
            remediation_id: r.remediation_id.clone(),
            outcome: None,
            side: String::new(),
            actor_id: actor_id.to_owned(),
            attributes: BTreeMap::new(),
        }
    }
}

/// Where a remediation stands: open → in_progress → completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemediationState {
    Open,
    InProgress,
    Completed,
}

impl RemediationState {
    /// Every state.
    pub const ALL: [RemediationState; 3] = [
        RemediationState::Open,
        RemediationState::InProgress,
        RemediationState::Completed,
    ];

    /// Lower-case name, as stored.
    pub fn key(self) -> &'static str {
        match self {
            RemediationState::Open => "open",
            RemediationState::InProgress => "in_progress",
            RemediationState::Completed => "completed",
        }
    }

    /// From a stored name.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.key() == key)
    }
}

/// A remediation: the fix that a validated logged or not-detected test
/// calls for.
#[derive(Clone, Debug, PartialEq)]
pub struct Remediation {
    pub remediation_id: String,
    pub test_id: String,
    pub technique_id: String,
    pub state: RemediationState,
    pub version: i64,
    pub assignee_id: String,
    pub notes: String,
    pub opened_at: Micros,
    /// When work started (in_progress).
    pub started_at: Option<Micros>,
    pub completed_at: Option<Micros>,
}

/// The roles that may move a remediation (docs/design.md §3).
pub const REMEDIATION_ROLES: [Role; 3] = [Role::PurpleLead, Role::BlueTech, Role::Admin];

/// Checks a remediation move and says what it becomes and which event it
/// emits: open → in_progress (`remediation.started`), in_progress →
/// completed (`remediation.completed`). Refusals in the order of [`plan`]:
/// version (ABORTED), then state (FAILED_PRECONDITION).
pub fn move_remediation(
    current: &Remediation,
    to: RemediationState,
    expected_version: i64,
    notes: String,
    now: Micros,
) -> Result<(Remediation, EventKind), CampaignError> {
    if current.version != expected_version {
        return Err(CampaignError::Stale {
            expected: expected_version,
            actual: current.version,
        });
    }
    let kind = match (current.state, to) {
        (RemediationState::Open, RemediationState::InProgress) => EventKind::RemediationStarted,
        (RemediationState::InProgress, RemediationState::Completed) => {
            EventKind::RemediationCompleted
        }
        (from, to) => {
            return Err(CampaignError::WrongState(format!(
                "a remediation cannot go from {} to {}",
                from.key(),
                to.key()
            )));
        }
    };
    let after = Remediation {
        state: to,
        notes: if notes.is_empty() {
            current.notes.clone()
        } else {
            notes
        },
        started_at: if to == RemediationState::InProgress {
            Some(now)
        } else {
            current.started_at
        },
        completed_at: (to == RemediationState::Completed).then_some(now),
        version: current.version + 1,
        ..current.clone()
    };
    Ok((after, kind))
}

/// A technique as reports show it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TechniqueDetail {
    pub name: String,
    /// Tactic short names.
    pub tactics: Vec<String>,
}

/// What a caller asks to create.
#[derive(Clone, Debug, Default)]
pub struct NewTest {
    pub technique_id: String,
    pub template_id: String,
    pub campaign_id: Option<String>,
    pub title: String,
    pub red_assignee_id: String,
    pub blue_assignee_id: String,
}

/// Test rows (planned, each its own chain) for `new`, titles defaulting to
/// the technique's name; created_at advances a microsecond per test so
/// creation order survives a batch.
pub fn new_rows(
    new: &[NewTest],
    names: &BTreeMap<String, String>,
    now: Micros,
    mut new_id: impl FnMut() -> String,
) -> Vec<TestRow> {
    new.iter()
        .enumerate()
        .map(|(i, n)| {
            let test_id = new_id();
            let at = now + i as i64;
            TestRow {
                chain_id: test_id.clone(),
                test_id,
                technique_id: n.technique_id.clone(),
                template_id: n.template_id.clone(),
                campaign_id: n.campaign_id.clone(),
                title: if n.title.is_empty() {
                    names.get(&n.technique_id).cloned().unwrap_or_default()
                } else {
                    n.title.clone()
                },
                state: State::Planned,
                outcome: None,
                retest_of: None,
                version: 1,
                red_assignee_id: n.red_assignee_id.clone(),
                blue_assignee_id: n.blue_assignee_id.clone(),
                executed_at: None,
                last_executed_at: None,
                detected_at: None,
                validated_at: None,
                red_notes: String::new(),
                blue_notes: String::new(),
                rejection_reason: String::new(),
                created_at: at,
                updated_at: at,
                milestones: Milestones::default(),
            }
        })
        .collect()
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
    /// A rejection: the test's detection results are void.
    pub void_results: bool,
    /// A rejection: what it voided (actor filled in by the workflow).
    pub rejection: Option<Rejection>,
}

/// Checks an action against the test, the actor's role and the version,
/// and says what it changes. Refusals come in this order: role
/// (PERMISSION_DENIED), version (ABORTED), state (FAILED_PRECONDITION),
/// inputs (INVALID_ARGUMENT).
pub fn plan(
    test: &TestRow,
    action: Action,
    roles: &[Role],
    expected_version: i64,
    input: &Input,
    now: Micros,
    new_test_id: impl FnOnce() -> String,
) -> Result<Plan, CampaignError> {
    require_role(roles, action.roles(), action.name())?;
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

    let mut plan = Plan {
        after: TestRow {
            updated_at: now,
            ..test.clone()
        },
        events: Vec::new(),
        open_remediation: false,
        becomes_effective: false,
        retest: None,
        void_results: false,
        rejection: None,
    };
    match action {
        Action::StartRed => {
            plan.after.milestones.red_started_at = Some(now);
            plan.moves(State::RedInProgress, EventKind::TestRedStarted, now);
        }
        Action::CompleteRed => complete_red(test, input, now, &mut plan)?,
        Action::StartBlue => {
            plan.after.milestones.blue_started_at = Some(now);
            plan.moves(State::BlueInProgress, EventKind::TestBlueStarted, now);
        }
        Action::CompleteBlue => complete_blue(test, input, now, &mut plan)?,
        Action::Validate => {
            plan.after.validated_at = Some(now);
            let outcome = test.outcome.unwrap_or(Outcome::NotDetected);
            plan.moves(State::Validated, EventKind::TestValidated, now);
            plan.events[0].outcome = Some(outcome);
            plan.becomes_effective = true;
            plan.open_remediation = !outcome.is_detection();
        }
        Action::RejectRed | Action::RejectBlue => reject(test, action, input, now, &mut plan)?,
        Action::Cancel => {
            plan.after.milestones.cancelled_at = Some(now);
            plan.moves(State::Cancelled, EventKind::TestCancelled, now);
        }
        Action::Retest => {
            plan.after = test.clone();
            plan.retest = Some(retest_of(test, now, new_test_id()));
        }
    }
    Ok(plan)
}

impl Plan {
    /// The test moves to `state`, emitting `kind` at `at`.
    fn moves(&mut self, state: State, kind: EventKind, at: Micros) {
        self.after.state = state;
        self.events.push(EventDraft::new(kind, at));
    }
}

/// Refuses an instant no purple team could have recorded: before
/// 2000-01-01, after now, or before the test existed.
fn plausible(
    field: &str,
    at: Micros,
    test: &TestRow,
    now: Micros,
) -> Result<Micros, CampaignError> {
    if at > now {
        return Err(CampaignError::invalid(field, "is in the future"));
    }
    if at < Micros::PLAUSIBLE_FROM {
        return Err(CampaignError::invalid(
            field,
            "is before 2000-01-01, not a plausible instant",
        ));
    }
    if at < test.created_at {
        return Err(CampaignError::invalid(
            field,
            "is before the test was created",
        ));
    }
    Ok(at)
}

/// Red executed: when (now by default; never backdated before an earlier
/// execution of the same test) and notes.
fn complete_red(
    test: &TestRow,
    input: &Input,
    now: Micros,
    plan: &mut Plan,
) -> Result<(), CampaignError> {
    let executed_at = plausible("executed_at", input.executed_at.unwrap_or(now), test, now)?;
    if test
        .last_executed_at
        .is_some_and(|previous| executed_at < previous)
    {
        return Err(CampaignError::invalid(
            "executed_at",
            "is before the test's previous execution",
        ));
    }
    plan.after.executed_at = Some(executed_at);
    plan.after.last_executed_at = Some(executed_at);
    plan.after.red_notes.clone_from(&input.notes);
    plan.moves(State::RedComplete, EventKind::TestRedExecuted, executed_at);
    Ok(())
}

/// Blue recorded an outcome, and for blocked or detected when it detected
/// the attack (not before the execution).
fn complete_blue(
    test: &TestRow,
    input: &Input,
    now: Micros,
    plan: &mut Plan,
) -> Result<(), CampaignError> {
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
        (true, Some(at)) => Some(plausible("detected_at", at, test, now)?),
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
    plan.after.outcome = Some(outcome);
    plan.after.detected_at = detected_at;
    plan.after.milestones.blue_completed_at = Some(now);
    plan.after.blue_notes.clone_from(&input.notes);
    plan.moves(State::BlueComplete, EventKind::TestBlueCompleted, now);
    plan.events[0].outcome = Some(outcome);
    if let Some(at) = detected_at {
        plan.events
            .push(EventDraft::new(EventKind::TestDetected, at).outcome(outcome));
    }
    Ok(())
}

/// A purple lead sends one side back. Red redoes the attack, so blue's
/// work on it is void too; blue redoes its analysis. Either way the
/// rejected submission's detection results and detection instant stop
/// counting (docs/design.md §3).
fn reject(
    test: &TestRow,
    action: Action,
    input: &Input,
    now: Micros,
    plan: &mut Plan,
) -> Result<(), CampaignError> {
    if input.reason.trim().is_empty() {
        return Err(CampaignError::invalid("reason", "required"));
    }
    let red = action == Action::RejectRed;
    plan.after.rejection_reason.clone_from(&input.reason);
    if red {
        plan.after.executed_at = None;
    }
    plan.after.outcome = None;
    plan.after.detected_at = None;
    plan.after.milestones.blue_completed_at = None;
    plan.void_results = true;
    let (state, side) = if red {
        (State::RedInProgress, "red")
    } else {
        (State::BlueInProgress, "blue")
    };
    plan.rejection = Some(Rejection {
        test_id: test.test_id.clone(),
        side: side.to_owned(),
        rejected_at: now,
        reason: input.reason.clone(),
        actor_id: String::new(),
        voided_executed_at: if red { test.executed_at } else { None },
        voided_completed_at: test.milestones.blue_completed_at,
        voided_outcome: test.outcome,
    });
    plan.moves(state, EventKind::TestRejected, now);
    let event = &mut plan.events[0];
    event.side = side;
    event
        .attributes
        .insert("reason".into(), input.reason.clone());
    event
        .attributes
        .insert("from_state".into(), test.state.key().into());
    Ok(())
}

/// A new planned test in the validated test's chain.
fn retest_of(test: &TestRow, now: Micros, test_id: String) -> TestRow {
    TestRow {
        test_id,
        state: State::Planned,
        outcome: None,
        retest_of: Some(test.chain_id.clone()),
        chain_id: test.chain_id.clone(),
        version: 1,
        executed_at: None,
        last_executed_at: None,
        detected_at: None,
        validated_at: None,
        red_notes: String::new(),
        blue_notes: String::new(),
        rejection_reason: String::new(),
        created_at: now,
        updated_at: now,
        milestones: Milestones::default(),
        ..test.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instant `micros` after a plausible origin (2026).
    fn at(micros: i64) -> Micros {
        Micros::from_micros(1_780_000_000_000_000 + micros)
    }

    fn test_in(state: State) -> TestRow {
        TestRow::stub(state)
    }

    fn run(
        state: State,
        action: Action,
        roles: &[Role],
        input: Input,
    ) -> Result<Plan, CampaignError> {
        plan(&test_in(state), action, roles, 3, &input, at(1_000), || {
            "new".into()
        })
    }

    #[test]
    fn every_refusal_has_its_own_kind() {
        assert!(matches!(
            run(
                State::Planned,
                Action::StartRed,
                &[Role::BlueTech],
                Input::default()
            ),
            Err(CampaignError::Forbidden(_))
        ));
        assert!(matches!(
            plan(
                &test_in(State::Planned),
                Action::StartRed,
                &[Role::RedTech],
                2,
                &Input::default(),
                at(1_000),
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
                &[Role::Admin],
                Input::default()
            ),
            Err(CampaignError::WrongState(_))
        ));
        assert!(matches!(
            run(
                State::BlueComplete,
                Action::RejectBlue,
                &[Role::PurpleLead],
                Input::default()
            ),
            Err(CampaignError::Invalid { .. })
        ));
        assert!(matches!(
            run(
                State::BlueInProgress,
                Action::CompleteBlue,
                &[Role::BlueTech],
                Input::default()
            ),
            Err(CampaignError::Invalid { .. })
        ));
    }

    #[test]
    fn complete_blue_with_a_detection_emits_the_detection_at_its_time() {
        let input = Input {
            outcome: Outcome::Detected,
            detected_at: Some(at(500)),
            ..Input::default()
        };
        let plan = run(
            State::BlueInProgress,
            Action::CompleteBlue,
            &[Role::BlueTech],
            input,
        )
        .unwrap();
        let kinds: Vec<(EventKind, Micros)> = plan
            .events
            .iter()
            .map(|e| (e.kind, e.occurred_at))
            .collect();
        assert_eq!(
            kinds,
            [
                (EventKind::TestBlueCompleted, at(1_000)),
                (EventKind::TestDetected, at(500))
            ]
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
            &[Role::PurpleLead],
            3,
            &Input::default(),
            at(2_000),
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
            &[Role::PurpleLead],
            3,
            &Input::default(),
            at(3_000),
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
            &[Role::PurpleLead],
            3,
            &input,
            at(4_000),
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
