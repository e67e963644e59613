//! One model turn, streamed: the provider's events become coalesced `delta` payloads, and a
//! failed call is retried with jittered backoff as long as no delta reached a client.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::protocol::{ChatEvent, ToolCall, Usage};

use super::emit::Emitter;
use super::providers::{
    ErrorKind, Provider, ProviderError, ProviderEvent, StopReason, TurnRequest,
};

/// Retries of a failed model call (before any delta reached a client).
const MAX_RETRIES: u32 = 4;

/// How a streamed turn ended.
pub(super) enum TurnEnd {
    /// The model stopped: its text, its complete tool calls, the calls whose arguments were
    /// cut (with why), its usage and why it stopped.
    Done {
        text: String,
        calls: Vec<ToolCall>,
        broken: Vec<(ToolCall, String)>,
        usage: Option<Usage>,
        stop: StopReason,
    },
    /// The run was cancelled; `partial` is the text streamed so far.
    Stopped { partial: String },
    /// The call failed for good; `partial` is the text streamed so far.
    Failed {
        error: ProviderError,
        partial: String,
    },
}

fn jitter_ms(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    if max == 0 { 0 } else { nanos % max }
}

/// Streams one model call with retries, emitting coalesced deltas.
#[allow(clippy::too_many_arguments)]
pub(super) async fn stream_turn(
    provider: &Arc<dyn Provider>,
    request: &TurnRequest,
    emitter: &Emitter,
    turn: u32,
    cancel: &CancellationToken,
    delta_interval: Duration,
    idle_timeout: Duration,
) -> TurnEnd {
    let mut attempt = 0u32;
    loop {
        // Dropping the stream (however this attempt ends) ends its HTTP request.
        let mut rx = provider.stream(request.clone(), cancel.child_token());
        let mut text = String::new();
        let mut pending = String::new();
        let mut flushed = false;
        let mut calls = Vec::new();
        let mut broken = Vec::new();
        let mut usage: Option<Usage> = None;
        let mut ticker = tokio::time::interval(delta_interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let flush = |pending: &mut String, flushed: &mut bool| {
            if !pending.is_empty() {
                emitter.emit(ChatEvent {
                    turn: Some(turn),
                    text: Some(std::mem::take(pending)),
                    ..emitter.base("delta")
                });
                *flushed = true;
            }
        };
        let error = loop {
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    flush(&mut pending, &mut flushed);
                    return TurnEnd::Stopped { partial: text };
                }
                _ = ticker.tick(), if !pending.is_empty() => {
                    flush(&mut pending, &mut flushed);
                    continue;
                }
                next = tokio::time::timeout(idle_timeout, rx.recv()) => next,
            };
            match next {
                Err(_) => {
                    break ProviderError::new(
                        ErrorKind::Timeout,
                        format!(
                            "the provider sent nothing for {} ms (agent.idle_timeout_ms)",
                            idle_timeout.as_millis()
                        ),
                        true,
                    );
                }
                Ok(None) => {
                    break ProviderError::new(
                        ErrorKind::StreamCut,
                        "the provider stream ended before the turn was complete",
                        true,
                    );
                }
                Ok(Some(Err(e))) => break e,
                Ok(Some(Ok(event))) => match event {
                    ProviderEvent::Text(t) => {
                        text.push_str(&t);
                        pending.push_str(&t);
                    }
                    ProviderEvent::ToolCall(c) => calls.push(c),
                    ProviderEvent::BrokenToolCall { id, name, reason } => broken.push((
                        ToolCall {
                            id,
                            name,
                            input: serde_json::json!({}),
                        },
                        reason,
                    )),
                    ProviderEvent::Usage(u) => usage = Some(u),
                    ProviderEvent::Progress => {}
                    ProviderEvent::Stop(stop) => {
                        flush(&mut pending, &mut flushed);
                        return TurnEnd::Done {
                            text,
                            calls,
                            broken,
                            usage,
                            stop,
                        };
                    }
                },
            }
        };
        let retry = matches!(
            error.kind,
            ErrorKind::RateLimited | ErrorKind::Upstream | ErrorKind::StreamCut
        ) && error.retryable
            && !flushed
            && attempt < MAX_RETRIES;
        if !retry {
            flush(&mut pending, &mut flushed);
            return TurnEnd::Failed {
                error,
                partial: text,
            };
        }
        let backoff = 250u64.saturating_mul(1 << attempt);
        let wait = Duration::from_millis(backoff / 2 + jitter_ms(backoff / 2 + 1));
        let wait = error
            .retry_after
            .map_or(wait, |ra| ra.max(wait))
            .min(Duration::from_secs(60));
        tracing::info!(
            kind = error.kind.as_str(),
            attempt,
            wait_ms = wait.as_millis() as u64,
            "retrying the model call"
        );
        tokio::select! {
            _ = cancel.cancelled() => return TurnEnd::Stopped { partial: String::new() },
            _ = tokio::time::sleep(wait) => {}
        }
        attempt += 1;
    }
}
