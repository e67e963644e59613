//! Cluster mode in the gateway: where each call runs (a call for a session runs on the node
//! that owns it, found or taken through the leases; a call naming a run or an approval runs on
//! the node that has it), the service answering calls other nodes forward here, the takeover
//! of a session (its transcript brought up to date from the shared log, its open runs resumed)
//! and the watch that takes over the sessions of a node that died or handed them over.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::Gateway;
use crate::cluster::owners::{Owner, Owners};
use crate::cluster::transcripts::JetStreamLog;
use crate::cluster::{Cluster, key_of, node_subject, text_of};
use crate::error::Error;
use crate::protocol::Scope;
use crate::rpc::{Route, RouteCall};

/// The subject every node answers for the runs and approvals it has.
const ANY_SUBJECT: &str = "clawgate.any";
const H_SCOPE: &str = "Cg-Scope";
const H_FIND: &str = "Cg-Find";
/// How long a forwarded call may take at its owner (a compaction calls the model).
const FORWARD_PATIENCE: Duration = Duration::from_secs(120);
/// How long the nodes are given to say they have a run or an approval.
const FIND_PATIENCE: Duration = Duration::from_millis(1500);

/// What cluster mode adds to the gateway.
pub(super) struct ClusterParts {
    pub cluster: Arc<Cluster>,
    pub relay: Arc<crate::cluster::events::StreamRelay>,
    pub owners: Arc<Owners>,
    pub log: Arc<JetStreamLog>,
    pub stop: CancellationToken,
}

/// What a call is about, as far as where it runs goes.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Session(String),
    Run(String),
    Approval(String),
}

/// The members of params that say where a call runs (others are ignored here).
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "sessionKey")]
    session_key: Option<String>,
    key: Option<String>,
    #[serde(rename = "runId")]
    run_id: Option<String>,
    #[serde(rename = "approvalId")]
    approval_id: Option<String>,
}

/// Where `method` with `params` must run; `None`: on any node (here).
fn target(method: &str, params: Option<&str>) -> Option<Target> {
    let keyed = matches!(
        method,
        "chat.send"
            | "chat.history"
            | "chat.inject"
            | "chat.abort"
            | "sessions.get"
            | "sessions.create"
            | "sessions.patch"
            | "sessions.reset"
            | "sessions.delete"
            | "sessions.fork"
            | "sessions.compact"
            | "approvals.get"
            | "approvals.resolve"
            | "runs.get"
    );
    if !keyed {
        return None;
    }
    let probe: Probe = match params {
        Some(p) if p.trim_start().starts_with('{') => serde_json::from_str(p).ok()?,
        // Positional params or none: the method's own checks answer.
        Some(_) => return None,
        None => Probe {
            session_key: None,
            key: None,
            run_id: None,
            approval_id: None,
        },
    };
    match method {
        "chat.send" => Some(Target::Session(
            probe.session_key.unwrap_or_else(|| "main".into()),
        )),
        "chat.history" | "chat.inject" => probe.session_key.map(Target::Session),
        "chat.abort" => probe
            .session_key
            .map(Target::Session)
            .or(probe.run_id.map(Target::Run)),
        "runs.get" => probe.run_id.map(Target::Run),
        "approvals.get" | "approvals.resolve" => probe.approval_id.map(Target::Approval),
        _ => probe.key.map(Target::Session),
    }
}

fn unavailable(message: String) -> Error {
    Error::Unavailable {
        message,
        retryable: true,
    }
}

/// The request text of a call to forward, with the caller's id.
fn request_text(call: &RouteCall<'_>) -> String {
    let method = serde_json::to_string(call.method).unwrap_or_else(|_| "\"\"".into());
    match call.params {
        Some(p) => format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":{method},\"params\":{p}}}",
            call.id
        ),
        None => format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":{method}}}",
            call.id
        ),
    }
}

impl Gateway {
    fn parts(&self) -> Option<&ClusterParts> {
        self.cluster.get()
    }

