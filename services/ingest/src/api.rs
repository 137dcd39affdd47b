//! gRPC handlers of the ingest service: check the batch, call the store or
//! the importer, answer in request order with the missing ids listed.

use purple_api::{
    batch::{check_batch_len, in_request_order},
    ingest::v1::{self as pb, ingest_service_server::IngestService},
};
use purple_runtime::{ServiceContext, paging::Page, time::timestamp};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::{
    domain::Report,
    error::IngestError,
    import::{Importer, Kind},
    store::CatalogStore,
};

/// The ingest gRPC API.
pub struct IngestApi {
    store: CatalogStore,
    importer: Importer,
}

impl IngestApi {
    /// The API over a service context.
    pub fn new(ctx: ServiceContext) -> Self {
        let store = CatalogStore::new(ctx.db);
        let importer = Importer::new(
            store.clone(),
            ctx.peers,
            ctx.settings.limits.max_import_bytes,
        );
        Self { store, importer }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

fn ids(field: &str, ids: &[String]) -> Result<(), IngestError> {
    check_batch_len(field, ids.len())?;
    Ok(())
}

/// A report as the API returns it.
pub fn report_pb(report: Report) -> pb::ImportReport {
    pb::ImportReport {
        created: report.created(),
        updated: report.updated(),
        run_id: report.run_id,
        kind: Kind::parse(&report.kind).map_or(pb::ImportKind::Unspecified, Kind::to_proto) as i32,
        status: if report.succeeded {
            pb::ImportStatus::Succeeded
        } else {
            pb::ImportStatus::Failed
        } as i32,
        files: report.files,
        attack_version: report.attack_version,
        counts: report
            .counts
            .into_iter()
            .map(|(name, c)| {
                let counts = pb::EntityCounts {
                    created: c.created,
                    updated: c.updated,
                    unchanged: c.unchanged,
                    revoked: c.revoked,
                    deprecated: c.deprecated,
                    removed: c.removed,
                };
                (name, counts)
            })
            .collect(),
        unresolved_references: report.unresolved_references,
        skipped: report
            .skipped
            .into_iter()
            .map(|s| pb::SkippedItem {
                file_name: s.file_name,
                location: s.location,
                reason: s.reason,
            })
            .collect(),
        error: report.error,
        started_at: Some(timestamp(report.started_at)),
        finished_at: Some(timestamp(report.finished_at)),
    }
}

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
        let stream = request.into_inner();
        let run = tokio::spawn(
            async move { importer.run(stream).await }.instrument(tracing::Span::current()),
        );
        let report = run
            .await
            .map_err(|e| IngestError::Internal(format!("import task: {e}")))??;
        Ok(Response::new(pb::ImportResponse {
            report: Some(report_pb(report)),
        }))
    }

    async fn list_import_runs(
        &self,
        request: Request<pb::ListImportRunsRequest>,
    ) -> Rpc<pb::ListImportRunsResponse> {
        let request = request.into_inner();
        let page =
            Page::parse(request.page_size, &request.page_token, 50).map_err(IngestError::from)?;
        let mut runs = self
            .store
            .import_runs(page)
            .await
            .map_err(IngestError::from)?;
        let next_page_token = page.finish(&mut runs);
        let runs = runs
            .iter()
            .filter_map(|json| serde_json::from_str::<Report>(json).ok())
            .map(report_pb)
            .collect();
        Ok(Response::new(pb::ListImportRunsResponse {
            runs,
            next_page_token,
        }))
    }

    async fn get_techniques_by_ids(
        &self,
        request: Request<pb::GetTechniquesByIdsRequest>,
    ) -> Rpc<pb::GetTechniquesByIdsResponse> {
        let request = request.into_inner();
        ids("technique_ids", &request.technique_ids)?;
        let found = self
            .store
            .techniques_by_ids(&request.technique_ids)
            .await
            .map_err(IngestError::from)?;
        let (techniques, missing_ids) = in_request_order(&request.technique_ids, &found);
        Ok(Response::new(pb::GetTechniquesByIdsResponse {
            techniques,
            missing_ids,
        }))
    }

