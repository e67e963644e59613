//! JSON-RPC 2.0 dispatch, owned end to end: one message (a request, a notification or a
//! batch) into the method table. Per message: the connection's order and the batch limits;
//! per request: its id, its framing, the connection's admission, the method and the caller's
//! scope, then the call by its kind (call, subscribe, unsubscribe) and its answer.
//!
//! jsonrpsee's own framing deviates from the specification (ids other than u64/string/null are
//! not echoed, notifications do not run, some malformed requests get the wrong code, HTTP
//! notifications get a body), so both transports hand raw messages to [`handle_message`] and
//! only well-formed calls reach jsonrpsee's method table. The request text and the response
//! texts are `wire.rs`; the connection's order is `order.rs`.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use jsonrpsee::core::server::MethodCallback;
use jsonrpsee::types::{Id, Params};
use serde_json::value::RawValue;

use super::context::{CallContext, Connection, SubscriptionSink, Transport};
use super::order::touches_sessions;
pub use super::order::{Sequencer, Ticket};
use super::table::{MethodKind, SubscribeHandler, SubscriptionTask, parse_params};
pub use super::wire::error_json;
use super::wire::{RawRequest, RequestId, classify_id, finish_response, success_json};
use super::{Entry, Host, Route, RouteCall, TableSnapshot};
use crate::config::Config;
use crate::error::{Error, code};
use crate::metrics::MethodMetrics;
use crate::protocol::{Scope, UnsubscribeParams};

/// A subscription accepted by a call, to start once the reply has been queued.
pub struct Accepted {
    conn: Arc<Connection>,
    sink: SubscriptionSink,
    task: SubscriptionTask,
}

/// The answer to one message.
#[derive(Default)]
pub struct Reply {
    /// The response text, `None` when nothing is to be sent (notifications only).
    pub json: Option<String>,
    /// Subscriptions to start after `json` has been queued, so no notification overtakes it.
    pub accepted: Vec<Accepted>,
}

impl Reply {
    fn single(json: String) -> Self {
        Self {
            json: Some(json),
            accepted: Vec::new(),
        }
    }

    /// Starts the accepted subscriptions; call after the response has been queued.
    pub fn start_subscriptions<S: Host>(self, gateway: &S) {
        for Accepted { conn, sink, task } in self.accepted {
            let id = sink.id().to_string();
            gateway.tasks().spawn(async move {
                task(sink).await;
                if let Some(ws) = &conn.ws
                    && let Ok(mut subs) = ws.subscriptions.lock()
                {
                    subs.remove(&id);
                }
            });
        }
    }
}

/// Handles one message (a request, a notification or a batch) from `conn`; `ticket`, when
/// given, is its place in the connection's order.
pub async fn handle_message<S: Host>(
    gateway: &Arc<S>,
    conn: &Arc<Connection>,
    body: &[u8],
    mut ticket: Option<Ticket>,
) -> Reply {
    conn.touch();
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let limit = gateway.config().gateway.max_payload_bytes;
    match first {
        Some(b'{') => match serde_json::from_slice::<RawRequest<'_>>(body) {
            Ok(req) => {
                let mut reply = Reply::default();
                // Read once: it decides the order here and names the method below.
                let method = req.method_name();
                if method.as_deref().is_some_and(touches_sessions) {
                    if let Some(t) = ticket.as_mut() {
                        t.wait_turn().await;
                    }
                } else {
                    drop(ticket.take());
                }
                if let Some(out) = handle_request(gateway, conn, req, method, limit).await {
                    reply.json = Some(out.json);
                    reply.accepted.extend(out.accepted);
                }
                drop(ticket);
                reply
            }
            Err(err) => refused(gateway, &Error::Parse(short(&err))),
        },
        Some(b'[') => match serde_json::from_slice::<Vec<&RawValue>>(body) {
            Ok(entries) => {
                if let Some(t) = ticket.as_mut() {
                    t.wait_turn().await;
                }
                let reply = handle_batch(gateway, conn, entries).await;
                drop(ticket);
                reply
            }
            Err(err) => refused(gateway, &Error::Parse(short(&err))),
        },
        _ => match serde_json::from_slice::<&RawValue>(body) {
            Ok(_) => refused(
                gateway,
                &Error::InvalidRequest("expected a request object or a batch array".into()),
            ),
            Err(err) => refused(gateway, &Error::Parse(short(&err))),
        },
    }
}

/// The answer to a message that names no request: counted under the "unknown" method.
fn refused<S: Host>(gateway: &Arc<S>, err: &Error) -> Reply {
    gateway
        .table()
        .unknown_metrics()
        .record(Some(err.code()), std::time::Duration::ZERO);
    Reply::single(error_json("null", err))
}

