//! The wire edge of the campaigns service: requests checked and turned into
//! the workflow's inputs, rows and reports turned into responses. Every
//! refusal names its field; an enum value this build does not know is
//! refused, not read as "unset".

use std::collections::BTreeMap;

use purple_api::{
    batch::{MAX_NAME_BYTES, MAX_TEXT_BYTES, check_ids, in_request_order, shown},
    campaigns::v1 as pb,
    common::v1::{Outcome, Role, RuleRef},
};
use purple_runtime::{
    auth::Caller,
    paging::Page,
    time::{Micros, from_timestamp, timestamp, timestamp_opt},
};

use crate::{
    campaign::CAMPAIGN_KEY_LEN,
    domain::{
        Action, DetectionResult, Input, NewTest, Remediation, RemediationState, State, TestRow,
    },
    error::CampaignError,
    people::{NewUser, TIMED_KEY_LEN, USER_KEY_LEN},
    report::{Progress, Report},
    schedule::Recurrence,
    store::{
        campaigns::CampaignRow,
        people::{NotificationRow, UserRow, WorklogRow},
        workflow::{Aggregate, Aggregates, TestFilter},
    },
    workflow::{STALE_KEY_LEN, TEST_KEY_LEN},
};

/// The acting user: the token's subject. A request that still names an
/// actor (the deprecated `actor_id` fields) must name that same user; a
/// forged one is refused.
pub fn actor(caller: Caller, claimed: &str) -> Result<Caller, CampaignError> {
    if claimed.is_empty() || claimed == caller.subject {
        Ok(caller)
    } else {
        Err(CampaignError::Forbidden(
            "actor_id names another user: the acting user is the token's subject".into(),
        ))
    }
}

/// An enum field's value, refusing numbers this build does not know.
fn known<E: TryFrom<i32>>(field: &str, value: i32) -> Result<E, CampaignError> {
    E::try_from(value).map_err(|_| CampaignError::invalid(field, format!("unknown value {value}")))
}

/// The wire state of a test.
pub fn state_pb(state: State) -> pb::TestState {
    match state {
        State::Planned => pb::TestState::Planned,
        State::RedInProgress => pb::TestState::RedInProgress,
        State::RedComplete => pb::TestState::RedComplete,
        State::BlueInProgress => pb::TestState::BlueInProgress,
        State::BlueComplete => pb::TestState::BlueComplete,
        State::Validated => pb::TestState::Validated,
        State::Cancelled => pb::TestState::Cancelled,
    }
}

/// A state filter: None for unset.
pub fn state_filter(field: &str, state: i32) -> Result<Option<State>, CampaignError> {
    let state: pb::TestState = known(field, state)?;
    Ok(State::ALL.into_iter().find(|s| state_pb(*s) == state))
}

/// A workflow action; unset is refused.
pub fn action(value: i32) -> Result<Action, CampaignError> {
    use pb::TestAction as A;
    Ok(match known::<A>("action", value)? {
        A::Unspecified => return Err(CampaignError::invalid("action", "required")),
        A::StartRed => Action::StartRed,
        A::CompleteRed => Action::CompleteRed,
        A::StartBlue => Action::StartBlue,
        A::CompleteBlue => Action::CompleteBlue,
        A::Validate => Action::Validate,
        A::RejectRed => Action::RejectRed,
        A::RejectBlue => Action::RejectBlue,
        A::Cancel => Action::Cancel,
        A::Retest => Action::Retest,
    })
}

/// A remediation state: None for unset.
pub fn remediation_state(
    field: &str,
    value: i32,
) -> Result<Option<RemediationState>, CampaignError> {
    Ok(match known::<pb::RemediationState>(field, value)? {
        pb::RemediationState::Unspecified => None,
        pb::RemediationState::Open => Some(RemediationState::Open),
        pb::RemediationState::InProgress => Some(RemediationState::InProgress),
        pb::RemediationState::Completed => Some(RemediationState::Completed),
    })
}

