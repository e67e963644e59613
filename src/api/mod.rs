//! The core namespaces, one file each, assembled into the method table.

pub mod catalog;
pub mod chat;
pub mod config;
pub mod events;
pub mod gateway;
pub mod plugins;
pub mod sessions;

use crate::gateway::Table as MethodTable;
use crate::protocol::{
    ChatEvent, GapEvent, Health, PresenceEvent, SessionsChangedEvent, ShutdownEvent, TickEvent,
};
use crate::rpc::DuplicateMethod;

/// The table of every core method and event.
pub fn core_table() -> Result<MethodTable, DuplicateMethod> {
    let mut table = MethodTable::new();
    gateway::register(&mut table)?;
    events::register(&mut table)?;
    sessions::register(&mut table)?;
    chat::register(&mut table)?;
    catalog::register(&mut table)?;
    config::register(&mut table)?;
    plugins::register(&mut table)?;
    table.event::<TickEvent>("tick", "Sent every policy.tickIntervalMs; a control event.");
    table.event::<GapEvent>(
        "gap",
        "Events in fromSeq..=toSeq that matched the filter may be missing; a control event.",
    );
    table.event::<ShutdownEvent>(
        "shutdown",
        "The gateway is about to close connections; a control event, always delivered.",
    );
    table.event::<PresenceEvent>("presence", "A WebSocket client joined or left.");
    table.event::<Health>(
        "health",
        "Connections, sessions or active runs changed (at most once a second).",
    );
    table.event::<SessionsChangedEvent>(
        "sessions.changed",
        "A session was created, updated, reset, deleted or forked.",
    );
    table.event::<ChatEvent>("chat", "A chat payload; the envelope carries sessionKey.");
    table.event::<crate::protocol::PluginsChangedEvent>(
        "plugins.changed",
        "A plugin changed state (starting, running, restarting, failed, stopped).",
    );
    table.event::<crate::protocol::ConfigChangedEvent>(
        "config.changed",
        "The configuration changed (a file edit or config.patch).",
    );
    Ok(table)
}