fn short(err: &serde_json::Error) -> String {
    err.to_string()
}

async fn handle_batch<S: Host>(
    gateway: &Arc<S>,
    conn: &Arc<Connection>,
    entries: Vec<&RawValue>,
) -> Reply {
    let max = gateway.config().gateway.max_batch;
    if entries.is_empty() {
        return refused(
            gateway,
            &Error::InvalidRequest("empty batch: a batch needs at least one request".into()),
        );
    }
    if entries.len() > max {
        return refused(
            gateway,
            &Error::InvalidRequest(format!(
                "batch of {} requests is over the limit of {max} (policy.maxBatch); nothing was run",
                entries.len()
            )),
        );
    }
    let limit = gateway.config().gateway.max_payload_bytes;
    let count = entries.len();
    let mut parts = Vec::with_capacity(count);
    let mut accepted = Vec::new();
    // The answers built so far, in bytes: once they would pass the limit, nothing more is run
    // and every later call is answered -32008, so a batch never builds more than one
    // response's worth of answers.
    let mut used = 1;
    let mut spent = false;
    for (i, entry) in entries.into_iter().enumerate() {
        let parsed = serde_json::from_str::<RawRequest<'_>>(entry.get());
        let out = match parsed {
            Err(_) => Some(Outcome::json(error_json(
                "null",
                &Error::InvalidRequest("expected a request object".into()),
            ))),
            Ok(req) if spent => req.id.map(|raw| {
                let id = classify_id(raw).map_or("null", |id| id.raw);
                Outcome::json(error_json(id, &Error::ResponseTooLarge { limit }))
            }),
            Ok(req) => {
                // Room for this answer, keeping some for the errors of the ones after it.
                let reserve = (count - i - 1) * ERROR_ENTRY_BYTES;
                let room = limit.saturating_sub(used + reserve);
                let method = req.method_name();
                let out = handle_request(gateway, conn, req, method, room).await;
                if let Some(out) = &out
                    && out.too_large
                {
                    spent = true;
                }
                out
            }
        };
        if let Some(out) = out {
            used += out.json.len() + 1;
            parts.push(out.json);
            accepted.extend(out.accepted);
        }
    }
    if parts.is_empty() {
        return Reply {
            json: None,
            accepted,
        };
    }
    let len: usize = parts.iter().map(|p| p.len() + 1).sum::<usize>() + 1;
    if len > limit {
        // The client never learns these subscriptions' ids: do not start them, free their slots.
        for a in accepted {
            if let Some(ws) = &a.conn.ws
                && let Ok(mut subs) = ws.subscriptions.lock()
            {
                subs.remove(a.sink.id());
            }
        }
        return Reply {
            json: Some(error_json("null", &Error::ResponseTooLarge { limit })),
            accepted: Vec::new(),
        };
    }
    let mut json = String::with_capacity(len);
    json.push('[');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(part);
    }
    json.push(']');
    Reply {
        json: Some(json),
        accepted,
    }
}

/// Bytes kept, per later entry of a batch, for a `-32008` answer.
const ERROR_ENTRY_BYTES: usize = 160;

struct Outcome {
    json: String,
    accepted: Option<Accepted>,
    /// The answer is `-32008`: the result did not fit.
    too_large: bool,
    /// The error code the answer carries (`None`: a result), for the metrics.
    code: Option<i32>,
}

impl Outcome {
    fn json(json: String) -> Self {
        Self {
            json,
            accepted: None,
            too_large: false,
            code: None,
        }
    }
}

/// Handles one request whose answer may take at most `limit` bytes; `method` is its
/// [`RawRequest::method_name`], read once by the caller.
///
/// The steps, each refusing with its own error: [`request_id`], [`well_formed`] (both answered
/// even for a notification: nobody can tell a malformed request was one), then [`admit`],
/// [`resolve`] and [`Host::unavailable`], then the call by its kind ([`call`], [`subscribe`],
/// [`unsubscribe`]); from `admit` on, a notification gets no answer.
async fn handle_request<S: Host>(
    gateway: &Arc<S>,
    conn: &Arc<Connection>,
    req: RawRequest<'_>,
    method: Option<Cow<'_, str>>,
    limit: usize,
) -> Option<Outcome> {
    let started = std::time::Instant::now();
    let table = gateway.table();
    // The method's handles once it is found in the table; "unknown" until then.
    let mut metrics = table.unknown_metrics();
    let (out, code) = run_request(
        gateway,
        conn,
        &table,
        &mut metrics,
        req,
        method,
        limit,
        None,
    )
    .await;
    metrics.record(code, started.elapsed());
    out
}

