//! The one place where the domain errors of the store, the agent, the configuration and the
//! plugins become protocol errors (codes, `data.kind`, `data.path`): the layers below speak in
//! their own words and never name a wire field.
//!
//! Each domain adds here one `impl From<DomainError> for Error`, so handlers use `?` and a
//! domain module never imports [`crate::error`]'s codes. docs/PROTOCOL.md, "Errors", lists the
//! codes a client sees.

use crate::agent::AgentError;
use crate::error::Error;

/// The agent's refusals: shutdown is `-32025` (retryable), an unknown run `-32022`; a store
/// failure keeps the store's own mapping.
impl From<AgentError> for Error {
    fn from(err: AgentError) -> Self {
        let message = err.to_string();
        match err {
            AgentError::ShuttingDown => Error::Unavailable {
                message,
                retryable: true,
            },
            AgentError::NoSuchRun(_) => Error::NotFound(message),
            AgentError::Store(err) => err,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;
    use serde_json::json;

    #[test]
    fn agent_errors_keep_their_codes_messages_and_data() {
        let shutting = Error::from(AgentError::ShuttingDown);
        assert_eq!(shutting.code(), code::UNAVAILABLE);
        assert_eq!(shutting.message(), "the gateway is shutting down");
        assert_eq!(
            shutting.data(),
            json!({"kind": "unavailable", "retryable": true})
        );
        let unknown = Error::from(AgentError::NoSuchRun("nope".into()));
        assert_eq!(unknown.code(), code::NOT_FOUND);
        assert_eq!(unknown.message(), "no run `nope`");
        assert_eq!(unknown.data(), json!({"kind": "not_found"}));
        let storage = Error::from(AgentError::Store(Error::Storage(
            "cannot append to session `main`: disk full".into(),
        )));
        assert_eq!(storage.code(), code::UNAVAILABLE);
        assert_eq!(
            storage.message(),
            "storage unavailable: cannot append to session `main`: disk full"
        );
        assert_eq!(
            storage.data(),
            json!({"kind": "unavailable", "retryable": true, "reason": "storage"})
        );
    }
}
