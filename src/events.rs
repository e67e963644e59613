//! The event hub: one gateway-wide `seq`, a replay ring, and per-subscriber streams with gaps.
//!
//! An event is serialized once, when it is published; every subscriber gets the same bytes
//! (`Arc<Envelope>`). Live delivery goes through a broadcast channel whose capacity is the
//! subscriber queue: a subscriber that falls further behind loses events for itself alone and
//! is told so with a `gap`. Subscribing takes the replay slice and the live receiver under the
//! same lock that publishing holds, so replay joins the live stream with no duplicate and no hole.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::protocol::{GapEvent, GapReason, ShutdownEvent, TickEvent};
use crate::util::now_ms;

/// One published event, serialized once.
#[derive(Debug)]
pub struct Envelope {
    /// Gateway-wide sequence number (for control events, the latest one published).
    pub seq: u64,
    /// The event's name.
    pub event: String,
    /// The session the event is about, when there is one.
    pub session_key: Option<String>,
    /// The envelope as JSON: `{epoch, seq, event, ts, sessionKey?, payload}`.
    pub json: Box<str>,
    /// A control event (`tick`, `gap`, `shutdown`): no `seq` of its own.
    pub control: bool,
}

/// What goes over the live channel.
#[derive(Debug, Clone)]
enum Item {
    /// An ordinary event, with a `seq` of its own.
    Event(Arc<Envelope>),
    /// A control event (`tick`): ignores filters, is not replayed.
    Control(Arc<Envelope>),
}

struct Ring {
    seq: u64,
    events: VecDeque<Arc<Envelope>>,
    bytes: usize,
}

/// Sizes of the hub.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Events kept for replay.
    pub replay_capacity: usize,
    /// Bytes kept for replay at most.
    pub replay_max_bytes: usize,
    /// Events a subscriber may fall behind before it loses some.
    pub subscriber_queue: usize,
}

/// The gateway's event hub.
pub struct EventHub {
    epoch: String,
    limits: HubLimits,
    ring: Mutex<Ring>,
    live: broadcast::Sender<Item>,
    shutdown: watch::Sender<Option<Arc<Envelope>>>,
}

/// Which events a subscriber wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    exact: Vec<String>,
    prefixes: Vec<String>,
    all: bool,
    session_key: Option<String>,
}

impl Filter {
    /// Builds a filter from exact names or `prefix.*` patterns (`None` is every event).
    pub fn new(events: Option<&[String]>, session_key: Option<String>) -> Result<Self, String> {
        let mut filter = Filter {
            session_key,
            ..Default::default()
        };
        match events {
            None => filter.all = true,
            Some(names) => {
                for (i, name) in names.iter().enumerate() {
                    if name == "*" {
                        filter.all = true;
                    } else if let Some(prefix) = name.strip_suffix(".*") {
                        if prefix.is_empty() || prefix.contains('*') {
                            return Err(format!("events[{i}]"));
                        }
                        filter.prefixes.push(format!("{prefix}."));
                    } else if name.is_empty() || name.contains('*') {
                        return Err(format!("events[{i}]"));
                    } else {
                        filter.exact.push(name.clone());
                    }
                }
            }
        }
        Ok(filter)
    }

    /// A filter that passes every event.
    pub fn default_all() -> Self {
        Filter {
            all: true,
            ..Default::default()
        }
    }

    /// Whether an ordinary event passes.
    pub fn matches(&self, env: &Envelope) -> bool {
        if let Some(key) = &self.session_key
            && env.session_key.as_deref() != Some(key.as_str())
        {
            return false;
        }
        self.all
            || self.exact.contains(&env.event)
            || self
                .prefixes
                .iter()
                .any(|p| env.event.starts_with(p.as_str()))
    }
}

/// Why a subscription could not start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubscribeError {
    /// `afterSeq` is beyond the latest `seq` of this epoch.
    #[error("afterSeq {after} is ahead of the latest seq {latest} of this epoch")]
    AheadOfLatest {
        /// What the client sent.
        after: u64,
        /// The latest seq.
        latest: u64,
    },
}

/// What a subscriber receives next.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// An event that matched, or a control event.
    Event(Arc<Envelope>),
    /// The gateway is shutting down; this is the last delivery.
    Shutdown(Arc<Envelope>),
}