/// Runs one request another process forwarded here ([`Host::route`]) with the caller's scope
/// given by that process; answers the response text (`None` for a notification or a message
/// that is not one request). It is run here or refused, never forwarded again.
pub async fn handle_forwarded<S: Host>(
    gateway: &Arc<S>,
    conn: &Arc<Connection>,
    body: &[u8],
    scope: Scope,
) -> Option<String> {
    let req = serde_json::from_slice::<RawRequest<'_>>(body).ok()?;
    let method = req.method_name();
    let limit = gateway.config().gateway.max_payload_bytes;
    let table = gateway.table();
    let mut metrics = table.unknown_metrics();
    let (out, _) = run_request(
        gateway,
        conn,
        &table,
        &mut metrics,
        req,
        method,
        limit,
        Some(scope),
    )
    .await;
    out.map(|o| o.json)
}

/// [`handle_request`]'s steps; answers the outcome and its error code (`None`: a success).
/// `forwarded` is the caller's scope of a call another process forwarded here.
#[allow(clippy::too_many_arguments)] // one request's parts, passed through once
async fn run_request<'t, S: Host>(
    gateway: &Arc<S>,
    conn: &Arc<Connection>,
    table: &'t TableSnapshot<S>,
    metrics: &mut &'t MethodMetrics,
    req: RawRequest<'_>,
    method: Option<Cow<'_, str>>,
    limit: usize,
    forwarded: Option<Scope>,
) -> (Option<Outcome>, Option<i32>) {
    // The id first: every error we can tie to a request echoes it.
    let id = match request_id(&req) {
        Ok(id) => id,
        Err(err) => {
            return (
                Some(Outcome::json(error_json("null", &err))),
                Some(err.code()),
            );
        }
    };
    let (method, params) = match well_formed(&req, method) {
        Ok(parts) => parts,
        Err(err) => {
            let id = id.as_ref().map_or("null", |id| id.raw);
            return (Some(Outcome::json(error_json(id, &err))), Some(err.code()));
        }
    };
    // Errors of a call (or a notification, which gets none).
    let fail = |err: Error| -> (Option<Outcome>, Option<i32>) {
        let out = id
            .as_ref()
            .map(|id| Outcome::json(error_json(id.raw, &err)));
        (out, Some(err.code()))
    };
    let config = gateway.config();
    let admitted = match forwarded {
        Some(scope) if !gateway.is_shutting_down() => Ok(scope),
        _ => admit(&**gateway, conn, &config),
    };
    let scope = match admitted {
        Ok(scope) => scope,
        Err(err) => return fail(err),
    };
    let entry = match resolve(table, &method, scope) {
        Ok(entry) => entry,
        Err((err, found)) => {
            if let Some(found) = found {
                *metrics = &found.metrics;
            }
            return fail(err);
        }
    };
    *metrics = &entry.metrics;
    if let Some(err) = gateway.unavailable(&entry.desc) {
        return fail(err);
    }
    let desc = &entry.desc;
    if matches!(desc.kind, MethodKind::Call(_)) {
        let call = RouteCall {
            method: &method,
            params,
            id: id.as_ref().map_or("null", |id| id.raw),
            scope,
            forwarded: forwarded.is_some(),
        };
        if let Some(route) = gateway.route(call) {
            match route.await {
                Route::Here => {}
                Route::Answered(json) => return (id.as_ref().map(|_| Outcome::json(json)), None),
                Route::Refused(err) => return fail(err),
            }
        }
    }
    let ready = Ready {
        ctx: CallContext {
            gateway: gateway.clone(),
            conn: conn.clone(),
            scope,
        },
        conn,
        id: id.as_ref(),
        method,
        params,
    };
    let ran = match &desc.kind {
        MethodKind::Call(_) => call(ready, entry.callback.as_ref(), limit).await,
        MethodKind::Subscribe {
            handler,
            notification,
            ..
        } => {
            let max = config.gateway.max_subscriptions_per_connection;
            subscribe(ready, desc.scope, handler, notification, max).await
        }
        MethodKind::Unsubscribe { subscribe } => unsubscribe(ready, subscribe),
    };
    match ran {
        Ok(out) => {
            let code = out.as_ref().and_then(|o| o.code);
            (out, code)
        }
        Err(err) => fail(err),
    }
}

