//! The agent loop of one run: write its `started` marker and user message (or, resuming after
//! a restart, read where it was), then stream a turn, write the assistant message, run its tool
//! calls (asking a person first where the agent says so) and write their results, until the
//! model stops calling tools, `agent.max_turns` is reached, the run is stopped or it passes
//! `agent.run_timeout_ms`; then write its end marker and publish its terminal payload. Messages
//! steered into the run are written at its message boundaries. Each turn is sent the latest
//! summary and the messages kept after it, compacted first when needed (`compaction`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::config::{AgentConfig, Config};
use crate::events::Envelope;
use crate::protocol::{
    ChatEvent, MessageError, Role, RunOutcome, ToolCall, TranscriptMessage, Usage,
};
use crate::store::transcript::{RunMarker, RunMarkerState};
use crate::store::{NewMessage, Record, RunTrail, Store, StoreError, UsageCall};

use super::approvals::Approvals;
use super::compaction::{Caller, CompactError, Compacted, Compactor, is_overflow};
use super::emit::{Emitter, error_event};
use super::instructions;
use super::providers::{ErrorKind, Provider, ProviderError, TurnRequest};
use super::state::{RunCtl, SendRequest, Steer};
mod tool_call;

use super::tools::Tool;
use super::turn::{TurnEnd, stream_turn};
use tool_call::{Calls, ToolSetup};

/// What the loop needs from the application that hosts the agent; every
/// [`AgentHost`](super::AgentHost) is one.
pub(super) trait LoopHost: Send + Sync + 'static {
    /// The session store.
    fn store(&self) -> &Arc<Store>;
    /// The configuration in force (read anew where the loop reads it).
    fn config(&self) -> Arc<Config>;
    /// The provider of the agent `agent` now (a run keeps the one it started with).
    fn provider(&self, agent: &str) -> Option<Arc<dyn Provider>>;
    /// The tools offered to `agent`'s model now (built-in, plugins', its MCP servers'), those
    /// its `tools.deny` names left out.
    fn tools(&self, agent: &AgentConfig) -> Arc<Vec<Arc<dyn Tool>>>;
    /// The approvals of every run.
    fn approvals(&self) -> &Approvals;
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

/// What a run is handed when its lane starts it.
pub(super) struct RunInput {
    pub(super) request: SendRequest,
    /// Resuming after a restart: the attempt (1 for the first).
    pub(super) resume: Option<u32>,
    /// Told once its first lines are on disk (`chat.send` answers after that).
    pub(super) written: Option<oneshot::Sender<()>>,
    /// Resuming is refused (why): it ends `error {kind: "interrupted"}` at once.
    pub(super) fail: Option<String>,
}

/// How a run came to its end.
pub(super) enum RunEnd {
    /// Its terminal payload was published; steered messages it never read are handed back
    /// (they start runs of their own, except after an abort).
    Ended {
        outcome: RunOutcome,
        terminal: Option<Arc<Envelope>>,
        leftover: Vec<Steer>,
    },
    /// Suspended by a shutdown, with no terminal payload: the next start resumes it.
    Suspended,
}

/// How the loop stopped, before its end is written and published.
pub(super) enum Ending {
    Final {
        message: Option<Box<TranscriptMessage>>,
        usage: Option<Usage>,
        stop: String,
    },
    /// Cancelled: aborted, suspended or past the run timeout (told apart at the end).
    Stopped {
        partial: String,
    },
    Failed(ProviderError),
}

impl Ending {
    /// A failure of ours (`internal`) saying `message`.
    pub(super) fn internal(message: impl Into<String>) -> Self {
        Self::Failed(ProviderError::new(ErrorKind::Internal, message, false))
    }

    /// Stopped between two steps (no partial text).
    pub(super) fn stopped() -> Self {
        Self::Stopped {
            partial: String::new(),
        }
    }
}

/// How long a resumed run waits for the tools its pending calls name to be offered again.
const RESUME_TOOLS_WAIT: Duration = Duration::from_secs(10);

