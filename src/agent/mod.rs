//! The streaming agent: the run manager (lanes, idempotency, abort) and the agent loop.
//!
//! `chat.send` hands a message to [`Agent::send`]. Each session is a lane: one run at a time,
//! later sends wait in order. A run writes the user message, then repeats: stream a model turn
//! (coalesced deltas), write the assistant message, run its tool calls and write their results,
//! until the model stops calling tools or `agent.max_turns` is reached. Every run owns one
//! cancellation token that reaches the provider stream and every tool.
//!
//! The files, top down: `runs` (the manager and the lane workers: steering, suspending and
//! resuming after a restart, `runs.*`) knows the host ([`AgentHost`]); below it, `run_loop`
//! (one run, with its markers) sees the host only as what the loop needs; `tool_call` (a turn's
//! calls, asking a person where `policy` says so, through `approvals`); then `compaction` (the summary that replaces the older part of a context), `turn` (one
//! streamed model call), `context` and `window`
//! (what the model is sent, and its estimate), `output` (the cut of stored tool output), `emit`
//! (a run's `chat` payloads) and `state` (the manager's bookkeeping).

pub mod providers;
pub mod tools;

pub mod approvals;
mod compaction;
mod context;
mod emit;
mod error;
pub mod instructions;
mod output;
pub mod policy;
mod run_loop;
mod runs;
mod state;
mod turn;
pub mod window;

use std::path::PathBuf;
use std::sync::Arc;

pub use context::prepare_context;
pub use error::AgentError;
pub use output::{MAX_TOOL_OUTPUT, cut_output};
pub use runs::Agent;
pub use state::{SendOutcome, SendRequest};

/// What the agent needs from the application that hosts it: its own dependencies, not the
/// whole gateway.
pub trait AgentHost: Send + Sync + 'static {
    /// The agent (runs, lanes, provider, tools).
    fn agent(&self) -> &Agent;
    /// The tools of the MCP servers named (all with `None`), as offered to a model.
    fn mcp_tools(&self, servers: Option<&[String]>) -> Vec<Arc<dyn tools::Tool>>;
    /// The session store.
    fn store(&self) -> &Arc<crate::store::Store>;
    /// The event hub.
    fn hub(&self) -> &Arc<crate::events::EventHub>;
    /// The configuration in force.
    fn config(&self) -> Arc<crate::config::Config>;
    /// The data directory (the file tools refuse it).
    fn data_dir(&self) -> &PathBuf;
    /// The config file (the file tools refuse it).
    fn config_path(&self) -> &PathBuf;
    /// Whether shutdown has begun (no run starts).
    fn is_shutting_down(&self) -> bool;
    /// The number of active runs changed.
    fn set_active_runs(&self, n: u64);
    /// Cluster mode: makes this process the writer of session `key` before a run starts in it
    /// (taking it over when its owner went away); refused when another process owns it. One
    /// process: always granted.
    fn claim(
        self: &Arc<Self>,
        key: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'static>>
    {
        let _ = key;
        Box::pin(async { Ok(()) })
    }
}

/// The loop reads the host through its own narrower trait, so that nothing below the run
/// manager depends on [`AgentHost`] (and through it on the manager).
impl<G: AgentHost> run_loop::LoopHost for G {
    fn store(&self) -> &Arc<crate::store::Store> {
        AgentHost::store(self)
    }
    fn config(&self) -> Arc<crate::config::Config> {
        AgentHost::config(self)
    }
    fn provider(&self, agent: &str) -> Option<Arc<dyn providers::Provider>> {
        self.agent().provider(agent)
    }
    fn tools(&self, agent: &crate::config::AgentConfig) -> Arc<Vec<Arc<dyn tools::Tool>>> {
        self.agent().tools_for(self, agent)
    }
    fn approvals(&self) -> &approvals::Approvals {
        self.agent().approvals()
    }
    fn data_dir(&self) -> &PathBuf {
        AgentHost::data_dir(self)
    }
    fn config_path(&self) -> &PathBuf {
        AgentHost::config_path(self)
    }
}

/// The start-up workspace check reads the host through the tools' own trait, for the same
/// reason.
impl<G: AgentHost> tools::WorkspaceHost for G {
    fn config(&self) -> Arc<crate::config::Config> {
        AgentHost::config(self)
    }
    fn data_dir(&self) -> &PathBuf {
        AgentHost::data_dir(self)
    }
    fn config_path(&self) -> &PathBuf {
        AgentHost::config_path(self)
    }
}
