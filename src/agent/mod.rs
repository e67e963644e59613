//! The streaming agent: the run manager (lanes, idempotency, abort) and the agent loop.
//!
//! `chat.send` hands a message to [`Agent::send`]. Each session is a lane: one run at a time,
//! later sends wait in order. A run writes the user message, then repeats: stream a model turn
//! (coalesced deltas), write the assistant message, run its tool calls and write their results,
//! until the model stops calling tools or `agent.max_turns` is reached. Every run owns one
//! cancellation token that reaches the provider stream and every tool.

pub mod providers;
pub mod tools;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::events::Envelope;
use crate::protocol::{
    ChatEvent, MAX_CONTENT_BYTES, MessageError, Role, RunError, RunOutcome, RunStatus, ToolCall,
    TranscriptMessage, Usage,
};
use crate::store::NewMessage;
use providers::{ErrorKind, Provider, ProviderError, ProviderEvent, StopReason, TurnRequest};
use tools::{Tool, ToolContext, ToolOutput};

/// Stored tool output is cut at this many bytes, with a marker.
pub const MAX_TOOL_OUTPUT: usize = 256 * 1024;
/// Idempotency keys remembered per session.
const IDEMPOTENCY_KEYS: usize = 1000;
/// Finished runs remembered (for `chat.abort` and `chat.stream` of a done key).
const FINISHED_RUNS: usize = 10_000;
/// Retries of a failed model call (before any delta reached a client).
const MAX_RETRIES: u32 = 4;

/// What `chat.send` asked for.
#[derive(Debug, Clone)]
pub struct SendRequest {
    /// The session.
    pub session_key: String,
    /// The user's message.
    pub message: String,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Model for this run.
    pub model: Option<String>,
}

/// What `chat.send` answers.
#[derive(Debug, Clone)]
pub struct SendOutcome {
    /// The run.
    pub run_id: String,
    /// Where it is.
    pub status: RunStatus,
    /// How it ended (with `done`).
    pub outcome: Option<RunOutcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Queued,
    InFlight,
    Done(RunOutcome),
}

struct RunRecord {
    session_key: String,
    /// The next `runSeq`, shared by every emitter of the run.
    seq: Arc<std::sync::atomic::AtomicU64>,
    state: RunState,
    cancel: CancellationToken,
    aborted: Arc<AtomicBool>,
    done: watch::Sender<bool>,
    terminal: Option<Arc<Envelope>>,
}

struct Pending {
    run_id: String,
    request: SendRequest,
}

#[derive(Default)]
struct Lane {
    running: Option<String>,
    queue: VecDeque<Pending>,
}

#[derive(Default)]
struct IdempotencyCache {
    session_id: String,
    keys: HashMap<String, (String, Option<RunOutcome>)>,
    order: VecDeque<String>,
}

impl IdempotencyCache {
    fn insert(&mut self, key: String, run_id: String, outcome: Option<RunOutcome>) {
        if self.keys.insert(key.clone(), (run_id, outcome)).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > IDEMPOTENCY_KEYS {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
    }
}

#[derive(Default)]
struct State {
    lanes: HashMap<String, Lane>,
    runs: HashMap<String, RunRecord>,
    finished: VecDeque<String>,
    idempotency: HashMap<String, IdempotencyCache>,
}

impl State {
    /// The run an idempotency key of `session_key` already started, with its status now.
    fn existing_run(&self, session_key: &str, key: &str) -> Option<SendOutcome> {
        let (run_id, outcome) = self
            .idempotency
            .get(session_key)
            .and_then(|c| c.keys.get(key))
            .cloned()?;
        let (status, outcome) = match self.runs.get(&run_id).map(|r| r.state) {
            Some(RunState::Queued) => (RunStatus::Queued, None),
            Some(RunState::InFlight) => (RunStatus::InFlight, None),
            Some(RunState::Done(o)) => (RunStatus::Done, Some(o)),
            None => (
                RunStatus::Done,
                Some(outcome.unwrap_or(RunOutcome::Aborted)),
            ),
        };
        Some(SendOutcome {
            run_id,
            status,
            outcome,
        })
    }
}

/// The agent: provider, tools and runs.
pub struct Agent {
    provider: ArcSwap<Arc<dyn Provider>>,
    tools: ArcSwap<Vec<Arc<dyn Tool>>>,
    state: Mutex<State>,
}

impl Agent {
    /// An agent with `provider` and the built-in tools.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Self {
            provider: ArcSwap::from_pointee(provider),
            tools: ArcSwap::from_pointee(tools::builtin()),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current provider.
    pub fn provider(&self) -> Arc<dyn Provider> {
        self.provider.load_full().as_ref().clone()
    }

