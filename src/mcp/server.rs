//! One configured MCP server: its published state, and the supervisor that starts it, refreshes
//! its tools, and restarts it with backoff after a crash, garbage or a hang.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::connection::{self, Conn, RemoteTool};
use super::names::offered_names;
use super::types::{McpChanged, McpServerStatus, McpState, McpTransport, OnChange};
use crate::config::McpServerConfig;

/// The first restart's delay; each next one doubles, up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// The longest delay between two starts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A server that ran this long is healthy again: its next restart waits [`BACKOFF_BASE`].
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// The delay before start number `attempt` (1 for the first restart).
pub fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    BACKOFF_BASE
        .saturating_mul(1u32 << doublings)
        .min(BACKOFF_CAP)
}

/// A tool of the server as offered: its model-facing name and what the server listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Offered {
    /// `<server>__<tool>` (see [`offered_names`]).
    pub name: String,
    /// What the server listed.
    pub remote: RemoteTool,
}

/// What the server is now.
struct Snapshot {
    /// Supervisor generation allowed to write (a stale supervisor's writes are ignored).
    generation: u64,
    state: McpState,
    error: Option<String>,
    tools: Arc<Vec<Offered>>,
    conn: Option<Arc<Conn>>,
    transport: McpTransport,
}

/// One configured server (stable while its name stays configured, across config changes).
pub struct Server {
    /// Its name.
    pub name: String,
    snapshot: Mutex<Snapshot>,
    /// Cancelled when the server is removed or the manager shuts down: calls fail at once.
    pub removed: CancellationToken,
    on_change: OnChange,
}

/// Why a tool call cannot reach the server now.
pub enum Unavailable {
    /// Removed from the configuration (or shutting down).
    Removed,
    /// Not running: its state and last error.
    Down(McpState, Option<String>),
}

