//! Prometheus metrics: the names the gateway records, the recorder (installed once at start
//! unless `[metrics] enabled = false`) and the text of `GET /metrics`.
//!
//! Recording goes through the `metrics` facade everywhere; without a recorder every handle is a
//! no-op. Label values come only from the method table, agent ids, provider kinds, tool names
//! of the tool set and fixed enums, never from what a client sends (a method that is not in the
//! table is `"unknown"`), so no client can grow the label set.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// `clawgate_rpc_calls_total{method,code}`: calls answered, `code` `"ok"` or the error code.
pub const RPC_CALLS: &str = "clawgate_rpc_calls_total";
/// `clawgate_rpc_duration_seconds{method}`: from the request read to its answer.
pub const RPC_DURATION: &str = "clawgate_rpc_duration_seconds";
/// `clawgate_connections`: open connections (HTTP and WebSocket).
pub const CONNECTIONS: &str = "clawgate_connections";
/// `clawgate_subscriptions`: active subscriptions of all connections.
pub const SUBSCRIPTIONS: &str = "clawgate_subscriptions";
/// `clawgate_events_published_total{event}`.
pub const EVENTS_PUBLISHED: &str = "clawgate_events_published_total";
/// `clawgate_events_dropped_total{reason}`: events announced lost by a `gap`.
pub const EVENTS_DROPPED: &str = "clawgate_events_dropped_total";
/// `clawgate_runs_active`: runs running or waiting for an approval.
pub const RUNS_ACTIVE: &str = "clawgate_runs_active";
/// `clawgate_runs_total{agent,outcome}`: runs ended.
pub const RUNS: &str = "clawgate_runs_total";
/// `clawgate_provider_requests_total{provider,status}`: model calls, `status` the HTTP status
/// or `"error"` when no answer came.
pub const PROVIDER_REQUESTS: &str = "clawgate_provider_requests_total";
/// `clawgate_tokens_total{agent,kind}`: tokens the providers reported, `kind` `input`,
/// `output`, `cache_read`, `cache_write`.
pub const TOKENS: &str = "clawgate_tokens_total";
/// `clawgate_tool_calls_total{tool,outcome}`.
pub const TOOL_CALLS: &str = "clawgate_tool_calls_total";
/// `clawgate_store_fsync_seconds`: each fsync/fdatasync of the store.
pub const STORE_FSYNC: &str = "clawgate_store_fsync_seconds";
/// `clawgate_auth_failures_total`: failed authentications (a refused token, or none where one
/// is needed), read from the login throttle at each scrape.
pub const AUTH_FAILURES: &str = "clawgate_auth_failures_total";
/// `clawgate_auth_lockouts`: client addresses locked out now.
pub const AUTH_LOCKOUTS: &str = "clawgate_auth_lockouts";
/// `clawgate_webhook_deliveries_total{webhook,outcome}`: deliveries of outgoing webhooks
/// ended, `outcome` `delivered` or `failed` (given up after `max_attempts`).
pub const WEBHOOK_DELIVERIES: &str = "clawgate_webhook_deliveries_total";
/// `clawgate_webhook_attempts_total{webhook,outcome}`: POSTs made, `outcome` `ok` or `error`.
pub const WEBHOOK_ATTEMPTS: &str = "clawgate_webhook_attempts_total";
/// `clawgate_webhook_dropped_total{webhook,reason}`: envelopes a webhook never sent,
/// `reason` `queue_full` (its queue of 1,000 overflowed, oldest first) or `gap` (lost by its
/// hub subscription, announced by a `gap`).
pub const WEBHOOK_DROPPED: &str = "clawgate_webhook_dropped_total";
/// `clawgate_webhook_queue{webhook}`: envelopes waiting in a webhook's queue.
pub const WEBHOOK_QUEUE: &str = "clawgate_webhook_queue";
/// `process_resident_memory_bytes`: the process's resident set.
pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";

/// The label value for a method that is not in the table (or a request with no readable name).
pub const UNKNOWN: &str = "unknown";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Seconds: 50 µs to 10 s, for calls.
const CALL_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
/// Seconds: 10 µs to 1 s, for fsyncs.
const FSYNC_BUCKETS: &[f64] = &[
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    1.0,
];

