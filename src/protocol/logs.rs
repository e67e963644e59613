//! `logs.tail`: the params of the subscription and the records it sends.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A log level, most severe first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "LogLevel")]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something is wrong but the gateway goes on.
    Warn,
    /// What the gateway does.
    Info,
    /// Detail for debugging.
    Debug,
    /// More detail still.
    Trace,
}

impl LogLevel {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// Params of `logs.tail`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "LogsTailParams")]
pub struct LogsTailParams {
    /// The least severe level sent (default `info`). Records below the gateway's own filter
    /// (`RUST_LOG`, `--log-level`) are never made, so never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    /// Only records whose target is this or starts with it followed by `::`
    /// (`"clawgate::agent"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// How many of the newest records kept in memory to send first, 0..1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub lines: Option<u32>,
}

/// One log record (`logs.record`). Tokens, keys and `?token=` values are replaced by
/// `[redacted]` before a record is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "LogRecord")]
pub struct LogRecord {
    /// When, in ms since the Unix epoch.
    pub ts: u64,
    /// Its level.
    pub level: LogLevel,
    /// The module that wrote it (`clawgate::rpc::server`).
    pub target: String,
    /// The message.
    pub message: String,
    /// Its structured fields, by name.
    pub fields: serde_json::Map<String, serde_json::Value>,
}