/// One subscriber's view of the hub.
pub struct Subscriber {
    hub: Arc<EventHub>,
    filter: Filter,
    pending: VecDeque<Arc<Envelope>>,
    live: broadcast::Receiver<Item>,
    shutdown: watch::Receiver<Option<Arc<Envelope>>>,
    last_seq: u64,
    lagged: bool,
    done: bool,
}

impl EventHub {
    /// A hub for a new process lifetime, with a fresh epoch.
    pub fn new(limits: HubLimits) -> Arc<Self> {
        let (live, _) = broadcast::channel(limits.subscriber_queue.max(1));
        let (shutdown, _) = watch::channel(None);
        Arc::new(Self {
            epoch: uuid::Uuid::new_v4().simple().to_string(),
            limits,
            ring: Mutex::new(Ring {
                seq: 0,
                events: VecDeque::new(),
                bytes: 0,
            }),
            live,
            shutdown,
        })
    }

    /// This lifetime's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The latest `seq` published.
    pub fn seq(&self) -> u64 {
        self.lock().seq
    }

    /// The hub's sizes.
    pub fn limits(&self) -> HubLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A poisoned lock only means a panic elsewhere; the ring itself is always consistent.
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Builds an envelope's JSON, leaving the trailing `seq` to be appended.
    fn envelope_head(&self, event: &str, session_key: Option<&str>, payload: &str) -> String {
        let mut json = String::with_capacity(payload.len() + event.len() + 128);
        json.push_str("{\"epoch\":\"");
        json.push_str(&self.epoch);
        json.push_str("\",\"event\":");
        push_json_str(&mut json, event);
        json.push_str(",\"ts\":");
        json.push_str(&now_ms().to_string());
        if let Some(key) = session_key {
            json.push_str(",\"sessionKey\":");
            push_json_str(&mut json, key);
        }
        json.push_str(",\"payload\":");
        json.push_str(payload);
        json.push_str(",\"seq\":");
        json
    }

    /// Publishes an event; returns its `seq`.
    pub fn publish(&self, event: &str, session_key: Option<&str>, payload: &impl Serialize) -> u64 {
        self.publish_envelope(event, session_key, payload)
            .map_or_else(|| self.seq(), |env| env.seq)
    }

    /// Publishes an event; returns its envelope (`None` if the payload does not serialize).
    pub fn publish_envelope(
        &self,
        event: &str,
        session_key: Option<&str>,
        payload: &impl Serialize,
    ) -> Option<Arc<Envelope>> {
        let payload = match serde_json::to_string(payload) {
            Ok(p) => p,
            Err(err) => {
                tracing::error!(event, %err, "event payload does not serialize; dropped");
                return None;
            }
        };
        let mut json = self.envelope_head(event, session_key, &payload);
        let mut ring = self.lock();
        ring.seq += 1;
        let seq = ring.seq;
        json.push_str(&seq.to_string());
        json.push('}');
        let env = Arc::new(Envelope {
            seq,
            event: event.to_string(),
            session_key: session_key.map(str::to_string),
            json: json.into_boxed_str(),
            control: false,
        });
        ring.bytes += env.json.len();
        ring.events.push_back(env.clone());
        while ring.events.len() > self.limits.replay_capacity
            || (ring.bytes > self.limits.replay_max_bytes && ring.events.len() > 1)
        {
            if let Some(old) = ring.events.pop_front() {
                ring.bytes -= old.json.len();
            }
        }
        // No receiver is fine: nobody listens.
        let _ = self.live.send(Item::Event(env.clone()));
        Some(env)
    }

    /// A control envelope (`tick`, `gap`, `shutdown`) carrying `seq`, the latest published.
    fn control(&self, event: &str, payload: &impl Serialize, seq: u64) -> Arc<Envelope> {
        let payload = serde_json::to_string(payload).unwrap_or_else(|_| "{}".into());
        let mut json = self.envelope_head(event, None, &payload);
        json.push_str(&seq.to_string());
        json.push('}');
        Arc::new(Envelope {
            seq,
            event: event.to_string(),
            session_key: None,
            json: json.into_boxed_str(),
            control: true,
        })
    }

