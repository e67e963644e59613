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

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::protocol::{Event, GapEvent, GapReason, ShutdownEvent, TickEvent};
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
    /// The agent run the event belongs to, when there is one.
    pub run_id: Option<Box<str>>,
    /// The run's last event (`final`, `aborted`, `error`).
    pub ends_run: bool,
}

/// The agent run an event belongs to, given when publishing it.
#[derive(Debug, Clone, Copy)]
pub struct RunTag<'a> {
    /// The run's id.
    pub run_id: &'a str,
    /// Whether this is the run's last event.
    pub ends_run: bool,
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
    /// Bytes of live events a subscriber may fall behind before it loses some (one event
    /// always fits).
    pub subscriber_queue_bytes: usize,
}

/// The gateway's event hub.
pub struct EventHub {
    epoch: String,
    limits: HubLimits,
    inner: Mutex<Inner>,
    shutdown: watch::Sender<Option<Arc<Envelope>>>,
}

/// The replay ring and the subscribers, under one lock.
struct Inner {
    seq: u64,
    events: VecDeque<Arc<Envelope>>,
    bytes: usize,
    next_id: u64,
    /// Subscribers filtered to one session, by that session's key.
    keyed: HashMap<String, HashMap<u64, Arc<Slot>>>,
    /// Subscribers of every session.
    unkeyed: HashMap<u64, Arc<Slot>>,
    /// Shutdown was announced: nothing is delivered after it.
    closed: bool,
}

/// One subscriber's queue, shared between the hub (which fills it) and the subscriber.
struct Slot {
    filter: Filter,
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

impl EventHub {
    /// A hub for a new process lifetime, with a fresh epoch.
    pub fn new(limits: HubLimits) -> Arc<Self> {
        let (shutdown, _) = watch::channel(None);
        Arc::new(Self {
            epoch: uuid::Uuid::new_v4().simple().to_string(),
            limits,
            inner: Mutex::new(Inner {
                seq: 0,
                events: VecDeque::new(),
                bytes: 0,
                next_id: 0,
                keyed: HashMap::new(),
                unkeyed: HashMap::new(),
                closed: false,
            }),
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
    /// Publishes a declared event; its name comes from its declaration.
    pub fn emit<E: crate::protocol::Event>(&self, session_key: Option<&str>, payload: &E) -> u64 {
        self.publish(E::NAME, session_key, payload)
    }

    /// Publishes a declared event of an agent run (see [`Self::publish_tagged`]).
    pub fn emit_tagged<E: crate::protocol::Event>(
        &self,
        session_key: Option<&str>,
        run: Option<RunTag<'_>>,
        payload: &E,
    ) -> Option<Arc<Envelope>> {
        self.publish_tagged(E::NAME, session_key, run, payload)
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
        let payload = match serde_json::to_string(payload) {
            Ok(p) => p,
            Err(err) => {
                tracing::error!(event, %err, "event payload does not serialize; dropped");
                return None;
            }
        };
        let mut json = self.envelope_head(event, session_key, &payload);
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        json.push_str(&seq.to_string());
        json.push('}');
        let env = Arc::new(Envelope {
            seq,
            event: event.to_string(),
            session_key: session_key.map(str::to_string),
            json: json.into_boxed_str(),
            control: false,
            run_id: run.map(|r| r.run_id.into()),
            ends_run: run.is_some_and(|r| r.ends_run),
        });
        inner.bytes += env.json.len();
        inner.events.push_back(env.clone());
        while inner.events.len() > self.limits.replay_capacity
            || (inner.bytes > self.limits.replay_max_bytes && inner.events.len() > 1)
        {
            if let Some(old) = inner.events.pop_front() {
                inner.bytes -= old.json.len();
            }
        }
        if inner.closed {
            return Some(env);
        }
        // Queued under the lock, so every queue receives events in `seq` order; handed to the
        // connections after it, so a large fan-out does not hold up other publishers.
        let keyed = session_key.and_then(|key| inner.keyed.get(key));
        let mut queued = Vec::new();
        for slot in inner
            .unkeyed
            .values()
            .chain(keyed.into_iter().flat_map(HashMap::values))
        {
            if slot.filter.matches(&env) && self.offer(slot, &env) {
                queued.push(slot.clone());
            }
        }
        drop(inner);
        flush_all(queued);
        Some(env)
    }

    /// Queues `env` for one subscriber (after the `gap` of what it lost, if any), or records
    /// it as lost when the queue is full; returns whether it was queued (and needs a
    /// [`Slot::flush`]).
    fn offer(&self, slot: &Slot, env: &Arc<Envelope>) -> bool {
        let mut state = slot.lock();
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
        let over_bytes =
            live > 0 && state.live_bytes + env.json.len() > self.limits.subscriber_queue_bytes;
        if live >= self.limits.subscriber_queue.max(1) || over_bytes {
            if !env.control {
                let from = state.lost.map_or(env.seq, |(from, _)| from);
                state.lost = Some((from, env.seq));
            }
            return false;
        }
        if let Some((from, to)) = state.lost.take() {
            let gap = self.lag_gap(from, to);
            state.live_bytes += gap.json.len();
            state.queue.push_back(gap);
        }
        state.live_bytes += env.json.len();
        state.queue.push_back(env.clone());
        true
    }

    /// A control envelope (`tick`, `gap`, `shutdown`) carrying `seq`, a `seq` already published.
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
            run_id: None,
            ends_run: false,
        })
    }

