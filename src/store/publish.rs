//! The store's events: `sessions.changed` for each change of a session, published on the hub.

use super::Store;
use crate::protocol::{Session, SessionChangeReason, SessionsChangedEvent};

impl Store {
    /// Publishes that `key` changed for `reason`, with the session as it is now (none once
    /// deleted); nothing for an ephemeral session, which is not listed either.
    pub(super) fn publish(&self, key: &str, reason: SessionChangeReason, session: Option<Session>) {
        if self.lookup(key).is_some_and(|t| t.ephemeral) {
            return;
        }
        if let Some(log) = self.log.get() {
            log.indexed(key, session.as_ref());
        }
        self.hub.emit(
            Some(key),
            &SessionsChangedEvent {
                session_key: key.to_string(),
                reason,
                session,
            },
        );
    }

    /// Publishes `sessions.changed {updated}` with the session as it is now.
    pub fn publish_updated(&self, key: &str) {
        if let Some(t) = self.lookup(key) {
            self.publish(key, SessionChangeReason::Updated, Some(t.entry().session()));
        }
    }
}
