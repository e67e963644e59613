//! JSON-RPC 2.0 framing, owned end to end: parse, validate, batch, id echo, scope check,
//! dispatch into the method table, and the one place errors become error objects.
//!
//! jsonrpsee's own framing deviates from the specification (ids other than u64/string/null are
//! not echoed, notifications do not run, some malformed requests get the wrong code, HTTP
//! notifications get a body), so both transports hand raw messages to [`handle_message`] and
//! only well-formed calls reach jsonrpsee's method table.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use std::sync::Arc;

use jsonrpsee::core::server::{MethodCallback, MethodResponse};
use jsonrpsee::types::{Id, Params};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::Host;
use super::context::{CallContext, Connection, SubscriptionSink, Transport};
use super::table::{MethodKind, SubscriptionTask, parse_params};
use crate::error::{Error, code};
use crate::protocol::UnsubscribeParams;

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

/// A message's place in its connection's order: calls that touch sessions take effect in the
/// order their messages arrived, whatever their size (a long message takes longer to parse).
///
/// Each message gets one, in arrival order, from [`Sequencer::ticket`]. A call that touches
/// sessions waits for the one before it to pass, and passes when it has taken effect; any
/// other message passes at once (the order is handed on without waiting for anything).
pub struct Ticket {
    prev: Option<tokio::sync::oneshot::Receiver<()>>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Ticket {
    /// Waits until every earlier message of the connection has passed.
    async fn wait_turn(&mut self) {
        if let Some(prev) = self.prev.take() {
            let _ = prev.await;
        }
    }
}

impl Drop for Ticket {
    /// Passes: the next message may take effect once the earlier ones have.
    fn drop(&mut self) {
        let Some(done) = self.done.take() else { return };
        let Some(mut prev) = self.prev.take() else {
            let _ = done.send(());
            return;
        };
        let pending = matches!(
            prev.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        );
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if pending => {
                handle.spawn(async move {
                    let _ = prev.await;
                    let _ = done.send(());
                });
            }
            _ => {
                let _ = done.send(());
            }
        }
    }
}

/// Hands out a connection's [`Ticket`]s in arrival order.
#[derive(Default)]
pub struct Sequencer {
    last: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Sequencer {
    /// The ticket of the next message.
    pub fn ticket(&mut self) -> Ticket {
        let (tx, rx) = tokio::sync::oneshot::channel();
        Ticket {
            prev: self.last.replace(rx),
            done: Some(tx),
        }
    }
}

/// Whether calls of `method` touch sessions (and so keep their connection's order).
fn touches_sessions(method: &str) -> bool {
    method.starts_with("chat.") || method.starts_with("sessions.")
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
                let method = req
                    .method
                    .and_then(|m| serde_json::from_str::<&str>(m.get()).ok());
                if method.is_some_and(touches_sessions) {
                    if let Some(t) = ticket.as_mut() {
                        t.wait_turn().await;
                    }
                } else {
                    drop(ticket.take());
                }
                if let Some(out) = handle_request(gateway, conn, req, limit).await {
                    reply.json = Some(out.json);
                    reply.accepted.extend(out.accepted);
                }
                drop(ticket);
                reply
            }
            Err(err) => Reply::single(error_json("null", &Error::Parse(short(&err)))),
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
            Err(err) => Reply::single(error_json("null", &Error::Parse(short(&err)))),
        },
        _ => match serde_json::from_slice::<&RawValue>(body) {
            Ok(_) => Reply::single(error_json(
                "null",
                &Error::InvalidRequest("expected a request object or a batch array".into()),
            )),
            Err(err) => Reply::single(error_json("null", &Error::Parse(short(&err)))),
        },
    }
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
        return Reply::single(error_json(
            "null",
            &Error::InvalidRequest("empty batch: a batch needs at least one request".into()),
        ));
    }
    if entries.len() > max {
        return Reply::single(error_json(
            "null",
            &Error::InvalidRequest(format!(
                "batch of {} requests is over the limit of {max} (policy.maxBatch); nothing was run",
                entries.len()
            )),
        ));
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
                let out = handle_request(gateway, conn, req, room).await;
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
}

