//! The event hub: one gateway-wide `seq`, a replay ring, and per-subscriber bounded queues.
//!
//! An event is serialized once, when it is published; every subscriber gets the same bytes
//! (`Arc<Envelope>`). Publishing pushes the envelope into the queue of each subscriber whose
//! filter it matches (subscribers are indexed by session key, so a subscriber filtered to one
//! session is never touched by another session's events), under the hub's lock, so that every
//! queue is in `seq` order; after the lock, the queues are flushed: a subscriber that has caught
//! up has an [`Outlet`] (its connection's queue) and the flush writes into it directly, else
//! its task is woken to drain the queue. A queue holds at most `subscriber_queue` events; past
//! that, events are dropped for that subscriber alone and it is told so with a `gap` before the
//! next event it does receive. Subscribing takes the replay slice and registers the queue under
//! the same lock, so replay joins the live stream with no duplicate and no hole.
//!
//! This file is the hub itself (publish, tick, shutdown, subscribe); the parts are beside it:
//! `envelope.rs` (the JSON built once), `filter.rs`, `replay.rs` (the ring and the resume
//! decision), `queue.rs` (a subscriber's bounded queue and its outlet), `subscriber.rs` (the
//! subscriber's handle).

mod envelope;
mod filter;
mod queue;
mod replay;
mod subscriber;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

pub use envelope::{Envelope, Relayed, RunTag};
pub use filter::Filter;
pub use queue::{Offered, Outlet};
pub use replay::SubscribeError;
pub use subscriber::{Delivery, Subscriber};

use queue::{Slot, flush_all};
use replay::ReplayRing;

use crate::protocol::{Event, GapEvent, GapReason, ShutdownEvent, TickEvent};
use crate::util::now_ms;

/// Sizes of the hub.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Events kept for replay.
    pub replay_capacity: usize,
    /// Bytes kept for replay at most.
    pub replay_max_bytes: usize,
    /// Events a subscriber may fall behind before it loses some.
    pub subscriber_queue: usize,
    /// Bytes of live events a subscriber may fall behind before it loses some (one event
    /// always fits).
    pub subscriber_queue_bytes: usize,
}

/// Where the hub hands its events in cluster mode: the shared stream, which gives each its
/// `seq` and brings it back to every node's hub ([`EventHub::ingest`]).
pub trait Relay: Send + Sync {
    /// Sends `event` to the shared stream, in the order of the calls.
    fn relay(&self, event: Relayed);
}

/// The gateway's event hub.
pub struct EventHub {
    /// Changed only in cluster mode, when the shared stream was made again (see
    /// [`Self::restart`]); written under the `inner` lock, so events built under it agree.
    epoch: RwLock<Arc<str>>,
    limits: HubLimits,
    inner: Mutex<Inner>,
    shutdown: watch::Sender<Option<Arc<Envelope>>>,
    /// Cluster mode: events go to the shared stream and come back through [`Self::ingest`].
    relay: OnceLock<Arc<dyn Relay>>,
    /// The latest `seq` delivered, for [`Self::wait_for_seq`].
    seen: watch::Sender<u64>,
}

/// The replay ring and the subscribers, under one lock.
struct Inner {
    seq: u64,
    replay: ReplayRing,
    next_id: u64,
    /// Subscribers filtered to one session, by that session's key.
    keyed: HashMap<String, HashMap<u64, Arc<Slot>>>,
    /// Subscribers of every session.
    unkeyed: HashMap<u64, Arc<Slot>>,
    /// Shutdown was announced: nothing is delivered after it.
    closed: bool,
}

impl EventHub {
    /// A hub for a new process lifetime, with a fresh epoch.
    pub fn new(limits: HubLimits) -> Arc<Self> {
        Self::with_epoch(limits, uuid::Uuid::new_v4().simple().to_string())
    }

    /// A hub whose epoch is given: in cluster mode, the shared stream's identity.
    pub fn with_epoch(limits: HubLimits, epoch: String) -> Arc<Self> {
        let (shutdown, _) = watch::channel(None);
        Arc::new(Self {
            relay: OnceLock::new(),
            seen: watch::channel(0).0,
            epoch: RwLock::new(epoch.into()),
            limits,
            inner: Mutex::new(Inner {
                seq: 0,
                replay: ReplayRing::default(),
                next_id: 0,
                keyed: HashMap::new(),
                unkeyed: HashMap::new(),
                closed: false,
            }),
            shutdown,
        })
    }

