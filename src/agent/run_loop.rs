//! The agent loop of one run: write the user message, then stream a turn, write the assistant
//! message, run its tool calls and write their results, until the model stops calling tools,
//! `agent.max_turns` is reached, the run is aborted or it passes `agent.run_timeout_ms`. Each
//! turn is sent the latest summary and the messages kept after it, compacted first when needed
//! (`compaction`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, Config};
use crate::events::Envelope;
use crate::protocol::{
    ChatEvent, MessageError, Role, RunOutcome, ToolCall, TranscriptMessage, Usage,
};
use crate::store::{NewMessage, Store};

use super::compaction::{CompactError, Compacted, Compactor, is_overflow};
use super::emit::{Emitter, error_event};
use super::instructions;
use super::output::cut_output;
use super::providers::{ErrorKind, Provider, ProviderError, TurnRequest};
use super::state::SendRequest;
use super::tool_call::{call_tool, write_aborted_results};
use super::tools::{self, Tool, ToolContext, ToolOutput};
use super::turn::{TurnEnd, stream_turn};

/// What the loop needs from the application that hosts the agent; every
/// [`AgentHost`](super::AgentHost) is one.
pub(super) trait LoopHost: Send + Sync + 'static {
    /// The session store.
    fn store(&self) -> &Arc<Store>;
    /// The configuration in force (read anew where the loop reads it).
    fn config(&self) -> Arc<Config>;
    /// The provider of the agent `agent` now (a run keeps the one it started with).
    fn provider(&self, agent: &str) -> Option<Arc<dyn Provider>>;
    /// The tools offered to `agent`'s model now (built-in, plugins', its MCP servers').
    fn tools(&self, agent: &AgentConfig) -> Arc<Vec<Arc<dyn Tool>>>;
    /// The data directory (the file tools refuse it).
    fn data_dir(&self) -> &PathBuf;
    /// The config file (the file tools refuse it).
    fn config_path(&self) -> &PathBuf;
}

/// The agent a run started with: it keeps them to its end.
pub(super) struct RunAgent {
    /// The agent's id.
    pub(super) id: String,
    /// Its configuration when the run started.
    pub(super) config: AgentConfig,
    /// Its provider when the run started.
    pub(super) provider: Arc<dyn Provider>,
}