impl Outcome {
    fn json(json: String) -> Self {
        Self {
            json,
            accepted: None,
            too_large: false,
        }
    }
}

/// How a request id is passed to jsonrpsee and echoed back.
struct RequestId<'a> {
    /// The id exactly as the client wrote it.
    raw: &'a str,
    /// The id given to jsonrpsee.
    native: Id<'a>,
    /// jsonrpsee cannot represent the id (negative, fractional, huge): it gets `0` and the raw
    /// id is put back into the response text.
    splice: bool,
}

fn classify_id(raw: &RawValue) -> Option<RequestId<'_>> {
    let text = raw.get();
    let bytes = text.as_bytes();
    let native = |native, splice| {
        Some(RequestId {
            raw: text,
            native,
            splice,
        })
    };
    match bytes.first()? {
        b'"' if !text.contains('\\') && text.len() >= 2 => {
            native(Id::Str(Cow::Borrowed(&text[1..text.len() - 1])), false)
        }
        b'"' => native(Id::Number(0), true),
        b'n' => native(Id::Null, false),
        b'0'..=b'9' => {
            let plain =
                bytes.iter().all(u8::is_ascii_digit) && (bytes.len() == 1 || bytes[0] != b'0');
            match text.parse::<u64>() {
                Ok(n) if plain => native(Id::Number(n), false),
                _ => native(Id::Number(0), true),
            }
        }
        b'-' => native(Id::Number(0), true),
        _ => None,
    }
}

