//! Tests through their workflow (docs/design.md §3): batch creation (the
//! techniques checked against ingest in one chunked call), transitions,
//! detection results and remediations, and the reads of tests. Every
//! accepted change and its events are written in one transaction; a
//! refused one writes nothing.

use std::collections::{BTreeMap, BTreeSet};

use purple_api::{
    batch::{MAX_NAME_BYTES, check_batch_len, check_ids},
    common::v1::Role,
};
use purple_runtime::{
    auth::Caller,
    paging::Page,
    time::{MICROS_PER_DAY, Micros, now_micros},
};

use crate::{
    clients::PeerClients,
    domain::{
        self, Action, DetectionResult, Event, Input, NewTest, Plan, REMEDIATION_ROLES, Remediation,
        RemediationState, TestRow,
    },
    error::CampaignError,
    people::Directory,
    store::{
        CampaignStore,
        workflow::{Aggregates, TallyDelta, TestFilter},
    },
};

/// The outcome of a transition.
pub struct Transitioned {
    pub test: TestRow,
    pub retest: Option<TestRow>,
    pub remediation: Option<Remediation>,
}

/// The sort key of the test list: (created_at, test id), newest first.
pub const TEST_KEY_LEN: usize = 2;
/// The sort key of the stale list: (validated_at, chain id), oldest first.
pub const STALE_KEY_LEN: usize = 2;

/// Runs the workflow.
#[derive(Clone, Debug)]
pub struct Workflow {
    pub(crate) store: CampaignStore,
    pub(crate) peers: PeerClients,
    pub(crate) directory: Directory,
    /// A validated test older than this is stale.
    pub(crate) stale_after_days: u32,
    /// Jira and Tempo, when on: told in the transaction of the change.
    pub(crate) integrations: crate::integrations::Integrations,
    /// Tests recently read by id, checked on every read.
    pub(crate) tests: crate::test_cache::TestCache,
}

/// A new id for a test, campaign, event or anything else campaigns creates.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Refuses an empty or oversized list of new tests, or one without a
/// technique.
pub fn check_new_tests(new: &[NewTest], allow_empty: bool) -> Result<(), CampaignError> {
    if new.is_empty() && !allow_empty {
        return Err(CampaignError::invalid("tests", "at least one test"));
    }
    check_batch_len("tests", new.len())?;
    for (i, t) in new.iter().enumerate() {
        if t.technique_id.trim().is_empty() {
            return Err(CampaignError::invalid(
                format!("tests[{i}].technique_id"),
                "required",
            ));
        }
        if let Some(why) = crate::convert::text_fault(&t.title, MAX_NAME_BYTES) {
            return Err(CampaignError::invalid(format!("tests[{i}].title"), why));
        }
    }
    Ok(())
}

impl Workflow {
    /// Creates tests in one transaction (tests, their events, the tallies
    /// of their techniques).
    pub async fn create_tests(
        &self,
        actor: &Caller,
        new: Vec<NewTest>,
    ) -> Result<Vec<TestRow>, CampaignError> {
        self.directory
            .acting(actor, &[Role::PurpleLead, Role::Admin], "creating tests")
            .await?;
        let actor_id = actor.subject.as_str();
        check_new_tests(&new, false)?;
        let techniques: BTreeSet<String> = new.iter().map(|t| t.technique_id.clone()).collect();
        let names = self.peers.technique_names(&techniques).await?;
        let now = now_micros();
        let rows = domain::new_rows(&new, &names, now, new_id);
        let events: Vec<Event> = rows
            .iter()
            .map(|t| Event::created(t, actor_id, new_id()))
            .collect();
        let mut tx = self.store.db().begin().await?;
        self.store
            .insert_tests(&mut tx, &rows)
            .await
            .map_err(|e| foreign_key(e, "campaign_id"))?;
        let enqueue = self.store.enqueue_write(&events, now);
        let bump = self
            .store
            .bump_tallies_write(&TallyDelta::of_new_tests(&rows));
        tx.commit_with([enqueue, bump].into_iter().flatten())
            .await?;
        Ok(rows)
    }