/// One run, start to terminal payload. Returns the outcome and the terminal envelope.
pub(super) async fn run<G: LoopHost>(
    gw: &Arc<G>,
    emitter: &Emitter,
    request: SendRequest,
    cancel: CancellationToken,
    aborted: Arc<AtomicBool>,
) -> (RunOutcome, Option<Arc<Envelope>>) {
    let config = gw.config();
    let agent_id = request
        .agent
        .clone()
        .unwrap_or_else(|| config.default_agent_id().to_string());
    // The run keeps this agent's configuration and provider to its end, whatever a reload does.
    let (Some(agent_cfg), Some(provider)) = (config.agent(&agent_id), gw.provider(&agent_id))
    else {
        let error = ProviderError::new(
            ErrorKind::Internal,
            format!("the agent `{agent_id}` is no longer configured"),
            false,
        );
        return (RunOutcome::Error, error_event(emitter, &error));
    };
    let agent = RunAgent {
        id: agent_id.clone(),
        config: agent_cfg.clone(),
        provider,
    };
    let agent_cfg = &agent.config;
    let store = gw.store();
    let key = request.session_key.clone();
    let session_model = store.get(&key).ok().and_then(|s| s.model);
    let model = request
        .model
        .clone()
        .or(session_model)
        .unwrap_or_else(|| agent_cfg.model.clone());
    let timed_out = Arc::new(AtomicBool::new(false));
    let timer = {
        let (cancel, timed_out) = (cancel.clone(), timed_out.clone());
        let limit = Duration::from_millis(agent_cfg.run_timeout_ms);
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            timed_out.store(true, Ordering::Release);
            cancel.cancel();
        })
    };
    let result = run_loop(
        gw, emitter, &request, &agent, &model, &cancel, &aborted, &timed_out,
    )
    .await;
    timer.abort();
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_loop<G: LoopHost>(
    gw: &Arc<G>,
    emitter: &Emitter,
    request: &SendRequest,
    agent: &RunAgent,
    model: &str,
    cancel: &CancellationToken,
    aborted: &AtomicBool,
    timed_out: &AtomicBool,
) -> (RunOutcome, Option<Arc<Envelope>>) {
    let agent_cfg = &agent.config;
    let provider = &agent.provider;
    let store = gw.store();
    let key = &request.session_key;
    let run_id = emitter.run_id().to_string();
    // How a cancellation ends the run: aborted, or the run timeout.
    let stopped = |partial: String| -> (RunOutcome, Option<Arc<Envelope>>) {
        if timed_out.load(Ordering::Acquire) && !aborted.load(Ordering::Acquire) {
            let error = ProviderError::new(
                ErrorKind::Timeout,
                format!(
                    "the run passed agent.run_timeout_ms ({} ms)",
                    agent_cfg.run_timeout_ms
                ),
                true,
            );
            return (RunOutcome::Error, error_event(emitter, &error));
        }
        let partial = (!partial.is_empty()).then_some(partial);
        (
            RunOutcome::Aborted,
            emitter.emit(ChatEvent {
                partial_text: partial,
                ..emitter.base("aborted")
            }),
        )
    };
    if cancel.is_cancelled() {
        return stopped(String::new());
    }
    // Every message of the run goes to this transcript, even if the session is reset meanwhile.
    let session_id = match store.get(key) {
        Ok(s) => s.session_id,
        Err(_) => {
            let error = ProviderError::new(ErrorKind::Internal, "the session is gone", false);
            return (RunOutcome::Error, error_event(emitter, &error));
        }
    };
    let sid = Some(session_id.as_str());
    let mut user = NewMessage::new(Role::User, request.message.clone());
    user.message.run_id = Some(run_id.clone());
    user.message.idempotency_key = request.idempotency_key.clone();
    let written = {
        let _boundary = store.hold_boundary(key).await;
        store.append_to(key, sid, vec![user]).await
    };
    let user_message = match written.map(|mut w| w.pop()) {
        Ok(Some(m)) => m,
        Err(crate::store::StoreError::Storage(why)) => {
            // The disk is full or out of descriptors: retrying later can succeed.
            let error = ProviderError::new(
                ErrorKind::Internal,
                format!("cannot write the user message: storage unavailable: {why}"),
                true,
            );
            return (RunOutcome::Error, error_event(emitter, &error));
        }
        Ok(None) | Err(_) => {
            let error =
                ProviderError::new(ErrorKind::Internal, "cannot write the user message", false);
            return (RunOutcome::Error, error_event(emitter, &error));
        }
    };
    emitter.emit(ChatEvent {
        model: Some(model.to_string()),
        agent_id: Some(agent.id.clone()),
        user_message: Some(user_message),
        ..emitter.base("started")
    });
    let tool_list = gw.tools(agent_cfg);
    let specs = tool_list.iter().map(|t| t.spec()).collect::<Vec<_>>();
    let workspace = agent_cfg
        .workspace
        .clone()
        .unwrap_or_else(|| gw.data_dir().join("workspace"));
    let _ = tokio::fs::create_dir_all(&workspace).await;
    let protected = Arc::new(tools::Protected {
        data_dir: gw.data_dir().clone(),
        config_file: gw.config_path().clone(),
    });
    // Read once per run: an edit of an instruction file applies to the next run.
    let instruction_files = {
        let (agent_cfg, workspace, protected) =
            (agent_cfg.clone(), workspace.clone(), protected.clone());
        tokio::task::spawn_blocking(move || {
            instructions::read_files(&agent_cfg, &workspace, &protected)
        })
        .await
        .unwrap_or_default()
    };
    let mut total = Usage::default();
    let mut any_usage = false;
    let mut last_assistant: Option<TranscriptMessage> = None;
    let compactor = Compactor::new(store, provider, agent_cfg, model, key, sid, cancel);
    let compaction_stop = |e: CompactError| match e {
        CompactError::Cancelled => stopped(String::new()),
        CompactError::Store(e) => {
            let error = ProviderError::new(
                ErrorKind::Internal,
                format!("cannot read the context: {e}"),
                false,
            );
            (RunOutcome::Error, error_event(emitter, &error))
        }
        CompactError::Summary(error) => (RunOutcome::Error, error_event(emitter, &error)),
    };
    for turn in 0..agent_cfg.max_turns {
        // The latest summary, then the kept messages; compacted first past the threshold.
        let compacted = |c: &Compacted| {
            emitter.emit(c.payload(ChatEvent {
                turn: Some(turn),
                ..emitter.base("compacted")
            }));
        };
        let mut context = match compactor.before_call(&compacted).await {
            Ok(c) => c,
            Err(e) => return compaction_stop(e),
        };
        // A `context_length` error compacts and retries once.
        let mut overflowed = false;
        let end = loop {
            let system = instructions::system_prompt(
                agent_cfg.instructions.as_deref(),
                &instruction_files,
                &context,
            );
            let turn_request = TurnRequest {
                model: model.to_string(),
                system,
                messages: context
                    .iter()
                    .filter(|m| m.role != Role::System)
                    .cloned()
                    .collect(),
                tools: specs.clone(),
                max_tokens: agent_cfg.max_output_tokens,
            };
            let end = stream_turn(
                provider,
                &turn_request,
                emitter,
                turn,
                cancel,
                Duration::from_millis(agent_cfg.delta_interval_ms),
                Duration::from_millis(agent_cfg.idle_timeout_ms.max(1)),
            )
            .await;
            if overflowed || !is_overflow(&end) {
                break end;
            }
            overflowed = true;
            match compactor.after_overflow(&compacted).await {
                Ok(Some(c)) => context = c,
                Ok(None) => break end,
                Err(e) => return compaction_stop(e),
            }
        };
        let mut assistant = NewMessage::new(Role::Assistant, String::new());
        assistant.message.run_id = Some(run_id.clone());
        assistant.message.model = Some(model.to_string());
        let (text, calls, broken, usage, stop) = match end {
            TurnEnd::Done {
                text,
                calls,
                broken,
                usage,
                stop,
            } => (text, calls, broken, usage, stop),
            TurnEnd::Stopped { partial } => {
                let timed_out_now =
                    timed_out.load(Ordering::Acquire) && !aborted.load(Ordering::Acquire);
                if timed_out_now {
                    // A run timeout is an error: the transcript says so, even without text.
                    assistant.message.content = partial.clone();
                    assistant.message.error = Some(MessageError {
                        kind: ErrorKind::Timeout.as_str().into(),
                        message: "the run passed agent.run_timeout_ms".into(),
                    });
                    let _ = store.append_to(key, sid, vec![assistant]).await;
                } else if !partial.is_empty() {
                    assistant.message.content = partial.clone();
                    assistant.message.aborted = Some(true);
                    let _ = store.append_to(key, sid, vec![assistant]).await;
                }
                return stopped(partial);
            }
            TurnEnd::Failed { error, partial } => {
                // Written even without text: the transcript records how the run ended (history
                // shows the error; a repeated idempotency key after a restart answers `error`).
                assistant.message.content = partial;
                assistant.message.error = Some(MessageError {
                    kind: error.kind.as_str().into(),
                    message: error.message.clone(),
                });
                let _ = store.append_to(key, sid, vec![assistant]).await;
                return (RunOutcome::Error, error_event(emitter, &error));
            }
        };
        if let Some(u) = usage {
            total.input_tokens += u.input_tokens;
            total.output_tokens += u.output_tokens;
            total.cache_read_tokens += u.cache_read_tokens;
            total.cache_write_tokens += u.cache_write_tokens;
            any_usage = true;
        }
        let mut all_calls: Vec<ToolCall> = calls.clone();
        all_calls.extend(broken.iter().map(|(c, _)| c.clone()));
        assistant.message.content = text;
        assistant.message.usage = usage;
        assistant.message.stop_reason = Some(
            if all_calls.is_empty() {
                stop.as_str()
            } else {
                "tool_use"
            }
            .to_string(),
        );
        if !all_calls.is_empty() {
            assistant.message.tool_calls = Some(all_calls.clone());
        }
        // From the call to its last result, nothing may come between.
        let boundary = store.hold_boundary(key).await;
        let message = match store
            .append(key, vec![assistant])
            .await
            .map(|mut w| w.pop())
        {
            Ok(Some(m)) => m,
            _ => {
                let error = ProviderError::new(
                    ErrorKind::Internal,
                    "cannot write the assistant message",
                    false,
                );
                return (RunOutcome::Error, error_event(emitter, &error));
            }
        };
        if all_calls.is_empty() {
            drop(boundary);
            let env = emitter.emit(ChatEvent {
                message: Some(message),
                usage: any_usage.then_some(total),
                stop_reason: Some(stop.as_str().into()),
                ..emitter.base("final")
            });
            return (RunOutcome::Final, env);
        }
        let ctx = ToolContext {
            workspace: workspace.clone(),
            cancel: cancel.child_token(),
            exec: agent_cfg.tools.exec,
            protected: protected.clone(),
        };
        for (i, call) in all_calls.iter().enumerate() {
            if cancel.is_cancelled() {
                write_aborted_results(store, key, sid, &run_id, &all_calls[i..]).await;
                drop(boundary);
                return stopped(String::new());
            }
            emitter.emit(ChatEvent {
                turn: Some(turn),
                tool_call_id: Some(call.id.clone()),
                name: Some(call.name.clone()),
                input: Some(call.input.clone()),
                ..emitter.base("tool_start")
            });
            let (output, stopped_meanwhile) = match broken.iter().find(|(b, _)| b.id == call.id) {
                Some((_, reason)) => (
                    ToolOutput {
                        content: format!("not run: {reason}"),
                        is_error: true,
                    },
                    false,
                ),
                None => match tool_list.iter().find(|t| t.spec().name == call.name) {
                    None => (
                        ToolOutput {
                            content: format!("unknown tool `{}`", call.name),
                            is_error: true,
                        },
                        false,
                    ),
                    Some(tool) => call_tool(tool.as_ref(), &call.input, &ctx, cancel).await,
                },
            };
            let content = cut_output(output.content);
            let mut result = NewMessage::new(Role::Tool, content.clone());
            result.message.tool_call_id = Some(call.id.clone());
            result.message.is_error = Some(output.is_error);
            result.message.run_id = Some(run_id.clone());
            if stopped_meanwhile {
                // Typed, so readers need not parse the text.
                result.message.aborted = Some(true);
            }
            if store.append_to(key, sid, vec![result]).await.is_err() {
                let error =
                    ProviderError::new(ErrorKind::Internal, "cannot write a tool result", false);
                return (RunOutcome::Error, error_event(emitter, &error));
            }
            emitter.emit(ChatEvent {
                turn: Some(turn),
                tool_call_id: Some(call.id.clone()),
                name: Some(call.name.clone()),
                output: Some(content),
                is_error: Some(output.is_error),
                ..emitter.base("tool_end")
            });
        }
        drop(boundary);
        if cancel.is_cancelled() {
            return stopped(String::new());
        }
        last_assistant = Some(message);
    }
    let env = emitter.emit(ChatEvent {
        message: last_assistant,
        usage: any_usage.then_some(total),
        stop_reason: Some("max_turns".into()),
        ..emitter.base("final")
    });
    (RunOutcome::Final, env)
}
