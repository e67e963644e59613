//! The `chat.*` methods that read and write transcripts without running the model.

use serde::Serialize;
use serde_json::json;

use crate::error::{Error, Result, code};
use crate::protocol::{
    ChatHistoryParams, ChatHistoryResult, ChatInjectParams, ChatInjectResult, InjectRole,
    MAX_CONTENT_BYTES, MAX_LABEL_CHARS, Role, TranscriptMessage, validate_session_key,
};
use crate::rpc::{CallContext, DuplicateMethod, Example, Method, MethodTable, Scope};
use crate::store::NewMessage;

/// `chat.history`.
pub struct HistoryMethod;
impl Method for HistoryMethod {
    const NAME: &'static str = "chat.history";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str =
        "The newest messages of a session before beforeId (or the end), oldest first.";
    const ERRORS: &'static [i32] = &[code::NOT_FOUND];
    type Params = ChatHistoryParams;
    type Result = ChatHistoryResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "last two",
            params: json!({"sessionKey": "main", "limit": 2}),
            result: json!({"sessionKey": "main", "sessionId": "0f8c2a6e4b5d4c3e9a1b2c3d4e5f6a7b", "hasMore": true, "messages": [
                {"id": "a1", "parentId": "a0", "ts": 1767225600000u64, "role": "user", "content": "What is on today?"},
                {"id": "a2", "parentId": "a1", "ts": 1767225601000u64, "role": "assistant", "content": "Two meetings.", "model": "echo"}
            ]}),
        }]
    }
}

/// `chat.inject`.
pub struct Inject;
impl Method for Inject {
    const NAME: &'static str = "chat.inject";
    const SCOPE: Scope = Scope::Write;
    const SUMMARY: &'static str =
        "Appends an assistant or system message without running the model.";
    type Params = ChatInjectParams;
    type Result = ChatInjectResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "note",
            params: json!({"sessionKey": "main", "role": "system", "content": "The user is travelling this week.", "label": "context"}),
            result: json!({"messageId": "5e0b9c1d2f3a4b5c6d7e8f9a0b1c2d3e"}),
        }]
    }
}

/// The `chat` payload of an injected message.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InjectedPayload<'a> {
    session_key: &'a str,
    state: &'static str,
    message: &'a TranscriptMessage,
}

/// Registers `chat.history` and `chat.inject`.
pub fn register(table: &mut MethodTable) -> Result<(), DuplicateMethod> {
    table.method::<HistoryMethod, _, _>(|ctx: CallContext, p: ChatHistoryParams| async move {
        validate_session_key(&p.session_key).map_err(|m| Error::invalid_params("sessionKey", m))?;
        let limit = p.limit.unwrap_or(50);
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid_params(
                "limit",
                format!("expected 1 to 1000, found {limit}"),
            ));
        }
        // Leave room for the envelope around the messages.
        let max = ctx
            .gateway
            .config()
            .gateway
            .max_payload_bytes
            .saturating_sub(4096);
        let history = ctx
            .gateway
            .store()
            .history(&p.session_key, limit as usize, p.before_id, max)
            .await?;
        Ok(ChatHistoryResult {
            session_key: p.session_key,
            session_id: history.session_id,
            messages: history.messages,
            has_more: history.has_more,
        })
    })?;
    table.method::<Inject, _, _>(|ctx: CallContext, p: ChatInjectParams| async move {
        validate_session_key(&p.session_key).map_err(|m| Error::invalid_params("sessionKey", m))?;
        if p.content.trim().is_empty() {
            return Err(Error::invalid_params(
                "content",
                "expected non-empty text, found only whitespace",
            ));
        }
        if p.content.len() > MAX_CONTENT_BYTES {
            return Err(Error::invalid_params(
                "content",
                format!(
                    "expected at most {MAX_CONTENT_BYTES} bytes, found {}",
                    p.content.len()
                ),
            ));
        }
        if let Some(label) = &p.label
            && label.chars().count() > MAX_LABEL_CHARS
        {
            return Err(Error::invalid_params(
                "label",
                format!("expected at most {MAX_LABEL_CHARS} characters"),
            ));
        }
        let store = ctx.gateway.store();
        store.ensure(&p.session_key).await?;
        let role = match p.role {
            InjectRole::Assistant => Role::Assistant,
            InjectRole::System => Role::System,
        };
        let mut new = NewMessage::new(role, p.content);
        new.message.label = p.label;
        let written = store.append(&p.session_key, vec![new]).await?;
        let Some(message) = written.into_iter().next() else {
            return Err(Error::internal("nothing was written"));
        };
        ctx.gateway.hub().publish(
            "chat",
            Some(&p.session_key),
            &InjectedPayload {
                session_key: &p.session_key,
                state: "injected",
                message: &message,
            },
        );
        store.publish_updated(&p.session_key);
        Ok(ChatInjectResult {
            message_id: message.id,
        })
    })?;
    Ok(())
}
