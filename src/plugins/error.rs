//! What can go wrong with a plugin, in the plugins' own words; `api::errors` maps it to the
//! protocol.

use crate::rpc::table::DuplicateMethod;

/// A failure of a plugin, or of a call to one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    /// The plugin's process cannot take the call now (restarting, stopped, hung, unwritable).
    #[error("plugin `{plugin}` is unavailable: {why}")]
    Unavailable {
        /// The plugin.
        plugin: String,
        /// Why, and what happens next.
        why: String,
    },
    /// The plugin answered the call with an error of its own.
    #[error("{}", refused_text(.plugin, .refusal))]
    Refused {
        /// The plugin.
        plugin: String,
        /// What it said.
        refusal: Refusal,
    },
    /// An in-process plugin declared a method that is already declared.
    #[error(transparent)]
    Duplicate(#[from] DuplicateMethod),
}

/// A plugin's own error answer, sorted by what it means.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The params were wrong; `path` names the field when the plugin said which.
    BadParams {
        /// Dotted path of the field, empty for the params object.
        path: String,
        /// The plugin's message.
        message: String,
    },
    /// The plugin has no such thing.
    NotFound(String),
    /// A state conflict.
    Conflict(String),
    /// Anything else: the plugin failed.
    Failed(String),
}

impl Refusal {
    /// Sorts a JSON-RPC error answer by its code.
    pub fn from_answer(code: i64, message: String, path: Option<&str>) -> Self {
        match code {
            -32602 => Self::BadParams {
                path: path.unwrap_or("").to_string(),
                message,
            },
            -32022 => Self::NotFound(message),
            -32023 => Self::Conflict(message),
            _ => Self::Failed(message),
        }
    }
}

fn refused_text(plugin: &str, refusal: &Refusal) -> String {
    match refusal {
        Refusal::BadParams { path, message } if !path.is_empty() => {
            format!("invalid params: `{path}`: {message}")
        }
        Refusal::BadParams { message, .. } => format!("invalid params: {message}"),
        Refusal::NotFound(message) | Refusal::Conflict(message) => message.clone(),
        Refusal::Failed(message) => format!("internal error: plugin `{plugin}`: {message}"),
    }
}
