//! gRPC handlers of the ingest service: each converts its request (see
//! `convert`), calls one [`Catalog`] read or the [`Importer`], and
//! converts the answer back in request order with the missing ids listed;
//! errors become a status once, through `IngestError`.

use futures::StreamExt;
use purple_api::ingest::v1::{self as pb, ingest_service_server::IngestService};
use purple_runtime::ServiceContext;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::{
    catalog::Catalog,
    convert::{self, grouped_in_order, in_order},
    error::IngestError,
    import::Importer,
    intel::Intel,
    store::CatalogStore,
};

/// The ingest gRPC API.
pub struct IngestApi {
    catalog: Catalog,
    intel: Intel,
    importer: Importer,
}

impl IngestApi {
    /// The API over a service context.
    pub fn new(ctx: ServiceContext) -> Self {
        let store = CatalogStore::new(ctx.db);
        let importer = Importer::new(store.clone(), ctx.peers.scoring(), ctx.uploads.clone());
        Self {
            catalog: Catalog::new(store.clone()),
            intel: Intel::new(store),
            importer,
        }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn import(
        &self,
        request: Request<Streaming<pb::ImportRequest>>,
    ) -> Rpc<pb::ImportResponse> {
        // Its own task: when a client vanishes mid-upload, hyper drops this
        // handler, but the import still sees the broken stream and records
        // the failed run.
        let importer = self.importer.clone();
        let stream = request.into_inner().map(|chunk| chunk.map(convert::chunk));
        let run = tokio::spawn(
            async move { importer.run(stream).await }.instrument(tracing::Span::current()),
        );
        let report = match run.await {
            Ok(report) => report?,
            Err(e) => return Err(IngestError::Internal(format!("import task: {e}")).into()),
        };
        Ok(Response::new(pb::ImportResponse {
            report: Some(convert::report_pb(report)),
        }))
    }

    async fn list_import_runs(
        &self,
        request: Request<pb::ListImportRunsRequest>,
    ) -> Rpc<pb::ListImportRunsResponse> {
        let page = convert::runs_page(request.get_ref())?;
        let (runs, next_page_token) = self.catalog.import_runs(&page).await?;
        Ok(Response::new(pb::ListImportRunsResponse {
            runs: runs.into_iter().map(convert::report_pb).collect(),
            next_page_token,
        }))
    }

    async fn get_techniques_by_ids(
        &self,
        request: Request<pb::GetTechniquesByIdsRequest>,
    ) -> Rpc<pb::GetTechniquesByIdsResponse> {
        let ids = &request.get_ref().technique_ids;
        let found = self.catalog.techniques_by_ids(ids).await?;
        let (techniques, missing_ids) = in_order(ids, found, pb::Technique::from);
        Ok(Response::new(pb::GetTechniquesByIdsResponse {
            techniques,
            missing_ids,
        }))
    }

    async fn list_techniques(
        &self,
        request: Request<pb::ListTechniquesRequest>,
    ) -> Rpc<pb::ListTechniquesResponse> {
        let (query, page) = convert::technique_query(request.get_ref())?;
        let (techniques, next_page_token) = self.catalog.list_techniques(&query, &page).await?;
        Ok(Response::new(pb::ListTechniquesResponse {
            techniques: techniques.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn list_tactics(
        &self,
        _request: Request<pb::ListTacticsRequest>,
    ) -> Rpc<pb::ListTacticsResponse> {
        let tactics = self.catalog.tactics().await?;
        Ok(Response::new(pb::ListTacticsResponse {
            tactics: tactics.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_catalog_inputs(
        &self,
        request: Request<pb::GetCatalogInputsRequest>,
    ) -> Rpc<pb::GetCatalogInputsResponse> {
        let ids = &request.get_ref().technique_ids;
        let found = self.catalog.catalog_inputs(ids).await?;
        let (inputs, missing_ids) = in_order(ids, found, pb::CatalogInput::from);
        Ok(Response::new(pb::GetCatalogInputsResponse {
            inputs,
            missing_ids,
        }))
    }

    async fn list_threat_actors(
        &self,
        request: Request<pb::ListThreatActorsRequest>,
    ) -> Rpc<pb::ListThreatActorsResponse> {
        let page = convert::actors_page(request.get_ref())?;
        let (actors, next_page_token) = self
            .catalog
            .list_actors(request.get_ref().include_revoked, &page)
            .await?;
        Ok(Response::new(pb::ListThreatActorsResponse {
            actors: actors.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn get_threat_actors_by_ids(
        &self,
        request: Request<pb::GetThreatActorsByIdsRequest>,
    ) -> Rpc<pb::GetThreatActorsByIdsResponse> {
        let ids = &request.get_ref().actor_ids;
        let found = self.catalog.actors_by_ids(ids).await?;
        let (actors, missing_ids) = in_order(ids, found, pb::ThreatActor::from);
        Ok(Response::new(pb::GetThreatActorsByIdsResponse {
            actors,
            missing_ids,
        }))
    }

    async fn get_actor_techniques(
        &self,
        request: Request<pb::GetActorTechniquesRequest>,
    ) -> Rpc<pb::GetActorTechniquesResponse> {
        let ids = &request.get_ref().actor_ids;
        let found = self.catalog.actor_techniques(ids).await?;
        let (actors, missing_ids) =
            grouped_in_order(ids, found, |actor_id, technique_ids| pb::ActorTechniques {
                actor_id,
                technique_ids,
            });
        Ok(Response::new(pb::GetActorTechniquesResponse {
            actors,
            missing_ids,
        }))
    }

    async fn get_defenses_for_techniques(
        &self,
        request: Request<pb::GetDefensesForTechniquesRequest>,
    ) -> Rpc<pb::GetDefensesForTechniquesResponse> {
        let ids = &request.get_ref().technique_ids;
        let found = self.catalog.defenses_for(ids).await?;
        let (techniques, missing_ids) = grouped_in_order(ids, found, convert::technique_defenses);
        Ok(Response::new(pb::GetDefensesForTechniquesResponse {
            techniques,
            missing_ids,
        }))
    }

    async fn get_templates_for_techniques(
        &self,
        request: Request<pb::GetTemplatesForTechniquesRequest>,
    ) -> Rpc<pb::GetTemplatesForTechniquesResponse> {
        let r = request.get_ref();
        let found = self
            .catalog
            .templates_for(&r.technique_ids, &r.platform)
            .await?;
        let (techniques, missing_ids) =
            grouped_in_order(&r.technique_ids, found, convert::technique_templates);
        Ok(Response::new(pb::GetTemplatesForTechniquesResponse {
            techniques,
            missing_ids,
        }))
    }

    async fn get_detection_rules_by_ids(
        &self,
        request: Request<pb::GetDetectionRulesByIdsRequest>,
    ) -> Rpc<pb::GetDetectionRulesByIdsResponse> {
        let ids = &request.get_ref().rule_ids;
        let found = self.catalog.rules_by_ids(ids).await?;
        let (rules, missing_ids) = convert::rules_in_order(ids, &found);
        Ok(Response::new(pb::GetDetectionRulesByIdsResponse {
            rules,
            missing_ids,
        }))
    }

    async fn list_detection_rules(
        &self,
        request: Request<pb::ListDetectionRulesRequest>,
    ) -> Rpc<pb::ListDetectionRulesResponse> {
        let (filter, page) = convert::rules_query(request.get_ref())?;
        let (rules, next_page_token) = self.catalog.list_rules(&filter, &page).await?;
        Ok(Response::new(pb::ListDetectionRulesResponse {
            rules: rules.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn get_cves_for_techniques(
        &self,
        request: Request<pb::GetCvesForTechniquesRequest>,
    ) -> Rpc<pb::GetCvesForTechniquesResponse> {
        let ids = &request.get_ref().technique_ids;
        let found = self.catalog.cves_for(ids).await?;
        let (techniques, missing_ids) = grouped_in_order(ids, found, convert::technique_cves);
        Ok(Response::new(pb::GetCvesForTechniquesResponse {
            techniques,
            missing_ids,
        }))
    }

    async fn get_controls_for_techniques(
        &self,
        request: Request<pb::GetControlsForTechniquesRequest>,
    ) -> Rpc<pb::GetControlsForTechniquesResponse> {
        let ids = &request.get_ref().technique_ids;
        let found = self.catalog.controls_for(ids).await?;
        let (techniques, missing_ids) = grouped_in_order(ids, found, convert::technique_controls);
        Ok(Response::new(pb::GetControlsForTechniquesResponse {
            techniques,
            missing_ids,
        }))
    }

    async fn create_intel_reports(
        &self,
        request: Request<pb::CreateIntelReportsRequest>,
    ) -> Rpc<pb::CreateIntelReportsResponse> {
        let reports = convert::new_reports(request.into_inner())?;
        let (reports, created, updated) = self.intel.create(reports).await?;
        Ok(Response::new(pb::CreateIntelReportsResponse {
            reports: reports.into_iter().map(Into::into).collect(),
            created: created as i32,
            updated: updated as i32,
        }))
    }

    async fn list_intel_reports(
        &self,
        request: Request<pb::ListIntelReportsRequest>,
    ) -> Rpc<pb::ListIntelReportsResponse> {
        let (filter, page) = convert::intel_query(request.get_ref())?;
        let (reports, next_page_token) = self.intel.list(&filter, &page).await?;
        Ok(Response::new(pb::ListIntelReportsResponse {
            reports: reports.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn get_intel_for_techniques(
        &self,
        request: Request<pb::GetIntelForTechniquesRequest>,
    ) -> Rpc<pb::GetIntelForTechniquesResponse> {
        let r = request.get_ref();
        let (since, limit) = convert::intel_for_query(r)?;
        let found = self
            .intel
            .for_techniques(&r.technique_ids, since, limit)
            .await?;
        let (techniques, missing_ids) =
            in_order(&r.technique_ids, found, |intel| pb::TechniqueIntel {
                technique_id: intel.technique_id,
                report_count: intel.report_count as i32,
                reports: intel.reports.into_iter().map(Into::into).collect(),
            });
        Ok(Response::new(pb::GetIntelForTechniquesResponse {
            techniques,
            missing_ids,
        }))
    }

    async fn get_threat_signals(
        &self,
        request: Request<pb::GetThreatSignalsRequest>,
    ) -> Rpc<pb::GetThreatSignalsResponse> {
        let r = request.get_ref();
        let since = convert::signals_since(r)?;
        let found = self.intel.signals(&r.technique_ids, since).await?;
        let (signals, missing_ids) = in_order(&r.technique_ids, found, pb::ThreatSignals::from);
        Ok(Response::new(pb::GetThreatSignalsResponse {
            signals,
            missing_ids,
        }))
    }
}
