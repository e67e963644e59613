//! One outgoing webhook's worker: a hub subscription drained into the webhook's own queue,
//! and a sender that POSTs one envelope at a time, in order, retrying with backoff.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::WebhookConfig;
use crate::events::{Delivery, Envelope, EventHub, Filter, Subscriber};
use crate::metrics::WebhookMetrics;
use crate::protocol::{Event, GapEvent};
use crate::util::now_ms;

use super::queue::{CAPACITY, Queue};
use super::sign::delivery_signature;

/// The delivery id header.
pub const DELIVERY_HEADER: &str = "x-clawgate-delivery";
/// The timestamp header (ms since the Unix epoch, the attempt's own).
pub const TIMESTAMP_HEADER: &str = "x-clawgate-timestamp";
/// The signature header: `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-clawgate-signature";
/// The event name header (informative; the body says it too).
pub const EVENT_HEADER: &str = "x-clawgate-event";
/// The attempt number header, from 1.
pub const ATTEMPT_HEADER: &str = "x-clawgate-attempt";

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// At most one WARN line per this long per webhook for dropped envelopes.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A running webhook: its configuration and its two tasks.
pub(super) struct Worker {
    /// The configuration it runs with (a different one restarts it).
    pub(super) config: WebhookConfig,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Worker {
    /// Subscribes to the hub for `config.events` and starts delivering to `config.url`.
    pub(super) fn start(name: &str, config: WebhookConfig, hub: &Arc<EventHub>) -> Option<Self> {
        let filter = match Filter::new(Some(&config.events), None) {
            Ok(f) => f.named_deltas_only(),
            Err(path) => {
                // Validated with the configuration; kept as a guard.
                tracing::error!(
                    webhook = name,
                    path,
                    "webhook events do not parse; not started"
                );
                return None;
            }
        };
        let sub = match hub.subscribe(filter, None, None) {
            Ok(sub) => sub,
            Err(err) => {
                tracing::error!(webhook = name, %err, "webhook cannot subscribe; not started");
                return None;
            }
        };
        let shared = Arc::new(Shared {
            name: name.to_string(),
            queue: Queue::new(CAPACITY),
            metrics: WebhookMetrics::new(name),
            drops: Mutex::new(DropLog::default()),
        });
        shared.metrics.queue_len(0);
        let stop = CancellationToken::new();
        let receiver = tokio::spawn(receive(shared.clone(), sub, stop.clone()));
        let sender = tokio::spawn(send_all(shared, config.clone(), stop.clone()));
        tracing::info!(webhook = name, url = %config.url, events = ?config.events, "webhook started");
        Some(Self {
            config,
            stop,
            tasks: vec![receiver, sender],
        })
    }

    /// Stops both tasks (a delivery in flight is abandoned; what is queued is dropped).
    pub(super) async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What the two tasks of a worker share.
struct Shared {
    name: String,
    queue: Queue,
    metrics: WebhookMetrics,
    drops: Mutex<DropLog>,
}

/// Dropped envelopes not yet logged, so a dead receiver does not flood the log.
#[derive(Default)]
struct DropLog {
    last_warn: Option<Instant>,
    queue_full: u64,
    gap: u64,
}

impl Shared {
    /// Counts `n` dropped envelopes (`gap`: lost by the hub subscription, else the queue was
    /// full) and logs them at most once per [`WARN_EVERY`].
    fn dropped(&self, n: u64, gap: bool) {
        if gap {
            self.metrics.dropped_gap(n);
        } else {
            self.metrics.dropped_full(n);
        }
        let Ok(mut log) = self.drops.lock() else {
            return;
        };
        if gap {
            log.gap += n;
        } else {
            log.queue_full += n;
        }
        if log.last_warn.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        log.last_warn = Some(Instant::now());
        let (queue_full, gap) = (
            std::mem::take(&mut log.queue_full),
            std::mem::take(&mut log.gap),
        );
        drop(log);
        tracing::warn!(
            webhook = %self.name,
            queue_full,
            gap,
            capacity = CAPACITY,
            "webhook envelopes dropped (the receiver is slow or down: the oldest queued go first; gap: lost before the queue); at most one such line per 10 s"
        );
    }
}

/// Moves what the hub delivers into the queue, never waiting on the receiver.
async fn receive(shared: Arc<Shared>, mut sub: Subscriber, stop: CancellationToken) {
    loop {
        let delivery = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            d = sub.next() => d,
        };
        match delivery {
            Some(Delivery::Event(env)) => {
                if env.control {
                    if env.event == GapEvent::NAME {
                        shared.dropped(gap_len(&env), true);
                    }
                    // `tick`s are the hub's keep-alive for connections, not events to deliver.
                    continue;
                }
                let (len, dropped) = shared.queue.push(env);
                shared.metrics.queue_len(len);
                if dropped > 0 {
                    shared.dropped(dropped, false);
                }
            }
            Some(Delivery::Shutdown(_)) | None => return,
        }
    }
}

/// The number of seqs a `gap` envelope announces lost.
fn gap_len(env: &Envelope) -> u64 {
    #[derive(serde::Deserialize)]
    struct Wire {
        payload: GapEvent,
    }
    serde_json::from_str::<Wire>(&env.json)
        .map(|w| w.payload.to_seq.saturating_sub(w.payload.from_seq) + 1)
        .unwrap_or(1)
}

/// Delivers the queue's envelopes one at a time, in order, until stopped.
async fn send_all(shared: Arc<Shared>, config: WebhookConfig, stop: CancellationToken) {
    let client = client();
    loop {
        let (env, left) = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            next = shared.queue.pop() => next,
        };
        shared.metrics.queue_len(left);
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = deliver(&shared, &client, &config, env) => {}
        }
    }
}

