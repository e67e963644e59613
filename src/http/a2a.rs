//! The A2A 1.0 door: an agent card per agent and the JSON-RPC binding (`SendMessage`,
//! `SendStreamingMessage`, `GetTask`, `ListTasks`, `CancelTask`, `SubscribeToTask`).
//!
//! A task is a run: its id is the run id, its `contextId` names the session `a2a:<contextId>`,
//! and its state follows the run (`SUBMITTED` while queued, `WORKING`, `INPUT_REQUIRED` while
//! an approval waits, then `COMPLETED`, `CANCELED` or `FAILED`). Payloads are proto3 JSON as the
//! official SDKs send and read them; errors are JSON-RPC errors with A2A's codes only.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::agent::approvals::{Resolution, Resolver};
use crate::agent::{AgentError, SendRequest};
use crate::events::{Delivery, Filter, Subscriber};
use crate::gateway::Gateway;
use crate::protocol::{ApprovalDecision, ChatEvent, Event, RunOutcome, RunPhase, SendMode};
use crate::rpc::Scope;
use crate::rpc::http::{Body, Reply, event_stream, json_response, whole};
use crate::rpc::server::{AuthFailure, DoorMeta, authenticate};

/// The protocol version this door speaks.
pub const PROTOCOL_VERSION: &str = "1.0";
/// The prefix of the sessions of A2A contexts.
pub const SESSION_PREFIX: &str = "a2a:";
/// The card path of the default agent (and, under `/a2a/<agentId>`, of each agent).
const CARD_PATH: &str = "/.well-known/agent-card.json";
/// How many tasks `ListTasks` remembers (the oldest forgotten first).
const REMEMBERED_TASKS: usize = 10_000;
/// Streamed updates buffered for a slow client before the reader waits for it.
const STREAM_BUFFER: usize = 256;

/// A2A's JSON-RPC error codes (the JSON-RPC ones and A2A's own).
mod codes {
    pub const PARSE: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL: i64 = -32603;
    pub const TASK_NOT_FOUND: i64 = -32001;
    pub const TASK_NOT_CANCELABLE: i64 = -32002;
    pub const PUSH_NOT_SUPPORTED: i64 = -32003;
    pub const UNSUPPORTED_OPERATION: i64 = -32004;
    pub const CONTENT_TYPE_NOT_SUPPORTED: i64 = -32005;
    pub const EXTENDED_CARD_NOT_CONFIGURED: i64 = -32007;
    pub const VERSION_NOT_SUPPORTED: i64 = -32009;
}

/// A JSON-RPC error of this door.
#[derive(Debug)]
struct RpcError {
    code: i64,
    message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<AgentError> for RpcError {
    fn from(err: AgentError) -> Self {
        let code = match &err {
            AgentError::NoSuchRun(_) => codes::TASK_NOT_FOUND,
            AgentError::NoSuchAgent(_) | AgentError::Store(_) => codes::INVALID_PARAMS,
            AgentError::RunActive { .. } => codes::UNSUPPORTED_OPERATION,
            _ => codes::INTERNAL,
        };
        Self::new(code, err.to_string())
    }
}

/// The tasks started through this door, newest last: what `ListTasks` lists.
#[derive(Default)]
pub struct Tasks {
    inner: Mutex<VecDeque<TaskRef>>,
}

/// One remembered task.
#[derive(Clone)]
struct TaskRef {
    run_id: String,
    context_id: String,
    agent: String,
}

impl Tasks {
    fn remember(&self, task: TaskRef) {
        if let Ok(mut inner) = self.inner.lock() {
            if inner.iter().any(|t| t.run_id == task.run_id) {
                return;
            }
            if inner.len() >= REMEMBERED_TASKS {
                inner.pop_front();
            }
            inner.push_back(task);
        }
    }

