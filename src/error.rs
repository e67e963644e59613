//! Typed errors of the gateway and their one mapping to JSON-RPC error objects.
//!
//! Every failure inside the gateway is an [`Error`]; the edge (the RPC layer) turns it into a
//! JSON-RPC error object with [`Error::to_object`]. The codes live here and nowhere else.

use jsonrpsee::types::ErrorObjectOwned;
use serde_json::{Value, json};

/// JSON-RPC error codes used by clawgate (docs/PROTOCOL.md, "Errors").
pub mod code {
    /// Invalid JSON was received.
    pub const PARSE_ERROR: i32 = -32700;
    /// The JSON sent is not a valid request object.
    pub const INVALID_REQUEST: i32 = -32600;
    /// The method does not exist or is not available.
    pub const METHOD_NOT_FOUND: i32 = -32601;
    /// Invalid method parameters.
    pub const INVALID_PARAMS: i32 = -32602;
    /// Internal error.
    pub const INTERNAL: i32 = -32603;
    /// The request is larger than `policy.maxPayloadBytes`.
    pub const PAYLOAD_TOO_LARGE: i32 = -32007;
    /// The response would be larger than `policy.maxPayloadBytes`.
    pub const RESPONSE_TOO_LARGE: i32 = -32008;
    /// The server is busy (a limit is reached).
    pub const BUSY: i32 = -32009;
    /// No valid credentials.
    pub const UNAUTHORIZED: i32 = -32020;
    /// The caller lacks the scope the method needs.
    pub const FORBIDDEN: i32 = -32021;
    /// No such session, run, message, plugin...
    pub const NOT_FOUND: i32 = -32022;
    /// A stale hash, an existing key, a state that differs from the one expected.
    pub const CONFLICT: i32 = -32023;
    /// Too many calls.
    pub const RATE_LIMITED: i32 = -32024;
    /// Starting, shutting down, or a component is down.
    pub const UNAVAILABLE: i32 = -32025;
    /// The model provider failed.
    pub const UPSTREAM: i32 = -32026;
    /// A subscription method was called over HTTP.
    pub const WEBSOCKET_REQUIRED: i32 = -32027;
}

