//! The audit events an imported history implies, with their original
//! instants: the events the live workflow would have emitted for the same
//! life (docs/formats/history.md, "Events"). Their ids derive from what
//! they record, so importing the same history twice emits nothing new and
//! metrics, which deduplicates by id, counts each once.

use std::collections::BTreeMap;

use purple_api::common::v1::{EventKind, Outcome};
use purple_runtime::time::Micros;
use sha2::{Digest, Sha256};

use super::check::HistoryTest;
use crate::domain::{Event, Remediation};

/// A deterministic event id: `h-` and 32 hex digits of a digest of what
/// the event records.
fn event_id(subject: &str, kind: EventKind, at: Micros, detail: &str) -> String {
    let mut digest = Sha256::new();
    for part in [
        subject,
        kind.key().unwrap_or(""),
        &at.as_micros().to_string(),
        detail,
    ] {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    let hash = digest.finalize();
    let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("h-{hex}")
}

/// Builds the events of one test.
struct Emitter<'a> {
    test: &'a HistoryTest,
    events: Vec<Event>,
}

impl Emitter<'_> {
    fn push(
        &mut self,
        kind: EventKind,
        at: Option<Micros>,
        outcome: Option<Outcome>,
        actor: &str,
        side: &str,
    ) -> Option<&mut Event> {
        self.push_as(kind, at, outcome, actor, side, "")
    }

    /// `tag` tells apart events that would otherwise read the same (a
    /// voided execution at the instant of the one that stands).
    fn push_as(
        &mut self,
        kind: EventKind,
        at: Option<Micros>,
        outcome: Option<Outcome>,
        actor: &str,
        side: &str,
        tag: &str,
    ) -> Option<&mut Event> {
        let at = at?;
        let t = &self.test.test;
        let detail = format!(
            "{side}|{}|{tag}",
            outcome.and_then(Outcome::key).unwrap_or("")
        );
        self.events.push(Event {
            event_id: event_id(&t.test_id, kind, at, &detail),
            kind,
            occurred_at: at,
            test_id: t.test_id.clone(),
            technique_id: t.technique_id.clone(),
            campaign_id: t.campaign_id.clone().unwrap_or_default(),
            remediation_id: String::new(),
            outcome,
            side: side.to_owned(),
            actor_id: actor.to_owned(),
            attributes: BTreeMap::new(),
        });
        self.events.last_mut()
    }
}

/// The events of a test's life, in the order the live workflow records
/// them: creation, each rejection after the submission it voided, then
/// the submission that stands and what followed it.
pub fn of_test(h: &HistoryTest) -> Vec<Event> {
    let t = &h.test;
    let (red, blue) = (t.red_assignee_id.as_str(), t.blue_assignee_id.as_str());
    let mut e = Emitter {
        test: h,
        events: Vec::new(),
    };
    if let Some(created) = e.push(EventKind::TestCreated, Some(t.created_at), None, "", "") {
        if let Some(root) = &t.retest_of {
            created.attributes.insert("retest_of".into(), root.clone());
        }
        created
            .attributes
            .insert("imported".into(), "history".into());
    }
    e.push(
        EventKind::TestRedStarted,
        t.milestones.red_started_at,
        None,
        red,
        "",
    );
    let mut rejections = h.rejections.clone();
    rejections.sort_by(|a, b| (a.rejected_at, &a.side).cmp(&(b.rejected_at, &b.side)));
    for (i, r) in rejections.iter().enumerate() {
        let tag = format!("voided {i}");
        e.push_as(
            EventKind::TestRedExecuted,
            r.voided_executed_at,
            None,
            red,
            "",
            &tag,
        );
        e.push_as(
            EventKind::TestBlueCompleted,
            r.voided_completed_at,
            Some(r.voided_outcome.unwrap_or(Outcome::NotDetected)),
            blue,
            "",
            &tag,
        );
        if let Some(rejected) = e.push(
            EventKind::TestRejected,
            Some(r.rejected_at),
            None,
            &r.actor_id,
            &r.side,
        ) {
            rejected
                .attributes
                .insert("reason".into(), r.reason.clone());
        }
    }
    e.push(EventKind::TestRedExecuted, t.executed_at, None, red, "");
    e.push(
        EventKind::TestBlueStarted,
        t.milestones.blue_started_at,
        None,
        blue,
        "",
    );
    if let Some(outcome) = t.outcome {
        // A completion whose instant the history lacks counts at the
        // detection, else at the validation.
        let completed = t
            .milestones
            .blue_completed_at
            .or(t.detected_at)
            .or(t.validated_at);
        e.push(
            EventKind::TestBlueCompleted,
            completed,
            Some(outcome),
            blue,
            "",
        );
        if outcome.is_detection() {
            e.push(
                EventKind::TestDetected,
                t.detected_at,
                Some(outcome),
                blue,
                "",
            );
        }
        e.push(
            EventKind::TestValidated,
            t.validated_at,
            Some(outcome),
            "",
            "",
        );
    }
    e.push(
        EventKind::TestCancelled,
        t.milestones.cancelled_at,
        None,
        "",
        "",
    );
    e.events
}

