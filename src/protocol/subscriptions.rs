//! Wire types of the `events.*` methods: subscribe params, the envelope subscribers receive,
//! and the payloads of the control events (`tick`, `gap`, `shutdown`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::SessionKey;

/// Params of `events.subscribe`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "SubscribeParams")]
pub struct SubscribeParams {
    /// Exact event names or prefixes ending in `.*`; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// Keep only envelopes carrying this session key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<SessionKey>,
    /// Replay buffered events with a greater `seq` first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    /// The epoch `afterSeq` belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// Params of an unsubscribe method: `[subscriptionId]` or `{subscription}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "UnsubscribeParams")]
pub struct UnsubscribeParams {
    /// The id the subscribe call returned.
    pub subscription: String,
}

/// An event as subscribers receive it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "EventEnvelope")]
pub struct EventEnvelope {
    /// This process lifetime's epoch.
    pub epoch: String,
    /// Gateway-wide sequence number (control events carry the latest one).
    pub seq: u64,
    /// The event's name.
    pub event: String,
    /// When it was published (ms since the epoch).
    pub ts: u64,
    /// The session the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// The event's payload.
    pub payload: serde_json::Value,
}

/// Payload of `tick`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "TickEvent")]
pub struct TickEvent {
    /// Now (ms since the epoch).
    pub ts: u64,
}

/// Why events may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "GapReason")]
pub enum GapReason {
    /// The subscriber fell behind and events were dropped for it.
    Lagged,
    /// The replay buffer no longer reaches back to `afterSeq`.
    Expired,
    /// The gateway restarted since the client's epoch.
    Restart,
}

/// Payload of `gap`: events in `fromSeq..=toSeq` that matched the filter may be missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "GapEvent")]
pub struct GapEvent {
    /// First seq that may be missing.
    pub from_seq: u64,
    /// Last seq that may be missing.
    pub to_seq: u64,
    /// Why.
    pub reason: GapReason,
}

/// Payload of `shutdown`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ShutdownEvent")]
pub struct ShutdownEvent {
    /// Why the gateway stops.
    pub reason: String,
    /// When it expects to be back, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_expected_ms: Option<u64>,
    /// The runs suspended by this shutdown (resumed at the next start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspended_runs: Vec<String>,
}
