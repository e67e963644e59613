//! The `chat.*` methods that read and write transcripts without running the model.

use serde_json::json;

use crate::agent::{AgentError, SendRequest};
use crate::error::{Error, Result, code};
use crate::events::Filter;
use crate::gateway::{Ctx as CallContext, Table as MethodTable};
use crate::protocol::Event;
use crate::protocol::{
    ChatAbortParams, ChatAbortResult, ChatSendParams, ChatSendResult, EventEnvelope,
};
use crate::protocol::{
    ChatEvent, ChatHistoryParams, ChatHistoryResult, ChatInjectParams, ChatInjectResult,
    InjectRole, Label, MAX_LABEL_CHARS, Role,
};
use crate::protocol::{RunOutcome, RunStatus, SessionKey};
use crate::rpc::table::BoxFuture;
use crate::rpc::{
    DuplicateMethod, Example, Method, Scope, Subscription, SubscriptionSink, SubscriptionTask,
};
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
            ], "compactions": []}),
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

/// `chat.send`.
pub struct Send;
impl Method for Send {
    const NAME: &'static str = "chat.send";
    const SCOPE: Scope = Scope::Write;
    const SUMMARY: &'static str =
        "Hands a message to the agent; answers at once, the run streams `chat` events.";
    const ERRORS: &'static [i32] = &[code::UPSTREAM, code::UNAVAILABLE];
    type Params = ChatSendParams;
    type Result = ChatSendResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "send",
            params: json!({"sessionKey": "main", "message": "Summarize my notes", "idempotencyKey": "msg-0042"}),
            result: json!({"runId": "9b2f0c1e4d5a4b3c8e7f6a5b4c3d2e1f", "sessionKey": "main", "status": "started"}),
        }]
    }
}

/// `chat.stream`.
pub struct Stream;
impl Subscription for Stream {
    const NAME: &'static str = "chat.stream";
    const UNSUBSCRIBE: &'static str = "chat.unstream";
    const NOTIFICATION: &'static str = "chat.event";
    const SCOPE: Scope = Scope::Write;
    const SUMMARY: &'static str =
        "Sends like chat.send, then streams that run's chat envelopes until its terminal payload.";
    const ERRORS: &'static [i32] = &[code::UPSTREAM, code::WEBSOCKET_REQUIRED];
    type Params = ChatSendParams;
    type Item = EventEnvelope;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "stream",
            params: json!({"message": "Hello"}),
            result: json!("7a1c9e0b2d3f4a5b"),
        }]
    }
}

/// `chat.abort`.
pub struct Abort;
impl Method for Abort {
    const NAME: &'static str = "chat.abort";
    const SCOPE: Scope = Scope::Write;
    const SUMMARY: &'static str =
        "Aborts a run (and, with sessionKey, drops that session's queued runs).";
    const ERRORS: &'static [i32] = &[code::NOT_FOUND];
    type Params = ChatAbortParams;
    type Result = ChatAbortResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "abort",
            params: json!({"runId": "9b2f0c1e4d5a4b3c8e7f6a5b4c3d2e1f"}),
            result: json!({"aborted": ["9b2f0c1e4d5a4b3c8e7f6a5b4c3d2e1f"]}),
        }]
    }
}

/// Starts a send (its params are checked types); shared by `chat.send` and `chat.stream`.
async fn send(ctx: &CallContext, p: ChatSendParams) -> Result<ChatSendResult> {
    let session_key = String::from(p.session_key.unwrap_or_else(SessionKey::main));
    let agent = ctx.gateway.agent();
    let agent_id = agent.agent_for(ctx.gateway.as_ref(), &session_key, p.agent.as_deref())?;
    let provider = agent
        .provider(&agent_id)
        .ok_or_else(|| AgentError::NoSuchAgent(agent_id.clone()))?;
    if let Err(err) = provider.ready() {
        return Err(Error::Upstream {
            message: err.message,
            kind: err.kind.as_str().into(),
            status: err.status,
        });
    }
    let outcome = agent
        .send(
            &ctx.gateway,
            SendRequest {
                session_key: session_key.clone(),
                message: p.message.into(),
                idempotency_key: p.idempotency_key.map(String::from),
                model: p.model.map(String::from),
                agent: p.agent.map(String::from),
            },
        )
        .await?;
    Ok(ChatSendResult {
        run_id: outcome.run_id,
        session_key,
        status: outcome.status,
        outcome: outcome.outcome,
    })
}