    /// Applies one action to one test.
    pub async fn transition(
        &self,
        test_id: &str,
        action: Action,
        actor: &Caller,
        expected_version: i64,
        input: Input,
    ) -> Result<Transitioned, CampaignError> {
        // The role first: a caller without one learns nothing of the test.
        domain::require_role(&actor.roles, action.roles(), action.name())?;
        self.directory.ensure(actor).await?;
        let actor_id = actor.subject.as_str();
        let now = now_micros();
        // Read before the write transaction, so that SQLite's one writer
        // turn is held for the writes alone: the update below writes only
        // if the test is still at the version read (else Stale). A retest
        // leaves its test as it is, so no update guards what it read (a
        // history re-import may rewrite a validated test): it reads in its
        // transaction, as before.
        let mut retest_tx = match action {
            Action::Retest => Some(self.store.db().begin().await?),
            _ => None,
        };
        let test = match retest_tx.as_mut() {
            Some(tx) => self.store.test(&mut *tx, test_id).await?,
            None => self.store.test(self.store.db().pool(), test_id).await?,
        }
        .ok_or_else(|| {
            CampaignError::NotFound(format!("test {} does not exist", shown(test_id)))
        })?;
        let Plan {
            after,
            events,
            open_remediation,
            becomes_effective,
            retest,
            void_results,
            rejection,
        } = domain::plan(
            &test,
            action,
            &actor.roles,
            expected_version,
            &input,
            now,
            new_id,
        )?;

        let mut tx = match retest_tx {
            Some(tx) => tx,
            None => self.store.db().begin().await?,
        };
        if void_results {
            self.store.void_results(&mut tx, &test.test_id).await?;
        }
        if let Some(rejection) = rejection {
            let rejection = domain::Rejection {
                actor_id: actor_id.to_owned(),
                ..rejection
            };
            self.store.insert_rejection(&mut tx, &rejection).await?;
        }
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
        let mut outbox: Vec<Event> = events
            .iter()
            .map(|e| Event::of_test(&after, e, actor_id, new_id()))
            .collect();
        if becomes_effective {
            self.store.set_effective(&mut tx, &after).await?;
        }
        let mut remediation = None;
        if open_remediation {
            let r = Remediation {
                remediation_id: new_id(),
                test_id: after.test_id.clone(),
                technique_id: after.technique_id.clone(),
                state: RemediationState::Open,
                version: 1,
                assignee_id: String::new(),
                notes: String::new(),
                opened_at: now,
                started_at: None,
                completed_at: None,
            };
            self.store.insert_remediation(&mut tx, &r).await?;
            self.store
                .enqueue_integrations(&mut tx, &self.integrations.opened(&r, &after), now)
                .await?;
            outbox.push(Event::of_remediation(
                &r,
                purple_api::common::v1::EventKind::RemediationOpened,
                now,
                actor_id,
                after.campaign_id.as_deref().unwrap_or(""),
                new_id(),
            ));
            remediation = Some(r);
        }
        if let Some(new) = &retest {
            self.store
                .insert_tests(&mut tx, std::slice::from_ref(new))
                .await?;
            outbox.push(Event::created(new, actor_id, new_id()));
        }
        // A validation's tally moves in its update's trigger (migration
        // 0014); a new test and a cancellation move the counts here.
        let delta = match (&retest, action) {
            (Some(_), _) => TallyDelta {
                total: 1,
                cancelled: 0,
            },
            (None, Action::Cancel) if updated => TallyDelta {
                total: -1,
                cancelled: 1,
            },
            _ => TallyDelta::default(),
        };
        let bump = (delta != TallyDelta::default())
            .then(|| {
                self.store
                    .bump_tallies_write(&BTreeMap::from([(test.technique_id.as_str(), delta)]))
            })
            .flatten();
        // The outbox and the tally go with the commit: on SQLite the last
        // of them and COMMIT are one command in the writer's turn.
        tx.commit_with(
            [self.store.enqueue_write(&outbox, now), bump]
                .into_iter()
                .flatten(),
        )
        .await?;
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
        actor: &Caller,
        results: Vec<DetectionResult>,
    ) -> Result<usize, CampaignError> {
        self.directory
            .acting(
                actor,
                &[Role::BlueTech, Role::PurpleLead],
                "recording detection results",
            )
            .await?;
        check_batch_len("results", results.len())?;
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
                None => {
                    return Err(CampaignError::NotFound(format!(
                        "test {} does not exist",
                        shown(id)
                    )));
                }
                Some("blue_in_progress" | "blue_complete") => {}
                Some(state) => {
                    return Err(CampaignError::WrongState(format!(
                        "detection results of test {} need blue_in_progress or blue_complete, not {state}",
                        shown(id)
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

    /// Moves a remediation: open → in_progress → completed.
    pub async fn transition_remediation(
        &self,
        remediation_id: &str,
        actor: &Caller,
        to: RemediationState,
        expected_version: i64,
        notes: String,
    ) -> Result<Remediation, CampaignError> {
        self.directory
            .acting(actor, &REMEDIATION_ROLES, "working a remediation")
            .await?;
        let actor_id = actor.subject.as_str();
        let now = now_micros();
        let mut tx = self.store.db().begin().await?;
        let current = self
            .store
            .remediation(&mut tx, remediation_id)
            .await?
            .ok_or_else(|| {
                CampaignError::NotFound(format!(
                    "remediation {} does not exist",
                    shown(remediation_id)
                ))
            })?;
        let (after, kind) = domain::move_remediation(&current, to, expected_version, notes, now)?;
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
        let event = Event::of_remediation(&after, kind, now, actor_id, "", new_id());
        self.store.enqueue(&mut tx, &[event], now).await?;
        self.store
            .enqueue_integrations(&mut tx, &self.integrations.moved(&after), now)
            .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Tests by id, aligned with `ids` (None: not stored).
    pub async fn tests_by_ids(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<std::sync::Arc<TestRow>>>, CampaignError> {
        check_ids("test_ids", ids)?;
        Ok(self.tests.read(&self.store, ids).await?)
    }

    /// A filtered page of tests, newest first, and the next token.
    pub async fn list_tests(
        &self,
        filter: &TestFilter,
        page: &Page,
    ) -> Result<(Vec<TestRow>, String), CampaignError> {
        let mut tests = self.store.list_tests(filter, page).await?;
        let next = page.finish(&mut tests, |t| {
            vec![t.created_at.into(), (&t.test_id).into()]
        });
        Ok((tests, next))
    }

    /// Score inputs per technique, now or as of a past instant.
    pub async fn aggregate(
        &self,
        technique_ids: &[String],
        as_of: Option<Micros>,
    ) -> Result<Aggregates, CampaignError> {
        check_ids("technique_ids", technique_ids)?;
        Ok(self.store.aggregate(technique_ids, as_of).await?)
    }

    /// The retest chain of a test, root first, and its effective test.
    pub async fn retest_chain(
        &self,
        test_id: &str,
    ) -> Result<(Vec<TestRow>, Option<String>), CampaignError> {
        let (tests, effective) = self.store.retest_chain(test_id).await?;
        if tests.is_empty() {
            return Err(CampaignError::NotFound(format!(
                "test {} does not exist",
                shown(test_id)
            )));
        }
        Ok((tests, effective))
    }

    /// Effective tests validated before `older_than` (by default the
    /// configured staleness age ago), oldest first, and the next token.
    pub async fn stale_tests(
        &self,
        older_than: Option<Micros>,
        page: &Page,
    ) -> Result<(Vec<TestRow>, String), CampaignError> {
        let older_than = older_than
            .unwrap_or_else(|| now_micros() - i64::from(self.stale_after_days) * MICROS_PER_DAY);
        let mut tests = self.store.stale_tests(older_than, page).await?;
        let next = page.finish(&mut tests, |t| {
            vec![
                t.validated_at.unwrap_or(t.updated_at).into(),
                (&t.chain_id).into(),
            ]
        });
        Ok((tests, next))
    }
}

impl Workflow {
    /// The detection results of tests, grouped by test in request order,
    /// and the tests that do not exist.
    pub async fn detection_results(
        &self,
        test_ids: &[String],
    ) -> Result<(Vec<DetectionResult>, Vec<String>), CampaignError> {
        purple_api::batch::check_ids("test_ids", test_ids)?;
        let (tests, mut results) = futures::try_join!(
            self.store.tests_by_ids(test_ids),
            self.store.results_of(test_ids)
        )?;
        let mut found = Vec::new();
        let mut missing = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for id in test_ids {
            if !seen.insert(id.as_str()) {
                continue;
            }
            if tests.contains_key(id) {
                found.extend(results.remove(id).unwrap_or_default());
            } else {
                missing.push(id.clone());
            }
        }
        Ok((found, missing))
    }
}

pub use purple_api::batch::shown;

/// A unique-key failure says what already exists.
pub fn unique(err: sqlx::Error, field: &str, reason: &str) -> CampaignError {
    let is_unique = matches!(&err, sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation);
    if is_unique {
        CampaignError::invalid(field, reason)
    } else {
        CampaignError::Store(err)
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
