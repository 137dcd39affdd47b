//! Turning history records into rows, refusing impossible histories: each
//! refusal names the record's line. Pure: what is stored already and what
//! the catalogue knows come in as [`Existing`] and [`Techniques`]; out come
//! the rows to write, each marked created, updated or unchanged.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use purple_api::{
    batch::{MAX_NAME_BYTES, MAX_TEXT_BYTES, shown},
    common::v1::{Outcome, Role},
};
use purple_runtime::time::Micros;

use super::format::{
    CampaignRecord, Lined, Record, RemediationRecord, ResultRecord, TestRecord, UserRecord,
    WorklogRecord,
};
use crate::{
    convert::text_fault,
    domain::{
        DetectionResult, Milestones, Rejection, Remediation, RemediationState, State, TestRow,
    },
    people::{MAX_DISPLAY_NAME_BYTES, MAX_WORKLOG_NOTE_BYTES},
    schedule::Recurrence,
    store::{
        campaigns::CampaignRow,
        people::{UserRow, WorklogRow},
    },
};

/// A test and its rejections: what a history record holds.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryTest {
    pub test: TestRow,
    pub rejections: Vec<Rejection>,
}

/// What the server holds already for the ids an upload names.
#[derive(Debug, Default)]
pub struct Existing {
    pub users: BTreeMap<String, UserRow>,
    pub campaigns: BTreeMap<String, CampaignRow>,
    pub tests: BTreeMap<String, HistoryTest>,
    /// By (test, source, rule).
    pub results: BTreeMap<(String, String, String), DetectionResult>,
    pub remediations: BTreeMap<String, Remediation>,
    pub worklogs: BTreeMap<String, WorklogRow>,
}

/// What the catalogue says of the techniques an upload names: known ids,
/// and those revoked or deprecated (accepted, reported).
#[derive(Debug, Default)]
pub struct Techniques {
    pub known: BTreeSet<String>,
    pub retired: BTreeMap<String, &'static str>,
}

/// Whether a record adds, changes or repeats what is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

impl Change {
    fn of<T: PartialEq>(existing: Option<&T>, new: &T) -> Self {
        match existing {
            None => Change::Created,
            Some(old) if old == new => Change::Unchanged,
            Some(_) => Change::Updated,
        }
    }

    /// Whether it must be written.
    pub fn writes(self) -> bool {
        self != Change::Unchanged
    }
}

/// A record refused: its line and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub line: usize,
    pub field: String,
    pub reason: String,
}

/// The rows of an accepted upload.
#[derive(Debug, Default)]
pub struct Checked {
    pub users: Vec<(Change, UserRow)>,
    pub campaigns: Vec<(Change, CampaignRow)>,
    pub tests: Vec<(Change, HistoryTest)>,
    pub results: Vec<(Change, DetectionResult)>,
    pub remediations: Vec<(Change, Remediation)>,
    pub worklogs: Vec<(Change, WorklogRow)>,
    /// Accepted but worth knowing (retired techniques), by line.
    pub notes: Vec<String>,
}

/// The records of one upload, by kind.
#[derive(Debug, Default)]
pub struct Sorted {
    pub users: Vec<Lined<UserRecord>>,
    pub campaigns: Vec<Lined<CampaignRecord>>,
    pub tests: Vec<Lined<TestRecord>>,
    pub results: Vec<Lined<ResultRecord>>,
    pub remediations: Vec<Lined<RemediationRecord>>,
    pub worklogs: Vec<Lined<WorklogRecord>>,
}

impl Sorted {
    /// Records grouped by kind, each keeping its line.
    pub fn of(records: Vec<Lined<Record>>) -> Self {
        let mut sorted = Sorted::default();
        for Lined { line, record } in records {
            match record {
                Record::User(r) => sorted.users.push(Lined { line, record: r }),
                Record::Campaign(r) => sorted.campaigns.push(Lined { line, record: r }),
                Record::Test(r) => sorted.tests.push(Lined { line, record: *r }),
                Record::DetectionResult(r) => sorted.results.push(Lined { line, record: r }),
                Record::Remediation(r) => sorted.remediations.push(Lined { line, record: r }),
                Record::Worklog(r) => sorted.worklogs.push(Lined { line, record: r }),
            }
        }
        sorted
    }