/// One run in progress: what every step of it reads.
pub(super) struct Run<'a, G: LoopHost> {
    pub(super) gw: &'a Arc<G>,
    pub(super) emitter: &'a Emitter,
    pub(super) ctl: &'a RunCtl,
    pub(super) agent: RunAgent,
    pub(super) model: String,
    pub(super) key: String,
    pub(super) run_id: String,
    /// The transcript every line of the run goes to, even if the session is reset meanwhile.
    pub(super) session_id: String,
    timed_out: Arc<AtomicBool>,
}

/// One run, start to end.
pub(super) async fn run<G: LoopHost>(
    gw: &Arc<G>,
    emitter: &Emitter,
    input: RunInput,
    ctl: Arc<RunCtl>,
) -> RunEnd {
    let config = gw.config();
    let request = &input.request;
    let agent_id = request
        .agent
        .clone()
        .unwrap_or_else(|| config.default_agent_id().to_string());
    let key = request.session_key.clone();
    let resuming = input.resume.is_some();
    let failed_early = async |error: ProviderError| {
        if resuming {
            // Its `started` marker is on disk: the end must be too, or it resumes forever.
            let marker = RunMarker {
                error: Some(MessageError {
                    kind: error.kind.as_str().into(),
                    message: error.message.clone(),
                }),
                ..RunMarker::new(emitter.run_id(), RunMarkerState::Error)
            };
            if let Err(err) = gw
                .store()
                .append_records(&key, None, vec![Record::Run(marker)])
                .await
            {
                tracing::error!(run = %emitter.run_id(), %err, "cannot write the run's end marker");
            }
        }
        let _ = ctl.outcome.set(RunOutcome::Error);
        let terminal = error_event(emitter, &error);
        RunEnd::Ended {
            outcome: RunOutcome::Error,
            terminal,
            leftover: Vec::new(),
        }
    };
    // The run keeps this agent's configuration and provider to its end, whatever a reload does.
    let (Some(agent_cfg), Some(provider)) = (config.agent(&agent_id), gw.provider(&agent_id))
    else {
        let why = format!("the agent `{agent_id}` is no longer configured");
        return failed_early(match input.fail.as_deref() {
            Some(fail) => interrupted(fail),
            None => ProviderError::new(ErrorKind::Internal, why, false),
        })
        .await;
    };
    let Ok(session) = gw.store().get(&key) else {
        return failed_early(ProviderError::new(
            ErrorKind::Internal,
            "the session is gone",
            false,
        ))
        .await;
    };
    let model = request
        .model
        .clone()
        .or(session.model)
        .unwrap_or_else(|| agent_cfg.model.clone());
    let run = Run {
        gw,
        emitter,
        ctl: &ctl,
        agent: RunAgent {
            id: agent_id,
            config: agent_cfg.clone(),
            provider,
        },
        model,
        key,
        run_id: emitter.run_id().to_string(),
        session_id: session.session_id,
        timed_out: Arc::new(AtomicBool::new(false)),
    };
    let timer = tokio::spawn(run_timer(
        ctl.clone(),
        Duration::from_millis(agent_cfg.run_timeout_ms),
        run.timed_out.clone(),
    ));
    let ending = run.drive(input).await;
    timer.abort();
    run.finish(ending).await
}

/// Cancels the run once it has run `limit`, not counting the time it waited for a person.
async fn run_timer(ctl: Arc<RunCtl>, limit: Duration, timed_out: Arc<AtomicBool>) {
    let start = tokio::time::Instant::now();
    let mut pause = ctl.pause.subscribe();
    loop {
        let now = *pause.borrow_and_update();
        if now.since.is_some() {
            if pause.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(start + limit + now.total) => {
                timed_out.store(true, Ordering::Release);
                ctl.cancel.cancel();
                return;
            }
            changed = pause.changed() => if changed.is_err() { return },
        }
    }
}

