//! Campaigns' calls to its peers, through the runtime's typed batch
//! clients (chunked, never per entity), converted here into campaigns' own
//! types: technique names and tactics, an actor's techniques and the best
//! templates from ingest; which techniques are untested or gaps from
//! scoring; and the outbox's deliveries to metrics and scoring.

use std::collections::{BTreeMap, BTreeSet};

use purple_api::common::v1::{Event as EventPb, Outcome, TechniqueStatus};
use purple_runtime::{
    clients::{IngestPeer, MetricsPeer, PeerError, Peers, ScoringPeer},
    time::timestamp,
};

use crate::{
    domain::{Event, TechniqueDetail},
    error::CampaignError,
};

/// Clients of ingest, scoring and metrics.
#[derive(Clone, Debug)]
pub struct PeerClients {
    ingest: IngestPeer,
    scoring: ScoringPeer,
    metrics: MetricsPeer,
}

impl PeerClients {
    /// Clients over the process's peer channels.
    pub fn new(peers: &Peers) -> Self {
        Self {
            ingest: peers.ingest(),
            scoring: peers.scoring(),
            metrics: peers.metrics(),
        }
    }

    /// The names of techniques; an id the catalogue does not know is
    /// refused (INVALID_ARGUMENT on `technique_id`).
    pub async fn technique_names(
        &self,
        ids: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, String>, CampaignError> {
        let ids: Vec<String> = ids.iter().cloned().collect();
        let (found, missing) = self.ingest.techniques_by_ids(&ids).await?;
        if !missing.is_empty() {
            let shown: Vec<String> = missing
                .iter()
                .take(10)
                .map(|id| id.chars().take(20).collect())
                .collect();
            return Err(CampaignError::invalid(
                "technique_id",
                format!(
                    "{} unknown ATT&CK techniques: {}{}",
                    missing.len(),
                    shown.join(", "),
                    if missing.len() > shown.len() {
                        ", …"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(found
            .into_iter()
            .map(|t| (t.technique_id, t.name))
            .collect())
    }

    /// What the catalogue says of techniques: the ids it knows, and those
    /// revoked or deprecated.
    pub async fn technique_states(
        &self,
        ids: &[String],
    ) -> Result<(BTreeSet<String>, BTreeMap<String, &'static str>), CampaignError> {
        let (found, _) = self.ingest.techniques_by_ids(ids).await?;
        let mut retired = BTreeMap::new();
        for t in &found {
            if t.revoked {
                retired.insert(t.technique_id.clone(), "revoked");
            } else if t.deprecated {
                retired.insert(t.technique_id.clone(), "deprecated");
            }
        }
        Ok((found.into_iter().map(|t| t.technique_id).collect(), retired))
    }

    /// Names and tactics of techniques; unknown ids are left out.
    pub async fn technique_details(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, TechniqueDetail>, CampaignError> {
        let (found, _) = self.ingest.techniques_by_ids(ids).await?;
        Ok(found
            .into_iter()
            .map(|t| {
                let detail = TechniqueDetail {
                    name: t.name,
                    tactics: t.tactics,
                };
                (t.technique_id, detail)
            })
            .collect())
    }

    /// The live techniques a threat actor uses; None for an unknown actor.
    pub async fn actor_techniques(
        &self,
        actor_id: &str,
    ) -> Result<Option<Vec<String>>, CampaignError> {
        Ok(self
            .ingest
            .actor_techniques(&[actor_id.to_owned()])
            .await?
            .into_iter()
            .next()
            .map(|a| a.technique_ids))
    }

    /// The best template (id, name) of each technique for a platform.
    pub async fn best_templates(
        &self,
        ids: &[String],
        platform: &str,
    ) -> Result<BTreeMap<String, (String, String)>, CampaignError> {
        Ok(self
            .ingest
            .templates_for(ids, platform)
            .await?
            .into_iter()
            .filter_map(|t| {
                t.templates
                    .into_iter()
                    .next()
                    .map(|tpl| (t.technique_id, (tpl.template_id, tpl.name)))
            })
            .collect())
    }

    /// Which of these techniques are untested or gaps now.
    pub async fn untested_or_gap(&self, ids: &[String]) -> Result<BTreeSet<String>, CampaignError> {
        Ok(self
            .scoring
            .score_techniques(ids)
            .await?
            .into_iter()
            .filter(|s| {
                matches!(
                    TechniqueStatus::try_from(s.status),
                    Ok(TechniqueStatus::Untested | TechniqueStatus::Gap)
                )
            })
            .map(|s| s.technique_id)
            .collect())
    }

    /// Delivers events to metrics, in order.
    pub async fn record_events(&self, events: Vec<Event>) -> Result<u64, PeerError> {
        self.metrics
            .record_events(events.into_iter().map(event_pb).collect())
            .await
    }

    /// Tells scoring which techniques' inputs changed.
    pub async fn invalidate(&self, technique_ids: &[String]) -> Result<(), PeerError> {
        self.scoring.invalidate(technique_ids, "campaigns").await
    }
}

/// An event on the wire.
pub fn event_pb(e: Event) -> EventPb {
    #[allow(deprecated)]
    EventPb {
        event_id: e.event_id,
        kind: e.kind.key().unwrap_or_default().to_owned(),
        event_kind: e.kind as i32,
        occurred_at: Some(timestamp(e.occurred_at)),
        test_id: e.test_id,
        technique_id: e.technique_id,
        campaign_id: e.campaign_id,
        remediation_id: e.remediation_id,
        outcome: e.outcome.unwrap_or(Outcome::Unspecified) as i32,
        side: e.side,
        actor_id: e.actor_id,
        attributes: e.attributes.into_iter().collect(),
    }
}
