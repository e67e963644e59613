//! Webhooks in: `POST /hooks/agent` (a token with `write`) and `POST /hooks/<name>` of each
//! `[hooks.<name>]` (an HMAC-SHA256 signature of the body instead of a token) start a run.
//!
//! - `/hooks/agent` takes `{message, sessionKey?, agent?, idempotencyKey?, mode?, model?}`
//!   (the fields of `chat.send`; default session `hook:agent`) and answers
//!   `202 {runId, sessionKey, status}`.
//! - `/hooks/<name>` takes any JSON body, verified by `x-clawgate-signature: sha256=<hex>` or
//!   GitHub's `X-Hub-Signature-256: sha256=<hex>` (HMAC-SHA256 of the raw body with the
//!   hook's `secret`, compared in constant time); the message is the hook's template with
//!   `{{body.a.b}}` filled from the body (a missing path is empty). A delivery id header
//!   (`x-clawgate-delivery`, `X-GitHub-Delivery`) becomes the idempotency key, so a sender's
//!   retry starts no second run. Default session `hook:<name>`.
//! - `?wait=true` on either answers `200 {runId, sessionKey, outcome, text}` when the run
//!   ends instead (`text`: the last assistant message, or the partial text of an aborted
//!   run; `error` for a failed one).
//!
//! Refusals are `{error: {kind, message}}` like the port's other HTTP refusals: 400 bad body,
//! 401 no or bad token or signature, 403 a token without `write`, 404 unknown hook, 405 not a
//! POST, 409 busy session with `mode: "reject"` (or a session of another agent), 429 a
//! locked-out address, 502 the agent's provider cannot run, 503 shutting down.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::agent::{AgentError, SendRequest};
use crate::config::HookConfig;
use crate::events::{Delivery, Filter};
use crate::gateway::Gateway;
use crate::protocol::{
    ChatEvent, ChatSendParams, Event, IdempotencyKey, MessageText, RunOutcome, RunStatus,
};
use crate::rpc::http::{
    Body, BodyError, Reply, json_response, refusal_response, throttled_response, whole,
};
use crate::rpc::server::{AuthFailure, DoorMeta, authenticate};
use crate::rpc::throttle::Limits;
use crate::store::StoreError;
use crate::util::now_ms;

/// The path of the token-authenticated hook.
const AGENT_HOOK: &str = crate::config::RESERVED_HOOK;
/// The signature header of clawgate's own form (the same as webhooks out send).
pub const SIGNATURE_HEADER: &str = "x-clawgate-signature";
/// GitHub's signature header (same `sha256=<hex>` of the raw body).
pub const GITHUB_SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// Delivery id headers whose value becomes the run's idempotency key.
const DELIVERY_HEADERS: [&str; 2] = ["x-clawgate-delivery", "x-github-delivery"];

/// Serves one request of this door.
pub async fn serve(
    gateway: Arc<Gateway>,
    req: Request<Incoming>,
    meta: DoorMeta,
) -> Response<Reply> {
    whole(answer(gateway, req, meta).await)
}

/// A refusal in the port's HTTP shape.
fn refuse(status: StatusCode, kind: &str, message: impl Into<String>) -> Response<Body> {
    json_response(
        status,
        json!({"error": {"kind": kind, "message": message.into()}}).to_string(),
    )
}

async fn answer(gw: Arc<Gateway>, req: Request<Incoming>, meta: DoorMeta) -> Response<Body> {
    let path = req.uri().path().to_string();
    let Some(name) = path.strip_prefix("/hooks/").filter(|n| !n.contains('/')) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no hook at {path}"),
        );
    };
    let name = name.to_string();
    let query = req.uri().query().map(str::to_string);
    let wait = query_flag(query.as_deref(), "wait");
    if name == AGENT_HOOK {
        // The token check first, as on every door: a locked-out address gets 429 here.
        let cred = match authenticate(gw.as_ref(), meta.client, req.headers(), query.as_deref()) {
            Ok(cred) => cred,
            Err(AuthFailure::Throttled { retry_after_ms }) => {
                return throttled_response(retry_after_ms);
            }
            Err(AuthFailure::Refused(refusal)) => return refusal_response(refusal),
        };
        match gw.tokens().scope(&cred) {
            Some(scope) if scope >= crate::protocol::Scope::Write => {}
            scope => {
                let had = scope.map_or("none", |s| s.as_str());
                return refuse(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "POST /hooks/agent needs a token with the write scope; this one has {had}"
                    ),
                );
            }
        }
        if req.method() != http::Method::POST {
            return not_post();
        }
        let body = match crate::http::read_body(&gw, req).await {
            Ok(body) => body,
            Err(err) => return bad_body(&err),
        };
        return agent_hook(&gw, &body, wait).await;
    }
    let config = gw.config();
    let limits = Limits::from(&config.gateway.auth);
    if let Some(retry_after_ms) = gw.throttle().locked_for(&limits, meta.client, now_ms()) {
        return throttled_response(retry_after_ms);
    }
    let Some(hook) = config.hooks.get(&name).cloned() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no hook named {name:?}: configure [hooks.{name}], or use /hooks/agent with a token"
            ),
        );
    };
    if req.method() != http::Method::POST {
        return not_post();
    }
    let signature = [SIGNATURE_HEADER, GITHUB_SIGNATURE_HEADER]
        .iter()
        .find_map(|h| req.headers().get(*h))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let delivery = DELIVERY_HEADERS
        .iter()
        .find_map(|h| req.headers().get(*h))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| IdempotencyKey::new(format!("hook-{v}")).ok());
    let body = match crate::http::read_body(&gw, req).await {
        Ok(body) => body,
        Err(err) => return bad_body(&err),
    };
    let verified = signature
        .as_deref()
        .is_some_and(|sig| crate::webhooks::sign::verify(hook.secret.as_bytes(), &body, sig));
    if !verified {
        if let Some(lock) = gw.throttle().failed(&limits, meta.client, now_ms()) {
            tracing::warn!(
                client = %meta.client,
                failures = lock.failures,
                window_ms = limits.window_ms,
                total_failures = lock.total,
                lockout_ms = lock.lockout_ms,
                "too many failed logins: address locked out"
            );
        }
        let message = if signature.is_none() {
            format!(
                "missing signature: send {SIGNATURE_HEADER}: sha256=<hex HMAC-SHA256 of the raw body with the hook's secret> (or GitHub's X-Hub-Signature-256)"
            )
        } else {
            "the signature does not match the body: expected sha256=<hex HMAC-SHA256 of the raw body with the hook's secret>".to_string()
        };
        return refuse(StatusCode::UNAUTHORIZED, "unauthorized", message);
    }
    named_hook(&gw, &name, &hook, &body, delivery, wait).await
}

