//! gRPC handlers of the campaigns service: validate, delegate to the
//! workflow or the store, convert back.

use std::collections::BTreeMap;

use purple_api::{
    batch::{check_batch_len, in_request_order},
    campaigns::v1::{self as pb, campaigns_service_server::CampaignsService},
    common::v1::{Outcome, Role},
};
use purple_runtime::{
    ServiceContext,
    paging::Page,
    time::{MICROS_PER_DAY, now_micros, timestamp_opt},
};
use tonic::{Request, Response, Status};

use crate::{
    convert::*,
    domain::{DetectionResult, Input, role_key},
    error::CampaignError,
    planner::{Recurrence, percent_complete},
    report,
    store::{
        CampaignStore,
        people::{UserRow, WorklogRow},
    },
    workflow::{NewTest, Workflow, new_id},
};

/// The campaigns gRPC API.
pub struct CampaignsApi {
    workflow: Workflow,
    store: CampaignStore,
    stale_after_days: u32,
}

impl CampaignsApi {
    /// The API over a service context and its workflow.
    pub fn new(ctx: &ServiceContext, workflow: Workflow) -> Self {
        Self {
            store: workflow.store.clone(),
            workflow,
            stale_after_days: ctx.settings.domain.stale_test_days,
        }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}

fn new_test(t: pb::NewTest) -> NewTest {
    NewTest {
        technique_id: t.technique_id.trim().to_ascii_uppercase(),
        template_id: t.template_id,
        campaign_id: Some(t.campaign_id).filter(|c| !c.is_empty()),
        title: t.title,
        red_assignee_id: t.red_assignee_id,
        blue_assignee_id: t.blue_assignee_id,
    }
}

fn results(results: Vec<pb::DetectionResult>) -> Result<Vec<DetectionResult>, CampaignError> {
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(DetectionResult {
                triggered_at: instant(
                    &format!("results[{i}].triggered_at"),
                    r.triggered_at.as_ref(),
                )?,
                test_id: r.test_id,
                rule_id: r.rule_id,
                triggered: r.triggered,
                notes: r.notes,
            })
        })
        .collect()
}

