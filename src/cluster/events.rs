//! The hub's relay in cluster mode: every node publishes its events to one JetStream stream and
//! delivers that stream, in its order, to its own subscribers; `seq` is the stream's sequence.
//!
//! Publishing: [`StreamRelay::relay`] queues the event (the hub's publish stays synchronous);
//! one task stores the queue in the stream, over lanes: the events of one session share a lane
//! (events of no session have one of their own), each lane is a subject of this node's
//! lifetime and sends one event at a time, so no failure can ever store an event before an
//! earlier one of its lane; the lanes go side by side. An event not stored is sent again, and
//! stored once (its `Nats-Msg-Id`, and the expected last sequence of its subject).
//! Delivering: an ordered push consumer hands each message to [`EventHub::ingest`]; it is
//! watched against the stream itself and made again from the next `seq` when it fails or
//! falls silent, and a stream deleted under the node is made again as a new epoch. At start
//! the consumer begins with the oldest event the stream keeps, so the node's replay ring is
//! the stream's content and `afterSeq` resumes on any node.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, push};
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Cluster, EVENTS_STREAM, EVENTS_SUBJECT};
use crate::events::{EventHub, Relay, Relayed};

/// Events waiting to be sent to the stream at most; past that (NATS away for long under a
/// heavy load) new events are dropped and counted.
const QUEUE: usize = 65_536;

const H_EVENT: &str = "Cg-Event";
const H_KEY: &str = "Cg-Key";
const H_RUN: &str = "Cg-Run";
const H_END: &str = "Cg-End";
const H_STATE: &str = "Cg-State";
const H_TS: &str = "Cg-Ts";

/// The relay: a bounded queue to the publishing task.
pub struct StreamRelay {
    tx: mpsc::Sender<Relayed>,
    dropped: AtomicU64,
    /// Events queued, and events acknowledged by the stream (or dropped).
    queued: AtomicU64,
    acked: AtomicU64,
    progress: tokio::sync::Notify,
}