    /// A `gap {lagged}` for the inclusive range lost; its `seq` is the last one lost, so a
    /// client resuming from it misses nothing after the gap.
    fn lag_gap(&self, from_seq: u64, to_seq: u64) -> Arc<Envelope> {
        let gap = GapEvent {
            from_seq,
            to_seq,
            reason: GapReason::Lagged,
        };
        self.control(GapEvent::NAME, &gap, to_seq)
    }

    /// Publishes a `tick` to every subscriber.
    pub fn tick(&self) {
        // Under the lock: the tick's seq is exactly the last event queued before it.
        let inner = self.lock();
        if inner.closed {
            return;
        }
        let env = self.control(TickEvent::NAME, &TickEvent { ts: now_ms() }, inner.seq);
        let mut queued = Vec::new();
        for slot in inner
            .unkeyed
            .values()
            .chain(inner.keyed.values().flat_map(HashMap::values))
        {
            if self.offer(slot, &env) {
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
        let env = self.control(ShutdownEvent::NAME, &event, inner.seq);
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
        let mut queue = VecDeque::new();
        let restart = epoch.is_some_and(|e| e != self.epoch);
        if restart {
            // Resuming from the gap's seq replays exactly what follows it.
            let before = inner.events.front().map_or(inner.seq, |e| e.seq - 1);
            let gap = GapEvent {
                from_seq: 0,
                to_seq: 0,
                reason: GapReason::Restart,
            };
            queue.push_back(self.control(GapEvent::NAME, &gap, before));
            queue.extend(inner.events.iter().filter(|e| filter.matches(e)).cloned());
        } else if let Some(after) = after_seq {
            if after > inner.seq {
                return Err(SubscribeError::AheadOfLatest {
                    after,
                    latest: inner.seq,
                });
            }
            let oldest = inner.events.front().map_or(inner.seq + 1, |e| e.seq);
            if after + 1 < oldest {
                let gap = GapEvent {
                    from_seq: after + 1,
                    to_seq: oldest - 1,
                    reason: GapReason::Expired,
                };
                queue.push_back(self.control(GapEvent::NAME, &gap, oldest - 1));
            }
            queue.extend(
                inner
                    .events
                    .iter()
                    .filter(|e| e.seq > after && filter.matches(e))
                    .cloned(),
            );
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let key = filter.session_key.clone();
        let slot = Arc::new(Slot {
            filter,
            state: Mutex::new(SlotState {
                replay_left: queue.len(),
                queue,
                ..Default::default()
            }),
            wake: Notify::new(),
        });
        match key {
            Some(key) => inner.keyed.entry(key).or_default().insert(id, slot.clone()),
            None => inner.unkeyed.insert(id, slot.clone()),
        };
        drop(inner);
        Ok(Subscriber {
            hub: self.clone(),
            id,
            slot,
            shutdown: self.shutdown.subscribe(),
            last: None,
            done: false,
        })
    }
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves what is queued to the outlet, in order, while it has room; a full outlet sends
    /// the subscriber back to draining its own queue. Wakes the subscriber's task when it has
    /// something to do (drain the queue, or end after its run's last event).
    fn flush(&self) {
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
}

impl Subscriber {
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
                let mut state = self.slot.lock();
                state.closed = true;
                state.outlet = None;
                self.last = Some(env);
            }
            {
                let mut state = self.slot.lock();
                // While direct, the queue belongs to the flushes: popping here could reorder.
                if state.outlet.is_none()
                    && let Some(env) = state.pop_front()
                {
                    return Some(Delivery::Event(env));
                }
                // With the queue empty, nothing can be flushed ahead of this gap.
                if (state.outlet.is_none() || state.finished)
                    && state.queue.is_empty()
                    && let Some((from, to)) = state.lost.take()
                {
                    return Some(Delivery::Event(self.hub.lag_gap(from, to)));
                }
                if state.finished && state.queue.is_empty() {
                    self.done = true;
                    return None;
                }
            }
            if let Some(env) = self.last.take() {
                self.done = true;
                return Some(Delivery::Shutdown(env));
            }
            // `notify_one` keeps a permit when nobody waits, so a wake between the check
            // above and this wait is not lost.
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() {
                        self.done = true;
                    }
                }
                _ = self.slot.wake.notified() => {}
            }
        }
    }
}

