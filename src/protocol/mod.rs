//! Wire types of the protocol (params, results, event payloads): serde + schemars, no logic.
//!
//! These types are the one source of `schema/openrpc.json`. Field names follow docs/PROTOCOL.md
//! (camelCase on the wire); params reject unknown fields so a typo never falls back to a default.

mod agents;
mod approvals;
mod chat;
mod common;
mod compaction;
mod config;
mod cron;
mod events;
mod gateway;
mod logs;
mod mcp;
mod models;
mod plugins;
mod runs;
mod schema;
mod scope;
mod sessions;
mod subscriptions;
mod tools;
mod usage;
mod values;

pub use agents::*;
pub use approvals::*;
pub use chat::*;
pub use common::*;
pub use compaction::*;
pub use config::*;
pub use cron::*;
pub use events::{Event, EventVisitor, core_events};
pub use gateway::*;
pub use logs::*;
pub use mcp::*;
pub use models::*;
pub use plugins::*;
pub use runs::*;
pub use schema::schema_settings;
pub use scope::Scope;
pub use sessions::*;
pub use subscriptions::*;
pub use tools::*;
pub use usage::*;
pub use values::*;