impl Server {
    /// A new server, `stopped` until a supervisor starts it.
    pub fn new(name: &str, transport: McpTransport, on_change: OnChange) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_string(),
            snapshot: Mutex::new(Snapshot {
                generation: 0,
                state: McpState::Stopped,
                error: None,
                tools: Arc::new(Vec::new()),
                conn: None,
                transport,
            }),
            removed: CancellationToken::new(),
            on_change,
        })
    }

    /// Starts a new generation (stale supervisors' writes are ignored from now on) and returns
    /// it. When `stopped`, the server is published `stopped` with no tools.
    pub fn next_generation(&self, transport: McpTransport, stopped: bool) -> u64 {
        let generation = self.update(None, |s| {
            s.generation += 1;
            s.transport = transport;
            if let Some(conn) = s.conn.take() {
                conn.health.fail("its configuration changed");
            }
            if stopped {
                s.state = McpState::Stopped;
                s.error = None;
                s.tools = Arc::new(Vec::new());
            }
        });
        generation.unwrap_or_default()
    }

    /// The connection for a call, or why there is none.
    pub fn conn(&self) -> Result<Arc<Conn>, Unavailable> {
        if self.removed.is_cancelled() {
            return Err(Unavailable::Removed);
        }
        let s = self.lock();
        match (&s.conn, s.state) {
            (Some(conn), McpState::Running) if !conn.health.is_dead() => Ok(conn.clone()),
            // Dead, and its supervisor is about to say so.
            (Some(conn), McpState::Running) => Err(Unavailable::Down(
                McpState::Restarting,
                Some(conn.health.why()),
            )),
            _ => Err(Unavailable::Down(s.state, s.error.clone())),
        }
    }

    /// Its offered tools now (kept while it restarts; none when stopped).
    pub fn offered(&self) -> Arc<Vec<Offered>> {
        self.lock().tools.clone()
    }

    /// Its entry of `mcp.list`.
    pub fn status(&self) -> McpServerStatus {
        let s = self.lock();
        McpServerStatus {
            name: self.name.clone(),
            transport: s.transport,
            state: s.state,
            tools: s.tools.iter().map(|t| t.name.clone()).collect(),
            error: s.error.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `f` when `generation` is current (any when `None`), then announces a change of
    /// state or tools. Returns the generation after `f`, or `None` when `generation` is stale.
    fn update(&self, generation: Option<u64>, f: impl FnOnce(&mut Snapshot)) -> Option<u64> {
        let (changed, now) = {
            let mut s = self.lock();
            if generation.is_some_and(|g| g != s.generation) {
                return None;
            }
            let before = (s.state, s.tools.clone());
            f(&mut s);
            let changed = before.0 != s.state || *before.1 != *s.tools;
            let event = changed.then(|| McpChanged {
                server: self.name.clone(),
                state: s.state,
                tools: s.tools.iter().map(|t| t.name.clone()).collect(),
            });
            (event, s.generation)
        };
        if let Some(event) = changed {
            (self.on_change)(event);
        }
        Some(now)
    }

    fn set_state(&self, generation: u64, state: McpState, error: Option<String>) {
        self.update(Some(generation), |s| {
            s.state = state;
            s.error = error;
            if state != McpState::Running {
                s.conn = None;
            }
        });
    }

    fn set_running(&self, generation: u64, conn: Arc<Conn>, tools: &[RemoteTool]) {
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        let offered: Vec<Offered> = offered_names(&self.name, &names)
            .into_iter()
            .zip(tools)
            .filter_map(|(name, remote)| {
                let name = name.or_else(|| {
                    tracing::warn!(mcp = %self.name, tool = %remote.name, "MCP server lists a tool twice; offering it once");
                    None
                })?;
                Some(Offered {
                    name,
                    remote: remote.clone(),
                })
            })
            .collect();
        self.update(Some(generation), |s| {
            s.state = McpState::Running;
            s.error = None;
            s.tools = Arc::new(offered);
            s.conn = Some(conn);
        });
    }
}

/// Supervises `server` with `config` as generation `generation` until `stop` is cancelled.
pub async fn supervise(
    server: Arc<Server>,
    config: McpServerConfig,
    generation: u64,
    stop: CancellationToken,
) {
    let name = server.name.clone();
    let mut attempt: u32 = 0;
    server.set_state(generation, McpState::Starting, None);
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = connection::connect(&name, &config) => c,
        };
        match connected {
            Err(why) => {
                tracing::warn!(mcp = %name, reason = %why, "MCP server did not start");
                // A start that fails is `failed` (retried with backoff) until one succeeds.
                server.set_state(generation, McpState::Failed, Some(why));
            }
            Ok((mut live, tools)) => {
                tracing::info!(mcp = %name, tools = tools.len(), "MCP server running");
                server.set_running(generation, live.conn.clone(), &tools);
                let since = Instant::now();
                let died = serve(&server, generation, &mut live, &stop).await;
                live.close().await;
                let Some(why) = died else {
                    return;
                };
                tracing::warn!(mcp = %name, reason = %why, "MCP server died; restarting it");
                server.set_state(generation, McpState::Restarting, Some(why));
                if since.elapsed() >= HEALTHY_AFTER {
                    attempt = 0;
                }
            }
        }
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff(attempt)) => {}
        }
    }
}

/// Serves a running connection: refreshes the tools on `list_changed`. Returns `None` when
/// stopped, or why the connection died.
async fn serve(
    server: &Server,
    generation: u64,
    live: &mut connection::Live,
    stop: &CancellationToken,
) -> Option<String> {
    let conn = live.conn.clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = conn.health.died() => return Some(conn.health.why()),
            exited = live.child.exited() => {
                conn.health.fail(exited);
                return Some(conn.health.why());
            }
            Some(()) = live.list_changed.recv() => {
                match connection::list_tools(&conn).await {
                    Ok(tools) => server.set_running(generation, conn.clone(), &tools),
                    Err(why) => {
                        tracing::warn!(mcp = %server.name, reason = %why, "MCP server's tools could not be listed again");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_200_ms_up_to_30_s() {
        let ms = |a| backoff(a).as_millis();
        assert_eq!(ms(0), 200);
        assert_eq!(ms(1), 200);
        assert_eq!(ms(2), 400);
        assert_eq!(ms(3), 800);
        assert_eq!(ms(8), 25_600);
        assert_eq!(ms(9), 30_000);
        assert_eq!(ms(u32::MAX), 30_000);
        // Never shorter than the one before.
        assert!((1..100).all(|a| backoff(a) <= backoff(a + 1)));
    }
}