    /// This lifetime's epoch.
    pub fn epoch(&self) -> Arc<str> {
        self.epoch
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Cluster mode: the shared stream was made again, so its `seq`s start again at 1 under
    /// `epoch`. What was kept for replay is forgotten (it belongs to the old epoch), and every
    /// subscriber is told with a `gap {restart}` (then gets the new stream's events, as one
    /// resuming with an old epoch would).
    pub fn restart(&self, epoch: &str) {
        let mut inner = self.lock();
        *self
            .epoch
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = epoch.into();
        inner.seq = 0;
        inner.replay = ReplayRing::default();
        self.seen.send_replace(0);
        if inner.closed {
            return;
        }
        let gap = GapEvent {
            from_seq: 0,
            to_seq: 0,
            reason: GapReason::Restart,
        };
        let env = envelope::control(epoch, GapEvent::NAME, &gap, 0);
        let slots: Vec<Arc<Slot>> = inner
            .unkeyed
            .values()
            .chain(inner.keyed.values().flat_map(HashMap::values))
            .cloned()
            .collect();
        drop(inner);
        crate::metrics::events_dropped("restart", 0);
        for slot in &slots {
            slot.restart(&env);
        }
        flush_all(slots);
    }

    /// The latest `seq` published.
    pub fn seq(&self) -> u64 {
        self.lock().seq
    }

    /// Cluster mode: from now on events go to `relay` and are delivered when the shared
    /// stream brings them back ([`Self::ingest`]).
    pub fn set_relay(&self, relay: Arc<dyn Relay>) {
        let _ = self.relay.set(relay);
    }

    /// Whether events go through a relay (cluster mode).
    pub fn relayed(&self) -> bool {
        self.relay.get().is_some()
    }

    /// Waits until the hub has delivered `seq` (cluster mode: consumed that far in the shared
    /// stream), at most `patience`; whether it has.
    pub async fn wait_for_seq(&self, seq: u64, patience: Duration) -> bool {
        let mut seen = self.seen.subscribe();
        tokio::time::timeout(patience, seen.wait_for(|s| *s >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// `env` as delivered: in cluster mode an envelope returned by a publish has no `seq` yet
    /// (0); the delivered one of the same run end is looked up among the events kept.
    pub fn confirmed(&self, env: &Arc<Envelope>) -> Arc<Envelope> {
        if env.seq != 0 || env.run_id.is_none() {
            return env.clone();
        }
        let inner = self.lock();
        inner
            .replay
            .newest_first()
            .find(|e| e.run_id == env.run_id && e.ends_run == env.ends_run && e.event == env.event)
            .cloned()
            .unwrap_or_else(|| env.clone())
    }

    /// The hub's sizes.
    pub fn limits(&self) -> HubLimits {
        self.limits
    }

    /// How many subscribers are registered.
    pub fn subscribers(&self) -> usize {
        let inner = self.lock();
        inner.unkeyed.len() + inner.keyed.values().map(HashMap::len).sum::<usize>()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere; nothing here is left half-updated.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `env` for `slot` within the subscriber bounds (see [`Slot::offer`]); `epoch`
    /// is the hub's, for the `gap` of what it lost.
    fn offer(&self, slot: &Slot, env: &Arc<Envelope>, epoch: &str) -> bool {
        slot.offer(
            env,
            self.limits.subscriber_queue,
            self.limits.subscriber_queue_bytes,
            epoch,
        )
    }

    /// Publishes a declared event (its name comes from its declaration); returns its `seq`.
    pub fn emit<E: Event>(&self, session_key: Option<&str>, payload: &E) -> u64 {
        self.publish_full(E::NAME, session_key, None, payload.state(), payload)
            .map_or_else(|| self.seq(), |env| env.seq)
    }

    /// Publishes a declared event of an agent run (see [`Self::publish_tagged`]).
    pub fn emit_tagged<E: Event>(
        &self,
        session_key: Option<&str>,
        run: Option<RunTag<'_>>,
        payload: &E,
    ) -> Option<Arc<Envelope>> {
        self.publish_full(E::NAME, session_key, run, payload.state(), payload)
    }

    /// Publishes an event by name: for plugins' events, whose names arrive at run time.
    pub fn publish(&self, event: &str, session_key: Option<&str>, payload: &impl Serialize) -> u64 {
        self.publish_tagged(event, session_key, None, payload)
            .map_or_else(|| self.seq(), |env| env.seq)
    }

    /// Publishes an event, of an agent run when `run` says so (see [`Subscriber::only_run`]);
    /// returns its envelope (`None` if the payload does not serialize).
    pub fn publish_tagged(
        &self,
        event: &str,
        session_key: Option<&str>,
        run: Option<RunTag<'_>>,
        payload: &impl Serialize,
    ) -> Option<Arc<Envelope>> {
        self.publish_full(event, session_key, run, None, payload)
    }

    /// Publishes an event tagged with its run and its payload's state (see
    /// [`Event::state`]); returns its envelope (`None` if the payload does not serialize).
    fn publish_full(
        &self,
        event: &str,
        session_key: Option<&str>,
        run: Option<RunTag<'_>>,
        state: Option<&str>,
        payload: &impl Serialize,
    ) -> Option<Arc<Envelope>> {
        let payload = match serde_json::to_string(payload) {
            Ok(p) => p,
            Err(err) => {
                tracing::error!(event, %err, "event payload does not serialize; dropped");
                return None;
            }
        };
        crate::metrics::event_published(event);
        if let Some(relay) = self.relay.get() {
            let relayed = Relayed {
                event: event.to_string(),
                session_key: session_key.map(str::to_string),
                run_id: run.map(|r| r.run_id.into()),
                ends_run: run.is_some_and(|r| r.ends_run),
                state: state.map(Into::into),
                ts: now_ms(),
                payload,
            };
            // Its `seq` comes with the stream; until then the caller holds it with seq 0.
            let env = Arc::new(envelope::from_relayed(&self.epoch(), 0, &relayed));
            relay.relay(relayed);
            return Some(env);
        }
        let mut inner = self.lock();
        let mut json = envelope::head(&self.epoch(), event, session_key, &payload);
        inner.seq += 1;
        let seq = inner.seq;
        envelope::close(&mut json, seq);
        let env = Arc::new(Envelope {
            seq,
            event: event.to_string(),
            session_key: session_key.map(str::to_string),
            json: json.into_boxed_str(),
            control: false,
            run_id: run.map(|r| r.run_id.into()),
            ends_run: run.is_some_and(|r| r.ends_run),
            state: state.map(Into::into),
        });
        Some(self.deliver(inner, env))
    }

    /// Cluster mode: delivers an event the shared stream brought, with the stream's `seq`;
    /// one already delivered (a `seq` not above the latest) is ignored.
    pub fn ingest(&self, seq: u64, event: &Relayed) -> Option<Arc<Envelope>> {
        let mut inner = self.lock();
        if seq <= inner.seq {
            return None;
        }
        inner.seq = seq;
        let env = Arc::new(envelope::from_relayed(&self.epoch(), seq, event));
        Some(self.deliver(inner, env))
    }

    /// Keeps `env` (its `seq` the latest) for replay and queues it for every subscriber it
    /// matches, then hands the queues to the connections after the lock.
    fn deliver(&self, mut inner: MutexGuard<'_, Inner>, env: Arc<Envelope>) -> Arc<Envelope> {
        let session_key = env.session_key.as_deref();
        self.seen.send_replace(env.seq);
        let limits = &self.limits;
        inner
            .replay
            .push(env.clone(), limits.replay_capacity, limits.replay_max_bytes);
        if inner.closed {
            return env;
        }
        // Queued under the lock, so every queue receives events in `seq` order; handed to the
        // connections after it, so a large fan-out does not hold up other publishers.
        let keyed = session_key.and_then(|key| inner.keyed.get(key));
        let epoch = self.epoch();
        let mut queued = Vec::new();
        for slot in inner
            .unkeyed
            .values()
            .chain(keyed.into_iter().flat_map(HashMap::values))
        {
            if slot.filter.matches(&env) && self.offer(slot, &env, &epoch) {
                queued.push(slot.clone());
            }
        }
        drop(inner);
        flush_all(queued);
        env
    }

    /// Publishes a `tick` to every subscriber.
    pub fn tick(&self) {
        // Under the lock: the tick's seq is exactly the last event queued before it.
        let inner = self.lock();
        if inner.closed {
            return;
        }
        let tick = TickEvent { ts: now_ms() };
        let epoch = self.epoch();
        let env = envelope::control(&epoch, TickEvent::NAME, &tick, inner.seq);
        let mut queued = Vec::new();
        for slot in inner
            .unkeyed
            .values()
            .chain(inner.keyed.values().flat_map(HashMap::values))
        {
            if self.offer(slot, &env, &epoch) {
                queued.push(slot.clone());
            }
        }
        drop(inner);
        flush_all(queued);
    }

    /// Announces shutdown to every subscriber; each receives it as its last delivery.
    pub fn shutdown(&self, event: ShutdownEvent) {
        let mut inner = self.lock();
        inner.closed = true;
        let env = envelope::control(&self.epoch(), ShutdownEvent::NAME, &event, inner.seq);
        drop(inner);
        self.shutdown.send_replace(Some(env));
    }

    /// Subscribes with a filter, optionally resuming after `after_seq` of `epoch`.
    pub fn subscribe(
        self: &Arc<Self>,
        filter: Filter,
        after_seq: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<Subscriber, SubscribeError> {
        let mut inner = self.lock();
        let current = self.epoch();
        let restart = epoch.is_some_and(|e| e != &*current);
        let resume = replay::resume(inner.seq, inner.replay.oldest_seq(), after_seq, restart)?;
        let mut queue = VecDeque::new();
        if let Some((gap, seq)) = resume.gap {
            let reason = match gap.reason {
                GapReason::Lagged => "lagged",
                GapReason::Expired => "expired",
                GapReason::Restart => "restart",
            };
            crate::metrics::events_dropped(reason, envelope::gap_len(gap.from_seq, gap.to_seq));
            queue.push_back(envelope::control(&current, GapEvent::NAME, &gap, seq));
        }
        if let Some(after) = resume.replay_after {
            queue.extend(
                inner
                    .replay
                    .after(after)
                    .filter(|e| filter.matches(e))
                    .cloned(),
            );
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let key = filter.session_key().map(str::to_string);
        let slot = Arc::new(Slot::new(filter, queue));
        match key {
            Some(key) => inner.keyed.entry(key).or_default().insert(id, slot.clone()),
            None => inner.unkeyed.insert(id, slot.clone()),
        };
        drop(inner);
        Ok(Subscriber::new(
            self.clone(),
            id,
            slot,
            self.shutdown.subscribe(),
        ))
    }

    /// Forgets subscriber `id` (filtered to `session_key`, if any): its handle was dropped.
    fn remove(&self, id: u64, session_key: Option<&str>) {
        let mut inner = self.lock();
        match session_key {
            Some(key) => {
                if let Some(slots) = inner.keyed.get_mut(key) {
                    slots.remove(&id);
                    if slots.is_empty() {
                        inner.keyed.remove(key);
                    }
                }
            }
            None => {
                inner.unkeyed.remove(&id);
            }
        }
    }
}

/// Helpers the hub's tests share, here and in the files beside it.
#[cfg(test)]
mod testkit {
    use std::sync::Arc;

    use serde_json::Value;

    use super::{Delivery, Envelope, EventHub, Filter, HubLimits, Subscriber};

    /// Limits with a queue of `queue` events and a replay ring of `replay`, no byte bounds.
    pub fn limits(queue: usize, replay: usize) -> HubLimits {
        HubLimits {
            replay_capacity: replay,
            replay_max_bytes: usize::MAX,
            subscriber_queue: queue,
            subscriber_queue_bytes: usize::MAX,
        }
    }

    /// The envelope as JSON.
    pub fn parse(env: &Envelope) -> Value {
        serde_json::from_str(&env.json).expect("envelope is JSON")
    }

    /// A subscriber of every event of session `key`.
    pub fn keyed(hub: &Arc<EventHub>, key: &str) -> Subscriber {
        let filter = Filter::new(None, Some(key.into())).expect("filter");
        hub.subscribe(filter, None, None).expect("subscribes")
    }

    /// The next delivery, which must be an event.
    pub async fn next_event(sub: &mut Subscriber) -> Value {
        match sub.next().await {
            Some(Delivery::Event(env)) => parse(&env),
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::{keyed, limits, next_event};
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn envelope_shape_and_seq() {
        let hub = EventHub::new(limits(16, 16));
        let mut sub = hub
            .subscribe(Filter::default_all(), None, None)
            .expect("subscribes");
        hub.publish("chat", Some("main"), &json!({"x": 1}));
        let v = next_event(&mut sub).await;
        assert_eq!(v["seq"], 1);
        assert_eq!(v["event"], "chat");
        assert_eq!(v["sessionKey"], "main");
        assert_eq!(v["payload"], json!({"x": 1}));
        assert_eq!(v["epoch"], &*hub.epoch());
    }

    #[tokio::test]
    async fn subscribers_only_see_their_session_and_leave_when_dropped() {
        let hub = EventHub::new(limits(2, 64));
        let mut a = keyed(&hub, "a");
        let b = keyed(&hub, "b");
        assert_eq!(hub.subscribers(), 2);
        // Far more events of another session than the queue holds: `a` loses nothing.
        for i in 0..50 {
            hub.publish("chat", Some("b"), &json!(i));
        }
        hub.publish("chat", Some("a"), &json!("mine"));
        let v = next_event(&mut a).await;
        assert_eq!(v["payload"], "mine");
        assert_eq!(v["seq"], 51);
        drop(b);
        assert_eq!(hub.subscribers(), 1);
        drop(a);
        assert_eq!(hub.subscribers(), 0);
    }

    #[tokio::test]
    async fn a_new_epoch_is_a_restart_gap_for_every_subscriber() {
        let hub = EventHub::with_epoch(limits(16, 16), "e1".into());
        let mut sub = hub
            .subscribe(Filter::default_all(), None, None)
            .expect("subscribes");
        let relayed = |i: u64| Relayed {
            event: "chat".into(),
            session_key: Some("k".into()),
            run_id: None,
            ends_run: false,
            state: None,
            ts: 1,
            payload: json!({"i": i}).to_string(),
        };
        hub.ingest(1, &relayed(1));
        hub.ingest(2, &relayed(2));
        assert_eq!(next_event(&mut sub).await["seq"], 1);
        assert_eq!(next_event(&mut sub).await["seq"], 2);
        hub.restart("e2");
        assert_eq!((hub.seq(), &*hub.epoch()), (0, "e2"));
        let gap = next_event(&mut sub).await;
        assert_eq!(gap["event"], "gap");
        assert_eq!(
            gap["payload"],
            json!({"fromSeq": 0, "toSeq": 0, "reason": "restart"})
        );
        assert_eq!(
            (gap["epoch"].as_str(), gap["seq"].as_u64()),
            (Some("e2"), Some(0))
        );
        // The new stream's seqs start again at 1, and are delivered.
        assert!(hub.ingest(1, &relayed(3)).is_some());
        let v = next_event(&mut sub).await;
        assert_eq!(
            (v["seq"].as_u64(), v["epoch"].as_str()),
            (Some(1), Some("e2"))
        );
        assert_eq!(v["payload"], json!({"i": 3}));
        // A client of the old epoch: the gap, then what the new one holds.
        let mut late = hub
            .subscribe(Filter::default_all(), Some(2), Some("e1"))
            .expect("subscribes");
        assert_eq!(next_event(&mut late).await["payload"]["reason"], "restart");
        assert_eq!(next_event(&mut late).await["payload"], json!({"i": 3}));
    }

    #[tokio::test]
    async fn filters_by_name_prefix_and_session() {
        let hub = EventHub::new(limits(64, 64));
        let filter = Filter::new(Some(&["sessions.*".to_string(), "tick".into()]), None)
            .expect("valid filter");
        let mut sub = hub.subscribe(filter, None, None).expect("subscribes");
        let mut by_key = keyed(&hub, "k");
        hub.publish("chat", Some("k"), &json!(1));
        hub.publish("sessions.changed", Some("other"), &json!(2));
        hub.tick();
        assert_eq!(next_event(&mut sub).await["event"], "sessions.changed");
        assert_eq!(next_event(&mut sub).await["event"], "tick");
        assert_eq!(next_event(&mut by_key).await["event"], "chat");
        // Control events ignore the session filter too.
        assert_eq!(next_event(&mut by_key).await["event"], "tick");
        assert!(Filter::new(Some(&["a*".to_string()]), None).is_err());
    }
}
