//! OpenAI-compatible Chat Completions, streaming (OpenAI, Ollama, vLLM, llama.cpp, LM Studio).

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

/// The OpenAI-compatible provider.
pub struct OpenAi {
    base_url: String,
    key_env: String,
    model: String,
    client: reqwest::Client,
}

impl OpenAi {
    /// From `[agent]`: `base_url` ends in the version (`https://api.openai.com/v1`).
    pub fn new(config: &AgentConfig) -> Self {
        Self {
            base_url: config
                .base_url
                .clone()
                .unwrap_or_else(|| "https://api.openai.com/v1".into())
                .trim_end_matches('/')
                .to_string(),
            key_env: config
                .api_key_env
                .clone()
                .unwrap_or_else(|| "OPENAI_API_KEY".into()),
            model: config.model.clone(),
            client: http_client(),
        }
    }

    /// Local servers (Ollama, llama.cpp, ...) need no key.
    fn needs_key(&self) -> bool {
        !(self.base_url.contains("://127.")
            || self.base_url.contains("://localhost")
            || self.base_url.contains("://[::1]"))
    }
}

/// Converts the transcript to Chat Completions messages.
pub fn to_wire(messages: &[TranscriptMessage]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| match m.role {
            Role::System => json!({"role": "system", "content": m.content}),
            Role::User => json!({"role": "user", "content": m.content}),
            Role::Assistant => {
                let mut v = json!({"role": "assistant", "content": m.content});
                if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_empty()) {
                    v["tool_calls"] = json!(calls.iter().map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.input.to_string()}})).collect::<Vec<_>>());
                }
                v
            }
            Role::Tool => json!({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}),
        })
        .collect()
}

