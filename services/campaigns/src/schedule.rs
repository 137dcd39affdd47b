//! Recurring campaigns: how a schedule is given and checked
//! ([`Recurrence`]), set or cleared, and what runs when a campaign is due
//! (a clone of it, its red techs notified, its next run moved), all due
//! campaigns at once in one transaction.

use std::{collections::BTreeSet, str::FromStr};
use tracing::Instrument;

use purple_api::common::v1::Role;
use purple_runtime::{
    auth::Caller,
    time::{MICROS_PER_DAY, MICROS_PER_SECOND, Micros, now_micros},
};

use crate::{
    campaign::{CampaignWrite, copies, write_campaigns},
    error::CampaignError,
    people::Directory,
    store::{CampaignStore, campaigns::CampaignRow, people::NotificationRow},
    workflow::{new_id, shown},
};

/// How a campaign recurs.
#[derive(Clone, Debug, PartialEq)]
pub enum Recurrence {
    /// Every this many seconds.
    Every(i64),
    /// A cron expression, UTC.
    Cron(String),
}

/// The shortest interval a schedule may have.
const MIN_INTERVAL_SECONDS: i64 = 60;
/// The longest interval a schedule may have (ten years).
const MAX_INTERVAL_SECONDS: i64 = 10 * 366 * 86_400;

impl Recurrence {
    /// Checks it.
    pub fn parse(interval_seconds: i64, cron: &str) -> Result<Self, CampaignError> {
        match (interval_seconds, cron.trim()) {
            (0, "") => Err(CampaignError::invalid(
                "schedule",
                "set interval_seconds or cron",
            )),
            (seconds, "") if (MIN_INTERVAL_SECONDS..=MAX_INTERVAL_SECONDS).contains(&seconds) => {
                Ok(Recurrence::Every(seconds))
            }
            (_, "") => Err(CampaignError::invalid(
                "schedule.interval_seconds",
                "must be at least 60 and at most ten years",
            )),
            (0, expr) if expr.len() <= 200 => {
                croner::Cron::from_str(expr)
                    .map_err(|e| CampaignError::invalid("schedule.cron", e.to_string()))?;
                Ok(Recurrence::Cron(expr.to_owned()))
            }
            (0, _) => Err(CampaignError::invalid(
                "schedule.cron",
                "longer than 200 characters",
            )),
            _ => Err(CampaignError::invalid(
                "schedule",
                "interval_seconds and cron are exclusive",
            )),
        }
    }

    /// The first run after `after`.
    pub fn next_after(&self, after: Micros) -> Micros {
        match self {
            Recurrence::Every(seconds) => after + seconds * MICROS_PER_SECOND,
            Recurrence::Cron(expr) => croner::Cron::from_str(expr)
                .ok()
                .and_then(|c| c.find_next_occurrence(&after.datetime(), false).ok())
                .map_or(after + MICROS_PER_DAY, Micros::from_datetime),
        }
    }

    /// The recurrence of a stored campaign.
    pub fn of(campaign: &CampaignRow) -> Option<Self> {
        match (&campaign.interval_seconds, &campaign.cron) {
            (Some(seconds), _) => Some(Recurrence::Every(*seconds)),
            (_, Some(cron)) => Some(Recurrence::Cron(cron.clone())),
            _ => None,
        }
    }

    /// The first run after `now` that follows `last` (missed periods are
    /// skipped, not run one after another).
    pub fn next_run(&self, last: Micros, now: Micros) -> Micros {
        let mut next = self.next_after(last);
        while next <= now {
            next = self.next_after(next);
        }
        next
    }
}

/// Schedules and runs recurring campaigns.
#[derive(Clone, Debug)]
pub struct Scheduler {
    pub(crate) store: CampaignStore,
    pub(crate) directory: Directory,
}