fn stream(ctx: CallContext, p: ChatSendParams) -> BoxFuture<Result<SubscriptionTask>> {
    Box::pin(async move {
        let session_key = String::from(p.session_key.clone().unwrap_or_else(SessionKey::main));
        // Subscribe before sending, so no payload of the run can be missed.
        let filter = Filter::new(
            Some(&[ChatEvent::NAME.to_string()]),
            Some(session_key.clone()),
        )
        .map_err(|_| Error::internal("chat filter"))?;
        let mut sub = ctx
            .gateway
            .hub()
            .subscribe(filter, None, None)
            .map_err(|e| Error::internal(e.to_string()))?;
        let result = send(&ctx, p).await?;
        // This run's events only, ending with its last one.
        sub.only_run(&result.run_id);
        let gateway = ctx.gateway.clone();
        let run_id = result.run_id.clone();
        let done = (result.status == RunStatus::Done).then(|| {
            let terminal = gateway.agent().run_info(&run_id).and_then(|(_, t)| t);
            (terminal, result.outcome.unwrap_or(RunOutcome::Aborted))
        });
        if let Some((terminal, outcome)) = done {
            // A resend of a finished key gets the terminal payload alone; after a restart only
            // its outcome is known. Nothing else of the session is wanted.
            drop(sub);
            let task: SubscriptionTask = Box::new(move |sink: SubscriptionSink| {
                Box::pin(async move {
                    let _ = match terminal {
                        Some(env) => sink.send_raw(&env.json).await,
                        None => {
                            let json =
                                synthesized_terminal(&gateway, &session_key, &run_id, outcome);
                            sink.send_raw(&json).await
                        }
                    };
                })
            });
            return Ok(task);
        }
        let task: SubscriptionTask =
            Box::new(move |sink: SubscriptionSink| Box::pin(super::events::pump(sub, sink)));
        Ok(task)
    })
}

/// A terminal envelope for a run known only by its outcome (finished before a restart).
fn synthesized_terminal(
    gw: &crate::gateway::Gateway,
    session_key: &str,
    run_id: &str,
    outcome: RunOutcome,
) -> String {
    let payload = ChatEvent {
        run_id: Some(run_id.to_string()),
        session_key: session_key.to_string(),
        state: outcome.as_str().into(),
        ..Default::default()
    };
    serde_json::json!({
        "epoch": gw.hub().epoch(),
        "seq": gw.hub().seq(),
        "event": ChatEvent::NAME,
        "ts": crate::util::now_ms(),
        "sessionKey": session_key,
        "payload": payload,
    })
    .to_string()
}

/// Registers the `chat.*` methods.
pub fn register(table: &mut MethodTable) -> Result<(), DuplicateMethod> {
    table.method::<Send, _, _>(|ctx: CallContext, p: ChatSendParams| async move {
        send(&ctx, p).await
    })?;
    table.subscription::<Stream, _, _>(stream)?;
    table.method::<Abort, _, _>(|ctx: CallContext, p: ChatAbortParams| async move {
        if p.run_id.is_none() && p.session_key.is_none() {
            return Err(Error::invalid_params(
                "",
                "expected runId, sessionKey, or both",
            ));
        }
        let aborted = ctx
            .gateway
            .agent()
            .abort(&ctx.gateway, p.run_id.as_deref(), p.session_key.as_deref())
            .await?;
        Ok(ChatAbortResult { aborted })
    })?;
    table.method::<HistoryMethod, _, _>(|ctx: CallContext, p: ChatHistoryParams| async move {
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
            session_key: p.session_key.into(),
            session_id: history.session_id,
            messages: history.messages,
            has_more: history.has_more,
            compactions: history.compactions,
        })
    })?;
    table.method::<Inject, _, _>(|ctx: CallContext, p: ChatInjectParams| async move {
        // The label's rule is `Label`'s; this method's message has always lacked the count.
        let label = p.label.map(Label::new).transpose().map_err(|_| {
            Error::invalid_params(
                "label",
                format!("expected at most {MAX_LABEL_CHARS} characters"),
            )
        })?;
        let store = ctx.gateway.store();
        let agent = ctx.gateway.agent().agent_for(
            ctx.gateway.as_ref(),
            &p.session_key,
            p.agent.as_deref(),
        )?;
        store.ensure(&p.session_key, &agent).await?;
        // Never between a tool call and its result.
        let _boundary = store.hold_boundary(&p.session_key).await;
        let role = match p.role {
            InjectRole::Assistant => Role::Assistant,
            InjectRole::System => Role::System,
        };
        let mut new = NewMessage::new(role, p.content);
        new.message.label = label.map(String::from);
        let written = store.append(&p.session_key, vec![new]).await?;
        let Some(message) = written.into_iter().next() else {
            return Err(Error::internal("nothing was written"));
        };
        ctx.gateway.hub().emit(
            Some(&p.session_key),
            &ChatEvent {
                session_key: p.session_key.to_string(),
                state: "injected".into(),
                message: Some(message.clone()),
                ..Default::default()
            },
        );
        store.publish_updated(&p.session_key);
        Ok(ChatInjectResult {
            message_id: message.id,
        })
    })?;
    Ok(())
}