fn remediation_state_pb(state: RemediationState) -> pb::RemediationState {
    match state {
        RemediationState::Open => pb::RemediationState::Open,
        RemediationState::InProgress => pb::RemediationState::InProgress,
        RemediationState::Completed => pb::RemediationState::Completed,
    }
}

/// A role filter or a new user's role: None for unset.
pub fn role(field: &str, value: i32) -> Result<Option<Role>, CampaignError> {
    Ok(match known::<Role>(field, value)? {
        Role::Unspecified => None,
        role => Some(role),
    })
}

/// An optional instant, checked.
pub fn instant(
    field: &str,
    ts: Option<&prost_types::Timestamp>,
) -> Result<Option<Micros>, CampaignError> {
    ts.map(|ts| from_timestamp(ts).map_err(|e| CampaignError::invalid(field, e.to_string())))
        .transpose()
}

/// Why free text a caller writes cannot be kept: past `max` bytes, or
/// holding a NUL byte (which PostgreSQL cannot store).
pub fn text_fault(value: &str, max: usize) -> Option<String> {
    if value.len() > max {
        Some(format!("{} bytes exceed the limit of {max}", value.len()))
    } else if value.contains('\0') {
        Some("holds a NUL byte".to_owned())
    } else {
        None
    }
}

/// Free text a caller writes, refused by [`text_fault`], naming the field.
pub fn text(field: &str, value: String, max: usize) -> Result<String, CampaignError> {
    match text_fault(&value, max) {
        Some(why) => Err(CampaignError::invalid(field, why)),
        None => Ok(value),
    }
}

/// Notes, a reason or a description: at most [`MAX_TEXT_BYTES`].
pub fn notes(field: &str, value: String) -> Result<String, CampaignError> {
    text(field, value, MAX_TEXT_BYTES)
}

/// A name or title: at most [`MAX_NAME_BYTES`].
pub fn name(field: &str, value: String) -> Result<String, CampaignError> {
    text(field, value, MAX_NAME_BYTES)
}

/// What a caller asks to create.
pub fn new_test(t: pb::NewTest) -> NewTest {
    NewTest {
        technique_id: t.technique_id.trim().to_ascii_uppercase(),
        template_id: t.template_id,
        campaign_id: Some(t.campaign_id).filter(|c| !c.is_empty()),
        title: t.title,
        red_assignee_id: t.red_assignee_id,
        blue_assignee_id: t.blue_assignee_id,
    }
}

/// New tests.
pub fn new_tests(tests: Vec<pb::NewTest>) -> Vec<NewTest> {
    tests.into_iter().map(new_test).collect()
}

/// Detection results, each instant checked.
pub fn results(results: Vec<pb::DetectionResult>) -> Result<Vec<DetectionResult>, CampaignError> {
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            if !r.rule_id.is_empty() {
                check_ids(
                    &format!("results[{i}].rule_id"),
                    std::slice::from_ref(&r.rule_id),
                )?;
            }
            Ok(DetectionResult {
                triggered_at: instant(
                    &format!("results[{i}].triggered_at"),
                    r.triggered_at.as_ref(),
                )?,
                test_id: r.test_id,
                source: rule_source(&format!("results[{i}].source"), &r.source)?,
                rule_id: r.rule_id,
                triggered: r.triggered,
                notes: notes(&format!("results[{i}].notes"), r.notes)?,
            })
        })
        .collect()
}

/// A detection result's rule source: sigma, elastic, or "" (any).
pub fn rule_source(field: &str, source: &str) -> Result<String, CampaignError> {
    let source = source.trim().to_ascii_lowercase();
    if matches!(source.as_str(), "" | "sigma" | "elastic") {
        Ok(source)
    } else {
        Err(CampaignError::invalid(
            field,
            format!("{} is neither sigma nor elastic", shown(&source)),
        ))
    }
}

