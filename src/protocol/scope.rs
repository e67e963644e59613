//! Access levels of callers and methods.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Access levels; each includes the ones before it: `read` < `write` < `admin`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "Scope")]
pub enum Scope {
    /// Read state and subscribe to events.
    Read,
    /// Change sessions and run the agent.
    Write,
    /// Read and change the configuration.
    Admin,
}

impl Scope {
    /// The scope's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