    /// Every user id the upload names (as a user or a reference).
    pub fn user_ids(&self) -> BTreeSet<String> {
        let mut ids: BTreeSet<String> = self
            .users
            .iter()
            .map(|u| u.record.user_id.clone())
            .collect();
        for t in &self.tests {
            ids.insert(t.record.red_assignee_id.clone());
            ids.insert(t.record.blue_assignee_id.clone());
            ids.extend(t.record.rejections.iter().map(|r| r.actor_id.clone()));
        }
        ids.extend(self.campaigns.iter().map(|c| c.record.created_by.clone()));
        ids.extend(
            self.remediations
                .iter()
                .map(|r| r.record.assignee_id.clone()),
        );
        ids.extend(self.worklogs.iter().map(|w| w.record.user_id.clone()));
        ids.remove("");
        ids
    }

    /// Every test id the upload names (as a test or a reference).
    pub fn test_ids(&self) -> BTreeSet<String> {
        let mut ids: BTreeSet<String> = self
            .tests
            .iter()
            .map(|t| t.record.test_id.clone())
            .collect();
        ids.extend(self.tests.iter().filter_map(|t| t.record.retest_of.clone()));
        ids.extend(self.results.iter().map(|r| r.record.test_id.clone()));
        ids.extend(self.remediations.iter().map(|r| r.record.test_id.clone()));
        ids.extend(self.worklogs.iter().map(|w| w.record.test_id.clone()));
        ids
    }

    /// Every campaign id the upload names.
    pub fn campaign_ids(&self) -> BTreeSet<String> {
        let mut ids: BTreeSet<String> = self
            .campaigns
            .iter()
            .map(|c| c.record.campaign_id.clone())
            .collect();
        ids.extend(
            self.tests
                .iter()
                .filter_map(|t| t.record.campaign_id.clone()),
        );
        ids
    }

    /// Every technique the tests name, upper-cased.
    pub fn technique_ids(&self) -> BTreeSet<String> {
        self.tests
            .iter()
            .map(|t| t.record.technique_id.trim().to_ascii_uppercase())
            .collect()
    }
}

/// Collects refusals; stops listing after a bound (the count goes on).
struct Refusals {
    list: Vec<Refusal>,
    total: usize,
}

/// The most refusals an answer lists.
pub const MAX_LISTED: usize = 100;

impl Refusals {
    fn add(&mut self, line: usize, field: &str, reason: impl Into<String>) {
        self.total += 1;
        if self.list.len() < MAX_LISTED {
            self.list.push(Refusal {
                line,
                field: field.to_owned(),
                reason: reason.into(),
            });
        }
    }
}

/// An id as stored: non-empty, at most 256 bytes, no control characters.
fn id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && !id.chars().any(char::is_control)
}

/// The checks of one upload.
struct Checker<'a> {
    existing: &'a Existing,
    now: Micros,
    refusals: Refusals,
    /// Users of the upload and the server.
    users: BTreeSet<String>,
    campaigns: BTreeSet<String>,
}

impl Checker<'_> {
    fn instant(&mut self, line: usize, field: &str, at: DateTime<Utc>) -> Micros {
        let micros = Micros::from_datetime(at);
        if micros < Micros::PLAUSIBLE_FROM {
            self.refusals
                .add(line, field, "is before 2000-01-01, not a plausible instant");
        } else if micros > self.now {
            self.refusals.add(line, field, "is in the future");
        }
        micros
    }

    fn maybe(&mut self, line: usize, field: &str, at: Option<DateTime<Utc>>) -> Option<Micros> {
        at.map(|at| self.instant(line, field, at))
    }

    fn id(&mut self, line: usize, field: &str, id: &str) {
        if !id_ok(id) {
            self.refusals.add(
                line,
                field,
                "must be 1 to 256 bytes without control characters",
            );
        }
    }

    /// Free text within the limit the API holds the same field to, so
    /// that an imported history reads and edits as one the API wrote (the
    /// API's own check, [`text_fault`]).
    fn text(&mut self, line: usize, field: &str, value: &str, max: usize) {
        if let Some(why) = text_fault(value, max) {
            self.refusals.add(line, field, why);
        }
    }

    fn user(&mut self, line: usize, field: &str, id: &str) {
        if !id.is_empty() && !self.users.contains(id) {
            self.refusals
                .add(line, field, format!("unknown user {}", shown(id)));
        }
    }

    /// `later` not before `earlier`.
    fn ordered(
        &mut self,
        line: usize,
        (earlier_name, earlier): (&str, Option<Micros>),
        (later_name, later): (&str, Option<Micros>),
    ) {
        if let (Some(a), Some(b)) = (earlier, later)
            && b < a
        {
            self.refusals
                .add(line, later_name, format!("is before {earlier_name}"));
        }
    }
}

