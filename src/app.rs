//! Startup: the one place that assembles the parts — the core method table (`api`), the shared
//! state and its domain (`gateway`), and the server (`rpc`) — into a running gateway.

use std::sync::Arc;

use crate::config::Loaded;
use crate::gateway::{Running, StartError, start_with};

/// Creates the data directory, binds, and starts serving the core method table.
pub async fn start(loaded: Loaded) -> Result<Running, StartError> {
    start_with(loaded, Arc::new(crate::api::core_table)).await
}
