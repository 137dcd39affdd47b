//! Tests through their workflow: batch creation (techniques checked against
//! ingest in one chunked call), transitions, detection results and
//! remediations. Every accepted change and its events are written in one
//! transaction; a refused one writes nothing.

use std::collections::{BTreeMap, BTreeSet};

use purple_api::{
    batch::{DEFAULT_FANOUT, MAX_BATCH_IDS, chunked},
    common::v1::{Outcome, Role},
    ingest::v1::GetTechniquesByIdsRequest,
};
use purple_runtime::{
    clients::Peers,
    time::{Micros, now_micros},
};

use crate::{
    domain::{
        self, Action, DetectionResult, EventDraft, Input, Plan, State, TestRow, role_from_key,
    },
    error::CampaignError,
    store::{CampaignStore, outbox::OutboxEvent, people::RemediationRow},
};

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

/// The outcome of a transition.
pub struct Transitioned {
    pub test: TestRow,
    pub retest: Option<TestRow>,
    pub remediation: Option<RemediationRow>,
}

/// Runs the workflow.
#[derive(Clone, Debug)]
pub struct Workflow {
    pub(crate) store: CampaignStore,
    pub(crate) peers: Peers,
}

/// A new id for a test, campaign, event or anything else campaigns creates.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An outbox event of a test.
pub fn test_event(test: &TestRow, draft: &EventDraft, actor_id: &str) -> OutboxEvent {
    OutboxEvent {
        event_id: new_id(),
        kind: draft.kind.to_owned(),
        occurred_at: draft.occurred_at,
        test_id: test.test_id.clone(),
        technique_id: test.technique_id.clone(),
        campaign_id: test.campaign_id.clone().unwrap_or_default(),
        remediation_id: String::new(),
        outcome: draft.outcome.and_then(Outcome::key).map(str::to_owned),
        side: draft.side.to_owned(),
        actor_id: actor_id.to_owned(),
        attributes: draft.attributes.clone(),
    }
}

/// The `test.created` event of a new test.
pub fn created_event(test: &TestRow, actor_id: &str) -> OutboxEvent {
    let mut draft = EventDraft {
        kind: "test.created",
        occurred_at: test.created_at,
        outcome: None,
        side: "",
        attributes: BTreeMap::new(),
    };
    if let Some(root) = &test.retest_of {
        draft.attributes.insert("retest_of".into(), root.clone());
    }
    test_event(test, &draft, actor_id)
}

