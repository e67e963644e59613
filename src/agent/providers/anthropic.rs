//! Anthropic Messages API, streaming, with tool use.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    ErrorKind, Provider, ProviderError, ProviderEvent, ProviderStream, SseEnd, StopReason,
    TurnRequest, api_key, http_client, run_sse,
};
use crate::config::AgentConfig;
use crate::protocol::{Role, ToolCall, TranscriptMessage, Usage};

/// The Anthropic provider.
pub struct Anthropic {
    base_url: String,
    key_env: String,
    model: String,
    client: reqwest::Client,
}

impl Anthropic {
    /// From `[agent]`: `base_url` is the host (`https://api.anthropic.com`).
    pub fn new(config: &AgentConfig) -> Self {
        Self {
            base_url: config
                .base_url
                .clone()
                .unwrap_or_else(|| "https://api.anthropic.com".into())
                .trim_end_matches('/')
                .to_string(),
            key_env: config
                .api_key_env
                .clone()
                .unwrap_or_else(|| "ANTHROPIC_API_KEY".into()),
            model: config.model.clone(),
            client: http_client(),
        }
    }
}

/// Converts the transcript to Anthropic's `system` and alternating `messages`.
pub fn to_wire(messages: &[TranscriptMessage]) -> (Option<String>, Vec<Value>) {
    let mut system: Vec<&str> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    let mut push = |role: &str, block: Value| {
        if let Some(last) = out.last_mut()
            && last["role"] == role
            && let Some(blocks) = last["content"].as_array_mut()
        {
            blocks.push(block);
            return;
        }
        out.push(json!({"role": role, "content": [block]}));
    };
    for m in messages {
        match m.role {
            Role::System => system.push(&m.content),
            Role::User => push("user", json!({"type": "text", "text": m.content})),
            Role::Assistant => {
                if !m.content.is_empty() {
                    push("assistant", json!({"type": "text", "text": m.content}));
                }
                for call in m.tool_calls.iter().flatten() {
                    push(
                        "assistant",
                        json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}),
                    );
                }
            }
            Role::Tool => push(
                "user",
                json!({"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content, "is_error": m.is_error.unwrap_or(false)}),
            ),
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    (system, out)
}

#[derive(Default)]
struct Block {
    id: String,
    name: String,
    json: String,
    is_tool: bool,
}

impl Provider for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn ready(&self) -> Result<(), ProviderError> {
        if api_key(&self.key_env).is_none() {
            return Err(ProviderError::new(
                ErrorKind::Auth,
                format!(
                    "no API key for the anthropic provider: set the environment variable {} (or point agent.api_key_env at another)",
                    self.key_env
                ),
                false,
            ));
        }
        Ok(())
    }

    fn models(&self) -> Vec<(String, bool, String)> {
        vec![(self.model.clone(), true, "Anthropic Messages API".into())]
    }

    fn stream(&self, request: TurnRequest, cancel: CancellationToken) -> ProviderStream {
        let (tx, rx) = mpsc::channel(256);
        let Some(key) = api_key(&self.key_env) else {
            let message = format!(
                "no API key: set the environment variable {} (or agent.api_key_env) for the anthropic provider",
                self.key_env
            );
            return ProviderStream::new(rx, async move {
                let _ = tx
                    .send(Err(ProviderError::new(ErrorKind::Auth, message, false)))
                    .await;
            });
        };
        let (injected, messages) = to_wire(&request.messages);
        // The run puts the whole system prompt in `request.system`; a system message left in
        // the messages (none, from the run loop) still reaches the model after it.
        let system = match (request.system.clone(), injected) {
            (Some(a), Some(b)) => Some(format!("{a}\n\n{b}")),
            (a, b) => a.or(b),
        };
        let mut body = json!({
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": messages,
            "stream": true,
        });
        if let Some(system) = system {
            body["system"] = json!(system);
        }
        if !request.tools.is_empty() {
            body["tools"] = json!(request.tools.iter().map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema})).collect::<Vec<_>>());
        }
        let http = self
            .client
            .post(format!("{}/v1/messages", self.base_url))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(body.to_string());
        ProviderStream::new(rx, async move {
            let mut blocks: BTreeMap<u64, Block> = BTreeMap::new();
            let mut usage = Usage::default();
            let mut stop: Option<StopReason> = None;
            let end = run_sse("anthropic", http, &tx, &cancel, |event, data, out| {
                if event == "ping" {
                    return Ok(false);
                }
                let v: Value = serde_json::from_str(data).map_err(|e| {
                    ProviderError::new(
                        ErrorKind::Upstream,
                        format!("unparsable event {event}: {e}"),
                        false,
                    )
                })?;
                let kind = v["type"].as_str().unwrap_or(event);
                match kind {
                    "message_start" => {
                        usage.input_tokens =
                            v["message"]["usage"]["input_tokens"].as_u64().unwrap_or(0);
                        usage.output_tokens =
                            v["message"]["usage"]["output_tokens"].as_u64().unwrap_or(0);
                        // Anthropic counts cached input apart from `input_tokens`.
                        usage.cache_read_tokens = v["message"]["usage"]["cache_read_input_tokens"]
                            .as_u64()
                            .unwrap_or(0);
                        usage.cache_write_tokens =
                            v["message"]["usage"]["cache_creation_input_tokens"]
                                .as_u64()
                                .unwrap_or(0);
                    }
                    "content_block_start" => {
                        let index = v["index"].as_u64().unwrap_or(0);
                        let block = &v["content_block"];
                        if block["type"] == "tool_use" {
                            blocks.insert(
                                index,
                                Block {
                                    id: block["id"].as_str().unwrap_or("").to_string(),
                                    name: block["name"].as_str().unwrap_or("").to_string(),
                                    json: String::new(),
                                    is_tool: true,
                                },
                            );
                        } else {
                            if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                                out.push(ProviderEvent::Text(text.to_string()));
                            }
                            blocks.insert(index, Block::default());
                        }
                    }
                    "content_block_delta" => {
                        let index = v["index"].as_u64().unwrap_or(0);
                        let delta = &v["delta"];
                        match delta["type"].as_str() {
                            Some("text_delta") => {
                                if let Some(text) = delta["text"].as_str() {
                                    out.push(ProviderEvent::Text(text.to_string()));
                                }
                            }
                            Some("input_json_delta") => {
                                if let Some(block) = blocks.get_mut(&index) {
                                    block
                                        .json
                                        .push_str(delta["partial_json"].as_str().unwrap_or(""));
                                }
                            }
                            _ => {}
                        }
                    }
                    "content_block_stop" => {
                        let index = v["index"].as_u64().unwrap_or(0);
                        if let Some(block) = blocks.remove(&index)
                            && block.is_tool
                        {
                            let raw = if block.json.trim().is_empty() {
                                "{}"
                            } else {
                                block.json.as_str()
                            };
                            match serde_json::from_str::<Value>(raw) {
                                Ok(input) => out.push(ProviderEvent::ToolCall(ToolCall {
                                    id: block.id,
                                    name: block.name,
                                    input,
                                })),
                                Err(e) => out.push(ProviderEvent::BrokenToolCall {
                                    id: block.id,
                                    name: block.name,
                                    reason: format!("arguments are not valid JSON: {e}"),
                                }),
                            }
                        }
                    }
                    "message_delta" => {
                        if let Some(n) = v["usage"]["output_tokens"].as_u64() {
                            usage.output_tokens = n;
                        }
                        if let Some(n) = v["usage"]["input_tokens"].as_u64() {
                            usage.input_tokens = n;
                        }
                        if let Some(n) = v["usage"]["cache_read_input_tokens"].as_u64() {
                            usage.cache_read_tokens = n;
                        }
                        if let Some(n) = v["usage"]["cache_creation_input_tokens"].as_u64() {
                            usage.cache_write_tokens = n;
                        }
                        stop = match v["delta"]["stop_reason"].as_str() {
                            Some("max_tokens") => Some(StopReason::MaxTokens),
                            Some("refusal") => Some(StopReason::Refusal),
                            Some(_) => Some(StopReason::EndTurn),
                            None => stop,
                        };
                    }
                    "message_stop" => {
                        // Tool blocks still open were cut off: they never run.
                        for (_, block) in std::mem::take(&mut blocks) {
                            if block.is_tool {
                                out.push(ProviderEvent::BrokenToolCall {
                                    id: block.id,
                                    name: block.name,
                                    reason: "the turn ended before its arguments were complete"
                                        .into(),
                                });
                            }
                        }
                        out.push(ProviderEvent::Usage(usage));
                        out.push(ProviderEvent::Stop(stop.unwrap_or(StopReason::EndTurn)));
                        return Ok(true);
                    }
                    "error" => {
                        let etype = v["error"]["type"].as_str().unwrap_or("error");
                        let message = v["error"]["message"]
                            .as_str()
                            .unwrap_or("the provider reported an error");
                        let (kind, retryable) = match etype {
                            "overloaded_error" | "api_error" => (ErrorKind::Upstream, true),
                            "rate_limit_error" => (ErrorKind::RateLimited, true),
                            "authentication_error" | "permission_error" => (ErrorKind::Auth, false),
                            "invalid_request_error" if message.contains("too long") => {
                                (ErrorKind::ContextLength, false)
                            }
                            _ => (ErrorKind::Upstream, false),
                        };
                        return Err(ProviderError::new(
                            kind,
                            format!("{etype}: {message}"),
                            retryable,
                        ));
                    }
                    _ => {}
                }
                Ok(false)
            })
            .await;
            if end == SseEnd::Eof {
                let _ = tx
                    .send(Err(ProviderError::new(
                        ErrorKind::StreamCut,
                        "the stream ended before message_stop",
                        true,
                    )))
                    .await;
            }
        })
    }
}
