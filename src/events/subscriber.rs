//! A subscriber's handle on the hub: the next delivery (events, gaps, then the shutdown),
//! direct delivery, a run's stream; dropping it leaves the hub.

use std::sync::Arc;

use tokio::sync::watch;

use super::EventHub;
use super::envelope::Envelope;
use super::queue::{Outlet, Slot, Step};

/// What a subscriber receives next.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// An event that matched, or a control event.
    Event(Arc<Envelope>),
    /// The gateway is shutting down; this is the last delivery.
    Shutdown(Arc<Envelope>),
}

/// One subscriber's view of the hub; leaves the hub when dropped.
pub struct Subscriber {
    hub: Arc<EventHub>,
    id: u64,
    slot: Arc<Slot>,
    shutdown: watch::Receiver<Option<Arc<Envelope>>>,
    /// The shutdown envelope, taken and waiting for the queue to drain before it.
    last: Option<Arc<Envelope>>,
    done: bool,
}

impl Subscriber {
    /// The handle of the subscriber registered in the hub as `id` with queue `slot`.
    pub(super) fn new(
        hub: Arc<EventHub>,
        id: u64,
        slot: Arc<Slot>,
        shutdown: watch::Receiver<Option<Arc<Envelope>>>,
    ) -> Self {
        Self {
            hub,
            id,
            slot,
            shutdown,
            last: None,
            done: false,
        }
    }

    /// The next delivery; `None` once the stream is over (after shutdown, at the end of its
    /// run, or when the hub is gone). On shutdown, what is already queued (and the `gap` of
    /// what was lost) comes first, then the shutdown; a run's stream that has delivered the
    /// run's last event just ends.
    ///
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            if self.done {
                return None;
            }
            if self.last.is_none()
                && let Some(env) = self.shutdown.borrow_and_update().clone()
            {
                // Under the queue's lock: no flush sends anything after this, and what is
                // queued is delivered from here.
                self.slot.close();
                self.last = Some(env);
            }
            match self.slot.step(&self.hub.epoch()) {
                Step::Deliver(env) => return Some(Delivery::Event(env)),
                Step::Ended => {
                    self.done = true;
                    return None;
                }
                Step::Idle => {}
            }
            if let Some(env) = self.last.take() {
                self.done = true;
                return Some(Delivery::Shutdown(env));
            }
            // A wake between the step above and this wait is not lost (see `Slot::woken`).
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() {
                        self.done = true;
                    }
                }
                _ = self.slot.woken() => {}
            }
        }
    }

    /// Hands every later event straight to `outlet`, if nothing is waiting in the queue (the
    /// replay and what arrived meanwhile go first, through [`next`](Self::next)); returns
    /// whether it did. From then on [`next`](Self::next) yields only the shutdown.
    pub fn go_direct(&mut self, outlet: &Arc<dyn Outlet>) -> bool {
        self.slot.go_direct(outlet)
    }

    /// Keeps only the events of `run_id` (and `gap`s; no `tick`s) from now on, including what
    /// is already queued; the stream ends after the run's last event.
    pub fn only_run(&mut self, run_id: &str) {
        self.slot.only_run(run_id);
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.hub.remove(self.id, self.slot.filter.session_key());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::testkit::{keyed, limits, next_event, parse};
    use crate::events::{Filter, RunTag};
    use crate::protocol::ShutdownEvent;
    use serde_json::json;

    fn run(run_id: &str, ends_run: bool) -> Option<RunTag<'_>> {
        Some(RunTag { run_id, ends_run })
    }

    #[tokio::test]
    async fn a_run_subscriber_sees_its_run_and_ends_with_it() {
        let hub = EventHub::new(limits(16, 64));
        let filter = Filter::new(Some(&["chat".to_string()]), Some("k".into())).expect("filter");
        let mut sub = hub.subscribe(filter, None, None).expect("subscribes");
        hub.publish_tagged("chat", Some("k"), run("a", false), &json!("a1"));
        hub.publish_tagged("chat", Some("k"), run("b", false), &json!("b1"));
        // Told its run after events were already queued: those of other runs go.
        sub.only_run("a");
        hub.publish("chat", Some("k"), &json!("injected"));
        hub.tick();
        hub.publish_tagged("chat", Some("k"), run("a", false), &json!("a2"));
        hub.publish_tagged("chat", Some("k"), run("a", true), &json!("a-end"));
        hub.publish_tagged("chat", Some("k"), run("a", false), &json!("after"));
        assert_eq!(next_event(&mut sub).await["payload"], "a1");
        assert_eq!(next_event(&mut sub).await["payload"], "a2");
        assert_eq!(next_event(&mut sub).await["payload"], "a-end");
        assert!(sub.next().await.is_none(), "the stream ends with the run");
    }

    #[tokio::test]
    async fn shutdown_is_the_last_delivery() {
        let hub = EventHub::new(limits(2, 64));
        let mut sub = hub
            .subscribe(Filter::default_all(), None, None)
            .expect("subscribes");
        for i in 0..10 {
            hub.publish("a", None, &json!(i));
        }
        hub.shutdown(ShutdownEvent {
            reason: "test".into(),
            restart_expected_ms: None,
            suspended_runs: Vec::new(),
        });
        // What was queued, then the gap of what was lost, then the shutdown: nothing silent.
        assert_eq!(next_event(&mut sub).await["seq"], 1);
        assert_eq!(next_event(&mut sub).await["seq"], 2);
        let gap = next_event(&mut sub).await;
        assert_eq!(
            gap["payload"],
            json!({"fromSeq": 3, "toSeq": 10, "reason": "lagged"})
        );
        hub.publish("a", None, &json!("after"));
        match sub.next().await {
            Some(Delivery::Shutdown(env)) => assert_eq!(parse(&env)["event"], "shutdown"),
            other => panic!("expected shutdown, got {other:?}"),
        }
        assert!(sub.next().await.is_none());
    }

    #[tokio::test]
    async fn a_run_stream_ends_with_the_run_even_at_shutdown() {
        let hub = EventHub::new(limits(16, 64));
        let mut sub = keyed(&hub, "k");
        sub.only_run("a");
        hub.publish_tagged("chat", Some("k"), run("a", true), &json!("aborted"));
        hub.shutdown(ShutdownEvent {
            reason: "test".into(),
            restart_expected_ms: None,
            suspended_runs: Vec::new(),
        });
        assert_eq!(next_event(&mut sub).await["payload"], "aborted");
        assert!(
            sub.next().await.is_none(),
            "nothing follows the run's last event"
        );
    }
}