    fn snapshot(&self) -> Vec<TaskRef> {
        self.inner
            .lock()
            .map(|i| i.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Serves one request of the A2A door.
pub async fn serve(gw: Arc<Gateway>, req: Request<Incoming>, meta: DoorMeta) -> Response<Reply> {
    let path = req.uri().path().to_string();
    if path == CARD_PATH {
        let agent = gw.config().default_agent_id().to_string();
        return whole(card_response(&gw, &req, &agent));
    }
    if let Some(rest) = path.strip_prefix("/a2a/") {
        if let Some(agent) = rest.strip_suffix(CARD_PATH) {
            return whole(card_response(&gw, &req, agent));
        }
        let agent = rest.trim_end_matches('/');
        if !agent.is_empty() && !agent.contains('/') {
            return rpc(gw, req, meta, agent.to_string()).await;
        }
    }
    whole(not_found(&path))
}

fn not_found(path: &str) -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"error": {"kind": "not_found", "message": format!("no A2A route {path}: cards are at /.well-known/agent-card.json and /a2a/<agentId>/.well-known/agent-card.json, JSON-RPC at POST /a2a/<agentId>")}}).to_string(),
    )
}

/// The base URL the cards announce: `http.a2a.public_url`, else the request's scheme and Host.
fn base_url(gw: &Gateway, req: &Request<Incoming>) -> String {
    if let Some(url) = gw.config().http.a2a.public_url.as_deref() {
        return url.trim_end_matches('/').to_string();
    }
    let scheme = if gw.tls_fingerprint().is_some() {
        "https"
    } else {
        "http"
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| gw.local_addr().map(|a| a.to_string()))
        .unwrap_or_else(|| "127.0.0.1".into());
    format!("{scheme}://{host}")
}

/// `GET` an agent card (no token needed: it says how to authenticate).
fn card_response(gw: &Gateway, req: &Request<Incoming>, agent: &str) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": {"kind": "invalid_request", "message": "GET the agent card"}})
                .to_string(),
        );
    }
    let config = gw.config();
    let Some(agent_config) = config.agent(agent) else {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"error": {"kind": "not_found", "message": format!("no agent `{agent}`")}})
                .to_string(),
        );
    };
    let base = base_url(gw, req);
    let description = agent_config
        .instructions
        .as_deref()
        .map(|i| i.chars().take(200).collect::<String>())
        .unwrap_or_else(|| format!("The clawgate agent `{agent}`."));
    let mut card = json!({
        "name": agent,
        "description": description,
        "version": env!("CARGO_PKG_VERSION"),
        "supportedInterfaces": [{
            "url": format!("{base}/a2a/{agent}"),
            "protocolBinding": "JSONRPC",
            "protocolVersion": PROTOCOL_VERSION,
        }],
        "provider": {"organization": "clawgate", "url": base},
        "capabilities": {"streaming": true, "pushNotifications": false, "extendedAgentCard": false},
        "defaultInputModes": ["text/plain", "application/json"],
        "defaultOutputModes": ["text/plain"],
        "skills": [{
            "id": agent,
            "name": agent,
            "description": format!("Chat with the agent `{agent}`: its tools run inside the gateway, approvals as INPUT_REQUIRED."),
            "tags": ["chat", "agent"],
        }],
    });
    if config.gateway.auth.mode == crate::config::AuthMode::Token {
        card["securitySchemes"] = json!({"bearer": {"httpAuthSecurityScheme": {
            "scheme": "Bearer",
            "description": "a clawgate token (scope write to send, read to get and list)",
        }}});
        card["securityRequirements"] = json!([{"schemes": {"bearer": {"list": []}}}]);
    }
    let mut resp = json_response(StatusCode::OK, card.to_string());
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// A JSON-RPC error response.
fn error_body(id: &Value, err: &RpcError) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": err.code, "message": err.message}})
        .to_string()
}

fn rpc_error(status: StatusCode, id: &Value, err: RpcError) -> Response<Reply> {
    whole(json_response(status, error_body(id, &err)))
}

