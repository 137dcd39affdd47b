//! One typed, batch-aware client per peer service: the only place a Purple
//! service calls another. Each method takes a whole id set, splits it into
//! chunks of the batch limit, sends them with a bounded fan-out, merges the
//! answers and returns the wire messages; the calling service converts them
//! into its own domain types in its `clients` module. Every call carries
//! the caller's trace context and its own deadline, and channels connect
//! lazily so that start-up order does not matter and a peer that is down
//! fails calls, not the process.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use purple_api::{
    batch::{DEFAULT_FANOUT, MAX_BATCH_IDS, chunked, shown},
    campaigns::v1::{
        AggregateTestsByTechniqueRequest, AggregateTestsByTechniqueResponse,
        NotifyRegressionsRequest, Regression, TechniqueTestAggregate,
        campaigns_service_client::CampaignsServiceClient,
    },
    common::v1::{Event, RuleRef},
    ingest::v1::{
        ActorTechniques, CatalogInput, GetActorTechniquesRequest, GetCatalogInputsRequest,
        GetTechniquesByIdsRequest, GetTemplatesForTechniquesRequest, GetThreatActorsByIdsRequest,
        GetThreatSignalsRequest, ListTacticsRequest, ListTechniquesRequest, SubtechniqueFilter,
        Tactic, Technique, TechniqueTemplates, ThreatActor, ThreatSignals,
        ingest_service_client::IngestServiceClient,
    },
    metrics::v1::{RecordEventsRequest, metrics_service_client::MetricsServiceClient},
    scoring::v1::{
        InvalidateTechniquesRequest, ScoreTechniquesRequest, TechniqueScore,
        scoring_service_client::ScoringServiceClient,
    },
};
use tonic::{
    Status,
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::{
    auth::credentials::ServiceCredentials,
    discovery,
    settings::{PeerSettings, ServiceName, TlsSettings},
    time::{Micros, timestamp},
    tracecontext::TracedCall,
};

/// What every peer call carries: this service's credentials.
#[derive(Clone, Debug)]
pub struct PeerInterceptor {
    credentials: ServiceCredentials,
}

impl tonic::service::Interceptor for PeerInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        self.credentials.apply(request.metadata_mut());
        Ok(request)
    }
}

/// A channel whose calls are client spans carrying the trace and this
/// service's identity.
pub type TracedChannel = InterceptedService<TracedCall<Channel>, PeerInterceptor>;

/// TLS for connections to peers: the CA that signs their certificates and,
/// for peers that require mutual TLS, this process's own certificate.
#[derive(Clone, Debug, Default)]
pub struct PeerTls {
    config: Option<ClientTlsConfig>,
}

impl PeerTls {
    /// From the TLS settings: a CA bundle to trust, and the server's own
    /// certificate and key as the client identity.
    pub fn from_settings(tls: &TlsSettings) -> std::io::Result<Self> {
        let Some(ca) = &tls.tls_ca_file else {
            return Ok(Self::default());
        };
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca)?));
        if let (Some(cert), Some(key)) = (&tls.tls_cert_file, &tls.tls_key_file) {
            config = config.identity(Identity::from_pem(
                std::fs::read(cert)?,
                std::fs::read(key)?,
            ));
        }
        Ok(Self {
            config: Some(config),
        })
    }
}

/// A failed call to a peer: which peer, and the status it answered (or
/// the transport's, when it could not be reached).
#[derive(Debug, thiserror::Error)]
#[error("{service}: {status}")]
pub struct PeerError {
    /// The peer's name (`ingest`, `campaigns`, `scoring`, `metrics`).
    pub service: &'static str,
    /// What the call ended with.
    pub status: Status,
}

impl PeerError {
    /// The gRPC status a service answers its own caller with.
    pub fn to_status(&self) -> Status {
        crate::status::from_peer(self.service, &self.status)
    }
}

/// Connections to the other services.
#[derive(Clone, Debug)]
pub struct Peers {
    ingest: Channel,
    campaigns: Channel,
    scoring: Channel,
    metrics: Channel,
    max_message_bytes: usize,
    deadline: Duration,
    interceptor: PeerInterceptor,
}

/// A peer address that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("address of {service}: {source}")]
pub struct PeerAddrError {
    service: &'static str,
    #[source]
    source: tonic::transport::Error,
}

