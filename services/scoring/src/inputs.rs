//! Scoring's inputs from its peers, always as chunked batch calls: the live
//! catalogue and its tactics, the catalogue side of each technique from
//! ingest, and the test side from campaigns.

use std::collections::BTreeMap;

use purple_api::{
    batch::{DEFAULT_FANOUT, MAX_BATCH_IDS, chunked},
    campaigns::v1::AggregateTestsByTechniqueRequest,
    ingest::v1::{
        GetActorTechniquesRequest, GetCatalogInputsRequest, GetTechniquesByIdsRequest,
        GetThreatActorsByIdsRequest, ListTacticsRequest, ListTechniquesRequest, SubtechniqueFilter,
        Tactic, Technique, ThreatActor,
    },
};
use purple_runtime::{
    clients::Peers,
    time::{Micros, from_timestamp, timestamp},
};

use crate::{
    domain::{CatalogSide, TestSide},
    error::ScoringError,
};

/// Fetches inputs from ingest and campaigns.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub(crate) peers: Peers,
}

impl Inputs {
    /// Every live tactic, in kill-chain order.
    pub async fn tactics(&self) -> Result<Vec<Tactic>, ScoringError> {
        Ok(self
            .peers
            .ingest()
            .list_tactics(ListTacticsRequest {})
            .await
            .map_err(ScoringError::peer("ingest"))?
            .into_inner()
            .tactics)
    }

    /// Every live technique and sub-technique (pages of the batch limit).
    pub async fn live_techniques(&self) -> Result<Vec<Technique>, ScoringError> {
        let mut ingest = self.peers.ingest();
        let (mut all, mut token) = (Vec::new(), String::new());
        loop {
            let page = ingest
                .list_techniques(ListTechniquesRequest {
                    subtechniques: SubtechniqueFilter::Unspecified as i32,
                    page_size: MAX_BATCH_IDS as i32,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .map_err(ScoringError::peer("ingest"))?
                .into_inner();
            all.extend(page.techniques);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            token = page.next_page_token;
        }
    }

    /// Techniques by id (any, live or not); unknown ids are left out.
    pub async fn techniques(&self, ids: &[String]) -> Result<Vec<Technique>, ScoringError> {
        let pages = chunked(ids, MAX_BATCH_IDS, DEFAULT_FANOUT, |chunk| {
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
        .map_err(ScoringError::peer("ingest"))?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.into_inner().techniques)
            .collect())
    }

    /// The catalogue side of each technique.
    pub async fn catalog(
        &self,
        techniques: &[Technique],
    ) -> Result<BTreeMap<String, CatalogSide>, ScoringError> {
        let ids: Vec<String> = techniques.iter().map(|t| t.technique_id.clone()).collect();
        let pages = chunked(&ids, MAX_BATCH_IDS, DEFAULT_FANOUT, |chunk| {
            let mut ingest = self.peers.ingest();
            async move {
                ingest
                    .get_catalog_inputs(GetCatalogInputsRequest {
                        technique_ids: chunk,
                    })
                    .await
            }
        })
        .await
        .map_err(ScoringError::peer("ingest"))?;
        let mut inputs: BTreeMap<String, _> = pages
            .into_iter()
            .flat_map(|p| p.into_inner().inputs)
            .map(|i| (i.technique_id.clone(), i))
            .collect();
        Ok(techniques
            .iter()
            .map(|t| {
                let input = inputs.remove(&t.technique_id).unwrap_or_default();
                let side = CatalogSide {
                    technique_id: t.technique_id.clone(),
                    name: t.name.clone(),
                    tactics: t.tactics.clone(),
                    platforms: t.platforms.clone(),
                    mapped_rules: input.enabled_rule_ids,
                    countermeasures: i64::from(input.countermeasure_count),
                    actor_count: i64::from(input.actor_count),
                };
                (t.technique_id.clone(), side)
            })
            .collect())
    }

    /// The test side of each technique, now (None) or as of an instant.
    pub async fn tests(
        &self,
        ids: &[String],
        as_of: Option<Micros>,
    ) -> Result<BTreeMap<String, TestSide>, ScoringError> {
        let pages = chunked(ids, MAX_BATCH_IDS, DEFAULT_FANOUT, |chunk| {
            let mut campaigns = self.peers.campaigns();
            async move {
                campaigns
                    .aggregate_tests_by_technique(AggregateTestsByTechniqueRequest {
                        technique_ids: chunk,
                        as_of: as_of.map(timestamp),
                    })
                    .await
            }
        })
        .await
        .map_err(ScoringError::peer("campaigns"))?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.into_inner().aggregates)
            .map(|a| {
                let side = TestSide {
                    total: i64::from(a.total_tests),
                    effective: i64::from(a.effective_tests),
                    blocked: i64::from(a.blocked),
                    detected: i64::from(a.detected),
                    logged: i64::from(a.logged),
                    not_detected: i64::from(a.not_detected),
                    latest_validated_at: a
                        .latest_validated_at
                        .as_ref()
                        .and_then(|t| from_timestamp(t).ok()),
                    triggered_rules: a.triggered_rule_ids,
                };
                (a.technique_id, side)
            })
            .collect())
    }

    /// Actors and their live techniques; unknown actor ids are left out.
    pub async fn actors(
        &self,
        ids: &[String],
    ) -> Result<Vec<(ThreatActor, Vec<String>)>, ScoringError> {
        let (actors, uses) = futures::try_join!(
            chunked(ids, MAX_BATCH_IDS, DEFAULT_FANOUT, |chunk| {
                let mut ingest = self.peers.ingest();
                async move {
                    ingest
                        .get_threat_actors_by_ids(GetThreatActorsByIdsRequest { actor_ids: chunk })
                        .await
                }
            }),
            chunked(ids, MAX_BATCH_IDS, DEFAULT_FANOUT, |chunk| {
                let mut ingest = self.peers.ingest();
                async move {
                    ingest
                        .get_actor_techniques(GetActorTechniquesRequest { actor_ids: chunk })
                        .await
                }
            }),
        )
        .map_err(ScoringError::peer("ingest"))?;
        let mut uses: BTreeMap<String, Vec<String>> = uses
            .into_iter()
            .flat_map(|p| p.into_inner().actors)
            .map(|a| (a.actor_id, a.technique_ids))
            .collect();
        Ok(actors
            .into_iter()
            .flat_map(|p| p.into_inner().actors)
            .map(|a| {
                let techniques = uses.remove(&a.actor_id).unwrap_or_default();
                (a, techniques)
            })
            .collect())
    }
}