/// Whether `?<name>=true` (or `1`) is in the query.
fn query_flag(query: Option<&str>, name: &str) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .any(|(k, v)| k == name && (v == "true" || v == "1"))
    })
}

fn not_post() -> Response<Body> {
    let mut resp = refuse(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "hooks take POST",
    );
    resp.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    resp
}

fn bad_body(err: &BodyError) -> Response<Body> {
    refuse(StatusCode::BAD_REQUEST, "bad_request", err.to_string())
}

/// `POST /hooks/agent`: the body is `chat.send`'s params.
async fn agent_hook(gw: &Arc<Gateway>, body: &Bytes, wait: bool) -> Response<Body> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let params: ChatSendParams = match serde_path_to_error::deserialize(&mut de) {
        Ok(p) => p,
        Err(err) => {
            let path = err.path().to_string();
            let at = if path == "." {
                String::new()
            } else {
                format!("{path}: ")
            };
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "{at}{}; expected a JSON object {{message, sessionKey?, agent?, idempotencyKey?, mode?}}",
                    err.inner()
                ),
            );
        }
    };
    let request = SendRequest {
        session_key: params
            .session_key
            .map_or_else(|| format!("hook:{AGENT_HOOK}"), String::from),
        message: params.message.into(),
        idempotency_key: params.idempotency_key.map(String::from),
        model: params.model.map(String::from),
        agent: params.agent.map(String::from),
        mode: params.mode.unwrap_or_default(),
    };
    run(gw, request, wait).await
}

/// `POST /hooks/<name>`: the hook's template filled from the (verified) body.
async fn named_hook(
    gw: &Arc<Gateway>,
    name: &str,
    hook: &HookConfig,
    body: &Bytes,
    delivery: Option<IdempotencyKey>,
    wait: bool,
) -> Response<Body> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(err) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body is not JSON: {err}"),
            );
        }
    };
    let message = match MessageText::new(fill(&hook.message, &value)) {
        Ok(m) => m,
        Err(err) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "the message made from hooks.{name}.message and this body is not valid: {err}"
                ),
            );
        }
    };
    let request = SendRequest {
        session_key: hook
            .session_key
            .clone()
            .unwrap_or_else(|| format!("hook:{name}")),
        message: message.into(),
        idempotency_key: delivery.map(String::from),
        model: None,
        agent: hook.agent.clone(),
        mode: hook.mode,
    };
    run(gw, request, wait).await
}

