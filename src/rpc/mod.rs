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

/// An immutable view of the method table, swapped atomically when plugins come and go.
pub struct TableSnapshot {
    descriptors: HashMap<String, Arc<MethodDescriptor>>,
    names: Vec<String>,
    events: Vec<String>,
    methods: Methods,
    openrpc: Arc<str>,
}

impl TableSnapshot {
    /// Freezes a table: registers every call with jsonrpsee and renders the OpenRPC document once.
    pub fn build(table: &MethodTable) -> Result<Self, DuplicateMethod> {
        let mut module = RpcModule::new(());
        for desc in table.methods().values() {
            if let MethodKind::Call(handler) = &desc.kind {
                let handler = handler.clone();
                let name = intern(&desc.name);
                module
                    .register_async_method(name, move |params, _, extensions| {
                        let handler = handler.clone();
                        async move {
                            let Some(ctx) = extensions.get::<CallContext>().cloned() else {
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
    pub fn get(&self, name: &str) -> Option<&Arc<MethodDescriptor>> {
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
