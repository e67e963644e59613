//! Model providers behind one internal stream-event type.
//!
//! A provider turns a [`TurnRequest`] into a channel of [`ProviderEvent`]s: text deltas as they
//! arrive, whole tool calls once their arguments are complete, usage, and one `Stop`. A stream
//! that ends without `Stop` was cut. Errors are typed ([`ProviderError`]) and carry whether a
//! retry may succeed; the agent loop decides when to retry (only before any delta reached a
//! client).

pub mod anthropic;
pub mod echo;
pub mod openai;
pub mod summary;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, ProviderKind};
use crate::protocol::{ToolCall, TranscriptMessage, Usage};

pub use summary::{SummaryRequest, first_words};

/// A tool the model may call.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    /// The tool's name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its input.
    pub input_schema: Value,
}

/// One model call.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    /// The model.
    pub model: String,
    /// The system prompt: instructions, instruction files, injected system messages.
    pub system: Option<String>,
    /// The conversation so far, oldest first (its system messages are in `system`).
    pub messages: Vec<TranscriptMessage>,
    /// Tools offered.
    pub tools: Vec<ToolSpec>,
    /// Output cap.
    pub max_tokens: u32,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// It finished (or wants its tool calls run).
    EndTurn,
    /// It hit the output cap.
    MaxTokens,
    /// It refused.
    Refusal,
}

impl StopReason {
    /// The protocol's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EndTurn => "end_turn",
            Self::MaxTokens => "max_tokens",
            Self::Refusal => "refusal",
        }
    }
}

/// What a provider stream yields.
#[derive(Debug, Clone)]
pub enum ProviderEvent {
    /// New text.
    Text(String),
    /// A tool call whose arguments are complete and valid JSON.
    ToolCall(ToolCall),
    /// A tool call whose arguments are incomplete or invalid: it must not run.
    BrokenToolCall {
        /// Its id.
        id: String,
        /// Its name.
        name: String,
        /// Why it is broken.
        reason: String,
    },
    /// Token counts (may come more than once; the last wins per field).
    Usage(Usage),
    /// The turn ended normally.
    Stop(StopReason),
    /// The provider is alive (an event that carried nothing the loop uses); resets the idle timer.
    Progress,
}

/// `error.kind` values of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Missing or rejected credentials.
    Auth,
    /// Too many requests.
    RateLimited,
    /// Idle or run timeout.
    Timeout,
    /// The context is too long for the model.
    ContextLength,
    /// The stream ended before its terminal event.
    StreamCut,
    /// Anything else the provider reported.
    Upstream,
    /// A bug of ours.
    Internal,
    /// A gateway restart interrupted the run, and it was not resumed.
    Interrupted,
}

impl ErrorKind {
    /// The kind named `name` (as [`Self::as_str`] writes it); `internal` for a name unknown.
    pub fn from_name(name: &str) -> Self {
        [
            Self::Auth,
            Self::RateLimited,
            Self::Timeout,
            Self::ContextLength,
            Self::StreamCut,
            Self::Upstream,
            Self::Interrupted,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
        .unwrap_or(Self::Internal)
    }

    /// The protocol's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::RateLimited => "rate_limited",
            Self::Timeout => "timeout",
            Self::ContextLength => "context_length",
            Self::StreamCut => "stream_cut",
            Self::Upstream => "upstream",
            Self::Internal => "internal",
            Self::Interrupted => "interrupted",
        }
    }
}

