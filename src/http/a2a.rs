//! The a2a door (being built).

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::gateway::Gateway;
use crate::rpc::http::{Reply, json_response, whole};
use crate::rpc::server::DoorMeta;

/// Serves one request of this door.
pub async fn serve(
    gateway: Arc<Gateway>,
    req: Request<Incoming>,
    meta: DoorMeta,
) -> Response<Reply> {
    let _ = (gateway, req, meta);
    whole(json_response(
        StatusCode::NOT_FOUND,
        r#"{"error":{"kind":"not_found","message":"not built yet"}}"#.into(),
    ))
}