/// The events of a remediation's life.
pub fn of_remediation(r: &Remediation, campaign_id: &str) -> Vec<Event> {
    [
        (EventKind::RemediationOpened, Some(r.opened_at)),
        (EventKind::RemediationStarted, r.started_at),
        (EventKind::RemediationCompleted, r.completed_at),
    ]
    .into_iter()
    .filter_map(|(kind, at)| {
        let at = at?;
        Some(Event {
            event_id: event_id(&r.remediation_id, kind, at, ""),
            kind,
            occurred_at: at,
            test_id: r.test_id.clone(),
            technique_id: r.technique_id.clone(),
            campaign_id: campaign_id.to_owned(),
            remediation_id: r.remediation_id.clone(),
            outcome: None,
            side: String::new(),
            actor_id: r.assignee_id.clone(),
            attributes: BTreeMap::new(),
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Milestones, Rejection, State, TestRow};

    fn at(s: i64) -> Micros {
        Micros::from_micros(1_780_000_000_000_000 + s * 1_000_000)
    }

    #[test]
    fn a_rejected_then_detected_test_emits_the_voided_submission_first() {
        let h = HistoryTest {
            test: TestRow {
                test_id: "t".into(),
                technique_id: "T1059".into(),
                template_id: String::new(),
                campaign_id: None,
                title: "x".into(),
                state: State::Validated,
                outcome: Some(Outcome::Detected),
                retest_of: None,
                chain_id: "t".into(),
                version: 1,
                red_assignee_id: "r".into(),
                blue_assignee_id: "b".into(),
                executed_at: Some(at(10)),
                last_executed_at: Some(at(10)),
                detected_at: Some(at(12)),
                validated_at: Some(at(30)),
                red_notes: String::new(),
                blue_notes: String::new(),
                rejection_reason: "again".into(),
                created_at: at(0),
                updated_at: at(30),
                milestones: Milestones {
                    red_started_at: Some(at(1)),
                    blue_started_at: Some(at(11)),
                    blue_completed_at: Some(at(25)),
                    cancelled_at: None,
                },
            },
            rejections: vec![Rejection {
                test_id: "t".into(),
                side: "blue".into(),
                rejected_at: at(20),
                reason: "again".into(),
                actor_id: "lead".into(),
                voided_executed_at: None,
                voided_completed_at: Some(at(15)),
                voided_outcome: Some(Outcome::Logged),
            }],
        };
        let kinds: Vec<(EventKind, Micros)> = of_test(&h)
            .iter()
            .map(|e| (e.kind, e.occurred_at))
            .collect();
        assert_eq!(
            kinds,
            [
                (EventKind::TestCreated, at(0)),
                (EventKind::TestRedStarted, at(1)),
                (EventKind::TestBlueCompleted, at(15)),
                (EventKind::TestRejected, at(20)),
                (EventKind::TestRedExecuted, at(10)),
                (EventKind::TestBlueStarted, at(11)),
                (EventKind::TestBlueCompleted, at(25)),
                (EventKind::TestDetected, at(12)),
                (EventKind::TestValidated, at(30)),
            ]
        );
        // The same history, the same ids.
        assert_eq!(of_test(&h), of_test(&h));
    }
}
