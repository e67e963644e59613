//! The OpenAI-compatible door (`[http.openai] enabled`): `GET /v1/models` (each agent as the
//! model `clawgate/<agentId>`), `GET /v1/models/<id>` and `POST /v1/chat/completions`, whole or
//! streamed. A completion is an ordinary run, started through the same domain functions as
//! `chat.send`: in the session `x-clawgate-session-key` names, or in an ephemeral session
//! seeded with the request's earlier messages and discarded after the answer.
//!
//! The files: this one (routing, the token check, the models), `request` (reading a body),
//! `run` (the run and its answer or chunks), `errors` (OpenAI's error shape and the statuses).

mod errors;
mod request;
mod run;

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

pub use errors::ApiError;
pub use request::{MODEL_PREFIX, agent_of};
pub use run::{EPHEMERAL_PREFIX, finish_reason};

use crate::gateway::Gateway;
use crate::protocol::{Scope, SessionKey};
use crate::rpc::auth::Refusal;
use crate::rpc::http::{BodyError, Reply, json_response, whole};
use crate::rpc::server::{AuthFailure, DoorMeta, authenticate};

/// The header naming the session a completion runs in.
pub const SESSION_HEADER: &str = "x-clawgate-session-key";

/// Serves one request of this door.
pub async fn serve(
    gateway: Arc<Gateway>,
    req: Request<Incoming>,
    meta: DoorMeta,
) -> Response<Reply> {
    if let Err(err) = check_token(&gateway, &req, &meta) {
        return whole(err.response());
    }
    let path = req.uri().path();
    let route = path.trim_end_matches('/');
    match (req.method(), route) {
        (&Method::GET, "/v1/models") => whole(models(&gateway)),
        (&Method::GET, _) if route.starts_with("/v1/models/") => {
            // Clients percent-encode the id (`clawgate%2Fmain`).
            let id = percent_decode(&route["/v1/models/".len()..]);
            whole(model(&gateway, &id))
        }
        (&Method::POST, "/v1/chat/completions") => completions(gateway, req).await,
        (_, "/v1/models" | "/v1/chat/completions") => whole(
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
                format!("{} is not allowed on {route}", req.method()),
            )
            .response(),
        ),
        _ => whole(
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "unknown_url",
                format!(
                    "unknown route {} {path}: this gateway serves GET /v1/models and POST /v1/chat/completions",
                    req.method()
                ),
            )
            .response(),
        ),
    }
}

/// The token check: the lockout (429), a valid token (401), and `write` (403).
fn check_token(
    gateway: &Arc<Gateway>,
    req: &Request<Incoming>,
    meta: &DoorMeta,
) -> Result<(), ApiError> {
    let cred = authenticate(
        gateway.as_ref(),
        meta.client,
        req.headers(),
        req.uri().query(),
    )
    .map_err(|failure| match failure {
        AuthFailure::Throttled { retry_after_ms } => {
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
                "too many failed logins from this address; retry later",
            );
            err.retry_after_ms = Some(retry_after_ms);
            err
        }
        AuthFailure::Refused(Refusal::Unauthorized(message)) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            format!("{message} (the OpenAI client's api_key is the gateway token)"),
        ),
        AuthFailure::Refused(Refusal::Forbidden(message)) => ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "forbidden",
            message,
        ),
    })?;
    match gateway.tokens().scope(&cred) {
        Some(scope) if scope >= Scope::Write => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "insufficient_scope",
            "this token lacks the `write` scope the OpenAI door needs",
        )),
    }
}

/// `s` with its `%XX` escapes decoded (an invalid escape, or bytes that are not UTF-8, are
/// kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// When the gateway started, in seconds (the models' `created`).
fn started_at(gateway: &Gateway) -> u64 {
    crate::util::now_ms().saturating_sub(gateway.uptime_ms()) / 1000
}

fn model_json(id: &str, created: u64) -> serde_json::Value {
    json!({
        "id": format!("{MODEL_PREFIX}{id}"),
        "object": "model",
        "created": created,
        "owned_by": "clawgate",
    })
}

/// `GET /v1/models`.
fn models(gateway: &Gateway) -> Response<crate::rpc::http::Body> {
    let created = started_at(gateway);
    let data: Vec<_> = gateway
        .config()
        .agents
        .keys()
        .map(|id| model_json(id, created))
        .collect();
    json_response(
        StatusCode::OK,
        json!({"object": "list", "data": data}).to_string(),
    )
}

/// `GET /v1/models/<id>` (`clawgate/<agentId>` or the bare id).
fn model(gateway: &Gateway, id: &str) -> Response<crate::rpc::http::Body> {
    let agent = agent_of(id);
    if gateway.config().agent(agent).is_none() {
        return ApiError::unknown_model(id).response();
    }
    json_response(
        StatusCode::OK,
        model_json(agent, started_at(gateway)).to_string(),
    )
}

/// `POST /v1/chat/completions`.
async fn completions(gateway: Arc<Gateway>, req: Request<Incoming>) -> Response<Reply> {
    let session = match req.headers().get(SESSION_HEADER) {
        None => None,
        Some(value) => match value.to_str().ok().map(SessionKey::new) {
            Some(Ok(key)) => Some(String::from(key)),
            Some(Err(e)) => {
                return whole(
                    ApiError::bad_request(
                        "invalid_session_key",
                        SESSION_HEADER,
                        format!("the header {SESSION_HEADER} is not a valid session key: {e}"),
                    )
                    .response(),
                );
            }
            None => {
                return whole(
                    ApiError::bad_request(
                        "invalid_session_key",
                        SESSION_HEADER,
                        format!("the header {SESSION_HEADER} must be visible ASCII"),
                    )
                    .response(),
                );
            }
        },
    };
    let body = match crate::http::read_body(&gateway, req).await {
        Ok(body) => body,
        Err(err) => {
            let status = match err {
                BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
                _ => StatusCode::BAD_REQUEST,
            };
            return whole(
                ApiError::new(
                    status,
                    "invalid_request_error",
                    "invalid_body",
                    err.to_string(),
                )
                .response(),
            );
        }
    };
    let config = gateway.config();
    let req = match request::parse(&body, |id| config.agent(id).is_some()) {
        Ok(req) => req,
        Err(err) => return whole(err.response()),
    };
    drop(config);
    run::complete(gateway, req, session).await
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn model_ids_in_paths_are_percent_decoded() {
        assert_eq!(percent_decode("clawgate%2Fmain"), "clawgate/main");
        assert_eq!(percent_decode("clawgate%2fmain"), "clawgate/main");
        assert_eq!(percent_decode("main"), "main");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
        assert_eq!(percent_decode("%ff"), "%ff");
    }
}