    async fn list_techniques(
        &self,
        request: Request<pb::ListTechniquesRequest>,
    ) -> Rpc<pb::ListTechniquesResponse> {
        let request = request.into_inner();
        let page =
            Page::parse(request.page_size, &request.page_token, 100).map_err(IngestError::from)?;
        let mut techniques = self
            .store
            .list_techniques(
                &request.tactic,
                &request.platform,
                i64::from(request.subtechniques),
                request.include_revoked,
                page,
            )
            .await
            .map_err(IngestError::from)?;
        let next_page_token = page.finish(&mut techniques);
        Ok(Response::new(pb::ListTechniquesResponse {
            techniques,
            next_page_token,
        }))
    }

    async fn list_tactics(
        &self,
        _request: Request<pb::ListTacticsRequest>,
    ) -> Rpc<pb::ListTacticsResponse> {
        let tactics = self.store.tactics().await.map_err(IngestError::from)?;
        Ok(Response::new(pb::ListTacticsResponse { tactics }))
    }

    async fn get_catalog_inputs(
        &self,
        request: Request<pb::GetCatalogInputsRequest>,
    ) -> Rpc<pb::GetCatalogInputsResponse> {
        let request = request.into_inner();
        ids("technique_ids", &request.technique_ids)?;
        let found = self
            .store
            .catalog_inputs(&request.technique_ids)
            .await
            .map_err(IngestError::from)?;
        let (inputs, missing_ids) = in_request_order(&request.technique_ids, &found);
        Ok(Response::new(pb::GetCatalogInputsResponse {
            inputs,
            missing_ids,
        }))
    }

    async fn list_threat_actors(
        &self,
        request: Request<pb::ListThreatActorsRequest>,
    ) -> Rpc<pb::ListThreatActorsResponse> {
        let request = request.into_inner();
        let page =
            Page::parse(request.page_size, &request.page_token, 100).map_err(IngestError::from)?;
        let mut actors = self
            .store
            .list_actors(request.include_revoked, page)
            .await
            .map_err(IngestError::from)?;
        let next_page_token = page.finish(&mut actors);
        Ok(Response::new(pb::ListThreatActorsResponse {
            actors,
            next_page_token,
        }))
    }

    async fn get_threat_actors_by_ids(
        &self,
        request: Request<pb::GetThreatActorsByIdsRequest>,
    ) -> Rpc<pb::GetThreatActorsByIdsResponse> {
        let request = request.into_inner();
        ids("actor_ids", &request.actor_ids)?;
        let found = self
            .store
            .actors_by_ids(&request.actor_ids)
            .await
            .map_err(IngestError::from)?;
        let (actors, missing_ids) = in_request_order(&request.actor_ids, &found);
        Ok(Response::new(pb::GetThreatActorsByIdsResponse {
            actors,
            missing_ids,
        }))
    }

    async fn get_actor_techniques(
        &self,
        request: Request<pb::GetActorTechniquesRequest>,
    ) -> Rpc<pb::GetActorTechniquesResponse> {
        let request = request.into_inner();
        ids("actor_ids", &request.actor_ids)?;
        let found = self
            .store
            .actor_techniques(&request.actor_ids)
            .await
            .map_err(IngestError::from)?;
        let found = found
            .into_iter()
            .map(|(actor_id, technique_ids)| {
                (
                    actor_id.clone(),
                    pb::ActorTechniques {
                        actor_id,
                        technique_ids,
                    },
                )
            })
            .collect();
        let (actors, missing_ids) = in_request_order(&request.actor_ids, &found);
        Ok(Response::new(pb::GetActorTechniquesResponse {
            actors,
            missing_ids,
        }))
    }