/// Handles one request whose answer may take at most `limit` bytes.
async fn handle_request<S: Host>(
    gateway: &Arc<S>,
    conn: &Arc<Connection>,
    req: RawRequest<'_>,
    limit: usize,
) -> Option<Outcome> {
    // The id first: every error we can tie to a request echoes it.
    let id = match req.id {
        None => None,
        Some(raw) => match classify_id(raw) {
            Some(id) => Some(id),
            None => {
                return Some(Outcome::json(error_json(
                    "null",
                    &Error::InvalidRequest("`id` must be a string, a number or null".into()),
                )));
            }
        },
    };
    // Errors of a call (or a notification, which gets none).
    let fail = |err: Error| -> Option<Outcome> {
        id.as_ref()
            .map(|id| Outcome::json(error_json(id.raw, &err)))
    };
    // A malformed request object is always answered: nobody can tell it was a notification.
    let reject = |err: Error| -> Option<Outcome> {
        Some(Outcome::json(error_json(
            id.as_ref().map_or("null", |id| id.raw),
            &err,
        )))
    };
    if let Some(name) = req.unknown {
        return reject(Error::InvalidRequest(format!(
            "unknown member `{name}`: a request has only jsonrpc, method, params and id"
        )));
    }
    if req.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return reject(Error::InvalidRequest(
            "`jsonrpc` must be exactly \"2.0\"".into(),
        ));
    }
    let Some(method) = req
        .method
        .and_then(|m| serde_json::from_str::<String>(m.get()).ok())
    else {
        return reject(Error::InvalidRequest("`method` must be a string".into()));
    };
    if let Some(params) = req.params {
        let first = params.get().as_bytes().first();
        if first != Some(&b'{') && first != Some(&b'[') {
            return reject(Error::invalid_params(
                "",
                "params must be an object (named params) or an array",
            ));
        }
    }
    if gateway.is_shutting_down() {
        return fail(Error::Unavailable {
            message: "the gateway is shutting down".into(),
            retryable: true,
        });
    }
    let config = gateway.config();
    // An address locked out for failed logins is refused inside the connections it has too.
    let limits = super::throttle::Limits::from(&config.gateway.auth);
    if let Some(retry_after_ms) =
        gateway
            .throttle()
            .locked_for(&limits, conn.client_ip, crate::util::now_ms())
    {
        return fail(Error::RateLimited { retry_after_ms });
    }
    let Some(scope) = gateway.tokens().scope(&conn.credential) else {
        return fail(Error::Unauthorized(
            "the credentials of this connection are no longer accepted".into(),
        ));
    };
    let table = gateway.table();
    let Some((desc, callback)) = table.entry(&method) else {
        return fail(Error::MethodNotFound(format!(
            "no method named `{method}`; rpc.discover lists them"
        )));
    };
    if scope < desc.scope {
        return fail(Error::Forbidden {
            required: desc.scope,
        });
    }
    let ctx = CallContext {
        gateway: gateway.clone(),
        conn: conn.clone(),
        scope,
    };
    let params = req.params.map(RawValue::get);
    match &desc.kind {
        MethodKind::Call(_) => {
            let Some(MethodCallback::Async(callback)) = callback else {
                return fail(Error::internal(format!(
                    "`{method}` is missing from the jsonrpsee table"
                )));
            };
            let id_ref = id.as_ref();
            let native = id_ref.map_or(Id::Null, |i| i.native.clone()).into_owned();
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
            let id = id_ref?;
            match response {
                Ok(response) => {
                    let too_large = response.is_error()
                        && response.as_error_code() == Some(code::RESPONSE_TOO_LARGE);
                    let mut out = Outcome::json(finish_response(response, id, limit));
                    out.too_large = too_large;
                    Some(out)
                }
                Err(_) => {
                    tracing::error!(method, "handler panicked");
                    Some(Outcome::json(error_json(
                        id.raw,
                        &Error::internal(format!("`{method}` failed unexpectedly")),
                    )))
                }
            }
        }
        MethodKind::Subscribe {
            handler,
            notification,
            ..
        } => {
            let id = id.as_ref()?;
            let Some(ws) = (conn.transport == Transport::WebSocket)
                .then_some(())
                .and(conn.ws.as_ref())
            else {
                return fail(Error::WebSocketRequired(method));
            };
            let max = config.gateway.max_subscriptions_per_connection;
            // The slot is reserved before the handler runs, so concurrent subscribes cannot
            // pass the limit together.
            let sub_id = uuid::Uuid::new_v4().simple().to_string();
            let cancel = ws.closed.child_token();
            let reserved: Result<(), usize> = match ws.subscriptions.lock() {
                Ok(subs) if subs.len() >= max => Err(subs.len()),
                Ok(mut subs) => {
                    subs.insert(sub_id.clone(), (method.clone(), desc.scope, cancel.clone()));
                    Ok(())
                }
                Err(_) => Ok(()),
            };
            if let Err(count) = reserved {
                return fail(Error::Busy(format!(
                    "this connection already has {count} subscriptions (gateway.max_subscriptions_per_connection)"
                )));
            }
            let params = Params::new(params).into_owned();
            let prepared = AssertUnwindSafe(handler(ctx, params))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Err(Error::internal(format!("`{method}` failed unexpectedly")))
                });
            match prepared {
                Err(err) => {
                    if let Ok(mut subs) = ws.subscriptions.lock() {
                        subs.remove(&sub_id);
                    }
                    fail(err)
                }
                Ok(task) => {
                    let sink =
                        SubscriptionSink::new(sub_id.clone(), notification, ws.out.clone(), cancel);
                    let result = serde_json::Value::from(sub_id).to_string();
                    Some(Outcome {
                        json: success_json(id.raw, &result),
                        accepted: Some(Accepted {
                            conn: conn.clone(),
                            sink,
                            task,
                        }),
                        too_large: false,
                    })
                }
            }
        }
        MethodKind::Unsubscribe { subscribe } => {
            let Some(ws) = conn.ws.as_ref() else {
                return fail(Error::WebSocketRequired(method));
            };
            let sub_id = match unsubscribe_id(params) {
                Ok(sub_id) => sub_id,
                Err(err) => return fail(err),
            };
            let removed =
                ws.subscriptions
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
            let id = id.as_ref()?;
            Some(Outcome::json(success_json(
                id.raw,
                if found { "true" } else { "false" },
            )))
        }
    }
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

