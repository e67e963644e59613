//! Log setup: tracing-subscriber with a `RUST_LOG`-style filter, pretty or JSON lines on stderr,
//! and the in-memory ring `logs.tail` reads (the newest records, and the live ones), with every
//! secret replaced before a record is kept.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::{Arc, LazyLock, Mutex};

use arc_swap::ArcSwap;
use serde_json::{Map, Value};
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::protocol::{LogLevel, LogRecord};

/// The log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber; `filter` overrides `RUST_LOG` (default `info`). What passes
/// the filter goes to stderr and to the ring.
pub fn init(format: LogFormat, filter: Option<&str>) {
    let filter = match filter {
        Some(f) => EnvFilter::try_new(f).ok(),
        None => EnvFilter::try_from_default_env().ok(),
    }
    .unwrap_or_else(|| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry().with(filter).with(RingLayer);
    let _ = match format {
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(RedactingStderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(RedactingStderr),
            )
            .try_init(),
    };
}

/// Stderr, with what [`LogRing::redact`] replaces replaced: the formatter writes each event
/// in one piece, so a secret is never split between two writes.
struct RedactingStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingStderr;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingStderr
    }
}

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let clean = ring().redact(&text);
        std::io::stderr().write_all(clean.as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Records the ring keeps (the most `logs.tail` replays).
pub const RING_CAPACITY: usize = 1000;
/// Records a live tail may fall behind before it is told some were skipped.
const LIVE_CAPACITY: usize = 1024;
/// What stands for a secret in a record.
pub const REDACTED: &str = "[redacted]";
/// Known secrets shorter than this are not searched for (they would match ordinary text).
const MIN_SECRET_LEN: usize = 6;

/// The newest log records, and a channel of the live ones.
pub struct LogRing {
    records: Mutex<VecDeque<Arc<LogRecord>>>,
    live: broadcast::Sender<Arc<LogRecord>>,
    secrets: ArcSwap<Vec<String>>,
}

static RING: LazyLock<LogRing> = LazyLock::new(|| LogRing {
    records: Mutex::new(VecDeque::with_capacity(RING_CAPACITY)),
    live: broadcast::channel(LIVE_CAPACITY).0,
    secrets: ArcSwap::from_pointee(Vec::new()),
});

/// The process's ring.
pub fn ring() -> &'static LogRing {
    &RING
}

impl LogRing {
    /// Keeps `record` (the oldest goes past [`RING_CAPACITY`]) and sends it to the live tails.
    pub fn push(&self, record: LogRecord) {
        let record = Arc::new(record);
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() >= RING_CAPACITY {
            records.pop_front();
        }
        records.push_back(record.clone());
        // Under the lock: a tail's snapshot and its live channel meet with nothing between.
        let _ = self.live.send(record);
    }

    /// The newest `lines` records that `keep` accepts, oldest first, and the live channel from
    /// just after them (taken together: nothing is missed or sent twice).
    pub fn tail(
        &self,
        lines: usize,
        keep: impl Fn(&LogRecord) -> bool,
    ) -> (Vec<Arc<LogRecord>>, broadcast::Receiver<Arc<LogRecord>>) {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let mut newest: Vec<_> = records
            .iter()
            .rev()
            .filter(|r| keep(r))
            .take(lines)
            .cloned()
            .collect();
        newest.reverse();
        (newest, self.live.subscribe())
    }

    /// The secrets replaced wherever they appear (tokens, API keys, plugin and MCP
    /// environments and headers): set at start and at every configuration change.
    pub fn set_secrets(&self, mut secrets: Vec<String>) {
        secrets.retain(|s| s.len() >= MIN_SECRET_LEN);
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        self.secrets.store(Arc::new(secrets));
    }

    /// `text` with every known secret, `token=` / `api_key=` / `password=` / `secret=`
    /// value and `Bearer` credential replaced by [`REDACTED`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in self.secrets.load().iter() {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        // One lowercase copy tells which markers occur; most records hold none.
        let lower = out.to_ascii_lowercase();
        for marker in MARKERS.iter().filter(|m| lower.contains(**m)) {
            if let Some(replaced) = redact_after(&out, marker) {
                out = Cow::Owned(replaced);
            }
        }
        out
    }
}

/// What precedes a value that is redacted whatever it is (ASCII case-insensitive).
const MARKERS: [&str; 6] = [
    "token=",
    "api_key=",
    "apikey=",
    "password=",
    "secret=",
    "bearer ",
];