#[tonic::async_trait]
impl CampaignsService for CampaignsApi {
    async fn create_users(
        &self,
        request: Request<pb::CreateUsersRequest>,
    ) -> Rpc<pb::CreateUsersResponse> {
        let request = request.into_inner();
        check_batch_len("users", request.users.len()).map_err(CampaignError::from)?;
        let (count, role) = self
            .store
            .user_count_and_role(&request.actor_id)
            .await
            .map_err(CampaignError::from)?;
        // Anyone may create the first users; afterwards only an admin.
        if count > 0 && role.as_deref() != Some("admin") {
            return Err(
                CampaignError::Forbidden("creating users needs the role admin".into()).into(),
            );
        }
        let now = now_micros();
        let users = request
            .users
            .into_iter()
            .enumerate()
            .map(|(i, u)| {
                let role = role_key(Role::try_from(u.role).unwrap_or(Role::Unspecified))
                    .ok_or_else(|| {
                        CampaignError::invalid(format!("users[{i}].role"), "required")
                    })?;
                if u.display_name.trim().is_empty() {
                    return Err(CampaignError::invalid(
                        format!("users[{i}].display_name"),
                        "required",
                    ));
                }
                Ok(UserRow {
                    user_id: new_id(),
                    display_name: u.display_name,
                    role: role.into(),
                    created_at: now,
                })
            })
            .collect::<Result<Vec<_>, CampaignError>>()?;
        self.store
            .insert_users(&users)
            .await
            .map_err(CampaignError::from)?;
        ok(pb::CreateUsersResponse {
            users: users.into_iter().map(user_pb).collect(),
        })
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Rpc<pb::ListUsersResponse> {
        let request = request.into_inner();
        let page = Page::parse(request.page_size, &request.page_token, 100)
            .map_err(CampaignError::from)?;
        let role =
            role_key(Role::try_from(request.role).unwrap_or(Role::Unspecified)).unwrap_or("");
        let mut users = self
            .store
            .list_users(role, page)
            .await
            .map_err(CampaignError::from)?;
        let next_page_token = page.finish(&mut users);
        ok(pb::ListUsersResponse {
            users: users.into_iter().map(user_pb).collect(),
            next_page_token,
        })
    }

    async fn create_tests(
        &self,
        request: Request<pb::CreateTestsRequest>,
    ) -> Rpc<pb::CreateTestsResponse> {
        let request = request.into_inner();
        let tests = self
            .workflow
            .create_tests(
                &request.actor_id,
                request.tests.into_iter().map(new_test).collect(),
            )
            .await?;
        ok(pb::CreateTestsResponse {
            tests: tests.into_iter().map(test_pb).collect(),
        })
    }

    async fn get_tests_by_ids(
        &self,
        request: Request<pb::GetTestsByIdsRequest>,
    ) -> Rpc<pb::GetTestsByIdsResponse> {
        let request = request.into_inner();
        check_batch_len("test_ids", request.test_ids.len()).map_err(CampaignError::from)?;
        let found = self
            .store
            .tests_by_ids(&request.test_ids)
            .await
            .map_err(CampaignError::from)?;
        let (tests, missing_ids) = in_request_order(&request.test_ids, &found);
        ok(pb::GetTestsByIdsResponse {
            tests: tests.into_iter().map(test_pb).collect(),
            missing_ids,
        })
    }

    async fn list_tests(
        &self,
        request: Request<pb::ListTestsRequest>,
    ) -> Rpc<pb::ListTestsResponse> {
        let r = request.into_inner();
        let page = Page::parse(r.page_size, &r.page_token, 100).map_err(CampaignError::from)?;
        let state = pb::TestState::try_from(r.state)
            .ok()
            .and_then(state_of_pb)
            .map_or("", |s| s.key());
        let mut tests = self
            .store
            .list_tests(&r.technique_id, state, &r.campaign_id, &r.assignee_id, page)
            .await
            .map_err(CampaignError::from)?;
        let next_page_token = page.finish(&mut tests);
        ok(pb::ListTestsResponse {
            tests: tests.into_iter().map(test_pb).collect(),
            next_page_token,
        })
    }

    async fn transition_test(
        &self,
        request: Request<pb::TransitionTestRequest>,
    ) -> Rpc<pb::TransitionTestResponse> {
        let r = request.into_inner();
        let action = action_of_pb(r.action)?;
        let input = Input {
            executed_at: instant("executed_at", r.executed_at.as_ref())?,
            outcome: Outcome::try_from(r.outcome).unwrap_or(Outcome::Unspecified),
            detected_at: instant("detected_at", r.detected_at.as_ref())?,
            notes: r.notes,
            reason: r.reason,
            results: results(r.detection_results)?,
        };
        let done = self
            .workflow
            .transition(&r.test_id, action, &r.actor_id, r.expected_version, input)
            .await?;
        ok(pb::TransitionTestResponse {
            test: Some(test_pb(done.test)),
            retest: done.retest.map(test_pb),
            remediation: done.remediation.map(remediation_pb),
        })
    }

    async fn record_detection_results(
        &self,
        request: Request<pb::RecordDetectionResultsRequest>,
    ) -> Rpc<pb::RecordDetectionResultsResponse> {
        let r = request.into_inner();
        let recorded = self
            .workflow
            .record_results(&r.actor_id, results(r.results)?)
            .await?;
        ok(pb::RecordDetectionResultsResponse {
            recorded: recorded as i32,
        })
    }

    async fn aggregate_tests_by_technique(
        &self,
        request: Request<pb::AggregateTestsByTechniqueRequest>,
    ) -> Rpc<pb::AggregateTestsByTechniqueResponse> {
        let r = request.into_inner();
        check_batch_len("technique_ids", r.technique_ids.len()).map_err(CampaignError::from)?;
        let as_of = instant("as_of", r.as_of.as_ref())?;
        let rows = self
            .store
            .aggregate(&r.technique_ids, as_of)
            .await
            .map_err(CampaignError::from)?;
        let found: BTreeMap<String, pb::TechniqueTestAggregate> = rows
            .into_iter()
            .map(|a| {
                (
                    a.technique_id.clone(),
                    pb::TechniqueTestAggregate {
                        technique_id: a.technique_id,
                        total_tests: a.total as i32,
                        validated_tests: a.validated as i32,
                        cancelled_tests: a.cancelled as i32,
                        effective_tests: a.effective as i32,
                        blocked: a.blocked as i32,
                        detected: a.detected as i32,
                        logged: a.logged as i32,
                        not_detected: a.not_detected as i32,
                        latest_validated_at: timestamp_opt(a.latest_validated_at),
                        triggered_rule_ids: a.triggered_rule_ids,
                    },
                )
            })
            .collect();
        let (aggregates, _) = in_request_order(&r.technique_ids, &found);
        ok(pb::AggregateTestsByTechniqueResponse { aggregates })
    }

    async fn get_retest_chain(
        &self,
        request: Request<pb::GetRetestChainRequest>,
    ) -> Rpc<pb::GetRetestChainResponse> {
        let r = request.into_inner();
        let (tests, effective) = self
            .store
            .retest_chain(&r.test_id)
            .await
            .map_err(CampaignError::from)?;
        if tests.is_empty() {
            return Err(
                CampaignError::NotFound(format!("test {} does not exist", r.test_id)).into(),
            );
        }
        ok(pb::GetRetestChainResponse {
            tests: tests.into_iter().map(test_pb).collect(),
            effective_test_id: effective.unwrap_or_default(),
        })
    }

    async fn list_stale_tests(
        &self,
        request: Request<pb::ListStaleTestsRequest>,
    ) -> Rpc<pb::ListStaleTestsResponse> {
        let r = request.into_inner();
        let page = Page::parse(r.page_size, &r.page_token, 100).map_err(CampaignError::from)?;
        let older_than = instant("older_than", r.older_than.as_ref())?
            .unwrap_or_else(|| now_micros() - i64::from(self.stale_after_days) * MICROS_PER_DAY);
        let mut tests = self
            .store
            .stale_tests(older_than, page)
            .await
            .map_err(CampaignError::from)?;
        let next_page_token = page.finish(&mut tests);
        ok(pb::ListStaleTestsResponse {
            tests: tests.into_iter().map(test_pb).collect(),
            next_page_token,
        })
    }

    async fn create_campaign(
        &self,
        request: Request<pb::CreateCampaignRequest>,
    ) -> Rpc<pb::CreateCampaignResponse> {
        let r = request.into_inner();
        let (campaign, tests) = self
            .workflow
            .create_campaign(
                &r.actor_id,
                r.name,
                r.description,
                r.tests.into_iter().map(new_test).collect(),
            )
            .await?;
        ok(pb::CreateCampaignResponse {
            campaign: Some(campaign_pb(campaign)),
            tests: tests.into_iter().map(test_pb).collect(),
        })
    }

    async fn get_campaigns_by_ids(
        &self,
        request: Request<pb::GetCampaignsByIdsRequest>,
    ) -> Rpc<pb::GetCampaignsByIdsResponse> {
        let r = request.into_inner();
        check_batch_len("campaign_ids", r.campaign_ids.len()).map_err(CampaignError::from)?;
        let found = self
            .store
            .campaigns_by_ids(&r.campaign_ids)
            .await
            .map_err(CampaignError::from)?;
        let (campaigns, missing_ids) = in_request_order(&r.campaign_ids, &found);
        ok(pb::GetCampaignsByIdsResponse {
            campaigns: campaigns.into_iter().map(campaign_pb).collect(),
            missing_ids,
        })
    }

    async fn list_campaigns(
        &self,
        request: Request<pb::ListCampaignsRequest>,
    ) -> Rpc<pb::ListCampaignsResponse> {
        let r = request.into_inner();
        let page = Page::parse(r.page_size, &r.page_token, 100).map_err(CampaignError::from)?;
        let mut campaigns = self
            .store
            .list_campaigns(page)
            .await
            .map_err(CampaignError::from)?;
        let next_page_token = page.finish(&mut campaigns);
        ok(pb::ListCampaignsResponse {
            campaigns: campaigns.into_iter().map(campaign_pb).collect(),
            next_page_token,
        })
    }

    async fn get_campaign_progress(
        &self,
        request: Request<pb::GetCampaignProgressRequest>,
    ) -> Rpc<pb::GetCampaignProgressResponse> {
        let r = request.into_inner();
        check_batch_len("campaign_ids", r.campaign_ids.len()).map_err(CampaignError::from)?;
        let counts = self
            .store
            .progress(&r.campaign_ids)
            .await
            .map_err(CampaignError::from)?;
        let found: BTreeMap<String, pb::CampaignProgress> = counts
            .into_iter()
            .map(|(campaign_id, rows)| {
                let progress = pb::CampaignProgress {
                    total: rows.iter().map(|(_, _, n)| *n as i32).sum(),
                    by_state: tally(rows.iter().map(|(s, _, n)| (s.as_str(), *n))),
                    by_outcome: tally(
                        rows.iter()
                            .filter_map(|(_, o, n)| o.as_deref().map(|o| (o, *n))),
                    ),
                    percent_complete: percent_complete(&rows),
                    campaign_id: campaign_id.clone(),
                };
                (campaign_id, progress)
            })
            .collect();
        let (progress, missing_ids) = in_request_order(&r.campaign_ids, &found);
        ok(pb::GetCampaignProgressResponse {
            progress,
            missing_ids,
        })
    }

    async fn generate_campaign_from_threat_actor(
        &self,
        request: Request<pb::GenerateCampaignFromThreatActorRequest>,
    ) -> Rpc<pb::GenerateCampaignFromThreatActorResponse> {
        let r = request.into_inner();
        let generated = self
            .workflow
            .generate_from_actor(&r.actor_id, r.threat_actor_id.trim(), r.name, r.platform)
            .await?;
        ok(pb::GenerateCampaignFromThreatActorResponse {
            campaign: Some(campaign_pb(generated.campaign)),
            tests: generated.tests.into_iter().map(test_pb).collect(),
            skipped_technique_ids: generated.skipped,
        })
    }

    async fn clone_campaign(
        &self,
        request: Request<pb::CloneCampaignRequest>,
    ) -> Rpc<pb::CloneCampaignResponse> {
        let r = request.into_inner();
        let (campaign, tests) = self
            .workflow
            .clone_campaign(&r.actor_id, &r.campaign_id, r.name)
            .await?;
        ok(pb::CloneCampaignResponse {
            campaign: Some(campaign_pb(campaign)),
            tests: tests.into_iter().map(test_pb).collect(),
        })
    }

    async fn set_campaign_schedule(
        &self,
        request: Request<pb::SetCampaignScheduleRequest>,
    ) -> Rpc<pb::SetCampaignScheduleResponse> {
        let r = request.into_inner();
        let (recurrence, first) = match r.schedule {
            None => (None, None),
            Some(s) => (
                Some(Recurrence::parse(s.interval_seconds, &s.cron)?),
                instant("schedule.next_run_at", s.next_run_at.as_ref())?,
            ),
        };
        let campaign = self
            .workflow
            .set_schedule(&r.actor_id, &r.campaign_id, recurrence, first)
            .await?;
        ok(pb::SetCampaignScheduleResponse {
            campaign: Some(campaign_pb(campaign)),
        })
    }

    async fn run_due_campaigns(
        &self,
        request: Request<pb::RunDueCampaignsRequest>,
    ) -> Rpc<pb::RunDueCampaignsResponse> {
        let r = request.into_inner();
        let now = instant("now", r.now.as_ref())?.unwrap_or_else(now_micros);
        let (created, notifications) = self.workflow.run_due(now).await?;
        ok(pb::RunDueCampaignsResponse {
            created: created.into_iter().map(campaign_pb).collect(),
            notifications: notifications as i32,
        })
    }

    async fn get_campaign_report(
        &self,
        request: Request<pb::GetCampaignReportRequest>,
    ) -> Rpc<pb::GetCampaignReportResponse> {
        let r = request.into_inner();
        let (campaign, rows) = self.workflow.report(&r.campaign_id).await?;
        ok(report::build(campaign, rows))
    }

    async fn list_remediations(
        &self,
        request: Request<pb::ListRemediationsRequest>,
    ) -> Rpc<pb::ListRemediationsResponse> {
        let r = request.into_inner();
        let page = Page::parse(r.page_size, &r.page_token, 100).map_err(CampaignError::from)?;
        let mut rows = self
            .store
            .list_remediations(remediation_state_key(r.state), &r.technique_id, page)
            .await
            .map_err(CampaignError::from)?;
        let next_page_token = page.finish(&mut rows);
        ok(pb::ListRemediationsResponse {
            remediations: rows.into_iter().map(remediation_pb).collect(),
            next_page_token,
        })
    }

    async fn transition_remediation(
        &self,
        request: Request<pb::TransitionRemediationRequest>,
    ) -> Rpc<pb::TransitionRemediationResponse> {
        let r = request.into_inner();
        let to = remediation_state_key(r.to);
        if to.is_empty() {
            return Err(CampaignError::invalid("to", "required").into());
        }
        let after = self
            .workflow
            .transition_remediation(
                &r.remediation_id,
                &r.actor_id,
                to,
                r.expected_version,
                r.notes,
            )
            .await?;
        ok(pb::TransitionRemediationResponse {
            remediation: Some(remediation_pb(after)),
        })
    }

    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Rpc<pb::ListNotificationsResponse> {
        let r = request.into_inner();
        if r.user_id.is_empty() {
            return Err(CampaignError::invalid("user_id", "required").into());
        }
        let page = Page::parse(r.page_size, &r.page_token, 100).map_err(CampaignError::from)?;
        let mut rows = self
            .store
            .list_notifications(&r.user_id, r.unread_only, page)
            .await
            .map_err(CampaignError::from)?;
        let next_page_token = page.finish(&mut rows);
        ok(pb::ListNotificationsResponse {
            notifications: rows.into_iter().map(notification_pb).collect(),
            next_page_token,
        })
    }

    async fn mark_notifications_read(
        &self,
        request: Request<pb::MarkNotificationsReadRequest>,
    ) -> Rpc<pb::MarkNotificationsReadResponse> {
        let r = request.into_inner();
        check_batch_len("notification_ids", r.notification_ids.len())
            .map_err(CampaignError::from)?;
        let marked = self
            .store
            .mark_read(&r.user_id, &r.notification_ids)
            .await
            .map_err(CampaignError::from)?;
        ok(pb::MarkNotificationsReadResponse {
            marked: marked as i32,
        })
    }

    async fn add_worklog(
        &self,
        request: Request<pb::AddWorklogRequest>,
    ) -> Rpc<pb::AddWorklogResponse> {
        let w = request
            .into_inner()
            .worklog
            .ok_or_else(|| CampaignError::invalid("worklog", "required"))?;
        if w.minutes <= 0 {
            return Err(CampaignError::invalid("worklog.minutes", "must be positive").into());
        }
        self.workflow.role(&w.user_id).await?;
        let row = WorklogRow {
            worklog_id: new_id(),
            test_id: w.test_id,
            user_id: w.user_id,
            minutes: i64::from(w.minutes),
            note: w.note,
            logged_at: now_micros(),
        };
        if !self
            .store
            .insert_worklog(&row)
            .await
            .map_err(CampaignError::from)?
        {
            return Err(
                CampaignError::NotFound(format!("test {} does not exist", row.test_id)).into(),
            );
        }
        ok(pb::AddWorklogResponse {
            worklog: Some(worklog_pb(row)),
        })
    }

    async fn list_worklogs(
        &self,
        request: Request<pb::ListWorklogsRequest>,
    ) -> Rpc<pb::ListWorklogsResponse> {
        let r = request.into_inner();
        let page = Page::parse(r.page_size, &r.page_token, 100).map_err(CampaignError::from)?;
        let (mut rows, total_minutes) = self
            .store
            .list_worklogs(&r.test_id, &r.user_id, page)
            .await
            .map_err(CampaignError::from)?;
        let next_page_token = page.finish(&mut rows);
        ok(pb::ListWorklogsResponse {
            worklogs: rows.into_iter().map(worklog_pb).collect(),
            total_minutes,
            next_page_token,
        })
    }
}
