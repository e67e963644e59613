//! The gateway's shared state and its lifecycle: start, serve, shut down. Presence, health
//! and ticks are in `presence.rs`, cluster mode's node and leader duties in `nodes.rs`.
//!
//! Over 600 lines because the state is declared once and every part reaches it through a host
//! trait of its own: about 140 of the lines are the four impls (`AgentHost`, `LiveHost`,
//! `PluginHost`, `rpc::Host`), one-line delegations that read best beside the accessors.

mod cluster;
pub mod nodes;
mod presence;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Loaded};
use crate::events::{EventHub, HubLimits};
use crate::protocol::ShutdownEvent;
use crate::rpc::{Connection, DuplicateMethod, TableSnapshot};
use crate::store::Store;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory is unusable.
    #[error("data directory {path}: {message}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `gateway.bind` names `lan` or `tailnet` and no such address appeared in time.
    #[error(
        "cannot listen on {bind:?}: {looked_for} (waited {waited_ms} ms, gateway.bind_wait_ms)"
    )]
    NoAddress {
        /// `gateway.bind` as configured.
        bind: String,
        /// What was looked for.
        looked_for: String,
        /// How long the start waited for it.
        waited_ms: u64,
    },
    /// Two declarations of one method name.
    #[error(transparent)]
    Duplicate(#[from] DuplicateMethod),
    /// The session store could not open.
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    /// The TLS certificate could not be loaded or made.
    #[error("TLS (gateway.tls): {0}")]
    Tls(String),
    /// Cluster mode could not start (NATS unreachable, too small a `max_payload`, ...).
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// What the gateway's handlers receive.
pub type Ctx = crate::rpc::CallContext<Gateway>;
/// The gateway's method table under construction.
pub type Table = crate::rpc::MethodTable<Gateway>;
/// One method of the gateway's table.
pub type Descriptor = crate::rpc::MethodDescriptor<Gateway>;

/// Builds the method table without plugins; called again whenever plugins come and go.
pub type BaseTable = Arc<dyn Fn() -> Result<Table, DuplicateMethod> + Send + Sync>;

/// The application's doors on the port (`rpc::Host::door`): the request back when none serves
/// its path.
pub type Doors = fn(
    &Arc<Gateway>,
    http::Request<hyper::body::Incoming>,
    crate::rpc::server::DoorMeta,
) -> Result<
    crate::rpc::table::BoxFuture<http::Response<crate::rpc::http::Reply>>,
    http::Request<hyper::body::Incoming>,
>;

/// What the startup assembles beside the configuration: the method table and the doors.
#[derive(Clone)]
pub struct Parts {
    /// Builds the method table without plugins.
    pub table: BaseTable,
    /// The doors (`/v1`, `/a2a`, `/hooks`); `None` serves JSON-RPC alone.
    pub doors: Option<Doors>,
}

impl From<BaseTable> for Parts {
    fn from(table: BaseTable) -> Self {
        Self { table, doors: None }
    }
}

/// Everything handlers share. Cheap to reach through `Arc<Gateway>`.
pub struct Gateway {
    doors: Option<Doors>,
    /// State of the parts above this layer (the doors), one value per type.
    extensions: Mutex<HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>>,
    config: ArcSwap<Config>,
    tokens: ArcSwap<crate::rpc::auth::TokenTable>,
    data_dir: PathBuf,
    config_path: PathBuf,
    config_hash: ArcSwap<String>,
    overridden_paths: Vec<String>,
    hub: Arc<EventHub>,
    table: ArcSwap<TableSnapshot<Gateway>>,
    connections: Mutex<BTreeMap<String, Arc<Connection>>>,
    started: Instant,
    ready: AtomicBool,
    store_writable: AtomicBool,
    shutting_down: CancellationToken,
    closing: CancellationToken,
    tasks: TaskTracker,
    connection_tasks: TaskTracker,
    local_addr: Mutex<Option<SocketAddr>>,
    health_dirty: Arc<Notify>,
    store: Arc<Store>,
    agent: crate::agent::Agent,
    cron: crate::cron::Cron,
    mcp: crate::mcp::McpManager,
    live: crate::config::live::Live,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    plugins_notify: Notify,
    plugins: crate::plugins::Plugins<Gateway>,
    base_table: BaseTable,
    index_stop: CancellationToken,
    index_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    active_runs: AtomicU64,
    next_conn: AtomicU64,
    open_connections: AtomicUsize,
    /// Connections the descriptor limit leaves room for.
    fd_connection_cap: AtomicUsize,
    throttle: crate::rpc::throttle::Throttle,
    /// The certificate served, when `[gateway.tls]` is on (set once at start).
    tls: std::sync::OnceLock<Arc<crate::tls::ServerTls>>,
    /// The mDNS announcement, withdrawn on shutdown.
    announcer: Mutex<Option<crate::discovery::Announcer>>,
    /// The outgoing webhooks: started at start (in cluster mode when the node becomes the
    /// leader), stopped on shutdown (and when it loses the lead).
    webhooks: Mutex<Option<crate::webhooks::Webhooks>>,
    /// Cluster mode: this node's entry, the other nodes and the leader lease (set once).
    nodes: std::sync::OnceLock<NodeParts>,
    /// Cluster mode: the NATS connection and what the nodes share (set once at start).
    cluster: std::sync::OnceLock<ClusterParts>,
}

use cluster::ClusterParts;

/// What cluster mode's node adds to the gateway (`nodes.rs`; set once at start).
struct NodeParts {
    nodes: Arc<crate::cluster::nodes::Nodes>,
    /// Held while the leader's duties start or stop, so shutdown never races a start.
    duties: tokio::sync::Mutex<()>,
}

impl Gateway {
    /// New state from a loaded configuration, a frozen method table, and the hub and store.
    pub fn new(
        loaded: Loaded,
        parts: Parts,
        table: TableSnapshot<Gateway>,
        hub: Arc<EventHub>,
        store: Arc<Store>,
        health_dirty: Arc<Notify>,
    ) -> Arc<Self> {
        let agent = crate::agent::Agent::new(&loaded.config);
        let live = crate::config::live::Live::new(&loaded);
        let mcp = {
            let hub = hub.clone();
            crate::mcp::McpManager::new(move |changed| {
                hub.emit(None, &changed);
            })
        };
        mcp.apply(&loaded.config.mcp_servers);
        crate::logging::ring().set_secrets(crate::config::secrets(&loaded.config));
        store.set_prices(loaded.config.prices.clone());
        let cron = crate::cron::Cron::open(&loaded.data_dir);
        Arc::new(Self {
            agent,
            cron,
            mcp,
            live,
            watcher: Mutex::new(None),
            plugins_notify: Notify::new(),
            plugins: crate::plugins::Plugins::default(),
            base_table: parts.table,
            doors: parts.doors,
            extensions: Mutex::new(HashMap::new()),
            tokens: ArcSwap::from_pointee(crate::rpc::auth::TokenTable::new(&loaded.config)),
            config: ArcSwap::from_pointee(loaded.config),
            data_dir: loaded.data_dir,
            config_path: loaded.path,
            config_hash: ArcSwap::from_pointee(loaded.hash),
            overridden_paths: loaded.overridden_paths,
            hub,
            table: ArcSwap::from_pointee(table),
            connections: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
            ready: AtomicBool::new(false),
            store_writable: AtomicBool::new(false),
            shutting_down: CancellationToken::new(),
            closing: CancellationToken::new(),
            tasks: TaskTracker::new(),
            connection_tasks: TaskTracker::new(),
            local_addr: Mutex::new(None),
            health_dirty,
            store,
            index_stop: CancellationToken::new(),
            index_task: Mutex::new(None),
            active_runs: AtomicU64::new(0),
            next_conn: AtomicU64::new(1),
            open_connections: AtomicUsize::new(0),
            fd_connection_cap: AtomicUsize::new(usize::MAX),
            throttle: crate::rpc::throttle::Throttle::default(),
            tls: std::sync::OnceLock::new(),
            announcer: Mutex::new(None),
            webhooks: Mutex::new(None),
            nodes: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// Cluster mode's connection and shared state; `None` for one process.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get().map(|c| &c.cluster)
    }

    /// The current configuration snapshot.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Replaces the configuration snapshot (readers never lock). When the accepted
    /// credentials changed, every open connection is checked again.
    pub fn set_config(&self, config: Config, hash: String) {
        let auth_changed =
            {
                let old = &self.config.load().gateway.auth;
                let new = &config.gateway.auth;
                old.mode != new.mode
                    || old.tokens.len() != new.tokens.len()
                    || old.tokens.iter().zip(&new.tokens).any(|(a, b)| {
                        (a.token.as_str(), &a.scopes) != (b.token.as_str(), &b.scopes)
                    })
            };
        crate::logging::ring().set_secrets(crate::config::secrets(&config));
        // Tokens first: a revoked token stops working no later than the rest of the change.
        self.tokens
            .store(Arc::new(crate::rpc::auth::TokenTable::new(&config)));
        // Model calls recorded from now on are priced with the new prices.
        self.store.set_prices(config.prices.clone());
        self.config.store(Arc::new(config));
        self.config_hash.store(Arc::new(hash));
        if auth_changed {
            self.recheck_connections();
        }
    }

    /// Applies the current tokens to every open WebSocket connection: one whose credential is
    /// no longer accepted is closed (code 1008), one whose scope shrank keeps only the
    /// subscriptions it may still hold.
    fn recheck_connections(&self) {
        let tokens = self.tokens();
        let conns: Vec<Arc<Connection>> = self
            .connections
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        for conn in conns {
            match tokens.scope(&conn.credential) {
                None => {
                    tracing::info!(conn = %conn.id, "closing a connection whose token was revoked");
                    conn.cancel_subscriptions();
                    conn.close_with(
                        crate::rpc::ws::close::POLICY,
                        "the credentials of this connection are no longer accepted",
                    );
                }
                Some(scope) => conn.keep_subscriptions_within(scope),
            }
        }
    }

    /// The SHA-256 fingerprint (lowercase hex) of the TLS certificate served now, `None`
    /// without TLS. It changes when the certificate files are replaced.
    pub fn tls_fingerprint(&self) -> Option<String> {
        self.tls.get().map(|tls| tls.fingerprint())
    }

    /// The failed-login throttle.
    pub fn throttle(&self) -> &crate::rpc::throttle::Throttle {
        &self.throttle
    }

    /// Most connections served now: `gateway.max_connections`, capped below the descriptor
    /// limit.
    pub fn max_connections(&self) -> usize {
        self.config()
            .gateway
            .max_connections
            .min(self.fd_connection_cap.load(Ordering::Relaxed))
    }

    /// The accepted tokens of the current configuration, hashed once per snapshot.
    pub fn tokens(&self) -> Arc<crate::rpc::auth::TokenTable> {
        self.tokens.load_full()
    }

    /// Hex SHA-256 of the config file the current snapshot came from.
    pub fn config_hash(&self) -> Arc<String> {
        self.config_hash.load_full()
    }

    /// Keys set by environment or flags.
    pub fn overridden_paths(&self) -> &[String] {
        &self.overridden_paths
    }

    /// The current method table.
    pub fn table(&self) -> Arc<TableSnapshot<Gateway>> {
        self.table.load_full()
    }

    /// Swaps in a new method table (plugins).
    pub fn set_table(&self, table: TableSnapshot<Gateway>) {
        self.table.store(Arc::new(table));
    }

    /// The event hub.
    pub fn hub(&self) -> &Arc<EventHub> {
        &self.hub
    }

    /// The one value of type `T` this gateway keeps for a part above it (a door's state),
    /// made with `T::default()` the first time.
    pub fn extension<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let id = std::any::TypeId::of::<T>();
        let Ok(mut map) = self.extensions.lock() else {
            return Arc::new(T::default());
        };
        let entry = map
            .entry(id)
            .or_insert_with(|| Arc::new(T::default()) as Arc<dyn std::any::Any + Send + Sync>)
            .clone();
        drop(map);
        entry
            .downcast::<T>()
            .unwrap_or_else(|_| Arc::new(T::default()))
    }

    /// The data directory.
    pub fn data_dir(&self) -> &PathBuf {
        &self.data_dir
    }

    /// The configuration file's path.
    pub fn config_path(&self) -> &PathBuf {
        &self.config_path
    }

    /// The address the server listens on, once bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr.lock().map(|a| *a).unwrap_or(None)
    }

    /// Tracks background tasks (subscriptions) so shutdown can wait for them.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Tracks connection tasks.
    pub fn connection_tasks(&self) -> &TaskTracker {
        &self.connection_tasks
    }

    /// Cancelled when connections must close (the last step of shutdown).
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.is_cancelled()
    }

    /// TCP connections open now (HTTP and WebSocket).
    pub fn open_connections(&self) -> &AtomicUsize {
        &self.open_connections
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> String {
        format!("c{}", self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Time since start.
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The readiness checks, each `true` when passing.
    pub fn readiness(&self) -> BTreeMap<&'static str, bool> {
        BTreeMap::from([
            ("startup", self.ready.load(Ordering::Acquire)),
            // Probed at startup, then failing from a failed write until a write succeeds.
            (
                "store",
                self.store_writable.load(Ordering::Acquire) && self.store.writable(),
            ),
            ("config", true),
            ("notShuttingDown", !self.is_shutting_down()),
        ])
        .into_iter()
        .chain(self.cluster().map(|c| ("cluster", c.connected())))
        .collect()
    }

    /// The session store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The live configuration state.
    pub fn live(&self) -> &crate::config::live::Live {
        &self.live
    }

    /// The plugins.
    pub fn plugins(&self) -> &crate::plugins::Plugins<Gateway> {
        &self.plugins
    }

    /// A fresh copy of the table without plugins (core, or core plus a test's methods).
    pub fn base_table(&self) -> Result<Table, DuplicateMethod> {
        (self.base_table)()
    }

    /// The `plugins` configuration changed: the plugin host reconciles.
    pub fn plugins_changed(&self) {
        self.plugins_notify.notify_one();
    }

    /// Resolves when the `plugins` configuration changed.
    pub async fn plugins_change(&self) {
        self.plugins_notify.notified().await
    }

    /// The MCP servers' manager.
    pub fn mcp(&self) -> &crate::mcp::McpManager {
        &self.mcp
    }

    /// The agent (providers, tools, runs).
    pub fn agent(&self) -> &crate::agent::Agent {
        &self.agent
    }

    /// The scheduled runs.
    pub fn cron(&self) -> &crate::cron::Cron {
        &self.cron
    }

    /// The name of the token `cred` presented (`None` with auth off).
    pub fn token_name(&self, cred: &crate::rpc::auth::Credential) -> Option<String> {
        crate::rpc::auth::token_name(&self.config(), cred)
    }

    /// Graceful shutdown: refuse new calls, suspend the runs of agents with `on_restart =
    /// "resume"` and abort the others (their partial text is kept, each gets its `aborted`),
    /// tell every subscriber (naming the runs suspended), close connections.
    pub async fn shutdown(self: &Arc<Self>, reason: &str) {
        if self.shutting_down.is_cancelled() {
            return;
        }
        tracing::info!(reason, "shutting down");
        self.shutting_down.cancel();
        // A change of leadership in progress ends first; no duty starts from here on.
        self.leader_duties_settled().await;
        // Withdrawn first (goodbye packets), on a thread while the rest shuts down.
        let withdraw = self
            .announcer
            .lock()
            .ok()
            .and_then(|mut a| a.take())
            .map(|announcer| tokio::task::spawn_blocking(move || announcer.stop()));
        // No job fires once the runs are being suspended.
        self.cron.stop().await;
        let suspended_runs = self.agent.shutdown(self).await;
        self.hub.shutdown(ShutdownEvent {
            reason: reason.to_string(),
            restart_expected_ms: None,
            suspended_runs,
        });
        if let Some(parts) = self.cluster.get() {
            // The runs' last events reach the stream before the node goes.
            if !parts.relay.flush(Duration::from_secs(3)).await {
                tracing::warn!("some events did not reach the event stream within 3 s");
            }
        }
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(3), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some subscriptions did not finish within 3 s");
        }
        self.closing.cancel();
        self.connection_tasks.close();
        if tokio::time::timeout(Duration::from_secs(3), self.connection_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within 3 s");
        }
        if let Ok(mut w) = self.watcher.lock() {
            w.take();
        }
        crate::plugins::stop_all(self);
        self.mcp.shutdown().await;
        self.stop_webhooks().await;
        self.index_stop.cancel();
        let task = self.index_task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        if let Some(withdraw) = withdraw {
            let _ = withdraw.await;
            tracing::info!("mDNS announcement withdrawn");
        }
        self.stop_node().await;
        if let Some(parts) = self.cluster.get() {
            // Handed over: the next call for each session, on any node, takes it at once.
            parts.owners.release_all().await;
            parts.stop.cancel();
            let _ = parts.cluster.client().flush().await;
        }
    }
}

impl crate::agent::AgentHost for Gateway {
    fn mcp_tools(&self, servers: Option<&[String]>) -> Vec<Arc<dyn crate::agent::tools::Tool>> {
        self.mcp.tools(servers)
    }
    fn claim(
        self: &Arc<Self>,
        key: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'static>>
    {
        let (gw, key) = (self.clone(), key.to_string());
        Box::pin(async move { gw.claim_session(&key).await })
    }
    fn agent(&self) -> &crate::agent::Agent {
        Gateway::agent(self)
    }
    fn store(&self) -> &Arc<Store> {
        Gateway::store(self)
    }
    fn hub(&self) -> &Arc<EventHub> {
        Gateway::hub(self)
    }
    fn config(&self) -> Arc<Config> {
        Gateway::config(self)
    }
    fn data_dir(&self) -> &PathBuf {
        Gateway::data_dir(self)
    }
    fn config_path(&self) -> &PathBuf {
        Gateway::config_path(self)
    }
    fn is_shutting_down(&self) -> bool {
        Gateway::is_shutting_down(self)
    }
    fn set_active_runs(&self, n: u64) {
        Gateway::set_active_runs(self, n)
    }
}

impl crate::config::live::LiveHost for Gateway {
    fn live(&self) -> &crate::config::live::Live {
        Gateway::live(self)
    }
    fn config(&self) -> Arc<Config> {
        Gateway::config(self)
    }
    fn set_config(&self, config: Config, hash: String) {
        Gateway::set_config(self, config, hash)
    }
    fn config_path(&self) -> &PathBuf {
        Gateway::config_path(self)
    }
    fn config_hash(&self) -> Arc<String> {
        Gateway::config_hash(self)
    }
    fn hub(&self) -> &Arc<EventHub> {
        Gateway::hub(self)
    }
    fn is_shutting_down(&self) -> bool {
        Gateway::is_shutting_down(self)
    }
    fn mcp_changed(&self, config: &Config) {
        self.mcp.apply(&config.mcp_servers);
    }
    fn agent_changed(&self, config: &Config) {
        // Runs in progress keep the provider they started with.
        self.agent.set_providers(config);
    }
    fn plugins_changed(&self) {
        Gateway::plugins_changed(self)
    }
}

impl crate::webhooks::WebhookHost for Gateway {
    fn hub(&self) -> &Arc<EventHub> {
        Gateway::hub(self)
    }
    fn config(&self) -> Arc<Config> {
        Gateway::config(self)
    }
}

impl crate::plugins::PluginHost for Gateway {
    fn plugins(&self) -> &crate::plugins::Plugins<Self> {
        Gateway::plugins(self)
    }
    fn hub(&self) -> &Arc<EventHub> {
        Gateway::hub(self)
    }
    fn config(&self) -> Arc<Config> {
        Gateway::config(self)
    }
    fn base_table(&self) -> Result<Table, DuplicateMethod> {
        Gateway::base_table(self)
    }
    fn table(&self) -> Arc<TableSnapshot<Self>> {
        Gateway::table(self)
    }
    fn set_table(&self, table: TableSnapshot<Self>) {
        Gateway::set_table(self, table)
    }
    fn set_tools(&self, tools: Vec<Arc<dyn crate::agent::tools::Tool>>) {
        self.agent.set_tools(tools)
    }
    async fn plugins_change(&self) {
        Gateway::plugins_change(self).await
    }
    fn is_shutting_down(&self) -> bool {
        Gateway::is_shutting_down(self)
    }
}

impl crate::rpc::Host for Gateway {
    fn config(&self) -> Arc<Config> {
        Gateway::config(self)
    }
    fn tokens(&self) -> Arc<crate::rpc::auth::TokenTable> {
        Gateway::tokens(self)
    }
    fn table(&self) -> Arc<TableSnapshot<Self>> {
        Gateway::table(self)
    }
    fn throttle(&self) -> &crate::rpc::throttle::Throttle {
        Gateway::throttle(self)
    }
    fn is_shutting_down(&self) -> bool {
        Gateway::is_shutting_down(self)
    }
    fn unavailable(
        &self,
        desc: &crate::rpc::MethodDescriptor<Self>,
    ) -> Option<crate::error::Error> {
        Gateway::nats_unavailable(self, desc)
    }
    fn closing(&self) -> &CancellationToken {
        Gateway::closing(self)
    }
    fn tasks(&self) -> &TaskTracker {
        Gateway::tasks(self)
    }
    fn connection_tasks(&self) -> &TaskTracker {
        Gateway::connection_tasks(self)
    }
    fn local_addr(&self) -> Option<SocketAddr> {
        Gateway::local_addr(self)
    }
    fn readiness(&self) -> BTreeMap<&'static str, bool> {
        Gateway::readiness(self)
    }
    fn join(&self, conn: &Arc<Connection>) {
        Gateway::join(self, conn)
    }
    fn leave(&self, conn: &Connection) {
        Gateway::leave(self, conn)
    }
    fn next_conn_id(&self) -> String {
        Gateway::next_conn_id(self)
    }
    fn open_connections(&self) -> &AtomicUsize {
        Gateway::open_connections(self)
    }
    fn metric_gauges(&self) -> crate::metrics::Gauges {
        Gateway::metric_gauges(self)
    }
    fn max_connections(&self) -> usize {
        Gateway::max_connections(self)
    }
    fn door(
        self: &Arc<Self>,
        req: http::Request<hyper::body::Incoming>,
        meta: crate::rpc::server::DoorMeta,
    ) -> Result<
        crate::rpc::table::BoxFuture<http::Response<crate::rpc::http::Reply>>,
        http::Request<hyper::body::Incoming>,
    > {
        match self.doors {
            Some(doors) => doors(self, req, meta),
            None => Err(req),
        }
    }
    fn route(
        self: &Arc<Self>,
        call: crate::rpc::RouteCall<'_>,
    ) -> Option<crate::rpc::table::BoxFuture<crate::rpc::Route>> {
        self.route_call(call)
    }
}

/// A started gateway.
pub struct Running {
    /// Its state.
    pub gateway: Arc<Gateway>,
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl Running {
    /// The WebSocket URL of the gateway.
    pub fn ws_url(&self) -> String {
        let scheme = if self.gateway.tls.get().is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}/", self.addr)
    }

    /// The HTTP URL of the gateway.
    pub fn http_url(&self) -> String {
        let scheme = if self.gateway.tls.get().is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/", self.addr)
    }

    /// Shuts down gracefully.
    pub async fn shutdown(&self, reason: &str) {
        self.gateway.shutdown(reason).await;
    }
}

/// Like [`crate::app::start`], with a method table of the caller's (the core table plus more methods).
pub async fn start_with(loaded: Loaded, parts: impl Into<Parts>) -> Result<Running, StartError> {
    let Parts {
        table: base_table,
        doors,
    } = parts.into();
    // Before any metric handle is taken (the method table's among them): taken earlier, a
    // handle would stay a no-op.
    if loaded.config.metrics.enabled {
        crate::metrics::install();
    }
    let table = base_table()?;
    let fd_cap = connection_cap(loaded.config.gateway.max_connections);
    let data_dir = loaded.data_dir.clone();
    crate::store::create_private_dir(&data_dir).map_err(|e| StartError::DataDir {
        path: data_dir.clone(),
        message: e.to_string(),
    })?;
    let events = &loaded.config.events;
    let limits = HubLimits {
        replay_capacity: events.replay_capacity,
        replay_max_bytes: events.replay_max_bytes,
        subscriber_queue: events.subscriber_queue,
        subscriber_queue_bytes: events.subscriber_queue_bytes,
    };
    // Cluster mode: connected before anything publishes, so every event goes to the stream.
    let (hub, cluster) = match &loaded.config.cluster {
        None => (EventHub::new(limits), None),
        Some(config) => {
            let cluster = crate::cluster::Cluster::connect(
                config,
                loaded.config.gateway.max_payload_bytes,
                crate::cluster::StreamLimits {
                    messages: events.replay_capacity,
                    bytes: events.replay_max_bytes,
                },
            )
            .await?;
            let hub = EventHub::with_epoch(limits, cluster.epoch().to_string());
            let stop = CancellationToken::new();
            let relay = crate::cluster::events::start(&cluster, &hub, stop.clone()).await;
            let owners = crate::cluster::owners::Owners::new(cluster.clone());
            let log =
                crate::cluster::transcripts::JetStreamLog::new(cluster.clone(), owners.clone());
            (
                hub,
                Some(ClusterParts {
                    cluster,
                    relay,
                    owners,
                    log,
                    stop,
                }),
            )
        }
    };
    let health_dirty = Arc::new(Notify::new());
    let store = {
        let (dir, hub, dirty) = (data_dir.clone(), hub.clone(), health_dirty.clone());
        tokio::task::spawn_blocking(move || Store::open(&dir, hub, dirty))
            .await
            .map_err(|e| StartError::DataDir {
                path: data_dir.clone(),
                message: e.to_string(),
            })??
    };
    // Cluster mode: `main` is made by the node that owns it (cluster::start).
    if cluster.is_none() {
        store
            .ensure("main", loaded.config.default_agent_id())
            .await
            .map_err(|e| StartError::DataDir {
                path: data_dir.clone(),
                message: e.to_string(),
            })?;
    }
    let gw_config = &loaded.config.gateway;
    let target = crate::config::parse_bind(&gw_config.bind).map_err(|e| StartError::Bind {
        addr: gw_config.bind.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let resolved =
        crate::net::resolve_within(&target, Duration::from_millis(gw_config.bind_wait_ms))
            .await
            .ok_or_else(|| StartError::NoAddress {
                bind: gw_config.bind.clone(),
                looked_for: target.looked_for(),
                waited_ms: gw_config.bind_wait_ms,
            })?;
    if !matches!(target, crate::net::BindTarget::Addr(_)) {
        tracing::info!(bind = %gw_config.bind, addr = %resolved.ip, interface = resolved.interface.as_deref().unwrap_or("?"), "gateway.bind resolved");
    }
    let addr = SocketAddr::new(resolved.ip, gw_config.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let tls = start_tls(&loaded, addr)?;
    let snapshot = TableSnapshot::build(&table)?;
    let gateway = Gateway::new(
        loaded,
        Parts {
            table: base_table,
            doors,
        },
        snapshot,
        hub,
        store,
        health_dirty,
    );
    gateway.fd_connection_cap.store(fd_cap, Ordering::Relaxed);
    if let Some(parts) = cluster {
        let _ = gateway.cluster.set(parts);
    }
    let index_task = tokio::spawn(gateway.store.clone().index_loop(gateway.index_stop.clone()));
    if let Ok(mut slot) = gateway.index_task.lock() {
        *slot = Some(index_task);
    }
    if let Ok(mut slot) = gateway.local_addr.lock() {
        *slot = Some(addr);
    }
    let writable = probe_writable(&data_dir);
    if let Err(err) = &writable {
        tracing::warn!(dir = %data_dir.display(), %err, "data directory is not writable");
    }
    gateway
        .store_writable
        .store(writable.is_ok(), Ordering::Release);
    tokio::spawn(gateway.clone().tick_loop());
    tokio::spawn(gateway.clone().health_loop());
    let watcher = crate::config::live::watch(&gateway);
    if let Ok(mut slot) = gateway.watcher.lock() {
        *slot = watcher;
    }
    crate::plugins::reconcile(&gateway);
    tokio::spawn(crate::plugins::supervise_config(gateway.clone()));
    // Cluster mode: only the leader runs the webhooks and the cron jobs.
    let leading = gateway.start_node(addr).await;
    if leading {
        gateway.start_webhooks();
    }
    // Before any call is served: a repeated key of an interrupted run finds it in progress.
    // Cluster mode: only the runs of the sessions this node still owns (cluster::start).
    if gateway.cluster().is_some() {
        cluster::start(&gateway).await;
    } else {
        gateway.agent().resume_all(&gateway);
    }
    // After the resumed runs are back in their lanes: a job whose run was resumed is skipped.
    if leading {
        gateway.cron().start(gateway.clone());
    }
    gateway.follow_leadership(leading);
    let acceptor = match tls {
        Some(tls) => {
            let acceptor = tls.acceptor().map_err(StartError::Tls)?;
            tokio::spawn(tls.clone().watch(gateway.closing().clone()));
            let _ = gateway.tls.set(tls);
            Some(acceptor)
        }
        None => None,
    };
    tokio::spawn(crate::rpc::server::serve(
        gateway.clone(),
        listener,
        acceptor,
    ));
    announce(&gateway, &target, addr);
    crate::agent::tools::warn_about_workspace(&*gateway);
    gateway.ready.store(true, Ordering::Release);
    Ok(Running { gateway, addr })
}

/// The TLS certificate of `[gateway.tls]` (the configured files, or the self-signed one of
/// `<dataDir>/tls/`, made for `addr` and the host's names the first time), its fingerprint
/// logged; `None` without TLS, when a non-loopback bind is warned about.
fn start_tls(
    loaded: &Loaded,
    addr: SocketAddr,
) -> Result<Option<Arc<crate::tls::ServerTls>>, StartError> {
    let config = &loaded.config.gateway.tls;
    if !config.enabled() {
        if !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "listening on a non-loopback address without TLS: tokens and traffic cross the network in clear; set [gateway.tls] self_signed = true or cert/key"
            );
        }
        return Ok(None);
    }
    let (cert, key) = match config.files(&loaded.data_dir) {
        Some(files) => files,
        None => {
            let names = crate::tls::server::names_for(&[addr.ip()]);
            crate::tls::self_signed(&loaded.data_dir.join("tls"), &names)
                .map_err(StartError::Tls)?
        }
    };
    let tls = crate::tls::ServerTls::load(&cert, &key).map_err(StartError::Tls)?;
    let fingerprint = tls.fingerprint();
    tracing::info!(
        cert = %cert.display(),
        fingerprint_sha256 = %fingerprint,
        "TLS on: serving https:// and wss:// only; certificate fingerprint (SHA-256) {fingerprint}"
    );
    Ok(Some(tls))
}

/// Starts the mDNS announcement when `discovery.mdns` asks for it; a failure is a warning and
/// the gateway keeps serving.
fn announce(gateway: &Arc<Gateway>, target: &crate::net::BindTarget, addr: SocketAddr) {
    let config = gateway.config();
    if !crate::discovery::mdns_enabled(&config, target) {
        return;
    }
    let announcement = crate::discovery::Announcement {
        name: config
            .discovery
            .name
            .clone()
            .unwrap_or_else(|| crate::net::host_name().to_string()),
        port: addr.port(),
        addr: addr.ip(),
        // Set before the announcement: `tls=1` and `fp` when the port speaks TLS.
        tls_fingerprint: gateway.tls_fingerprint(),
    };
    match crate::discovery::Announcer::start(announcement.clone()) {
        Ok(announcer) => {
            tracing::info!(name = %announcement.name, service = crate::discovery::SERVICE_TYPE, addr = %addr, "announced over mDNS");
            if let Ok(mut slot) = gateway.announcer.lock() {
                *slot = Some(announcer);
            }
        }
        Err(err) => {
            tracing::warn!(%err, "cannot announce the gateway over mDNS; serving without it");
        }
    }
}

/// Raises the descriptor limit and returns how many connections it leaves room for, after the
/// files, plugins and MCP servers ([`crate::util::FD_RESERVE`]) and the connections past the
/// limit that are still answered on the health routes.
fn connection_cap(configured: usize) -> usize {
    let Some(limit) = crate::util::raise_fd_limit() else {
        return usize::MAX;
    };
    let overflow = crate::rpc::server::OVERFLOW_CONNECTIONS as u64;
    let cap = limit
        .saturating_sub(crate::util::FD_RESERVE + overflow)
        .max(1);
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    if configured > cap {
        tracing::warn!(
            configured,
            cap,
            descriptor_limit = limit,
            "gateway.max_connections is more than the open-file limit allows; serving at most {cap} connections"
        );
    }
    cap
}

fn probe_writable(dir: &std::path::Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    std::fs::write(&probe, b"ok")?;
    std::fs::remove_file(&probe)
}
