//! The offline, deterministic stand-in provider: no key, no network.
//!
//! It streams "Echo: <your message>" in several deltas. A message of the form
//! `/tool NAME {json}` makes it call tool NAME with that input, then answer with the result,
//! so the whole agent loop can be shown and tested without a model; `/system` answers with
//! exactly the system prompt it was given. A summary call (compaction) answers
//! `Summary of N messages: ` and the first words of each ([`first_words`]).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    Provider, ProviderEvent, ProviderStream, StopReason, SummaryRequest, TurnRequest, first_words,
};
use crate::protocol::{Role, ToolCall, Usage};

/// The echo provider.
pub struct Echo {
    model: String,
}

impl Echo {
    /// An echo provider answering as `model`.
    pub fn new(model: String) -> Self {
        Self { model }
    }
}

/// What echo says to a conversation: text, or a tool call.
fn reply(request: &TurnRequest) -> Result<(String, Option<ToolCall>), String> {
    let Some(last) = request.messages.last() else {
        return Ok(("Echo: (nothing to echo)".into(), None));
    };
    if last.role == Role::Tool {
        let name = request
            .messages
            .iter()
            .rev()
            .find_map(|m| {
                m.tool_calls.as_ref().and_then(|calls| {
                    calls
                        .iter()
                        .find(|c| Some(&c.id) == last.tool_call_id.as_ref())
                        .map(|c| c.name.clone())
                })
            })
            .unwrap_or_else(|| "tool".into());
        let verdict = if last.is_error == Some(true) {
            "failed"
        } else {
            "returned"
        };
        return Ok((format!("Tool {name} {verdict}: {}", last.content), None));
    }
    let text = last.content.trim();
    if text == "/system" {
        // Exactly the system prompt it was given, so a test can see it.
        return Ok((
            request
                .system
                .clone()
                .unwrap_or_else(|| "(no system prompt)".into()),
            None,
        ));
    }
    if let Some(rest) = text.strip_prefix("/tool ") {
        let rest = rest.trim();
        let (name, input) = match rest.split_once(char::is_whitespace) {
            Some((name, json)) => (name, json.trim()),
            None => (rest, "{}"),
        };
        let input: serde_json::Value = serde_json::from_str(input)
            .map_err(|e| format!("`/tool {name}` needs a JSON object after the name: {e}"))?;
        let id = format!("call_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        return Ok((
            format!("Calling {name}."),
            Some(ToolCall {
                id,
                name: name.to_string(),
                input,
            }),
        ));
    }
    Ok((format!("Echo: {text}"), None))
}

/// Splits text into a few chunks on character boundaries.
fn chunks(text: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(parts.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

impl Provider for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn models(&self) -> Vec<(String, bool, String)> {
        vec![(
            self.model.clone(),
            true,
            "offline stand-in: echoes your message, `/tool NAME {json}` calls a tool; no key, no network".into(),
        )]
    }

    fn summarize(&self, request: SummaryRequest, cancel: CancellationToken) -> ProviderStream {
        crate::metrics::provider_request("echo", crate::metrics::ProviderStatus::Offline);
        let (tx, rx) = mpsc::channel(4);
        ProviderStream::new(rx, async move {
            if cancel.is_cancelled() {
                return;
            }
            let text = first_words(&request.messages);
            let words = |t: &str| t.split_whitespace().count() as u64;
            let usage = Usage {
                input_tokens: request.messages.iter().map(|m| words(&m.content)).sum(),
                output_tokens: words(&text),
                ..Default::default()
            };
            for event in [
                ProviderEvent::Text(text),
                ProviderEvent::Usage(usage),
                ProviderEvent::Stop(StopReason::EndTurn),
            ] {
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        })
    }

    fn stream(&self, request: TurnRequest, cancel: CancellationToken) -> ProviderStream {
        crate::metrics::provider_request("echo", crate::metrics::ProviderStatus::Offline);
        let (tx, rx) = mpsc::channel(64);
        ProviderStream::new(rx, async move {
            let (text, call) = match reply(&request) {
                Ok(r) => r,
                Err(message) => (message, None),
            };
            for part in chunks(&text, 4) {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(15)) => {}
                }
                if tx.send(Ok(ProviderEvent::Text(part))).await.is_err() {
                    return;
                }
            }
            if let Some(call) = call {
                let _ = tx.send(Ok(ProviderEvent::ToolCall(call))).await;
            }
            let input_tokens = request
                .messages
                .iter()
                .map(|m| m.content.split_whitespace().count() as u64)
                .sum();
            let output_tokens = text.split_whitespace().count() as u64;
            let _ = tx
                .send(Ok(ProviderEvent::Usage(Usage {
                    input_tokens,
                    output_tokens,
                    ..Default::default()
                })))
                .await;
            let _ = tx.send(Ok(ProviderEvent::Stop(StopReason::EndTurn))).await;
        })
    }
}
