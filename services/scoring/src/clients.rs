//! Scoring's inputs from its peers, through the typed batch clients of the
//! runtime (chunked, never per entity), converted here into scoring's own
//! domain types: the live catalogue and its tactics and the catalogue side
//! of each technique from ingest, the test side from campaigns.

use std::collections::BTreeMap;

use purple_api::ingest::v1::Technique;
use purple_runtime::{
    clients::{CampaignsPeer, IngestPeer, Peers},
    time::{Micros, from_timestamp},
};

use crate::{
    domain::{ActorInfo, CatalogSide, TacticInfo, TechniqueInfo, TestSide, rule_key},
    error::ScoringError,
    plan::Signals,
};

/// Fetches inputs from ingest and campaigns.
#[derive(Clone, Debug)]
pub struct Inputs {
    ingest: IngestPeer,
    campaigns: CampaignsPeer,
}

fn technique_info(t: Technique) -> TechniqueInfo {
    TechniqueInfo {
        technique_id: t.technique_id,
        name: t.name,
        tactics: t.tactics,
        platforms: t.platforms,
    }
}

impl Inputs {
    /// Inputs from these peers.
    pub fn new(peers: &Peers) -> Self {
        Self {
            ingest: peers.ingest(),
            campaigns: peers.campaigns(),
        }
    }

    /// Every live tactic, in kill-chain order.
    pub async fn tactics(&self) -> Result<Vec<TacticInfo>, ScoringError> {
        Ok(self
            .ingest
            .tactics()
            .await?
            .into_iter()
            .map(|t| TacticInfo {
                tactic_id: t.tactic_id,
                short_name: t.short_name,
                name: t.name,
            })
            .collect())
    }

    /// Every live technique and sub-technique.
    pub async fn live_techniques(&self) -> Result<Vec<TechniqueInfo>, ScoringError> {
        Ok(self
            .ingest
            .live_techniques()
            .await?
            .into_iter()
            .map(technique_info)
            .collect())
    }

    /// Techniques by id (any, live or not); unknown ids are left out.
    pub async fn techniques(&self, ids: &[String]) -> Result<Vec<TechniqueInfo>, ScoringError> {
        let (found, _missing) = self.ingest.techniques_by_ids(ids).await?;
        Ok(found.into_iter().map(technique_info).collect())
    }

    /// The catalogue side of each technique.
    pub async fn catalog(
        &self,
        techniques: &[TechniqueInfo],
    ) -> Result<BTreeMap<String, CatalogSide>, ScoringError> {
        let ids: Vec<String> = techniques.iter().map(|t| t.technique_id.clone()).collect();
        let mut inputs: BTreeMap<String, _> = self
            .ingest
            .catalog_inputs(&ids)
            .await?
            .into_iter()
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
                    mapped_rules: rule_keys(&input.enabled_rules, {
                        #[allow(deprecated)]
                        &input.enabled_rule_ids
                    }),
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
        let answer = self.campaigns.aggregate_tests(ids, as_of).await?;
        // Each rule's key made once, however many techniques triggered it.
        let table: Vec<String> = answer
            .rules
            .iter()
            .map(|r| rule_key(&r.source, &r.rule_id))
            .collect();
        Ok(answer
            .aggregates
            .into_iter()
            .map(|a| {
                #[allow(deprecated)]
                let triggered_rules =
                    if a.triggered_rules.is_empty() && a.triggered_rule_ids.is_empty() {
                        // The peer client refused any index beyond its
                        // table; `get` keeps a panic out all the same.
                        a.triggered_rule_indexes
                            .iter()
                            .filter_map(|&i| table.get(i as usize).cloned())
                            .collect()
                    } else {
                        rule_keys(&a.triggered_rules, &a.triggered_rule_ids)
                    };
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
                    triggered_rules,
                };
                (a.technique_id, side)
            })
            .collect())
    }

    /// The threat signals of each technique, intel counted from
    /// `intel_since`; unknown ids are left out.
    pub async fn signals(
        &self,
        ids: &[String],
        intel_since: Micros,
    ) -> Result<BTreeMap<String, Signals>, ScoringError> {
        Ok(self
            .ingest
            .threat_signals(ids, intel_since)
            .await?
            .into_iter()
            .map(|s| {
                let signals = Signals {
                    recent_reports: i64::from(s.recent_reports),
                    latest_title: s.report_titles.into_iter().next(),
                    kev_cves: i64::from(s.kev_cves),
                    ransomware_cves: i64::from(s.ransomware_cves),
                    actor_ids: s.actor_ids,
                };
                (s.technique_id, signals)
            })
            .collect())
    }

    /// Actors and their live techniques; unknown actor ids are left out.
    pub async fn actors(
        &self,
        ids: &[String],
    ) -> Result<Vec<(ActorInfo, Vec<String>)>, ScoringError> {
        let (actors, uses) = futures::try_join!(
            self.ingest.threat_actors_by_ids(ids),
            self.ingest.actor_techniques(ids),
        )?;
        let mut uses: BTreeMap<String, Vec<String>> = uses
            .into_iter()
            .map(|a| (a.actor_id, a.technique_ids))
            .collect();
        Ok(actors
            .into_iter()
            .map(|a| {
                let techniques = uses.remove(&a.actor_id).unwrap_or_default();
                (
                    ActorInfo {
                        actor_id: a.actor_id,
                        name: a.name,
                    },
                    techniques,
                )
            })
            .collect())
    }
}

/// Rule keys from a peer's rule references, or from bare ids (any source)
/// when the peer sends only those (an older release mid-rollout).
fn rule_keys(rules: &[purple_api::common::v1::RuleRef], ids: &[String]) -> Vec<String> {
    if rules.is_empty() {
        ids.iter().map(|id| rule_key("", id)).collect()
    } else {
        rules
            .iter()
            .map(|r| rule_key(&r.source, &r.rule_id))
            .collect()
    }
}

/// Tells campaigns of regressions (the feed's numbered changes), each
/// under its stable key.
pub async fn notify_regressions(
    campaigns: &purple_runtime::clients::CampaignsPeer,
    changes: &[crate::store::feed::ChangeRow],
) -> Result<u64, purple_runtime::clients::PeerError> {
    use purple_api::common::v1::TechniqueStatus;
    let status = |s: Option<crate::domain::Status>| {
        s.map_or(TechniqueStatus::Unspecified, TechniqueStatus::from) as i32
    };
    let regressions = changes
        .iter()
        .map(|c| purple_api::campaigns::v1::Regression {
            regression_key: crate::feed::regression_key(c.seq),
            technique_id: c.technique_id.clone(),
            old_status: status(c.old_status),
            new_status: status(c.new_status),
            old_score: c.old_score,
            new_score: c.new_score,
        })
        .collect();
    campaigns.notify_regressions(regressions).await
}