    async fn get_defenses_for_techniques(
        &self,
        request: Request<pb::GetDefensesForTechniquesRequest>,
    ) -> Rpc<pb::GetDefensesForTechniquesResponse> {
        let request = request.into_inner();
        ids("technique_ids", &request.technique_ids)?;
        let found = self
            .store
            .defenses_for(&request.technique_ids)
            .await
            .map_err(IngestError::from)?;
        let found = found
            .into_iter()
            .map(|(technique_id, defenses)| {
                (
                    technique_id.clone(),
                    pb::TechniqueDefenses {
                        technique_id,
                        defenses,
                    },
                )
            })
            .collect();
        let (techniques, missing_ids) = in_request_order(&request.technique_ids, &found);
        Ok(Response::new(pb::GetDefensesForTechniquesResponse {
            techniques,
            missing_ids,
        }))
    }

    async fn get_templates_for_techniques(
        &self,
        request: Request<pb::GetTemplatesForTechniquesRequest>,
    ) -> Rpc<pb::GetTemplatesForTechniquesResponse> {
        let request = request.into_inner();
        ids("technique_ids", &request.technique_ids)?;
        let found = self
            .store
            .templates_for(&request.technique_ids, &request.platform)
            .await
            .map_err(IngestError::from)?;
        let found = found
            .into_iter()
            .map(|(technique_id, templates)| {
                (
                    technique_id.clone(),
                    pb::TechniqueTemplates {
                        technique_id,
                        templates,
                    },
                )
            })
            .collect();
        let (techniques, missing_ids) = in_request_order(&request.technique_ids, &found);
        Ok(Response::new(pb::GetTemplatesForTechniquesResponse {
            techniques,
            missing_ids,
        }))
    }

    async fn get_detection_rules_by_ids(
        &self,
        request: Request<pb::GetDetectionRulesByIdsRequest>,
    ) -> Rpc<pb::GetDetectionRulesByIdsResponse> {
        let request = request.into_inner();
        ids("rule_ids", &request.rule_ids)?;
        let found = self
            .store
            .rules_by_ids(&request.rule_ids)
            .await
            .map_err(IngestError::from)?;
        let (rules, missing_ids) = in_request_order(&request.rule_ids, &found);
        Ok(Response::new(pb::GetDetectionRulesByIdsResponse {
            rules,
            missing_ids,
        }))
    }

    async fn get_cves_for_techniques(
        &self,
        request: Request<pb::GetCvesForTechniquesRequest>,
    ) -> Rpc<pb::GetCvesForTechniquesResponse> {
        let request = request.into_inner();
        ids("technique_ids", &request.technique_ids)?;
        let found = self
            .store
            .cves_for(&request.technique_ids)
            .await
            .map_err(IngestError::from)?;
        let found = found
            .into_iter()
            .map(|(technique_id, cves)| {
                (
                    technique_id.clone(),
                    pb::TechniqueCves { technique_id, cves },
                )
            })
            .collect();
        let (techniques, missing_ids) = in_request_order(&request.technique_ids, &found);
        Ok(Response::new(pb::GetCvesForTechniquesResponse {
            techniques,
            missing_ids,
        }))
    }

    async fn get_controls_for_techniques(
        &self,
        request: Request<pb::GetControlsForTechniquesRequest>,
    ) -> Rpc<pb::GetControlsForTechniquesResponse> {
        let request = request.into_inner();
        ids("technique_ids", &request.technique_ids)?;
        let found = self
            .store
            .controls_for(&request.technique_ids)
            .await
            .map_err(IngestError::from)?;
        let found = found
            .into_iter()
            .map(|(technique_id, controls)| {
                (
                    technique_id.clone(),
                    pb::TechniqueControls {
                        technique_id,
                        controls,
                    },
                )
            })
            .collect();
        let (techniques, missing_ids) = in_request_order(&request.technique_ids, &found);
        Ok(Response::new(pb::GetControlsForTechniquesResponse {
            techniques,
            missing_ids,
        }))
    }
}