/// `POST /a2a/<agentId>`: one JSON-RPC request.
async fn rpc(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
    meta: DoorMeta,
    agent: String,
) -> Response<Reply> {
    let null = Value::Null;
    if req.method() != Method::POST {
        return rpc_error(
            StatusCode::METHOD_NOT_ALLOWED,
            &null,
            RpcError::new(
                codes::INVALID_REQUEST,
                "POST a JSON-RPC request to /a2a/<agentId>",
            ),
        );
    }
    let credential = match authenticate(&*gw, meta.client, req.headers(), req.uri().query()) {
        Ok(c) => c,
        Err(AuthFailure::Throttled { retry_after_ms }) => {
            let mut resp = rpc_error(
                StatusCode::TOO_MANY_REQUESTS,
                &null,
                RpcError::new(
                    codes::INVALID_REQUEST,
                    format!(
                        "too many failed logins from this address; retry in {retry_after_ms} ms"
                    ),
                ),
            );
            let secs = retry_after_ms.div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return resp;
        }
        Err(AuthFailure::Refused(refusal)) => {
            let message = match refusal {
                crate::rpc::auth::Refusal::Unauthorized(m) => m.to_string(),
                crate::rpc::auth::Refusal::Forbidden(m) => m,
            };
            let mut resp = rpc_error(
                StatusCode::UNAUTHORIZED,
                &null,
                RpcError::new(codes::INVALID_REQUEST, message),
            );
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    };
    let scope = gw.tokens().scope(&credential);
    let version = req
        .headers()
        .get("a2a-version")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or(PROTOCOL_VERSION)
        .to_string();
    if version != "1" && version != "1.0" && !version.starts_with("1.") {
        return rpc_error(
            StatusCode::OK,
            &null,
            RpcError::new(
                codes::VERSION_NOT_SUPPORTED,
                format!(
                    "A2A-Version {version} is not supported: this agent speaks {PROTOCOL_VERSION}"
                ),
            ),
        );
    }
    if gw.config().agent(&agent).is_none() {
        return whole(not_found(&format!("/a2a/{agent}")));
    }
    let token_name = gw.token_name(&credential);
    let body = match super::read_body(&gw, req).await {
        Ok(b) => b,
        Err(err) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &null,
                RpcError::new(codes::INVALID_REQUEST, err.to_string()),
            );
        }
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(err) => {
            return rpc_error(
                StatusCode::OK,
                &null,
                RpcError::new(codes::PARSE, format!("the body is not JSON: {err}")),
            );
        }
    };
    let Some(obj) = request.as_object() else {
        return rpc_error(
            StatusCode::OK,
            &null,
            RpcError::new(
                codes::INVALID_REQUEST,
                "expected one JSON-RPC request object (batches are not supported)",
            ),
        );
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return rpc_error(
            StatusCode::OK,
            &id,
            RpcError::new(codes::INVALID_REQUEST, "expected \"jsonrpc\": \"2.0\""),
        );
    }
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        return rpc_error(
            StatusCode::OK,
            &id,
            RpcError::new(codes::INVALID_REQUEST, "expected a method name"),
        );
    };
    let params = obj.get("params").cloned().unwrap_or_else(|| json!({}));
    if !params.is_object() {
        return rpc_error(
            StatusCode::OK,
            &id,
            RpcError::new(codes::INVALID_PARAMS, "expected params to be an object"),
        );
    }
    let needed = match method {
        "GetTask" | "ListTasks" | "SubscribeToTask" => Scope::Read,
        _ => Scope::Write,
    };
    if scope.is_none_or(|s| s < needed) {
        return rpc_error(
            StatusCode::FORBIDDEN,
            &id,
            RpcError::new(
                codes::INVALID_REQUEST,
                format!("{method} needs a token with the {needed:?} scope"),
            ),
        );
    }
    let call = Call {
        gw,
        agent,
        id,
        token_name,
    };
    let answer = match method {
        "SendMessage" => call.send_message(&params).await,
        "SendStreamingMessage" => return call.send_streaming(&params).await,
        "SubscribeToTask" => return call.subscribe(&params).await,
        "GetTask" => call.get_task(&params),
        "ListTasks" => Ok(call.list_tasks(&params)),
        "CancelTask" => call.cancel(&params).await,
        "CreateTaskPushNotificationConfig"
        | "GetTaskPushNotificationConfig"
        | "ListTaskPushNotificationConfigs"
        | "ListTaskPushNotificationConfig"
        | "DeleteTaskPushNotificationConfig" => Err(RpcError::new(
            codes::PUSH_NOT_SUPPORTED,
            "push notifications are not supported",
        )),
        "GetExtendedAgentCard" => Err(RpcError::new(
            codes::EXTENDED_CARD_NOT_CONFIGURED,
            "this agent has no extended card",
        )),
        other => Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            format!(
                "no method `{other}`: this agent serves SendMessage, SendStreamingMessage, GetTask, ListTasks, CancelTask, SubscribeToTask"
            ),
        )),
    };
    let body = match answer {
        Ok(result) => json!({"jsonrpc": "2.0", "id": call.id, "result": result}).to_string(),
        Err(err) => error_body(&call.id, &err),
    };
    whole(json_response(StatusCode::OK, body))
}