/// Checks an upload against what is stored and what the catalogue knows.
pub fn check(
    sorted: &Sorted,
    existing: &Existing,
    techniques: &Techniques,
    now: Micros,
) -> Result<Checked, (Vec<Refusal>, usize)> {
    let mut c = Checker {
        existing,
        now,
        refusals: Refusals {
            list: Vec::new(),
            total: 0,
        },
        users: existing.users.keys().cloned().collect(),
        campaigns: existing.campaigns.keys().cloned().collect(),
    };
    c.users
        .extend(sorted.users.iter().map(|u| u.record.user_id.clone()));
    c.campaigns.extend(
        sorted
            .campaigns
            .iter()
            .map(|x| x.record.campaign_id.clone()),
    );
    duplicates(&mut c.refusals, &sorted.users, "user_id", |r| {
        r.user_id.clone()
    });
    duplicates(&mut c.refusals, &sorted.campaigns, "campaign_id", |r| {
        r.campaign_id.clone()
    });
    duplicates(&mut c.refusals, &sorted.tests, "test_id", |r| {
        r.test_id.clone()
    });
    duplicates(&mut c.refusals, &sorted.results, "rule_id", |r| {
        format!(
            "{}|{}|{}",
            r.test_id,
            r.source.trim().to_ascii_lowercase(),
            r.rule_id
        )
    });
    duplicates(
        &mut c.refusals,
        &sorted.remediations,
        "remediation_id",
        |r| r.remediation_id.clone(),
    );
    duplicates(&mut c.refusals, &sorted.worklogs, "worklog_id", |r| {
        r.worklog_id.clone()
    });

    let mut checked = Checked::default();
    for u in &sorted.users {
        if let Some(row) = user(&mut c, u) {
            let change = Change::of(
                existing
                    .users
                    .get(&row.user_id)
                    .map(|e| (&e.display_name, e.role))
                    .as_ref(),
                &(&row.display_name, row.role),
            );
            checked.users.push((change, row));
        }
    }
    for x in &sorted.campaigns {
        if let Some(row) = campaign(&mut c, x) {
            let stored = existing
                .campaigns
                .get(&row.campaign_id)
                .map(campaign_fields);
            let change = Change::of(stored.as_ref(), &campaign_fields(&row));
            checked.campaigns.push((change, row));
        }
    }
    let tests = tests(&mut c, &sorted.tests, techniques, &mut checked.notes);
    for t in tests {
        let change = Change::of(
            existing.tests.get(&t.test.test_id).map(comparable).as_ref(),
            &comparable(&t),
        );
        checked.tests.push((change, t));
    }
    let known_tests: HashMap<String, (String, State, Option<Outcome>)> = existing
        .tests
        .values()
        .chain(checked.tests.iter().map(|(_, t)| t))
        .map(|t| {
            (
                t.test.test_id.clone(),
                (t.test.technique_id.clone(), t.test.state, t.test.outcome),
            )
        })
        .collect();
    for r in &sorted.results {
        if let Some(row) = result(&mut c, r, &known_tests) {
            let key = (row.test_id.clone(), row.source.clone(), row.rule_id.clone());
            let change = Change::of(existing.results.get(&key), &row);
            checked.results.push((change, row));
        }
    }
    for r in &sorted.remediations {
        if let Some(row) = remediation(&mut c, r, &known_tests) {
            let stored = existing
                .remediations
                .get(&row.remediation_id)
                .map(remediation_fields);
            let change = Change::of(stored.as_ref(), &remediation_fields(&row));
            checked.remediations.push((change, row));
        }
    }
    for w in &sorted.worklogs {
        if let Some(row) = worklog(&mut c, w, &known_tests) {
            let change = Change::of(existing.worklogs.get(&row.worklog_id), &row);
            checked.worklogs.push((change, row));
        }
    }
    if c.refusals.total > 0 {
        let mut list = c.refusals.list;
        list.sort_by_key(|r| r.line);
        return Err((list, c.refusals.total));
    }
    Ok(checked)
}