impl Scheduler {
    /// Sets or clears a schedule; the first run is one period from now
    /// unless given.
    pub async fn set_schedule(
        &self,
        actor: &Caller,
        campaign_id: &str,
        recurrence: Option<Recurrence>,
        first_run: Option<Micros>,
    ) -> Result<CampaignRow, CampaignError> {
        self.directory
            .acting(
                actor,
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
                "campaign {} does not exist",
                shown(campaign_id)
            )));
        }
        self.store
            .campaigns_by_ids(&[campaign_id.to_owned()])
            .await?
            .remove(campaign_id)
            .ok_or_else(|| CampaignError::NotFound(shown(campaign_id)))
    }

    /// Clones every due campaign and notifies the red techs who work them
    /// (or every red tech when a campaign names none): three reads, one
    /// transaction, whatever the number of campaigns, tests or users.
    pub async fn run_due(&self, now: Micros) -> Result<(Vec<CampaignRow>, usize), CampaignError> {
        let due = self.store.due_campaigns(now).await?;
        if due.is_empty() {
            return Ok((Vec::new(), 0));
        }
        // The idle poll above runs outside any span (no trace while there
        // is nothing to do); a run that clones campaigns is one trace.
        let span = tracing::info_span!("scheduler.run_due", campaigns = due.len());
        self.clone_due(due, now).instrument(span).await
    }

    async fn clone_due(
        &self,
        due: Vec<CampaignRow>,
        now: Micros,
    ) -> Result<(Vec<CampaignRow>, usize), CampaignError> {
        let ids: Vec<String> = due.iter().map(|c| c.campaign_id.clone()).collect();
        let tests = self.store.tests_of_campaigns(&ids).await?;
        let red_techs = self.store.users_with_role(Role::RedTech).await?;
        let (mut campaigns, copies) = copies(
            "scheduler",
            &due,
            &tests,
            |s| format!("{} ({})", s.name, now.datetime().format("%Y-%m-%d %H:%M")),
            now,
        );
        let count_of = |campaign_id: &str| {
            copies
                .iter()
                .filter(|t| t.campaign_id.as_deref() == Some(campaign_id))
                .count()
        };
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
            let planned = count_of(&copy.campaign_id);
            notifications.extend(recipients.into_iter().map(|user| NotificationRow {
                notification_id: new_id(),
                user_id: user.to_owned(),
                kind: "campaign.due".into(),
                message: format!(
                    "Recurring campaign \"{}\" is due: {planned} tests planned.",
                    copy.name
                ),
                campaign_id: copy.campaign_id.clone(),
                read: false,
                created_at: now,
            }));
        }
        let advance: Vec<(String, Micros)> = due
            .iter()
            .filter_map(|c| {
                Recurrence::of(c).map(|r| {
                    (
                        c.campaign_id.clone(),
                        r.next_run(c.next_run_at.unwrap_or(now), now),
                    )
                })
            })
            .collect();
        write_campaigns(
            &self.store,
            "scheduler",
            CampaignWrite {
                campaigns: &campaigns,
                tests: &copies,
                notifications: &notifications,
                advance: &advance,
            },
        )
        .await?;
        for campaign in &mut campaigns {
            campaign.test_count = count_of(&campaign.campaign_id) as i64;
        }
        Ok((campaigns, notifications.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_checked_and_step_forward() {
        assert!(Recurrence::parse(0, "").is_err());
        assert!(Recurrence::parse(30, "").is_err());
        assert!(Recurrence::parse(i64::MAX, "").is_err());
        assert!(Recurrence::parse(3_600, "0 9 * * 1").is_err());
        assert!(Recurrence::parse(0, "not a cron").is_err());
        assert_eq!(
            Recurrence::parse(3_600, "")
                .unwrap()
                .next_after(Micros::EPOCH),
            Micros::from_micros(3_600_000_000)
        );
        // Mondays 09:00 UTC: from Thursday 1970-01-01 the next is 1970-01-05.
        let cron = Recurrence::parse(0, "0 9 * * 1").unwrap();
        assert_eq!(
            cron.next_after(Micros::EPOCH),
            Micros::from_micros((4 * 86_400 + 9 * 3_600) * 1_000_000)
        );
    }

    #[test]
    fn missed_periods_are_skipped() {
        let hourly = Recurrence::Every(3_600);
        let hour = 3_600 * MICROS_PER_SECOND;
        let now = Micros::from_micros(10 * hour + 5);
        assert_eq!(
            hourly.next_run(Micros::EPOCH, now),
            Micros::from_micros(11 * hour)
        );
    }
}