    /// Cluster mode: every session of the shared index (`None` for one process).
    pub async fn indexed_sessions(&self) -> Option<Result<Vec<crate::protocol::Session>, Error>> {
        let parts = self.parts()?;
        Some(parts.log.indexed().await.map_err(|e| {
            unavailable(format!(
                "cannot read the cluster's session index: {e}; retry"
            ))
        }))
    }

    /// Runs `method` with `params` on the node it belongs to when that is another node (its
    /// result, or its error as is); `None`: it runs here (one process, or this node owns it).
    pub async fn call_elsewhere(
        self: &Arc<Self>,
        method: &str,
        params: &str,
        scope: Scope,
    ) -> Option<Result<serde_json::Value, Error>> {
        let call = RouteCall {
            method,
            params: Some(params),
            id: "0",
            scope,
            forwarded: false,
        };
        match self.route_call(call)?.await {
            Route::Here => None,
            Route::Refused(err) => Some(Err(err)),
            Route::Answered(json) => {
                let v: serde_json::Value = match serde_json::from_str(&json) {
                    Ok(v) => v,
                    Err(e) => return Some(Err(Error::internal(format!("a node's answer: {e}")))),
                };
                Some(match v.get("result") {
                    Some(result) => Ok(result.clone()),
                    None => Err(Error::Remote {
                        code: v["error"]["code"]
                            .as_i64()
                            .and_then(|c| i32::try_from(c).ok())
                            .unwrap_or(-32603),
                        message: v["error"]["message"]
                            .as_str()
                            .unwrap_or("failed on another node")
                            .to_string(),
                        data: v["error"]["data"].clone(),
                    }),
                })
            }
        }
    }

    /// [`crate::agent::AgentHost::claim`]: this node owns `key` (taken over now if no node
    /// held it), or the reason it does not.
    pub(super) async fn claim_session(self: &Arc<Self>, key: &str) -> Result<(), String> {
        let Some(parts) = self.parts() else {
            return Ok(());
        };
        if self.store().is_ephemeral(key) {
            return Ok(());
        }
        match parts.owners.owner(key).await.map_err(|e| e.to_string())? {
            Owner::Me { taken: false } => Ok(()),
            Owner::Me { taken: true } => match self.take_over(parts, key).await {
                Ok(()) => Ok(()),
                Err(err) => {
                    parts.owners.release(key).await;
                    Err(format!("cannot take session `{key}` over: {err}"))
                }
            },
            Owner::Other(node) => Err(format!(
                "session `{key}` is owned by node `{node}`; a call through JSON-RPC on any node is forwarded there"
            )),
        }
    }

    /// The sessions this node owns (0 for one process).
    pub fn sessions_owned(&self) -> usize {
        self.parts().map_or(0, |p| p.owners.count())
    }

    /// [`crate::rpc::Host::route`] for the gateway: `None` outside cluster mode and for calls
    /// that run on any node.
    pub(super) fn route_call(
        self: &Arc<Self>,
        call: RouteCall<'_>,
    ) -> Option<crate::rpc::table::BoxFuture<Route>> {
        self.parts()?;
        let target = target(call.method, call.params)?;
        let gw = self.clone();
        let text = request_text(&call);
        let (scope, forwarded) = (call.scope, call.forwarded);
        Some(Box::pin(async move {
            let Some(parts) = gw.parts() else {
                return Route::Here;
            };
            if !parts.cluster.connected() {
                return Route::Refused(unavailable(
                    "NATS is unreachable: this node cannot reach the session's owner; retry shortly".into(),
                ));
            }
            match target {
                Target::Session(key) => gw.route_session(parts, key, text, scope, forwarded).await,
                Target::Run(id) => {
                    if forwarded || gw.agent().run_info(&id).is_some() {
                        return Route::Here;
                    }
                    gw.find(parts, &format!("run:{id}"), text, scope).await
                }
                Target::Approval(id) => {
                    if forwarded || gw.agent().approvals().get(&id).is_ok() {
                        return Route::Here;
                    }
                    gw.find(parts, &format!("approval:{id}"), text, scope).await
                }
            }
        }))
    }

