//! A local Jira and Tempo for the integration tests: an HTTP server that
//! implements the endpoints Purple calls with the request and response
//! shapes of the published documentation (Jira Cloud REST v3 / Data Center
//! v2: "Create issue" POST /rest/api/{3,2}/issue → 201 {id, key, self};
//! "Transition issue" POST …/issue/{key}/transitions → 204, 404 for an
//! issue that does not exist, 400 for a transition it does not offer; "Add
//! comment" POST …/issue/{key}/comment → 201; "Search for issues using
//! JQL" POST /rest/api/3/search/jql (v2: /rest/api/2/search) → {issues};
//! Tempo v4 "Create worklog" POST /4/worklogs → 200 {tempoWorklogId, …} and
//! "Retrieve worklogs associated to an issue" GET /4/worklogs/issue/{id} →
//! {results}). It checks credentials (401 otherwise), can be taken down and
//! brought back on the same port, can answer the next calls with injected
//! failures (500, 429 with Retry-After), and can hold an answer back.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Bytes};
use serde_json::{Value, json};

/// The transitions the fake offers: id → the status it leads to.
pub const START: &str = "21";
pub const DONE: &str = "31";

#[derive(Clone, Debug, Default)]
pub struct Issue {
    pub id: u64,
    pub key: String,
    pub labels: Vec<String>,
    pub status: String,
    pub comments: Vec<Value>,
    pub summary: String,
    pub description: Value,
}

#[derive(Clone, Debug, Default)]
pub struct Worklog {
    pub tempo_id: u64,
    pub issue_id: u64,
    pub description: String,
    pub seconds: i64,
    pub author: String,
}

#[derive(Default)]
pub struct State {
    pub issues: Vec<Issue>,
    pub worklogs: Vec<Worklog>,
    pub requests: Vec<String>,
    /// When each request arrived, and the status injected into it.
    pub arrivals: Vec<(std::time::Instant, Option<u16>)>,
    /// Answers for the next calls, before any other handling.
    pub inject: VecDeque<(u16, Option<u64>)>,
    /// Hold the answer to the next worklog creation this long (after
    /// storing it).
    pub hold_next_worklog: Option<Duration>,
}

/// The fake, with its port and state.
#[derive(Clone)]
pub struct Atlassian {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    server: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

pub const EMAIL: &str = "bot@example.org";
pub const API_TOKEN: &str = "jira-token-123";
pub const TEMPO_TOKEN: &str = "tempo-token-456";
/// A Data Center personal access token.
pub const PAT: &str = "dc-pat-789";

impl Atlassian {
    /// Listening on a free port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Self {
            addr,
            state: Arc::default(),
            server: Arc::default(),
        };
        fake.serve(listener);
        fake
    }

    /// Not listening, connections dropped (the port is kept).
    pub fn stop(&self) {
        if let Some(task) = self.server.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listening again on the same port.
    pub async fn resume(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn issues(&self) -> Vec<Issue> {
        self.state.lock().unwrap().issues.clone()
    }

    pub fn worklogs(&self) -> Vec<Worklog> {
        self.state.lock().unwrap().worklogs.clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let state = self.state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        *self.server.lock().unwrap() = Some(task);
    }
}

fn answer(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    })));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

fn errors(message: &str) -> Value {
    json!({"errorMessages": [message], "errors": {}})
}

async fn handle(
    state: &Arc<Mutex<State>>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let auth = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    {
        let mut s = state.lock().unwrap();
        s.requests.push(format!("{method} {path}"));
        let injected = s.inject.pop_front();
        s.arrivals.push((
            std::time::Instant::now(),
            injected.map(|(status, _)| status),
        ));
        if let Some((status, retry_after)) = injected {
            let mut response = answer(status, errors("injected"));
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.to_string().parse().unwrap());
            }
            return response;
        }
    }
    if let Some(rest) = path.strip_prefix("/4/") {
        if auth != format!("Bearer {TEMPO_TOKEN}") {
            return answer(401, json!({"errors": [{"message": "unauthorized"}]}));
        }
        return tempo(state, &method, rest, &body).await;
    }
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{EMAIL}:{API_TOKEN}")
        )
    );
    if auth != basic && auth != format!("Bearer {PAT}") {
        return answer(
            401,
            errors("Client must be authenticated to access this resource."),
        );
    }
    let Some(rest) = path
        .strip_prefix("/rest/api/3/")
        .or_else(|| path.strip_prefix("/rest/api/2/"))
    else {
        return answer(404, errors("no such resource"));
    };
    jira(state, rest, &body)
}

