//! Reading a `POST /v1/chat/completions` body: the model, the messages (content as a string or
//! an array of text parts), `stream` and `stream_options.include_usage`; every other field is
//! accepted and ignored. A bad body is refused with what was wrong and where.

use serde_json::Value;

use super::errors::ApiError;
use crate::protocol::{MessageText, Role};

/// The prefix of the door's model names.
pub const MODEL_PREFIX: &str = "clawgate/";

/// A chat completion request, checked.
#[derive(Debug)]
pub struct ChatRequest {
    /// The agent the model names.
    pub agent: String,
    /// The user message to send (the last one of the request).
    pub prompt: MessageText,
    /// The messages before it (for an ephemeral session), oldest first.
    pub earlier: Vec<(Role, String)>,
    /// Server-sent events rather than one answer.
    pub stream: bool,
    /// A last chunk with `usage` (streaming only).
    pub include_usage: bool,
}

/// The agent id a model name gives: `clawgate/<agentId>` or the bare id.
pub fn agent_of(model: &str) -> &str {
    model.strip_prefix(MODEL_PREFIX).unwrap_or(model)
}

/// Parses and checks `body`; `known` says whether an agent id is configured.
pub fn parse(body: &[u8], known: impl Fn(&str) -> bool) -> Result<ChatRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            "",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Some(obj) = value.as_object() else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "",
            "expected a JSON object with `model` and `messages`",
        ));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.as_str(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_type",
                "model",
                "`model` must be a string: `clawgate/<agentId>`",
            ));
        }
        None => {
            return Err(ApiError::bad_request(
                "missing_model",
                "model",
                "`model` is required: `clawgate/<agentId>` (GET /v1/models lists them)",
            ));
        }
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_type",
                "stream",
                "`stream` must be true or false",
            ));
        }
    };
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_type",
                    "stream_options.include_usage",
                    "`stream_options.include_usage` must be true or false",
                ));
            }
        },
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_type",
                "stream_options",
                "`stream_options` must be an object",
            ));
        }
    };
    let messages = match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(ApiError::bad_request(
                "missing_messages",
                "messages",
                "`messages` is required: a non-empty array ending with a user message",
            ));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_type",
                "messages",
                "`messages` must be an array",
            ));
        }
    };
    let mut all = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        all.push(message(i, m)?);
    }
    let Some(last_user) = all.iter().rposition(|(role, _)| *role == Role::User) else {
        return Err(ApiError::bad_request(
            "no_user_message",
            "messages",
            "`messages` holds no user message: the last user message is what the agent answers",
        ));
    };
    if last_user + 1 != all.len() {
        return Err(ApiError::bad_request(
            "invalid_value",
            format!("messages[{}]", last_user + 1),
            "the last message must be the user's: the agent answers it (messages after it would be dropped)",
        ));
    }
    let agent = agent_of(model);
    if !known(agent) {
        return Err(ApiError::unknown_model(model));
    }
    let (_, text) = all.pop().unwrap_or((Role::User, String::new()));
    let prompt = MessageText::new(text).map_err(|e| {
        ApiError::bad_request(
            "invalid_value",
            format!("messages[{last_user}].content"),
            e.to_string(),
        )
    })?;
    Ok(ChatRequest {
        agent: agent.to_string(),
        prompt,
        earlier: all,
        stream,
        include_usage,
    })
}

/// The role and text of `messages[i]`.
fn message(i: usize, m: &Value) -> Result<(Role, String), ApiError> {
    let at = |field: &str| format!("messages[{i}]{field}");
    let Some(obj) = m.as_object() else {
        return Err(ApiError::bad_request(
            "invalid_type",
            at(""),
            "each message must be an object with `role` and `content`",
        ));
    };
    let role = match obj.get("role").and_then(Value::as_str) {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("system") | Some("developer") => Role::System,
        Some(other @ ("tool" | "function")) => {
            return Err(ApiError::bad_request(
                "unsupported_role",
                at(".role"),
                format!(
                    "role `{other}` is not supported: the agent's own tools run inside the gateway and client tools are not offered"
                ),
            ));
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_value",
                at(".role"),
                format!("unknown role `{other}`: expected system, developer, user or assistant"),
            ));
        }
        None => {
            return Err(ApiError::bad_request(
                "invalid_value",
                at(".role"),
                "each message needs a `role`: system, developer, user or assistant",
            ));
        }
    };
    if obj.get("tool_calls").is_some_and(|t| !t.is_null()) {
        return Err(ApiError::bad_request(
            "unsupported_tool_calls",
            at(".tool_calls"),
            "tool_calls are not supported: the agent's own tools run inside the gateway",
        ));
    }
    let text = match obj.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(t);
                    }
                    (Some("text"), None) => {
                        return Err(ApiError::bad_request(
                            "invalid_value",
                            at(&format!(".content[{j}].text")),
                            "a text part needs `text`, a string",
                        ));
                    }
                    (other, _) => {
                        return Err(ApiError::bad_request(
                            "unsupported_content",
                            at(&format!(".content[{j}].type")),
                            format!(
                                "content part type {} is not supported: only text parts",
                                other.map_or("(missing)".to_string(), |t| format!("`{t}`"))
                            ),
                        ));
                    }
                }
            }
            text
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_value",
                at(".content"),
                "`content` must be a string or an array of text parts",
            ));
        }
    };
    Ok((role, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(body: &str) -> Result<ChatRequest, ApiError> {
        parse(body.as_bytes(), |id| id == "main")
    }

    #[test]
    fn a_request_gives_its_agent_prompt_and_earlier_messages() {
        let req = parse_str(
            r#"{"model":"clawgate/main","stream":true,"stream_options":{"include_usage":true},"temperature":0.2,
               "messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},
               {"role":"assistant","content":"Hello"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
        )
        .expect("parses");
        assert_eq!(req.agent, "main");
        assert_eq!(req.prompt.as_str(), "a\nb");
        assert!(req.stream && req.include_usage);
        assert_eq!(
            req.earlier,
            vec![
                (Role::System, "Be brief.".to_string()),
                (Role::User, "Hi".to_string()),
                (Role::Assistant, "Hello".to_string())
            ]
        );
        let bare = parse_str(r#"{"model":"main","messages":[{"role":"user","content":"x"}]}"#)
            .expect("a bare agent id");
        assert!(!bare.stream && !bare.include_usage);
    }

    #[test]
    fn bad_bodies_say_what_and_where() {
        let cases = [
            ("{", "invalid_json", 400),
            (r#"{"model":"main"}"#, "missing_messages", 400),
            (
                r#"{"messages":[{"role":"user","content":"x"}]}"#,
                "missing_model",
                400,
            ),
            (
                r#"{"model":"main","messages":[{"role":"system","content":"x"}]}"#,
                "no_user_message",
                400,
            ),
            (
                r#"{"model":"main","messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}]}"#,
                "invalid_value",
                400,
            ),
            (
                r#"{"model":"main","messages":[{"role":"tool","content":"x"}]}"#,
                "unsupported_role",
                400,
            ),
            (
                r#"{"model":"main","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
                "unsupported_content",
                400,
            ),
            (
                r#"{"model":"main","messages":[{"role":"user","content":"  "}]}"#,
                "invalid_value",
                400,
            ),
            (
                r#"{"model":"clawgate/nope","messages":[{"role":"user","content":"x"}]}"#,
                "model_not_found",
                404,
            ),
        ];
        for (body, code, status) in cases {
            let err = parse_str(body).expect_err(body);
            assert_eq!(err.code, code, "{body}: {}", err.message);
            assert_eq!(err.status.as_u16(), status, "{body}");
        }
    }
}