/// One JSON-RPC call of the door.
struct Call {
    gw: Arc<Gateway>,
    agent: String,
    id: Value,
    token_name: Option<String>,
}

/// RFC 3339 (UTC, milliseconds) of a time in ms since the epoch.
fn rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| format!("{t:.3}"))
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".into())
}

/// The contextId of a session (`a2a:<contextId>`, else the key itself).
fn context_of(session_key: &str) -> String {
    session_key
        .strip_prefix(SESSION_PREFIX)
        .unwrap_or(session_key)
        .to_string()
}

/// What a task looks like now.
struct TaskView {
    run_id: String,
    context_id: String,
    state: &'static str,
    /// The answer (completed) or what went wrong (failed), or the approval asked for.
    text: Option<String>,
}

impl TaskView {
    fn agent_message(&self, text: &str) -> Value {
        json!({
            "messageId": format!("{}-status", self.run_id),
            "contextId": self.context_id,
            "taskId": self.run_id,
            "role": "ROLE_AGENT",
            "parts": [{"text": text}],
        })
    }

    fn status(&self) -> Value {
        let mut status = json!({"state": self.state, "timestamp": rfc3339(crate::util::now_ms())});
        if let Some(text) = &self.text {
            status["message"] = self.agent_message(text);
        }
        status
    }

    fn artifact(&self) -> Option<Value> {
        match (&self.text, self.state) {
            (Some(text), "TASK_STATE_COMPLETED") => Some(json!({
                "artifactId": format!("{}-answer", self.run_id),
                "name": "answer",
                "parts": [{"text": text}],
            })),
            _ => None,
        }
    }

    fn task(&self) -> Value {
        let mut task = json!({
            "id": self.run_id,
            "contextId": self.context_id,
            "status": self.status(),
        });
        if let Some(artifact) = self.artifact() {
            task["artifacts"] = json!([artifact]);
        }
        task
    }

    fn status_update(&self) -> Value {
        json!({"statusUpdate": {"taskId": self.run_id, "contextId": self.context_id, "status": self.status()}})
    }

    fn terminal(&self) -> bool {
        matches!(
            self.state,
            "TASK_STATE_COMPLETED" | "TASK_STATE_CANCELED" | "TASK_STATE_FAILED"
        )
    }
}

/// A run's terminal payload, read for its text: the final message, or the error's message.
fn terminal_text(json: &str) -> (Option<&'static str>, Option<String>) {
    let Ok(env) = serde_json::from_str::<Value>(json) else {
        return (None, None);
    };
    let p = &env["payload"];
    match p["state"].as_str() {
        Some("final") => (
            Some("TASK_STATE_COMPLETED"),
            p["message"]["content"].as_str().map(str::to_string),
        ),
        Some("aborted") => (Some("TASK_STATE_CANCELED"), None),
        Some("error") => (
            Some("TASK_STATE_FAILED"),
            p["error"]["message"].as_str().map(str::to_string),
        ),
        _ => (None, None),
    }
}

