//! Startup: the one place that assembles the parts — the core method table (`api`), the shared
//! state and its domain (`gateway`), the doors (`http`) and the server (`rpc`) — into a
//! running gateway.

use std::sync::Arc;

use crate::config::Loaded;
use crate::gateway::{BaseTable, Parts, Running, StartError, start_with};

/// Creates the data directory, binds, and starts serving the core method table and the doors.
pub async fn start(loaded: Loaded) -> Result<Running, StartError> {
    start_with(loaded, parts(Arc::new(crate::api::core_table))).await
}

/// The parts of a full gateway around a method table of the caller's: that table and the
/// standard doors (`crate::http`).
pub fn parts(table: BaseTable) -> Parts {
    Parts {
        table,
        doors: Some(crate::http::route),
    }
}
