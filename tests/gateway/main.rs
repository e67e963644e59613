//! Integration tests: the real gateway on an ephemeral port, driven over real sockets.

mod agent;
mod auth;
mod common;
mod config;
mod events;
mod fake_provider;
mod jsonrpc;
mod plugins;
mod process;
mod rust_client;
mod sessions;
mod tools_confinement;
