//! Campaigns: creation, generation from a threat actor, cloning, recurring
//! schedules and what runs when due, progress and reports. Each reads its
//! sets with one statement or one chunked batch call per peer, and writes
//! in one transaction.

use std::{
    collections::{BTreeMap, BTreeSet},
    str::FromStr,
};

use purple_api::{
    batch::{DEFAULT_FANOUT, MAX_BATCH_IDS, chunked},
    common::v1::{Role, TechniqueStatus},
    ingest::v1::{
        GetActorTechniquesRequest, GetTechniquesByIdsRequest, GetTemplatesForTechniquesRequest,
        Technique,
    },
    scoring::v1::ScoreTechniquesRequest,
};
use purple_runtime::time::{Micros, datetime, micros, now_micros};

use crate::{
    domain::{State, TestRow},
    error::CampaignError,
    store::{campaigns::CampaignRow, outbox::OutboxEvent, people::NotificationRow},
    workflow::{NewTest, Workflow, created_event, foreign_key, new_id},
};

/// How a campaign recurs.
#[derive(Clone, Debug, PartialEq)]
pub enum Recurrence {
    /// Every this many seconds.
    Every(i64),
    /// A cron expression, UTC.
    Cron(String),
}

impl Recurrence {
    /// Checks it.
    pub fn parse(interval_seconds: i64, cron: &str) -> Result<Self, CampaignError> {
        match (interval_seconds, cron.trim()) {
            (0, "") => Err(CampaignError::invalid(
                "schedule",
                "set interval_seconds or cron",
            )),
            (seconds, "") if seconds >= 60 => Ok(Recurrence::Every(seconds)),
            (_, "") => Err(CampaignError::invalid(
                "schedule.interval_seconds",
                "must be at least 60",
            )),
            (0, expr) => {
                croner::Cron::from_str(expr)
                    .map_err(|e| CampaignError::invalid("schedule.cron", e.to_string()))?;
                Ok(Recurrence::Cron(expr.to_owned()))
            }
            _ => Err(CampaignError::invalid(
                "schedule",
                "interval_seconds and cron are exclusive",
            )),
        }
    }

    /// The first run after `after`.
    pub fn next_after(&self, after: Micros) -> Micros {
        match self {
            Recurrence::Every(seconds) => after + seconds * 1_000_000,
            Recurrence::Cron(expr) => croner::Cron::from_str(expr)
                .ok()
                .and_then(|c| c.find_next_occurrence(&datetime(after), false).ok())
                .map_or(after + 86_400_000_000, micros),
        }
    }

    fn of(campaign: &CampaignRow) -> Option<Self> {
        match (&campaign.interval_seconds, &campaign.cron) {
            (Some(seconds), _) => Some(Recurrence::Every(*seconds)),
            (_, Some(cron)) => Some(Recurrence::Cron(cron.clone())),
            _ => None,
        }
    }
}

/// A generated campaign and the techniques left out.
pub struct Generated {
    pub campaign: CampaignRow,
    pub tests: Vec<TestRow>,
    pub skipped: Vec<String>,
}

/// One row of a campaign report.
pub struct ReportRow {
    pub test: TestRow,
    pub technique: Option<Technique>,
    pub triggered_rule_ids: Vec<String>,
    pub remediation: Option<crate::store::people::RemediationRow>,
}

impl Workflow {
    fn campaign_row(
        &self,
        actor_id: &str,
        name: String,
        description: String,
        threat_actor_id: String,
        cloned_from: String,
        now: Micros,
    ) -> CampaignRow {
        CampaignRow {
            campaign_id: new_id(),
            name,
            description,
            threat_actor_id,
            cloned_from,
            created_by: actor_id.to_owned(),
            created_at: now,
            interval_seconds: None,
            cron: None,
            next_run_at: None,
            test_count: 0,
        }
    }

