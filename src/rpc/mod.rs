//! The RPC layer: the method table, its jsonrpsee form, framing, auth, transport, OpenRPC.

pub mod auth;
pub mod context;
pub mod dispatch;
pub mod door;
pub mod http;
pub mod openrpc;
pub mod order;
pub mod server;
pub mod table;
pub mod throttle;
pub mod websocket;
pub mod wire;
pub mod ws;

use std::collections::HashMap;
use std::sync::Arc;

use jsonrpsee::RpcModule;
use jsonrpsee::core::server::MethodCallback;
use jsonrpsee::types::ErrorObjectOwned;

pub use context::{CallContext, Connection, Outbox, SinkClosed, SubscriptionSink, Transport};
pub use table::{
    DuplicateMethod, EventDecl, Example, Method, MethodDescriptor, MethodKind, MethodTable, Scope,
    Subscription, SubscriptionTask,
};

use crate::error::Error;

/// What the transport needs from the application it serves; the RPC layer knows nothing else
/// of it. Handlers receive the application's state as `CallContext<S>::gateway`.
pub trait Host: Send + Sync + Sized + 'static {
    /// The configuration snapshot in force.
    fn config(&self) -> Arc<crate::config::Config>;
    /// The accepted credentials of that snapshot.
    fn tokens(&self) -> Arc<auth::TokenTable>;
    /// The method table in force.
    fn table(&self) -> Arc<TableSnapshot<Self>>;
    /// The failed-login throttle.
    fn throttle(&self) -> &throttle::Throttle;
    /// Whether shutdown has begun (new calls are refused).
    fn is_shutting_down(&self) -> bool;
    /// Why a call of `desc` cannot be served now although the process runs (a part the call
    /// needs is down, as cluster mode's NATS connection), `None` (the default) when it can.
    /// Asked after the scope check, for every kind of method; the error is the answer.
    fn unavailable(&self, desc: &MethodDescriptor<Self>) -> Option<Error> {
        let _ = desc;
        None
    }
    /// Cancelled when connections must close.
    fn closing(&self) -> &tokio_util::sync::CancellationToken;
    /// Tracks subscription tasks.
    fn tasks(&self) -> &tokio_util::task::TaskTracker;
    /// Tracks connection tasks.
    fn connection_tasks(&self) -> &tokio_util::task::TaskTracker;
    /// The address the server listens on.
    fn local_addr(&self) -> Option<std::net::SocketAddr>;
    /// The readiness checks, each `true` when passing (`/readyz`).
    fn readiness(&self) -> std::collections::BTreeMap<&'static str, bool>;
    /// A WebSocket connection opened.
    fn join(&self, conn: &Arc<Connection>);
    /// A WebSocket connection closed.
    fn leave(&self, conn: &Connection);
    /// A fresh connection id.
    fn next_conn_id(&self) -> String;
    /// TCP connections open now.
    fn open_connections(&self) -> &std::sync::atomic::AtomicUsize;
    /// Most connections served now.
    fn max_connections(&self) -> usize;
    /// What `GET /metrics` reads from the application's state at each scrape.
    fn metric_gauges(&self) -> crate::metrics::Gauges;
    /// The application's own routes on the port (the doors: `/v1`, `/a2a`, `/hooks`), asked
    /// after the browser checks, the health routes, the connection limit and the console, and
    /// before the token check: a door authenticates in its own way ([`server::authenticate`]
    /// for a token) and answers in its own error shape. Gives the request back when no door
    /// serves its path.
    #[expect(
        clippy::result_large_err,
        reason = "the request is handed back unchanged, by value: boxing it would cost an allocation on every JSON-RPC call"
    )]
    fn door(
        self: &Arc<Self>,
        req: ::http::Request<hyper::body::Incoming>,
        meta: door::DoorMeta,
    ) -> Result<
        table::BoxFuture<::http::Response<door::Reply>>,
        ::http::Request<hyper::body::Incoming>,
    > {
        let _ = meta;
        Err(req)
    }

    /// Where a call that passed its checks runs: `None` (the default) here, else a future that
    /// decides ([`Route`]): here after all, or answered by another process (cluster mode: the
    /// node that owns the call's session). Asked for calls only, never for subscriptions.
    fn route(self: &Arc<Self>, call: RouteCall<'_>) -> Option<table::BoxFuture<Route>> {
        let _ = call;
        None
    }
}