/// Installs the process's recorder (once; later calls answer the same). Must run before any
/// handle is taken, or that handle stays a no-op. Needs a tokio runtime: a task drains the
/// histograms every 5 s, so unscraped samples cost bounded memory.
pub fn install() -> Option<&'static PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Some(h);
    }
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(RPC_DURATION.into()), CALL_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(STORE_FSYNC.into()), FSYNC_BUCKETS));
    let recorder = match builder {
        Ok(b) => b.build_recorder(),
        Err(err) => {
            tracing::warn!(%err, "metrics: the recorder could not be built; /metrics is off");
            return None;
        }
    };
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        // Someone else's recorder (a host embedding us): ours would see nothing.
        tracing::warn!("metrics: another recorder is installed; /metrics is off");
        return None;
    }
    let handle = HANDLE.get_or_init(|| handle);
    describe();
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                if let Some(h) = HANDLE.get() {
                    h.run_upkeep();
                }
            }
        });
    }
    Some(handle)
}

/// Whether our recorder is installed.
pub fn enabled() -> bool {
    HANDLE.get().is_some()
}

fn describe() {
    describe_counter!(
        RPC_CALLS,
        "JSON-RPC calls answered, by method and code (ok or the error code)."
    );
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "Time from a request read to its answer, by method."
    );
    describe_gauge!(CONNECTIONS, "Open connections (HTTP and WebSocket).");
    describe_gauge!(SUBSCRIPTIONS, "Active subscriptions.");
    describe_counter!(EVENTS_PUBLISHED, "Events published, by event.");
    describe_counter!(
        EVENTS_DROPPED,
        "Events announced lost to a subscriber by a gap, by reason."
    );
    describe_gauge!(RUNS_ACTIVE, "Runs running or waiting for an approval.");
    describe_counter!(RUNS, "Runs ended, by agent and outcome.");
    describe_counter!(
        PROVIDER_REQUESTS,
        "Model calls, by provider and HTTP status (error: no answer)."
    );
    describe_counter!(
        TOKENS,
        "Tokens reported by the providers, by agent and kind."
    );
    describe_counter!(TOOL_CALLS, "Tool calls ended, by tool and outcome.");
    describe_histogram!(STORE_FSYNC, Unit::Seconds, "Store fsyncs.");
    describe_counter!(AUTH_FAILURES, "Failed authentications.");
    describe_gauge!(
        AUTH_LOCKOUTS,
        "Client addresses locked out for failed logins now."
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Outgoing webhook deliveries ended, by webhook and outcome (delivered, failed)."
    );
    describe_counter!(
        WEBHOOK_ATTEMPTS,
        "Outgoing webhook POSTs, by webhook and outcome (ok, error)."
    );
    describe_counter!(
        WEBHOOK_DROPPED,
        "Envelopes an outgoing webhook never sent, by webhook and reason (queue_full, gap)."
    );
    describe_gauge!(
        WEBHOOK_QUEUE,
        "Envelopes waiting in an outgoing webhook's queue."
    );
    describe_gauge!(
        RESIDENT_MEMORY,
        Unit::Bytes,
        "Resident memory of the process."
    );
}

/// What `/metrics` reads from the gateway's state at each scrape (kept there, not here).
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Open connections.
    pub connections: u64,
    /// Active subscriptions.
    pub subscriptions: u64,
    /// Runs running or waiting.
    pub runs_active: u64,
    /// Addresses locked out.
    pub auth_lockouts: u64,
    /// Failed authentications since start (the throttle counts them).
    pub auth_failures: u64,
}

/// The Prometheus text (format 0.0.4), or `None` when metrics are off.
pub fn render(now: Gauges) -> Option<String> {
    let handle = HANDLE.get()?;
    gauge!(CONNECTIONS).set(now.connections as f64);
    gauge!(SUBSCRIPTIONS).set(now.subscriptions as f64);
    gauge!(RUNS_ACTIVE).set(now.runs_active as f64);
    gauge!(AUTH_LOCKOUTS).set(now.auth_lockouts as f64);
    counter!(AUTH_FAILURES).absolute(now.auth_failures);
    if let Some(rss) = resident_bytes() {
        gauge!(RESIDENT_MEMORY).set(rss as f64);
    }
    Some(handle.render())
}

/// The resident set from /proc/self/statm (pages × page size); `None` off Linux.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().map(|p| pages * p)
}

