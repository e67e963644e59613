//! The core namespaces, one file each, assembled into the method table.

pub mod agents;
pub mod approvals;
pub mod catalog;
pub mod chat;
pub mod config;
pub mod cron;
pub mod errors;
pub mod events;
pub mod gateway;
pub mod logs;
pub mod mcp;
pub mod plugins;
pub mod runs;
pub mod sessions;
pub mod usage;

use crate::gateway::Table as MethodTable;
use crate::rpc::DuplicateMethod;

/// The table of every core method and event.
pub fn core_table() -> Result<MethodTable, DuplicateMethod> {
    let mut table = MethodTable::new();
    gateway::register(&mut table)?;
    events::register(&mut table)?;
    sessions::register(&mut table)?;
    chat::register(&mut table)?;
    catalog::register(&mut table)?;
    agents::register(&mut table)?;
    mcp::register(&mut table)?;
    approvals::register(&mut table)?;
    runs::register(&mut table)?;
    config::register(&mut table)?;
    plugins::register(&mut table)?;
    logs::register(&mut table)?;
    usage::register(&mut table)?;
    cron::register(&mut table)?;
    crate::protocol::core_events(&mut table);
    Ok(table)
}
