//! Campaign lifecycle: creation with tests, generation from a threat
//! actor (its untested and gap techniques, each from its best template),
//! cloning, and the reads of campaigns. Each reads its sets with one
//! statement or one chunked batch call per peer, and writes in one
//! transaction.

use std::collections::{BTreeMap, BTreeSet};

use purple_api::{batch::check_ids, common::v1::Role};
use purple_runtime::{
    auth::Caller,
    paging::Page,
    time::{Micros, now_micros},
};

use crate::{
    clients::PeerClients,
    domain::{self, Event, NewTest, TestRow},
    error::CampaignError,
    people::Directory,
    store::{CampaignStore, campaigns::CampaignRow, people::NotificationRow, workflow::TallyDelta},
    workflow::{check_new_tests, foreign_key, new_id, shown},
};

/// A generated campaign and the techniques left out.
pub struct Generated {
    pub campaign: CampaignRow,
    pub tests: Vec<TestRow>,
    pub skipped: Vec<String>,
}

/// The sort key of the campaign list: (created_at, id), newest first.
pub const CAMPAIGN_KEY_LEN: usize = 2;

/// Who may plan campaigns.
const PLANNERS: [Role; 2] = [Role::PurpleLead, Role::Admin];

/// Campaigns and their tests.
#[derive(Clone, Debug)]
pub struct Campaigns {
    pub(crate) store: CampaignStore,
    pub(crate) peers: PeerClients,
    pub(crate) directory: Directory,
}

/// A new campaign row (no schedule, no tests yet).
pub fn campaign_row(
    created_by: &str,
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
        created_by: created_by.to_owned(),
        created_at: now,
        interval_seconds: None,
        cron: None,
        next_run_at: None,
        test_count: 0,
    }
}

/// What one campaign write holds: campaigns, their tests, notifications
/// and schedule advances.
#[derive(Default)]
pub struct CampaignWrite<'a> {
    pub campaigns: &'a [CampaignRow],
    pub tests: &'a [TestRow],
    pub notifications: &'a [NotificationRow],
    pub advance: &'a [(String, Micros)],
}

/// Inserts campaigns, their tests, the tests' events, notifications and
/// schedule advances, and counts the tests in their techniques' tallies:
/// one transaction, a fixed number of statements whatever the sizes.
pub async fn write_campaigns(
    store: &CampaignStore,
    actor_id: &str,
    write: CampaignWrite<'_>,
) -> Result<(), CampaignError> {
    let now = now_micros();
    let events: Vec<Event> = write
        .tests
        .iter()
        .map(|t| Event::created(t, actor_id, new_id()))
        .collect();
    let mut tx = store.db().begin().await?;
    store.insert_campaigns(&mut tx, write.campaigns).await?;
    store
        .insert_tests(&mut tx, write.tests)
        .await
        .map_err(|e| foreign_key(e, "campaign_id"))?;
    store.enqueue(&mut tx, &events, now).await?;
    store
        .insert_notifications(&mut tx, write.notifications)
        .await?;
    store.advance(&mut tx, write.advance).await?;
    tx.commit_with(store.bump_tallies_write(&TallyDelta::of_new_tests(write.tests)))
        .await?;
    Ok(())
}

