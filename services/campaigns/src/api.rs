//! gRPC handlers of the campaigns service: each converts its request (see
//! `convert`), calls one function of the workflow, campaigns, scheduler,
//! reports or people, and converts the answer back; errors become a status
//! once, through `CampaignError`.

use futures::StreamExt;
use purple_api::{
    batch::aligned_in_request_order,
    campaigns::v1::{self as pb, campaigns_service_server::CampaignsService},
};
use purple_runtime::auth;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::{
    campaign::Campaigns,
    convert::{self, in_order, tests_pb},
    domain::Input,
    error::CampaignError,
    history::History,
    people::People,
    relay::Relay,
    report::Reports,
    schedule::Scheduler,
    workflow::Workflow,
};

/// The campaigns gRPC API.
pub struct CampaignsApi {
    pub(crate) workflow: Workflow,
    pub(crate) campaigns: Campaigns,
    pub(crate) scheduler: Scheduler,
    pub(crate) reports: Reports,
    pub(crate) people: People,
    pub(crate) relay: Relay,
    pub(crate) history: History,
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl CampaignsService for CampaignsApi {
    async fn create_users(
        &self,
        request: Request<pb::CreateUsersRequest>,
    ) -> Rpc<pb::CreateUsersResponse> {
        let caller = auth::caller(&request)?;
        let r = request.into_inner();
        let actor = convert::actor(caller, &r.actor_id)?;
        let users = convert::new_users(r.users)?;
        let users = self.people.create_users(&actor, users).await?;
        Ok(Response::new(pb::CreateUsersResponse {
            users: users.into_iter().map(convert::user_pb).collect(),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Rpc<pb::ListUsersResponse> {
        let (role, page) = convert::user_query(request.get_ref())?;
        let (users, next_page_token) = self.people.list_users(role, &page).await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(convert::user_pb).collect(),
            next_page_token,
        }))
    }

    async fn create_tests(
        &self,
        request: Request<pb::CreateTestsRequest>,
    ) -> Rpc<pb::CreateTestsResponse> {
        let caller = auth::caller(&request)?;
        let r = request.into_inner();
        let actor = convert::actor(caller, &r.actor_id)?;
        let tests = self
            .workflow
            .create_tests(&actor, convert::new_tests(r.tests))
            .await?;
        Ok(Response::new(pb::CreateTestsResponse {
            tests: tests_pb(tests),
        }))
    }

    async fn get_tests_by_ids(
        &self,
        request: Request<pb::GetTestsByIdsRequest>,
    ) -> Rpc<pb::GetTestsByIdsResponse> {
        let ids = &request.get_ref().test_ids;
        let found = self.workflow.tests_by_ids(ids).await?;
        let (tests, missing_ids) =
            aligned_in_request_order(ids, found, |t| convert::test_pb_of(&t));
        Ok(Response::new(pb::GetTestsByIdsResponse {
            tests,
            missing_ids,
        }))
    }

    async fn list_tests(
        &self,
        request: Request<pb::ListTestsRequest>,
    ) -> Rpc<pb::ListTestsResponse> {
        let (filter, page) = convert::test_query(request.get_ref())?;
        let (tests, next_page_token) = self.workflow.list_tests(&filter, &page).await?;
        Ok(Response::new(pb::ListTestsResponse {
            tests: tests_pb(tests),
            next_page_token,
        }))
    }

    async fn transition_test(
        &self,
        request: Request<pb::TransitionTestRequest>,
    ) -> Rpc<pb::TransitionTestResponse> {
        let caller = auth::caller(&request)?;
        let mut r = request.into_inner();
        let actor = convert::actor(caller, &r.actor_id)?;
        let action = convert::action(r.action)?;
        let input = Input::try_from(&mut r)?;
        let done = self
            .workflow
            .transition(&r.test_id, action, &actor, r.expected_version, input)
            .await?;
        Ok(Response::new(pb::TransitionTestResponse {
            test: Some(convert::test_pb(done.test)),
            retest: done.retest.map(convert::test_pb),
            remediation: done.remediation.map(convert::remediation_pb),
        }))
    }

    async fn record_detection_results(
        &self,
        request: Request<pb::RecordDetectionResultsRequest>,
    ) -> Rpc<pb::RecordDetectionResultsResponse> {
        let caller = auth::caller(&request)?;
        let r = request.into_inner();
        let actor = convert::actor(caller, &r.actor_id)?;
        let results = convert::results(r.results)?;
        let recorded = self.workflow.record_results(&actor, results).await?;
        Ok(Response::new(pb::RecordDetectionResultsResponse {
            recorded: recorded as i32,
        }))
    }

    async fn aggregate_tests_by_technique(
        &self,
        request: Request<pb::AggregateTestsByTechniqueRequest>,
    ) -> Rpc<pb::AggregateTestsByTechniqueResponse> {
        let r = request.get_ref();
        let as_of = convert::instant("as_of", r.as_of.as_ref())?;
        let rows = self.workflow.aggregate(&r.technique_ids, as_of).await?;
        Ok(Response::new(convert::aggregates_pb(
            &r.technique_ids,
            rows,
            r.rule_table,
        )))
    }

    async fn get_retest_chain(
        &self,
        request: Request<pb::GetRetestChainRequest>,
    ) -> Rpc<pb::GetRetestChainResponse> {
        let (tests, effective) = self
            .workflow
            .retest_chain(&request.get_ref().test_id)
            .await?;
        Ok(Response::new(pb::GetRetestChainResponse {
            tests: tests_pb(tests),
            effective_test_id: effective.unwrap_or_default(),
        }))
    }

    async fn list_stale_tests(
        &self,
        request: Request<pb::ListStaleTestsRequest>,
    ) -> Rpc<pb::ListStaleTestsResponse> {
        let (older_than, page) = convert::stale_query(request.get_ref())?;
        let (tests, next_page_token) = self.workflow.stale_tests(older_than, &page).await?;
        Ok(Response::new(pb::ListStaleTestsResponse {
            tests: tests_pb(tests),
            next_page_token,
        }))
    }

    async fn create_campaign(
        &self,
        request: Request<pb::CreateCampaignRequest>,
    ) -> Rpc<pb::CreateCampaignResponse> {
        let caller = auth::caller(&request)?;
        let r = request.into_inner();
        let actor = convert::actor(caller, &r.actor_id)?;
        let (campaign, tests) = self
            .campaigns
            .create(
                &actor,
                convert::name("name", r.name)?,
                convert::notes("description", r.description)?,
                convert::new_tests(r.tests),
            )
            .await?;
        Ok(Response::new(pb::CreateCampaignResponse {
            campaign: Some(convert::campaign_pb(campaign)),
            tests: tests_pb(tests),
        }))
    }

    async fn get_campaigns_by_ids(
        &self,
        request: Request<pb::GetCampaignsByIdsRequest>,
    ) -> Rpc<pb::GetCampaignsByIdsResponse> {
        let ids = &request.get_ref().campaign_ids;
        let found = self.campaigns.by_ids(ids).await?;
        let (campaigns, missing_ids) = in_order(ids, found, convert::campaign_pb);
        Ok(Response::new(pb::GetCampaignsByIdsResponse {
            campaigns,
            missing_ids,
        }))
    }

    async fn list_campaigns(
        &self,
        request: Request<pb::ListCampaignsRequest>,
    ) -> Rpc<pb::ListCampaignsResponse> {
        let page = convert::campaign_page(request.get_ref())?;
        let (campaigns, next_page_token) = self.campaigns.list(&page).await?;
        Ok(Response::new(pb::ListCampaignsResponse {
            campaigns: campaigns.into_iter().map(convert::campaign_pb).collect(),
            next_page_token,
        }))
    }

    async fn get_campaign_progress(
        &self,
        request: Request<pb::GetCampaignProgressRequest>,
    ) -> Rpc<pb::GetCampaignProgressResponse> {
        let ids = &request.get_ref().campaign_ids;
        let found = self
            .reports
            .progress(ids)
            .await?
            .into_iter()
            .map(|p| (p.campaign_id.clone(), p))
            .collect();
        let (progress, missing_ids) = in_order(ids, found, convert::progress_pb);
        Ok(Response::new(pb::GetCampaignProgressResponse {
            progress,
            missing_ids,
        }))
    }

    async fn generate_campaign_from_threat_actor(
        &self,
        request: Request<pb::GenerateCampaignFromThreatActorRequest>,
    ) -> Rpc<pb::GenerateCampaignFromThreatActorResponse> {
        let caller = auth::caller(&request)?;
        let r = request.into_inner();
        let actor = convert::actor(caller, &r.actor_id)?;
        let generated = self
            .campaigns
            .generate_from_actor(
                &actor,
                r.threat_actor_id.trim(),
                convert::name("name", r.name)?,
                r.platform,
            )
            .await?;
        Ok(Response::new(pb::GenerateCampaignFromThreatActorResponse {
            campaign: Some(convert::campaign_pb(generated.campaign)),
            tests: tests_pb(generated.tests),
            skipped_technique_ids: generated.skipped,
        }))
    }

    async fn clone_campaign(
        &self,
        request: Request<pb::CloneCampaignRequest>,
    ) -> Rpc<pb::CloneCampaignResponse> {
        let caller = auth::caller(&request)?;
        let r = request.into_inner();
        let actor = convert::actor(caller, &r.actor_id)?;
        let (campaign, tests) = self
            .campaigns
            .clone_campaign(&actor, &r.campaign_id, convert::name("name", r.name)?)
            .await?;
        Ok(Response::new(pb::CloneCampaignResponse {
            campaign: Some(convert::campaign_pb(campaign)),
            tests: tests_pb(tests),
        }))
    }

    async fn set_campaign_schedule(
        &self,
        request: Request<pb::SetCampaignScheduleRequest>,
    ) -> Rpc<pb::SetCampaignScheduleResponse> {
        let caller = auth::caller(&request)?;
        let r = request.into_inner();
        let actor = convert::actor(caller, &r.actor_id)?;
        let (recurrence, first) = convert::schedule(r.schedule)?;
        let campaign = self
            .scheduler
            .set_schedule(&actor, &r.campaign_id, recurrence, first)
            .await?;
        Ok(Response::new(pb::SetCampaignScheduleResponse {
            campaign: Some(convert::campaign_pb(campaign)),
        }))
    }

    async fn run_due_campaigns(
        &self,
        request: Request<pb::RunDueCampaignsRequest>,
    ) -> Rpc<pb::RunDueCampaignsResponse> {
        let now = convert::instant("now", request.get_ref().now.as_ref())?
            .unwrap_or_else(purple_runtime::time::now_micros);
        let (created, notifications) = self.scheduler.run_due(now).await?;
        Ok(Response::new(pb::RunDueCampaignsResponse {
            created: created.into_iter().map(convert::campaign_pb).collect(),
            notifications: notifications as i32,
        }))
    }

    async fn get_campaign_report(
        &self,
        request: Request<pb::GetCampaignReportRequest>,
    ) -> Rpc<pb::GetCampaignReportResponse> {
        let report = self.reports.report(&request.get_ref().campaign_id).await?;
        Ok(Response::new(report.into()))
    }

    async fn list_remediations(
        &self,
        request: Request<pb::ListRemediationsRequest>,
    ) -> Rpc<pb::ListRemediationsResponse> {
        let r = request.get_ref();
        let state = convert::remediation_state("state", r.state)?;
        let page = convert::timed_page(
            r.page_size,
            &r.page_token,
            &format!("{state:?}|{}", r.technique_id),
        )?;
        let (rows, issues, next_page_token) = self
            .people
            .list_remediations(state, &r.technique_id, &page)
            .await?;
        Ok(Response::new(pb::ListRemediationsResponse {
            remediations: rows
                .into_iter()
                .map(|row| convert::remediation_with_issue(row, &issues))
                .collect(),
            next_page_token,
        }))
    }

    async fn transition_remediation(
        &self,
        request: Request<pb::TransitionRemediationRequest>,
    ) -> Rpc<pb::TransitionRemediationResponse> {
        let caller = auth::caller(&request)?;
        let r = request.into_inner();
        let actor = convert::actor(caller, &r.actor_id)?;
        let to = convert::remediation_state("to", r.to)?
            .ok_or_else(|| CampaignError::invalid("to", "required"))?;
        let after = self
            .workflow
            .transition_remediation(
                &r.remediation_id,
                &actor,
                to,
                r.expected_version,
                convert::notes("notes", r.notes)?,
            )
            .await?;
        Ok(Response::new(pb::TransitionRemediationResponse {
            remediation: Some(convert::remediation_pb(after)),
        }))
    }

    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Rpc<pb::ListNotificationsResponse> {
        let caller = auth::caller(&request)?;
        let r = request.get_ref();
        let page = convert::timed_page(
            r.page_size,
            &r.page_token,
            &format!("{}|{}", r.user_id, r.unread_only),
        )?;
        let (rows, next_page_token) = self
            .people
            .list_notifications(&caller, &r.user_id, r.unread_only, &page)
            .await?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: rows.into_iter().map(convert::notification_pb).collect(),
            next_page_token,
        }))
    }

    async fn mark_notifications_read(
        &self,
        request: Request<pb::MarkNotificationsReadRequest>,
    ) -> Rpc<pb::MarkNotificationsReadResponse> {
        let caller = auth::caller(&request)?;
        let r = request.get_ref();
        #[allow(deprecated)]
        let actor = convert::actor(caller, &r.user_id)?;
        let marked = self.people.mark_read(&actor, &r.notification_ids).await?;
        Ok(Response::new(pb::MarkNotificationsReadResponse {
            marked: marked as i32,
        }))
    }

    async fn add_worklog(
        &self,
        request: Request<pb::AddWorklogRequest>,
    ) -> Rpc<pb::AddWorklogResponse> {
        let caller = auth::caller(&request)?;
        let w = request
            .into_inner()
            .worklog
            .ok_or_else(|| CampaignError::invalid("worklog", "required"))?;
        let actor = convert::actor(caller, &w.user_id)?;
        let row = self
            .people
            .add_worklog(
                &actor,
                &w.test_id,
                i64::from(w.minutes),
                convert::notes("worklog.note", w.note)?,
            )
            .await?;
        Ok(Response::new(pb::AddWorklogResponse {
            worklog: Some(convert::worklog_pb(row)),
        }))
    }

    async fn list_worklogs(
        &self,
        request: Request<pb::ListWorklogsRequest>,
    ) -> Rpc<pb::ListWorklogsResponse> {
        let r = request.get_ref();
        let page = convert::timed_page(
            r.page_size,
            &r.page_token,
            &format!("{}|{}", r.test_id, r.user_id),
        )?;
        let (rows, total_minutes, next_page_token) = self
            .people
            .list_worklogs(&r.test_id, &r.user_id, &page)
            .await?;
        Ok(Response::new(pb::ListWorklogsResponse {
            worklogs: rows.into_iter().map(convert::worklog_pb).collect(),
            total_minutes,
            next_page_token,
        }))
    }

    async fn notify_regressions(
        &self,
        request: Request<pb::NotifyRegressionsRequest>,
    ) -> Rpc<pb::NotifyRegressionsResponse> {
        let regressions = convert::regressions(&request.get_ref().regressions)?;
        let notified = self.people.notify_regressions(&regressions).await?;
        Ok(Response::new(pb::NotifyRegressionsResponse {
            notified: notified as i32,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Rpc<pb::ListDeadLettersResponse> {
        let page = convert::dead_letter_page(request.get_ref())?;
        let (rows, next_page_token) = self.relay.dead_letters(&page).await?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: rows.into_iter().map(convert::dead_letter_pb).collect(),
            next_page_token,
        }))
    }

    async fn get_detection_results(
        &self,
        request: Request<pb::GetDetectionResultsRequest>,
    ) -> Rpc<pb::GetDetectionResultsResponse> {
        let ids = &request.get_ref().test_ids;
        let (results, missing_ids) = self.workflow.detection_results(ids).await?;
        Ok(Response::new(pb::GetDetectionResultsResponse {
            results: results.into_iter().map(convert::result_pb).collect(),
            missing_ids,
        }))
    }

    async fn import_history(
        &self,
        request: Request<Streaming<pb::ImportHistoryRequest>>,
    ) -> Rpc<pb::ImportHistoryResponse> {
        // Its own task: a client that vanishes mid-upload drops this
        // handler, and the import still sees the broken stream.
        let history = self.history.clone();
        let stream = request
            .into_inner()
            .map(|chunk| chunk.map(convert::history_chunk));
        let run = tokio::spawn(
            async move { history.import(stream).await }.instrument(tracing::Span::current()),
        );
        let report = match run.await {
            Ok(report) => report?,
            Err(e) => return Err(CampaignError::Internal(format!("import task: {e}")).into()),
        };
        Ok(Response::new(convert::history_report_pb(report)))
    }

    type ExportHistoryStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::ExportHistoryResponse, Status>> + Send>,
    >;

    async fn export_history(
        &self,
        _request: Request<pb::ExportHistoryRequest>,
    ) -> Rpc<Self::ExportHistoryStream> {
        let stream = self.history.export().map(|chunk| {
            chunk
                .map(|data| pb::ExportHistoryResponse { data })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