fn duplicates<T>(
    refusals: &mut Refusals,
    records: &[Lined<T>],
    field: &str,
    key: impl Fn(&T) -> String,
) {
    let mut first: HashMap<String, usize> = HashMap::new();
    for r in records {
        let k = key(&r.record);
        if let Some(line) = first.get(&k) {
            refusals.add(r.line, field, format!("repeats the record of line {line}"));
        } else {
            first.insert(k, r.line);
        }
    }
}

fn user(c: &mut Checker, u: &Lined<UserRecord>) -> Option<UserRow> {
    let r = &u.record;
    c.id(u.line, "user_id", &r.user_id);
    // A user's id (up to 256 bytes) is its name when none is given, here
    // and when a token's subject first acts: an export writes it back.
    if r.display_name.trim() != r.user_id {
        c.text(
            u.line,
            "display_name",
            r.display_name.trim(),
            MAX_DISPLAY_NAME_BYTES,
        );
    }
    let Some(role) = Role::from_key(r.role.trim()).filter(|role| *role != Role::Service) else {
        c.refusals.add(
            u.line,
            "role",
            format!(
                "{} is not admin, purple_lead, red_tech, blue_tech or viewer",
                shown(&r.role)
            ),
        );
        return None;
    };
    let created_at = match r.created_at {
        Some(at) => c.instant(u.line, "created_at", at),
        None => c
            .existing
            .users
            .get(&r.user_id)
            .map_or(c.now, |e| e.created_at),
    };
    Some(UserRow {
        user_id: r.user_id.clone(),
        display_name: if r.display_name.trim().is_empty() {
            r.user_id.clone()
        } else {
            r.display_name.trim().to_owned()
        },
        role,
        created_at,
    })
}

/// What a history record sets of a campaign.
fn campaign_fields(c: &CampaignRow) -> (&str, &str, &str, &str, Micros, Option<i64>, Option<&str>) {
    (
        &c.name,
        &c.description,
        &c.threat_actor_id,
        &c.created_by,
        c.created_at,
        c.interval_seconds,
        c.cron.as_deref(),
    )
}

fn campaign(c: &mut Checker, x: &Lined<CampaignRecord>) -> Option<CampaignRow> {
    let r = &x.record;
    c.id(x.line, "campaign_id", &r.campaign_id);
    if r.name.trim().is_empty() {
        c.refusals.add(x.line, "name", "required");
    }
    c.text(x.line, "name", r.name.trim(), MAX_NAME_BYTES);
    c.text(x.line, "description", &r.description, MAX_TEXT_BYTES);
    c.user(x.line, "created_by", &r.created_by);
    let created_at = c.instant(x.line, "created_at", r.created_at);
    let (interval_seconds, cron, next_run_at) = match &r.schedule {
        None => (None, None, None),
        Some(s) => match Recurrence::parse(
            s.interval_seconds.unwrap_or(0),
            s.cron.as_deref().unwrap_or(""),
        ) {
            Ok(recurrence) => {
                // Missed periods are skipped, as the scheduler does: the
                // next run is the first after now.
                let next = recurrence.next_after(c.now);
                match recurrence {
                    Recurrence::Every(seconds) => (Some(seconds), None, Some(next)),
                    Recurrence::Cron(expr) => (None, Some(expr), Some(next)),
                }
            }
            Err(err) => {
                c.refusals.add(x.line, "schedule", err.to_string());
                (None, None, None)
            }
        },
    };
    Some(CampaignRow {
        campaign_id: r.campaign_id.clone(),
        name: r.name.trim().to_owned(),
        description: r.description.clone(),
        threat_actor_id: r.threat_actor_id.trim().to_ascii_uppercase(),
        cloned_from: String::new(),
        created_by: r.created_by.clone(),
        created_at,
        interval_seconds,
        cron,
        next_run_at,
        test_count: 0,
    })
}