/// Copies of campaigns with their tests, all planned.
pub fn copies(
    created_by: &str,
    sources: &[CampaignRow],
    tests: &[TestRow],
    name_of: impl Fn(&CampaignRow) -> String,
    now: Micros,
) -> (Vec<CampaignRow>, Vec<TestRow>) {
    let mut campaigns = Vec::new();
    let mut copies = Vec::new();
    for source in sources {
        let copy = campaign_row(
            created_by,
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
        copies.extend(domain::new_rows(
            &new,
            &BTreeMap::new(),
            now + copies.len() as i64,
            new_id,
        ));
        campaigns.push(copy);
    }
    (campaigns, copies)
}

impl Campaigns {
    /// A campaign, with tests.
    pub async fn create(
        &self,
        actor: &Caller,
        name: String,
        description: String,
        new: Vec<NewTest>,
    ) -> Result<(CampaignRow, Vec<TestRow>), CampaignError> {
        self.directory
            .acting(actor, &PLANNERS, "creating a campaign")
            .await?;
        let actor_id = actor.subject.as_str();
        if name.trim().is_empty() {
            return Err(CampaignError::invalid("name", "required"));
        }
        check_new_tests(&new, true)?;
        let now = now_micros();
        let mut campaign = campaign_row(
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
            self.peers.technique_names(&techniques).await?
        };
        let new: Vec<NewTest> = new
            .into_iter()
            .map(|t| NewTest {
                campaign_id: Some(campaign.campaign_id.clone()),
                ..t
            })
            .collect();
        let tests = domain::new_rows(&new, &names, now, new_id);
        write_campaigns(
            &self.store,
            actor_id,
            CampaignWrite {
                campaigns: std::slice::from_ref(&campaign),
                tests: &tests,
                ..CampaignWrite::default()
            },
        )
        .await?;
        campaign.test_count = tests.len() as i64;
        Ok((campaign, tests))
    }

    /// One test per technique of the actor whose status is untested or
    /// gap, from the best template: one batch call to each peer (chunked),
    /// then one transaction.
    pub async fn generate_from_actor(
        &self,
        actor: &Caller,
        threat_actor_id: &str,
        name: String,
        platform: String,
    ) -> Result<Generated, CampaignError> {
        self.directory
            .acting(actor, &PLANNERS, "generating a campaign")
            .await?;
        let actor_id = actor.subject.as_str();
        let techniques = self
            .peers
            .actor_techniques(threat_actor_id)
            .await?
            .ok_or_else(|| {
                CampaignError::NotFound(format!(
                    "threat actor {} does not exist",
                    shown(threat_actor_id)
                ))
            })?;
        let wanted = self.peers.untested_or_gap(&techniques).await?;
        let (targets, skipped): (Vec<String>, Vec<String>) =
            techniques.into_iter().partition(|t| wanted.contains(t));
        let best = self.peers.best_templates(&targets, &platform).await?;

        let now = now_micros();
        let name = if name.trim().is_empty() {
            format!("Emulation of {threat_actor_id}")
        } else {
            name
        };
        let mut campaign = campaign_row(
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
        let tests = domain::new_rows(&new, &BTreeMap::new(), now, new_id);
        write_campaigns(
            &self.store,
            actor_id,
            CampaignWrite {
                campaigns: std::slice::from_ref(&campaign),
                tests: &tests,
                ..CampaignWrite::default()
            },
        )
        .await?;
        campaign.test_count = tests.len() as i64;
        Ok(Generated {
            campaign,
            tests,
            skipped,
        })
    }

    /// A copy of a campaign and its tests: one read, one write transaction.
    pub async fn clone_campaign(
        &self,
        actor: &Caller,
        campaign_id: &str,
        name: String,
    ) -> Result<(CampaignRow, Vec<TestRow>), CampaignError> {
        self.directory
            .acting(actor, &PLANNERS, "cloning a campaign")
            .await?;
        let actor_id = actor.subject.as_str();
        let source = self.one(campaign_id).await?;
        let ids = [campaign_id.to_owned()];
        let tests = self.store.tests_of_campaigns(&ids).await?;
        let now = now_micros();
        let (mut campaigns, tests) = copies(
            actor_id,
            std::slice::from_ref(&source),
            &tests,
            |s| {
                if name.trim().is_empty() {
                    format!("{} (copy {})", s.name, now.datetime().format("%Y-%m-%d"))
                } else {
                    name.clone()
                }
            },
            now,
        );
        write_campaigns(
            &self.store,
            actor_id,
            CampaignWrite {
                campaigns: &campaigns,
                tests: &tests,
                ..CampaignWrite::default()
            },
        )
        .await?;
        let mut campaign = campaigns.remove(0);
        campaign.test_count = tests.len() as i64;
        Ok((campaign, tests))
    }

    /// One campaign; NOT_FOUND when it does not exist.
    pub async fn one(&self, campaign_id: &str) -> Result<CampaignRow, CampaignError> {
        self.store
            .campaigns_by_ids(&[campaign_id.to_owned()])
            .await?
            .remove(campaign_id)
            .ok_or_else(|| {
                CampaignError::NotFound(format!("campaign {campaign_id} does not exist"))
            })
    }

    /// Campaigns by id.
    pub async fn by_ids(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, CampaignRow>, CampaignError> {
        check_ids("campaign_ids", ids)?;
        Ok(self.store.campaigns_by_ids(ids).await?)
    }

    /// A page of campaigns, newest first, and the next token.
    pub async fn list(&self, page: &Page) -> Result<(Vec<CampaignRow>, String), CampaignError> {
        let mut campaigns = self.store.list_campaigns(page).await?;
        let next = page.finish(&mut campaigns, |c| {
            vec![c.created_at.into(), (&c.campaign_id).into()]
        });
        Ok((campaigns, next))
    }
}