fn jira(state: &Arc<Mutex<State>>, rest: &str, body: &Value) -> Response<Full<Bytes>> {
    let mut s = state.lock().unwrap();
    if rest == "issue" {
        let fields = &body["fields"];
        if fields["project"]["key"].as_str().is_none_or(str::is_empty)
            || fields["summary"].as_str().is_none_or(str::is_empty)
            || fields["issuetype"]["name"].as_str().is_none()
        {
            return answer(
                400,
                json!({"errorMessages": [], "errors": {"summary": "required"}}),
            );
        }
        let id = 10_000 + s.issues.len() as u64;
        let key = format!(
            "{}-{}",
            fields["project"]["key"].as_str().unwrap(),
            s.issues.len() + 1
        );
        s.issues.push(Issue {
            id,
            key: key.clone(),
            labels: fields["labels"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect(),
            status: "To Do".into(),
            comments: Vec::new(),
            summary: fields["summary"].as_str().unwrap().to_owned(),
            description: fields["description"].clone(),
        });
        return answer(
            201,
            json!({"id": id.to_string(), "key": key, "self": format!("https://jira/rest/api/3/issue/{id}")}),
        );
    }
    if rest == "search/jql" || rest == "search" {
        let jql = body["jql"].as_str().unwrap_or("");
        let wanted = |i: &Issue| {
            if let Some(label) = jql.strip_prefix("labels = ") {
                i.labels.iter().any(|l| format!("\"{l}\"") == label)
            } else if let Some(keys) = jql.strip_prefix("key in (") {
                keys.trim_end_matches(')')
                    .split(", ")
                    .any(|k| k.trim_matches('"') == i.key)
            } else {
                false
            }
        };
        let issues: Vec<Value> = s
            .issues
            .iter()
            .filter(|i| wanted(i))
            .map(|i| json!({"id": i.id.to_string(), "key": i.key, "fields": {"status": {"name": i.status}}}))
            .collect();
        return answer(200, json!({"issues": issues, "isLast": true}));
    }
    let Some((key, action)) = rest.strip_prefix("issue/").and_then(|r| r.split_once('/')) else {
        return answer(404, errors("no such resource"));
    };
    let Some(issue) = s.issues.iter_mut().find(|i| i.key == key) else {
        return answer(
            404,
            errors("Issue does not exist or you do not have permission to see it."),
        );
    };
    match action {
        "transitions" => {
            let to = match body["transition"]["id"].as_str() {
                Some(START) if issue.status == "To Do" => "In Progress",
                Some(DONE) if issue.status != "Done" => "Done",
                _ => {
                    return answer(
                        400,
                        errors(
                            "It seems that you have tried to perform a workflow operation that is not valid",
                        ),
                    );
                }
            };
            issue.status = to.into();
            answer(204, Value::Null)
        }
        "comment" => {
            issue.comments.push(body["body"].clone());
            answer(201, json!({"id": issue.comments.len().to_string()}))
        }
        _ => answer(404, errors("no such resource")),
    }
}

async fn tempo(
    state: &Arc<Mutex<State>>,
    method: &hyper::Method,
    rest: &str,
    body: &Value,
) -> Response<Full<Bytes>> {
    if method == hyper::Method::GET {
        let Some(issue) = rest.strip_prefix("worklogs/issue/") else {
            return answer(404, Value::Null);
        };
        let issue: u64 = issue.parse().unwrap_or(0);
        let s = state.lock().unwrap();
        let results: Vec<Value> = s
            .worklogs
            .iter()
            .filter(|w| w.issue_id == issue)
            .map(|w| json!({"tempoWorklogId": w.tempo_id, "issue": {"id": w.issue_id}, "description": w.description, "timeSpentSeconds": w.seconds}))
            .collect();
        return answer(
            200,
            json!({"metadata": {"count": results.len()}, "results": results}),
        );
    }
    if rest != "worklogs" {
        return answer(404, Value::Null);
    }
    let (Some(issue), Some(seconds), Some(_), Some(author)) = (
        body["issueId"].as_u64(),
        body["timeSpentSeconds"].as_i64(),
        body["startDate"].as_str(),
        body["authorAccountId"].as_str(),
    ) else {
        return answer(
            400,
            json!({"errors": [{"message": "issueId, timeSpentSeconds, startDate and authorAccountId are required"}]}),
        );
    };
    let (created, hold) = {
        let mut s = state.lock().unwrap();
        let tempo_id = 1 + s.worklogs.len() as u64;
        let w = Worklog {
            tempo_id,
            issue_id: issue,
            description: body["description"].as_str().unwrap_or("").to_owned(),
            seconds,
            author: author.to_owned(),
        };
        s.worklogs.push(w);
        (tempo_id, s.hold_next_worklog.take())
    };
    if let Some(hold) = hold {
        tokio::time::sleep(hold).await;
    }
    answer(
        200,
        json!({"tempoWorklogId": created, "issue": {"id": issue}, "timeSpentSeconds": seconds, "description": body["description"]}),
    )
}