/// A detection result on the wire.
pub fn result_pb(r: DetectionResult) -> pb::DetectionResult {
    pb::DetectionResult {
        test_id: r.test_id,
        rule_id: r.rule_id,
        triggered: r.triggered,
        triggered_at: timestamp_opt(r.triggered_at),
        notes: r.notes,
        source: r.source,
    }
}

/// Rule references from (source, rule id) pairs.
pub fn rule_refs(rules: &[(String, String)]) -> Vec<RuleRef> {
    rules
        .iter()
        .map(|(source, rule_id)| RuleRef {
            source: source.clone(),
            rule_id: rule_id.clone(),
        })
        .collect()
}

/// A transition's inputs beyond the action.
impl TryFrom<&mut pb::TransitionTestRequest> for Input {
    type Error = CampaignError;

    fn try_from(r: &mut pb::TransitionTestRequest) -> Result<Self, CampaignError> {
        Ok(Input {
            executed_at: instant("executed_at", r.executed_at.as_ref())?,
            outcome: known("outcome", r.outcome)?,
            detected_at: instant("detected_at", r.detected_at.as_ref())?,
            notes: notes("notes", std::mem::take(&mut r.notes))?,
            reason: notes("reason", std::mem::take(&mut r.reason))?,
            results: results(std::mem::take(&mut r.detection_results))?,
        })
    }
}

/// New users.
pub fn new_users(users: Vec<pb::User>) -> Result<Vec<NewUser>, CampaignError> {
    users
        .into_iter()
        .enumerate()
        .map(|(i, u)| {
            Ok(NewUser {
                role: role(&format!("users[{i}].role"), u.role)?,
                user_id: u.user_id,
                display_name: u.display_name,
            })
        })
        .collect()
}

/// A schedule (None clears it) and its optional first run.
pub fn schedule(
    schedule: Option<pb::Schedule>,
) -> Result<(Option<Recurrence>, Option<Micros>), CampaignError> {
    Ok(match schedule {
        None => (None, None),
        Some(s) => (
            Some(Recurrence::parse(s.interval_seconds, &s.cron)?),
            instant("schedule.next_run_at", s.next_run_at.as_ref())?,
        ),
    })
}

/// The test list's filters and page.
pub fn test_query(r: &pb::ListTestsRequest) -> Result<(TestFilter, Page), CampaignError> {
    let filter = TestFilter {
        technique_id: r.technique_id.clone(),
        state: state_filter("state", r.state)?,
        campaign_id: r.campaign_id.clone(),
        assignee_id: r.assignee_id.clone(),
    };
    let filters = format!(
        "{}|{:?}|{}|{}",
        filter.technique_id, filter.state, filter.campaign_id, filter.assignee_id
    );
    let page = Page::parse(r.page_size, &r.page_token, 100, &filters, TEST_KEY_LEN)?;
    Ok((filter, page))
}

/// The stale list's cut-off and page.
pub fn stale_query(r: &pb::ListStaleTestsRequest) -> Result<(Option<Micros>, Page), CampaignError> {
    let older_than = instant("older_than", r.older_than.as_ref())?;
    let page = Page::parse(
        r.page_size,
        &r.page_token,
        100,
        &format!("{older_than:?}"),
        STALE_KEY_LEN,
    )?;
    Ok((older_than, page))
}

/// A page of a list ordered by (instant, id) with these filters.
pub fn timed_page(size: i32, token: &str, filters: &str) -> Result<Page, CampaignError> {
    Ok(Page::parse(size, token, 100, filters, TIMED_KEY_LEN)?)
}

/// The campaign list's page.
pub fn campaign_page(r: &pb::ListCampaignsRequest) -> Result<Page, CampaignError> {
    Ok(Page::parse(
        r.page_size,
        &r.page_token,
        100,
        "",
        CAMPAIGN_KEY_LEN,
    )?)
}

/// The dead-letter list's page.
pub fn dead_letter_page(r: &pb::ListDeadLettersRequest) -> Result<Page, CampaignError> {
    Ok(Page::parse(
        r.page_size,
        &r.page_token,
        100,
        "",
        crate::relay::DEAD_LETTER_KEY_LEN,
    )?)
}

