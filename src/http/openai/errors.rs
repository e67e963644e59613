//! The OpenAI door's refusals, in OpenAI's shape `{error: {message, type, code, param}}`, and
//! how the agent's errors map onto HTTP statuses.

use http::{StatusCode, header};
use serde_json::json;

use crate::agent::AgentError;
use crate::rpc::http::{Body, json_response};
use crate::store::StoreError;

/// One refusal of the door.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// OpenAI's `type` (`invalid_request_error`, `authentication_error`, ...).
    pub kind: &'static str,
    /// A short machine-readable `code`.
    pub code: &'static str,
    /// What was wrong, for a person.
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// `Retry-After` in milliseconds (429 only).
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    /// A refusal with `status`, `kind` and `code`.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            retry_after_ms: None,
        }
    }

    /// 400 about the request field `param`.
    pub fn bad_request(
        code: &'static str,
        param: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let mut err = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        );
        err.param = Some(param.into());
        err
    }

    /// 404 for a model that names no configured agent.
    pub fn unknown_model(model: &str) -> Self {
        let mut err = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "the model `{model}` does not exist: use `clawgate/<agentId>` (or the bare agent id) of a configured agent; GET /v1/models lists them"
            ),
        );
        err.param = Some("model".into());
        err
    }

    /// 502: the agent's provider failed (`kind` is the provider error's kind).
    pub fn provider(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "provider_failed",
            message,
        )
    }

    /// The body `{error: {message, type, code, param}}`.
    pub fn body(&self) -> String {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "code": self.code,
            "param": self.param,
        }})
        .to_string()
    }

    /// The whole response.
    pub fn response(&self) -> http::Response<Body> {
        let mut resp = json_response(self.status, self.body());
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(ms) = self.retry_after_ms {
            let secs = ms.div_ceil(1000).max(1);
            if let Ok(value) = header::HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        resp
    }
}

/// The agent's refusal of a send as the door answers it.
impl From<AgentError> for ApiError {
    fn from(err: AgentError) -> Self {
        let message = err.to_string();
        match err {
            AgentError::NoSuchAgent(id) => ApiError::unknown_model(&id),
            AgentError::AgentRemoved { .. } => {
                let mut e = ApiError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "model_not_found",
                    message,
                );
                e.param = Some("model".into());
                e
            }
            AgentError::OtherAgent { .. } => {
                ApiError::bad_request("session_agent_mismatch", "model", message)
            }
            AgentError::RunActive { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "conflict_error",
                "session_busy",
                message,
            ),
            AgentError::NotReady(_) | AgentError::Summary(_) => ApiError::provider(message),
            AgentError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "shutting_down",
                message,
            ),
            AgentError::Store(err) => err.into(),
            AgentError::NoSuchRun(_)
            | AgentError::NoSuchApproval(_)
            | AgentError::ApprovalResolved { .. }
            | AgentError::NotApprover { .. } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
                message,
            ),
        }
    }
}

/// The store's refusal (a bad session key, storage trouble) as the door answers it.
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        let message = err.to_string();
        match err {
            StoreError::InvalidKey { reason, .. } => ApiError::bad_request(
                "invalid_session_key",
                "x-clawgate-session-key",
                format!("the header x-clawgate-session-key is not a valid session key: {reason}"),
            ),
            StoreError::Storage(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "storage_unavailable",
                message,
            ),
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
                message,
            ),
        }
    }
}