/// What a history record sets of a test (not its version, nor the
/// bookkeeping the server derives).
fn comparable(t: &HistoryTest) -> (TestRow, Vec<Rejection>) {
    let mut test = t.test.clone();
    test.version = 0;
    test.updated_at = Micros::EPOCH;
    test.chain_id = String::new();
    test.last_executed_at = None;
    test.rejection_reason = String::new();
    let mut rejections = t.rejections.clone();
    rejections.sort_by(|a, b| (a.rejected_at, &a.side).cmp(&(b.rejected_at, &b.side)));
    (test, rejections)
}

fn outcome_of(c: &mut Checker, line: usize, field: &str, key: Option<&str>) -> Option<Outcome> {
    let key = key?.trim();
    let outcome = Outcome::from_key(key).filter(|o| *o != Outcome::Unspecified);
    if outcome.is_none() {
        c.refusals.add(
            line,
            field,
            format!(
                "{} is not blocked, detected, logged or not_detected",
                shown(key)
            ),
        );
    }
    outcome
}

/// Every test record as a row, its chain resolved.
fn tests(
    c: &mut Checker,
    records: &[Lined<TestRecord>],
    techniques: &Techniques,
    notes: &mut Vec<String>,
) -> Vec<HistoryTest> {
    let mut out = Vec::with_capacity(records.len());
    let mut lines: HashMap<String, usize> = HashMap::new();
    for t in records {
        lines.insert(t.record.test_id.clone(), t.line);
        if let Some(row) = test(c, t, techniques, notes) {
            out.push(row);
        }
    }
    chains(c, &mut out, &lines);
    out
}

