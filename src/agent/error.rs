//! What the agent's public API answers when it cannot do what its caller asked, in the agent's
//! own words; `api::errors` alone turns it into a protocol error.

/// Why the agent refused or failed a request of its caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    /// Shutdown has begun, so no run starts; retrying against the restarted gateway can succeed.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// No run of that id is known: it never existed, or it finished long ago and was forgotten.
    #[error("no run `{0}`")]
    NoSuchRun(String),
    /// No agent of that id is configured.
    #[error("no agent `{0}` is configured")]
    NoSuchAgent(String),
    /// The session belongs to another agent than the one the call names.
    #[error(
        "session `{key}` belongs to the agent `{session_agent}`, not `{requested}`: leave `agent` out, or use another session"
    )]
    OtherAgent {
        /// The session.
        key: String,
        /// Its agent.
        session_agent: String,
        /// The agent the call named.
        requested: String,
    },
    /// The session's agent was removed from the configuration.
    #[error(
        "session `{key}` belongs to the agent `{agent}`, which is no longer configured: add [agents.{agent}] back, or use another session"
    )]
    AgentRemoved {
        /// The session.
        key: String,
        /// Its agent.
        agent: String,
    },
    /// The session store failed (its error passed through as it is).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The session has a run in progress (or about to start), so it cannot be changed now.
    #[error("session `{key}` has a run in progress (`{run_id}`); try again when it has ended")]
    RunActive {
        /// The session.
        key: String,
        /// The run in progress.
        run_id: String,
    },
    /// The model could not summarise the session (`sessions.compact`); nothing was written.
    #[error("the summary call failed: {}", .0.message)]
    Summary(super::providers::ProviderError),
    /// The agent's provider cannot be used now (no API key, ...); no run was started.
    #[error("{}", .0.message)]
    NotReady(super::providers::ProviderError),
    /// No approval of that id is known.
    #[error("no approval `{0}`")]
    NoSuchApproval(String),
    /// The approval was already resolved.
    #[error("approval `{approval_id}` is already resolved ({state:?})")]
    ApprovalResolved {
        /// The approval.
        approval_id: String,
        /// How it was resolved.
        state: crate::protocol::ApprovalState,
    },
    /// The caller's token is not among the agent's `tools.approvers`.
    #[error(
        "the token `{token}` is not among the approvers of approval `{approval_id}` (tools.approvers)"
    )]
    NotApprover {
        /// The approval.
        approval_id: String,
        /// The caller's token name.
        token: String,
    },
}
