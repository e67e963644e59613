//! The RPC layer: the method table, its jsonrpsee form, framing, auth, transport, OpenRPC.

pub mod auth;
pub mod context;
pub mod dispatch;
pub mod openrpc;
pub mod server;
pub mod table;
pub mod throttle;
pub mod ws;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use jsonrpsee::RpcModule;
use jsonrpsee::core::server::Methods;
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
}

/// An immutable view of the method table, swapped atomically when plugins come and go.
pub struct TableSnapshot<S> {
    descriptors: HashMap<String, Arc<MethodDescriptor<S>>>,
    names: Vec<String>,
    events: Vec<String>,
    methods: Methods,
    openrpc: Arc<str>,
}

impl<S: Send + Sync + 'static> TableSnapshot<S> {
    /// Freezes a table: registers every call with jsonrpsee and renders the OpenRPC document once.
    pub fn build(table: &MethodTable<S>) -> Result<Self, DuplicateMethod> {
        let mut module = RpcModule::new(());
        for desc in table.methods().values() {
            if let MethodKind::Call(handler) = &desc.kind {
                let handler = handler.clone();
                let name = intern(&desc.name);
                module
                    .register_async_method(name, move |params, _, extensions| {
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
                    .map_err(|_| DuplicateMethod {
                        name: desc.name.clone(),
                        first: "jsonrpsee".into(),
                        second: desc.owner.clone(),
                    })?;
            }
        }
        let openrpc = openrpc::document(table);
        let openrpc: Arc<str> = serde_json::to_string(&openrpc)
            .unwrap_or_else(|_| "{}".into())
            .into();
        Ok(Self {
            descriptors: table
                .methods()
                .iter()
                .map(|(name, desc)| (name.clone(), Arc::new(desc.clone())))
                .collect(),
            names: table.methods().keys().cloned().collect(),
            events: table.events().keys().cloned().collect(),
            methods: module.into(),
            openrpc,
        })
    }

    /// The descriptor of `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<MethodDescriptor<S>>> {
        self.descriptors.get(name)
    }

    /// Every callable method name, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Every event name, sorted.
    pub fn events(&self) -> &[String] {
        &self.events
    }

    /// The jsonrpsee form of the calls.
    pub fn jsonrpsee(&self) -> &Methods {
        &self.methods
    }

    /// The OpenRPC document, serialized once.
    pub fn openrpc(&self) -> Arc<str> {
        self.openrpc.clone()
    }
}

/// jsonrpsee wants `&'static str` names; plugin names arrive at run time. Each distinct name is
/// leaked once, so memory is bounded by the number of distinct names ever registered.
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(|| Mutex::new(HashSet::new()));
    let mut names = names.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(existing) = names.get(name) {
        return existing;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(leaked);
    leaked
}
