//! The `chat.*` methods that read and write transcripts without running the model.

use serde_json::json;

use crate::agent::SendRequest;
use crate::error::{Error, Result, code};
use crate::events::Filter;
use crate::gateway::{Ctx as CallContext, Table as MethodTable};
use crate::protocol::Event;
use crate::protocol::{
    ChatAbortParams, ChatAbortResult, ChatSendParams, ChatSendResult, ChatStreamParams,
    EventEnvelope,
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

/// How often an inject waiting for a message boundary looks whether the run now waits for a
/// person (it is then answered at once).
const INJECT_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);

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
    const SUMMARY: &'static str = "Sends like chat.send (or, with runId alone, joins that run), then streams that run's chat envelopes until its terminal payload.";
    const ERRORS: &'static [i32] = &[code::UPSTREAM, code::WEBSOCKET_REQUIRED, code::NOT_FOUND];
    type Params = ChatStreamParams;
    type Item = EventEnvelope;
    fn examples() -> Vec<Example> {
        vec![
            Example {
                name: "stream",
                params: json!({"message": "Hello"}),
                result: json!("7a1c9e0b2d3f4a5b"),
            },
            Example {
                name: "rejoin",
                params: json!({"runId": "9b2f0c1e4d5a4b3c8e7f6a5b4c3d2e1f"}),
                result: json!("8b2d0f1c3e4a5b6c"),
            },
        ]
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
    if ctx.gateway.store().is_ephemeral(&session_key) {
        // Its one request's run owns it, and it is removed once that run is over.
        return Err(Error::Conflict(format!(
            "the session `{session_key}` is ephemeral (one request of the OpenAI door): send to another session"
        )));
    }
    let outcome = ctx
        .gateway
        .agent()
        .start(
            &ctx.gateway,
            SendRequest {
                session_key: session_key.clone(),
                message: p.message.into(),
                idempotency_key: p.idempotency_key.map(String::from),
                model: p.model.map(String::from),
                agent: p.agent.map(String::from),
                mode: p.mode.unwrap_or_default(),
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

/// The send a `chat.stream` asks for, or the run it rejoins (`runId` alone).
enum StreamTarget {
    Send(ChatSendParams),
    Join(String),
}

fn stream_target(p: ChatStreamParams) -> Result<StreamTarget> {
    match (p.run_id, p.message) {
        (Some(run_id), None) => {
            let extra = [
                ("sessionKey", p.session_key.is_some()),
                ("idempotencyKey", p.idempotency_key.is_some()),
                ("model", p.model.is_some()),
                ("agent", p.agent.is_some()),
                ("mode", p.mode.is_some()),
            ];
            match extra.iter().find(|(_, set)| *set) {
                Some((name, _)) => Err(Error::invalid_params(
                    *name,
                    "runId joins a run: give it alone",
                )),
                None => Ok(StreamTarget::Join(run_id)),
            }
        }
        (Some(_), Some(_)) => Err(Error::invalid_params(
            "runId",
            "give either message (to send) or runId (to join a run), not both",
        )),
        (None, Some(message)) => Ok(StreamTarget::Send(ChatSendParams {
            session_key: p.session_key,
            message,
            idempotency_key: p.idempotency_key,
            model: p.model,
            agent: p.agent,
            mode: p.mode,
        })),
        (None, None) => Err(Error::invalid_params(
            "message",
            "expected a message to send, or runId to join a run",
        )),
    }
}

fn stream(ctx: CallContext, p: ChatStreamParams) -> BoxFuture<Result<SubscriptionTask>> {
    Box::pin(async move {
        let p = match stream_target(p)? {
            StreamTarget::Send(p) => p,
            StreamTarget::Join(run_id) => return join(&ctx, run_id),
        };
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
        // Cluster mode: sent by the session's owner; its events reach this node's hub.
        let params = serde_json::to_string(&p).map_err(|e| Error::internal(e.to_string()))?;
        let result = match ctx
            .gateway
            .call_elsewhere("chat.send", &params, ctx.scope)
            .await
        {
            Some(answer) => serde_json::from_value::<ChatSendResult>(answer?)
                .map_err(|e| Error::internal(format!("chat.send on another node: {e}")))?,
            None => send(&ctx, p).await?,
        };
        // This run's events only, ending with its last one.
        sub.only_run(&result.run_id);
        if result.status == RunStatus::Done {
            // A resend of a finished key gets the terminal payload alone.
            drop(sub);
            let outcome = result.outcome.unwrap_or(RunOutcome::Aborted);
            return Ok(terminal_only(&ctx, session_key, result.run_id, outcome));
        }
        let task: SubscriptionTask =
            Box::new(move |sink: SubscriptionSink| Box::pin(super::events::pump(sub, sink)));
        Ok(task)
    })
}

/// `chat.stream {runId}`: that run's next payloads, or its terminal payload alone when done.
fn join(ctx: &CallContext, run_id: String) -> Result<SubscriptionTask> {
    let gateway = &ctx.gateway;
    let entry = gateway.agent().run_get(gateway.as_ref(), &run_id)?;
    if entry.state != crate::protocol::RunPhase::Done {
        let filter = Filter::new(
            Some(&[ChatEvent::NAME.to_string()]),
            Some(entry.session_key.clone()),
        )
        .map_err(|_| Error::internal("chat filter"))?;
        let mut sub = gateway
            .hub()
            .subscribe(filter, None, None)
            .map_err(|e| Error::internal(e.to_string()))?;
        sub.only_run(&run_id);
        // Subscribed first: if it ended meanwhile, its terminal payload is all there is.
        if !gateway
            .agent()
            .run_info(&run_id)
            .is_some_and(|(done, _)| done)
        {
            let task: SubscriptionTask =
                Box::new(move |sink: SubscriptionSink| Box::pin(super::events::pump(sub, sink)));
            return Ok(task);
        }
    }
    let outcome = match gateway.agent().run_get(gateway.as_ref(), &run_id)?.outcome {
        Some(outcome) => outcome,
        None => RunOutcome::Aborted,
    };
    Ok(terminal_only(ctx, entry.session_key, run_id, outcome))
}

/// A subscription that sends a finished run's terminal payload and nothing else; after a
/// restart only its outcome is known, and the payload says just that.
fn terminal_only(
    ctx: &CallContext,
    session_key: String,
    run_id: String,
    outcome: RunOutcome,
) -> SubscriptionTask {
    let gateway = ctx.gateway.clone();
    let terminal = gateway.agent().run_info(&run_id).and_then(|(_, t)| t);
    Box::new(move |sink: SubscriptionSink| {
        Box::pin(async move {
            let _ = match terminal {
                Some(env) => sink.send_raw(&env.json).await,
                None => {
                    let json = synthesized_terminal(&gateway, &session_key, &run_id, outcome);
                    sink.send_raw(&json).await
                }
            };
        })
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
        "epoch": &*gw.hub().epoch(),
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
        let role = match p.role {
            InjectRole::Assistant => Role::Assistant,
            InjectRole::System => Role::System,
        };
        let mut new = NewMessage::new(role, p.content);
        new.message.label = label.map(String::from);
        // Never between a tool call and its result; but while a run waits for a person it is
        // answered at once and written after that turn's results (looked at again while the
        // boundary is busy, since a run may begin to wait meanwhile).
        let _boundary = loop {
            if let Some(message) = ctx
                .gateway
                .agent()
                .defer_inject(&p.session_key, new.message.clone())
            {
                return Ok(ChatInjectResult {
                    message_id: message.id,
                });
            }
            let boundary = store.hold_boundary(&p.session_key);
            if let Ok(guard) = tokio::time::timeout(INJECT_RECHECK, boundary).await {
                break guard;
            }
        };
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