    /// Publishes a `tick` to every subscriber.
    pub fn tick(&self) {
        // Under the ring lock: the tick's seq is exactly the last event sent before it.
        let ring = self.lock();
        let env = self.control("tick", &TickEvent { ts: now_ms() }, ring.seq);
        let _ = self.live.send(Item::Control(env));
        drop(ring);
    }

    /// Announces shutdown to every subscriber; each receives it as its last delivery.
    pub fn shutdown(&self, event: ShutdownEvent) {
        let env = self.control("shutdown", &event, self.seq());
        self.shutdown.send_replace(Some(env));
    }

    /// Whether shutdown has been announced.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.borrow().is_some()
    }

    /// Subscribes with a filter, optionally resuming after `after_seq` of `epoch`.
    pub fn subscribe(
        self: &Arc<Self>,
        filter: Filter,
        after_seq: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<Subscriber, SubscribeError> {
        let ring = self.lock();
        let live = self.live.subscribe();
        let mut pending = VecDeque::new();
        let mut gap = None;
        let restart = epoch.is_some_and(|e| e != self.epoch);
        let mut last_seq = ring.seq;
        if restart {
            gap = Some(GapEvent {
                from_seq: 0,
                to_seq: 0,
                reason: GapReason::Restart,
            });
            pending.extend(ring.events.iter().filter(|e| filter.matches(e)).cloned());
        } else if let Some(after) = after_seq {
            if after > ring.seq {
                return Err(SubscribeError::AheadOfLatest {
                    after,
                    latest: ring.seq,
                });
            }
            let oldest = ring.events.front().map_or(ring.seq + 1, |e| e.seq);
            if after + 1 < oldest {
                gap = Some(GapEvent {
                    from_seq: after + 1,
                    to_seq: oldest - 1,
                    reason: GapReason::Expired,
                });
            }
            pending.extend(
                ring.events
                    .iter()
                    .filter(|e| e.seq > after && filter.matches(e))
                    .cloned(),
            );
        }
        if let Some(first) = pending.front() {
            last_seq = first.seq - 1;
        }
        let gap = gap.map(|gap| self.control("gap", &gap, ring.seq));
        drop(ring);
        let mut sub = Subscriber {
            hub: self.clone(),
            filter,
            pending,
            live,
            shutdown: self.shutdown.subscribe(),
            last_seq,
            lagged: false,
            done: false,
        };
        if let Some(env) = gap {
            sub.pending.push_front(env);
        }
        Ok(sub)
    }
}

