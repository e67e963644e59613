//! A connection's message order: calls that touch sessions take effect in the order their
//! messages arrived, whatever their size (a long message takes longer to parse).

use tokio::sync::oneshot;

/// A message's place in its connection's order.
///
/// Each message gets one, in arrival order, from [`Sequencer::ticket`]. A call that touches
/// sessions waits for the one before it to pass, and passes when it has taken effect; any
/// other message passes at once (the order is handed on without waiting for anything).
pub struct Ticket {
    prev: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<()>>,
}

impl Ticket {
    /// Waits until every earlier message of the connection has passed.
    pub(super) async fn wait_turn(&mut self) {
        if let Some(prev) = self.prev.take() {
            let _ = prev.await;
        }
    }
}

impl Drop for Ticket {
    /// Passes: the next message may take effect once the earlier ones have.
    fn drop(&mut self) {
        let Some(done) = self.done.take() else { return };
        let Some(mut prev) = self.prev.take() else {
            let _ = done.send(());
            return;
        };
        let pending = matches!(prev.try_recv(), Err(oneshot::error::TryRecvError::Empty));
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if pending => {
                handle.spawn(async move {
                    let _ = prev.await;
                    let _ = done.send(());
                });
            }
            _ => {
                let _ = done.send(());
            }
        }
    }
}

/// Hands out a connection's [`Ticket`]s in arrival order.
#[derive(Default)]
pub struct Sequencer {
    last: Option<oneshot::Receiver<()>>,
}

impl Sequencer {
    /// The ticket of the next message.
    pub fn ticket(&mut self) -> Ticket {
        let (tx, rx) = oneshot::channel();
        Ticket {
            prev: self.last.replace(rx),
            done: Some(tx),
        }
    }
}

/// Whether calls of `method` touch sessions (and so keep their connection's order).
pub(super) fn touches_sessions(method: &str) -> bool {
    method.starts_with("chat.") || method.starts_with("sessions.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn chat_and_sessions_calls_keep_the_order() {
        for m in ["chat.send", "chat.abort", "sessions.reset", "sessions.x"] {
            assert!(touches_sessions(m), "{m}");
        }
        for m in [
            "chat",
            "sessions",
            "gateway.status",
            "events.subscribe",
            "xchat.send",
        ] {
            assert!(!touches_sessions(m), "{m}");
        }
    }

    #[tokio::test]
    async fn a_ticket_waits_for_every_earlier_one() {
        let mut order = Sequencer::default();
        let mut first = order.ticket();
        let second = order.ticket();
        let mut third = order.ticket();
        tokio::time::timeout(Duration::from_secs(1), first.wait_turn())
            .await
            .expect("the first waits for nothing");
        // Dropped before the first has passed: the second hands the order on, not past it.
        drop(second);
        let waiting = tokio::spawn(async move { third.wait_turn().await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiting.is_finished(), "the first has not passed yet");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("first and second passed")
            .expect("no panic");
    }
}