#[derive(Default)]
struct Partial {
    id: String,
    name: String,
    args: String,
}

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn ready(&self) -> Result<(), ProviderError> {
        if api_key(&self.key_env).is_none() && self.needs_key() {
            return Err(ProviderError::new(
                ErrorKind::Auth,
                format!(
                    "no API key for the openai provider: set the environment variable {} (or point agent.api_key_env at another)",
                    self.key_env
                ),
                false,
            ));
        }
        Ok(())
    }

    fn models(&self) -> Vec<(String, bool, String)> {
        vec![(
            self.model.clone(),
            true,
            format!("OpenAI-compatible server at {}", self.base_url),
        )]
    }

    fn stream(&self, request: TurnRequest, cancel: CancellationToken) -> ProviderStream {
        let (tx, rx) = mpsc::channel(256);
        let key = api_key(&self.key_env);
        if key.is_none() && self.needs_key() {
            let message = format!(
                "no API key: set the environment variable {} (or agent.api_key_env) for the openai provider",
                self.key_env
            );
            return ProviderStream::new(rx, async move {
                let _ = tx
                    .send(Err(ProviderError::new(ErrorKind::Auth, message, false)))
                    .await;
            });
        }
        let mut messages = to_wire(&request.messages);
        if let Some(system) = &request.system {
            messages.insert(0, json!({"role": "system", "content": system}));
        }
        let mut body = json!({
            "model": request.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": request.max_tokens,
        });
        if !request.tools.is_empty() {
            body["tools"] = json!(request.tools.iter().map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}})).collect::<Vec<_>>());
        }
        let mut http = self
            .client
            .post(format!("{}/chat/completions", self.base_url))
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(body.to_string());
        if let Some(key) = key {
            http = http.bearer_auth(key);
        }
        ProviderStream::new(rx, async move {
            let mut calls: BTreeMap<u64, Partial> = BTreeMap::new();
            let mut finish: Option<String> = None;
            let mut usage: Option<Usage> = None;
            let mut finished = false;
            let mut refused = false;
            let end = run_sse("openai", http, &tx, &cancel, |_event, data, out| {
                let data = data.trim();
                if data == "[DONE]" {
                    finished = true;
                    return Ok(true);
                }
                let v: Value = serde_json::from_str(data).map_err(|e| {
                    ProviderError::new(ErrorKind::Upstream, format!("unparsable chunk: {e}"), false)
                })?;
                if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
                    let message = err["message"]
                        .as_str()
                        .unwrap_or("the provider reported an error");
                    let code = err["code"].as_str().or(err["type"].as_str()).unwrap_or("");
                    let kind = if code.contains("context_length") {
                        ErrorKind::ContextLength
                    } else if code.contains("rate_limit") {
                        ErrorKind::RateLimited
                    } else {
                        ErrorKind::Upstream
                    };
                    let retryable = matches!(kind, ErrorKind::RateLimited)
                        || code.contains("server_error")
                        || code.contains("overloaded");
                    return Err(ProviderError::new(kind, message.to_string(), retryable));
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    usage = Some(Usage {
                        input_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
                        output_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
                        ..Default::default()
                    });
                }
                // `choices` may be absent, null or empty (the usage chunk).
                for choice in v["choices"].as_array().into_iter().flatten() {
                    let delta = &choice["delta"];
                    if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                        out.push(ProviderEvent::Text(text.to_string()));
                    }
                    if let Some(text) = delta["refusal"].as_str().filter(|t| !t.is_empty()) {
                        refused = true;
                        out.push(ProviderEvent::Text(text.to_string()));
                    }
                    for (n, call) in delta["tool_calls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        let index = call["index"].as_u64().unwrap_or(n as u64);
                        let entry = calls.entry(index).or_default();
                        if let Some(id) = call["id"].as_str().filter(|s| !s.is_empty())
                            && entry.id.is_empty()
                        {
                            entry.id = id.to_string();
                        }
                        if let Some(name) =
                            call["function"]["name"].as_str().filter(|s| !s.is_empty())
                            && entry.name.is_empty()
                        {
                            entry.name = name.to_string();
                        }
                        match &call["function"]["arguments"] {
                            Value::String(a) => entry.args.push_str(a),
                            Value::Object(_) => entry
                                .args
                                .push_str(&call["function"]["arguments"].to_string()),
                            _ => {}
                        }
                    }
                    if let Some(reason) = choice["finish_reason"].as_str() {
                        finish = Some(reason.to_string());
                    }
                }
                Ok(false)
            })
            .await;
            if end == SseEnd::Failed || end == SseEnd::Cancelled {
                return;
            }
            if !finished && finish.is_none() {
                let _ = tx
                    .send(Err(ProviderError::new(
                        ErrorKind::StreamCut,
                        "the stream ended before [DONE]",
                        true,
                    )))
                    .await;
                return;
            }
            let truncated = finish.as_deref() == Some("length");
            // Whether there are tool calls is decided by what was collected, not finish_reason.
            for (index, call) in calls {
                let id = if call.id.is_empty() {
                    format!("call_{index}")
                } else {
                    call.id
                };
                let raw = if call.args.trim().is_empty() {
                    "{}"
                } else {
                    call.args.as_str()
                };
                let event = if truncated {
                    ProviderEvent::BrokenToolCall {
                        id,
                        name: call.name,
                        reason: "the turn hit the output limit before its arguments were complete"
                            .into(),
                    }
                } else {
                    match serde_json::from_str::<Value>(raw) {
                        Ok(input) if input.is_object() => ProviderEvent::ToolCall(ToolCall {
                            id,
                            name: call.name,
                            input,
                        }),
                        Ok(_) => ProviderEvent::BrokenToolCall {
                            id,
                            name: call.name,
                            reason: "arguments are not a JSON object".into(),
                        },
                        Err(e) => ProviderEvent::BrokenToolCall {
                            id,
                            name: call.name,
                            reason: format!("arguments are not valid JSON: {e}"),
                        },
                    }
                };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if let Some(u) = usage {
                let _ = tx.send(Ok(ProviderEvent::Usage(u))).await;
            }
            let stop = match finish.as_deref() {
                Some("length") => StopReason::MaxTokens,
                Some("content_filter") => StopReason::Refusal,
                _ if refused => StopReason::Refusal,
                _ => StopReason::EndTurn,
            };
            let _ = tx.send(Ok(ProviderEvent::Stop(stop))).await;
        })
    }
}