/// Everything that can go wrong while serving a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The message is not valid JSON.
    #[error("parse error: {0}")]
    Parse(String),
    /// The message is JSON but not a valid JSON-RPC request.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No method of that name.
    #[error("method not found: {0}")]
    MethodNotFound(String),
    /// Params did not match what the method expects.
    #[error("invalid params at `{path}`: {message}")]
    InvalidParams {
        /// Dotted path of the offending field, empty for the params object itself.
        path: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A bug or an unexpected I/O failure inside the gateway.
    #[error("internal error: {0}")]
    Internal(String),
    /// The request is larger than the limit.
    #[error("request of {size} bytes is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size of the request, when known.
        size: usize,
        /// The limit, `policy.maxPayloadBytes`.
        limit: usize,
    },
    /// The response would be larger than the limit.
    #[error("response is larger than the limit of {limit} bytes")]
    ResponseTooLarge {
        /// The limit, `policy.maxPayloadBytes`.
        limit: usize,
    },
    /// A limit of the server is reached.
    #[error("busy: {0}")]
    Busy(String),
    /// No valid credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The caller's token lacks the scope.
    #[error("this method needs the `{required}` scope")]
    Forbidden {
        /// The scope the method needs.
        required: crate::protocol::Scope,
    },
    /// The caller may not do this (its token is not among those allowed), though its scope
    /// would let it call the method.
    #[error("{0}")]
    Refused(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// A conflicting state.
    #[error("{0}")]
    Conflict(String),
    /// A conflicting state: a run of the session is in progress (`-32023` with
    /// `data.activeRunId`).
    #[error("{message}")]
    RunActive {
        /// What cannot be done, and why.
        message: String,
        /// The run in progress.
        active_run_id: String,
    },
    /// Too many calls.
    #[error("rate limited: retry after {retry_after_ms} ms")]
    RateLimited {
        /// When to retry.
        retry_after_ms: u64,
    },
    /// Starting, shutting down or a component is down.
    #[error("{message}")]
    Unavailable {
        /// What is unavailable and why.
        message: String,
        /// Whether retrying later can succeed.
        retryable: bool,
    },
    /// The store cannot read or write (a full disk, too few file descriptors, an I/O error):
    /// `-32025` with `data.reason: "storage"`, retryable. The message says which session and
    /// which operation, never an internal path.
    #[error("storage unavailable: {0}")]
    Storage(String),
    /// A subscription method called over HTTP.
    #[error("`{0}` is a subscription: connect over WebSocket to call it")]
    WebSocketRequired(String),
    /// Cluster mode: the error another node answered a forwarded call with, passed on as is.
    #[error("{message}")]
    Remote {
        /// Its code.
        code: i32,
        /// Its message.
        message: String,
        /// Its data.
        data: Value,
    },
    /// The model provider failed or cannot be used.
    #[error("{message}")]
    Upstream {
        /// What happened.
        message: String,
        /// The provider error kind (`auth`, `rate_limited`, ...).
        kind: String,
        /// The provider's HTTP status, if any.
        status: Option<u16>,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidParams`].
    pub fn invalid_params(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidParams {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Internal`] from anything displayable.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        Self::Internal(err.to_string())
    }

    /// The JSON-RPC error code.
    pub fn code(&self) -> i32 {
        match self {
            Self::Parse(_) => code::PARSE_ERROR,
            Self::InvalidRequest(_) => code::INVALID_REQUEST,
            Self::MethodNotFound(_) => code::METHOD_NOT_FOUND,
            Self::InvalidParams { .. } => code::INVALID_PARAMS,
            Self::Internal(_) => code::INTERNAL,
            Self::PayloadTooLarge { .. } => code::PAYLOAD_TOO_LARGE,
            Self::ResponseTooLarge { .. } => code::RESPONSE_TOO_LARGE,
            Self::Busy(_) => code::BUSY,
            Self::Unauthorized(_) => code::UNAUTHORIZED,
            Self::Forbidden { .. } | Self::Refused(_) => code::FORBIDDEN,
            Self::NotFound(_) => code::NOT_FOUND,
            Self::Conflict(_) | Self::RunActive { .. } => code::CONFLICT,
            Self::RateLimited { .. } => code::RATE_LIMITED,
            Self::Unavailable { .. } | Self::Storage(_) => code::UNAVAILABLE,
            Self::WebSocketRequired(_) => code::WEBSOCKET_REQUIRED,
            Self::Upstream { .. } => code::UPSTREAM,
            Self::Remote { code, .. } => *code,
        }
    }

    /// The `data.kind` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Parse(_) => "parse_error",
            Self::InvalidRequest(_) => "invalid_request",
            Self::MethodNotFound(_) => "method_not_found",
            Self::InvalidParams { .. } => "invalid_params",
            Self::Internal(_) => "internal",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::ResponseTooLarge { .. } => "response_too_large",
            Self::Busy(_) => "busy",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden { .. } | Self::Refused(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) | Self::RunActive { .. } => "conflict",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } | Self::Storage(_) => "unavailable",
            Self::WebSocketRequired(_) => "websocket_required",
            Self::Upstream { .. } => "upstream",
            Self::Remote { .. } => "remote",
        }
    }

    /// The `error.data` object: always `kind`, plus the fields each kind promises.
    pub fn data(&self) -> Value {
        if let Self::Remote { data, .. } = self {
            return data.clone();
        }
        let mut data = json!({ "kind": self.kind() });
        match self {
            Self::InvalidParams { path, .. } => data["path"] = json!(path),
            Self::Forbidden { required } => data["requiredScope"] = json!(required),
            Self::RateLimited { retry_after_ms } => data["retryAfterMs"] = json!(retry_after_ms),
            Self::Unavailable { retryable, .. } => data["retryable"] = json!(retryable),
            Self::RunActive { active_run_id, .. } => data["activeRunId"] = json!(active_run_id),
            Self::Storage(_) => {
                data["retryable"] = json!(true);
                data["reason"] = json!("storage");
            }
            Self::PayloadTooLarge { limit, .. } | Self::ResponseTooLarge { limit } => {
                data["limit"] = json!(limit)
            }
            Self::Upstream { kind, status, .. } => {
                data["upstream"] = match status {
                    Some(s) => json!({"kind": kind, "status": s}),
                    None => json!({"kind": kind}),
                };
            }
            _ => {}
        }
        data
    }

    /// The human-readable `error.message`.
    pub fn message(&self) -> String {
        match self {
            Self::InvalidParams { path, message } if !path.is_empty() => {
                format!("invalid params: `{path}`: {message}")
            }
            Self::InvalidParams { message, .. } => format!("invalid params: {message}"),
            other => other.to_string(),
        }
    }

    /// The JSON-RPC error object sent to clients.
    pub fn to_object(&self) -> ErrorObjectOwned {
        ErrorObjectOwned::owned(self.code(), self.message(), Some(self.data()))
    }
}

impl From<Error> for ErrorObjectOwned {
    fn from(err: Error) -> Self {
        err.to_object()
    }
}

/// Result alias used across the gateway.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_carries_a_reason_only_for_storage() {
        let storage = Error::Storage("cannot append to session `main`: disk full".into());
        assert_eq!(storage.code(), code::UNAVAILABLE);
        assert_eq!(
            storage.data(),
            json!({"kind": "unavailable", "retryable": true, "reason": "storage"})
        );
        assert_eq!(
            storage.message(),
            "storage unavailable: cannot append to session `main`: disk full"
        );
        let other = Error::Unavailable {
            message: "the gateway is shutting down".into(),
            retryable: true,
        };
        assert_eq!(other.code(), code::UNAVAILABLE);
        assert_eq!(
            other.data(),
            json!({"kind": "unavailable", "retryable": true})
        );
    }
}