/// A provider failure.
#[derive(Debug, Clone)]
pub struct ProviderError {
    /// The kind.
    pub kind: ErrorKind,
    /// What happened, for people.
    pub message: String,
    /// Whether the same request may succeed later.
    pub retryable: bool,
    /// The HTTP status, when there was one.
    pub status: Option<u16>,
    /// How long the provider asked us to wait.
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            kind,
            message: message.into(),
            retryable,
            status: None,
            retry_after: None,
        }
    }

    /// Classifies an HTTP error status and body.
    pub fn from_status(status: u16, body: &str, retry_after: Option<Duration>) -> Self {
        let lower = body.to_ascii_lowercase();
        let (kind, retryable) = match status {
            401 | 403 => (ErrorKind::Auth, false),
            429 => (ErrorKind::RateLimited, true),
            408 => (ErrorKind::Timeout, true),
            400 | 413
                if lower.contains("context_length")
                    || lower.contains("prompt is too long")
                    || lower.contains("maximum context")
                    || lower.contains("too many tokens") =>
            {
                (ErrorKind::ContextLength, false)
            }
            500..=599 => (ErrorKind::Upstream, true),
            _ => (ErrorKind::Upstream, false),
        };
        let detail: String = body.chars().take(500).collect();
        Self {
            kind,
            message: format!("provider answered HTTP {status}: {detail}"),
            retryable,
            status: Some(status),
            retry_after,
        }
    }
}

/// Sends events to the loop; `false` once the loop stopped listening.
pub type EventTx = mpsc::Sender<Result<ProviderEvent, ProviderError>>;

/// A model provider.
pub trait Provider: Send + Sync {
    /// `echo`, `anthropic` or `openai`.
    fn name(&self) -> &'static str;
    /// Starts one model call; events arrive on the returned stream until `Stop`, an error,
    /// or the end of the stream. Cancelling `cancel`, or dropping the stream, ends the call
    /// and its HTTP request.
    fn stream(&self, request: TurnRequest, cancel: CancellationToken) -> ProviderStream;
    /// Starts the summary call of a compaction (no tools; not a turn). By default it is an
    /// ordinary call of the summary prompt ([`SummaryRequest::to_turn`]); the offline `echo`
    /// provider answers it itself.
    fn summarize(&self, request: SummaryRequest, cancel: CancellationToken) -> ProviderStream {
        self.stream(request.to_turn(), cancel)
    }
    /// Models this provider offers: (id, is_default, description).
    fn models(&self) -> Vec<(String, bool, String)>;
    /// Whether a call can be made at all (a missing key is reported on `chat.send`).
    fn ready(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// One model call in progress: the events it decoded, and the future that reads and decodes
/// them, which [`recv`](Self::recv) drives in the caller's own task.
///
/// Driving it in the run's task rather than a task of its own spares every chunk a cross-task
/// hand-off (a wake-up that, on a busy machine, can cost more than decoding the chunk), and
/// dropping the stream ends the call at once.
pub struct ProviderStream {
    rx: mpsc::Receiver<Result<ProviderEvent, ProviderError>>,
    driver: Option<futures::future::BoxFuture<'static, ()>>,
}

impl ProviderStream {
    /// A stream whose events `driver` sends into the channel `rx` receives from.
    pub fn new(
        rx: mpsc::Receiver<Result<ProviderEvent, ProviderError>>,
        driver: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        Self {
            rx,
            driver: Some(Box::pin(driver)),
        }
    }

    /// The next event; `None` once the call is over and everything it sent was received.
    ///
    /// Cancel-safe: the driver is kept across calls and nothing received is lost.
    pub async fn recv(&mut self) -> Option<Result<ProviderEvent, ProviderError>> {
        loop {
            let Some(driver) = self.driver.as_mut() else {
                return self.rx.recv().await;
            };
            tokio::select! {
                biased;
                item = self.rx.recv() => return item,
                () = driver => self.driver = None,
            }
        }
    }
}

/// Builds the provider the configuration names. A missing key is not an error here: it is
/// reported on `chat.send`, so the gateway starts without one.
pub fn build(config: &AgentConfig) -> Arc<dyn Provider> {
    match config.provider {
        ProviderKind::Echo => Arc::new(echo::Echo::new(config.model.clone())),
        ProviderKind::Anthropic => Arc::new(anthropic::Anthropic::new(config)),
        ProviderKind::Openai => Arc::new(openai::OpenAi::new(config)),
    }
}

/// The API key in the environment variable `var`, if set and non-empty.
pub fn api_key(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|k| !k.trim().is_empty())
}

/// The HTTP client (connection pool) every provider shares, built once per process: building
/// one reads and parses the system's CA bundle (about 50 ms), which a start or a reload with
/// several HTTP agents would otherwise pay once per agent.
pub fn http_client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                // A stream silent this long is dead even if the agent's idle timeout is longer.
                .read_timeout(Duration::from_secs(300))
                .build()
                .unwrap_or_else(|_| reqwest::Client::new())
        })
        .clone()
}