fn remediation_event(
    r: &RemediationRow,
    kind: &str,
    at: Micros,
    actor_id: &str,
    campaign_id: &str,
) -> OutboxEvent {
    OutboxEvent {
        event_id: new_id(),
        kind: kind.to_owned(),
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

impl Workflow {
    /// The role of an acting user; UNAUTHENTICATED when unknown.
    pub async fn role(&self, actor_id: &str) -> Result<Role, CampaignError> {
        match self.store.role_of(actor_id).await? {
            Some(role) => Ok(role_from_key(&role)),
            None => Err(CampaignError::Unauthenticated(format!(
                "actor_id: no user {actor_id:?}"
            ))),
        }
    }

    /// Requires one of `roles`.
    pub async fn require(
        &self,
        actor_id: &str,
        roles: &[Role],
        what: &str,
    ) -> Result<Role, CampaignError> {
        let role = self.role(actor_id).await?;
        if roles.contains(&role) {
            Ok(role)
        } else {
            Err(CampaignError::Forbidden(format!(
                "{what} needs the role {}",
                roles
                    .iter()
                    .filter_map(|r| domain::role_key(*r))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )))
        }
    }

    /// Checks that every technique exists in ingest: one chunked batch call.
    pub async fn check_techniques(
        &self,
        technique_ids: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, String>, CampaignError> {
        let ids: Vec<String> = technique_ids.iter().cloned().collect();
        let answers = chunked(&ids, MAX_BATCH_IDS, DEFAULT_FANOUT, |chunk| {
            let mut ingest = self.peers.ingest();
            async move {
                ingest
                    .get_techniques_by_ids(GetTechniquesByIdsRequest {
                        technique_ids: chunk,
                    })
                    .await
            }
        })
        .await
        .map_err(CampaignError::peer("ingest"))?;
        let mut names = BTreeMap::new();
        let mut missing = Vec::new();
        for answer in answers {
            let answer = answer.into_inner();
            missing.extend(answer.missing_ids);
            names.extend(
                answer
                    .techniques
                    .into_iter()
                    .map(|t| (t.technique_id, t.name)),
            );
        }
        if !missing.is_empty() {
            return Err(CampaignError::invalid(
                "technique_id",
                format!("unknown ATT&CK techniques: {}", missing.join(", ")),
            ));
        }
        Ok(names)
    }

    /// Builds test rows (planned, own chain) for `new`, titles defaulting to
    /// the technique's name; created_at advances a microsecond per test so
    /// creation order survives a batch.
    pub fn new_rows(
        new: &[NewTest],
        names: &BTreeMap<String, String>,
        now: Micros,
    ) -> Vec<TestRow> {
        new.iter()
            .enumerate()
            .map(|(i, n)| {
                let test_id = new_id();
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
                    detected_at: None,
                    validated_at: None,
                    red_notes: String::new(),
                    blue_notes: String::new(),
                    rejection_reason: String::new(),
                    created_at: now + i as Micros,
                    updated_at: now + i as Micros,
                }
            })
            .collect()
    }

    /// Creates tests in one transaction (tests, then their events).
    pub async fn create_tests(
        &self,
        actor_id: &str,
        new: Vec<NewTest>,
    ) -> Result<Vec<TestRow>, CampaignError> {
        self.require(actor_id, &[Role::PurpleLead, Role::Admin], "creating tests")
            .await?;
        if new.is_empty() {
            return Err(CampaignError::invalid("tests", "at least one test"));
        }
        purple_api::batch::check_batch_len("tests", new.len())?;
        for (i, t) in new.iter().enumerate() {
            if t.technique_id.trim().is_empty() {
                return Err(CampaignError::invalid(
                    format!("tests[{i}].technique_id"),
                    "required",
                ));
            }
        }
        let techniques: BTreeSet<String> = new.iter().map(|t| t.technique_id.clone()).collect();
        let names = self.check_techniques(&techniques).await?;
        let rows = Self::new_rows(&new, &names, now_micros());
        let mut tx = self.store.db().begin().await?;
        self.store
            .insert_tests(&mut tx, &rows)
            .await
            .map_err(|e| foreign_key(e, "campaign_id"))?;
        let events: Vec<OutboxEvent> = rows.iter().map(|t| created_event(t, actor_id)).collect();
        self.store.enqueue(&mut tx, &events, now_micros()).await?;
        let techniques: Vec<String> = techniques.into_iter().collect();
        self.store.refresh_tallies(&mut tx, &techniques).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Applies one action to one test.
    pub async fn transition(
        &self,
        test_id: &str,
        action: Action,
        actor_id: &str,
        expected_version: i64,
        input: Input,
    ) -> Result<Transitioned, CampaignError> {
        let now = now_micros();
        let mut tx = self.store.db().begin().await?;
        let (test, role) = self
            .store
            .test_and_role(&mut tx, test_id, actor_id)
            .await?
            .ok_or_else(|| CampaignError::NotFound(format!("test {test_id} does not exist")))?;
        let role = role.map(|r| role_from_key(&r)).ok_or_else(|| {
            CampaignError::Unauthenticated(format!("actor_id: no user {actor_id:?}"))
        })?;
        let Plan {
            after,
            events,
            open_remediation,
            becomes_effective,
            retest,
        } = domain::plan(&test, action, role, expected_version, &input, now, new_id)?;

        if action == Action::CompleteBlue {
            let results: Vec<DetectionResult> = input
                .results
                .iter()
                .map(|r| DetectionResult {
                    test_id: test.test_id.clone(),
                    ..r.clone()
                })
                .collect();
            self.store.upsert_results(&mut tx, &results, now).await?;
        }
        let updated = after != test;
        if updated
            && !self
                .store
                .update_test(&mut tx, &after, test.version)
                .await?
        {
            return Err(CampaignError::Stale {
                expected: expected_version,
                actual: test.version + 1,
            });
        }
        let mut outbox: Vec<OutboxEvent> = events
            .iter()
            .map(|e| test_event(&after, e, actor_id))
            .collect();
        if becomes_effective {
            self.store.set_effective(&mut tx, &after).await?;
        }
        let mut remediation = None;
        if open_remediation {
            let r = RemediationRow {
                remediation_id: new_id(),
                test_id: after.test_id.clone(),
                technique_id: after.technique_id.clone(),
                state: "open".into(),
                version: 1,
                assignee_id: String::new(),
                notes: String::new(),
                opened_at: now,
                completed_at: None,
            };
            self.store.insert_remediation(&mut tx, &r).await?;
            outbox.push(remediation_event(
                &r,
                "remediation.opened",
                now,
                actor_id,
                after.campaign_id.as_deref().unwrap_or(""),
            ));
            remediation = Some(r);
        }
        if let Some(new) = &retest {
            self.store
                .insert_tests(&mut tx, std::slice::from_ref(new))
                .await?;
            outbox.push(created_event(new, actor_id));
        }
        self.store.enqueue(&mut tx, &outbox, now).await?;
        if updated || retest.is_some() {
            self.store
                .refresh_tallies(&mut tx, std::slice::from_ref(&test.technique_id))
                .await?;
        }
        tx.commit().await?;
        let mut test = after;
        test.version += i64::from(updated);
        Ok(Transitioned {
            test,
            retest,
            remediation,
        })
    }

    /// Records detection results of tests that blue is working or has
    /// completed, in one statement.
    pub async fn record_results(
        &self,
        actor_id: &str,
        results: Vec<DetectionResult>,
    ) -> Result<usize, CampaignError> {
        self.require(
            actor_id,
            &[Role::BlueTech, Role::PurpleLead],
            "recording detection results",
        )
        .await?;
        purple_api::batch::check_batch_len("results", results.len())?;
        for (i, r) in results.iter().enumerate() {
            if r.test_id.is_empty() || r.rule_id.is_empty() {
                return Err(CampaignError::invalid(
                    format!("results[{i}]"),
                    "test_id and rule_id are required",
                ));
            }
        }
        let ids: Vec<String> = results
            .iter()
            .map(|r| r.test_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut tx = self.store.db().begin().await?;
        let states = self.store.states_of(&mut tx, &ids).await?;
        for id in &ids {
            match states.get(id).map(String::as_str) {
                None => return Err(CampaignError::NotFound(format!("test {id} does not exist"))),
                Some("blue_in_progress" | "blue_complete") => {}
                Some(state) => {
                    return Err(CampaignError::WrongState(format!(
                        "detection results of test {id} need blue_in_progress or blue_complete, not {state}"
                    )));
                }
            }
        }
        self.store
            .upsert_results(&mut tx, &results, now_micros())
            .await?;
        tx.commit().await?;
        Ok(results.len())
    }

    /// open → in_progress → completed.
    pub async fn transition_remediation(
        &self,
        remediation_id: &str,
        actor_id: &str,
        to: &str,
        expected_version: i64,
        notes: String,
    ) -> Result<RemediationRow, CampaignError> {
        self.require(
            actor_id,
            &[Role::PurpleLead, Role::BlueTech, Role::Admin],
            "working a remediation",
        )
        .await?;
        let now = now_micros();
        let mut tx = self.store.db().begin().await?;
        let current = self
            .store
            .remediation(&mut tx, remediation_id)
            .await?
            .ok_or_else(|| {
                CampaignError::NotFound(format!("remediation {remediation_id} does not exist"))
            })?;
        if current.version != expected_version {
            return Err(CampaignError::Stale {
                expected: expected_version,
                actual: current.version,
            });
        }
        let kind = match (current.state.as_str(), to) {
            ("open", "in_progress") => "remediation.started",
            ("in_progress", "completed") => "remediation.completed",
            (from, to) => {
                return Err(CampaignError::WrongState(format!(
                    "a remediation cannot go from {from} to {to}"
                )));
            }
        };
        let after = RemediationRow {
            state: to.to_owned(),
            notes: if notes.is_empty() {
                current.notes.clone()
            } else {
                notes
            },
            completed_at: (to == "completed").then_some(now),
            version: current.version + 1,
            ..current.clone()
        };
        if !self
            .store
            .update_remediation(&mut tx, &after, current.version)
            .await?
        {
            return Err(CampaignError::Stale {
                expected: expected_version,
                actual: current.version + 1,
            });
        }
        self.store
            .enqueue(
                &mut tx,
                &[remediation_event(&after, kind, now, actor_id, "")],
                now,
            )
            .await?;
        tx.commit().await?;
        Ok(after)
    }
}

/// A foreign-key failure names the field it came from.
pub fn foreign_key(err: sqlx::Error, field: &str) -> CampaignError {
    let is_fk = matches!(&err, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation);
    if is_fk {
        CampaignError::invalid(field, "refers to something that does not exist")
    } else {
        CampaignError::Store(err)
    }
}