impl StreamRelay {
    /// Waits until every event queued so far is acknowledged by the stream, at most
    /// `patience`; whether they were.
    pub async fn flush(&self, patience: Duration) -> bool {
        let target = self.queued.load(Ordering::Acquire);
        tokio::time::timeout(patience, async {
            loop {
                let notified = self.progress.notified();
                if self.acked.load(Ordering::Acquire) >= target {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }

    fn acknowledged(&self, n: usize) {
        self.acked.fetch_add(n as u64, Ordering::AcqRel);
        self.progress.notify_waiters();
    }
}

impl Relay for StreamRelay {
    fn relay(&self, event: Relayed) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.tx.try_send(event).is_err() {
            self.acknowledged(1);
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::error!(
                    dropped = n,
                    "the event stream is unreachable and {QUEUE} events wait for it: events are dropped"
                );
            }
        }
    }
}

/// Starts relaying `hub`'s events through the cluster's event stream and delivering the stream
/// to it; returns once the hub holds every event the stream kept at start (at most 10 s).
pub async fn start(
    cluster: &Arc<Cluster>,
    hub: &Arc<EventHub>,
    stop: CancellationToken,
) -> Arc<StreamRelay> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let relay = Arc::new(StreamRelay {
        tx,
        dropped: AtomicU64::new(0),
        queued: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        progress: tokio::sync::Notify::new(),
    });
    hub.set_relay(relay.clone());
    tokio::spawn(publish_loop(
        cluster.clone(),
        relay.clone(),
        rx,
        stop.clone(),
    ));
    let last = match cluster.events_stream().clone().info().await {
        Ok(info) => info.state.last_sequence,
        Err(err) => {
            tracing::warn!(%err, "cannot read the event stream's state; not waiting to catch up");
            0
        }
    };
    tokio::spawn(consume_loop(cluster.clone(), hub.clone(), stop));
    if last > 0 && !hub.wait_for_seq(last, Duration::from_secs(10)).await {
        tracing::warn!(
            last,
            at = hub.seq(),
            "the event stream was not caught up within 10 s; serving meanwhile"
        );
    }
    relay
}

/// The headers of `event` (its message id is added per attempt).
fn headers(event: &Relayed, msg_id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    h.insert(H_EVENT, event.event.as_str());
    if let Some(key) = &event.session_key {
        h.insert(H_KEY, key.as_str());
    }
    if let Some(run) = &event.run_id {
        h.insert(H_RUN, run.as_ref());
    }
    if event.ends_run {
        h.insert(H_END, "1");
    }
    if let Some(state) = &event.state {
        h.insert(H_STATE, state.as_ref());
    }
    h.insert(H_TS, event.ts.to_string().as_str());
    h
}

/// The event a stream message carries (`None` when it is not one of ours).
fn parse(headers: Option<&HeaderMap>, payload: &Bytes) -> Option<Relayed> {
    let h = headers?;
    let get = |name: &str| h.get(name).map(|v| v.as_str().to_string());
    Some(Relayed {
        event: get(H_EVENT)?,
        session_key: get(H_KEY),
        run_id: get(H_RUN).map(Into::into),
        ends_run: h.get(H_END).is_some(),
        state: get(H_STATE).map(Into::into),
        ts: get(H_TS).and_then(|t| t.parse().ok()).unwrap_or(0),
        payload: String::from_utf8(payload.to_vec()).ok()?,
    })
}

/// The lanes of a node's events: those of one session always take the same lane (chosen by
/// the session key), events of no session take lane 0. A lane sends one event at a time; the
/// lanes send side by side.
const LANES: u64 = 64;

/// The lane of `event`.
fn lane_of(event: &Relayed) -> usize {
    use std::hash::{Hash, Hasher};
    let Some(key) = &event.session_key else {
        return 0;
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    // Lanes 1..LANES; the value is below LANES, so it fits.
    (1 + h.finish() % (LANES - 1)) as usize
}

/// One lane: its own subject (`clawgate.events.<node>.<boot>.<lane>`), which no other lane or
/// node writes, and the stream sequence of the last message stored on it.
struct Lane {
    subject: String,
    /// Waiting events (their message id first); the front one is being sent when `busy`.
    queue: VecDeque<(String, Relayed)>,
    /// The stream sequence of this subject's last message (0: none).
    last: u64,
    busy: bool,
    backoff: Duration,
}

/// What became of one attempt to store a lane's front event.
enum Sent {
    /// Stored (now or by an earlier attempt whose acknowledgement was lost) at this sequence.
    Stored(u64),
    /// The subject's last message is not the one expected; the lane learns it and sends
    /// again at once.
    Behind(u64),
    /// Not stored (NATS away, a stream leader being elected, ...): sent again later.
    Failed(String),
}

/// Sends the queued events to the stream, in order within each lane, until each is stored.
///
/// A lane sends its next event only once the one before is stored: pipelining several (as
/// a first version did) lets a failure store a later event before an earlier one — a message
/// lost with a dead connection while the next ones went out on the new one, or a publish
/// refused during a leader election while the next one was accepted — and the events of a
/// run would reach every client out of order. An event whose acknowledgement was lost is
/// sent again: `Nats-Msg-Id` stores it once within the stream's duplicate window, and
/// `Nats-Expected-Last-Subject-Sequence` (the lane's last stored message) past it. Lanes go
/// side by side, so only the events of one session wait for each other.
async fn publish_loop(
    cluster: Arc<Cluster>,
    relay: Arc<StreamRelay>,
    mut rx: mpsc::Receiver<Relayed>,
    stop: CancellationToken,
) {
    let boot = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("{}.{}", cluster.node_id(), &boot[..8]);
    let mut lanes: Vec<Lane> = (0..LANES)
        .map(|i| Lane {
            subject: format!("{EVENTS_SUBJECT}.{prefix}.{i}"),
            queue: VecDeque::new(),
            last: 0,
            busy: false,
            backoff: FIRST_BACKOFF,
        })
        .collect();
    let mut next = 0u64;
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut failures = 0u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            event = rx.recv() => {
                let Some(event) = event else { return };
                next += 1;
                let i = lane_of(&event);
                lanes[i].queue.push_back((format!("{prefix}.{next}"), event));
                if !lanes[i].busy
                    && let Some(attempt) = send(&cluster, &mut lanes[i], i, Duration::ZERO)
                {
                    inflight.push(attempt);
                }
            }
            Some((i, sent)) = inflight.next(), if !inflight.is_empty() => {
                let lane = &mut lanes[i];
                lane.busy = false;
                let delay = match sent {
                    Sent::Stored(seq) => {
                        lane.last = seq;
                        lane.queue.pop_front();
                        lane.backoff = FIRST_BACKOFF;
                        relay.acknowledged(1);
                        Duration::ZERO
                    }
                    Sent::Behind(last) => {
                        tracing::debug!(lane = i, was = lane.last, last, "a lane's subject is not where it was: sent again after its last message");
                        lane.last = last;
                        Duration::ZERO
                    }
                    Sent::Failed(err) => {
                        failures += 1;
                        if failures.is_power_of_two() || lane.backoff >= MAX_BACKOFF {
                            tracing::warn!(%err, waiting = lane.queue.len(), failures, "cannot publish events to the stream; retrying");
                        }
                        let delay = lane.backoff;
                        lane.backoff = (lane.backoff * 2).min(MAX_BACKOFF);
                        delay
                    }
                };
                if let Some(attempt) = send(&cluster, lane, i, delay) {
                    inflight.push(attempt);
                }
            }
        }
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One attempt, after `delay`, to store lane `i`'s front event after its last stored
/// message (`None` when the lane has nothing to send).
fn send(
    cluster: &Arc<Cluster>,
    lane: &mut Lane,
    i: usize,
    delay: Duration,
) -> Option<impl std::future::Future<Output = (usize, Sent)> + use<>> {
    let (id, event) = lane.queue.front().cloned()?;
    lane.busy = true;
    let subject = lane.subject.clone();
    let expected = lane.last;
    let cluster = cluster.clone();
    Some(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        (i, attempt(&cluster, subject, &id, event, expected).await)
    })
}

/// Publishes `event` on `subject` if the subject's last message is `expected`.
async fn attempt(
    cluster: &Cluster,
    subject: String,
    id: &str,
    event: Relayed,
    expected: u64,
) -> Sent {
    use async_nats::jetstream::context::PublishErrorKind;
    let mut h = headers(&event, id);
    h.insert(
        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        expected.to_string().as_str(),
    );
    let payload = Bytes::from(event.payload.into_bytes());
    let js = cluster.jetstream();
    let ack = match js.publish_with_headers(subject.clone(), h, payload).await {
        Ok(ack) => ack.await,
        Err(err) => return Sent::Failed(err.to_string()),
    };
    match ack {
        Ok(ack) => Sent::Stored(ack.sequence),
        Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => {
            // Only this lane writes its subject: its last message is this event (stored by
            // an attempt whose acknowledgement was lost, past the duplicate window) or an
            // older one of the lane (the stream dropped the newer ones: its limits, or it was
            // made again empty).
            match cluster
                .events_stream()
                .get_last_raw_message_by_subject(&subject)
                .await
            {
                Ok(last) => {
                    let ours = last
                        .headers
                        .get(async_nats::header::NATS_MESSAGE_ID)
                        .is_some_and(|v| v.as_str() == id);
                    if ours {
                        Sent::Stored(last.sequence)
                    } else {
                        Sent::Behind(last.sequence)
                    }
                }
                Err(e) if is_no_message(&e) => Sent::Behind(0),
                Err(e) => Sent::Failed(format!("{err}; and the subject's last message: {e}")),
            }
        }
        Err(err) => Sent::Failed(err.to_string()),
    }
}

fn is_no_message(err: &async_nats::jetstream::stream::LastRawMessageError) -> bool {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    matches!(err.kind(), LastRawMessageErrorKind::NoMessageFound)
}

/// Delivers the stream to `hub` from its oldest event kept, for as long as the node runs: a
/// consumer at a time ([`follow`]), made again from the next `seq` the hub lacks whenever it
/// fails, falls silent while the stream goes on, or the stream itself was made again.
async fn consume_loop(cluster: Arc<Cluster>, hub: Arc<EventHub>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let t0 = tokio::time::Instant::now();
        let why = match follow(&cluster, &hub, &stop).await {
            Ok(()) => return,
            Err(why) => why,
        };
        // A consumer that lived long was fine: the next one starts without waiting long.
        if t0.elapsed() > CHECK * 5 {
            backoff = Duration::from_millis(100);
        }
        tracing::warn!(%why, at = hub.seq(), "the event stream's consumer is made again");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// How often the delivering task looks at the stream itself.
const CHECK: Duration = Duration::from_secs(2);

/// One consumer's life, from the next `seq` the hub lacks: `Ok` when the node stops, else why
/// it must be made again.
///
/// The ordered consumer of async-nats recreates itself after a reconnect, but it can stay
/// silent for long (its requests to a cluster electing leaders time out, and it waits up to
/// 10 s between attempts); so every [`CHECK`] the stream is asked how far it is, and a
/// consumer that has not delivered, within a check, what the stream held at the one before is
/// replaced. The same look finds a stream that was deleted (made again here) or made again
/// elsewhere (a new epoch).
async fn follow(
    cluster: &Arc<Cluster>,
    hub: &Arc<EventHub>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let stream = current_stream(cluster, hub).await?;
    let start = hub.seq() + 1;
    let policy = if start == 1 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: start,
        }
    };
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: cluster.client().new_inbox(),
            deliver_policy: policy,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot make a consumer: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("cannot consume: {e}"))?;
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + CHECK, CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What the stream held at the previous check, when the hub had not reached it.
    let mut due: Option<u64> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            next = messages.next() => match next {
                Some(Ok(msg)) => {
                    let Ok(info) = msg.info() else { continue };
                    let seq = info.stream_sequence;
                    if seq <= hub.seq() {
                        // Behind what was delivered: not this stream's order any more.
                        return Err(format!("the consumer went back to {seq}"));
                    }
                    match parse(msg.headers.as_ref(), &msg.payload) {
                        Some(event) => {
                            hub.ingest(seq, &event);
                        }
                        None => tracing::warn!(
                            seq,
                            "a message in the event stream that is not a clawgate event; skipped"
                        ),
                    }
                }
                Some(Err(err)) => return Err(format!("the consumer failed: {err}")),
                None => return Err("the consumer ended".into()),
            },
            _ = check.tick() => {
                let at = hub.seq();
                if due.is_some_and(|due| at < due) {
                    return Err(format!("the consumer is silent while the stream is past {at}"));
                }
                due = None;
                match look(cluster).await {
                    Look::Gone => return Err("the event stream is gone".into()),
                    Look::At { epoch, .. } if epoch != *hub.epoch() => {
                        return Err("the event stream was made again".into());
                    }
                    Look::At { last, .. } => due = (last > at).then_some(last),
                    // NATS away: the consumer comes back with the connection, or the next
                    // look tells.
                    Look::Unknown => {}
                }
            }
        }
    }
}

