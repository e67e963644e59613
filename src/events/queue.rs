//! One subscriber's queue: bounded in events and in bytes, losses recorded and announced as a
//! `gap`, and direct delivery to an [`Outlet`] once the subscriber has caught up.
//!
//! The hub fills the queue under its own lock (so every queue is in `seq` order) and flushes it
//! after; the subscriber drains it. Everything here runs under the queue's own lock, never
//! while sending anything that could wait.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::envelope::{self, Envelope};
use super::filter::Filter;
use crate::protocol::{Event, GapEvent};

/// What became of an envelope offered to an [`Outlet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Queued for the client.
    Sent,
    /// The client's queue is full: the envelope was not taken.
    Full,
    /// The subscription is over.
    Closed,
}

/// A non-blocking destination for a live subscriber's envelopes (its connection's queue).
///
/// Handing envelopes straight to the connection spares every delivery a wake-up of the
/// subscription's own task: at 10,000 subscribers that is most of the gateway's share of the
/// cost of an event.
pub trait Outlet: Send + Sync {
    /// Takes `envelope_json` without waiting, or says why not.
    fn offer(&self, envelope_json: &str) -> Offered;
}

/// One subscriber's queue, shared between the hub (which fills it) and the subscriber.
pub(super) struct Slot {
    /// The events this subscriber wants.
    pub(super) filter: Filter,
    state: Mutex<SlotState>,
    wake: Notify,
}

#[derive(Default)]
struct SlotState {
    queue: VecDeque<Arc<Envelope>>,
    /// The first and last `seq` dropped since the last delivery, not yet announced.
    lost: Option<(u64, u64)>,
    /// Once the subscriber has caught up: where events go instead of the queue.
    outlet: Option<Arc<dyn Outlet>>,
    /// Only this run's events (and `gap`s), ending with its last event.
    only_run: Option<Box<str>>,
    /// The run's last event was taken: nothing more is.
    finished: bool,
    /// The subscriber took the shutdown: nothing more is sent.
    closed: bool,
    /// Replayed events still at the front of the queue: they do not count against its bound,
    /// so a replay longer than `subscriber_queue` does not cost the live events after it.
    replay_left: usize,
    /// Bytes of the live (not replayed) events in the queue.
    live_bytes: usize,
}

impl SlotState {
    /// Takes the front of the queue, keeping the counts of replayed and live events.
    fn pop_front(&mut self) -> Option<Arc<Envelope>> {
        let env = self.queue.pop_front()?;
        if self.replay_left > 0 {
            self.replay_left -= 1;
        } else {
            self.live_bytes = self.live_bytes.saturating_sub(env.json.len());
        }
        Some(env)
    }

    /// Counts the live bytes again after the queue was edited.
    fn recount(&mut self) {
        self.replay_left = self.replay_left.min(self.queue.len());
        self.live_bytes = self
            .queue
            .iter()
            .skip(self.replay_left)
            .map(|e| e.json.len())
            .sum();
    }
}

/// What the subscriber does next, as its queue says.
pub(super) enum Step {
    /// Deliver this envelope (an event, or the `gap` of what was lost).
    Deliver(Arc<Envelope>),
    /// The run's last event was delivered: the stream is over.
    Ended,
    /// Nothing to take now: wait for a wake-up.
    Idle,
}