    async fn route_session(
        self: &Arc<Self>,
        parts: &ClusterParts,
        key: String,
        text: String,
        scope: Scope,
        forwarded: bool,
    ) -> Route {
        // Ephemeral sessions (the OpenAI door's) live on the node that made them.
        if self.store().is_ephemeral(&key) {
            return Route::Here;
        }
        match parts.owners.owner(&key).await {
            Ok(Owner::Me { taken: false }) => Route::Here,
            Ok(Owner::Me { taken: true }) => match self.take_over(parts, &key).await {
                Ok(()) => Route::Here,
                Err(err) => {
                    parts.owners.release(&key).await;
                    Route::Refused(unavailable(format!(
                        "cannot take session `{key}` over: {err}; retry"
                    )))
                }
            },
            Ok(Owner::Other(node)) if forwarded => Route::Refused(unavailable(format!(
                "session `{key}` moved to node `{node}` meanwhile; retry"
            ))),
            Ok(Owner::Other(node)) => {
                forward(parts, &node_subject(&node), None, text, scope)
                    .await
                    .unwrap_or_else(|why| {
                        Route::Refused(unavailable(format!(
                            "session `{key}` is owned by node `{node}`, which does not answer ({why}); if it died, another node takes the session over within cluster.lease_ms; retry"
                        )))
                    })
            }
            Err(err) => Route::Refused(unavailable(format!(
                "cannot tell which node owns session `{key}`: {err}; retry"
            ))),
        }
    }

    /// Asks every node for the one that has `what` (`run:<id>`, `approval:<id>`); none answers:
    /// here (where the call finds nothing and says so).
    async fn find(&self, parts: &ClusterParts, what: &str, text: String, scope: Scope) -> Route {
        match forward(parts, ANY_SUBJECT, Some(what), text, scope).await {
            Ok(route) => route,
            Err(_) => Route::Here,
        }
    }

    /// This node just took `key`'s lease: its transcript is brought up to date from the shared
    /// log (or, when the log has never seen the session, the log from this node's copy), and
    /// its runs left open by the previous owner are resumed.
    async fn take_over(self: &Arc<Self>, parts: &ClusterParts, key: &str) -> Result<(), String> {
        let indexed = parts
            .cluster
            .sessions()
            .entry(key_of(key))
            .await
            .map_err(|e| e.to_string())?
            .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
            .and_then(|e| serde_json::from_slice::<crate::protocol::Session>(&e.value).ok());
        match indexed {
            Some(session) => {
                let lines = parts.log.read(&session.session_id).await?;
                if lines.is_empty() {
                    return Err(format!(
                        "the shared log has no line of transcript {}",
                        session.session_id
                    ));
                }
                self.store()
                    .adopt(key, &session.session_id, lines)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            None => {
                // Known here only (made before cluster mode, or its index entry is missing):
                // this node's copy becomes the shared one.
                if let Some((id, lines)) = self
                    .store()
                    .transcript_lines(key)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    if parts.log.read(&id).await?.is_empty() {
                        use crate::store::TranscriptLog;
                        parts.log.append(key, &id, lines).await?;
                    }
                    if let Ok(session) = self.store().get(key) {
                        parts.log.index(key, Some(&session)).await;
                    }
                }
            }
        }
        let resumed = self.agent().resume_where(self, |k| k == key);
        if resumed > 0 {
            tracing::info!(
                session = key,
                runs = resumed,
                "resumed the runs of a session taken over"
            );
        }
        Ok(())
    }
}

