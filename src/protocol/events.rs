//! The core's events, each declared once: its name and summary belong to its payload type.
//!
//! Publishers pass the payload and the hub takes the name from here; the method table, and
//! through it `x-events`, `gateway.hello.events`, docs/PROTOCOL.md and the SDKs' event types,
//! is fed from [`core_events`]. No event name is written anywhere else.

use schemars::JsonSchema;
use serde::Serialize;

use super::approvals::ApprovalsChangedEvent;
use super::chat::ChatEvent;
use super::config::ConfigChangedEvent;
use super::cron::CronChangedEvent;
use super::gateway::{Health, PresenceEvent};
use super::mcp::McpChanged;
use super::plugins::PluginsChangedEvent;
use super::sessions::SessionsChangedEvent;
use super::subscriptions::{GapEvent, ShutdownEvent, TickEvent};

/// An event payload type with its declaration.
pub trait Event: Serialize + JsonSchema {
    /// The event's name (`event` in the envelope).
    const NAME: &'static str;
    /// One line saying when it is sent.
    const SUMMARY: &'static str;
    /// The payload's state, for events that have one (`chat`): the hub tags the envelope with
    /// it when publishing, so a `<event>.<state>` filter (`chat.final`) reads no JSON.
    fn state(&self) -> Option<&str> {
        None
    }
}

/// Receives the core's event declarations (the method table is one).
pub trait EventVisitor {
    /// One declaration.
    fn event<E: Event>(&mut self);
}

macro_rules! events {
    ($($ty:ty => $name:literal, $summary:literal $(, state: $state:ident)?;)*) => {
        $(impl Event for $ty {
            const NAME: &'static str = $name;
            const SUMMARY: &'static str = $summary;
            $(fn state(&self) -> Option<&str> {
                Some(self.$state.as_str())
            })?
        })*

        /// Hands every core event declaration to `visitor`.
        pub fn core_events(visitor: &mut impl EventVisitor) {
            $(visitor.event::<$ty>();)*
        }
    };
}

events! {
    TickEvent => "tick", "Sent every policy.tickIntervalMs; a control event.";
    GapEvent => "gap", "Events in fromSeq..=toSeq that matched the filter may be missing; a control event.";
    ShutdownEvent => "shutdown", "The gateway is about to close connections; a control event, always delivered.";
    PresenceEvent => "presence", "A WebSocket client joined or left.";
    Health => "health", "Connections, sessions or active runs changed (at most once a second).";
    SessionsChangedEvent => "sessions.changed", "A session was created, updated, reset, deleted or forked.";
    ChatEvent => "chat", "A chat payload; the envelope carries sessionKey.", state: state;
    PluginsChangedEvent => "plugins.changed", "A plugin changed state (starting, running, restarting, failed, stopped).";
    ConfigChangedEvent => "config.changed", "The configuration changed (a file edit or config.patch).";
    McpChanged => "mcp.changed", "An MCP server changed state or tools.";
    ApprovalsChangedEvent => "approvals.changed", "An approval was requested or resolved.";
    CronChangedEvent => "cron.changed", "A scheduled job fired (started), was skipped, or could not start (failed).";
}
