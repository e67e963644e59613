//! Starting a run from any door (`chat.send`, `chat.stream`, `/hooks`): the session's agent,
//! its provider's readiness, then the send, so every door refuses the same things alike.

use std::sync::Arc;

use super::providers::ProviderError;
use super::{Agent, AgentError, AgentHost, SendOutcome, SendRequest};

/// Why a send started no run.
#[derive(Debug)]
pub enum StartError {
    /// The run manager refused it (unknown agent, busy session with `reject`, ...).
    Agent(AgentError),
    /// The agent's provider cannot take calls (no API key, ...).
    Provider(ProviderError),
}

impl From<AgentError> for StartError {
    fn from(err: AgentError) -> Self {
        Self::Agent(err)
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Agent(err) => err.fmt(f),
            Self::Provider(err) => f.write_str(&err.message),
        }
    }
}

impl Agent {
    /// Sends `request` after checking that the agent it runs with exists and that its
    /// provider is ready.
    pub async fn start<G: AgentHost>(
        &self,
        gw: &Arc<G>,
        request: SendRequest,
    ) -> Result<SendOutcome, StartError> {
        let agent_id =
            self.agent_for(gw.as_ref(), &request.session_key, request.agent.as_deref())?;
        let provider = self
            .provider(&agent_id)
            .ok_or_else(|| AgentError::NoSuchAgent(agent_id.clone()))?;
        provider.ready().map_err(StartError::Provider)?;
        Ok(self.send(gw, request).await?)
    }
}