/// The request's id, `None` for a notification; refused when it is not a string, a number or
/// null.
fn request_id<'a>(req: &RawRequest<'a>) -> Result<Option<RequestId<'a>>, Error> {
    match req.id {
        None => Ok(None),
        Some(raw) => classify_id(raw)
            .map(Some)
            .ok_or_else(|| Error::InvalidRequest("`id` must be a string, a number or null".into())),
    }
}

/// Checks the request object's members (no unknown one, `jsonrpc` exactly `"2.0"`, a string
/// `method`, `params` an object or an array); returns the method name and the raw params.
fn well_formed<'a>(
    req: &RawRequest<'a>,
    method: Option<Cow<'a, str>>,
) -> Result<(Cow<'a, str>, Option<&'a str>), Error> {
    if let Some(name) = &req.unknown {
        return Err(Error::InvalidRequest(format!(
            "unknown member `{name}`: a request has only jsonrpc, method, params and id"
        )));
    }
    if req.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return Err(Error::InvalidRequest(
            "`jsonrpc` must be exactly \"2.0\"".into(),
        ));
    }
    let Some(method) = method else {
        return Err(Error::InvalidRequest("`method` must be a string".into()));
    };
    if let Some(params) = req.params {
        let first = params.get().as_bytes().first();
        if first != Some(&b'{') && first != Some(&b'[') {
            return Err(Error::invalid_params(
                "",
                "params must be an object (named params) or an array",
            ));
        }
    }
    Ok((method, req.params.map(RawValue::get)))
}

/// Admission: the gateway is not shutting down, the connection's address is not locked out
/// for failed logins (it is refused inside the connections it has too), and its credentials
/// are still accepted; returns the connection's scope.
fn admit<S: Host>(gateway: &S, conn: &Connection, config: &Config) -> Result<Scope, Error> {
    if gateway.is_shutting_down() {
        return Err(Error::Unavailable {
            message: "the gateway is shutting down".into(),
            retryable: true,
        });
    }
    let limits = super::throttle::Limits::from(&config.gateway.auth);
    if let Some(retry_after_ms) =
        gateway
            .throttle()
            .locked_for(&limits, conn.client_ip, crate::util::now_ms())
    {
        return Err(Error::RateLimited { retry_after_ms });
    }
    gateway.tokens().scope(&conn.credential).ok_or_else(|| {
        Error::Unauthorized("the credentials of this connection are no longer accepted".into())
    })
}

/// The method's entry (descriptor, callback, metric handles: one lookup finds all) when
/// `scope` reaches the method's scope; a refusal names the entry it found, if any.
fn resolve<'t, S: Host>(
    table: &'t TableSnapshot<S>,
    method: &str,
    scope: Scope,
) -> Result<&'t Entry<S>, (Error, Option<&'t Entry<S>>)> {
    let Some(entry) = table.entry(method) else {
        return Err((
            Error::MethodNotFound(format!(
                "no method named `{method}`; rpc.discover lists them"
            )),
            None,
        ));
    };
    if scope < entry.desc.scope {
        return Err((
            Error::Forbidden {
                required: entry.desc.scope,
            },
            Some(entry),
        ));
    }
    Ok(entry)
}

/// A request that passed its checks, on its way to its method.
struct Ready<'r, S> {
    /// What the handler receives.
    ctx: CallContext<S>,
    /// The caller's connection (the one in `ctx`).
    conn: &'r Arc<Connection>,
    /// `None` for a notification.
    id: Option<&'r RequestId<'r>>,
    method: Cow<'r, str>,
    params: Option<&'r str>,
}

/// Runs a call through its jsonrpsee callback (a notification runs too, unanswered); the
/// answer carries the client's id, or is `-32008` past `limit`.
async fn call<S: Host>(
    ready: Ready<'_, S>,
    callback: Option<&MethodCallback>,
    limit: usize,
) -> Result<Option<Outcome>, Error> {
    let Ready {
        ctx,
        id,
        method,
        params,
        ..
    } = ready;
    let Some(MethodCallback::Async(callback)) = callback else {
        return Err(Error::internal(format!(
            "`{method}` is missing from the jsonrpsee table"
        )));
    };
    let native = id.map_or(Id::Null, |i| i.native.clone()).into_owned();
    let mut extensions = http::Extensions::new();
    extensions.insert(ctx);
    let params = Params::new(params).into_owned();
    let call = callback(
        native,
        params,
        jsonrpsee::core::server::ConnectionId(0),
        limit,
        extensions,
    );
    // A handler that panics must still get its request answered.
    let response = AssertUnwindSafe(call).catch_unwind().await;
    let Some(id) = id else { return Ok(None) };
    match response {
        Ok(response) => {
            let code = if response.is_error() {
                response.as_error_code()
            } else {
                None
            };
            let too_large = code == Some(code::RESPONSE_TOO_LARGE);
            let mut out = Outcome::json(finish_response(response, id, limit));
            out.too_large = too_large;
            out.code = code;
            Ok(Some(out))
        }
        Err(_) => {
            tracing::error!(method = &*method, "handler panicked");
            Err(Error::internal(format!("`{method}` failed unexpectedly")))
        }
    }
}