fn test(
    c: &mut Checker,
    t: &Lined<TestRecord>,
    techniques: &Techniques,
    notes: &mut Vec<String>,
) -> Option<HistoryTest> {
    let (line, r) = (t.line, &t.record);
    c.id(line, "test_id", &r.test_id);
    let technique_id = r.technique_id.trim().to_ascii_uppercase();
    if !techniques.known.contains(&technique_id) {
        c.refusals.add(
            line,
            "technique_id",
            format!("{} is not in the ATT&CK catalogue", shown(&technique_id)),
        );
    } else if let Some(why) = techniques.retired.get(&technique_id) {
        notes.push(format!(
            "line {line}: test {} is of {technique_id}, which is {why}",
            shown(&r.test_id)
        ));
    }
    if let Some(campaign) = &r.campaign_id
        && !c.campaigns.contains(campaign)
    {
        c.refusals.add(
            line,
            "campaign_id",
            format!("unknown campaign {}", shown(campaign)),
        );
    }
    c.user(line, "red_assignee_id", &r.red_assignee_id);
    c.user(line, "blue_assignee_id", &r.blue_assignee_id);
    c.text(line, "title", &r.title, MAX_NAME_BYTES);
    c.text(line, "red_notes", &r.red_notes, MAX_TEXT_BYTES);
    c.text(line, "blue_notes", &r.blue_notes, MAX_TEXT_BYTES);
    let Some(state) = State::from_key(r.state.trim()) else {
        c.refusals.add(
            line,
            "state",
            format!("{} is not a test state", shown(&r.state)),
        );
        return None;
    };
    let outcome = outcome_of(c, line, "outcome", r.outcome.as_deref());
    let created_at = c.instant(line, "created_at", r.created_at);
    let milestones = Milestones {
        red_started_at: c.maybe(line, "red_started_at", r.red_started_at),
        blue_started_at: c.maybe(line, "blue_started_at", r.blue_started_at),
        blue_completed_at: c.maybe(line, "blue_completed_at", r.blue_completed_at),
        cancelled_at: c.maybe(line, "cancelled_at", r.cancelled_at),
    };
    let executed_at = c.maybe(line, "executed_at", r.executed_at);
    let detected_at = c.maybe(line, "detected_at", r.detected_at);
    let validated_at = c.maybe(line, "validated_at", r.validated_at);
    let mut rejections = Vec::with_capacity(r.rejections.len());
    for (i, x) in r.rejections.iter().enumerate() {
        let field = |f: &str| format!("rejections[{i}].{f}");
        let side = x.side.trim().to_ascii_lowercase();
        if side != "red" && side != "blue" {
            c.refusals.add(line, &field("side"), "must be red or blue");
        }
        if x.reason.trim().is_empty() {
            c.refusals.add(line, &field("reason"), "required");
        }
        c.text(line, &field("reason"), &x.reason, MAX_TEXT_BYTES);
        c.user(line, &field("actor_id"), &x.actor_id);
        let rejected_at = c.instant(line, &field("at"), x.at);
        let rejection = Rejection {
            test_id: r.test_id.clone(),
            side,
            rejected_at,
            reason: x.reason.clone(),
            actor_id: x.actor_id.clone(),
            voided_executed_at: c.maybe(line, &field("voided_executed_at"), x.voided_executed_at),
            voided_completed_at: c.maybe(
                line,
                &field("voided_completed_at"),
                x.voided_completed_at,
            ),
            voided_outcome: outcome_of(
                c,
                line,
                &field("voided_outcome"),
                x.voided_outcome.as_deref(),
            ),
        };
        c.ordered(
            line,
            ("created_at", Some(created_at)),
            (&field("at"), Some(rejected_at)),
        );
        c.ordered(
            line,
            (&field("voided_executed_at"), rejection.voided_executed_at),
            (&field("at"), Some(rejected_at)),
        );
        c.ordered(
            line,
            (&field("voided_completed_at"), rejection.voided_completed_at),
            (&field("at"), Some(rejected_at)),
        );
        rejections.push(rejection);
    }
    states(
        c,
        line,
        state,
        outcome,
        (executed_at, detected_at, validated_at),
        &milestones,
    );
    let created = Some(created_at);
    c.ordered(
        line,
        ("created_at", created),
        ("red_started_at", milestones.red_started_at),
    );
    c.ordered(line, ("created_at", created), ("executed_at", executed_at));
    // An execution may be backdated before red pressed start (the live
    // workflow takes any instant since the test's creation); blue comes
    // after it.
    c.ordered(
        line,
        ("executed_at", executed_at),
        ("blue_started_at", milestones.blue_started_at),
    );
    c.ordered(
        line,
        ("executed_at", executed_at),
        ("detected_at", detected_at),
    );
    c.ordered(
        line,
        ("executed_at", executed_at),
        ("blue_completed_at", milestones.blue_completed_at),
    );
    c.ordered(
        line,
        ("blue_completed_at", milestones.blue_completed_at),
        ("validated_at", validated_at),
    );
    c.ordered(
        line,
        ("detected_at", detected_at),
        ("validated_at", validated_at),
    );
    c.ordered(
        line,
        ("created_at", created),
        ("cancelled_at", milestones.cancelled_at),
    );
    let instants = [
        Some(created_at),
        milestones.red_started_at,
        executed_at,
        milestones.blue_started_at,
        detected_at,
        milestones.blue_completed_at,
        validated_at,
        milestones.cancelled_at,
    ];
    let last = instants
        .into_iter()
        .flatten()
        .chain(rejections.iter().map(|r| r.rejected_at))
        .max()
        .unwrap_or(created_at);
    let last_executed_at = executed_at
        .into_iter()
        .chain(rejections.iter().filter_map(|r| r.voided_executed_at))
        .max();
    let rejection_reason = rejections
        .iter()
        .max_by_key(|r| r.rejected_at)
        .map(|r| r.reason.clone())
        .unwrap_or_default();
    Some(HistoryTest {
        test: TestRow {
            test_id: r.test_id.clone(),
            technique_id,
            template_id: r.template_id.clone(),
            campaign_id: r.campaign_id.clone(),
            title: if r.title.trim().is_empty() {
                r.technique_id.trim().to_ascii_uppercase()
            } else {
                r.title.clone()
            },
            state,
            outcome,
            retest_of: r.retest_of.clone(),
            chain_id: String::new(),
            version: 1,
            red_assignee_id: r.red_assignee_id.clone(),
            blue_assignee_id: r.blue_assignee_id.clone(),
            executed_at,
            last_executed_at,
            detected_at,
            validated_at,
            red_notes: r.red_notes.clone(),
            blue_notes: r.blue_notes.clone(),
            rejection_reason,
            created_at,
            updated_at: last,
            milestones,
        },
        rejections,
    })
}

