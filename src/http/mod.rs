//! The standard doors on the gateway's port, beside JSON-RPC: the OpenAI-compatible `/v1`, A2A
//! (`/.well-known/agent-card.json`, `/a2a/<agentId>`) and webhooks in (`/hooks/*`).
//!
//! The transport asks [`route`] (through `rpc::Host::door`) after its browser checks, health
//! routes, connection limit and console, before its token check: each door authenticates with
//! [`crate::rpc::server::authenticate`] and answers in its own standard's error shape. A door
//! only translates: it calls the same domain functions as the `chat.*` methods, so a run
//! started here is an ordinary run that every other client sees.

pub mod a2a;
pub mod hooks;
pub mod openai;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::gateway::Gateway;
use crate::rpc::http::{BodyError, Reply};
use crate::rpc::server::DoorMeta;
use crate::rpc::table::BoxFuture;

/// The door serving `req`'s path, or the request back when none does (or that door is off).
#[expect(
    clippy::result_large_err,
    reason = "the request is handed back unchanged, by value: boxing it would cost an allocation on every JSON-RPC call"
)]
pub fn route(
    gateway: &Arc<Gateway>,
    req: Request<Incoming>,
    meta: DoorMeta,
) -> Result<BoxFuture<Response<Reply>>, Request<Incoming>> {
    let path = req.uri().path();
    let config = gateway.config();
    if (path == "/v1" || path.starts_with("/v1/")) && config.http.openai.enabled {
        return Ok(Box::pin(openai::serve(gateway.clone(), req, meta)));
    }
    if (path == "/.well-known/agent-card.json" || path == "/a2a" || path.starts_with("/a2a/"))
        && config.http.a2a.enabled
    {
        return Ok(Box::pin(a2a::serve(gateway.clone(), req, meta)));
    }
    if path.starts_with("/hooks/") {
        return Ok(Box::pin(hooks::serve(gateway.clone(), req, meta)));
    }
    Err(req)
}

/// A door's request body, within `gateway.max_payload_bytes` and `gateway.body_timeout_ms`.
pub async fn read_body(gateway: &Gateway, req: Request<Incoming>) -> Result<Bytes, BodyError> {
    let config = gateway.config();
    let g = &config.gateway;
    crate::rpc::http::read_body(
        req,
        g.max_payload_bytes,
        std::time::Duration::from_millis(g.body_timeout_ms),
    )
    .await
}