impl Subscriber {
    /// Hands every later event straight to `outlet`, if nothing is waiting in the queue (the
    /// replay and what arrived meanwhile go first, through [`next`](Self::next)); returns
    /// whether it did. From then on [`next`](Self::next) yields only the shutdown.
    pub fn go_direct(&mut self, outlet: &Arc<dyn Outlet>) -> bool {
        let mut state = self.slot.lock();
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
    pub fn only_run(&mut self, run_id: &str) {
        let mut state = self.slot.lock();
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

impl Drop for Subscriber {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        match &self.slot.filter.session_key {
            Some(key) => {
                if let Some(slots) = inner.keyed.get_mut(key) {
                    slots.remove(&self.id);
                    if slots.is_empty() {
                        inner.keyed.remove(key);
                    }
                }
            }
            None => {
                inner.unkeyed.remove(&self.id);
            }
        }
    }
}

/// Subscribers past which a publisher hands the flushing to a task of its own.
const FLUSH_INLINE_MAX: usize = 64;

/// Flushes the queues an event went into: inline for a few, else in a task, so that a request
/// that publishes to thousands of subscribers is answered without waiting for all of them (the
/// order per subscriber is the queue's, whoever flushes it).
fn flush_all(slots: Vec<Arc<Slot>>) {
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
            subscriber_queue_bytes: usize::MAX,
        }
    }

    fn parse(env: &Envelope) -> Value {
        serde_json::from_str(&env.json).expect("envelope is JSON")
    }

    /// A subscriber of every event of session `key`.
    fn keyed(hub: &Arc<EventHub>, key: &str) -> Subscriber {
        let filter = Filter::new(None, Some(key.into())).expect("filter");
        hub.subscribe(filter, None, None).expect("subscribes")
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
    async fn a_replay_longer_than_the_queue_costs_no_live_event() {
        let hub = EventHub::new(limits(2, 64));
        for i in 0..10 {
            hub.publish("a", None, &json!(i));
        }
        let mut sub = hub
            .subscribe(Filter::default_all(), Some(0), Some(hub.epoch()))
            .expect("subscribes");
        for i in 10..12 {
            hub.publish("a", None, &json!(i));
        }
        for seq in 1..=12 {
            assert_eq!(next_event(&mut sub).await["seq"], seq, "no hole, no gap");
        }
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
        });
        assert_eq!(next_event(&mut sub).await["payload"], "aborted");
        assert!(
            sub.next().await.is_none(),
            "nothing follows the run's last event"
        );
    }
}
