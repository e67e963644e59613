//! The hub's relay in cluster mode: every node publishes its events to one JetStream stream and
//! delivers that stream, in its order, to its own subscribers; `seq` is the stream's sequence.
//!
//! Publishing: [`StreamRelay::relay`] queues the event (the hub's publish stays synchronous);
//! one task sends the queue in order, pipelined, each message with a `Nats-Msg-Id` unique to the
//! node's lifetime, and waits for JetStream's acknowledgements; a batch that failed (NATS gone)
//! is sent again from the first unacknowledged message once NATS is back, and the stream's
//! duplicate window stores each message once. Delivering: an ordered push consumer (which
//! recreates itself after a reconnect, from the last sequence received) hands each message to
//! [`EventHub::ingest`]. At start the consumer begins with the oldest event the stream keeps, so
//! the node's replay ring is the stream's content and `afterSeq` resumes on any node.

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
/// Messages sent before their acknowledgements are awaited.
const WINDOW: usize = 256;

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

/// Sends the queued events in order, `WINDOW` at a time, until every one is acknowledged.
async fn publish_loop(
    cluster: Arc<Cluster>,
    relay: Arc<StreamRelay>,
    mut rx: mpsc::Receiver<Relayed>,
    stop: CancellationToken,
) {
    let js = cluster.jetstream().clone();
    let boot = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("{}-{}", cluster.node_id(), &boot[..8]);
    let mut next = 0u64;
    let mut batch: Vec<(String, Relayed)> = Vec::with_capacity(WINDOW);
    loop {
        let first = tokio::select! {
            e = rx.recv() => e,
            () = stop.cancelled() => None,
        };
        let Some(first) = first else { return };
        next += 1;
        batch.push((format!("{prefix}-{next}"), first));
        while batch.len() < WINDOW {
            match rx.try_recv() {
                Ok(e) => {
                    next += 1;
                    batch.push((format!("{prefix}-{next}"), e));
                }
                Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match send_batch(&js, &batch).await {
                Ok(()) => {
                    relay.acknowledged(batch.len());
                    break;
                }
                Err((done, err)) => {
                    batch.drain(..done);
                    relay.acknowledged(done);
                    tracing::warn!(%err, waiting = batch.len(), "cannot publish events to the stream; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        batch.clear();
    }
}

/// Sends `batch` and awaits its acknowledgements in order; on a failure, how many were
/// acknowledged before it.
async fn send_batch(
    js: &async_nats::jetstream::Context,
    batch: &[(String, Relayed)],
) -> Result<(), (usize, String)> {
    let mut acks = Vec::with_capacity(batch.len());
    for (i, (id, event)) in batch.iter().enumerate() {
        let payload = Bytes::from(event.payload.clone().into_bytes());
        match js
            .publish_with_headers(EVENTS_SUBJECT, headers(event, id), payload)
            .await
        {
            Ok(ack) => acks.push(ack),
            Err(err) => {
                // Those sent may still be acknowledged; the resend is deduplicated by id.
                return Err((ack_prefix(acks).await.min(i), err.to_string()));
            }
        }
    }
    let total = acks.len();
    let done = ack_prefix(acks).await;
    if done == total {
        Ok(())
    } else {
        Err((done, "no acknowledgement from JetStream".into()))
    }
}

/// How many of `acks`, in order, were acknowledged before the first that was not.
async fn ack_prefix(acks: Vec<async_nats::jetstream::context::PublishAckFuture>) -> usize {
    let mut done = 0;
    for ack in acks {
        if ack.await.is_err() {
            break;
        }
        done += 1;
    }
    done
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