/// `text` with the value after each (ASCII case-insensitive) `marker` replaced, up to the next
/// `&`, whitespace, quote, comma or bracket; `None` when there is no marker.
fn redact_after(text: &str, marker: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    lower.find(marker)?;
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    let mut from = 0;
    while let Some(at) = lower[from..].find(marker) {
        let start = from + at + marker.len();
        let end = text[start..]
            .find(|c: char| c == '&' || c.is_whitespace() || "\"',;)]}".contains(c))
            .map_or(text.len(), |e| start + e);
        out.push_str(&text[rest..start]);
        if end > start {
            out.push_str(REDACTED);
        }
        rest = end;
        from = end.max(start);
        if from >= text.len() {
            break;
        }
    }
    out.push_str(&text[rest..]);
    Some(out)
}

/// Whether a field of this name holds a secret whatever its value looks like.
fn secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "token"
            | "api_key"
            | "apikey"
            | "secret"
            | "password"
            | "authorization"
            | "bearer"
            | "cookie"
    ) || ["_token", "_secret", "_password", "api_key", "_credential"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// The layer that feeds the ring.
struct RingLayer;

impl<S: tracing::Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        let ring = ring();
        let level = match *meta.level() {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::TRACE => LogLevel::Trace,
        };
        let fields = visitor
            .fields
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => Value::String(ring.redact(&s).into_owned()),
                    other => other,
                };
                (k, v)
            })
            .collect();
        ring.push(LogRecord {
            ts: crate::util::now_ms(),
            level,
            target: meta.target().to_string(),
            message: ring.redact(&visitor.message).into_owned(),
            fields,
        });
    }
}

/// An event's message and fields, secret-named fields already replaced.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
        } else if secret_field(field.name()) {
            self.fields
                .insert(field.name().to_string(), Value::from(REDACTED));
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> LogRing {
        LogRing {
            records: Mutex::new(VecDeque::new()),
            live: broadcast::channel(8).0,
            secrets: ArcSwap::from_pointee(Vec::new()),
        }
    }

    #[test]
    fn query_tokens_bearer_values_and_known_secrets_are_replaced() {
        let ring = fresh();
        ring.set_secrets(vec!["sk-ant-0123456789".into(), "short".into()]);
        assert_eq!(
            ring.redact("GET /?token=abc123&x=1 HTTP/1.1"),
            "GET /?token=[redacted]&x=1 HTTP/1.1"
        );
        assert_eq!(
            ring.redact("Authorization: Bearer eyJhbGciOi rest"),
            "Authorization: Bearer [redacted] rest"
        );
        assert_eq!(
            ring.redact("key sk-ant-0123456789 used; short stays"),
            "key [redacted] used; short stays"
        );
        assert_eq!(
            ring.redact("TOKEN=x Token=y"),
            "TOKEN=[redacted] Token=[redacted]"
        );
        assert_eq!(ring.redact("nothing here"), "nothing here");
        assert_eq!(ring.redact("token="), "token=");
    }

    #[test]
    fn secret_named_fields_are_recognised() {
        for name in [
            "token",
            "api_key",
            "ANTHROPIC_API_KEY",
            "auth_token",
            "password",
            "authorization",
        ] {
            assert!(secret_field(name), "{name}");
        }
        for name in [
            "key",
            "session_key",
            "sessionKey",
            "idempotency_key",
            "tokens",
            "method",
        ] {
            assert!(!secret_field(name), "{name}");
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_a_tail_continues_live() {
        let ring = fresh();
        let rec = |i: u64| LogRecord {
            ts: i,
            level: LogLevel::Info,
            target: "t".into(),
            message: format!("m{i}"),
            fields: Map::new(),
        };
        for i in 0..(RING_CAPACITY as u64 + 5) {
            ring.push(rec(i));
        }
        let (replay, mut live) = ring.tail(3, |r| r.ts % 2 == 0);
        let ts: Vec<u64> = replay.iter().map(|r| r.ts).collect();
        let last = RING_CAPACITY as u64 + 4;
        assert_eq!(ts, vec![last - 4, last - 2, last]);
        ring.push(rec(7777));
        assert_eq!(live.try_recv().map(|r| r.ts).ok(), Some(7777));
        assert_eq!(
            ring.records.lock().map(|r| r.len()).unwrap_or(0),
            RING_CAPACITY
        );
    }
}
