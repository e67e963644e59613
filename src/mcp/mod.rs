//! MCP servers as tool sources: each `[mcp_servers.<name>]` is supervised (started, listed,
//! restarted with backoff) and its tools are offered to the agents as `<server>__<tool>`.
//!
//! # Wiring (what the gateway does with it)
//!
//! ```text
//! // At start: one manager; its changes become the `mcp.changed` event.
//! let mcp = McpManager::new(move |changed: McpChanged| hub.emit("mcp.changed", &changed));
//! mcp.apply(&config.mcp_servers);
//! // On every hot reload (the key is `Reload::Hot`): the same call; it starts what was added,
//! // stops what was removed and restarts what changed, at once.
//! mcp.apply(&new_config.mcp_servers);
//! // `mcp.list` [read]: `{servers: mcp.list()}` (each entry an `McpServerStatus`).
//! // A run: the agent's builtin tools plus its servers' (`agents.<id>.mcp_servers`, default all).
//! tools.extend(mcp.tools(agent.mcp_servers.as_deref()));
//! // `tools.catalog`: every `mcp.tools(None)` entry, with `source()` = "mcp:<server>".
//! // `gateway.hello` features: "mcp".
//! // At shutdown:
//! mcp.shutdown().await;
//! ```
//!
//! The tools a run got keep working across restarts of their server (each call takes the
//! connection of the moment); a call to a server that is down, removed, crashes, hangs past
//! `timeout_ms` or writes garbage returns a tool result with `isError: true` and the run goes on.
//! The run's abort (`ToolContext::cancel`) sends `notifications/cancelled` and returns at once.
//! Requests from a server (sampling, roots, elicitation) are answered `-32601`. Offered names
//! can only collide among one server's tools (a server name has no `_`); the gateway must still
//! refuse a builtin or plugin tool of the same name, should one ever contain `__`.

mod connection;
mod health;
mod names;
mod output;
mod server;
mod stdio;
mod tool;
mod types;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::agent::tools::Tool;
use crate::config::McpServerConfig;

pub use names::{MAX_TOOL_NAME, offered_names};
pub use output::{MAX_OUTPUT_BYTES, map_call_result};
pub use server::{BACKOFF_BASE, BACKOFF_CAP, HEALTHY_AFTER, backoff};
pub use stdio::PASSED_ENV;
pub use types::{McpChanged, McpServerStatus, McpState, McpTransport, OnChange};

use server::Server;

/// How long [`McpManager::shutdown`] waits for the servers to stop.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// One configured server and its supervisor.
struct Entry {
    config: McpServerConfig,
    server: Arc<Server>,
    /// Stops the current supervisor.
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Every configured MCP server.
pub struct McpManager {
    servers: Mutex<BTreeMap<String, Entry>>,
    on_change: OnChange,
}

impl McpManager {
    /// A manager with no servers; `on_change` hears every change of a server's state or tools.
    pub fn new(on_change: impl Fn(McpChanged) + Send + Sync + 'static) -> Self {
        Self {
            servers: Mutex::new(BTreeMap::new()),
            on_change: Arc::new(on_change),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the running servers match `servers` (a validated `Config::mcp_servers`): starts
    /// the added, stops the removed (their calls in flight fail), restarts the changed, and
    /// leaves the unchanged alone. Servers are started on the current Tokio runtime (outside one,
    /// nothing starts and an error is logged).
    pub fn apply(&self, servers: &BTreeMap<String, McpServerConfig>) {
        let mut current = self.lock();
        let removed: Vec<String> = current
            .keys()
            .filter(|name| !servers.contains_key(*name))
            .cloned()
            .collect();
        for name in removed {
            if let Some(entry) = current.remove(&name) {
                // Removed before stopped, so its calls in flight say removed.
                entry.server.removed.cancel();
                entry
                    .server
                    .next_generation(McpTransport::of(&entry.config), true);
                entry.stop.cancel();
            }
        }
        for (name, config) in servers {
            let transport = McpTransport::of(config);
            let entry = current.entry(name.clone()).or_insert_with(|| Entry {
                config: config.clone(),
                server: Server::new(name, transport, self.on_change.clone()),
                stop: CancellationToken::new(),
                task: None,
            });
            let unchanged = entry.config == *config && (entry.task.is_some() || !config.enabled);
            if unchanged {
                continue;
            }
            // The old connection is told why before its supervisor closes it.
            let generation = entry.server.next_generation(transport, !config.enabled);
            entry.stop.cancel();
            entry.config = config.clone();
            entry.stop = CancellationToken::new();
            entry.task = None;
            if config.enabled {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    tracing::error!(mcp = %name, "McpManager::apply outside a Tokio runtime: the server is not started");
                    continue;
                };
                entry.task = Some(runtime.spawn(server::supervise(
                    entry.server.clone(),
                    config.clone(),
                    generation,
                    entry.stop.clone(),
                )));
            }
        }
    }

    /// Every configured server, by name (`mcp.list`).
    pub fn list(&self) -> Vec<McpServerStatus> {
        self.lock().values().map(|e| e.server.status()).collect()
    }

    /// The tools of the servers named in `filter` (every server when `None`), sorted by server
    /// and name. A server that is restarting or failed keeps offering the tools it last listed
    /// (their calls fail until it runs again); a stopped one offers none.
    pub fn tools(&self, filter: Option<&[String]>) -> Vec<Arc<dyn Tool>> {
        let servers: Vec<Arc<Server>> = self
            .lock()
            .iter()
            .filter(|(name, _)| filter.is_none_or(|names| names.contains(name)))
            .map(|(_, e)| e.server.clone())
            .collect();
        servers
            .into_iter()
            .flat_map(|server| {
                let offered = server.offered();
                offered
                    .iter()
                    .map(|o| {
                        Arc::new(tool::McpTool::new(server.clone(), o.clone())) as Arc<dyn Tool>
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Stops every server (calls in flight fail) and waits for them, at most a few seconds.
    pub async fn shutdown(&self) {
        let tasks: Vec<_> = {
            let mut current = self.lock();
            std::mem::take(&mut *current)
                .into_values()
                .filter_map(|mut entry| {
                    entry.server.removed.cancel();
                    entry
                        .server
                        .next_generation(McpTransport::of(&entry.config), true);
                    entry.stop.cancel();
                    entry.task.take()
                })
                .collect()
        };
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, futures::future::join_all(tasks)).await;
    }
}

impl Drop for McpManager {
    fn drop(&mut self) {
        // Supervisors end with their manager: they stop their servers on the way out.
        for entry in self.lock().values() {
            entry.server.removed.cancel();
            entry.stop.cancel();
        }
    }
}
