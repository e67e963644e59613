//! Integration tests: the real gateway on an ephemeral port, driven over real sockets.

mod agent;
mod agents;
mod approvals;
mod auth;
mod chat_cli;
mod common;
mod compaction;
mod config;
mod config_guard;
mod console;
mod events;
mod fake_provider;
mod hardening;
mod jsonrpc;
mod mcp;
mod netns;
mod plugins;
mod process;
mod resume;
mod rust_client;
mod sessions;
mod steering;
mod store_failures;
mod tools_confinement;
