//! The run manager: starts or queues a run per `chat.send` (one lane per session, one run at a
//! time, later sends wait in order; a repeated idempotency key starts nothing), aborts runs,
//! and drives each lane with one worker task.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use std::collections::BTreeMap;

use arc_swap::ArcSwap;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, OnRestart};
use crate::events::Envelope;
use crate::protocol::{ChatEvent, RunEntry, RunOutcome, RunStatus, SendMode};
use crate::store::transcript::CompactionLine;

use super::AgentHost;
use super::approvals::Approvals;
use super::compaction::{Caller, CompactError, Compactor};
use super::emit::{Emitter, error_event};
use super::error::AgentError;
use super::policy::ToolPolicy;
use super::providers::{ErrorKind, Provider, ProviderError};
use super::run_loop::{RunEnd, RunInput, run};
use super::state::{
    IDEMPOTENCY_KEYS, IdempotencyCache, Pending, RunRecord, RunState, SendOutcome, SendRequest,
    State, Steer,
};
use super::tools::{self, Tool};

/// The agents' runtime: a provider per configured agent, the tools, and the runs.
pub struct Agent {
    providers: ArcSwap<BTreeMap<String, Arc<dyn Provider>>>,
    tools: ArcSwap<Vec<Arc<dyn Tool>>>,
    state: Mutex<State>,
    approvals: Approvals,
}

impl Agent {
    /// The runtime of `config`'s agents, with the built-in tools.
    pub fn new(config: &Config) -> Self {
        Self {
            providers: ArcSwap::from_pointee(providers_of(config)),
            tools: ArcSwap::from_pointee(tools::builtin()),
            state: Mutex::new(State::default()),
            approvals: Approvals::default(),
        }
    }

    /// The manager's bookkeeping, locked (a panic while it was held does not poison it).
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The provider of the agent `id` now, if it is configured.
    pub fn provider(&self, id: &str) -> Option<Arc<dyn Provider>> {
        self.providers.load().get(id).cloned()
    }

    /// Builds every agent's provider anew (configuration reload); runs in progress keep theirs.
    pub fn set_providers(&self, config: &Config) {
        self.providers.store(Arc::new(providers_of(config)));
    }

    /// The agent a call on session `key` runs with, changing nothing: an existing session's
    /// own (which `requested` must match, and which must still be configured), else
    /// `requested` or the default agent.
    pub fn agent_for<G: AgentHost>(
        &self,
        gw: &G,
        key: &str,
        requested: Option<&str>,
    ) -> Result<String, AgentError> {
        let config = gw.config();
        if let Some(id) = requested
            && config.agent(id).is_none()
        {
            return Err(AgentError::NoSuchAgent(id.to_string()));
        }
        match gw.store().get(key) {
            Ok(session) => {
                check_binding(&config, key, &session.agent_id, requested).map(|()| session.agent_id)
            }
            Err(_) => Ok(requested.unwrap_or(config.default_agent_id()).to_string()),
        }
    }

    /// The tools offered to the model.
    pub fn tools(&self) -> Arc<Vec<Arc<dyn Tool>>> {
        self.tools.load_full()
    }

    /// The tools offered to `agent`'s model: the built-in and plugin tools, then those of its
    /// MCP servers (`mcp_servers`, default all), without those its `tools.deny` names.
    pub fn tools_for<G: AgentHost>(
        &self,
        gw: &G,
        agent: &crate::config::AgentConfig,
    ) -> Arc<Vec<Arc<dyn Tool>>> {
        let mcp = gw.mcp_tools(agent.mcp_servers.as_deref());
        if mcp.is_empty() && agent.tools.deny.is_empty() {
            return self.tools();
        }
        let policy = ToolPolicy::new(&agent.tools);
        let mut all = self.tools().as_ref().clone();
        all.extend(mcp);
        all.retain(|t| !policy.denied(&t.spec().name));
        Arc::new(all)
    }