impl Slot {
    /// A subscriber's queue, starting with what it is replayed.
    pub(super) fn new(filter: Filter, replay: VecDeque<Arc<Envelope>>) -> Self {
        Slot {
            filter,
            state: Mutex::new(SlotState {
                replay_left: replay.len(),
                queue: replay,
                ..Default::default()
            }),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A poisoned lock only means a panic elsewhere; nothing here is left half-updated.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `env` (after the `gap` of what was lost, if any), or records it as lost when
    /// more than `max_events` live events or `max_bytes` of them are waiting (one event
    /// always fits); returns whether it was queued (and needs a [`Slot::flush`]).
    pub(super) fn offer(
        &self,
        env: &Arc<Envelope>,
        max_events: usize,
        max_bytes: usize,
        epoch: &str,
    ) -> bool {
        let mut state = self.lock();
        if state.finished || state.closed {
            return false;
        }
        if let Some(run) = state.only_run.as_deref() {
            // Gaps are made here, never offered: a run's stream takes no control event.
            if env.control || env.run_id.as_deref() != Some(run) {
                return false;
            }
            state.finished = env.ends_run;
        }
        let live = state.queue.len() - state.replay_left.min(state.queue.len());
        let over_bytes = live > 0 && state.live_bytes + env.json.len() > max_bytes;
        if live >= max_events.max(1) || over_bytes {
            if !env.control {
                let from = state.lost.map_or(env.seq, |(from, _)| from);
                state.lost = Some((from, env.seq));
            }
            return false;
        }
        if let Some((from, to)) = state.lost.take() {
            let gap = envelope::lag_gap(epoch, from, to);
            state.live_bytes += gap.json.len();
            state.queue.push_back(gap);
        }
        state.live_bytes += env.json.len();
        state.queue.push_back(env.clone());
        true
    }

    /// The hub's epoch changed (cluster mode: the shared stream was made again): `gap`
    /// (`restart`) goes after what is queued (always: it is the one thing that says so), and
    /// stands for what was lost of the old epoch too.
    pub(super) fn restart(&self, gap: &Arc<Envelope>) {
        let mut state = self.lock();
        if state.finished || state.closed {
            return;
        }
        state.lost = None;
        state.live_bytes += gap.json.len();
        state.queue.push_back(gap.clone());
    }

    /// Moves what is queued to the outlet, in order, while it has room; a full outlet sends
    /// the subscriber back to draining its own queue. Wakes the subscriber's task when it has
    /// something to do (drain the queue, or end after its run's last event).
    pub(super) fn flush(&self) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        if let Some(outlet) = state.outlet.clone() {
            while let Some(env) = state.queue.front() {
                match outlet.offer(&env.json) {
                    Offered::Sent => {
                        state.pop_front();
                    }
                    Offered::Closed => return,
                    Offered::Full => {
                        state.outlet = None;
                        break;
                    }
                }
            }
            if state.outlet.is_some() && !state.finished {
                return;
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    /// What the subscriber takes next: the front of the queue (unless the queue is the
    /// outlet's now), or, once the queue is empty, the `gap` of what was lost (built with
    /// `epoch`), or the end of its run.
    pub(super) fn step(&self, epoch: &str) -> Step {
        let mut state = self.lock();
        // While direct, the queue belongs to the flushes: popping here could reorder.
        if state.outlet.is_none()
            && let Some(env) = state.pop_front()
        {
            return Step::Deliver(env);
        }
        // With the queue empty, nothing can be flushed ahead of this gap.
        if (state.outlet.is_none() || state.finished)
            && state.queue.is_empty()
            && let Some((from, to)) = state.lost.take()
        {
            return Step::Deliver(envelope::lag_gap(epoch, from, to));
        }
        if state.finished && state.queue.is_empty() {
            return Step::Ended;
        }
        Step::Idle
    }

    /// The subscriber took the shutdown: no flush sends anything after this, and what is
    /// queued is delivered through [`Slot::step`].
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.outlet = None;
    }

    /// Resolves at the next wake-up; `notify_one` keeps a permit when nobody waits, so a
    /// wake between a [`Slot::step`] and this wait is not lost.
    pub(super) fn woken(&self) -> Notified<'_> {
        self.wake.notified()
    }

    /// Hands every later event straight to `outlet`, if nothing is waiting in the queue;
    /// returns whether it did.
    pub(super) fn go_direct(&self, outlet: &Arc<dyn Outlet>) -> bool {
        let mut state = self.lock();
        if !state.queue.is_empty() || state.lost.is_some() || state.finished {
            return false;
        }
        if state.outlet.is_none() {
            state.outlet = Some(outlet.clone());
        }
        true
    }

    /// Keeps only the events of `run_id` (and `gap`s; no `tick`s) from now on, including what
    /// is already queued; the stream ends after the run's last event.
    pub(super) fn only_run(&self, run_id: &str) {
        let mut state = self.lock();
        state.queue.retain(|env| {
            if env.control {
                env.event == GapEvent::NAME
            } else {
                env.run_id.as_deref() == Some(run_id)
            }
        });
        // Anything after the run's last event goes too, and what was lost was newer than
        // everything queued: after the run's end, none of it was the run's.
        if let Some(end) = state.queue.iter().position(|env| env.ends_run) {
            state.queue.truncate(end + 1);
            state.finished = true;
            state.lost = None;
        }
        state.recount();
        state.only_run = Some(run_id.into());
    }
}

/// Subscribers past which a publisher hands the flushing to a task of its own.
pub(super) const FLUSH_INLINE_MAX: usize = 64;

/// Flushes the queues an event went into: inline for a few, else in a task, so that a request
/// that publishes to thousands of subscribers is answered without waiting for all of them (the
/// order per subscriber is the queue's, whoever flushes it).
pub(super) fn flush_all(slots: Vec<Arc<Slot>>) {
    let handle = tokio::runtime::Handle::try_current();
    match handle {
        Ok(handle) if slots.len() > FLUSH_INLINE_MAX => {
            handle.spawn(async move {
                for slot in &slots {
                    slot.flush();
                }
            });
        }
        _ => {
            for slot in &slots {
                slot.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::testkit::{keyed, limits, next_event};
    use crate::events::{EventHub, Filter};
    use serde_json::{Value, json};

    fn env(seq: u64, control: bool) -> Arc<Envelope> {
        Arc::new(Envelope {
            seq,
            event: if control { "tick" } else { "a" }.into(),
            session_key: None,
            json: format!("{{\"seq\":{seq}}}").into(),
            control,
            run_id: None,
            ends_run: false,
            state: None,
        })
    }

    fn delivered(slot: &Slot) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        while let Step::Deliver(env) = slot.step("ep") {
            out.push((env.event.clone(), env.seq));
        }
        out
    }

    #[test]
    fn a_full_queue_records_losses_but_never_a_control_event() {
        let slot = Slot::new(Filter::default_all(), VecDeque::new());
        assert!(slot.offer(&env(1, false), 2, usize::MAX, "ep"));
        assert!(slot.offer(&env(2, false), 2, usize::MAX, "ep"));
        assert!(!slot.offer(&env(2, true), 2, usize::MAX, "ep"), "full");
        assert_eq!(
            delivered(&slot),
            vec![("a".into(), 1), ("a".into(), 2)],
            "a dropped tick is no loss: no gap follows"
        );
        // A bound of 0 still lets one event wait.
        let slot = Slot::new(Filter::default_all(), VecDeque::new());
        assert!(slot.offer(&env(1, false), 0, usize::MAX, "ep"));
        assert!(!slot.offer(&env(2, false), 0, usize::MAX, "ep"));
        assert!(!slot.offer(&env(3, false), 0, usize::MAX, "ep"));
        assert_eq!(delivered(&slot), vec![("a".into(), 1), ("gap".into(), 3)]);
    }

    #[test]
    fn replayed_events_do_not_count_against_the_bound() {
        let replay: VecDeque<_> = (1..=5).map(|seq| env(seq, false)).collect();
        let slot = Slot::new(Filter::default_all(), replay);
        assert!(slot.offer(&env(6, false), 1, usize::MAX, "ep"));
        assert!(!slot.offer(&env(7, false), 1, usize::MAX, "ep"));
        let seqs: Vec<u64> = delivered(&slot).into_iter().map(|(_, s)| s).collect();
        assert_eq!(
            seqs,
            vec![1, 2, 3, 4, 5, 6, 7],
            "5 replayed, 6 live, the gap of 7"
        );
    }

    #[tokio::test]
    async fn a_replay_longer_than_the_queue_costs_no_live_event() {
        let hub = EventHub::new(limits(2, 64));
        for i in 0..10 {
            hub.publish("a", None, &json!(i));
        }
        let mut sub = hub
            .subscribe(Filter::default_all(), Some(0), Some(&hub.epoch()))
            .expect("subscribes");
        for i in 10..12 {
            hub.publish("a", None, &json!(i));
        }
        for seq in 1..=12 {
            assert_eq!(next_event(&mut sub).await["seq"], seq, "no hole, no gap");
        }
    }

    #[tokio::test]
    async fn lagging_subscriber_gets_a_gap() {
        let hub = EventHub::new(limits(4, 64));
        let mut sub = hub
            .subscribe(Filter::default_all(), None, None)
            .expect("subscribes");
        for i in 0..20 {
            hub.publish("a", None, &json!(i));
        }
        // The queue keeps the first four; the rest are lost and announced before the next
        // event that is delivered.
        for seq in 1..=4 {
            assert_eq!(next_event(&mut sub).await["seq"], seq);
        }
        hub.publish("a", None, &json!(20));
        let gap = next_event(&mut sub).await;
        assert_eq!(gap["event"], "gap");
        assert_eq!(
            gap["payload"],
            json!({"fromSeq": 5, "toSeq": 20, "reason": "lagged"})
        );
        assert_eq!(gap["seq"], 20, "resuming from the gap's seq misses nothing");
        assert_eq!(next_event(&mut sub).await["seq"], 21);

        // A loss with nothing after it is announced once the queue is drained.
        for i in 0..10 {
            hub.publish("a", None, &json!(i));
        }
        for seq in 22..=25 {
            assert_eq!(next_event(&mut sub).await["seq"], seq);
        }
        let gap = next_event(&mut sub).await;
        assert_eq!(
            gap["payload"],
            json!({"fromSeq": 26, "toSeq": 31, "reason": "lagged"})
        );
    }

    #[tokio::test]
    async fn a_subscriber_queue_is_bounded_in_bytes_too() {
        let mut bounded = limits(1000, 64);
        bounded.subscriber_queue_bytes = 3000;
        let hub = EventHub::new(bounded);
        let mut sub = hub
            .subscribe(Filter::default_all(), None, None)
            .expect("subscribes");
        let big = "x".repeat(1000);
        for _ in 0..10 {
            hub.publish("a", None, &json!(big));
        }
        // Two envelopes of ~1.1 KB fit in 3000 bytes; the rest are lost, announced.
        for seq in 1..=2 {
            assert_eq!(next_event(&mut sub).await["seq"], seq);
        }
        hub.publish("a", None, &json!("small"));
        let gap = next_event(&mut sub).await;
        assert_eq!(
            gap["payload"],
            json!({"fromSeq": 3, "toSeq": 10, "reason": "lagged"})
        );
        assert_eq!(next_event(&mut sub).await["seq"], 11);
        // One event larger than the whole bound still gets through when the queue is empty.
        hub.publish("a", None, &json!("y".repeat(5000)));
        assert_eq!(next_event(&mut sub).await["seq"], 12);
    }

    /// An outlet that takes up to `room` messages.
    struct TestOutlet {
        room: usize,
        got: Mutex<Vec<Value>>,
    }

    impl TestOutlet {
        fn seqs(&self) -> Vec<u64> {
            let got = self.got.lock().expect("lock");
            got.iter().filter_map(|v| v["seq"].as_u64()).collect()
        }
    }

    impl Outlet for TestOutlet {
        fn offer(&self, envelope_json: &str) -> Offered {
            let mut got = self.got.lock().expect("lock");
            if got.len() >= self.room {
                return Offered::Full;
            }
            got.push(serde_json::from_str(envelope_json).expect("json"));
            Offered::Sent
        }
    }

    #[tokio::test]
    async fn direct_delivery_falls_back_to_the_queue_when_the_connection_is_full() {
        let hub = EventHub::new(limits(3, 64));
        let mut sub = hub
            .subscribe(Filter::default_all(), None, None)
            .expect("subscribes");
        let test = Arc::new(TestOutlet {
            room: 2,
            got: Mutex::new(Vec::new()),
        });
        let outlet: Arc<dyn Outlet> = test.clone();
        assert!(sub.go_direct(&outlet));
        for i in 0..10 {
            hub.publish("a", None, &json!(i));
        }
        let seqs = test.seqs();
        assert_eq!(seqs, vec![1, 2], "the outlet took what it had room for");
        // The next three waited in the subscriber's queue; the rest were lost, announced.
        for seq in 3..=5 {
            assert_eq!(next_event(&mut sub).await["seq"], seq);
        }
        assert!(
            !sub.go_direct(&outlet),
            "a loss is announced before going direct"
        );
        let gap = next_event(&mut sub).await;
        assert_eq!(
            gap["payload"],
            json!({"fromSeq": 6, "toSeq": 10, "reason": "lagged"})
        );
        test.got.lock().expect("lock").clear();
        assert!(sub.go_direct(&outlet), "caught up: direct again");
        hub.publish("a", None, &json!("later"));
        assert_eq!(test.got.lock().expect("lock")[0]["seq"], 11);
    }

    #[tokio::test]
    async fn a_large_fan_out_is_flushed_in_order_by_a_task_of_its_own() {
        let hub = EventHub::new(limits(16, 64));
        let mut subs = Vec::new();
        let mut outlets = Vec::new();
        for _ in 0..FLUSH_INLINE_MAX * 2 {
            let mut sub = keyed(&hub, "k");
            let test = Arc::new(TestOutlet {
                room: 100,
                got: Mutex::new(Vec::new()),
            });
            let outlet: Arc<dyn Outlet> = test.clone();
            assert!(sub.go_direct(&outlet));
            subs.push(sub);
            outlets.push(test);
        }
        for i in 0..3 {
            hub.publish("chat", Some("k"), &json!(i));
        }
        let all_there = || {
            outlets
                .iter()
                .all(|o| o.got.lock().expect("lock").len() == 3)
        };
        for _ in 0..100 {
            if all_there() {
                break;
            }
            tokio::task::yield_now().await;
        }
        for outlet in &outlets {
            let seqs = outlet.seqs();
            assert_eq!(seqs, vec![1, 2, 3]);
        }
    }
}
