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
use crate::store::{KeyArg, MessageArg, StoreError};

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

/// The scheduler's refusals: a bad field `-32602`, a name taken or a config job `-32023`, a
/// job whose run is still active `-32023` with `data.activeRunId`, an unknown job `-32022`.
impl From<crate::cron::CronError> for Error {
    fn from(err: crate::cron::CronError) -> Self {
        use crate::cron::CronError;
        let message = err.to_string();
        match err {
            CronError::Invalid { field, message } => Error::invalid_params(field, message),
            CronError::Duplicate(_) | CronError::ConfigJob(_) => Error::Conflict(message),
            CronError::NotFound(_) => Error::NotFound(message),
            CronError::Busy { run_id, .. } => Error::RunActive {
                message,
                active_run_id: run_id,
            },
            CronError::Agent(err) => err.into(),
            CronError::Storage(_) => Error::Storage(message),
        }
    }
}

/// The agent's refusals: shutdown is `-32025` (retryable), an unknown run `-32022`, a run in
/// the way `-32023` with `data.activeRunId`, a failed summary call `-32026`; a store failure
/// keeps the store's own mapping.
impl From<AgentError> for Error {
    fn from(err: AgentError) -> Self {
        let message = err.to_string();
        match err {
            AgentError::ShuttingDown => Error::Unavailable {
                message,
                retryable: true,
            },
            AgentError::NoSuchRun(_)
            | AgentError::NoSuchAgent(_)
            | AgentError::NoSuchApproval(_) => Error::NotFound(message),
            AgentError::ApprovalResolved { .. } => Error::Conflict(message),
            AgentError::NotApprover { .. } => Error::Refused(message),
            AgentError::OtherAgent { .. } => Error::Conflict(message),
            AgentError::AgentRemoved { .. } => Error::Unavailable {
                message,
                retryable: false,
            },
            AgentError::Store(err) => err.into(),
            AgentError::RunActive { run_id, .. } => Error::RunActive {
                message,
                active_run_id: run_id,
            },
            AgentError::Summary(err) | AgentError::NotReady(err) => Error::Upstream {
                message,
                kind: err.kind.as_str().into(),
                status: err.status,
            },
        }
    }
}