    /// Replaces the provider (configuration reload); runs in progress keep theirs.
    pub fn set_provider(&self, provider: Arc<dyn Provider>) {
        self.provider.store(Arc::new(provider));
    }

    /// The tools offered to the model.
    pub fn tools(&self) -> Arc<Vec<Arc<dyn Tool>>> {
        self.tools.load_full()
    }

    /// Replaces the tool list (plugins).
    pub fn set_tools(&self, tools: Vec<Arc<dyn Tool>>) {
        self.tools.store(Arc::new(tools));
    }

    /// Runs in flight now.
    pub fn active_runs(&self) -> u64 {
        self.state()
            .runs
            .values()
            .filter(|r| r.state == RunState::InFlight)
            .count() as u64
    }

    /// Starts (or queues) a run; a repeated idempotency key starts nothing.
    pub async fn send<G: AgentHost>(
        &self,
        gw: &Arc<G>,
        request: SendRequest,
    ) -> Result<SendOutcome, Error> {
        let store = gw.store();
        let session = store.ensure(&request.session_key).await?;
        if let Some(key) = &request.idempotency_key {
            self.load_idempotency(gw, &request.session_key, &session.session_id)
                .await?;
            if let Some(existing) = self.state().existing_run(&request.session_key, key) {
                return Ok(existing);
            }
        }
        // A run's first step is a write: refused while the store cannot write.
        store.check_writable(&format!(
            "cannot start a run in session `{}`",
            request.session_key
        ))?;
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let (done, _) = watch::channel(false);
        let position;
        {
            let mut state = self.state();
            // Checked under the lock `abort_all` takes, so no run starts after shutdown began.
            if gw.is_shutting_down() {
                return Err(Error::Unavailable {
                    message: "the gateway is shutting down".into(),
                    retryable: true,
                });
            }
            if let Some(key) = &request.idempotency_key {
                // Checked and inserted under one lock: two sends of one key cannot both start.
                if let Some(existing) = state.existing_run(&request.session_key, key) {
                    return Ok(existing);
                }
                let cache = state
                    .idempotency
                    .entry(request.session_key.clone())
                    .or_default();
                cache.insert(key.clone(), run_id.clone(), None);
            }
            let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
            state.runs.insert(
                run_id.clone(),
                RunRecord {
                    session_key: request.session_key.clone(),
                    seq: seq.clone(),
                    state: RunState::Queued,
                    cancel: CancellationToken::new(),
                    aborted: Arc::new(AtomicBool::new(false)),
                    done,
                    terminal: None,
                },
            );
            let lane = state.lanes.entry(request.session_key.clone()).or_default();
            // A placeholder (empty) `running` means the worker has not popped the queue yet.
            position = lane.queue.len()
                + usize::from(lane.running.as_ref().is_some_and(|r| !r.is_empty()));
            let start_worker = lane.running.is_none() && lane.queue.is_empty();
            lane.queue.push_back(Pending {
                run_id: run_id.clone(),
                request: request.clone(),
            });
            if start_worker {
                lane.running = Some(String::new());
            }
            if position > 0 {
                // Published under the lock: nothing of this run can come before it.
                let emitter = Emitter::with_seq(gw.hub(), &request.session_key, &run_id, seq);
                emitter.emit(ChatEvent {
                    position: Some(position as u64),
                    ..emitter.base("queued")
                });
            }
            drop(state);
            if start_worker {
                let gw = gw.clone();
                let key = request.session_key.clone();
                tokio::spawn(async move { lane_worker(gw, key).await });
            }
        }
        if position > 0 {
            return Ok(SendOutcome {
                run_id,
                status: RunStatus::Queued,
                outcome: None,
            });
        }
        Ok(SendOutcome {
            run_id,
            status: RunStatus::Started,
            outcome: None,
        })
    }