/// Fills `{{body}}` and `{{body.a.b}}` (array indices as numbers) from `body`: a string as
/// it is, `null` or a missing path as nothing, anything else as compact JSON.
pub fn fill(template: &str, body: &Value) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = after[..end].trim();
        let found = match inner.strip_prefix("body") {
            Some("") => Some(body),
            Some(path) => path.strip_prefix('.').and_then(|p| lookup(body, p)),
            None => None,
        };
        match found {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => out.push_str(s),
            Some(other) => out.push_str(&other.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, part| match v {
        Value::Object(map) => map.get(part),
        Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Starts the run; answers 202 at once, or with `wait` 200 when it ends.
async fn run(gw: &Arc<Gateway>, request: SendRequest, wait: bool) -> Response<Body> {
    let session_key = request.session_key.clone();
    // Subscribed before sending, so no payload of the run can be missed.
    let mut sub = if wait {
        let filter = match Filter::new(
            Some(&[ChatEvent::NAME.to_string()]),
            Some(session_key.clone()),
        ) {
            Ok(f) => f,
            Err(_) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", "chat filter"),
        };
        match gw.hub().subscribe(filter, None, None) {
            Ok(sub) => Some(sub),
            Err(err) => {
                return refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    err.to_string(),
                );
            }
        }
    } else {
        None
    };
    if gw.store().is_ephemeral(&request.session_key) {
        return refuse(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "the session `{}` is ephemeral (one request of the OpenAI door): send to another session",
                request.session_key
            ),
        );
    }
    let outcome = match gw.agent().start(gw, request).await {
        Ok(outcome) => outcome,
        Err(err) => return start_refusal(err),
    };
    let run_id = outcome.run_id;
    let Some(mut sub) = sub.take() else {
        return json_response(
            StatusCode::ACCEPTED,
            json!({"runId": run_id, "sessionKey": session_key, "status": outcome.status})
                .to_string(),
        );
    };
    sub.only_run(&run_id);
    let terminal = if outcome.status == RunStatus::Done {
        // A repeated idempotency key of a finished run: its terminal payload, if still known.
        drop(sub);
        gw.agent().run_info(&run_id).and_then(|(_, t)| t)
    } else {
        let mut last = None;
        loop {
            match sub.next().await {
                Some(Delivery::Event(env)) if env.ends_run => {
                    last = Some(env);
                    break;
                }
                Some(Delivery::Event(_)) => {}
                Some(Delivery::Shutdown(_)) | None => break,
            }
        }
        last
    };
    let Some(terminal) = terminal else {
        if let Some(outcome) = outcome.outcome {
            return json_response(
                StatusCode::OK,
                json!({"runId": run_id, "sessionKey": session_key, "outcome": outcome, "text": ""})
                    .to_string(),
            );
        }
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "the gateway is shutting down; run {run_id} did not end before it (see runs.get)"
            ),
        );
    };
    #[derive(serde::Deserialize)]
    struct Wire {
        payload: ChatEvent,
    }
    let payload = match serde_json::from_str::<Wire>(&terminal.json) {
        Ok(w) => w.payload,
        Err(err) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                err.to_string(),
            );
        }
    };
    let outcome = match payload.state.as_str() {
        "final" => RunOutcome::Final,
        "error" => RunOutcome::Error,
        _ => RunOutcome::Aborted,
    };
    let text = match outcome {
        RunOutcome::Final => payload.message.map(|m| m.content),
        _ => payload.partial_text,
    }
    .unwrap_or_default();
    let mut body =
        json!({"runId": run_id, "sessionKey": session_key, "outcome": outcome, "text": text});
    if let Some(error) = payload.error {
        body["error"] = json!(error);
    }
    json_response(StatusCode::OK, body.to_string())
}

/// A send that started no run, as its HTTP refusal.
fn start_refusal(err: AgentError) -> Response<Body> {
    let message = err.to_string();
    match err {
        AgentError::NotReady(_) => refuse(StatusCode::BAD_GATEWAY, "upstream", message),
        AgentError::RunActive { run_id, .. } => json_response(
            StatusCode::CONFLICT,
            json!({"error": {"kind": "busy", "message": message, "activeRunId": run_id}})
                .to_string(),
        ),
        AgentError::OtherAgent { .. } | AgentError::AgentRemoved { .. } => {
            refuse(StatusCode::CONFLICT, "conflict", message)
        }
        AgentError::NoSuchAgent(_) => refuse(StatusCode::BAD_REQUEST, "unknown_agent", message),
        AgentError::Store(StoreError::InvalidKey { .. }) => {
            refuse(StatusCode::BAD_REQUEST, "bad_request", message)
        }
        AgentError::ShuttingDown => refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
        _ => refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_fills_paths_and_leaves_missing_ones_empty() {
        let body =
            json!({"a": {"b": "x", "n": 3, "o": {"k": true}}, "list": [{"id": "c1"}], "nul": null});
        assert_eq!(fill("{{body.a.b}}!", &body), "x!");
        assert_eq!(fill("{{ body.a.n }} {{body.a.o}}", &body), "3 {\"k\":true}");
        assert_eq!(
            fill("[{{body.list.0.id}}][{{body.list.9.id}}]", &body),
            "[c1][]"
        );
        assert_eq!(fill("<{{body.missing.deep}}><{{body.nul}}>", &body), "<><>");
        assert_eq!(fill("{{body}}", &json!({"x": 1})), "{\"x\":1}");
        assert_eq!(fill("no placeholders", &body), "no placeholders");
        assert_eq!(fill("open {{body.a.b", &body), "open {{body.a.b");
    }

    #[test]
    fn wait_is_read_from_the_query() {
        assert!(query_flag(Some("wait=true"), "wait"));
        assert!(query_flag(Some("token=x&wait=1"), "wait"));
        assert!(!query_flag(Some("wait=false"), "wait"));
        assert!(!query_flag(None, "wait"));
    }
}
