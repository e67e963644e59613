//! clawgate: a JSON-RPC 2.0 control plane for personal AI agents.
//!
//! One process, one port (WebSocket and HTTP), one method table, events as subscriptions.
//! See `docs/PROTOCOL.md` for the protocol and `README.md` for a tour.

pub mod agent;
pub mod api;
pub mod app;
pub mod chat;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod console;
pub mod cron;
pub mod discovery;
pub mod error;
pub mod events;
pub mod gateway;
pub mod http;

pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod net;
pub mod plugins;
pub mod protocol;
pub mod protocol_doc;
pub mod rpc;
pub mod store;
pub mod tls;
pub mod util;
pub mod webhooks;

pub use app::start;
pub use error::{Error, Result};
pub use gateway::{Gateway, Running, start_with};
