//! Bringing a program's history in and out (docs/formats/history.md): an
//! import receives one NDJSON file (gzip accepted) within the process's
//! upload limits, reads what is stored for the ids it names and what the
//! catalogue knows of its techniques (one batched call), checks every
//! record ([`check`]), and writes what changed — rows, the audit events the
//! history implies with their original instants ([`events`]), the
//! effective tests and tallies — in one transaction. Nothing is written
//! when a record is refused. An export streams the same format.

pub mod check;
pub mod events;
pub mod format;

use std::collections::{BTreeMap, BTreeSet};

use futures::{Stream, StreamExt};
use purple_runtime::{
    time::{Micros, now_micros},
    upload::{self, Chunk, GunzipError, UploadLimits},
};

use crate::{
    clients::PeerClients,
    domain::{Event, Remediation},
    error::CampaignError,
    store::{CampaignStore, history::HistoryWrite},
};
use check::{Change, Checked, Existing, HistoryTest, Refusal, Sorted, Techniques};
use format::{
    CampaignRecord, Record, RejectionRecord, RemediationRecord, ResultRecord, ScheduleRecord,
    TestRecord, UserRecord, WorklogRecord,
};

/// What an import did, per record kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// An import's report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// By kind, in the format's order.
    pub counts: Vec<(&'static str, Counts)>,
    pub events: u64,
    pub notes: Vec<String>,
    pub records: u64,
}

/// Imports and exports histories.
#[derive(Clone, Debug)]
pub struct History {
    pub(crate) store: CampaignStore,
    pub(crate) peers: PeerClients,
    pub(crate) uploads: UploadLimits,
}

/// The most line errors an answer lists.
const MAX_LINE_ERRORS: usize = 100;
/// Rows per page of an export.
const EXPORT_PAGE: i64 = 1_000;
/// Bytes per chunk of an export (a record longer than this is its own
/// chunk).
const EXPORT_CHUNK: usize = 256 * 1024;

fn counts<T>(rows: &[(Change, T)]) -> Counts {
    let mut c = Counts::default();
    for (change, _) in rows {
        match change {
            Change::Created => c.created += 1,
            Change::Updated => c.updated += 1,
            Change::Unchanged => c.unchanged += 1,
        }
    }
    c
}