    /// Loads the idempotency keys of `key`'s current transcript (once per sessionId).
    async fn load_idempotency<G: AgentHost>(
        &self,
        gw: &Arc<G>,
        key: &str,
        session_id: &str,
    ) -> Result<(), Error> {
        if self
            .state()
            .idempotency
            .get(key)
            .is_some_and(|c| c.session_id == session_id)
        {
            return Ok(());
        }
        let found = gw.store().idempotency_keys(key, IDEMPOTENCY_KEYS).await?;
        let mut state = self.state();
        let cache = state.idempotency.entry(key.to_string()).or_default();
        if cache.session_id != session_id {
            *cache = IdempotencyCache {
                session_id: session_id.to_string(),
                ..Default::default()
            };
            for (idem, run_id, outcome) in found {
                cache.insert(idem, run_id, Some(outcome));
            }
        }
        Ok(())
    }

    /// The outcome of a run: its state, and its terminal envelope once done.
    pub fn run_info(&self, run_id: &str) -> Option<(bool, Option<Arc<Envelope>>)> {
        let state = self.state();
        let record = state.runs.get(run_id)?;
        Some((
            matches!(record.state, RunState::Done(_)),
            record.terminal.clone(),
        ))
    }

    /// Aborts `run_id` and/or the session's active run and queued runs; returns the runs aborted.
    pub async fn abort<G: AgentHost>(
        &self,
        gw: &Arc<G>,
        run_id: Option<&str>,
        session_key: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        let mut targets: Vec<String> = Vec::new();
        {
            let state = self.state();
            if let Some(id) = run_id {
                let Some(record) = state.runs.get(id) else {
                    return Err(Error::NotFound(format!("no run `{id}`")));
                };
                if !matches!(record.state, RunState::Done(_)) {
                    targets.push(id.to_string());
                }
            }
            if let Some(key) = session_key
                && let Some(lane) = state.lanes.get(key)
            {
                if let Some(active) = lane.running.as_ref().filter(|r| !r.is_empty()) {
                    targets.push(active.clone());
                }
                targets.extend(lane.queue.iter().map(|p| p.run_id.clone()));
            }
        }
        targets.dedup();
        let mut aborted = Vec::new();
        let mut waits = Vec::new();
        for id in targets {
            let queued = {
                let mut state = self.state();
                let session = state.runs.get(&id).map(|r| r.session_key.clone());
                let mut removed = false;
                if let Some(key) = &session
                    && let Some(lane) = state.lanes.get_mut(key)
                    && let Some(pos) = lane.queue.iter().position(|p| p.run_id == id)
                {
                    lane.queue.remove(pos);
                    removed = true;
                }
                match state.runs.get(&id) {
                    Some(r) if r.state == RunState::InFlight => {
                        r.aborted.store(true, Ordering::Release);
                        r.cancel.cancel();
                        waits.push(r.done.subscribe());
                        aborted.push(id.clone());
                        None
                    }
                    Some(r) if removed => Some((r.session_key.clone(), r.seq.clone())),
                    _ => None,
                }
            };
            if let Some((key, seq)) = queued {
                let emitter = Emitter::with_seq(gw.hub(), &key, &id, seq);
                let env = emitter.emit(emitter.base("aborted"));
                self.finish(&id, RunOutcome::Aborted, env);
                aborted.push(id);
            }
        }
        for mut rx in waits {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|d| *d)).await;
        }
        Ok(aborted)
    }

    /// Aborts every run (shutdown).
    pub async fn abort_all<G: AgentHost>(&self, gw: &Arc<G>) {
        let keys: Vec<String> = self.state().lanes.keys().cloned().collect();
        for key in keys {
            let _ = self.abort(gw, None, Some(&key)).await;
        }
    }

    fn finish(&self, run_id: &str, outcome: RunOutcome, terminal: Option<Arc<Envelope>>) {
        let mut state = self.state();
        if let Some(r) = state.runs.get_mut(run_id) {
            r.state = RunState::Done(outcome);
            r.terminal = terminal;
            let _ = r.done.send(true);
        }
        let key = state.runs.get(run_id).map(|r| r.session_key.clone());
        if let Some(key) = key
            && let Some(cache) = state.idempotency.get_mut(&key)
        {
            for (_, entry) in cache.keys.iter_mut().filter(|(_, (id, _))| id == run_id) {
                entry.1 = Some(outcome);
            }
        }
        state.finished.push_back(run_id.to_string());
        while state.finished.len() > FINISHED_RUNS {
            if let Some(old) = state.finished.pop_front() {
                state.runs.remove(&old);
            }
        }
    }
}