/// What each state requires and forbids.
fn states(
    c: &mut Checker,
    line: usize,
    state: State,
    outcome: Option<Outcome>,
    (executed_at, detected_at, validated_at): (Option<Micros>, Option<Micros>, Option<Micros>),
    m: &Milestones,
) {
    let mut need = |present: bool, field: &str, why: &str| {
        if !present {
            c.refusals.add(line, field, why.to_owned());
        }
    };
    let worked = matches!(
        state,
        State::RedComplete | State::BlueInProgress | State::BlueComplete | State::Validated
    );
    let judged = matches!(state, State::BlueComplete | State::Validated);
    let what = format!("required for a test in state {}", state.key());
    if worked {
        need(executed_at.is_some(), "executed_at", &what);
    }
    if judged {
        need(outcome.is_some(), "outcome", &what);
        if outcome.is_some_and(Outcome::is_detection) {
            need(
                detected_at.is_some(),
                "detected_at",
                "required when the outcome is blocked or detected",
            );
        }
    }
    if m.blue_completed_at.is_some() {
        // The completion's event carries it (a test cancelled after blue
        // completed too): without one the audit trail would lose the event.
        need(
            outcome.is_some(),
            "outcome",
            "required with blue_completed_at (a completion has an outcome)",
        );
    }
    if state == State::Validated {
        need(validated_at.is_some(), "validated_at", &what);
    }
    if state == State::Cancelled {
        need(m.cancelled_at.is_some(), "cancelled_at", &what);
    }
    let forbid = |c: &mut Checker, present: bool, field: &str| {
        if present {
            c.refusals.add(
                line,
                field,
                format!("a test in state {} has none", state.key()),
            );
        }
    };
    if !worked && state != State::Cancelled {
        forbid(c, executed_at.is_some(), "executed_at");
    }
    if !judged && state != State::Cancelled {
        forbid(c, outcome.is_some(), "outcome");
        forbid(c, detected_at.is_some(), "detected_at");
        forbid(c, m.blue_completed_at.is_some(), "blue_completed_at");
    }
    if state != State::Validated {
        forbid(c, validated_at.is_some(), "validated_at");
    }
    if state != State::Cancelled {
        forbid(c, m.cancelled_at.is_some(), "cancelled_at");
    }
    if outcome.is_some_and(|o| !o.is_detection()) {
        forbid(c, detected_at.is_some(), "detected_at");
    }
}

/// Resolves every test's chain: a retest belongs to the chain of the test
/// it names (in the upload or stored), which must exist, be of the same
/// technique, and not lead back to itself.
fn chains(c: &mut Checker, tests: &mut [HistoryTest], lines: &HashMap<String, usize>) {
    let parents: HashMap<String, Option<String>> = tests
        .iter()
        .map(|t| (t.test.test_id.clone(), t.test.retest_of.clone()))
        .collect();
    let techniques: HashMap<String, String> = tests
        .iter()
        .map(|t| (t.test.test_id.clone(), t.test.technique_id.clone()))
        .collect();
    for t in tests.iter_mut() {
        let line = lines.get(&t.test.test_id).copied().unwrap_or(0);
        let mut current = t.test.test_id.clone();
        let mut seen = BTreeSet::new();
        let root = loop {
            if !seen.insert(current.clone()) {
                c.refusals.add(
                    line,
                    "retest_of",
                    "the retest chain leads back to this test",
                );
                break None;
            }
            match parents.get(&current) {
                Some(None) => break Some((current.clone(), techniques[&current].clone())),
                Some(Some(parent)) => current = parent.clone(),
                None => match c.existing.tests.get(&current) {
                    Some(stored) => {
                        break Some((
                            stored.test.chain_id.clone(),
                            stored.test.technique_id.clone(),
                        ));
                    }
                    None => {
                        c.refusals.add(
                            line,
                            "retest_of",
                            format!("retest of an unknown test {}", shown(&current)),
                        );
                        break None;
                    }
                },
            }
        };
        if let Some((chain, technique)) = root {
            if technique != t.test.technique_id {
                c.refusals.add(
                    line,
                    "technique_id",
                    format!("a retest must be of its chain's technique {technique}"),
                );
            }
            t.test.chain_id = chain;
        }
    }
}

fn known_test<'a>(
    c: &mut Checker,
    line: usize,
    id: &str,
    tests: &'a HashMap<String, (String, State, Option<Outcome>)>,
) -> Option<&'a (String, State, Option<Outcome>)> {
    let found = tests.get(id);
    if found.is_none() {
        c.refusals
            .add(line, "test_id", format!("unknown test {}", shown(id)));
    }
    found
}

