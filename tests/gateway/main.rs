//! Integration tests: the real gateway on an ephemeral port, driven over real sockets.

mod auth;
mod common;
mod events;
mod jsonrpc;
mod process;
mod sessions;