impl Peers {
    /// Channels to every peer: the configured address, or this process's
    /// own port for a peer served in this process (`local`: its address,
    /// and whether it speaks TLS). Each call gives up after `deadline` and
    /// carries `credentials`.
    pub fn new(
        settings: &PeerSettings,
        local: (SocketAddr, bool),
        tls: &PeerTls,
        credentials: ServiceCredentials,
        max_message_bytes: usize,
        deadline: Duration,
    ) -> Result<Self, PeerAddrError> {
        let refresh = (settings.peer_dns_refresh_secs > 0)
            .then(|| Duration::from_secs(settings.peer_dns_refresh_secs));
        let channel = |service: ServiceName| -> Result<Channel, PeerAddrError> {
            let error = |source| PeerAddrError {
                service: service.as_str(),
                source,
            };
            let (addr, local_tls) = match settings.addr(service) {
                Some(addr) => (addr.to_owned(), false),
                None if local.1 => (format!("https://{}", local.0), true),
                None => (format!("http://{}", local.0), false),
            };
            let uri = Endpoint::from_shared(addr.clone())
                .map_err(error)?
                .uri()
                .clone();
            let tls = if addr.starts_with("https://") {
                tls.config.clone().map(|config| {
                    // This process's own certificate names the host it is
                    // served as, not the loopback address dialled here; a
                    // balanced peer is dialled by address and verified by
                    // its name.
                    let name = if local_tls {
                        "localhost"
                    } else {
                        uri.host().unwrap_or_default()
                    };
                    config.domain_name(name)
                })
            } else {
                None
            };
            let configure: discovery::Configure = Arc::new(move |endpoint: Endpoint| {
                let endpoint = endpoint
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(deadline)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_while_idle(true);
                match &tls {
                    Some(config) => endpoint.tls_config(config.clone()),
                    None => Ok(endpoint),
                }
            });
            // This process's own services are one address: no balancing.
            let refresh = if settings.addr(service).is_some() {
                refresh
            } else {
                None
            };
            discovery::channel(&uri, configure, refresh).map_err(error)
        };
        Ok(Self {
            ingest: channel(ServiceName::Ingest)?,
            campaigns: channel(ServiceName::Campaigns)?,
            scoring: channel(ServiceName::Scoring)?,
            metrics: channel(ServiceName::Metrics)?,
            max_message_bytes,
            deadline,
            interceptor: PeerInterceptor { credentials },
        })
    }

    /// The ingest service.
    pub fn ingest(&self) -> IngestPeer {
        IngestPeer {
            client: IngestServiceClient::with_interceptor(
                TracedCall::new(self.ingest.clone()),
                self.interceptor.clone(),
            )
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes),
            deadline: self.deadline,
        }
    }

    /// The campaigns service.
    pub fn campaigns(&self) -> CampaignsPeer {
        CampaignsPeer {
            client: CampaignsServiceClient::with_interceptor(
                TracedCall::new(self.campaigns.clone()),
                self.interceptor.clone(),
            )
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes),
            deadline: self.deadline,
        }
    }

    /// The scoring service.
    pub fn scoring(&self) -> ScoringPeer {
        ScoringPeer {
            client: ScoringServiceClient::with_interceptor(
                TracedCall::new(self.scoring.clone()),
                self.interceptor.clone(),
            )
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes),
            deadline: self.deadline,
        }
    }

    /// The metrics service.
    pub fn metrics(&self) -> MetricsPeer {
        MetricsPeer {
            client: MetricsServiceClient::with_interceptor(
                TracedCall::new(self.metrics.clone()),
                self.interceptor.clone(),
            )
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes),
            deadline: self.deadline,
        }
    }
}

/// A request with the call's deadline (sent as `grpc-timeout`, so the peer
/// stops working on it too).
fn request<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