impl Subscriber {
    /// The next delivery; `None` once the stream is over (after shutdown, or the hub is gone).
    ///
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Option<Delivery> {
        if self.done {
            return None;
        }
        if let Some(env) = self.shutdown.borrow_and_update().clone() {
            self.done = true;
            return Some(Delivery::Shutdown(env));
        }
        if let Some(env) = self.pending.pop_front() {
            if !env.control {
                self.last_seq = self.last_seq.max(env.seq);
            }
            return Some(Delivery::Event(env));
        }
        loop {
            let item = tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() {
                        self.done = true;
                        return None;
                    }
                    if let Some(env) = self.shutdown.borrow_and_update().clone() {
                        self.done = true;
                        return Some(Delivery::Shutdown(env));
                    }
                    continue;
                }
                item = self.live.recv() => item,
            };
            match item {
                Ok(Item::Event(env)) => {
                    if env.seq <= self.last_seq {
                        continue;
                    }
                    if self.lagged {
                        self.lagged = false;
                        let from = self.last_seq + 1;
                        self.last_seq = env.seq;
                        if env.seq > from {
                            if self.filter.matches(&env) {
                                self.pending.push_back(env);
                            }
                            return Some(Delivery::Event(self.lag_gap(from, self.last_seq - 1)));
                        }
                    }
                    self.last_seq = env.seq;
                    if self.filter.matches(&env) {
                        return Some(Delivery::Event(env));
                    }
                }
                Ok(Item::Control(env)) => {
                    if self.lagged {
                        self.lagged = false;
                        let from = self.last_seq + 1;
                        if env.seq >= from {
                            self.last_seq = env.seq;
                            self.pending.push_back(env);
                            return Some(Delivery::Event(self.lag_gap(from, self.last_seq)));
                        }
                    }
                    return Some(Delivery::Event(env));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.lagged = true,
                Err(broadcast::error::RecvError::Closed) => {
                    self.done = true;
                    return None;
                }
            }
        }
    }

    fn lag_gap(&self, from_seq: u64, to_seq: u64) -> Arc<Envelope> {
        self.hub.control(
            "gap",
            &GapEvent {
                from_seq,
                to_seq,
                reason: GapReason::Lagged,
            },
            self.hub.seq(),
        )
    }
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn limits(queue: usize, replay: usize) -> HubLimits {
        HubLimits {
            replay_capacity: replay,
            replay_max_bytes: usize::MAX,
            subscriber_queue: queue,
        }
    }

    fn parse(env: &Envelope) -> Value {
        serde_json::from_str(&env.json).expect("envelope is JSON")
    }

    async fn next_event(sub: &mut Subscriber) -> Value {
        match sub.next().await {
            Some(Delivery::Event(env)) => parse(&env),
            other => panic!("expected an event, got {other:?}"),
        }
    }

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
        assert_eq!(v["epoch"], hub.epoch());
    }

    #[tokio::test]
    async fn replay_then_live_without_hole() {
        let hub = EventHub::new(limits(64, 64));
        for i in 0..10 {
            hub.publish("a", None, &json!(i));
        }
        let mut sub = hub
            .subscribe(Filter::default_all(), Some(4), Some(hub.epoch()))
            .expect("subscribes");
        hub.publish("a", None, &json!(10));
        let mut got = Vec::new();
        for _ in 0..7 {
            got.push(next_event(&mut sub).await["seq"].as_u64().unwrap_or(0));
        }
        assert_eq!(got, vec![5, 6, 7, 8, 9, 10, 11]);
    }

    #[tokio::test]
    async fn expired_and_restart_gaps() {
        let hub = EventHub::new(limits(64, 3));
        for i in 0..10 {
            hub.publish("a", None, &json!(i));
        }
        let mut sub = hub
            .subscribe(Filter::default_all(), Some(2), None)
            .expect("subscribes");
        let gap = next_event(&mut sub).await;
        assert_eq!(gap["event"], "gap");
        assert_eq!(
            gap["payload"],
            json!({"fromSeq": 3, "toSeq": 7, "reason": "expired"})
        );
        assert_eq!(next_event(&mut sub).await["seq"], 8);

        let mut sub = hub
            .subscribe(Filter::default_all(), Some(2), Some("old"))
            .expect("subscribes");
        let gap = next_event(&mut sub).await;
        assert_eq!(
            gap["payload"],
            json!({"fromSeq": 0, "toSeq": 0, "reason": "restart"})
        );
        assert_eq!(next_event(&mut sub).await["seq"], 8);
        assert!(
            hub.subscribe(Filter::default_all(), Some(11), None)
                .is_err()
        );
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
        let gap = next_event(&mut sub).await;
        assert_eq!(gap["event"], "gap");
        assert_eq!(gap["payload"]["reason"], "lagged");
        assert_eq!(gap["payload"]["fromSeq"], 1);
        let to = gap["payload"]["toSeq"].as_u64().unwrap_or(0);
        assert_eq!(next_event(&mut sub).await["seq"].as_u64(), Some(to + 1));
    }

    #[tokio::test]
    async fn filters_by_name_prefix_and_session() {
        let hub = EventHub::new(limits(64, 64));
        let filter = Filter::new(Some(&["sessions.*".to_string(), "tick".into()]), None)
            .expect("valid filter");
        let mut sub = hub.subscribe(filter, None, None).expect("subscribes");
        let keyed = Filter::new(None, Some("k".into())).expect("valid filter");
        let mut by_key = hub.subscribe(keyed, None, None).expect("subscribes");
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
        });
        match sub.next().await {
            Some(Delivery::Shutdown(env)) => assert_eq!(parse(&env)["event"], "shutdown"),
            other => panic!("expected shutdown, got {other:?}"),
        }
        assert!(sub.next().await.is_none());
    }
}