/// Sends a call to `subject` and waits for its answer; `Err` when no node answered.
async fn forward(
    parts: &ClusterParts,
    subject: &str,
    find: Option<&str>,
    text: String,
    scope: Scope,
) -> Result<Route, String> {
    let mut headers = HeaderMap::new();
    headers.insert(H_SCOPE, scope.as_str());
    if let Some(find) = find {
        headers.insert(H_FIND, find);
    }
    let patience = if find.is_some() {
        FIND_PATIENCE
    } else {
        FORWARD_PATIENCE
    };
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(Bytes::from(text))
        .timeout(Some(patience));
    let answer = parts
        .cluster
        .client()
        .send_request(subject.to_string(), request)
        .await
        .map_err(|e| e.to_string())?;
    let json = String::from_utf8(answer.payload.to_vec()).map_err(|e| e.to_string())?;
    Ok(Route::Answered(json))
}

/// Starts cluster mode's parts of a started gateway: the shared log under the store, the lease
/// renewals, the service answering forwarded calls, the watch over other nodes' leases, and
/// the `main` session's ownership.
pub(super) async fn start(gw: &Arc<Gateway>) {
    let Some(parts) = gw.parts() else { return };
    gw.store().set_log(parts.log.clone());
    {
        let log = parts.log.clone();
        let gw2 = Arc::downgrade(gw);
        tokio::spawn(
            parts
                .owners
                .clone()
                .renew_loop(parts.stop.clone(), move |key| {
                    if let Some(gw) = gw2.upgrade()
                        && let Ok(session) = gw.store().get(key)
                    {
                        log.forget(&session.session_id);
                    }
                }),
        );
    }
    for subject in [
        node_subject(parts.cluster.node_id()),
        ANY_SUBJECT.to_string(),
    ] {
        match parts.cluster.client().subscribe(subject.clone()).await {
            Ok(sub) => {
                tokio::spawn(serve(gw.clone(), sub, parts.stop.clone()));
            }
            Err(err) => tracing::error!(%subject, %err, "cannot answer forwarded calls"),
        }
    }
    tokio::spawn(watch_leases(gw.clone(), parts.stop.clone()));
    // The sessions this node had runs open in: resumed here if it still owns them (else their
    // new owner resumed them), and `main`, which every node has and one owns.
    let mut keys: Vec<String> = gw
        .store()
        .open_runs()
        .into_iter()
        .map(|(key, _, _)| key)
        .collect();
    keys.dedup();
    keys.push("main".into());
    for key in keys {
        match parts.owners.owner(&key).await {
            Ok(Owner::Me { taken }) => {
                if taken && let Err(err) = gw.take_over(parts, &key).await {
                    tracing::warn!(session = %key, %err, "cannot take a session over at start");
                    parts.owners.release(&key).await;
                    continue;
                }
                let agent = gw.config().default_agent_id().to_string();
                if key == "main"
                    && let Err(err) = gw.store().ensure("main", &agent).await
                {
                    tracing::warn!(%err, "cannot create the main session");
                }
            }
            Ok(Owner::Other(_)) => {}
            Err(err) => {
                tracing::warn!(session = %key, %err, "cannot read a session lease at start")
            }
        }
    }
}

/// Answers the calls forwarded on one subscription until `stop`.
async fn serve(gw: Arc<Gateway>, mut sub: async_nats::Subscriber, stop: CancellationToken) {
    loop {
        let msg = tokio::select! {
            m = sub.next() => m,
            () = stop.cancelled() => return,
        };
        let Some(msg) = msg else { return };
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let headers = msg.headers.as_ref();
        let scope = headers
            .and_then(|h| h.get(H_SCOPE))
            .and_then(|v| serde_json::from_value::<Scope>(v.as_str().into()).ok())
            .unwrap_or(Scope::Read);
        if let Some(find) = headers.and_then(|h| h.get(H_FIND)) {
            let has = match find.as_str().split_once(':') {
                Some(("run", id)) => gw.agent().run_info(id).is_some(),
                Some(("approval", id)) => gw.agent().approvals().get(id).is_ok(),
                _ => false,
            };
            if !has {
                continue;
            }
        }
        let gw = gw.clone();
        tokio::spawn(async move {
            let conn = crate::rpc::Connection::new(
                format!("{}:forwarded", gw.next_conn_id()),
                std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                std::net::IpAddr::from([0, 0, 0, 0]),
                crate::rpc::auth::Credential::Anonymous,
                None,
            );
            let answer =
                crate::rpc::dispatch::handle_forwarded(&gw, &conn, &msg.payload, scope).await;
            let body = Bytes::from(answer.unwrap_or_default().into_bytes());
            if let Some(parts) = gw.parts()
                && let Err(err) = parts.cluster.client().publish(reply, body).await
            {
                tracing::warn!(%err, "cannot answer a forwarded call");
            }
        });
    }
}