/// Sends `ids` in chunks to one batch RPC and flattens the answers.
async fn batch<R, F, Fut>(
    service: &'static str,
    ids: &[String],
    call: F,
) -> Result<Vec<R>, PeerError>
where
    F: FnMut(Vec<String>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, Status>>,
{
    batch_of(service, ids, MAX_BATCH_IDS, call).await
}

/// [`batch`] in chunks of `limit` ids (at most the batch limit).
async fn batch_of<R, F, Fut>(
    service: &'static str,
    ids: &[String],
    limit: usize,
    call: F,
) -> Result<Vec<R>, PeerError>
where
    F: FnMut(Vec<String>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, Status>>,
{
    let pages = chunked(ids, limit.min(MAX_BATCH_IDS), DEFAULT_FANOUT, call)
        .await
        .map_err(|status| PeerError { service, status })?;
    Ok(pages.into_iter().flatten().collect())
}

/// Typed batch calls to ingest.
#[derive(Clone, Debug)]
pub struct IngestPeer {
    client: IngestServiceClient<TracedChannel>,
    deadline: Duration,
}

impl IngestPeer {
    const NAME: &'static str = "ingest";

    fn error(status: Status) -> PeerError {
        PeerError {
            service: Self::NAME,
            status,
        }
    }

    /// Techniques by ATT&CK id (live or not) and the ids ingest does not
    /// know.
    pub async fn techniques_by_ids(
        &self,
        ids: &[String],
    ) -> Result<(Vec<Technique>, Vec<String>), PeerError> {
        let answers = batch(Self::NAME, ids, |chunk| {
            let mut client = self.client.clone();
            let deadline = self.deadline;
            async move {
                let r = client
                    .get_techniques_by_ids(request(
                        GetTechniquesByIdsRequest {
                            technique_ids: chunk,
                        },
                        deadline,
                    ))
                    .await?
                    .into_inner();
                Ok(vec![(r.techniques, r.missing_ids)])
            }
        })
        .await?;
        let (mut techniques, mut missing) = (Vec::new(), Vec::new());
        for (found, absent) in answers {
            techniques.extend(found);
            missing.extend(absent);
        }
        Ok((techniques, missing))
    }

    /// Every live technique and sub-technique, in pages of the batch limit,
    /// descriptions left out (what a board needs; an older ingest sends
    /// them anyway).
    pub async fn live_techniques(&self) -> Result<Vec<Technique>, PeerError> {
        let mut client = self.client.clone();
        let (mut all, mut token) = (Vec::new(), String::new());
        loop {
            let page = client
                .list_techniques(request(
                    ListTechniquesRequest {
                        subtechniques: SubtechniqueFilter::Unspecified as i32,
                        page_size: MAX_BATCH_IDS as i32,
                        page_token: token,
                        brief: true,
                        ..Default::default()
                    },
                    self.deadline,
                ))
                .await
                .map_err(Self::error)?
                .into_inner();
            all.extend(page.techniques);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            token = page.next_page_token;
        }
    }

    /// Every live tactic, in kill-chain order.
    pub async fn tactics(&self) -> Result<Vec<Tactic>, PeerError> {
        Ok(self
            .client
            .clone()
            .list_tactics(request(ListTacticsRequest {}, self.deadline))
            .await
            .map_err(Self::error)?
            .into_inner()
            .tactics)
    }

    /// The catalogue side of each technique's score.
    pub async fn catalog_inputs(&self, ids: &[String]) -> Result<Vec<CatalogInput>, PeerError> {
        batch(Self::NAME, ids, |chunk| {
            let mut client = self.client.clone();
            let deadline = self.deadline;
            async move {
                Ok(client
                    .get_catalog_inputs(request(
                        GetCatalogInputsRequest {
                            technique_ids: chunk,
                        },
                        deadline,
                    ))
                    .await?
                    .into_inner()
                    .inputs)
            }
        })
        .await
    }

    /// The threat signals (recent intel, KEV, actors) of each technique;
    /// unknown ids are left out.
    pub async fn threat_signals(
        &self,
        ids: &[String],
        intel_since: Micros,
    ) -> Result<Vec<ThreatSignals>, PeerError> {
        batch(Self::NAME, ids, |chunk| {
            let mut client = self.client.clone();
            let deadline = self.deadline;
            async move {
                Ok(client
                    .get_threat_signals(request(
                        GetThreatSignalsRequest {
                            technique_ids: chunk,
                            intel_since: Some(timestamp(intel_since)),
                        },
                        deadline,
                    ))
                    .await?
                    .into_inner()
                    .signals)
            }
        })
        .await
    }

    /// Threat actors by id; unknown ids are left out.
    pub async fn threat_actors_by_ids(
        &self,
        ids: &[String],
    ) -> Result<Vec<ThreatActor>, PeerError> {
        batch(Self::NAME, ids, |chunk| {
            let mut client = self.client.clone();
            let deadline = self.deadline;
            async move {
                Ok(client
                    .get_threat_actors_by_ids(request(
                        GetThreatActorsByIdsRequest { actor_ids: chunk },
                        deadline,
                    ))
                    .await?
                    .into_inner()
                    .actors)
            }
        })
        .await
    }

    /// The live techniques each actor uses; unknown actors are left out.
    pub async fn actor_techniques(
        &self,
        ids: &[String],
    ) -> Result<Vec<ActorTechniques>, PeerError> {
        batch(Self::NAME, ids, |chunk| {
            let mut client = self.client.clone();
            let deadline = self.deadline;
            async move {
                Ok(client
                    .get_actor_techniques(request(
                        GetActorTechniquesRequest { actor_ids: chunk },
                        deadline,
                    ))
                    .await?
                    .into_inner()
                    .actors)
            }
        })
        .await
    }

    /// Test templates per technique, best first, for a platform ("" for
    /// any).
    pub async fn templates_for(
        &self,
        ids: &[String],
        platform: &str,
    ) -> Result<Vec<TechniqueTemplates>, PeerError> {
        batch(Self::NAME, ids, |chunk| {
            let mut client = self.client.clone();
            let deadline = self.deadline;
            let platform = platform.to_owned();
            async move {
                Ok(client
                    .get_templates_for_techniques(request(
                        GetTemplatesForTechniquesRequest {
                            technique_ids: chunk,
                            platform,
                        },
                        deadline,
                    ))
                    .await?
                    .into_inner()
                    .techniques)
            }
        })
        .await
    }
}

/// Typed batch calls to campaigns.
#[derive(Clone, Debug)]
pub struct CampaignsPeer {
    client: CampaignsServiceClient<TracedChannel>,
    deadline: Duration,
}

impl CampaignsPeer {
    /// The test side of each technique's score, now (None) or as of an
    /// instant. As of an instant, in smaller chunks asked at once: each is
    /// one CPU-bound statement over the chains' history, and a past
    /// organization score (every live technique) would otherwise keep one
    /// core busy while the other idles (docs/BENCHMARKS.md, Scoring).
    pub async fn aggregate_tests(
        &self,
        ids: &[String],
        as_of: Option<Micros>,
    ) -> Result<TestAggregates, PeerError> {
        let limit = if as_of.is_some() {
            AS_OF_CHUNK
        } else {
            MAX_BATCH_IDS
        };
        let pages = batch_of("campaigns", ids, limit, |chunk| {
            let mut client = self.client.clone();
            let deadline = self.deadline;
            async move {
                Ok(vec![
                    client
                        .aggregate_tests_by_technique(request(
                            AggregateTestsByTechniqueRequest {
                                technique_ids: chunk,
                                as_of: as_of.map(timestamp),
                                rule_table: true,
                            },
                            deadline,
                        ))
                        .await?
                        .into_inner(),
                ])
            }
        })
        .await?;
        TestAggregates::merge(pages).map_err(|status| PeerError {
            service: "campaigns",
            status,
        })
    }
}

/// The test aggregates of every chunk, their rule indexes pointing into
/// one table: each chunk's table appended, its indexes moved along.
#[derive(Debug, Default)]
pub struct TestAggregates {
    /// One per requested technique, in request order.
    pub aggregates: Vec<TechniqueTestAggregate>,
    /// The rules `triggered_rule_indexes` point at. An aggregate from a
    /// release without the table carries its rules as strings instead.
    pub rules: Vec<RuleRef>,
}

impl TestAggregates {
    fn merge(pages: Vec<AggregateTestsByTechniqueResponse>) -> Result<Self, Status> {
        let mut merged = Self::default();
        for page in pages {
            let offset = merged.rules.len() as u64;
            let size = page.rules.len() as u64;
            for mut aggregate in page.aggregates {
                for index in &mut aggregate.triggered_rule_indexes {
                    if u64::from(*index) >= size {
                        return Err(Status::internal(format!(
                            "aggregate of {} names rule {index} of a table of {size}",
                            shown(&aggregate.technique_id)
                        )));
                    }
                    *index = u32::try_from(offset + u64::from(*index)).map_err(|_| {
                        Status::internal("campaigns answered more rules than fit a u32")
                    })?;
                }
                merged.aggregates.push(aggregate);
            }
            merged.rules.extend(page.rules);
        }
        Ok(merged)
    }
}

/// Techniques per `AggregateTestsByTechnique` call as of an instant.
const AS_OF_CHUNK: usize = 256;

impl CampaignsPeer {
    /// Tells the purple leads of regressions, in chunks of the batch limit
    /// sent in order; how many notifications were new.
    pub async fn notify_regressions(&self, regressions: Vec<Regression>) -> Result<u64, PeerError> {
        let mut notified = 0;
        for chunk in regressions.chunks(MAX_BATCH_IDS) {
            let mut client = self.client.clone();
            let answer = client
                .notify_regressions(request(
                    NotifyRegressionsRequest {
                        regressions: chunk.to_vec(),
                    },
                    self.deadline,
                ))
                .await
                .map_err(|status| PeerError {
                    service: "campaigns",
                    status,
                })?;
            notified += u64::try_from(answer.into_inner().notified).unwrap_or(0);
        }
        Ok(notified)
    }
}

/// Typed batch calls to scoring.
#[derive(Clone, Debug)]
pub struct ScoringPeer {
    client: ScoringServiceClient<TracedChannel>,
    deadline: Duration,
}

impl ScoringPeer {
    /// Scores of techniques now; unknown ids are left out.
    pub async fn score_techniques(&self, ids: &[String]) -> Result<Vec<TechniqueScore>, PeerError> {
        batch("scoring", ids, |chunk| {
            let mut client = self.client.clone();
            let deadline = self.deadline;
            async move {
                Ok(client
                    .score_techniques(request(
                        ScoreTechniquesRequest {
                            technique_ids: chunk,
                            as_of: None,
                        },
                        deadline,
                    ))
                    .await?
                    .into_inner()
                    .scores)
            }
        })
        .await
    }

    /// Tells scoring that these techniques' inputs changed; `source` names
    /// the caller for its log.
    pub async fn invalidate(&self, ids: &[String], source: &str) -> Result<(), PeerError> {
        batch("scoring", ids, |chunk| {
            let mut client = self.client.clone();
            let deadline = self.deadline;
            let source = source.to_owned();
            async move {
                client
                    .invalidate_techniques(request(
                        InvalidateTechniquesRequest {
                            technique_ids: chunk,
                            source,
                        },
                        deadline,
                    ))
                    .await?;
                Ok(Vec::<()>::new())
            }
        })
        .await?;
        Ok(())
    }
}

/// Typed calls to metrics.
#[derive(Clone, Debug)]
pub struct MetricsPeer {
    client: MetricsServiceClient<TracedChannel>,
    deadline: Duration,
}

impl MetricsPeer {
    /// Records events, in order, in chunks of the batch limit sent one
    /// after another (order matters to the audit trail). Returns how many
    /// were new.
    pub async fn record_events(&self, events: Vec<Event>) -> Result<u64, PeerError> {
        let mut recorded = 0;
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let chunk: Vec<Event> = events.by_ref().take(MAX_BATCH_IDS).collect();
            let answer = self
                .client
                .clone()
                .record_events(request(
                    RecordEventsRequest { events: chunk },
                    self.deadline,
                ))
                .await
                .map_err(|status| PeerError {
                    service: "metrics",
                    status,
                })?
                .into_inner();
            recorded += u64::try_from(answer.recorded).unwrap_or(0);
        }
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str) -> RuleRef {
        RuleRef {
            source: "sigma".into(),
            rule_id: id.into(),
        }
    }

    fn page(rules: &[&str], aggregates: &[(&str, &[u32])]) -> AggregateTestsByTechniqueResponse {
        AggregateTestsByTechniqueResponse {
            aggregates: aggregates
                .iter()
                .map(|(id, indexes)| TechniqueTestAggregate {
                    technique_id: (*id).into(),
                    triggered_rule_indexes: indexes.to_vec(),
                    ..Default::default()
                })
                .collect(),
            rules: rules.iter().map(|id| rule(id)).collect(),
        }
    }

    fn resolved(merged: &TestAggregates) -> Vec<(String, Vec<String>)> {
        merged
            .aggregates
            .iter()
            .map(|a| {
                let rules = a
                    .triggered_rule_indexes
                    .iter()
                    .map(|&i| merged.rules[i as usize].rule_id.clone())
                    .collect();
                (a.technique_id.clone(), rules)
            })
            .collect()
    }

    #[test]
    fn merged_chunks_point_into_one_table_at_their_rules() {
        let merged = TestAggregates::merge(vec![
            page(&["a", "b"], &[("T1", &[1, 0]), ("T2", &[])]),
            page(&[], &[("T3", &[])]),
            page(&["b", "c"], &[("T4", &[0]), ("T5", &[1, 0])]),
        ])
        .unwrap();
        assert_eq!(
            resolved(&merged),
            [
                ("T1".to_string(), vec!["b".to_string(), "a".to_string()]),
                ("T2".into(), vec![]),
                ("T3".into(), vec![]),
                ("T4".into(), vec!["b".into()]),
                ("T5".into(), vec!["c".into(), "b".into()]),
            ]
        );
    }

    #[test]
    fn an_index_beyond_its_chunks_table_is_refused() {
        // Index 2 would be in range of the merged table (4 rules), not of
        // its own chunk's (2).
        let error = TestAggregates::merge(vec![
            page(&["a", "b"], &[("T1", &[0])]),
            page(&["c", "d"], &[("T2", &[2])]),
        ])
        .unwrap_err();
        assert_eq!(error.code(), tonic::Code::Internal);
        assert!(error.message().contains("T2"), "{}", error.message());
    }
}