/// Prepares a subscription of a WebSocket connection (a notification subscribes to nothing)
/// and answers its id; it starts once that answer is queued ([`Reply::start_subscriptions`]).
/// Its slot among the connection's `max` is reserved before the handler runs, so concurrent
/// subscribes cannot pass the limit together.
async fn subscribe<S: Host>(
    ready: Ready<'_, S>,
    scope: Scope,
    handler: &SubscribeHandler<S>,
    notification: &str,
    max: usize,
) -> Result<Option<Outcome>, Error> {
    let Ready {
        ctx,
        conn,
        id,
        method,
        params,
    } = ready;
    let Some(id) = id else { return Ok(None) };
    let Some(ws) = (conn.transport == Transport::WebSocket)
        .then_some(())
        .and(conn.ws.as_ref())
    else {
        return Err(Error::WebSocketRequired(method.into_owned()));
    };
    let sub_id = uuid::Uuid::new_v4().simple().to_string();
    let cancel = ws.closed.child_token();
    let reserved: Result<(), usize> = match ws.subscriptions.lock() {
        Ok(subs) if subs.len() >= max => Err(subs.len()),
        Ok(mut subs) => {
            subs.insert(
                sub_id.clone(),
                (String::from(&*method), scope, cancel.clone()),
            );
            Ok(())
        }
        Err(_) => Ok(()),
    };
    if let Err(count) = reserved {
        return Err(Error::Busy(format!(
            "this connection already has {count} subscriptions (gateway.max_subscriptions_per_connection)"
        )));
    }
    let params = Params::new(params).into_owned();
    let prepared = AssertUnwindSafe(handler(ctx, params))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(Error::internal(format!("`{method}` failed unexpectedly"))));
    match prepared {
        Err(err) => {
            if let Ok(mut subs) = ws.subscriptions.lock() {
                subs.remove(&sub_id);
            }
            Err(err)
        }
        Ok(task) => {
            let sink = SubscriptionSink::new(sub_id.clone(), notification, ws.out.clone(), cancel);
            let result = serde_json::Value::from(sub_id).to_string();
            Ok(Some(Outcome {
                json: success_json(id.raw, &result),
                accepted: Some(Accepted {
                    conn: conn.clone(),
                    sink,
                    task,
                }),
                too_large: false,
                code: None,
            }))
        }
    }
}

/// Ends a subscription of this connection made through `subscribe` (a notification ends it
/// too, unanswered); answers whether there was one.
fn unsubscribe<S>(ready: Ready<'_, S>, subscribe: &str) -> Result<Option<Outcome>, Error> {
    let Ready {
        conn,
        id,
        method,
        params,
        ..
    } = ready;
    let Some(ws) = conn.ws.as_ref() else {
        return Err(Error::WebSocketRequired(method.into_owned()));
    };
    let sub_id = unsubscribe_id(params)?;
    let removed = ws
        .subscriptions
        .lock()
        .ok()
        .and_then(|mut subs| match subs.get(&sub_id) {
            Some((owner, _, _)) if owner == subscribe => subs.remove(&sub_id),
            _ => None,
        });
    let found = match removed {
        Some((_, _, cancel)) => {
            cancel.cancel();
            true
        }
        None => false,
    };
    let Some(id) = id else { return Ok(None) };
    Ok(Some(Outcome::json(success_json(
        id.raw,
        if found { "true" } else { "false" },
    ))))
}

/// `[subscriptionId]` or `{subscription}`.
fn unsubscribe_id(params: Option<&str>) -> Result<String, Error> {
    if let Some(text) = params
        && text.trim_start().starts_with('[')
    {
        let list: Vec<serde_json::Value> =
            serde_json::from_str(text).map_err(|e| Error::invalid_params("", e.to_string()))?;
        return match list.as_slice() {
            [serde_json::Value::String(id)] => Ok(id.clone()),
            _ => Err(Error::invalid_params(
                "[0]",
                "expected [subscriptionId] or {\"subscription\": subscriptionId}",
            )),
        };
    }
    parse_params::<UnsubscribeParams>(params).map(|p| p.subscription)
}