/// `Retry-After` in seconds (or the `retry-after-ms` some providers send).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_millis(ms.max(0.0) as u64));
    }
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|s| Duration::from_millis((s.max(0.0) * 1000.0) as u64))
}

/// Bytes of an error response kept for the message: enough for any provider's error JSON,
/// and a misbehaving upstream cannot make the gateway buffer more.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The start of an error response's body, as text (at most [`MAX_ERROR_BODY`] bytes).
async fn error_body(response: reqwest::Response) -> String {
    use futures::StreamExt;
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while body.len() < MAX_ERROR_BODY {
        match chunks.next().await {
            Some(Ok(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    String::from_utf8_lossy(&body).into_owned()
}

/// Sends the request and, on success, feeds each SSE event (name, data) to `on_event`, which
/// pushes what it decoded into the vector it is given; stops when it returns `Ok(true)` (done),
/// the stream ends, or `cancel` fires. Decoded events and errors go to `tx`. The answer's
/// status is counted under `provider` (`clawgate_provider_requests_total`).
pub async fn run_sse(
    provider: &'static str,
    request: reqwest::RequestBuilder,
    tx: &EventTx,
    cancel: &CancellationToken,
    mut on_event: impl FnMut(&str, &str, &mut Vec<ProviderEvent>) -> Result<bool, ProviderError>,
) -> SseEnd {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    let response = tokio::select! {
        _ = cancel.cancelled() => return SseEnd::Cancelled,
        r = request.send() => r,
    };
    let response = match response {
        Ok(r) => r,
        Err(err) => {
            crate::metrics::provider_request(provider, crate::metrics::ProviderStatus::NoAnswer);
            let kind = if err.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Upstream
            };
            let _ = tx
                .send(Err(ProviderError::new(
                    kind,
                    format!("cannot reach the provider: {err}"),
                    true,
                )))
                .await;
            return SseEnd::Failed;
        }
    };
    let status = response.status().as_u16();
    crate::metrics::provider_request(provider, crate::metrics::ProviderStatus::Http(status));
    if !(200..300).contains(&status) {
        let after = retry_after(response.headers());
        let body = tokio::select! {
            _ = cancel.cancelled() => return SseEnd::Cancelled,
            b = error_body(response) => b,
        };
        let _ = tx
            .send(Err(ProviderError::from_status(status, &body, after)))
            .await;
        return SseEnd::Failed;
    }
    let mut events = response.bytes_stream().eventsource();
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return SseEnd::Cancelled,
            n = events.next() => n,
        };
        match next {
            None => return SseEnd::Eof,
            Some(Err(err)) => {
                let _ = tx
                    .send(Err(ProviderError::new(
                        ErrorKind::StreamCut,
                        format!("the stream broke: {err}"),
                        true,
                    )))
                    .await;
                return SseEnd::Failed;
            }
            Some(Ok(event)) => {
                let mut out = Vec::new();
                let result = on_event(&event.event, &event.data, &mut out);
                if out.is_empty() && matches!(result, Ok(false)) {
                    out.push(ProviderEvent::Progress);
                }
                for item in out {
                    if tx.send(Ok(item)).await.is_err() {
                        return SseEnd::Cancelled;
                    }
                }
                match result {
                    Ok(true) => return SseEnd::Done,
                    Ok(false) => {}
                    Err(err) => {
                        let _ = tx.send(Err(err)).await;
                        return SseEnd::Failed;
                    }
                }
            }
        }
    }
}

/// How an SSE exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseEnd {
    /// The handler saw the terminal event.
    Done,
    /// The stream ended without it.
    Eof,
    /// An error was sent.
    Failed,
    /// Cancelled.
    Cancelled,
}