/// A dead letter on the wire.
pub fn dead_letter_pb(d: crate::store::outbox::DeadLetter) -> pb::DeadLetter {
    pb::DeadLetter {
        event_kind: d.event.as_ref().map_or(0, |e| e.kind as i32),
        test_id: d.event.map(|e| e.test_id).unwrap_or_default(),
        event_id: d.event_id,
        receiver: d.receiver,
        reason: d.reason,
        dead_at: Some(timestamp(d.dead_at)),
    }
}

/// The user list's role filter and page.
pub fn user_query(r: &pb::ListUsersRequest) -> Result<(Option<Role>, Page), CampaignError> {
    let role = role("role", r.role)?;
    let page = Page::parse(
        r.page_size,
        &r.page_token,
        100,
        &format!("{role:?}"),
        USER_KEY_LEN,
    )?;
    Ok((role, page))
}

/// A test on the wire.
pub fn test_pb(t: TestRow) -> pb::Test {
    test_pb_of(&t)
}

/// A test on the wire from a borrowed row (a held test): each field copied
/// once, straight into the answer.
pub fn test_pb_of(t: &TestRow) -> pb::Test {
    pb::Test {
        test_id: t.test_id.clone(),
        technique_id: t.technique_id.clone(),
        template_id: t.template_id.clone(),
        campaign_id: t.campaign_id.clone().unwrap_or_default(),
        title: t.title.clone(),
        state: state_pb(t.state) as i32,
        outcome: t.outcome.unwrap_or(Outcome::Unspecified) as i32,
        retest_of: t.retest_of.clone().unwrap_or_default(),
        version: t.version,
        red_assignee_id: t.red_assignee_id.clone(),
        blue_assignee_id: t.blue_assignee_id.clone(),
        executed_at: timestamp_opt(t.executed_at),
        detected_at: timestamp_opt(t.detected_at),
        validated_at: timestamp_opt(t.validated_at),
        red_notes: t.red_notes.clone(),
        blue_notes: t.blue_notes.clone(),
        rejection_reason: t.rejection_reason.clone(),
        created_at: Some(timestamp(t.created_at)),
        updated_at: Some(timestamp(t.updated_at)),
        red_started_at: timestamp_opt(t.milestones.red_started_at),
        blue_started_at: timestamp_opt(t.milestones.blue_started_at),
        blue_completed_at: timestamp_opt(t.milestones.blue_completed_at),
        cancelled_at: timestamp_opt(t.milestones.cancelled_at),
    }
}

/// Tests on the wire.
pub fn tests_pb(tests: Vec<TestRow>) -> Vec<pb::Test> {
    tests.into_iter().map(test_pb).collect()
}

/// Found items in request order, and the ids not found.
pub fn in_order<T, P>(
    ids: &[String],
    found: BTreeMap<String, T>,
    to_pb: impl Fn(T) -> P,
) -> (Vec<P>, Vec<String>) {
    let (items, missing) = in_request_order(ids, found);
    (items.into_iter().map(to_pb).collect(), missing)
}

/// A campaign on the wire.
pub fn campaign_pb(c: CampaignRow) -> pb::Campaign {
    let schedule = (c.interval_seconds.is_some() || c.cron.is_some()).then(|| pb::Schedule {
        interval_seconds: c.interval_seconds.unwrap_or(0),
        cron: c.cron.clone().unwrap_or_default(),
        next_run_at: timestamp_opt(c.next_run_at),
    });
    pb::Campaign {
        campaign_id: c.campaign_id,
        name: c.name,
        description: c.description,
        threat_actor_id: c.threat_actor_id,
        cloned_from: c.cloned_from,
        schedule,
        created_by: c.created_by,
        created_at: Some(timestamp(c.created_at)),
        test_count: c.test_count as i32,
    }
}