impl History {
    /// Receives, checks and writes one history upload.
    pub async fn import<S>(&self, stream: S) -> Result<ImportReport, CampaignError>
    where
        S: Stream<Item = Result<Chunk, tonic::Status>> + Unpin,
    {
        let received = upload::receive(stream, &self.uploads).await?;
        let [file] = received.files.as_slice() else {
            return Err(CampaignError::invalid(
                "file_name",
                "a history upload is one file, named on its first chunk",
            ));
        };
        let max_bytes = self.uploads.max_bytes;
        let name = file.name.clone();
        let bytes = upload::gunzip(file, max_bytes).map_err(|err| match err {
            GunzipError::Corrupt { .. } => {
                CampaignError::invalid(format!("file {name}"), err.to_string())
            }
            GunzipError::TooLarge(_) => CampaignError::invalid("data", err.to_string()),
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            CampaignError::invalid(
                format!("file {name}"),
                format!("not UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        let records = format::read(text, MAX_LINE_ERRORS).map_err(|errors| {
            let refusals: Vec<Refusal> = errors
                .into_iter()
                .map(|e| Refusal {
                    line: e.line,
                    field: "record".into(),
                    reason: e.reason,
                })
                .collect();
            let total = refusals.len();
            CampaignError::Refused { refusals, total }
        })?;
        drop(received);
        let record_count = records.len() as u64;
        let sorted = Sorted::of(records);
        let existing = self.existing(&sorted).await?;
        let technique_ids: Vec<String> = sorted.technique_ids().into_iter().collect();
        let (known, retired) = self.peers.technique_states(&technique_ids).await?;
        let techniques = Techniques { known, retired };
        let now = now_micros();
        let checked = check::check(&sorted, &existing, &techniques, now)
            .map_err(|(refusals, total)| CampaignError::Refused { refusals, total })?;
        let mut report = self.write(&checked, &existing, now).await?;
        report.records = record_count;
        Ok(report)
    }

    /// What is stored for the ids the upload names: one statement per
    /// table.
    async fn existing(&self, sorted: &Sorted) -> Result<Existing, CampaignError> {
        let user_ids: Vec<String> = sorted.user_ids().into_iter().collect();
        let campaign_ids: Vec<String> = sorted.campaign_ids().into_iter().collect();
        let test_ids: Vec<String> = sorted.test_ids().into_iter().collect();
        let result_tests: Vec<String> = sorted
            .results
            .iter()
            .map(|r| r.record.test_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let remediation_ids: Vec<String> = sorted
            .remediations
            .iter()
            .map(|r| r.record.remediation_id.clone())
            .collect();
        let worklog_ids: Vec<String> = sorted
            .worklogs
            .iter()
            .map(|w| w.record.worklog_id.clone())
            .collect();
        let s = &self.store;
        let (users, campaigns, tests, rejections, results, remediations, worklogs) = futures::try_join!(
            s.users_by_ids(&user_ids),
            s.campaigns_by_ids(&campaign_ids),
            s.tests_by_ids(&test_ids),
            s.rejections_of(&test_ids),
            s.results_of(&result_tests),
            s.remediations_by_ids(&remediation_ids),
            s.worklogs_by_ids(&worklog_ids),
        )?;
        let mut rejections = rejections;
        Ok(Existing {
            users: users.into_iter().map(|u| (u.user_id.clone(), u)).collect(),
            campaigns,
            tests: tests
                .into_iter()
                .map(|(id, test)| {
                    let rejections = rejections.remove(&id).unwrap_or_default();
                    (id, HistoryTest { test, rejections })
                })
                .collect(),
            results: results
                .into_values()
                .flatten()
                .map(|r| ((r.test_id.clone(), r.source.clone(), r.rule_id.clone()), r))
                .collect(),
            remediations: remediations
                .into_iter()
                .map(|r| (r.remediation_id.clone(), r))
                .collect(),
            worklogs: worklogs
                .into_iter()
                .map(|w| (w.worklog_id.clone(), w))
                .collect(),
        })
    }

    /// Writes what changed, and the events it implies, in one transaction.
    async fn write(
        &self,
        checked: &Checked,
        existing: &Existing,
        now: Micros,
    ) -> Result<ImportReport, CampaignError> {
        fn changed<T>(rows: &[(Change, T)]) -> impl Iterator<Item = &T> {
            rows.iter().filter(|(c, _)| c.writes()).map(|(_, r)| r)
        }
        let tests: Vec<&HistoryTest> = changed(&checked.tests).collect();
        let results: Vec<_> = changed(&checked.results).cloned().collect();
        let remediations: Vec<&Remediation> = changed(&checked.remediations).collect();
        // The chains and techniques whose score inputs may have moved: of
        // the tests written (before and after), and of the tests whose
        // results changed.
        let mut chains = BTreeSet::new();
        let mut techniques = BTreeSet::new();
        for h in &tests {
            chains.insert(h.test.chain_id.clone());
            techniques.insert(h.test.technique_id.clone());
            if let Some(old) = existing.tests.get(&h.test.test_id) {
                chains.insert(old.test.chain_id.clone());
                techniques.insert(old.test.technique_id.clone());
            }
        }
        let test_rows: BTreeMap<&str, &crate::domain::TestRow> = existing
            .tests
            .values()
            .chain(checked.tests.iter().map(|(_, h)| h))
            .map(|h| (h.test.test_id.as_str(), &h.test))
            .collect();
        for r in &results {
            if let Some(t) = test_rows.get(r.test_id.as_str()) {
                techniques.insert(t.technique_id.clone());
                // A validated test's triggered rules are in its chain's
                // history: a result changed alone moves it too.
                chains.insert(t.chain_id.clone());
            }
        }
        let campaign_of: BTreeMap<&str, &str> = existing
            .tests
            .values()
            .chain(checked.tests.iter().map(|(_, h)| h))
            .map(|h| {
                (
                    h.test.test_id.as_str(),
                    h.test.campaign_id.as_deref().unwrap_or(""),
                )
            })
            .collect();
        let mut outbox: Vec<Event> = tests.iter().flat_map(|h| events::of_test(h)).collect();
        outbox.extend(remediations.iter().flat_map(|r| {
            events::of_remediation(
                r,
                campaign_of.get(r.test_id.as_str()).copied().unwrap_or(""),
            )
        }));
        let write = HistoryWrite {
            users: changed(&checked.users).collect(),
            campaigns: changed(&checked.campaigns).collect(),
            tests: tests.iter().map(|h| &h.test).collect(),
            rejections: tests.iter().flat_map(|h| h.rejections.iter()).collect(),
            results,
            remediations,
            worklogs: changed(&checked.worklogs).collect(),
            chains: chains.into_iter().collect(),
            techniques: techniques.into_iter().collect(),
        };
        let mut tx = self.store.db().begin().await?;
        self.store.write_history(&mut tx, &write, now).await?;
        self.store.enqueue(&mut tx, &outbox, now).await?;
        tx.commit().await?;
        Ok(ImportReport {
            counts: vec![
                ("user", counts(&checked.users)),
                ("campaign", counts(&checked.campaigns)),
                ("test", counts(&checked.tests)),
                ("detection_result", counts(&checked.results)),
                ("remediation", counts(&checked.remediations)),
                ("worklog", counts(&checked.worklogs)),
            ],
            events: outbox.len() as u64,
            notes: checked.notes.clone(),
            records: 0,
        })
    }

    /// The whole history as NDJSON chunks: users, campaigns, tests (with
    /// their rejections), detection results, remediations, worklogs, each
    /// read in keyset pages.
    pub fn export(&self) -> impl Stream<Item = Result<Vec<u8>, CampaignError>> + Send + 'static {
        let store = self.store.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, CampaignError>>(4);
        tokio::spawn(async move {
            let mut out = Chunker {
                sender,
                buffer: Vec::new(),
            };
            if let Err(err) = export_all(&store, &mut out).await {
                let _ = out.sender.send(Err(err)).await;
                return;
            }
            out.flush().await;
        });
        tokio_stream::wrappers::ReceiverStream::new(receiver).boxed()
    }
}

/// Gathers lines into chunks for the export stream; stops quietly when the
/// client has gone.
struct Chunker {
    sender: tokio::sync::mpsc::Sender<Result<Vec<u8>, CampaignError>>,
    buffer: Vec<u8>,
}

impl Chunker {
    async fn push(&mut self, record: &Record) -> Result<(), CampaignError> {
        self.buffer
            .extend_from_slice(format::line(record).as_bytes());
        if self.buffer.len() >= EXPORT_CHUNK {
            self.flush().await;
        }
        if self.sender.is_closed() {
            return Err(CampaignError::Internal(
                "the export's client is gone".into(),
            ));
        }
        Ok(())
    }

    async fn flush(&mut self) {
        if !self.buffer.is_empty() {
            let chunk = std::mem::take(&mut self.buffer);
            let _ = self.sender.send(Ok(chunk)).await;
        }
    }
}

fn instant(at: Micros) -> chrono::DateTime<chrono::Utc> {
    at.datetime()
}

async fn export_all(store: &CampaignStore, out: &mut Chunker) -> Result<(), CampaignError> {
    let mut after = String::new();
    loop {
        let page = store.users_page(&after, EXPORT_PAGE).await?;
        for u in &page {
            out.push(&Record::User(UserRecord {
                user_id: u.user_id.clone(),
                display_name: u.display_name.clone(),
                role: u.role.key().unwrap_or("viewer").to_owned(),
                created_at: Some(instant(u.created_at)),
            }))
            .await?;
        }
        match page.last() {
            Some(last) if page.len() as i64 == EXPORT_PAGE => after.clone_from(&last.user_id),
            _ => break,
        }
    }
    after.clear();
    loop {
        let page = store.campaigns_page(&after, EXPORT_PAGE).await?;
        for c in &page {
            let schedule = match (c.interval_seconds, &c.cron) {
                (None, None) => None,
                (interval_seconds, cron) => Some(ScheduleRecord {
                    interval_seconds,
                    cron: cron.clone(),
                }),
            };
            out.push(&Record::Campaign(CampaignRecord {
                campaign_id: c.campaign_id.clone(),
                name: c.name.clone(),
                description: c.description.clone(),
                threat_actor_id: c.threat_actor_id.clone(),
                created_by: c.created_by.clone(),
                created_at: instant(c.created_at),
                schedule,
            }))
            .await?;
        }
        match page.last() {
            Some(last) if page.len() as i64 == EXPORT_PAGE => after.clone_from(&last.campaign_id),
            _ => break,
        }
    }
    after.clear();
    loop {
        let page = store.tests_page(&after, EXPORT_PAGE).await?;
        let ids: Vec<String> = page.iter().map(|t| t.test_id.clone()).collect();
        let (mut rejections, results) =
            futures::try_join!(store.rejections_of(&ids), store.results_of(&ids))?;
        for t in &page {
            let rejections = rejections.remove(&t.test_id).unwrap_or_default();
            out.push(&Record::Test(Box::new(test_record(t, rejections))))
                .await?;
        }
        for r in results.into_values().flatten() {
            out.push(&Record::DetectionResult(ResultRecord {
                test_id: r.test_id,
                source: r.source,
                rule_id: r.rule_id,
                triggered: r.triggered,
                triggered_at: r.triggered_at.map(instant),
                notes: r.notes,
            }))
            .await?;
        }
        match page.last() {
            Some(last) if page.len() as i64 == EXPORT_PAGE => after.clone_from(&last.test_id),
            _ => break,
        }
    }
    after.clear();
    loop {
        let page = store.remediations_page(&after, EXPORT_PAGE).await?;
        for r in &page {
            out.push(&Record::Remediation(RemediationRecord {
                remediation_id: r.remediation_id.clone(),
                test_id: r.test_id.clone(),
                state: r.state.key().to_owned(),
                assignee_id: r.assignee_id.clone(),
                notes: r.notes.clone(),
                opened_at: instant(r.opened_at),
                started_at: r.started_at.map(instant),
                completed_at: r.completed_at.map(instant),
            }))
            .await?;
        }
        match page.last() {
            Some(last) if page.len() as i64 == EXPORT_PAGE => {
                after.clone_from(&last.remediation_id);
            }
            _ => break,
        }
    }
    after.clear();
    loop {
        let page = store.worklogs_page(&after, EXPORT_PAGE).await?;
        for w in &page {
            out.push(&Record::Worklog(WorklogRecord {
                worklog_id: w.worklog_id.clone(),
                test_id: w.test_id.clone(),
                user_id: w.user_id.clone(),
                minutes: w.minutes,
                note: w.note.clone(),
                logged_at: instant(w.logged_at),
            }))
            .await?;
        }
        match page.last() {
            Some(last) if page.len() as i64 == EXPORT_PAGE => after.clone_from(&last.worklog_id),
            _ => break,
        }
    }
    Ok(())
}

fn test_record(
    t: &crate::domain::TestRow,
    rejections: Vec<crate::domain::Rejection>,
) -> TestRecord {
    let m = &t.milestones;
    TestRecord {
        test_id: t.test_id.clone(),
        technique_id: t.technique_id.clone(),
        template_id: t.template_id.clone(),
        campaign_id: t.campaign_id.clone(),
        title: t.title.clone(),
        red_assignee_id: t.red_assignee_id.clone(),
        blue_assignee_id: t.blue_assignee_id.clone(),
        state: t.state.key().to_owned(),
        outcome: t
            .outcome
            .and_then(purple_api::common::v1::Outcome::key)
            .map(str::to_owned),
        retest_of: t.retest_of.clone(),
        created_at: instant(t.created_at),
        red_started_at: m.red_started_at.map(instant),
        executed_at: t.executed_at.map(instant),
        blue_started_at: m.blue_started_at.map(instant),
        detected_at: t.detected_at.map(instant),
        blue_completed_at: m.blue_completed_at.map(instant),
        validated_at: t.validated_at.map(instant),
        cancelled_at: m.cancelled_at.map(instant),
        red_notes: t.red_notes.clone(),
        blue_notes: t.blue_notes.clone(),
        rejections: rejections
            .into_iter()
            .map(|r| RejectionRecord {
                side: r.side,
                at: instant(r.rejected_at),
                reason: r.reason,
                actor_id: r.actor_id,
                voided_executed_at: r.voided_executed_at.map(instant),
                voided_completed_at: r.voided_completed_at.map(instant),
                voided_outcome: r
                    .voided_outcome
                    .and_then(purple_api::common::v1::Outcome::key)
                    .map(str::to_owned),
            })
            .collect(),
    }
}