/// Runs a lane's queue, one run at a time, until it is empty.
async fn lane_worker<G: AgentHost>(gw: Arc<G>, key: String) {
    loop {
        let next = {
            let mut state = gw.agent().state();
            let Some(lane) = state.lanes.get_mut(&key) else {
                return;
            };
            match lane.queue.pop_front() {
                Some(p) => {
                    lane.running = Some(p.run_id.clone());
                    let record = state.runs.get_mut(&p.run_id).map(|r| {
                        r.state = RunState::InFlight;
                        (r.cancel.clone(), r.aborted.clone(), r.seq.clone())
                    });
                    record.map(|(c, a, q)| (p, c, a, q))
                }
                None => {
                    state.lanes.remove(&key);
                    return;
                }
            }
        };
        let Some((pending, cancel, aborted, seq)) = next else {
            continue;
        };
        gw.set_active_runs(gw.agent().active_runs());
        let run_id = pending.run_id.clone();
        let emitter = Arc::new(Emitter::with_seq(gw.hub(), &key, &run_id, seq));
        // In its own task: a panic in a tool or provider ends this run, not the lane.
        let task = {
            let (gw, emitter, cancel) = (gw.clone(), emitter.clone(), cancel.clone());
            tokio::spawn(async move { run(&gw, &emitter, pending.request, cancel, aborted).await })
        };
        let (outcome, terminal) = match task.await {
            Ok(done) => done,
            Err(err) => {
                tracing::error!(run = %run_id, %err, "a run failed unexpectedly");
                cancel.cancel();
                let error =
                    ProviderError::new(ErrorKind::Internal, "the run failed unexpectedly", false);
                (RunOutcome::Error, error_event(&emitter, &error))
            }
        };
        gw.agent().finish(&run_id, outcome, terminal);
        gw.store().publish_updated(&key);
        gw.set_active_runs(gw.agent().active_runs());
    }
}

/// Publishes a run's `chat` payloads with increasing `runSeq`.
struct Emitter {
    hub: Arc<crate::events::EventHub>,
    session_key: String,
    run_id: String,
    seq: Arc<std::sync::atomic::AtomicU64>,
}

impl Emitter {
    fn with_seq(
        hub: &Arc<crate::events::EventHub>,
        session_key: &str,
        run_id: &str,
        seq: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        Self {
            hub: hub.clone(),
            session_key: session_key.into(),
            run_id: run_id.into(),
            seq,
        }
    }

    fn base(&self, state: &str) -> ChatEvent {
        ChatEvent {
            run_id: Some(self.run_id.clone()),
            session_key: self.session_key.clone(),
            state: state.into(),
            ..Default::default()
        }
    }

    fn emit(&self, mut event: ChatEvent) -> Option<Arc<Envelope>> {
        event.run_seq = Some(self.seq.fetch_add(1, Ordering::Relaxed));
        let run = crate::events::RunTag {
            run_id: &self.run_id,
            ends_run: matches!(event.state.as_str(), "final" | "aborted" | "error"),
        };
        self.hub
            .emit_tagged(Some(&self.session_key), Some(run), &event)
    }
}

/// What the agent needs from the application that hosts it: its own dependencies, not the
/// whole gateway.
pub trait AgentHost: Send + Sync + 'static {
    /// The agent (runs, lanes, provider, tools).
    fn agent(&self) -> &Agent;
    /// The session store.
    fn store(&self) -> &Arc<crate::store::Store>;
    /// The event hub.
    fn hub(&self) -> &Arc<crate::events::EventHub>;
    /// The configuration in force.
    fn config(&self) -> Arc<crate::config::Config>;
    /// The data directory (the file tools refuse it).
    fn data_dir(&self) -> &std::path::PathBuf;
    /// The config file (the file tools refuse it).
    fn config_path(&self) -> &std::path::PathBuf;
    /// Whether shutdown has begun (no run starts).
    fn is_shutting_down(&self) -> bool;
    /// The number of active runs changed.
    fn set_active_runs(&self, n: u64);
}

/// How a streamed turn ended.
enum TurnEnd {
    Done {
        text: String,
        calls: Vec<ToolCall>,
        broken: Vec<(ToolCall, String)>,
        usage: Option<Usage>,
        stop: StopReason,
    },
    Stopped {
        partial: String,
    },
    Failed {
        error: ProviderError,
        partial: String,
    },
}

