//! The catalogue's batch reads, between the wire conversions and the SQL:
//! each checks its batch against the limit and answers with one statement
//! (per chunk of ids a caller sends), keyed by id so the API can answer in
//! request order and list the ids it does not know.

use std::collections::BTreeMap;

use purple_api::batch::check_ids;
use purple_runtime::paging::Page;

use crate::{
    domain::{
        Report,
        views::{
            CatalogInput, Control, Cve, Defense, Rule, RuleFilter, Tactic, Technique,
            TechniqueQuery, Template, ThreatActor,
        },
    },
    error::IngestError,
    store::CatalogStore,
};

/// The sort key of the technique list: the ATT&CK id.
pub const TECHNIQUE_KEY_LEN: usize = 1;
/// The sort key of the actor list: (name, id).
pub const ACTOR_KEY_LEN: usize = 2;
/// The sort key of the import run list: (started_at, run id), newest first.
pub const RUN_KEY_LEN: usize = 2;

/// Id-keyed reads of the catalogue.
pub type ById<T> = BTreeMap<String, T>;

/// The catalogue's reads.
#[derive(Clone, Debug)]
pub struct Catalog {
    store: CatalogStore,
}

impl Catalog {
    /// The reads over a store.
    pub fn new(store: CatalogStore) -> Self {
        Self { store }
    }

    /// A page of import run reports, newest first, and the next token.
    pub async fn import_runs(&self, page: &Page) -> Result<(Vec<Report>, String), IngestError> {
        let mut runs = self.store.import_runs(page).await?;
        let next = page.finish(&mut runs, |(_, started, id)| {
            vec![(*started).into(), id.into()]
        });
        // A report that no longer decodes (written by an older release)
        // is left out rather than failing the whole page.
        let reports = runs
            .iter()
            .filter_map(|(json, _, _)| serde_json::from_str::<Report>(json).ok())
            .collect();
        Ok((reports, next))
    }

    /// Techniques by ATT&CK id, live or not.
    pub async fn techniques_by_ids(&self, ids: &[String]) -> Result<ById<Technique>, IngestError> {
        check_ids("technique_ids", ids)?;
        Ok(self.store.techniques_by_ids(ids).await?)
    }

    /// A filtered page of techniques by id, and the next token.
    pub async fn list_techniques(
        &self,
        query: &TechniqueQuery,
        page: &Page,
    ) -> Result<(Vec<Technique>, String), IngestError> {
        let mut techniques = self
            .store
            .list_techniques(
                &query.tactic,
                &query.platform,
                query.subtechniques,
                query.include_revoked,
                query.brief,
                page,
            )
            .await?;
        let next = page.finish(&mut techniques, |t| vec![(&t.technique_id).into()]);
        Ok((techniques, next))
    }

    /// Live tactics in kill-chain order.
    pub async fn tactics(&self) -> Result<Vec<Tactic>, IngestError> {
        Ok(self.store.tactics().await?)
    }

    /// Scoring's catalogue inputs per technique.
    pub async fn catalog_inputs(&self, ids: &[String]) -> Result<ById<CatalogInput>, IngestError> {
        check_ids("technique_ids", ids)?;
        Ok(self.store.catalog_inputs(ids).await?)
    }

    /// A page of threat actors by name, and the next token.
    pub async fn list_actors(
        &self,
        include_revoked: bool,
        page: &Page,
    ) -> Result<(Vec<ThreatActor>, String), IngestError> {
        let mut actors = self.store.list_actors(include_revoked, page).await?;
        let next = page.finish(&mut actors, |a| {
            vec![(&a.name).into(), (&a.actor_id).into()]
        });
        Ok((actors, next))
    }

    /// Threat actors by ATT&CK id.
    pub async fn actors_by_ids(&self, ids: &[String]) -> Result<ById<ThreatActor>, IngestError> {
        check_ids("actor_ids", ids)?;
        Ok(self.store.actors_by_ids(ids).await?)
    }

    /// The live techniques of each actor.
    pub async fn actor_techniques(&self, ids: &[String]) -> Result<ById<Vec<String>>, IngestError> {
        check_ids("actor_ids", ids)?;
        Ok(self.store.actor_techniques(ids).await?)
    }

    /// D3FEND defenses of each technique (its own and its parent's).
    pub async fn defenses_for(&self, ids: &[String]) -> Result<ById<Vec<Defense>>, IngestError> {
        check_ids("technique_ids", ids)?;
        Ok(self.store.defenses_for(ids).await?)
    }

    /// Test templates of each technique, best first.
    pub async fn templates_for(
        &self,
        ids: &[String],
        platform: &str,
    ) -> Result<ById<Vec<Template>>, IngestError> {
        check_ids("technique_ids", ids)?;
        Ok(self.store.templates_for(ids, platform).await?)
    }

    /// Detection rules by upstream id, every source's.
    pub async fn rules_by_ids(&self, ids: &[String]) -> Result<ById<Vec<Rule>>, IngestError> {
        check_ids("rule_ids", ids)?;
        Ok(self.store.rules_by_ids(ids).await?)
    }

    /// A page of rules and the next page's token.
    pub async fn list_rules(
        &self,
        filter: &RuleFilter,
        page: &Page,
    ) -> Result<(Vec<Rule>, String), IngestError> {
        let mut rules = self.store.list_rules(filter, page).await?;
        let next = page.finish(&mut rules, |r| {
            vec![(&r.source).into(), (&r.rule_id).into()]
        });
        Ok((rules, next))
    }

    /// CVEs of each technique.
    pub async fn cves_for(&self, ids: &[String]) -> Result<ById<Vec<Cve>>, IngestError> {
        check_ids("technique_ids", ids)?;
        Ok(self.store.cves_for(ids).await?)
    }

    /// NIST 800-53 controls of each technique.
    pub async fn controls_for(&self, ids: &[String]) -> Result<ById<Vec<Control>>, IngestError> {
        check_ids("technique_ids", ids)?;
        Ok(self.store.controls_for(ids).await?)
    }
}