/// Turns jsonrpsee's response into ours: the client's exact id, and `data.kind` on its errors.
fn finish_response(response: MethodResponse, id: &RequestId<'_>, limit: usize) -> String {
    if response.is_error() && response.as_error_code() == Some(code::RESPONSE_TOO_LARGE) {
        return error_json(id.raw, &Error::ResponseTooLarge { limit });
    }
    let json: String = Box::<str>::from(response.into_json()).into();
    if !id.splice {
        return json;
    }
    const PREFIX: &str = "{\"jsonrpc\":\"2.0\",\"id\":0,";
    match json.strip_prefix(PREFIX) {
        Some(rest) => {
            let mut out = String::with_capacity(json.len() + id.raw.len());
            out.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
            out.push_str(id.raw);
            out.push(',');
            out.push_str(rest);
            out
        }
        None => match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&json) {
            Ok(mut map) => {
                let raw_id = serde_json::from_str(id.raw).unwrap_or(serde_json::Value::Null);
                map.insert("id".into(), raw_id);
                serde_json::Value::Object(map).to_string()
            }
            Err(_) => error_json(id.raw, &Error::internal("malformed response")),
        },
    }
}

/// A success response with the client's raw id and a raw result.
fn success_json(id_raw: &str, result: &str) -> String {
    let mut out = String::with_capacity(id_raw.len() + result.len() + 40);
    out.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
    out.push_str(id_raw);
    out.push_str(",\"result\":");
    out.push_str(result);
    out.push('}');
    out
}

/// An error response with the client's raw id (`null` when there is none).
pub fn error_json(id_raw: &str, err: &Error) -> String {
    let object = serde_json::to_string(&err.to_object()).unwrap_or_else(|_| {
        format!(
            r#"{{"code":{},"message":"error","data":{{"kind":"internal"}}}}"#,
            code::INTERNAL
        )
    });
    let mut out = String::with_capacity(id_raw.len() + object.len() + 40);
    out.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
    out.push_str(id_raw);
    out.push_str(",\"error\":");
    out.push_str(&object);
    out.push('}');
    out
}

/// A request object, its members kept raw; unknown members are remembered, not rejected here.
struct RawRequest<'a> {
    jsonrpc: Option<&'a RawValue>,
    method: Option<&'a RawValue>,
    params: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
    unknown: Option<String>,
}

enum Key {
    Jsonrpc,
    Method,
    Params,
    Id,
    Other(String),
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "jsonrpc" => Key::Jsonrpc,
                    "method" => Key::Method,
                    "params" => Key::Params,
                    "id" => Key::Id,
                    other => Key::Other(other.to_string()),
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

impl<'de> serde::Deserialize<'de> for RawRequest<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ReqVisitor;
        impl<'de> Visitor<'de> for ReqVisitor {
            type Value = RawRequest<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON-RPC request object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut req = RawRequest {
                    jsonrpc: None,
                    method: None,
                    params: None,
                    id: None,
                    unknown: None,
                };
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Jsonrpc => req.jsonrpc = Some(map.next_value()?),
                        Key::Method => req.method = Some(map.next_value()?),
                        Key::Params => req.params = Some(map.next_value()?),
                        Key::Id => req.id = Some(map.next_value()?),
                        Key::Other(name) => {
                            map.next_value::<IgnoredAny>()?;
                            req.unknown.get_or_insert(name);
                        }
                    }
                }
                Ok(req)
            }
        }
        deserializer.deserialize_map(ReqVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_classified() {
        let raw = |s: &str| serde_json::from_str::<Box<RawValue>>(s).expect("json");
        for (text, splice) in [
            ("1", false),
            ("\"a\"", false),
            ("null", false),
            ("-1", true),
            ("1.5", true),
            ("18446744073709551616", true),
            ("\"a\\n\"", true),
        ] {
            let value = raw(text);
            let id = classify_id(&value).expect("valid id");
            assert_eq!(id.splice, splice, "{text}");
            assert_eq!(id.raw, text);
        }
        for text in ["true", "{}", "[]"] {
            assert!(classify_id(&raw(text)).is_none(), "{text}");
        }
    }
}