/// The text of the message carrying a pending approval of `run_id`.
fn approval_text(gw: &Gateway, run_id: &str, session_key: &str) -> Option<String> {
    gw.agent()
        .approvals()
        .list(Some(session_key))
        .into_iter()
        .find(|a| a.run_id == run_id)
        .map(|a| {
            format!(
                "The agent wants to call the tool `{}` with {}: answer with a data part {{\"decision\": \"allow\"}} or {{\"decision\": \"deny\"}} (approval {}).",
                a.name, a.input, a.approval_id
            )
        })
}

impl Call {
    fn view(&self, run_id: &str) -> Result<TaskView, RpcError> {
        let entry = self
            .gw
            .agent()
            .run_get(self.gw.as_ref(), run_id)
            .map_err(|_| RpcError::new(codes::TASK_NOT_FOUND, format!("no task `{run_id}`")))?;
        let context_id = context_of(&entry.session_key);
        let (state, text) = match entry.state {
            RunPhase::Queued => ("TASK_STATE_SUBMITTED", None),
            RunPhase::Running => ("TASK_STATE_WORKING", None),
            RunPhase::WaitingApproval => (
                "TASK_STATE_INPUT_REQUIRED",
                approval_text(&self.gw, run_id, &entry.session_key),
            ),
            RunPhase::Done => {
                let terminal = self.gw.agent().run_info(run_id).and_then(|(_, t)| t);
                let read = terminal.as_ref().map(|t| terminal_text(&t.json));
                match (read, entry.outcome) {
                    (Some((Some(state), text)), _) => (state, text),
                    (_, Some(RunOutcome::Final)) => ("TASK_STATE_COMPLETED", None),
                    (_, Some(RunOutcome::Error)) => ("TASK_STATE_FAILED", None),
                    _ => ("TASK_STATE_CANCELED", None),
                }
            }
        };
        Ok(TaskView {
            run_id: run_id.to_string(),
            context_id,
            state,
            text,
        })
    }

    /// The task after its run published a payload of `state`: a terminal payload waits for
    /// the run's end to be recorded, an approval asked for is INPUT_REQUIRED at once.
    async fn view_after(&self, run_id: &str, state: &str) -> Result<TaskView, RpcError> {
        match state {
            "final" | "aborted" | "error" => {
                self.gw.agent().finished(run_id).await;
                self.view(run_id)
            }
            "approval_requested" => {
                let mut view = self.view(run_id)?;
                if !view.terminal() {
                    let key = format!("{SESSION_PREFIX}{}", view.context_id);
                    view.state = "TASK_STATE_INPUT_REQUIRED";
                    view.text = approval_text(&self.gw, run_id, &key).or(view.text);
                }
                Ok(view)
            }
            _ => self.view(run_id),
        }
    }