/// A call [`Host::route`] decides about.
#[derive(Debug, Clone, Copy)]
pub struct RouteCall<'a> {
    /// The method.
    pub method: &'a str,
    /// The raw params, if any.
    pub params: Option<&'a str>,
    /// The raw id (`null` for a notification): an answer from elsewhere carries it.
    pub id: &'a str,
    /// The caller's scope.
    pub scope: crate::protocol::Scope,
    /// The call was forwarded here by another process: it runs here or is refused, it is not
    /// forwarded again.
    pub forwarded: bool,
}

/// Where [`Host::route`] sends a call.
#[derive(Debug)]
pub enum Route {
    /// Run it here.
    Here,
    /// Answered elsewhere: the whole response text, carrying the call's id.
    Answered(String),
    /// Refused (for example: the process that must answer is unreachable).
    Refused(crate::error::Error),
}

/// An immutable view of the method table, swapped atomically when plugins come and go.
pub struct TableSnapshot<S> {
    /// Each method's descriptor and, for a call, the jsonrpsee callback that runs it: one lookup
    /// per call finds both.
    entries: HashMap<String, Entry<S>>,
    /// The metric handles of calls naming no method of the table.
    unknown: crate::metrics::MethodMetrics,
    names: Vec<String>,
    events: Vec<String>,
    openrpc: Arc<str>,
}

impl<S: Send + Sync + 'static> TableSnapshot<S> {
    /// Freezes a table: registers every call with jsonrpsee and renders the OpenRPC document once.
    pub fn build(table: &MethodTable<S>) -> Result<Self, DuplicateMethod> {
        let mut entries = HashMap::with_capacity(table.methods().len());
        for (name, desc) in table.methods() {
            let callback = match &desc.kind {
                MethodKind::Call(handler) => Some(jsonrpsee_callback(handler.clone(), desc)?),
                _ => None,
            };
            entries.insert(
                name.clone(),
                Entry {
                    desc: Arc::new(desc.clone()),
                    callback,
                    metrics: crate::metrics::MethodMetrics::new(name),
                },
            );
        }
        let openrpc = openrpc::document(table);
        let openrpc: Arc<str> = serde_json::to_string(&openrpc)
            .unwrap_or_else(|_| "{}".into())
            .into();
        Ok(Self {
            entries,
            unknown: crate::metrics::MethodMetrics::unknown(),
            names: table.methods().keys().cloned().collect(),
            events: table.events().keys().cloned().collect(),
            openrpc,
        })
    }

    /// The descriptor of `name`, its jsonrpsee callback and its metric handles.
    pub fn entry(&self, name: &str) -> Option<&Entry<S>> {
        self.entries.get(name)
    }

    /// The descriptor of `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<MethodDescriptor<S>>> {
        self.entries.get(name).map(|e| &e.desc)
    }

    /// The metric handles of a call naming no method of the table.
    pub fn unknown_metrics(&self) -> &crate::metrics::MethodMetrics {
        &self.unknown
    }

    /// Every callable method name, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Every event name, sorted.
    pub fn events(&self) -> &[String] {
        &self.events
    }

    /// The OpenRPC document, serialized once.
    pub fn openrpc(&self) -> Arc<str> {
        self.openrpc.clone()
    }
}

/// One method of a [`TableSnapshot`]: one lookup per call finds all of it.
pub struct Entry<S> {
    /// What the method is.
    pub desc: Arc<MethodDescriptor<S>>,
    /// For a call, the jsonrpsee callback that runs it.
    pub callback: Option<MethodCallback>,
    /// Its `clawgate_rpc_*` handles.
    pub metrics: crate::metrics::MethodMetrics,
}

/// jsonrpsee's callback for one call: its own module builds it (the response framing and the
/// response size limit are jsonrpsee's), registered under a fixed name, so run-time plugin
/// names never have to become `&'static str`.
fn jsonrpsee_callback<S: Send + Sync + 'static>(
    handler: table::CallHandler<S>,
    desc: &MethodDescriptor<S>,
) -> Result<MethodCallback, DuplicateMethod> {
    const NAME: &str = "call";
    let mut module = RpcModule::new(());
    let refused = || DuplicateMethod {
        name: desc.name.clone(),
        first: "jsonrpsee".into(),
        second: desc.owner.clone(),
    };
    module
        .register_async_method(NAME, move |params, _, extensions| {
            let handler = handler.clone();
            async move {
                let Some(ctx) = extensions.get::<CallContext<S>>().cloned() else {
                    return Err(ErrorObjectOwned::from(Error::internal(
                        "call without a context",
                    )));
                };
                handler(ctx, params).await.map_err(ErrorObjectOwned::from)
            }
        })
        .map_err(|_| refused())?;
    module.method(NAME).cloned().ok_or_else(refused)
}