impl<G: LoopHost> Run<'_, G> {
    /// The session store.
    pub(super) fn store(&self) -> &Arc<Store> {
        self.gw.store()
    }

    /// Appends `records` to the run's transcript (one write).
    pub(super) async fn write(
        &self,
        records: Vec<Record>,
    ) -> Result<Vec<TranscriptMessage>, StoreError> {
        self.store()
            .append_records(&self.key, Some(&self.session_id), records)
            .await
    }

    /// Records a turn's usage in the usage ledger (a failure is logged: the run goes on).
    async fn record_usage(&self, usage: Usage) {
        let call = UsageCall {
            session_key: self.key.clone(),
            session_id: self.session_id.clone(),
            agent_id: self.agent.id.clone(),
            run_id: Some(self.run_id.clone()),
            model: self.model.clone(),
            usage,
        };
        if let Err(err) = self.store().record_usage(&call).await {
            tracing::error!(run = %self.run_id, %err, "cannot record a model call's usage");
        }
    }

    /// A run marker of this run in `state`.
    fn marker(&self, state: RunMarkerState) -> RunMarker {
        RunMarker::new(&self.run_id, state)
    }

    /// The run from its first line to the ending of its loop.
    async fn drive(&self, input: RunInput) -> Ending {
        if let Some(why) = &input.fail {
            return Ending::Failed(interrupted(why));
        }
        if self.ctl.cancel.is_cancelled() {
            return Ending::stopped();
        }
        let (start_turn, trail) = match input.resume {
            None => match self.start(&input.request, input.written).await {
                Ok(()) => (0, None),
                Err(ending) => return ending,
            },
            Some(attempt) => match self.resume(attempt).await {
                Ok(Resumed::Go(turn, trail)) => (turn, Some(*trail)),
                Ok(Resumed::Ended(ending)) | Err(ending) => return ending,
            },
        };
        let pending_calls: Vec<ToolCall> = trail
            .as_ref()
            .and_then(|t| {
                let calls = t.last_assistant.as_ref()?.tool_calls.as_ref()?;
                Some(
                    calls
                        .iter()
                        .filter(|c| !t.results.contains(&c.id))
                        .cloned()
                        .collect(),
                )
            })
            .unwrap_or_default();
        let tool_list = self.tools_for_calls(&pending_calls).await;
        let setup = ToolSetup::new(self, tool_list);
        if let Err(err) = tokio::fs::create_dir_all(&setup.ctx.workspace).await {
            tracing::warn!(run = %self.run_id, %err, "cannot create the workspace");
        }
        // Read once per run: an edit of an instruction file applies to the next run.
        let instruction_files = {
            let (agent_cfg, workspace, protected) = (
                self.agent.config.clone(),
                setup.ctx.workspace.clone(),
                setup.ctx.protected.clone(),
            );
            tokio::task::spawn_blocking(move || {
                instructions::read_files(&agent_cfg, &workspace, &protected)
            })
            .await
            .unwrap_or_default()
        };
        let mut totals = Totals::default();
        let mut last_assistant: Option<TranscriptMessage> = None;
        // Resumed with tool calls of its last turn still to answer: those first.
        if let Some(trail) = &trail
            && let Some(message) = trail.last_assistant.clone()
            && let Some(calls) = message.tool_calls.clone()
            && start_turn > 0
        {
            let boundary = self.store().hold_boundary(&self.key).await;
            let calls = Calls {
                turn: start_turn - 1,
                calls: &calls,
                broken: &[],
                trail: Some(trail),
            };
            if let Err(ending) = setup.run_calls(self, calls).await {
                return ending;
            }
            if let Err(ending) = self.after_tools(start_turn - 1).await {
                return ending;
            }
            drop(boundary);
            last_assistant = Some(message);
        }
        let specs = setup.specs();
        let compactor = Compactor::new(
            self.store(),
            &self.agent.provider,
            &self.agent.config,
            &self.model,
            Caller {
                key: &self.key,
                session_id: Some(&self.session_id),
                agent_id: &self.agent.id,
                run_id: Some(&self.run_id),
            },
            &self.ctl.cancel,
        );
        for turn in start_turn..self.agent.config.max_turns {
            self.ctl.turn.store(turn, Ordering::Relaxed);
            let (message, calls, broken, stop) = match self
                .turn(turn, &compactor, &instruction_files, &specs, &mut totals)
                .await
            {
                Ok(done) => done,
                Err(ending) => return ending,
            };
            if calls.is_empty() {
                // A steered message unread at the end makes one more model call.
                if turn + 1 < self.agent.config.max_turns
                    && let Some(steers) = self.take_steered(true)
                {
                    if let Err(ending) = self.write_steered(steers).await {
                        return ending;
                    }
                    last_assistant = Some(message);
                    continue;
                }
                return Ending::Final {
                    message: Some(Box::new(message)),
                    usage: totals.usage(),
                    stop,
                };
            }
            // From the call to its last result, nothing may come between.
            let boundary = self.store().hold_boundary(&self.key).await;
            let calls = Calls {
                turn,
                calls: &calls,
                broken: &broken,
                trail: None,
            };
            if let Err(ending) = setup.run_calls(self, calls).await {
                return ending;
            }
            if let Err(ending) = self.after_tools(turn).await {
                return ending;
            }
            drop(boundary);
            if self.ctl.cancel.is_cancelled() {
                return Ending::stopped();
            }
            last_assistant = Some(message);
        }
        Ending::Final {
            message: last_assistant.map(Box::new),
            usage: totals.usage(),
            stop: "max_turns".into(),
        }
    }

    /// The agent's tools; when resuming with calls to answer, waited for (up to
    /// [`RESUME_TOOLS_WAIT`]) until the tools those calls name are offered again: the plugins
    /// and MCP servers that offer them start with the gateway, beside the resumed run.
    async fn tools_for_calls(&self, calls: &[ToolCall]) -> Arc<Vec<Arc<dyn Tool>>> {
        let policy = super::policy::ToolPolicy::new(&self.agent.config.tools);
        let started = tokio::time::Instant::now();
        loop {
            let tools = self.gw.tools(&self.agent.config);
            let missing = calls
                .iter()
                .any(|c| !policy.denied(&c.name) && !tools.iter().any(|t| t.spec().name == c.name));
            if !missing || started.elapsed() >= RESUME_TOOLS_WAIT || self.ctl.cancel.is_cancelled()
            {
                return tools;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new run's first lines, its `started` marker and its user message, in one write; then
    /// its `started` payload.
    async fn start(
        &self,
        request: &SendRequest,
        written: Option<oneshot::Sender<()>>,
    ) -> Result<(), Ending> {
        let mut marker = self.marker(RunMarkerState::Started);
        marker.agent = Some(self.agent.id.clone());
        marker.idempotency_key = request.idempotency_key.clone();
        marker.model = request.model.clone();
        let mut user = NewMessage::new(Role::User, request.message.clone());
        user.message.run_id = Some(self.run_id.clone());
        user.message.idempotency_key = request.idempotency_key.clone();
        let result = {
            let _boundary = self.store().hold_boundary(&self.key).await;
            self.write(vec![Record::Run(marker), Record::Message(user)])
                .await
        };
        if let Some(tx) = written {
            let _ = tx.send(());
        }
        let user_message = match result.map(|mut w| w.pop()) {
            Ok(Some(m)) => m,
            Err(StoreError::Storage(why)) => {
                // The disk is full or out of descriptors: retrying later can succeed.
                return Err(Ending::Failed(ProviderError::new(
                    ErrorKind::Internal,
                    format!("cannot write the user message: storage unavailable: {why}"),
                    true,
                )));
            }
            Ok(None) | Err(_) => return Err(Ending::internal("cannot write the user message")),
        };
        self.ctl
            .started_at
            .store(user_message.ts, Ordering::Relaxed);
        self.emitter.emit(ChatEvent {
            model: Some(self.model.clone()),
            agent_id: Some(self.agent.id.clone()),
            user_message: Some(user_message),
            ..self.emitter.base("started")
        });
        Ok(())
    }

    /// Where a run interrupted by a restart was, from its transcript; its `resumed` marker
    /// and payload.
    async fn resume(&self, attempt: u32) -> Result<Resumed, Ending> {
        let trail = self
            .store()
            .run_trail(&self.key, &self.run_id)
            .await
            .map_err(|e| Ending::internal(format!("cannot read the run to resume it: {e}")))?;
        if !trail.has_user_message {
            return Err(Ending::Failed(interrupted(
                "its message was not written before the restart",
            )));
        }
        let mut marker = self.marker(RunMarkerState::Resumed);
        marker.attempt = Some(attempt);
        if let Err(e) = self.write(vec![Record::Run(marker)]).await {
            return Err(Ending::internal(format!("cannot resume the run: {e}")));
        }
        self.ctl
            .started_at
            .store(trail.started_at, Ordering::Relaxed);
        let turn = trail.assistant_turns;
        self.ctl.turn.store(turn, Ordering::Relaxed);
        self.emitter.emit(ChatEvent {
            turn: Some(turn),
            agent_id: Some(self.agent.id.clone()),
            attempt: Some(attempt),
            model: Some(self.model.clone()),
            ..self.emitter.base("resumed")
        });
        // The newest message of the run says where it was.
        match trail.newest.as_ref() {
            Some(m) if m.role == Role::Assistant && m.tool_calls.is_none() => {
                if let Some(error) = &m.error {
                    let kind = ErrorKind::from_name(&error.kind);
                    return Ok(Resumed::Ended(Ending::Failed(ProviderError::new(
                        kind,
                        error.message.clone(),
                        false,
                    ))));
                }
                if m.aborted == Some(true) {
                    return Ok(Resumed::Ended(Ending::Stopped {
                        partial: m.content.clone(),
                    }));
                }
                // It had answered: only its end was not written.
                Ok(Resumed::Ended(Ending::Final {
                    message: Some(Box::new(m.clone())),
                    usage: None,
                    stop: m.stop_reason.clone().unwrap_or_else(|| "end_turn".into()),
                }))
            }
            _ => Ok(Resumed::Go(turn, Box::new(trail))),
        }
    }

    /// One model call and its assistant message: the message, its tool calls (well-formed and
    /// broken) and why the model stopped.
    async fn turn(
        &self,
        turn: u32,
        compactor: &Compactor,
        instruction_files: &[instructions::InstructionFile],
        specs: &[super::providers::ToolSpec],
        totals: &mut Totals,
    ) -> Result<TurnOutput, Ending> {
        let compacted = |c: &Compacted| {
            self.emitter.emit(c.payload(ChatEvent {
                turn: Some(turn),
                ..self.emitter.base("compacted")
            }));
        };
        let compaction_stop = |e: CompactError| match e {
            CompactError::Cancelled => Ending::stopped(),
            CompactError::Store(e) => Ending::internal(format!("cannot read the context: {e}")),
            CompactError::Summary(error) => Ending::Failed(error),
        };
        // The latest summary, then the kept messages; compacted first past the threshold.
        let mut context = compactor
            .before_call(&compacted)
            .await
            .map_err(compaction_stop)?;
        let agent_cfg = &self.agent.config;
        // A `context_length` error compacts and retries once.
        let mut overflowed = false;
        let end = loop {
            let system = instructions::system_prompt(
                agent_cfg.instructions.as_deref(),
                instruction_files,
                &context,
            );
            let turn_request = TurnRequest {
                model: self.model.clone(),
                system,
                messages: context
                    .iter()
                    .filter(|m| m.role != Role::System)
                    .cloned()
                    .collect(),
                tools: specs.to_vec(),
                max_tokens: agent_cfg.max_output_tokens,
            };
            let end = stream_turn(
                &self.agent.provider,
                &turn_request,
                self.emitter,
                turn,
                &self.ctl.cancel,
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
                Err(e) => return Err(compaction_stop(e)),
            }
        };
        let mut assistant = NewMessage::new(Role::Assistant, String::new());
        assistant.message.run_id = Some(self.run_id.clone());
        assistant.message.model = Some(self.model.clone());
        let (text, calls, broken, usage, stop) = match end {
            TurnEnd::Done {
                text,
                calls,
                broken,
                usage,
                stop,
            } => (text, calls, broken, usage, stop),
            TurnEnd::Stopped { partial } => {
                if self.ctl.is_suspended() {
                    // Resumed later from its last whole message: the partial turn is redone.
                    return Err(Ending::stopped());
                }
                if self.is_timed_out() {
                    // A run timeout is an error: the transcript says so, even without text.
                    assistant.message.content = partial.clone();
                    assistant.message.error = Some(MessageError {
                        kind: ErrorKind::Timeout.as_str().into(),
                        message: "the run passed agent.run_timeout_ms".into(),
                    });
                    let _ = self.write(vec![Record::Message(assistant)]).await;
                } else if !partial.is_empty() {
                    assistant.message.content = partial.clone();
                    assistant.message.aborted = Some(true);
                    let _ = self.write(vec![Record::Message(assistant)]).await;
                }
                return Err(Ending::Stopped { partial });
            }
            TurnEnd::Failed { error, partial } => {
                // Written even without text: history shows how the run ended.
                assistant.message.content = partial;
                assistant.message.error = Some(MessageError {
                    kind: error.kind.as_str().into(),
                    message: error.message.clone(),
                });
                let _ = self.write(vec![Record::Message(assistant)]).await;
                return Err(Ending::Failed(error));
            }
        };
        totals.add(usage);
        if let Some(usage) = usage {
            self.record_usage(usage).await;
        }
        let mut all_calls: Vec<ToolCall> = calls;
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
        let message = match self
            .write(vec![Record::Message(assistant)])
            .await
            .map(|mut w| w.pop())
        {
            Ok(Some(m)) => m,
            _ => return Err(Ending::internal("cannot write the assistant message")),
        };
        Ok((message, all_calls, broken, stop.as_str().to_string()))
    }

    /// The boundary after a turn's tool results: what was injected while the run waited for a
    /// person, then the steered messages (when another model call will read them).
    async fn after_tools(&self, turn: u32) -> Result<(), Ending> {
        self.write_deferred().await;
        if turn + 1 < self.agent.config.max_turns
            && let Some(steers) = self.take_steered(false)
        {
            self.write_steered(steers).await?;
        }
        Ok(())
    }

    /// The steered messages not yet written; none (`None`) when there are none, and then, when
    /// `closing`, no later steer reaches this run.
    fn take_steered(&self, closing: bool) -> Option<Vec<Steer>> {
        let mut inbox = self.ctl.inbox();
        if inbox.steered.is_empty() {
            inbox.closed |= closing;
            return None;
        }
        Some(inbox.steered.drain(..).collect())
    }

    /// Writes steered messages as user messages of this run and announces each (`steered`).
    async fn write_steered(&self, steers: Vec<Steer>) -> Result<(), Ending> {
        let records = steers
            .into_iter()
            .map(|s| {
                let mut user = NewMessage::new(Role::User, s.message);
                user.message.run_id = Some(self.run_id.clone());
                user.message.idempotency_key = s.idempotency_key;
                Record::Message(user)
            })
            .collect();
        let written = self
            .write(records)
            .await
            .map_err(|e| Ending::internal(format!("cannot write a steered message: {e}")))?;
        for message in written {
            self.emitter.emit(ChatEvent {
                user_message: Some(message),
                ..self.emitter.base("steered")
            });
        }
        Ok(())
    }

    /// Writes what was injected while the run waited for a person, and announces it.
    async fn write_deferred(&self) {
        let deferred = std::mem::take(&mut self.ctl.inbox().deferred);
        if deferred.is_empty() {
            return;
        }
        let records = deferred
            .into_iter()
            .map(|message| Record::Message(NewMessage { message }))
            .collect();
        match self.store().append_records(&self.key, None, records).await {
            Ok(written) => {
                for message in written {
                    self.emitter.publish(&ChatEvent {
                        session_key: self.key.clone(),
                        state: "injected".into(),
                        message: Some(message),
                        ..Default::default()
                    });
                }
                self.store().publish_updated(&self.key);
            }
            Err(err) => {
                tracing::error!(run = %self.run_id, %err, "cannot write messages injected during an approval");
            }
        }
    }

    fn is_timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Acquire) && !self.ctl.aborted.load(Ordering::Acquire)
    }

    /// Writes the run's end (or its suspension) and publishes its terminal payload.
    async fn finish(&self, ending: Ending) -> RunEnd {
        self.write_deferred().await;
        let ending = match ending {
            Ending::Stopped { .. } if self.ctl.is_suspended() => {
                let marker = self.marker(RunMarkerState::Suspended);
                if let Err(err) = self.write(vec![Record::Run(marker)]).await {
                    // Without it the run still resumes: a `started` marker with no end is enough.
                    tracing::warn!(run = %self.run_id, %err, "cannot write the suspended marker");
                }
                return RunEnd::Suspended;
            }
            Ending::Stopped { .. } if self.is_timed_out() => Ending::Failed(ProviderError::new(
                ErrorKind::Timeout,
                format!(
                    "the run passed agent.run_timeout_ms ({} ms)",
                    self.agent.config.run_timeout_ms
                ),
                true,
            )),
            other => other,
        };
        let leftover: Vec<Steer> = {
            let mut inbox = self.ctl.inbox();
            inbox.closed = true;
            inbox.steered.drain(..).collect()
        };
        let (outcome, mut marker) = match &ending {
            Ending::Final { stop, .. } => {
                let mut m = self.marker(RunMarkerState::Final);
                m.stop_reason = Some(stop.clone());
                (RunOutcome::Final, m)
            }
            Ending::Stopped { .. } => (RunOutcome::Aborted, self.marker(RunMarkerState::Aborted)),
            Ending::Failed(error) => {
                let mut m = self.marker(RunMarkerState::Error);
                m.error = Some(MessageError {
                    kind: error.kind.as_str().into(),
                    message: error.message.clone(),
                });
                (RunOutcome::Error, m)
            }
        };
        marker.ts = crate::util::now_ms();
        if let Err(err) = self.write(vec![Record::Run(marker)]).await {
            tracing::error!(run = %self.run_id, %err, "cannot write the run's end marker");
        }
        let _ = self.ctl.outcome.set(outcome);
        crate::metrics::run_ended(&self.agent.id, outcome.as_str());
        let terminal = match ending {
            Ending::Final {
                message,
                usage,
                stop,
            } => self.emitter.emit(ChatEvent {
                message: message.map(|m| *m),
                usage,
                stop_reason: Some(stop),
                ..self.emitter.base("final")
            }),
            Ending::Stopped { partial } => self.emitter.emit(ChatEvent {
                partial_text: (!partial.is_empty()).then_some(partial),
                ..self.emitter.base("aborted")
            }),
            Ending::Failed(error) => error_event(self.emitter, &error),
        };
        RunEnd::Ended {
            outcome,
            terminal,
            leftover: if outcome == RunOutcome::Aborted {
                Vec::new()
            } else {
                leftover
            },
        }
    }
}

/// The error of a run a restart interrupted and that is not resumed.
pub(super) fn interrupted(why: &str) -> ProviderError {
    ProviderError::new(
        ErrorKind::Interrupted,
        format!("the run was interrupted by a gateway restart and not resumed: {why}"),
        true,
    )
}

/// What resuming found.
enum Resumed {
    /// Go on from this turn (tool calls of the turn before first, when it left some).
    Go(u32, Box<RunTrail>),
    /// It had ended; only its end marker was missing.
    Ended(Ending),
}

/// A turn's assistant message, its tool calls, its broken calls and why the model stopped.
type TurnOutput = (
    TranscriptMessage,
    Vec<ToolCall>,
    Vec<(ToolCall, String)>,
    String,
);

/// Tokens summed over a run's turns.
#[derive(Default)]
struct Totals {
    usage: Usage,
    any: bool,
}

impl Totals {
    fn add(&mut self, usage: Option<Usage>) {
        if let Some(u) = usage {
            self.usage.input_tokens += u.input_tokens;
            self.usage.output_tokens += u.output_tokens;
            self.usage.cache_read_tokens += u.cache_read_tokens;
            self.usage.cache_write_tokens += u.cache_write_tokens;
            self.any = true;
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.any.then_some(self.usage)
    }
}