    fn task_id(params: &Value) -> Result<String, RpcError> {
        params["id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| RpcError::new(codes::INVALID_PARAMS, "expected the task's id"))
    }

    fn get_task(&self, params: &Value) -> Result<Value, RpcError> {
        Ok(self.view(&Self::task_id(params)?)?.task())
    }

    fn list_tasks(&self, params: &Value) -> Value {
        let context = params["contextId"].as_str().filter(|s| !s.is_empty());
        let status = params["status"]
            .as_str()
            .filter(|s| !s.is_empty() && *s != "TASK_STATE_UNSPECIFIED");
        let page_size = params["pageSize"]
            .as_u64()
            .filter(|n| *n > 0)
            .unwrap_or(50)
            .min(100) as usize;
        let offset = params["pageToken"]
            .as_str()
            .and_then(|t| t.parse::<usize>().ok())
            .unwrap_or(0);
        let tasks = self.gw.extension::<Tasks>();
        // Newest first.
        let all: Vec<Value> = tasks
            .snapshot()
            .into_iter()
            .rev()
            .filter(|t| t.agent == self.agent)
            .filter(|t| context.is_none_or(|c| t.context_id == c))
            .filter_map(|t| self.view(&t.run_id).ok())
            .filter(|v| status.is_none_or(|s| v.state == s))
            .map(|v| v.task())
            .collect();
        let total = all.len();
        let page: Vec<Value> = all.into_iter().skip(offset).take(page_size).collect();
        let next = if offset + page.len() < total {
            (offset + page.len()).to_string()
        } else {
            String::new()
        };
        json!({"tasks": page, "nextPageToken": next, "pageSize": page_size, "totalSize": total})
    }

    async fn cancel(&self, params: &Value) -> Result<Value, RpcError> {
        let run_id = Self::task_id(params)?;
        let view = self.view(&run_id)?;
        if view.terminal() {
            return Err(RpcError::new(
                codes::TASK_NOT_CANCELABLE,
                format!("the task `{run_id}` has ended ({})", view.state),
            ));
        }
        self.gw
            .agent()
            .abort(&self.gw, Some(&run_id), None)
            .await
            .map_err(RpcError::from)?;
        self.gw.agent().finished(&run_id).await;
        Ok(self.view(&run_id)?.task())
    }

    /// Subscribes to the session's chat payloads of one run.
    fn subscribe_run(&self, session_key: &str) -> Result<Subscriber, RpcError> {
        let filter = Filter::new(
            Some(&[ChatEvent::NAME.to_string()]),
            Some(session_key.to_string()),
        )
        .map_err(|e| RpcError::new(codes::INTERNAL, e.to_string()))?;
        self.gw
            .hub()
            .subscribe(filter, None, None)
            .map_err(|e| RpcError::new(codes::INTERNAL, e.to_string()))
    }

    /// Starts what a message asks for: an answer to the approval its task waits for, or a
    /// run in the message's context. Returns the run, a subscription to its payloads, and
    /// whether the message answered an approval (the run goes on: it is working again).
    async fn start(&self, params: &Value) -> Result<(String, Subscriber, bool), RpcError> {
        let message = &params["message"];
        if !message.is_object() {
            return Err(RpcError::new(codes::INVALID_PARAMS, "expected a message"));
        }
        let parts = message["parts"].as_array().cloned().unwrap_or_default();
        if parts.is_empty() {
            return Err(RpcError::new(
                codes::INVALID_PARAMS,
                "expected the message to have parts",
            ));
        }
        let mut text = Vec::new();
        let mut decision = None;
        for part in &parts {
            if let Some(t) = part["text"].as_str() {
                text.push(t.to_string());
            } else if part.get("data").is_some() {
                match part["data"]["decision"].as_str() {
                    Some("allow") => decision = Some(ApprovalDecision::Allow),
                    Some("deny") => decision = Some(ApprovalDecision::Deny),
                    _ => text.push(part["data"].to_string()),
                }
            } else {
                return Err(RpcError::new(
                    codes::CONTENT_TYPE_NOT_SUPPORTED,
                    "only text and data parts are supported",
                ));
            }
        }
        if let Some(task_id) = message["taskId"].as_str().filter(|s| !s.is_empty()) {
            let view = self.view(task_id)?;
            if view.terminal() {
                return Err(RpcError::new(
                    codes::UNSUPPORTED_OPERATION,
                    format!(
                        "the task `{task_id}` has ended ({}): send without taskId to start another",
                        view.state
                    ),
                ));
            }
            if view.state != "TASK_STATE_INPUT_REQUIRED" {
                return Err(RpcError::new(
                    codes::UNSUPPORTED_OPERATION,
                    format!("the task `{task_id}` is not waiting for input"),
                ));
            }
            let Some(decision) = decision else {
                return Err(RpcError::new(
                    codes::INVALID_PARAMS,
                    "the task waits for an approval: send a data part {\"decision\": \"allow\" | \"deny\"}",
                ));
            };
            let entry = self.gw.agent().run_get(self.gw.as_ref(), task_id)?;
            let mut sub = self.subscribe_run(&entry.session_key)?;
            sub.only_run(task_id);
            let approval = self
                .gw
                .agent()
                .approvals()
                .list(Some(&entry.session_key))
                .into_iter()
                .find(|a| a.run_id == task_id)
                .ok_or_else(|| {
                    RpcError::new(
                        codes::UNSUPPORTED_OPERATION,
                        format!("the task `{task_id}` has no approval waiting"),
                    )
                })?;
            let resolution = Resolution {
                decision,
                by: self.token_name.clone().unwrap_or_else(|| "a2a".into()),
                reason: text.first().cloned(),
                remember: false,
            };
            let resolver = Resolver {
                token_name: self.token_name.clone(),
            };
            self.gw
                .agent()
                .approvals()
                .resolve(&approval.approval_id, resolution, &resolver)?;
            return Ok((task_id.to_string(), sub, true));
        }
        if text.is_empty() {
            return Err(RpcError::new(
                codes::INVALID_PARAMS,
                "expected a text part to send",
            ));
        }
        let message_id = message["messageId"].as_str().filter(|s| !s.is_empty());
        // A new context when absent: named after the message id, so the sender's retry of
        // the same message lands in the same session (and its idempotency key holds).
        let context_id = match (
            message["contextId"].as_str().filter(|s| !s.is_empty()),
            message_id,
        ) {
            (Some(c), _) => c.to_string(),
            (None, Some(m)) => {
                use sha2::Digest;
                hex::encode(&sha2::Sha256::digest(m.as_bytes())[..16])
            }
            (None, None) => uuid::Uuid::new_v4().simple().to_string(),
        };
        let session_key = format!("{SESSION_PREFIX}{context_id}");
        let mut sub = self.subscribe_run(&session_key)?;
        let request = SendRequest {
            session_key,
            message: text.join("\n\n"),
            // The message id is the sender's retry key: a repeat starts no second task.
            idempotency_key: message_id.map(|m| format!("a2a:{m}")),
            model: None,
            agent: Some(self.agent.clone()),
            mode: SendMode::default(),
        };
        let outcome = self.gw.agent().start(&self.gw, request).await?;
        sub.only_run(&outcome.run_id);
        self.gw.extension::<Tasks>().remember(TaskRef {
            run_id: outcome.run_id.clone(),
            context_id,
            agent: self.agent.clone(),
        });
        Ok((outcome.run_id, sub, false))
    }

    async fn send_message(&self, params: &Value) -> Result<Value, RpcError> {
        let (run_id, mut sub, resolved) = self.start(params).await?;
        let immediately = params["configuration"]["returnImmediately"]
            .as_bool()
            .unwrap_or(false);
        if !immediately {
            // Until the run ends or waits for a person.
            let mut view = self.view(&run_id)?;
            if resolved && !view.terminal() {
                // Answered: the run goes on, whatever it said a moment before.
                view.state = "TASK_STATE_WORKING";
                view.text = None;
            }
            while !(view.terminal() || view.state == "TASK_STATE_INPUT_REQUIRED") {
                let Some(Delivery::Event(env)) = sub.next().await else {
                    break;
                };
                // The hub tags each chat envelope with its payload's state: no parsing here.
                let state = env.state.as_deref().unwrap_or("");
                if matches!(state, "final" | "aborted" | "error" | "approval_requested") {
                    view = self.view_after(&run_id, state).await?;
                }
            }
            return Ok(json!({"task": view.task()}));
        }
        Ok(json!({"task": self.view(&run_id)?.task()}))
    }

    async fn send_streaming(self, params: &Value) -> Response<Reply> {
        match self.start(params).await {
            Ok((run_id, sub, resolved)) => self.stream(run_id, sub, resolved),
            Err(err) => rpc_error(StatusCode::OK, &self.id, err),
        }
    }

    async fn subscribe(self, params: &Value) -> Response<Reply> {
        let run_id = match Self::task_id(params) {
            Ok(id) => id,
            Err(err) => return rpc_error(StatusCode::OK, &self.id, err),
        };
        let entry = match self.gw.agent().run_get(self.gw.as_ref(), &run_id) {
            Ok(e) => e,
            Err(_) => {
                return rpc_error(
                    StatusCode::OK,
                    &self.id,
                    RpcError::new(codes::TASK_NOT_FOUND, format!("no task `{run_id}`")),
                );
            }
        };
        let mut sub = match self.subscribe_run(&entry.session_key) {
            Ok(s) => s,
            Err(err) => return rpc_error(StatusCode::OK, &self.id, err),
        };
        sub.only_run(&run_id);
        match self.view(&run_id) {
            Ok(v) if v.terminal() => rpc_error(
                StatusCode::OK,
                &self.id,
                RpcError::new(
                    codes::UNSUPPORTED_OPERATION,
                    format!(
                        "the task `{run_id}` has ended ({}): GetTask reads it",
                        v.state
                    ),
                ),
            ),
            Ok(_) => self.stream(run_id, sub, false),
            Err(err) => rpc_error(StatusCode::OK, &self.id, err),
        }
    }

    /// The SSE answer: the task, then its updates (text as artifact chunks, each state change),
    /// until it ends or waits for input. Each `data:` is a whole JSON-RPC response.
    fn stream(self, run_id: String, mut sub: Subscriber, resolved: bool) -> Response<Reply> {
        let (tx, resp) = event_stream(STREAM_BUFFER);
        tokio::spawn(async move {
            let frame = |result: Value| -> Bytes {
                let body = json!({"jsonrpc": "2.0", "id": self.id, "result": result});
                Bytes::from(format!("data: {body}\n\n"))
            };
            let Ok(mut first) = self.view(&run_id) else {
                return;
            };
            if resolved && !first.terminal() {
                first.state = "TASK_STATE_WORKING";
                first.text = None;
            }
            let mut last_state = first.state;
            if tx.send(frame(json!({"task": first.task()}))).await.is_err() {
                return;
            }
            if first.terminal() || first.state == "TASK_STATE_INPUT_REQUIRED" {
                return;
            }
            let artifact_id = format!("{run_id}-answer");
            let mut chunks = 0u64;
            loop {
                let delivery = tokio::select! {
                    _ = tx.closed() => return,
                    d = sub.next() => d,
                };
                let Some(Delivery::Event(env)) = delivery else {
                    return;
                };
                let state = env.state.as_deref().unwrap_or("");
                if state == "delta" {
                    // Only a delta's text is read from the payload.
                    let Ok(v) = serde_json::from_str::<Value>(&env.json) else {
                        continue;
                    };
                    let Some(text) = v["payload"]["text"].as_str().filter(|t| !t.is_empty()) else {
                        continue;
                    };
                    let update = json!({"artifactUpdate": {
                        "taskId": run_id,
                        "contextId": first.context_id,
                        "artifact": {"artifactId": artifact_id, "name": "answer", "parts": [{"text": text}]},
                        "append": chunks > 0,
                        "lastChunk": false,
                    }});
                    chunks += 1;
                    if tx.send(frame(update)).await.is_err() {
                        return;
                    }
                    continue;
                }
                if state.is_empty() {
                    continue;
                }
                let Ok(view) = self.view_after(&run_id, state).await else {
                    return;
                };
                if view.state != last_state || view.terminal() {
                    last_state = view.state;
                    if view.terminal()
                        && let Some(artifact) = view.artifact()
                    {
                        let update = json!({"artifactUpdate": {
                            "taskId": run_id,
                            "contextId": view.context_id,
                            "artifact": artifact,
                            "append": false,
                            "lastChunk": true,
                        }});
                        if tx.send(frame(update)).await.is_err() {
                            return;
                        }
                    }
                    if tx.send(frame(view.status_update())).await.is_err() {
                        return;
                    }
                    if view.terminal() || view.state == "TASK_STATE_INPUT_REQUIRED" {
                        return;
                    }
                }
            }
        });
        resp
    }
}
