//! Conversions between the wire messages and the service's rows.

use std::collections::BTreeMap;

use purple_api::{campaigns::v1 as pb, common::v1::Outcome};
use purple_runtime::time::{Micros, from_timestamp, timestamp, timestamp_opt};

use crate::{
    domain::{self, Action, State, TestRow},
    error::CampaignError,
    store::{
        campaigns::CampaignRow,
        people::{NotificationRow, RemediationRow, UserRow, WorklogRow},
    },
};

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

pub fn state_of_pb(state: pb::TestState) -> Option<State> {
    State::ALL.into_iter().find(|s| state_pb(*s) == state)
}

pub fn action_of_pb(action: i32) -> Result<Action, CampaignError> {
    use pb::TestAction as A;
    Ok(match A::try_from(action).unwrap_or(A::Unspecified) {
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

pub fn instant(
    field: &str,
    ts: Option<&prost_types::Timestamp>,
) -> Result<Option<Micros>, CampaignError> {
    ts.map(|ts| from_timestamp(ts).map_err(|e| CampaignError::invalid(field, e.to_string())))
        .transpose()
}

pub fn test_pb(t: TestRow) -> pb::Test {
    pb::Test {
        test_id: t.test_id,
        technique_id: t.technique_id,
        template_id: t.template_id,
        campaign_id: t.campaign_id.unwrap_or_default(),
        title: t.title,
        state: state_pb(t.state) as i32,
        outcome: t.outcome.unwrap_or(Outcome::Unspecified) as i32,
        retest_of: t.retest_of.unwrap_or_default(),
        version: t.version,
        red_assignee_id: t.red_assignee_id,
        blue_assignee_id: t.blue_assignee_id,
        executed_at: timestamp_opt(t.executed_at),
        detected_at: timestamp_opt(t.detected_at),
        validated_at: timestamp_opt(t.validated_at),
        red_notes: t.red_notes,
        blue_notes: t.blue_notes,
        rejection_reason: t.rejection_reason,
        created_at: Some(timestamp(t.created_at)),
        updated_at: Some(timestamp(t.updated_at)),
    }
}

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

pub fn remediation_state_pb(state: &str) -> pb::RemediationState {
    match state {
        "open" => pb::RemediationState::Open,
        "in_progress" => pb::RemediationState::InProgress,
        "completed" => pb::RemediationState::Completed,
        _ => pb::RemediationState::Unspecified,
    }
}

pub fn remediation_state_key(state: i32) -> &'static str {
    match pb::RemediationState::try_from(state) {
        Ok(pb::RemediationState::Open) => "open",
        Ok(pb::RemediationState::InProgress) => "in_progress",
        Ok(pb::RemediationState::Completed) => "completed",
        _ => "",
    }
}

pub fn remediation_pb(r: RemediationRow) -> pb::Remediation {
    pb::Remediation {
        state: remediation_state_pb(&r.state) as i32,
        remediation_id: r.remediation_id,
        test_id: r.test_id,
        technique_id: r.technique_id,
        version: r.version,
        assignee_id: r.assignee_id,
        notes: r.notes,
        opened_at: Some(timestamp(r.opened_at)),
        completed_at: timestamp_opt(r.completed_at),
    }
}

pub fn user_pb(u: UserRow) -> pb::User {
    pb::User {
        role: domain::role_from_key(&u.role) as i32,
        user_id: u.user_id,
        display_name: u.display_name,
        created_at: Some(timestamp(u.created_at)),
    }
}

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

/// Count per name, for progress maps.
pub fn tally<'a>(
    items: impl Iterator<Item = (&'a str, i64)>,
) -> std::collections::HashMap<String, i32> {
    let mut map: BTreeMap<&str, i64> = BTreeMap::new();
    for (name, n) in items {
        *map.entry(name).or_default() += n;
    }
    map.into_iter()
        .map(|(k, v)| (k.to_owned(), v as i32))
        .collect()
}