    /// The approvals of every run.
    pub fn approvals(&self) -> &Approvals {
        &self.approvals
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

    /// What every door does to start a run (`chat.send`, `chat.stream`, the OpenAI door): the
    /// session's agent, its provider's readiness ([`AgentError::NotReady`]), then
    /// [`send`](Self::send).
    pub async fn start<G: AgentHost>(
        &self,
        gw: &Arc<G>,
        request: SendRequest,
    ) -> Result<SendOutcome, AgentError> {
        let agent_id =
            self.agent_for(gw.as_ref(), &request.session_key, request.agent.as_deref())?;
        let provider = self
            .provider(&agent_id)
            .ok_or_else(|| AgentError::NoSuchAgent(agent_id.clone()))?;
        provider.ready().map_err(AgentError::NotReady)?;
        gw.claim(&request.session_key)
            .await
            .map_err(|e| AgentError::Store(crate::store::StoreError::Log(e)))?;
        self.send(gw, request).await
    }

    /// Waits until `run_id` is over: its terminal payload out and its end recorded (at once
    /// for a run not known).
    pub async fn finished(&self, run_id: &str) {
        let rx = self.state().runs.get(run_id).map(|r| r.done.subscribe());
        if let Some(mut rx) = rx {
            let _ = rx.wait_for(|done| *done).await;
        }
    }

    /// Starts (or queues, or steers into the active run) a run; a repeated idempotency key
    /// starts nothing. Answers once a run that starts now has its message on disk.
    pub async fn send<G: AgentHost>(
        &self,
        gw: &Arc<G>,
        request: SendRequest,
    ) -> Result<SendOutcome, AgentError> {
        let store = gw.store();
        let agent = self.agent_for(gw.as_ref(), &request.session_key, request.agent.as_deref())?;
        let session = store.ensure(&request.session_key, &agent).await?;
        // Created meanwhile by another call, for another agent?
        check_binding(
            &gw.config(),
            &request.session_key,
            &session.agent_id,
            request.agent.as_deref(),
        )?;
        let mut request = request;
        request.agent = Some(session.agent_id.clone());
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
        let (outcome, written, interrupted) = self.enqueue(gw, request)?;
        if let Some(active) = interrupted {
            // Its partial text is kept; the new run starts before any queued one.
            self.abort(gw, Some(&active), None).await?;
        }
        if let Some(rx) = written {
            // Acknowledged only once its message is durable (or the run failed to write it).
            let _ = rx.await;
        }
        Ok(outcome)
    }

    /// Puts a send in its lane under the manager's lock, as its mode says: the answer, the
    /// signal of its first write (a run that starts now), and the run it interrupts.
    #[allow(clippy::type_complexity)]
    fn enqueue<G: AgentHost>(
        &self,
        gw: &Arc<G>,
        request: SendRequest,
    ) -> Result<(SendOutcome, Option<oneshot::Receiver<()>>, Option<String>), AgentError> {
        let key = request.session_key.clone();
        let mut state = self.state();
        // Checked under the lock `shutdown` takes, so no run starts after shutdown began.
        if gw.is_shutting_down() {
            return Err(AgentError::ShuttingDown);
        }
        if let Some(idem) = &request.idempotency_key
            && let Some(existing) = state.existing_run(&key, idem)
        {
            // Checked again under this lock: two sends of one key cannot both start.
            return Ok((existing, None, None));
        }
        let active = state.in_progress(&key);
        match request.mode {
            SendMode::Reject => {
                let busy = active.clone().or_else(|| {
                    state
                        .lanes
                        .get(&key)
                        .and_then(|l| l.queue.front().map(|p| p.run_id.clone()))
                });
                if let Some(run_id) = busy {
                    return Err(AgentError::RunActive { key, run_id });
                }
            }
            SendMode::Steer => {
                if let Some(active) = &active
                    && let Some(record) = state.runs.get(active)
                {
                    let mut inbox = record.ctl.inbox();
                    if !inbox.closed {
                        inbox.steered.push_back(Steer {
                            message: request.message.clone(),
                            idempotency_key: request.idempotency_key.clone(),
                        });
                        drop(inbox);
                        if let Some(idem) = &request.idempotency_key {
                            state.remember_key(&key, idem, active);
                        }
                        let outcome = SendOutcome {
                            run_id: active.clone(),
                            status: RunStatus::Steered,
                            outcome: None,
                        };
                        return Ok((outcome, None, None));
                    }
                }
            }
            SendMode::Queue | SendMode::Interrupt => {}
        }
        let interrupt = request.mode == SendMode::Interrupt && active.is_some();
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        if let Some(idem) = &request.idempotency_key {
            state.remember_key(&key, idem, &run_id);
        }
        let (tx, rx) = oneshot::channel();
        let record = RunRecord::new(&key, request.agent.clone());
        let seq = record.ctl.seq.clone();
        state.runs.insert(run_id.clone(), record);
        let lane = state.lanes.entry(key.clone()).or_default();
        let position = if interrupt {
            0
        } else {
            // A run whose terminal payload is out no longer counts: this one is next.
            lane.queue.len() + usize::from(active.is_some())
        };
        let start_worker = lane.running.is_none() && lane.queue.is_empty();
        let pending = Pending {
            run_id: run_id.clone(),
            request,
            resume: None,
            written: (position == 0).then_some(tx),
            fail: None,
        };
        if interrupt {
            lane.queue.push_front(pending);
        } else {
            lane.queue.push_back(pending);
        }
        if start_worker {
            lane.running = Some(String::new());
        }
        if position > 0 {
            // Published under the lock: nothing of this run can come before it.
            let emitter = Emitter::with_seq(gw.hub(), &key, &run_id, seq);
            emitter.emit(ChatEvent {
                position: Some(position as u64),
                ..emitter.base("queued")
            });
        }
        drop(state);
        if start_worker {
            let gw = gw.clone();
            let key = key.clone();
            tokio::spawn(async move { lane_worker(gw, key).await });
        }
        let status = if position > 0 {
            RunStatus::Queued
        } else {
            RunStatus::Started
        };
        let outcome = SendOutcome {
            run_id,
            status,
            outcome: None,
        };
        let written = (position == 0).then_some(rx);
        Ok((outcome, written, if interrupt { active } else { None }))
    }

    /// Loads the idempotency keys of `key`'s current transcript (once per sessionId).
    async fn load_idempotency<G: AgentHost>(
        &self,
        gw: &Arc<G>,
        key: &str,
        session_id: &str,
    ) -> Result<(), AgentError> {
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
            *cache = IdempotencyCache::for_session(session_id);
            for (idem, run_id, outcome) in found {
                cache.insert(idem, run_id, outcome);
            }
        }
        Ok(())
    }