/// A remediation on the wire.
pub fn remediation_pb(r: Remediation) -> pb::Remediation {
    pb::Remediation {
        state: remediation_state_pb(r.state) as i32,
        remediation_id: r.remediation_id,
        test_id: r.test_id,
        technique_id: r.technique_id,
        version: r.version,
        assignee_id: r.assignee_id,
        notes: r.notes,
        opened_at: Some(timestamp(r.opened_at)),
        completed_at: timestamp_opt(r.completed_at),
        started_at: timestamp_opt(r.started_at),
        jira_issue_key: String::new(),
        jira_status: String::new(),
    }
}

/// A remediation on the wire with its Jira issue, when it has one.
pub fn remediation_with_issue(
    r: Remediation,
    issues: &crate::people::JiraIssues,
) -> pb::Remediation {
    let issue = issues.get(&r.remediation_id).cloned();
    let mut out = remediation_pb(r);
    if let Some(issue) = issue {
        out.jira_issue_key = issue.key;
        out.jira_status = issue.status;
    }
    out
}

/// A user on the wire.
pub fn user_pb(u: UserRow) -> pb::User {
    pb::User {
        role: u.role as i32,
        user_id: u.user_id,
        display_name: u.display_name,
        created_at: Some(timestamp(u.created_at)),
    }
}

/// A notification on the wire.
pub fn notification_pb(n: NotificationRow) -> pb::Notification {
    pb::Notification {
        notification_id: n.notification_id,
        user_id: n.user_id,
        kind: n.kind,
        message: n.message,
        campaign_id: n.campaign_id,
        read: n.read,
        created_at: Some(timestamp(n.created_at)),
    }
}

/// A worklog on the wire.
pub fn worklog_pb(w: WorklogRow) -> pb::Worklog {
    pb::Worklog {
        worklog_id: w.worklog_id,
        test_id: w.test_id,
        user_id: w.user_id,
        minutes: w.minutes as i32,
        note: w.note,
        logged_at: Some(timestamp(w.logged_at)),
    }
}

/// A technique's test aggregate on the wire, its triggered rules as
/// places in the answer's table, or as strings from `rules` (the store's
/// table) when there is none.
fn aggregate_pb(a: Aggregate, rules: Option<&[(String, String)]>) -> pb::TechniqueTestAggregate {
    let mut aggregate = pb::TechniqueTestAggregate {
        technique_id: a.technique_id,
        total_tests: a.total as i32,
        validated_tests: a.validated as i32,
        cancelled_tests: a.cancelled as i32,
        effective_tests: a.effective as i32,
        blocked: a.blocked as i32,
        detected: a.detected as i32,
        logged: a.logged as i32,
        not_detected: a.not_detected as i32,
        latest_validated_at: timestamp_opt(a.latest_validated_at),
        ..Default::default()
    };
    match rules {
        None => aggregate.triggered_rule_indexes = a.triggered_rules,
        Some(rules) => {
            let named = a.triggered_rules.iter().map(|&i| &rules[i as usize]);
            #[allow(deprecated)]
            {
                aggregate.triggered_rule_ids = named.clone().map(|(_, id)| id.clone()).collect();
            }
            aggregate.triggered_rules = named
                .map(|(source, rule_id)| RuleRef {
                    source: source.clone(),
                    rule_id: rule_id.clone(),
                })
                .collect();
        }
    }
    aggregate
}

/// Aggregates in request order (every requested technique has one): with
/// `rule_table` each names its rules by place in the answer's `rules`,
/// else by strings.
pub fn aggregates_pb(
    ids: &[String],
    aggregates: Aggregates,
    rule_table: bool,
) -> pb::AggregateTestsByTechniqueResponse {
    let Aggregates { rows, rules } = aggregates;
    let found: BTreeMap<String, Aggregate> = rows
        .into_iter()
        .map(|a| (a.technique_id.clone(), a))
        .collect();
    if rule_table {
        pb::AggregateTestsByTechniqueResponse {
            aggregates: in_order(ids, found, |a| aggregate_pb(a, None)).0,
            rules: rules
                .into_iter()
                .map(|(source, rule_id)| RuleRef { source, rule_id })
                .collect(),
        }
    } else {
        pb::AggregateTestsByTechniqueResponse {
            aggregates: in_order(ids, found, |a| aggregate_pb(a, Some(&rules))).0,
            rules: Vec::new(),
        }
    }
}