/// A method's handles, taken once when the table is frozen: a call records through them with
/// no lookup and no allocation (errors, rarer, register their code on the fly).
#[derive(Clone)]
pub struct MethodMetrics {
    name: &'static str,
    ok: Counter,
    duration: Histogram,
}

impl std::fmt::Debug for MethodMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodMetrics")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl MethodMetrics {
    /// The handles of method `name` (a name of the method table).
    pub fn new(name: &str) -> Self {
        // Leaked once per method name per table build: the table's names are few and live as
        // long as the process (a plugin's methods come back with it).
        let name = intern(name);
        Self {
            name,
            ok: counter!(RPC_CALLS, "method" => name, "code" => "ok"),
            duration: histogram!(RPC_DURATION, "method" => name),
        }
    }

    /// The handles for calls naming no method of the table.
    pub fn unknown() -> Self {
        Self::new(UNKNOWN)
    }

    /// Records one answered call: `code` `None` for a success.
    pub fn record(&self, code: Option<i32>, elapsed: Duration) {
        if !enabled() {
            return;
        }
        match code {
            None => self.ok.increment(1),
            Some(code) => {
                counter!(RPC_CALLS, "method" => self.name, "code" => code.to_string()).increment(1)
            }
        }
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// One `&'static str` per distinct name, so label values need no allocation per call.
fn intern(name: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(|| Mutex::new(HashSet::new()));
    let mut names = match names.lock() {
        Ok(n) => n,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(n) = names.get(name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Runs one store fsync (`sync`), recording its time.
pub fn fsync<T>(sync: impl FnOnce() -> T) -> T {
    if !enabled() {
        return sync();
    }
    let started = std::time::Instant::now();
    let out = sync();
    histogram!(STORE_FSYNC).record(started.elapsed().as_secs_f64());
    out
}

/// A counter per name of a small, fixed set (event names, tool names), cached so recording
/// one costs a read lock and a hash lookup, not a registration and an allocation.
/// `fixed` is a second label every counter of the cache carries (a tool call's outcome).
struct Cache {
    metric: &'static str,
    label: &'static str,
    fixed: Option<(&'static str, &'static str)>,
    counters: std::sync::RwLock<std::collections::BTreeMap<&'static str, Counter>>,
}

impl Cache {
    const fn new(
        metric: &'static str,
        label: &'static str,
        fixed: Option<(&'static str, &'static str)>,
    ) -> Self {
        Self {
            metric,
            label,
            fixed,
            counters: std::sync::RwLock::new(std::collections::BTreeMap::new()),
        }
    }

    fn increment(&self, value: &str, by: u64) {
        if !enabled() {
            return;
        }
        if let Ok(map) = self.counters.read()
            && let Some(c) = map.get(value)
        {
            c.increment(by);
            return;
        }
        let name = intern(value);
        let c = match self.fixed {
            None => counter!(self.metric, self.label => name),
            Some((k, v)) => counter!(self.metric, self.label => name, k => v),
        };
        c.increment(by);
        if let Ok(mut map) = self.counters.write() {
            map.insert(name, c);
        }
    }
}

static EVENTS: Cache = Cache::new(EVENTS_PUBLISHED, "event", None);

/// Counts one published event (`event` a name the table declares).
pub fn event_published(event: &str) {
    EVENTS.increment(event, 1);
}

/// Counts `count` events announced lost by a `gap` of `reason` (`lagged`, `expired`, `restart`).
pub fn events_dropped(reason: &'static str, count: u64) {
    counter!(EVENTS_DROPPED, "reason" => reason).increment(count);
}

/// The tool-call counters, one cache per outcome.
static TOOLS: [(&str, Cache); 4] = [
    (
        "ok",
        Cache::new(TOOL_CALLS, "tool", Some(("outcome", "ok"))),
    ),
    (
        "error",
        Cache::new(TOOL_CALLS, "tool", Some(("outcome", "error"))),
    ),
    (
        "refused",
        Cache::new(TOOL_CALLS, "tool", Some(("outcome", "refused"))),
    ),
    (
        "aborted",
        Cache::new(TOOL_CALLS, "tool", Some(("outcome", "aborted"))),
    ),
];

/// Counts one ended tool call: `tool` a name of the run's tool set (`"unknown"` for a name the
/// model made up), `outcome` `ok`, `error`, `refused` (denied, unknown, not run again) or
/// `aborted`.
pub fn tool_call(tool: &str, outcome: &'static str) {
    if let Some((_, cache)) = TOOLS.iter().find(|(o, _)| *o == outcome) {
        cache.increment(tool, 1);
    }
}

/// Counts one ended run of `agent` (`outcome` `final`, `aborted`, `error`).
pub fn run_ended(agent: &str, outcome: &'static str) {
    if !enabled() {
        return;
    }
    counter!(RUNS, "agent" => intern(agent), "outcome" => outcome).increment(1);
}

/// Counts one model call of `provider` (`anthropic`, `openai`, `echo`): `status` the HTTP
/// status, `"error"` when no answer came, `"ok"` for the offline echo.
pub fn provider_request(provider: &'static str, status: ProviderStatus) {
    if !enabled() {
        return;
    }
    let status: metrics::SharedString = match status {
        ProviderStatus::Http(code) => code.to_string().into(),
        ProviderStatus::NoAnswer => "error".into(),
        ProviderStatus::Offline => "ok".into(),
    };
    counter!(PROVIDER_REQUESTS, "provider" => provider, "status" => status).increment(1);
}

/// How a model call was answered, for [`provider_request`].
#[derive(Debug, Clone, Copy)]
pub enum ProviderStatus {
    /// An HTTP status.
    Http(u16),
    /// No answer (connection refused, timeout, ...).
    NoAnswer,
    /// The offline provider answered.
    Offline,
}

/// Counts the tokens one model call of `agent` reported.
pub fn tokens(agent: &str, input: u64, output: u64, cache_read: u64, cache_write: u64) {
    if !enabled() {
        return;
    }
    let agent = intern(agent);
    for (kind, n) in [
        ("input", input),
        ("output", output),
        ("cache_read", cache_read),
        ("cache_write", cache_write),
    ] {
        counter!(TOKENS, "agent" => agent, "kind" => kind).increment(n);
    }
}

/// The handles of one outgoing webhook, taken once when its worker starts (its name comes
/// from the configuration, never from a client).
#[derive(Clone)]
pub struct WebhookMetrics {
    delivered: Counter,
    failed: Counter,
    attempt_ok: Counter,
    attempt_error: Counter,
    queue_full: Counter,
    gap: Counter,
    queue: metrics::Gauge,
}

impl std::fmt::Debug for WebhookMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookMetrics").finish_non_exhaustive()
    }
}

impl WebhookMetrics {
    /// The handles of webhook `name`.
    pub fn new(name: &str) -> Self {
        let name = intern(name);
        Self {
            delivered: counter!(WEBHOOK_DELIVERIES, "webhook" => name, "outcome" => "delivered"),
            failed: counter!(WEBHOOK_DELIVERIES, "webhook" => name, "outcome" => "failed"),
            attempt_ok: counter!(WEBHOOK_ATTEMPTS, "webhook" => name, "outcome" => "ok"),
            attempt_error: counter!(WEBHOOK_ATTEMPTS, "webhook" => name, "outcome" => "error"),
            queue_full: counter!(WEBHOOK_DROPPED, "webhook" => name, "reason" => "queue_full"),
            gap: counter!(WEBHOOK_DROPPED, "webhook" => name, "reason" => "gap"),
            queue: gauge!(WEBHOOK_QUEUE, "webhook" => name),
        }
    }

    /// One delivery ended: `delivered` or given up.
    pub fn delivery(&self, delivered: bool) {
        if delivered {
            self.delivered.increment(1);
        } else {
            self.failed.increment(1);
        }
    }

    /// One POST answered 2xx (`ok`) or not.
    pub fn attempt(&self, ok: bool) {
        if ok {
            self.attempt_ok.increment(1);
        } else {
            self.attempt_error.increment(1);
        }
    }

    /// `n` envelopes dropped from a full queue.
    pub fn dropped_full(&self, n: u64) {
        self.queue_full.increment(n);
    }

    /// `n` envelopes lost by the hub subscription (a `gap`).
    pub fn dropped_gap(&self, n: u64) {
        self.gap.increment(n);
    }

    /// The queue's length now.
    pub fn queue_len(&self, n: usize) {
        self.queue.set(n as f64);
    }
}
