//! A configuration that could not be loaded or changed: where, and what was wrong.

/// A configuration that could not be loaded: where, what was found, what was expected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid configuration{}: {message}", if path.is_empty() { String::new() } else { format!(" at `{path}`") })]
pub struct ConfigError {
    /// Dotted path of the key, empty when the whole file is at fault.
    pub path: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}