/// Cuts stored tool output at [`MAX_TOOL_OUTPUT`] bytes, saying so.
pub fn cut_output(mut text: String) -> String {
    if text.len() <= MAX_TOOL_OUTPUT {
        return text;
    }
    let mut end = MAX_TOOL_OUTPUT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let total = text.len();
    text.truncate(end);
    text.push_str(&format!(
        "\n[output cut at {MAX_TOOL_OUTPUT} bytes of {total}]"
    ));
    text
}

/// The context sent to the model: never opens with an orphan tool result, and every tool call
/// has a result (a missing one, from an interrupted run, gets a synthetic error result).
pub fn prepare_context(messages: Vec<TranscriptMessage>) -> Vec<TranscriptMessage> {
    let start = messages
        .iter()
        .position(|m| m.role != Role::Tool)
        .unwrap_or(messages.len());
    let mut out: Vec<TranscriptMessage> = Vec::with_capacity(messages.len());
    let mut iter = messages.into_iter().skip(start).peekable();
    while let Some(m) = iter.next() {
        if m.role == Role::Tool {
            // A tool result without its call (should not happen): leave it out.
            continue;
        }
        if m.role == Role::Assistant && m.content.is_empty() && m.tool_calls.is_none() {
            // A marker of a failed turn with no text: nothing for the model to read.
            continue;
        }
        let calls: Vec<ToolCall> = m.tool_calls.clone().unwrap_or_default();
        let is_assistant = m.role == Role::Assistant;
        out.push(m);
        if is_assistant && !calls.is_empty() {
            let mut results: Vec<TranscriptMessage> = Vec::new();
            while let Some(next) = iter.peek() {
                if next.role != Role::Tool {
                    break;
                }
                if let Some(r) = iter.next() {
                    results.push(r);
                }
            }
            for call in &calls {
                match results
                    .iter()
                    .position(|r| r.tool_call_id.as_deref() == Some(call.id.as_str()))
                {
                    Some(i) => out.push(results.remove(i)),
                    None => {
                        let mut synthetic =
                            NewMessage::new(Role::Tool, "no result: the run was interrupted")
                                .message;
                        synthetic.tool_call_id = Some(call.id.clone());
                        synthetic.is_error = Some(true);
                        out.push(synthetic);
                    }
                }
            }
        }
    }
    out
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
async fn stream_turn(
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

/// One run, start to terminal payload. Returns the outcome and the terminal envelope.
async fn run<G: AgentHost>(
    gw: &Arc<G>,
    emitter: &Emitter,
    request: SendRequest,
    cancel: CancellationToken,
    aborted: Arc<AtomicBool>,
) -> (RunOutcome, Option<Arc<Envelope>>) {
    let config = gw.config();
    let agent_cfg = &config.agent;
    let store = gw.store();
    let key = request.session_key.clone();
    let provider = gw.agent().provider();
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
        gw, emitter, &request, &model, &provider, &cancel, &aborted, &timed_out,
    )
    .await;
    timer.abort();
    result
}

fn error_event(emitter: &Emitter, error: &ProviderError) -> Option<Arc<Envelope>> {
    emitter.emit(ChatEvent {
        error: Some(RunError {
            kind: error.kind.as_str().into(),
            message: error.message.clone(),
            retryable: error.retryable,
        }),
        ..emitter.base("error")
    })
}

#[allow(clippy::too_many_arguments)]
async fn run_loop<G: AgentHost>(
    gw: &Arc<G>,
    emitter: &Emitter,
    request: &SendRequest,
    model: &str,
    provider: &Arc<dyn Provider>,
    cancel: &CancellationToken,
    aborted: &AtomicBool,
    timed_out: &AtomicBool,
) -> (RunOutcome, Option<Arc<Envelope>>) {
    let config = gw.config();
    let agent_cfg = &config.agent;
    let store = gw.store();
    let key = &request.session_key;
    let run_id = emitter.run_id.clone();
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
        user_message: Some(user_message),
        ..emitter.base("started")
    });
    let tool_list = gw.agent().tools();
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
    let mut total = Usage::default();
    let mut any_usage = false;
    let mut last_assistant: Option<TranscriptMessage> = None;
    for turn in 0..agent_cfg.max_turns {
        let context = match store
            .recent(key, agent_cfg.max_context_messages.max(1))
            .await
        {
            Ok(c) => prepare_context(c),
            Err(e) => {
                let error = ProviderError::new(
                    ErrorKind::Internal,
                    format!("cannot read the context: {e}"),
                    false,
                );
                return (RunOutcome::Error, error_event(emitter, &error));
            }
        };
        let turn_request = TurnRequest {
            model: model.to_string(),
            messages: context,
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
                write_aborted_results(gw, key, sid, &run_id, &all_calls[i..]).await;
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
            let output = match broken.iter().find(|(b, _)| b.id == call.id) {
                Some((_, reason)) => ToolOutput {
                    content: format!("not run: {reason}"),
                    is_error: true,
                },
                None => match tool_list.iter().find(|t| t.spec().name == call.name) {
                    None => ToolOutput {
                        content: format!("unknown tool `{}`", call.name),
                        is_error: true,
                    },
                    Some(tool) => call_tool(tool.as_ref(), &call.input, &ctx, cancel).await,
                },
            };
            let content = cut_output(output.content);
            let mut result = NewMessage::new(Role::Tool, content.clone());
            result.message.tool_call_id = Some(call.id.clone());
            result.message.is_error = Some(output.is_error);
            result.message.run_id = Some(run_id.clone());
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

/// How long a tool may take to stop by itself once its run is cancelled (to kill what it
/// started and say so) before it is dropped.
const TOOL_STOP_GRACE: Duration = Duration::from_millis(500);

/// Runs one tool call, which cannot outlive the run's cancellation: a tool (built-in, plugin)
/// that ignores its token gets [`TOOL_STOP_GRACE`], then its future is dropped.
async fn call_tool(
    tool: &dyn Tool,
    input: &serde_json::Value,
    ctx: &ToolContext,
    cancel: &CancellationToken,
) -> ToolOutput {
    let mut call = tool.call(input.clone(), ctx.clone());
    tokio::select! {
        biased;
        output = &mut call => output,
        _ = cancel.cancelled() => match tokio::time::timeout(TOOL_STOP_GRACE, &mut call).await {
            Ok(output) => output,
            Err(_) => ToolOutput {
                content: format!(
                    "aborted: the run was stopped and the tool `{}` did not stop by itself, so it was dropped",
                    tool.spec().name
                ),
                is_error: true,
            },
        },
    }
}

async fn write_aborted_results<G: AgentHost>(
    gw: &Arc<G>,
    key: &str,
    sid: Option<&str>,
    run_id: &str,
    calls: &[ToolCall],
) {
    let results = calls
        .iter()
        .map(|call| {
            let mut m = NewMessage::new(
                Role::Tool,
                "aborted: the run was stopped before this tool finished",
            );
            m.message.tool_call_id = Some(call.id.clone());
            m.message.is_error = Some(true);
            m.message.run_id = Some(run_id.to_string());
            m
        })
        .collect();
    let _ = gw.store().append_to(key, sid, results).await;
}

/// Checks message text: not blank, at most `MAX_CONTENT_BYTES`; errors name `field`.
pub fn validate_content(field: &str, text: &str) -> Result<(), Error> {
    if text.trim().is_empty() {
        return Err(Error::invalid_params(
            field,
            "expected non-empty text, found only whitespace",
        ));
    }
    if text.len() > MAX_CONTENT_BYTES {
        return Err(Error::invalid_params(
            field,
            format!(
                "expected at most {MAX_CONTENT_BYTES} bytes, found {}",
                text.len()
            ),
        ));
    }
    Ok(())
}

/// Checks `chat.send` params that types alone cannot.
pub fn validate_send(
    message: &str,
    idempotency_key: Option<&str>,
    model: Option<&str>,
) -> Result<(), Error> {
    validate_content("message", message)?;
    if let Some(k) = idempotency_key
        && crate::protocol::validate_session_key(k).is_err()
    {
        return Err(Error::invalid_params(
            "idempotencyKey",
            "expected 1 to 128 characters of A-Z a-z 0-9 . _ : -",
        ));
    }
    if let Some(m) = model
        && (m.trim().is_empty() || m.len() > 256)
    {
        return Err(Error::invalid_params(
            "model",
            "expected a model name of 1 to 256 characters",
        ));
    }
    Ok(())
}