/// The envelope's own bytes as a request body, without a copy.
struct Body(Arc<Envelope>);

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        self.0.json.as_bytes()
    }
}

/// One delivery: up to `max_attempts` POSTs of `env` (each signed with its own timestamp,
/// all with one delivery id), with exponential backoff and jitter between them.
async fn deliver(
    shared: &Shared,
    client: &reqwest::Client,
    config: &WebhookConfig,
    env: Arc<Envelope>,
) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let body = bytes::Bytes::from_owner(Body(env.clone()));
    let timeout = Duration::from_millis(config.timeout_ms);
    let mut last_error = String::new();
    for attempt in 1..=config.max_attempts {
        let ts = now_ms();
        let signature = delivery_signature(config.secret.as_bytes(), ts, &body);
        let sent = client
            .post(&config.url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::USER_AGENT,
                concat!("clawgate/", env!("CARGO_PKG_VERSION")),
            )
            .header(DELIVERY_HEADER, &id)
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_HEADER, env.event.as_str())
            .header(ATTEMPT_HEADER, attempt.to_string())
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => {
                shared.metrics.attempt(true);
                shared.metrics.delivery(true);
                return;
            }
            Ok(resp) => last_error = format!("HTTP {}", resp.status().as_u16()),
            Err(err) => last_error = error_chain(&err),
        }
        shared.metrics.attempt(false);
        tracing::debug!(webhook = %shared.name, delivery = %id, attempt, error = %last_error, "webhook attempt failed");
        if attempt < config.max_attempts {
            tokio::time::sleep(backoff(config.backoff_ms, attempt)).await;
        }
    }
    shared.metrics.delivery(false);
    tracing::warn!(
        webhook = %shared.name,
        delivery = %id,
        seq = env.seq,
        event = %env.event,
        attempts = config.max_attempts,
        error = %last_error,
        "webhook delivery given up after max_attempts; the next one goes"
    );
}

/// The wait after failed attempt `attempt` (from 1): `base × 2^(attempt-1)`, at most
/// [`MAX_BACKOFF`], plus up to half of it again at random (so receivers coming back are not
/// hit by every sender at once).
fn backoff(base_ms: u64, attempt: u32) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << (attempt.saturating_sub(1)).min(32));
    let wait = Duration::from_millis(exp).min(MAX_BACKOFF);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1_000) as u32;
    wait + wait.mul_f64(f64::from(jitter) / 2_000.0)
}

/// The error and its causes, as one line ("error sending request: connection refused").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The HTTP client of every webhook: no redirects (a signed POST is not replayed elsewhere).
fn client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_else(|_| reqwest::Client::new())
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for attempt in 1..=5u32 {
            let base = Duration::from_millis(100 * (1 << (attempt - 1)));
            let wait = backoff(100, attempt);
            assert!(
                wait >= base && wait <= base + base / 2,
                "{attempt}: {wait:?}"
            );
        }
        assert!(backoff(1_000, 40) <= MAX_BACKOFF + MAX_BACKOFF / 2);
        assert!(backoff(1_000, 40) >= MAX_BACKOFF);
    }
}