/// What a look at the event stream found.
enum Look {
    /// It is there: its epoch and its last `seq`.
    At { epoch: String, last: u64 },
    /// It does not exist.
    Gone,
    /// No answer.
    Unknown,
}

/// Asks JetStream about the event stream, at most [`CHECK`].
async fn look(cluster: &Cluster) -> Look {
    let asked = tokio::time::timeout(CHECK, cluster.jetstream().get_stream(EVENTS_STREAM)).await;
    match asked {
        Ok(Ok(stream)) => {
            let info = stream.cached_info();
            Look::At {
                epoch: super::epoch_of(info),
                last: info.state.last_sequence,
            }
        }
        Ok(Err(err)) if stream_not_found(&err) => Look::Gone,
        _ => Look::Unknown,
    }
}

fn stream_not_found(err: &async_nats::jetstream::context::GetStreamError) -> bool {
    use async_nats::jetstream::context::GetStreamErrorKind;
    matches!(err.kind(), GetStreamErrorKind::JetStream(e)
        if e.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// The event stream as it is now, made again (with the configuration of the start) if it was
/// deleted; when it is not the stream the hub delivers (it was made again, here or by another
/// node), the hub starts its new epoch: `seq`s from 1, and `gap {restart}` to subscribers.
async fn current_stream(cluster: &Cluster, hub: &EventHub) -> Result<stream::Stream, String> {
    let js = cluster.jetstream();
    let stream = match js.get_stream(EVENTS_STREAM).await {
        Ok(stream) => stream,
        Err(err) if stream_not_found(&err) => {
            tracing::warn!("the event stream is gone (deleted?); making it again");
            js.get_or_create_stream(cluster.events_config().clone())
                .await
                .map_err(|e| format!("cannot make the event stream again: {e}"))?
        }
        Err(err) => return Err(format!("cannot find the event stream: {err}")),
    };
    let epoch = super::epoch_of(stream.cached_info());
    let old = hub.epoch();
    if epoch != *old {
        tracing::warn!(
            old = %old,
            new = %epoch,
            "the event stream was made again: a new epoch, seq from 1; subscribers get gap restart"
        );
        hub.restart(&epoch);
    }
    Ok(stream)
}