/// The store's errors as clients get them. A key argument maps to the params field that
/// carries it: `ensure` is reached from `chat.*` (`sessionKey`), `create` from
/// `sessions.create` (`key`), a fork's new key from `sessions.fork` (`newKey`).
impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::InvalidKey { arg, reason } => {
                let path = match arg {
                    KeyArg::Session => "sessionKey",
                    KeyArg::Create => "key",
                    KeyArg::Fork => "newKey",
                };
                Error::invalid_params(path, reason)
            }
            StoreError::BadCursor => {
                Error::invalid_params("cursor", "expected a nextCursor returned by sessions.list")
            }
            StoreError::NoSession { key } => {
                Error::NotFound(format!("no session with key `{key}`"))
            }
            StoreError::KeyTaken { key } => {
                Error::Conflict(format!("a session with key `{key}` already exists"))
            }
            StoreError::Undeletable { key } => Error::Conflict(format!(
                "the session `{key}` cannot be deleted; reset it instead"
            )),
            e @ StoreError::Ephemeral { .. } => Error::Conflict(e.to_string()),
            StoreError::Archived { key, session_id } => Error::Conflict(format!(
                "session `{key}` was reset: transcript {session_id} is archived"
            )),
            StoreError::NoMessage {
                key,
                id,
                arg: MessageArg::ForkAt,
            } => Error::NotFound(format!("no message `{id}` in session `{key}`")),
            StoreError::NoMessage {
                key,
                arg: MessageArg::Before,
                ..
            } => Error::NotFound(format!("no message with that beforeId in session `{key}`")),
            StoreError::Contended { key } => Error::Unavailable {
                message: format!("session `{key}` keeps changing under this write; try again"),
                retryable: true,
            },
            StoreError::Storage(why) => Error::Storage(why),
            StoreError::Log(why) => Error::Unavailable {
                message: format!("the cluster's transcript log did not take the write: {why}"),
                retryable: true,
            },
            StoreError::Internal(why) => Error::Internal(why),
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
        let busy = Error::from(AgentError::RunActive {
            key: "main".into(),
            run_id: "r1".into(),
        });
        assert_eq!(busy.code(), code::CONFLICT);
        assert_eq!(
            busy.message(),
            "session `main` has a run in progress (`r1`); try again when it has ended"
        );
        assert_eq!(
            busy.data(),
            json!({"kind": "conflict", "activeRunId": "r1"})
        );
        let mut failed = crate::agent::providers::ProviderError::new(
            crate::agent::providers::ErrorKind::Auth,
            "no key",
            false,
        );
        failed.status = Some(401);
        let failed = Error::from(AgentError::Summary(failed));
        assert_eq!(failed.code(), code::UPSTREAM);
        assert_eq!(failed.message(), "the summary call failed: no key");
        assert_eq!(
            failed.data(),
            json!({"kind": "upstream", "upstream": {"kind": "auth", "status": 401}})
        );
        let storage = Error::from(AgentError::Store(StoreError::Storage(
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

    fn wire(err: StoreError) -> (i32, String, serde_json::Value) {
        let err = Error::from(err);
        (err.code(), err.message(), err.data())
    }

    #[test]
    fn store_errors_reach_clients_as_before() {
        let invalid = |arg| StoreError::InvalidKey {
            arg,
            reason: "expected 1 to 128 characters of A-Z a-z 0-9 . _ : -".into(),
        };
        for (arg, path) in [
            (KeyArg::Session, "sessionKey"),
            (KeyArg::Create, "key"),
            (KeyArg::Fork, "newKey"),
        ] {
            assert_eq!(
                wire(invalid(arg)),
                (
                    code::INVALID_PARAMS,
                    format!(
                        "invalid params: `{path}`: expected 1 to 128 characters of A-Z a-z 0-9 . _ : -"
                    ),
                    json!({"kind": "invalid_params", "path": path})
                )
            );
        }
        assert_eq!(
            wire(StoreError::BadCursor),
            (
                code::INVALID_PARAMS,
                "invalid params: `cursor`: expected a nextCursor returned by sessions.list".into(),
                json!({"kind": "invalid_params", "path": "cursor"})
            )
        );
        let not_found = json!({"kind": "not_found"});
        assert_eq!(
            wire(StoreError::no_session("k")),
            (
                code::NOT_FOUND,
                "no session with key `k`".into(),
                not_found.clone()
            )
        );
        let message = |arg| StoreError::NoMessage {
            key: "k".into(),
            id: "m1".into(),
            arg,
        };
        assert_eq!(
            wire(message(MessageArg::ForkAt)),
            (
                code::NOT_FOUND,
                "no message `m1` in session `k`".into(),
                not_found.clone()
            )
        );
        assert_eq!(
            wire(message(MessageArg::Before)),
            (
                code::NOT_FOUND,
                "no message with that beforeId in session `k`".into(),
                not_found
            )
        );
        let conflict = json!({"kind": "conflict"});
        assert_eq!(
            wire(StoreError::KeyTaken { key: "k".into() }),
            (
                code::CONFLICT,
                "a session with key `k` already exists".into(),
                conflict.clone()
            )
        );
        assert_eq!(
            wire(StoreError::Undeletable { key: "main".into() }),
            (
                code::CONFLICT,
                "the session `main` cannot be deleted; reset it instead".into(),
                conflict.clone()
            )
        );
        assert_eq!(
            wire(StoreError::Archived {
                key: "k".into(),
                session_id: "abc".into()
            }),
            (
                code::CONFLICT,
                "session `k` was reset: transcript abc is archived".into(),
                conflict
            )
        );
        assert_eq!(
            wire(StoreError::Contended { key: "k".into() }),
            (
                code::UNAVAILABLE,
                "session `k` keeps changing under this write; try again".into(),
                json!({"kind": "unavailable", "retryable": true})
            )
        );
        assert_eq!(
            wire(StoreError::Storage(
                "cannot append to session `main`: disk full".into()
            )),
            (
                code::UNAVAILABLE,
                "storage unavailable: cannot append to session `main`: disk full".into(),
                json!({"kind": "unavailable", "retryable": true, "reason": "storage"})
            )
        );
        assert_eq!(
            wire(StoreError::Internal("boom".into())),
            (
                code::INTERNAL,
                "internal error: boom".into(),
                json!({"kind": "internal"})
            )
        );
    }

    /// The agent puts store errors into sentences of its own with `{}`: they read as the
    /// protocol errors did.
    #[test]
    fn a_store_error_displays_as_its_protocol_error() {
        for err in [
            StoreError::no_session("k"),
            StoreError::Storage("cannot read session `k`: disk full".into()),
            StoreError::Internal("boom".into()),
            StoreError::KeyTaken { key: "k".into() },
            StoreError::Contended { key: "k".into() },
            StoreError::Undeletable { key: "main".into() },
        ] {
            assert_eq!(err.to_string(), Error::from(err.clone()).to_string());
        }
    }
}
