//! Outgoing webhooks (`[webhooks.<name>]`): each matching event's envelope POSTed, signed, to a
//! URL, in order per webhook, retried with backoff, from a bounded queue that never holds up
//! the hub's publishers.
//!
//! Each webhook is a normal bounded hub subscriber (filter: its `events`, with `chat` deltas
//! only when `chat.delta` is named) drained at once into the webhook's own queue of at most
//! 1,000 envelopes (the oldest dropped first, counted and logged); a sender delivers them one
//! at a time: the next waits until the previous one succeeded or was given up after
//! `max_attempts`. The body is the envelope's bytes exactly as the hub published them;
//! headers `x-clawgate-delivery` (one id for every attempt of a delivery),
//! `x-clawgate-timestamp` (ms, of that attempt) and `x-clawgate-signature: sha256=<hex
//! HMAC-SHA256 of "<timestamp>.<body>">`. Nothing is kept across restarts.
//!
//! A supervisor watches `config.changed` and restarts the worker of each webhook added,
//! removed or changed. This module knows the hub and the configuration only, through
//! [`WebhookHost`].

pub mod queue;
pub mod sign;
mod worker;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::events::{Delivery, EventHub, Filter};
use crate::protocol::{ConfigChangedEvent, Event};

pub use worker::{
    ATTEMPT_HEADER, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};

/// What the webhooks need from the application that hosts them.
pub trait WebhookHost: Send + Sync + 'static {
    /// The event hub.
    fn hub(&self) -> &Arc<EventHub>;
    /// The configuration in force.
    fn config(&self) -> Arc<Config>;
}

/// The outgoing webhooks of a gateway: started once, stopped on shutdown.
#[derive(Default)]
pub struct Webhooks {
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Webhooks {
    /// Starts the supervisor, which starts a worker per configured webhook and follows
    /// configuration changes.
    pub fn start(host: Arc<dyn WebhookHost>) -> Self {
        let stop = CancellationToken::new();
        // Subscribed before the configuration is first read: no change is missed.
        let changes = Filter::new(Some(&[ConfigChangedEvent::NAME.to_string()]), None)
            .ok()
            .and_then(|f| host.hub().subscribe(f, None, None).ok());
        // The workers of the startup configuration subscribe now, before the gateway serves:
        // every event published after the start reaches them.
        let mut workers = BTreeMap::new();
        start_missing(host.as_ref(), &host.config(), &mut workers);
        let task = tokio::spawn(supervise(host, workers, changes, stop.clone()));
        Self {
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    /// Stops every worker (deliveries in flight are abandoned, queues dropped).
    pub async fn stop(&self) {
        self.stop.cancel();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Keeps one worker per configured webhook until stopped or the hub shuts down.
async fn supervise(
    host: Arc<dyn WebhookHost>,
    mut workers: BTreeMap<String, worker::Worker>,
    mut changes: Option<crate::events::Subscriber>,
    stop: CancellationToken,
) {
    loop {
        let Some(sub) = changes.as_mut() else {
            // No subscription (cannot happen with a live hub): the startup set stays.
            stop.cancelled().await;
            break;
        };
        let delivery = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            d = sub.next() => d,
        };
        match delivery {
            // A change, or a `gap` that may have hidden one; ticks change nothing.
            Some(Delivery::Event(env)) if !env.control || env.event != "tick" => {
                reconcile(host.as_ref(), &mut workers).await;
            }
            Some(Delivery::Event(_)) => {}
            Some(Delivery::Shutdown(_)) | None => break,
        }
    }
    for (_, w) in std::mem::take(&mut workers) {
        w.stop().await;
    }
}

/// Starts, stops or restarts workers to match `[webhooks]` now.
async fn reconcile(host: &dyn WebhookHost, workers: &mut BTreeMap<String, worker::Worker>) {
    let config = host.config();
    let wanted = &config.webhooks;
    let stale: Vec<String> = workers
        .iter()
        .filter(|(name, w)| wanted.get(*name) != Some(&w.config))
        .map(|(name, _)| name.clone())
        .collect();
    for name in stale {
        if let Some(w) = workers.remove(&name) {
            w.stop().await;
            tracing::info!(webhook = %name, "webhook stopped");
        }
    }
    start_missing(host, &config, workers);
}

/// Starts a worker for each configured webhook that has none.
fn start_missing(
    host: &dyn WebhookHost,
    config: &Config,
    workers: &mut BTreeMap<String, worker::Worker>,
) {
    for (name, cfg) in &config.webhooks {
        if workers.contains_key(name) {
            continue;
        }
        if let Some(w) = worker::Worker::start(name, cfg.clone(), host.hub()) {
            workers.insert(name.clone(), w);
        }
    }
}