fn result(
    c: &mut Checker,
    r: &Lined<ResultRecord>,
    tests: &HashMap<String, (String, State, Option<Outcome>)>,
) -> Option<DetectionResult> {
    let (line, x) = (r.line, &r.record);
    known_test(c, line, &x.test_id, tests)?;
    c.id(line, "rule_id", &x.rule_id);
    c.text(line, "notes", &x.notes, MAX_TEXT_BYTES);
    let source = x.source.trim().to_ascii_lowercase();
    if !matches!(source.as_str(), "" | "sigma" | "elastic") {
        c.refusals
            .add(line, "source", "must be sigma, elastic or empty");
    }
    Some(DetectionResult {
        test_id: x.test_id.clone(),
        source,
        rule_id: x.rule_id.clone(),
        triggered: x.triggered,
        triggered_at: c.maybe(line, "triggered_at", x.triggered_at),
        notes: x.notes.clone(),
    })
}

/// What a history record sets of a remediation.
fn remediation_fields(r: &Remediation) -> Remediation {
    Remediation {
        version: 0,
        ..r.clone()
    }
}

fn remediation(
    c: &mut Checker,
    r: &Lined<RemediationRecord>,
    tests: &HashMap<String, (String, State, Option<Outcome>)>,
) -> Option<Remediation> {
    let (line, x) = (r.line, &r.record);
    c.id(line, "remediation_id", &x.remediation_id);
    let (technique_id, _, _) = known_test(c, line, &x.test_id, tests)?.clone();
    c.user(line, "assignee_id", &x.assignee_id);
    c.text(line, "notes", &x.notes, MAX_TEXT_BYTES);
    let Some(state) = RemediationState::from_key(x.state.trim()) else {
        c.refusals
            .add(line, "state", "must be open, in_progress or completed");
        return None;
    };
    let opened_at = c.instant(line, "opened_at", x.opened_at);
    let started_at = c.maybe(line, "started_at", x.started_at);
    let completed_at = c.maybe(line, "completed_at", x.completed_at);
    c.ordered(
        line,
        ("opened_at", Some(opened_at)),
        ("started_at", started_at),
    );
    c.ordered(
        line,
        ("opened_at", Some(opened_at)),
        ("completed_at", completed_at),
    );
    c.ordered(
        line,
        ("started_at", started_at),
        ("completed_at", completed_at),
    );
    if state == RemediationState::Completed && completed_at.is_none() {
        c.refusals
            .add(line, "completed_at", "required for a completed remediation");
    }
    if state != RemediationState::Completed && completed_at.is_some() {
        c.refusals
            .add(line, "completed_at", "only a completed remediation has one");
    }
    if state == RemediationState::Open && started_at.is_some() {
        c.refusals
            .add(line, "started_at", "an open remediation has not started");
    }
    Some(Remediation {
        remediation_id: x.remediation_id.clone(),
        test_id: x.test_id.clone(),
        technique_id,
        state,
        version: 1,
        assignee_id: x.assignee_id.clone(),
        notes: x.notes.clone(),
        opened_at,
        started_at,
        completed_at,
    })
}

fn worklog(
    c: &mut Checker,
    w: &Lined<WorklogRecord>,
    tests: &HashMap<String, (String, State, Option<Outcome>)>,
) -> Option<WorklogRow> {
    let (line, x) = (w.line, &w.record);
    c.id(line, "worklog_id", &x.worklog_id);
    known_test(c, line, &x.test_id, tests)?;
    if x.user_id.is_empty() {
        c.refusals.add(line, "user_id", "required");
    }
    c.user(line, "user_id", &x.user_id);
    c.text(line, "note", &x.note, MAX_WORKLOG_NOTE_BYTES);
    if !(1..=100_000).contains(&x.minutes) {
        c.refusals
            .add(line, "minutes", "must be between 1 and 100,000");
    }
    Some(WorklogRow {
        worklog_id: x.worklog_id.clone(),
        test_id: x.test_id.clone(),
        user_id: x.user_id.clone(),
        minutes: x.minutes,
        note: x.note.clone(),
        logged_at: c.instant(line, "logged_at", x.logged_at),
    })
}
