//! The one place where the domain errors of the store, the agent, the configuration and the
//! plugins become protocol errors (codes, `data.kind`, `data.path`): the layers below speak in
//! their own words and never name a wire field.
//!
//! Each domain adds here one `impl From<DomainError> for Error`, so handlers use `?` and a
//! domain module never imports [`crate::error`]'s codes. docs/PROTOCOL.md, "Errors", lists the
//! codes a client sees.

use crate::agent::AgentError;
use crate::config::live::PatchError;
use crate::error::Error;
use crate::plugins::error::{PluginError, Refusal};

impl From<PluginError> for Error {
    fn from(err: PluginError) -> Self {
        let text = err.to_string();
        match err {
            PluginError::Unavailable { .. } => Error::Unavailable {
                message: text,
                retryable: true,
            },
            PluginError::Refused { plugin, refusal } => match refusal {
                Refusal::BadParams { path, message } => Error::invalid_params(path, message),
                Refusal::NotFound(message) => Error::NotFound(message),
                Refusal::Conflict(message) => Error::Conflict(message),
                Refusal::Failed(message) => {
                    Error::Internal(format!("plugin `{plugin}`: {message}"))
                }
            },
            PluginError::Duplicate(dup) => Error::Conflict(dup.to_string()),
        }
    }
}

impl From<PatchError> for Error {
    fn from(err: PatchError) -> Self {
        let text = err.to_string();
        match err {
            PatchError::NotAnObject => Error::invalid_params("patch", text),
            PatchError::Placeholder { key } => Error::invalid_params(format!("patch.{key}"), text),
            PatchError::Invalid(e) | PatchError::Refused(e) => Error::invalid_params(e.path, text),
            PatchError::Stale { .. } | PatchError::NotUtf8 | PatchError::NotToml(_) => {
                Error::Conflict(text)
            }
            PatchError::Io(why) => Error::Internal(why),
        }
    }
}

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
    use crate::config::ConfigError;
    use crate::error::code;
    use serde_json::json;

    #[test]
    fn patch_errors_name_the_patch_field_and_keep_their_words() {
        let err = Error::from(PatchError::Placeholder {
            key: "gateway.auth.tokens[0].token".into(),
        });
        assert_eq!(err.code(), code::INVALID_PARAMS);
        assert_eq!(err.data()["path"], "patch.gateway.auth.tokens[0].token");
        let err = Error::from(PatchError::Invalid(ConfigError {
            path: "gateway.port".into(),
            message: "expected a port".into(),
        }));
        assert_eq!(
            err.message(),
            "invalid params: `gateway.port`: the patched config would be invalid: expected a port"
        );
        let err = Error::from(PatchError::Stale {
            current: "abc".into(),
        });
        assert_eq!(err.code(), code::CONFLICT);
        assert!(err.message().contains("its hash is now abc"), "{err}");
        assert_eq!(
            Error::from(PatchError::Io("x".into())).code(),
            code::INTERNAL
        );
    }

    #[test]
    fn a_plugins_refusal_keeps_its_meaning() {
        let refused = |code, path: Option<&str>| PluginError::Refused {
            plugin: "p".into(),
            refusal: Refusal::from_answer(code, "no".into(), path),
        };
        let err = Error::from(refused(-32602, Some("a.b")));
        assert_eq!(
            (err.code(), err.data()["path"].clone()),
            (code::INVALID_PARAMS, "a.b".into())
        );
        assert_eq!(err.message(), refused(-32602, Some("a.b")).to_string());
        assert_eq!(Error::from(refused(-32022, None)).code(), code::NOT_FOUND);
        assert_eq!(Error::from(refused(-32023, None)).code(), code::CONFLICT);
        let failed = refused(-32000, None);
        assert_eq!(failed.to_string(), "internal error: plugin `p`: no");
        assert_eq!(
            Error::from(failed).message(),
            "internal error: plugin `p`: no"
        );
        let down = PluginError::Unavailable {
            plugin: "p".into(),
            why: "it stopped".into(),
        };
        let err = Error::from(down);
        assert_eq!(err.code(), code::UNAVAILABLE);
        assert_eq!(err.data()["retryable"], true);
        assert_eq!(err.message(), "plugin `p` is unavailable: it stopped");
    }

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