    /// Inserts campaigns, their tests and the tests' events in one
    /// transaction (three statements, whatever the sizes).
    async fn write_campaigns(
        &self,
        actor_id: &str,
        campaigns: &[CampaignRow],
        tests: &[TestRow],
        notifications: &[NotificationRow],
        advance: &[(String, Micros)],
    ) -> Result<(), CampaignError> {
        let now = now_micros();
        let mut tx = self.store.db().begin().await?;
        self.store.insert_campaigns(&mut tx, campaigns).await?;
        self.store
            .insert_tests(&mut tx, tests)
            .await
            .map_err(|e| foreign_key(e, "campaign_id"))?;
        let events: Vec<OutboxEvent> = tests.iter().map(|t| created_event(t, actor_id)).collect();
        self.store.enqueue(&mut tx, &events, now).await?;
        self.store
            .insert_notifications(&mut tx, notifications)
            .await?;
        self.store.advance(&mut tx, advance).await?;
        let techniques: Vec<String> = tests
            .iter()
            .map(|t| t.technique_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.store.refresh_tallies(&mut tx, &techniques).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A campaign, with tests.
    pub async fn create_campaign(
        &self,
        actor_id: &str,
        name: String,
        description: String,
        new: Vec<NewTest>,
    ) -> Result<(CampaignRow, Vec<TestRow>), CampaignError> {
        self.require(
            actor_id,
            &[Role::PurpleLead, Role::Admin],
            "creating a campaign",
        )
        .await?;
        if name.trim().is_empty() {
            return Err(CampaignError::invalid("name", "required"));
        }
        purple_api::batch::check_batch_len("tests", new.len())?;
        let now = now_micros();
        let mut campaign = self.campaign_row(
            actor_id,
            name,
            description,
            String::new(),
            String::new(),
            now,
        );
        let techniques: BTreeSet<String> = new.iter().map(|t| t.technique_id.clone()).collect();
        let names = if techniques.is_empty() {
            BTreeMap::new()
        } else {
            self.check_techniques(&techniques).await?
        };
        let new: Vec<NewTest> = new
            .into_iter()
            .map(|t| NewTest {
                campaign_id: Some(campaign.campaign_id.clone()),
                ..t
            })
            .collect();
        let tests = Self::new_rows(&new, &names, now);
        self.write_campaigns(actor_id, std::slice::from_ref(&campaign), &tests, &[], &[])
            .await?;
        campaign.test_count = tests.len() as i64;
        Ok((campaign, tests))
    }

    /// One test per technique of the actor whose status is untested or gap,
    /// from the best template: one batch call to each peer (chunked), then
    /// one transaction.
    pub async fn generate_from_actor(
        &self,
        actor_id: &str,
        threat_actor_id: &str,
        name: String,
        platform: String,
    ) -> Result<Generated, CampaignError> {
        self.require(
            actor_id,
            &[Role::PurpleLead, Role::Admin],
            "generating a campaign",
        )
        .await?;
        let mut ingest = self.peers.ingest();
        let actors = ingest
            .get_actor_techniques(GetActorTechniquesRequest {
                actor_ids: vec![threat_actor_id.to_owned()],
            })
            .await
            .map_err(CampaignError::peer("ingest"))?
            .into_inner();
        let techniques: Vec<String> = actors
            .actors
            .into_iter()
            .next()
            .ok_or_else(|| {
                CampaignError::NotFound(format!("threat actor {threat_actor_id} does not exist"))
            })?
            .technique_ids;

        let scores = chunked(&techniques, MAX_BATCH_IDS, DEFAULT_FANOUT, |chunk| {
            let mut scoring = self.peers.scoring();
            async move {
                scoring
                    .score_techniques(ScoreTechniquesRequest {
                        technique_ids: chunk,
                        as_of: None,
                    })
                    .await
            }
        })
        .await
        .map_err(CampaignError::peer("scoring"))?;
        let wanted: BTreeSet<String> = scores
            .into_iter()
            .flat_map(|r| r.into_inner().scores)
            .filter(|s| {
                matches!(
                    TechniqueStatus::try_from(s.status),
                    Ok(TechniqueStatus::Untested | TechniqueStatus::Gap)
                )
            })
            .map(|s| s.technique_id)
            .collect();
        let targets: Vec<String> = techniques
            .iter()
            .filter(|t| wanted.contains(*t))
            .cloned()
            .collect();
        let skipped: Vec<String> = techniques
            .iter()
            .filter(|t| !wanted.contains(*t))
            .cloned()
            .collect();

        let answers = chunked(&targets, MAX_BATCH_IDS, DEFAULT_FANOUT, |chunk| {
            let mut ingest = self.peers.ingest();
            let platform = platform.clone();
            async move {
                ingest
                    .get_templates_for_techniques(GetTemplatesForTechniquesRequest {
                        technique_ids: chunk,
                        platform,
                    })
                    .await
            }
        })
        .await
        .map_err(CampaignError::peer("ingest"))?;
        let best: BTreeMap<String, (String, String)> = answers
            .into_iter()
            .flat_map(|r| r.into_inner().techniques)
            .filter_map(|t| {
                t.templates
                    .into_iter()
                    .next()
                    .map(|tpl| (t.technique_id, (tpl.template_id, tpl.name)))
            })
            .collect();

        let now = now_micros();
        let name = if name.trim().is_empty() {
            format!("Emulation of {threat_actor_id}")
        } else {
            name
        };
        let mut campaign = self.campaign_row(
            actor_id,
            name,
            format!(
                "Generated from threat actor {threat_actor_id}: its untested and gap techniques."
            ),
            threat_actor_id.to_owned(),
            String::new(),
            now,
        );
        let new: Vec<NewTest> = targets
            .iter()
            .map(|technique| {
                let (template_id, title) = best.get(technique).cloned().unwrap_or_default();
                NewTest {
                    technique_id: technique.clone(),
                    template_id,
                    campaign_id: Some(campaign.campaign_id.clone()),
                    title: if title.is_empty() {
                        technique.clone()
                    } else {
                        title
                    },
                    ..NewTest::default()
                }
            })
            .collect();
        let tests = Self::new_rows(&new, &BTreeMap::new(), now);
        self.write_campaigns(actor_id, std::slice::from_ref(&campaign), &tests, &[], &[])
            .await?;
        campaign.test_count = tests.len() as i64;
        Ok(Generated {
            campaign,
            tests,
            skipped,
        })
    }

    /// Copies of campaigns with their tests, all planned.
    fn copies(
        &self,
        actor_id: &str,
        sources: &[CampaignRow],
        tests: &[TestRow],
        name_of: impl Fn(&CampaignRow) -> String,
        now: Micros,
    ) -> (Vec<CampaignRow>, Vec<TestRow>) {
        let mut campaigns = Vec::new();
        let mut copies = Vec::new();
        for source in sources {
            let copy = self.campaign_row(
                actor_id,
                name_of(source),
                source.description.clone(),
                source.threat_actor_id.clone(),
                source.campaign_id.clone(),
                now,
            );
            let new: Vec<NewTest> = tests
                .iter()
                .filter(|t| t.campaign_id.as_deref() == Some(source.campaign_id.as_str()))
                .map(|t| NewTest {
                    technique_id: t.technique_id.clone(),
                    template_id: t.template_id.clone(),
                    campaign_id: Some(copy.campaign_id.clone()),
                    title: t.title.clone(),
                    red_assignee_id: t.red_assignee_id.clone(),
                    blue_assignee_id: t.blue_assignee_id.clone(),
                })
                .collect();
            copies.extend(Self::new_rows(
                &new,
                &BTreeMap::new(),
                now + copies.len() as Micros,
            ));
            campaigns.push(copy);
        }
        (campaigns, copies)
    }

    /// A copy of a campaign and its tests: one read, one write transaction.
    pub async fn clone_campaign(
        &self,
        actor_id: &str,
        campaign_id: &str,
        name: String,
    ) -> Result<(CampaignRow, Vec<TestRow>), CampaignError> {
        self.require(
            actor_id,
            &[Role::PurpleLead, Role::Admin],
            "cloning a campaign",
        )
        .await?;
        let ids = vec![campaign_id.to_owned()];
        let source = self
            .store
            .campaigns_by_ids(&ids)
            .await?
            .remove(campaign_id)
            .ok_or_else(|| {
                CampaignError::NotFound(format!("campaign {campaign_id} does not exist"))
            })?;
        let tests = self.store.tests_of_campaigns(&ids).await?;
        let now = now_micros();
        let (mut campaigns, tests) = self.copies(
            actor_id,
            std::slice::from_ref(&source),
            &tests,
            |s| {
                if name.trim().is_empty() {
                    format!("{} (copy {})", s.name, datetime(now).format("%Y-%m-%d"))
                } else {
                    name.clone()
                }
            },
            now,
        );
        self.write_campaigns(actor_id, &campaigns, &tests, &[], &[])
            .await?;
        let mut campaign = campaigns.remove(0);
        campaign.test_count = tests.len() as i64;
        Ok((campaign, tests))
    }

    /// Sets or clears a schedule; the first run is one period from now.
    pub async fn set_schedule(
        &self,
        actor_id: &str,
        campaign_id: &str,
        recurrence: Option<Recurrence>,
        first_run: Option<Micros>,
    ) -> Result<CampaignRow, CampaignError> {
        self.require(
            actor_id,
            &[Role::PurpleLead, Role::Admin],
            "scheduling a campaign",
        )
        .await?;
        let now = now_micros();
        let (interval, cron, next) = match &recurrence {
            None => (None, None, None),
            Some(r) => {
                let next = first_run.unwrap_or_else(|| r.next_after(now));
                match r {
                    Recurrence::Every(s) => (Some(*s), None, Some(next)),
                    Recurrence::Cron(c) => (None, Some(c.clone()), Some(next)),
                }
            }
        };
        if !self
            .store
            .set_schedule(campaign_id, interval, cron, next)
            .await?
        {
            return Err(CampaignError::NotFound(format!(
                "campaign {campaign_id} does not exist"
            )));
        }
        let ids = vec![campaign_id.to_owned()];
        self.store
            .campaigns_by_ids(&ids)
            .await?
            .remove(campaign_id)
            .ok_or_else(|| CampaignError::NotFound(campaign_id.to_owned()))
    }

    /// Clones every due campaign and notifies the red techs who work them
    /// (or every red tech when a campaign names none): three reads, one
    /// transaction, whatever the number of campaigns, tests or users.
    pub async fn run_due(&self, now: Micros) -> Result<(Vec<CampaignRow>, usize), CampaignError> {
        let due = self.store.due_campaigns(now).await?;
        if due.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let ids: Vec<String> = due.iter().map(|c| c.campaign_id.clone()).collect();
        let tests = self.store.tests_of_campaigns(&ids).await?;
        let red_techs = self.store.users_with_role("red_tech").await?;
        let (mut campaigns, copies) = self.copies(
            "scheduler",
            &due,
            &tests,
            |s| format!("{} ({})", s.name, datetime(now).format("%Y-%m-%d %H:%M")),
            now,
        );
        let mut notifications = Vec::new();
        for (source, copy) in due.iter().zip(&campaigns) {
            let assigned: BTreeSet<&str> = tests
                .iter()
                .filter(|t| {
                    t.campaign_id.as_deref() == Some(source.campaign_id.as_str())
                        && !t.red_assignee_id.is_empty()
                })
                .map(|t| t.red_assignee_id.as_str())
                .collect();
            let recipients: Vec<&str> = if assigned.is_empty() {
                red_techs.iter().map(String::as_str).collect()
            } else {
                assigned.into_iter().collect()
            };
            for user in recipients {
                notifications.push(NotificationRow {
                    notification_id: new_id(),
                    user_id: user.to_owned(),
                    kind: "campaign.due".into(),
                    message: format!(
                        "Recurring campaign \"{}\" is due: {} tests planned.",
                        copy.name,
                        copies
                            .iter()
                            .filter(|t| t.campaign_id.as_deref() == Some(copy.campaign_id.as_str()))
                            .count()
                    ),
                    campaign_id: copy.campaign_id.clone(),
                    read: false,
                    created_at: now,
                });
            }
        }
        let advance: Vec<(String, Micros)> = due
            .iter()
            .filter_map(|c| {
                Recurrence::of(c).map(|r| {
                    // Skip missed periods: the next run is the first one after now.
                    let mut next = r.next_after(c.next_run_at.unwrap_or(now));
                    while next <= now {
                        next = r.next_after(next);
                    }
                    (c.campaign_id.clone(), next)
                })
            })
            .collect();
        self.write_campaigns("scheduler", &campaigns, &copies, &notifications, &advance)
            .await?;
        for campaign in &mut campaigns {
            campaign.test_count = copies
                .iter()
                .filter(|t| t.campaign_id.as_deref() == Some(campaign.campaign_id.as_str()))
                .count() as i64;
        }
        Ok((campaigns, notifications.len()))
    }

    /// A campaign's report: its tests with technique details (one chunked
    /// ingest call), triggered rules and remediations (one statement each).
    pub async fn report(
        &self,
        campaign_id: &str,
    ) -> Result<(CampaignRow, Vec<ReportRow>), CampaignError> {
        let ids = vec![campaign_id.to_owned()];
        let campaign = self
            .store
            .campaigns_by_ids(&ids)
            .await?
            .remove(campaign_id)
            .ok_or_else(|| {
                CampaignError::NotFound(format!("campaign {campaign_id} does not exist"))
            })?;
        let tests = self.store.tests_of_campaigns(&ids).await?;
        let test_ids: Vec<String> = tests.iter().map(|t| t.test_id.clone()).collect();
        let techniques: Vec<String> = tests
            .iter()
            .map(|t| t.technique_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let (details, rules, remediations) = futures::try_join!(
            async {
                chunked(&techniques, MAX_BATCH_IDS, DEFAULT_FANOUT, |chunk| {
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
                .map_err(CampaignError::peer("ingest"))
            },
            async {
                self.store
                    .triggered_rules(&test_ids)
                    .await
                    .map_err(CampaignError::from)
            },
            async {
                self.store
                    .remediations_of_tests(&test_ids)
                    .await
                    .map_err(CampaignError::from)
            },
        )?;
        let details: BTreeMap<String, Technique> = details
            .into_iter()
            .flat_map(|r| r.into_inner().techniques)
            .map(|t| (t.technique_id.clone(), t))
            .collect();
        let mut remediations: BTreeMap<String, _> = remediations
            .into_iter()
            .map(|r| (r.test_id.clone(), r))
            .collect();
        let rows = tests
            .into_iter()
            .map(|test| ReportRow {
                technique: details.get(&test.technique_id).cloned(),
                triggered_rule_ids: rules.get(&test.test_id).cloned().unwrap_or_default(),
                remediation: remediations.remove(&test.test_id),
                test,
            })
            .collect();
        Ok((campaign, rows))
    }
}

/// Share of non-cancelled tests that are validated, 0-100.
pub fn percent_complete(counts: &[(String, Option<String>, i64)]) -> f64 {
    let live: i64 = counts
        .iter()
        .filter(|(s, _, _)| s != State::Cancelled.key())
        .map(|(_, _, n)| n)
        .sum();
    let done: i64 = counts
        .iter()
        .filter(|(s, _, _)| s == State::Validated.key())
        .map(|(_, _, n)| n)
        .sum();
    if live == 0 {
        0.0
    } else {
        100.0 * done as f64 / live as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_checked_and_step_forward() {
        assert!(Recurrence::parse(0, "").is_err());
        assert!(Recurrence::parse(30, "").is_err());
        assert!(Recurrence::parse(3_600, "0 9 * * 1").is_err());
        assert!(Recurrence::parse(0, "not a cron").is_err());
        assert_eq!(
            Recurrence::parse(3_600, "").unwrap().next_after(0),
            3_600_000_000
        );
        // Mondays 09:00 UTC: from Thursday 1970-01-01 the next is 1970-01-05.
        let cron = Recurrence::parse(0, "0 9 * * 1").unwrap();
        assert_eq!(cron.next_after(0), (4 * 86_400 + 9 * 3_600) * 1_000_000);
    }

    #[test]
    fn progress_ignores_cancelled_tests() {
        let counts = vec![
            ("validated".into(), Some("blocked".into()), 1),
            ("planned".into(), None, 2),
            ("cancelled".into(), None, 5),
        ];
        assert!((percent_complete(&counts) - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(percent_complete(&[]), 0.0);
    }
}
