//! The run manager: starts or queues a run per `chat.send` (one lane per session, one run at a
//! time, later sends wait in order; a repeated idempotency key starts nothing), aborts runs,
//! and drives each lane with one worker task.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use std::collections::BTreeMap;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::events::Envelope;
use crate::protocol::{ChatEvent, RunOutcome, RunStatus};
use crate::store::transcript::CompactionLine;

use super::AgentHost;
use super::compaction::{CompactError, Compactor};
use super::emit::{Emitter, error_event};
use super::error::AgentError;
use super::providers::{ErrorKind, Provider, ProviderError};
use super::run_loop::run;
use super::state::{
    IDEMPOTENCY_KEYS, IdempotencyCache, Pending, RunRecord, RunState, SendOutcome, SendRequest,
    State,
};
use super::tools::{self, Tool};

/// The agents' runtime: a provider per configured agent, the tools, and the runs.
pub struct Agent {
    providers: ArcSwap<BTreeMap<String, Arc<dyn Provider>>>,
    tools: ArcSwap<Vec<Arc<dyn Tool>>>,
    state: Mutex<State>,
}

impl Agent {
    /// The runtime of `config`'s agents, with the built-in tools.
    pub fn new(config: &Config) -> Self {
        Self {
            providers: ArcSwap::from_pointee(providers_of(config)),
            tools: ArcSwap::from_pointee(tools::builtin()),
            state: Mutex::new(State::default()),
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
    /// MCP servers (`mcp_servers`, default all).
    pub fn tools_for<G: AgentHost>(
        &self,
        gw: &G,
        agent: &crate::config::AgentConfig,
    ) -> Arc<Vec<Arc<dyn Tool>>> {
        let mcp = gw.mcp_tools(agent.mcp_servers.as_deref());
        if mcp.is_empty() {
            return self.tools();
        }
        let mut all = self.tools().as_ref().clone();
        all.extend(mcp);
        Arc::new(all)
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
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let (done, _) = watch::channel(false);
        let position;
        {
            let mut state = self.state();
            // Checked under the lock `abort_all` takes, so no run starts after shutdown began.
            if gw.is_shutting_down() {
                return Err(AgentError::ShuttingDown);
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
            let seq = Arc::new(AtomicU64::new(0));
            state.runs.insert(
                run_id.clone(),
                RunRecord {
                    session_key: request.session_key.clone(),
                    seq: seq.clone(),
                    state: RunState::Queued,
                    cancel: CancellationToken::new(),
                    aborted: Arc::new(AtomicBool::new(false)),
                    ended: Arc::new(AtomicBool::new(false)),
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

    /// The run of `key` in progress (from before its start to its terminal payload), or the
    /// first one queued behind it; none when idle.
    pub fn active_run(&self, key: &str) -> Option<String> {
        let state = self.state();
        let lane = state.lanes.get(key)?;
        let in_progress = |id: &String| {
            !id.is_empty()
                && state
                    .runs
                    .get(id)
                    .is_some_and(|r| !r.ended.load(Ordering::Acquire))
        };
        lane.running
            .clone()
            .filter(in_progress)
            .or_else(|| lane.queue.front().map(|p| p.run_id.clone()))
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
            key,
            Some(&session.session_id),
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

    /// Aborts every run (shutdown).
    pub async fn abort_all<G: AgentHost>(&self, gw: &Arc<G>) {
        let keys: Vec<String> = self.state().lanes.keys().cloned().collect();
        for key in keys {
            let _ = self.abort(gw, None, Some(&key)).await;
        }
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
                    let record = state.runs.get_mut(&p.run_id).map(|r| {
                        r.state = RunState::InFlight;
                        (
                            r.cancel.clone(),
                            r.aborted.clone(),
                            r.seq.clone(),
                            r.ended.clone(),
                        )
                    });
                    record.map(|(c, a, q, e)| (p, c, a, q, e))
                }
                None => {
                    state.lanes.remove(&key);
                    return;
                }
            }
        };
        let Some((pending, cancel, aborted, seq, ended)) = next else {
            continue;
        };
        gw.set_active_runs(gw.agent().active_runs());
        let run_id = pending.run_id.clone();
        let emitter = Arc::new(Emitter::with_seq(gw.hub(), &key, &run_id, seq).marking_end(ended));
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