    /// The outcome of a run: its state, and its terminal envelope once done.
    pub fn run_info(&self, run_id: &str) -> Option<(bool, Option<Arc<Envelope>>)> {
        let state = self.state();
        let record = state.runs.get(run_id)?;
        // Ended once its terminal payload is out, even before the lane worker records it.
        let done = matches!(record.state, RunState::Done(_)) || record.ctl.outcome.get().is_some();
        Some((done, record.terminal.clone()))
    }

    /// Aborts `run_id` and/or the session's active run and queued runs; returns the runs aborted.
    pub async fn abort<G: AgentHost>(
        &self,
        gw: &Arc<G>,
        run_id: Option<&str>,
        session_key: Option<&str>,
    ) -> Result<Vec<String>, AgentError> {
        let mut targets: Vec<String> = Vec::new();
        {
            let state = self.state();
            if let Some(id) = run_id {
                let Some(record) = state.runs.get(id) else {
                    return Err(AgentError::NoSuchRun(id.to_string()));
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
                        r.ctl.aborted.store(true, Ordering::Release);
                        r.ctl.cancel.cancel();
                        waits.push(r.done.subscribe());
                        aborted.push(id.clone());
                        None
                    }
                    Some(r) if removed => Some((r.session_key.clone(), r.ctl.seq.clone())),
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

    /// The run of `key` in progress (from before its start to its terminal payload), or the
    /// first one queued behind it; none when idle.
    pub fn active_run(&self, key: &str) -> Option<String> {
        let state = self.state();
        state.in_progress(key).or_else(|| {
            state
                .lanes
                .get(key)
                .and_then(|l| l.queue.front().map(|p| p.run_id.clone()))
        })
    }

    /// Compacts `key`'s context now (`sessions.compact`), with the session's model; `None`
    /// when there is too little to compact. Refused while a run of the session is in progress.
    pub async fn compact<G: AgentHost>(
        &self,
        gw: &Arc<G>,
        key: &str,
        instructions: Option<&str>,
    ) -> Result<Option<CompactionLine>, AgentError> {
        let session = gw.store().get(key)?;
        if let Some(run_id) = self.active_run(key) {
            return Err(AgentError::RunActive {
                key: key.to_string(),
                run_id,
            });
        }
        let config = gw.config();
        let agent_id = session.agent_id.clone();
        let (Some(agent), Some(provider)) = (config.agent(&agent_id), self.provider(&agent_id))
        else {
            return Err(AgentError::AgentRemoved {
                key: key.to_string(),
                agent: agent_id,
            });
        };
        let model = session.model.unwrap_or_else(|| agent.model.clone());
        let compactor = Compactor::new(
            gw.store(),
            &provider,
            agent,
            &model,
            Caller {
                key,
                session_id: Some(&session.session_id),
                agent_id: &agent_id,
                run_id: None,
            },
            &CancellationToken::new(),
        );
        let done = match compactor.manual(instructions).await {
            Ok(done) => done,
            Err(CompactError::Store(e)) => return Err(e.into()),
            Err(CompactError::Summary(e)) => return Err(AgentError::Summary(e)),
            Err(CompactError::Cancelled) => return Ok(None),
        };
        Ok(done.map(|done| {
            // Outside any run: no runId, no runSeq.
            let base = ChatEvent {
                session_key: key.to_string(),
                state: "compacted".into(),
                ..Default::default()
            };
            gw.hub().emit(Some(key), &done.payload(base));
            done.line
        }))
    }

    /// Shutdown: suspends the active runs of agents with `on_restart = "resume"` (no terminal
    /// payload; the next start resumes them), aborts the others, drops every queued run with
    /// its `aborted`; returns the runs suspended.
    pub async fn shutdown<G: AgentHost>(&self, gw: &Arc<G>) -> Vec<String> {
        let config = gw.config();
        let mut suspended = Vec::new();
        let mut waits = Vec::new();
        {
            let state = self.state();
            for key in state.lanes.keys() {
                let Some(active) = state.in_progress(key) else {
                    continue;
                };
                let Some(record) = state.runs.get(&active) else {
                    continue;
                };
                let resumes = record
                    .agent_id
                    .as_deref()
                    .and_then(|id| config.agent(id))
                    .is_some_and(|a| a.on_restart == OnRestart::Resume);
                if resumes && record.state == RunState::InFlight {
                    record.ctl.suspended.store(true, Ordering::Release);
                    record.ctl.cancel.cancel();
                    waits.push(record.done.subscribe());
                    suspended.push(active);
                }
            }
        }
        let keys: Vec<String> = self.state().lanes.keys().cloned().collect();
        for key in keys {
            // The suspended runs are no longer active: this drops the queues, aborts the rest.
            let _ = self.abort(gw, None, Some(&key)).await;
        }
        for mut rx in waits {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|d| *d)).await;
        }
        suspended
    }

    /// Starts again, at the head of `key`'s queue, each steered message a run never read
    /// (in order): each is a run of its own, and its idempotency key now answers that run.
    fn requeue<G: AgentHost>(&self, gw: &Arc<G>, key: &str, leftover: Vec<Steer>) {
        if leftover.is_empty() || gw.is_shutting_down() {
            return;
        }
        let mut state = self.state();
        let agent = state
            .runs
            .values()
            .find(|r| r.session_key == key && r.agent_id.is_some())
            .and_then(|r| r.agent_id.clone());
        for (i, steer) in leftover.into_iter().enumerate() {
            let run_id = uuid::Uuid::new_v4().simple().to_string();
            if let Some(idem) = &steer.idempotency_key {
                state.remember_key(key, idem, &run_id);
            }
            state
                .runs
                .insert(run_id.clone(), RunRecord::new(key, agent.clone()));
            let request = SendRequest {
                session_key: key.to_string(),
                message: steer.message,
                idempotency_key: steer.idempotency_key,
                model: None,
                agent: agent.clone(),
                mode: SendMode::Queue,
            };
            let lane = state.lanes.entry(key.to_string()).or_default();
            lane.queue.insert(
                i.min(lane.queue.len()),
                Pending {
                    run_id,
                    request,
                    resume: None,
                    written: None,
                    fail: None,
                },
            );
        }
    }

    /// At startup: every run the transcripts show started (or suspended) and never ended is
    /// resumed, once, with its own `runId`; one already resumed once, or of an agent with
    /// `on_restart = "fail"` or no longer configured, ends `error {kind: "interrupted"}`.
    /// Returns how many runs it took up.
    pub fn resume_all<G: AgentHost>(&self, gw: &Arc<G>) -> usize {
        self.resume_where(gw, |_| true)
    }

    /// [`Self::resume_all`] for the sessions whose key passes `which` (cluster mode: a session
    /// taken over from a node that died).
    pub fn resume_where<G: AgentHost>(&self, gw: &Arc<G>, which: impl Fn(&str) -> bool) -> usize {
        let config = gw.config();
        let mut taken = 0;
        for (key, _session_id, open) in gw.store().open_runs() {
            if !which(&key) {
                continue;
            }
            let fail = match config.agent(&open.agent_id) {
                None => Some(format!(
                    "its agent `{}` is no longer configured",
                    open.agent_id
                )),
                Some(a) if a.on_restart == OnRestart::Fail => {
                    Some("its agent says on_restart = \"fail\"".to_string())
                }
                Some(_) if open.attempt >= 1 => Some("it was already resumed once".to_string()),
                Some(_) => None,
            };
            let request = SendRequest {
                session_key: key.clone(),
                message: String::new(),
                idempotency_key: open.idempotency_key.clone(),
                model: open.model.clone(),
                agent: Some(open.agent_id.clone()),
                mode: SendMode::Queue,
            };
            let mut state = self.state();
            if state.runs.contains_key(&open.run_id) {
                continue;
            }
            state.runs.insert(
                open.run_id.clone(),
                RunRecord::new(&key, Some(open.agent_id.clone())),
            );
            let lane = state.lanes.entry(key.clone()).or_default();
            let start_worker = lane.running.is_none() && lane.queue.is_empty();
            lane.queue.push_back(Pending {
                run_id: open.run_id.clone(),
                request,
                resume: Some(open.attempt + 1),
                written: None,
                fail,
            });
            if start_worker {
                lane.running = Some(String::new());
            }
            drop(state);
            if start_worker {
                let gw = gw.clone();
                tokio::spawn(async move { lane_worker(gw, key).await });
            }
            taken += 1;
        }
        if taken > 0 {
            tracing::info!(runs = taken, "taking up runs a restart interrupted");
        }
        taken
    }

    /// The runs queued, running or waiting for a person (of `session_key` only, when given).
    pub fn runs_list(&self, session_key: Option<&str>) -> Vec<RunEntry> {
        let state = self.state();
        let mut keys: Vec<&String> = state.lanes.keys().collect();
        keys.sort();
        keys.into_iter()
            .filter(|key| session_key.is_none_or(|k| k == key.as_str()))
            .flat_map(|key| self.runs_list_locked(&state, key))
            .collect()
    }

    /// One run: in progress, finished (in memory or in the run index), or `-32022`.
    pub fn run_get<G: AgentHost>(&self, gw: &G, run_id: &str) -> Result<RunEntry, AgentError> {
        {
            let state = self.state();
            if let Some(record) = state.runs.get(run_id) {
                let ended = match record.state {
                    RunState::Done(outcome) => Some(outcome),
                    _ => record.ctl.outcome.get().copied(),
                };
                if let Some(outcome) = ended {
                    return Ok(RunEntry::done(
                        run_id,
                        &record.session_key,
                        record.agent_id.clone(),
                        outcome,
                    ));
                }
                let key = record.session_key.clone();
                if let Some(entry) = self
                    .runs_list_locked(&state, &key)
                    .into_iter()
                    .find(|e| e.run_id == run_id)
                {
                    return Ok(entry);
                }
            }
        }
        match gw.store().finished_run(run_id) {
            Some(done) => Ok(RunEntry::done(
                run_id,
                &done.session_key,
                Some(done.agent_id),
                done.outcome,
            )),
            None => Err(AgentError::NoSuchRun(run_id.to_string())),
        }
    }

    fn runs_list_locked(&self, state: &State, key: &str) -> Vec<RunEntry> {
        let Some(lane) = state.lanes.get(key) else {
            return Vec::new();
        };
        let running = lane.running.iter().filter(|id| !id.is_empty());
        let queued = lane.queue.iter().map(|p| &p.run_id);
        running
            .chain(queued)
            .enumerate()
            .filter_map(|(ahead, id)| state.entry(id, ahead as u64))
            .collect()
    }

    /// While the active run of `key` waits for a person, `message` (an inject) is kept to be
    /// written right after that turn's tool results, and answered at once: the message with
    /// its id. `None` when no run of the session waits (write it now, at the boundary).
    pub fn defer_inject(
        &self,
        key: &str,
        mut message: crate::protocol::TranscriptMessage,
    ) -> Option<crate::protocol::TranscriptMessage> {
        let state = self.state();
        let active = state.in_progress(key)?;
        let record = state.runs.get(&active)?;
        let mut inbox = record.ctl.inbox();
        if !inbox.waiting {
            return None;
        }
        message.id = uuid::Uuid::new_v4().simple().to_string();
        message.ts = crate::util::now_ms();
        inbox.deferred.push(message.clone());
        Some(message)
    }

    /// Records how `run_id` ended.
    fn finish(&self, run_id: &str, outcome: RunOutcome, terminal: Option<Arc<Envelope>>) {
        self.state().finish(run_id, outcome, terminal);
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
                    let ctl = state.runs.get_mut(&p.run_id).map(|r| {
                        r.state = RunState::InFlight;
                        r.ctl.clone()
                    });
                    ctl.map(|c| (p, c))
                }
                None => {
                    state.lanes.remove(&key);
                    return;
                }
            }
        };
        let Some((pending, ctl)) = next else {
            continue;
        };
        gw.set_active_runs(gw.agent().active_runs());
        let run_id = pending.run_id.clone();
        let emitter = Arc::new(
            Emitter::with_seq(gw.hub(), &key, &run_id, ctl.seq.clone())
                .marking_end(ctl.ended.clone()),
        );
        let input = RunInput {
            request: pending.request,
            resume: pending.resume,
            written: pending.written,
            fail: pending.fail,
        };
        // In its own task: a panic in a tool or provider ends this run, not the lane.
        let task = {
            let (gw, emitter, ctl) = (gw.clone(), emitter.clone(), ctl.clone());
            tokio::spawn(async move { run(&gw, &emitter, input, ctl).await })
        };
        let end = match task.await {
            Ok(end) => end,
            Err(err) => {
                tracing::error!(run = %run_id, %err, "a run failed unexpectedly");
                ctl.cancel.cancel();
                let _ = ctl.outcome.set(RunOutcome::Error);
                let error =
                    ProviderError::new(ErrorKind::Internal, "the run failed unexpectedly", false);
                RunEnd::Ended {
                    outcome: RunOutcome::Error,
                    terminal: error_event(&emitter, &error),
                    leftover: Vec::new(),
                }
            }
        };
        match end {
            RunEnd::Ended {
                outcome,
                terminal,
                leftover,
            } => {
                let agent = gw.agent();
                agent.finish(&run_id, outcome, terminal);
                agent.requeue(&gw, &key, leftover);
            }
            RunEnd::Suspended => {
                // Shutdown: the process ends; the next start resumes it.
                if let Some(r) = gw.agent().state().runs.get(&run_id) {
                    r.done.send_replace(true);
                }
                gw.set_active_runs(gw.agent().active_runs());
                return;
            }
        }
        gw.store().publish_updated(&key);
        gw.set_active_runs(gw.agent().active_runs());
    }
}

/// A provider for each configured agent.
fn providers_of(config: &Config) -> BTreeMap<String, Arc<dyn Provider>> {
    config
        .agents
        .iter()
        .map(|(id, agent)| (id.clone(), super::providers::build(agent)))
        .collect()
}

/// Whether a call naming `requested` may run on a session of `session_agent`.
fn check_binding(
    config: &Config,
    key: &str,
    session_agent: &str,
    requested: Option<&str>,
) -> Result<(), AgentError> {
    if let Some(id) = requested
        && id != session_agent
    {
        return Err(AgentError::OtherAgent {
            key: key.to_string(),
            session_agent: session_agent.to_string(),
            requested: id.to_string(),
        });
    }
    if config.agent(session_agent).is_none() {
        return Err(AgentError::AgentRemoved {
            key: key.to_string(),
            agent: session_agent.to_string(),
        });
    }
    Ok(())
}