fn counts(map: BTreeMap<String, i64>) -> std::collections::HashMap<String, i32> {
    map.into_iter().map(|(k, v)| (k, v as i32)).collect()
}

/// A campaign's progress on the wire.
pub fn progress_pb(p: Progress) -> pb::CampaignProgress {
    pb::CampaignProgress {
        campaign_id: p.campaign_id,
        total: p.total as i32,
        by_state: counts(p.by_state),
        by_outcome: counts(p.by_outcome),
        percent_complete: p.percent_complete,
    }
}

/// A campaign report on the wire.
impl From<Report> for pb::GetCampaignReportResponse {
    fn from(report: Report) -> Self {
        let rows = report
            .lines
            .into_iter()
            .map(|line| pb::ReportRow {
                time_to_detect_seconds: line.time_to_detect_seconds(),
                tactics: line.tactics().to_vec(),
                technique_name: line.technique.map(|t| t.name).unwrap_or_default(),
                test_id: line.test.test_id,
                technique_id: line.test.technique_id,
                state: state_pb(line.test.state) as i32,
                outcome: line.test.outcome.unwrap_or(Outcome::Unspecified) as i32,
                triggered_rule_ids: line
                    .triggered_rules
                    .iter()
                    .map(|(_, id)| id.clone())
                    .collect(),
                triggered_rules: rule_refs(&line.triggered_rules),
                remediation: line.remediation.map(remediation_pb),
            })
            .collect();
        let summary = report
            .summary
            .into_iter()
            .map(|(tactic, outcomes)| pb::ReportSummaryRow {
                tests: outcomes.values().sum::<i64>() as i32,
                by_outcome: counts(outcomes),
                tactic,
            })
            .collect();
        pb::GetCampaignReportResponse {
            campaign: Some(campaign_pb(report.campaign)),
            rows,
            summary,
            markdown: report.markdown,
        }
    }
}

/// A history upload chunk.
pub fn history_chunk(r: pb::ImportHistoryRequest) -> purple_runtime::upload::Chunk {
    purple_runtime::upload::Chunk {
        kind: "history".into(),
        file_name: r.file_name,
        data: r.data,
        last: r.last,
    }
}

/// A history import's report on the wire.
pub fn history_report_pb(report: crate::history::ImportReport) -> pb::ImportHistoryResponse {
    pb::ImportHistoryResponse {
        counts: report
            .counts
            .into_iter()
            .map(|(kind, c)| pb::HistoryCounts {
                kind: kind.to_owned(),
                created: c.created,
                updated: c.updated,
                unchanged: c.unchanged,
            })
            .collect(),
        events: report.events,
        notes: report.notes,
        records: report.records,
    }
}

/// Scoring's regressions, with their statuses checked.
pub fn regressions(
    regressions: &[pb::Regression],
) -> Result<Vec<crate::people::Regression>, CampaignError> {
    purple_api::batch::check_batch_len("regressions", regressions.len())?;
    regressions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let status = |field: &str, value: i32| {
                purple_api::common::v1::TechniqueStatus::try_from(value)
                    .ok()
                    .and_then(purple_api::common::v1::TechniqueStatus::key)
                    .ok_or_else(|| {
                        CampaignError::invalid(
                            format!("regressions[{i}].{field}"),
                            "a known technique status",
                        )
                    })
            };
            Ok(crate::people::Regression {
                key: r.regression_key.clone(),
                technique_id: r.technique_id.clone(),
                old_status: status("old_status", r.old_status)?,
                new_status: status("new_status", r.new_status)?,
                old_score: r.old_score,
                new_score: r.new_score,
            })
        })
        .collect()
}
