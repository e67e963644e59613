//! Whether one connection to an MCP server is still usable, and why not.

use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

/// Whether a connection is still usable; the first failure (crash, garbage, hang, closed
/// transport) marks it dead for good, with its reason.
#[derive(Default)]
pub struct Health {
    dead: CancellationToken,
    why: Mutex<Option<String>>,
}

impl Health {
    /// Marks the connection dead because of `why` (the first reason is kept).
    pub fn fail(&self, why: impl Into<String>) {
        if let Ok(mut slot) = self.why.lock()
            && slot.is_none()
        {
            *slot = Some(why.into());
        }
        self.dead.cancel();
    }

    /// Whether the connection is dead.
    pub fn is_dead(&self) -> bool {
        self.dead.is_cancelled()
    }

    /// Resolves once the connection is dead.
    pub async fn died(&self) {
        self.dead.cancelled().await;
    }

    /// Why it died (or a generic reason).
    pub fn why(&self) -> String {
        self.why
            .lock()
            .ok()
            .and_then(|w| w.clone())
            .unwrap_or_else(|| "its connection closed".into())
    }
}