/// Watches the other nodes' leases; when one vanishes (its node died and the lease expired,
/// or it was handed over on SIGTERM), this node tries to take the session over, so its open
/// runs resume without waiting for a call.
async fn watch_leases(gw: Arc<Gateway>, stop: CancellationToken) {
    let Some(parts) = gw.parts() else { return };
    let every = Duration::from_millis(parts.cluster.config().lease_ms / 2);
    let me = parts.cluster.node_id().to_string();
    // Session key -> the node holding it, as last seen.
    let mut others: HashMap<String, String> = HashMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        if !parts.cluster.connected() {
            continue;
        }
        let Ok(mut keys) = parts.cluster.leases().keys().await else {
            continue;
        };
        let mut now: HashMap<String, String> = HashMap::new();
        while let Some(Ok(k)) = keys.next().await {
            let Some(session) = text_of(&k) else { continue };
            if let Some(holder) = others.get(&session) {
                now.insert(session, holder.clone());
                continue;
            }
            if let Ok(Some(e)) = parts.cluster.leases().entry(k.clone()).await {
                let holder = String::from_utf8_lossy(&e.value).into_owned();
                if holder != me {
                    now.insert(session, holder);
                }
            }
        }
        for (session, holder) in &others {
            if now.contains_key(session) {
                continue;
            }
            match parts.owners.owner(session).await {
                Ok(Owner::Me { taken: true }) => {
                    tracing::info!(session = %session, from = %holder, "taking over a session whose owner went away");
                    if let Err(err) = gw.take_over(parts, session).await {
                        tracing::warn!(session = %session, %err, "cannot take a session over");
                        parts.owners.release(session).await;
                    }
                }
                Ok(Owner::Other(next)) => {
                    now.insert(session.clone(), next);
                }
                _ => {}
            }
        }
        others = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_run_where_their_session_run_or_approval_is() {
        let t = |m: &str, p: &str| target(m, Some(p));
        assert_eq!(
            t("chat.send", r#"{"sessionKey":"k","message":"x"}"#),
            Some(Target::Session("k".into()))
        );
        assert_eq!(
            t("chat.send", r#"{"message":"x"}"#),
            Some(Target::Session("main".into()))
        );
        assert_eq!(
            t("sessions.reset", r#"{"key":"k"}"#),
            Some(Target::Session("k".into()))
        );
        assert_eq!(
            t("chat.abort", r#"{"runId":"r"}"#),
            Some(Target::Run("r".into()))
        );
        assert_eq!(
            t(
                "approvals.resolve",
                r#"{"approvalId":"a","decision":"allow"}"#
            ),
            Some(Target::Approval("a".into()))
        );
        assert_eq!(t("gateway.health", "{}"), None);
        assert_eq!(t("sessions.create", "{}"), None);
        // A bad member is left to the method's own checks.
        assert_eq!(t("chat.send", r#"{"sessionKey":5}"#), None);
        assert_eq!(t("chat.send", "[1]"), None);
        let call = RouteCall {
            method: "chat.send",
            params: Some(r#"{"message":"x"}"#),
            id: "7",
            scope: Scope::Write,
            forwarded: false,
        };
        let text = request_text(&call);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["id"], 7);
        assert_eq!(v["params"]["message"], "x");
    }
}
