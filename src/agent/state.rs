//! The run manager's bookkeeping, behind the agent's one lock: what a send asked for, a record
//! per run (state, and the controls it shares with the running loop), a lane per session (the
//! run in flight and the queue behind it), and the idempotency keys of each session's current
//! transcript.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::events::Envelope;
use crate::protocol::{RunEntry, RunOutcome, RunPhase, RunStatus, SendMode, TranscriptMessage};

/// Idempotency keys remembered per session.
pub(super) const IDEMPOTENCY_KEYS: usize = 1000;
/// Finished runs remembered (for `chat.abort` and `chat.stream` of a done key).
const FINISHED_RUNS: usize = 10_000;

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
    /// The agent the call names (the run manager sets the session's own before the run).
    pub agent: Option<String>,
    /// What to do while a run of the session is active.
    pub mode: SendMode,
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

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunState {
    Queued,
    InFlight,
    Done(RunOutcome),
}

/// A message given to a run in progress (`mode: "steer"`), written at its next boundary.
#[derive(Debug, Clone)]
pub(super) struct Steer {
    pub(super) message: String,
    pub(super) idempotency_key: Option<String>,
}

/// What reaches a run in progress from outside, behind its own small lock.
#[derive(Default)]
pub(super) struct Inbox {
    /// Steered messages not yet written.
    pub(super) steered: VecDeque<Steer>,
    /// The run is ending: a steer now starts a run of its own.
    pub(super) closed: bool,
    /// Set while the run waits for a person (under this lock, so that an inject sees it).
    pub(super) waiting: bool,
    /// Messages injected while the run waited for a person, written after its tool results.
    pub(super) deferred: Vec<TranscriptMessage>,
}

/// Time a run spent waiting for a person (which does not count against its run timeout).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Pause {
    pub(super) total: Duration,
    pub(super) since: Option<Instant>,
}

/// What a run in progress and its manager share.
pub(super) struct RunCtl {
    pub(super) cancel: CancellationToken,
    /// Stopped by `chat.abort` (or a reset, a delete, an interrupt).
    pub(super) aborted: AtomicBool,
    /// Stopped by a shutdown that suspends it (it resumes at the next start).
    pub(super) suspended: AtomicBool,
    /// The next `runSeq`, shared by every emitter of the run.
    pub(super) seq: Arc<AtomicU64>,
    /// Set when its terminal payload is published (before the lane worker records the end).
    pub(super) ended: Arc<AtomicBool>,
    /// The model call it is at.
    pub(super) turn: AtomicU32,
    /// When it started (ms since the epoch; 0 while queued).
    pub(super) started_at: AtomicU64,
    pub(super) inbox: Mutex<Inbox>,
    pub(super) pause: watch::Sender<Pause>,
    /// How it ended, set just before its terminal payload is published (the lane worker
    /// records the end a moment later; a repeated key in between already answers `done`).
    pub(super) outcome: std::sync::OnceLock<RunOutcome>,
}

impl RunCtl {
    pub(super) fn new() -> Self {
        Self {
            cancel: CancellationToken::new(),
            aborted: AtomicBool::new(false),
            suspended: AtomicBool::new(false),
            seq: Arc::new(AtomicU64::new(0)),
            ended: Arc::new(AtomicBool::new(false)),
            turn: AtomicU32::new(0),
            started_at: AtomicU64::new(0),
            inbox: Mutex::new(Inbox::default()),
            pause: watch::Sender::new(Pause::default()),
            outcome: std::sync::OnceLock::new(),
        }
    }

    /// The inbox, locked (a panic while it was held does not poison it).
    pub(super) fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether it waits for a person now.
    pub(super) fn is_waiting(&self) -> bool {
        self.inbox().waiting
    }

    /// Starts or ends a wait for a person: the run timeout stops counting meanwhile.
    pub(super) fn set_waiting(&self, waiting: bool) {
        self.inbox().waiting = waiting;
        self.pause.send_modify(|p| match (waiting, p.since) {
            (true, None) => p.since = Some(Instant::now()),
            (false, Some(since)) => {
                p.total += since.elapsed();
                p.since = None;
            }
            _ => {}
        });
    }

    /// Whether the run was stopped to be suspended.
    pub(super) fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::Acquire)
    }
}

/// What the manager knows of one run.
pub(super) struct RunRecord {
    pub(super) session_key: String,
    pub(super) agent_id: Option<String>,
    pub(super) state: RunState,
    pub(super) ctl: Arc<RunCtl>,
    pub(super) done: watch::Sender<bool>,
    pub(super) terminal: Option<Arc<Envelope>>,
}

impl RunRecord {
    /// A new record of a run of `session_key`, queued.
    pub(super) fn new(session_key: &str, agent_id: Option<String>) -> Self {
        Self {
            session_key: session_key.to_string(),
            agent_id,
            state: RunState::Queued,
            ctl: Arc::new(RunCtl::new()),
            done: watch::Sender::new(false),
            terminal: None,
        }
    }
}

/// A run waiting in its lane.
pub(super) struct Pending {
    pub(super) run_id: String,
    pub(super) request: SendRequest,
    /// Resuming after a restart: the attempt (1 for the first).
    pub(super) resume: Option<u32>,
    /// Told once the run's first lines (its marker and user message) are on disk.
    pub(super) written: Option<oneshot::Sender<()>>,
    /// Resuming is refused (why): the run ends `error {kind: "interrupted"}`.
    pub(super) fail: Option<String>,
}

/// A session's lane: the run in flight (empty while the worker has not popped the queue yet)
/// and the runs queued behind it.
#[derive(Default)]
pub(super) struct Lane {
    pub(super) running: Option<String>,
    pub(super) queue: VecDeque<Pending>,
}

/// The idempotency keys of one session's current transcript (`session_id`): key → run and,
/// once known, its outcome; the oldest are forgotten past [`IDEMPOTENCY_KEYS`].
#[derive(Default)]
pub(super) struct IdempotencyCache {
    pub(super) session_id: String,
    pub(super) keys: HashMap<String, (String, Option<RunOutcome>)>,
    order: VecDeque<String>,
}

impl IdempotencyCache {
    /// A cache for the transcript `session_id`, empty.
    pub(super) fn for_session(session_id: &str) -> Self {
        Self {
            session_id: session_id.to_string(),
            ..Default::default()
        }
    }

    /// Remembers `key` → `run_id`, forgetting the oldest key past the limit.
    pub(super) fn insert(&mut self, key: String, run_id: String, outcome: Option<RunOutcome>) {
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

/// Everything behind the agent's lock.
#[derive(Default)]
pub(super) struct State {
    pub(super) lanes: HashMap<String, Lane>,
    pub(super) runs: HashMap<String, RunRecord>,
    finished: VecDeque<String>,
    pub(super) idempotency: HashMap<String, IdempotencyCache>,
}

impl State {
    /// The run of `key` in progress: started (or about to), its terminal payload not yet out.
    pub(super) fn in_progress(&self, key: &str) -> Option<String> {
        let lane = self.lanes.get(key)?;
        lane.running.clone().filter(|id| {
            !id.is_empty()
                && self
                    .runs
                    .get(id)
                    .is_some_and(|r| !r.ctl.ended.load(Ordering::Acquire))
        })
    }

    /// `runs.*`'s entry of the run `id` in progress, `position` runs ahead of it if queued.
    pub(super) fn entry(&self, id: &str, position: u64) -> Option<RunEntry> {
        let record = self.runs.get(id)?;
        let ctl = &record.ctl;
        let (state, position, started_at, turn) = match record.state {
            RunState::Queued => (RunPhase::Queued, Some(position), None, None),
            RunState::InFlight => {
                let started = ctl.started_at.load(Ordering::Relaxed);
                let phase = if ctl.is_waiting() {
                    RunPhase::WaitingApproval
                } else {
                    RunPhase::Running
                };
                (
                    phase,
                    None,
                    (started > 0).then_some(started),
                    Some(ctl.turn.load(Ordering::Relaxed)),
                )
            }
            RunState::Done(_) => return None,
        };
        Some(RunEntry {
            run_id: id.to_string(),
            session_key: record.session_key.clone(),
            agent_id: record.agent_id.clone(),
            state,
            position,
            started_at,
            turn,
            outcome: None,
        })
    }

    /// Remembers that `idem` of session `key` answers `run_id`.
    pub(super) fn remember_key(&mut self, key: &str, idem: &str, run_id: &str) {
        self.idempotency.entry(key.to_string()).or_default().insert(
            idem.to_string(),
            run_id.to_string(),
            None,
        );
    }

    /// The run an idempotency key of `session_key` already started, with its status now.
    pub(super) fn existing_run(&self, session_key: &str, key: &str) -> Option<SendOutcome> {
        let (run_id, outcome) = self
            .idempotency
            .get(session_key)
            .and_then(|c| c.keys.get(key))
            .cloned()?;
        let record = self.runs.get(&run_id);
        let ended = record.and_then(|r| r.ctl.outcome.get().copied());
        let (status, outcome) = match record.map(|r| r.state) {
            Some(RunState::InFlight) if ended.is_some() => (RunStatus::Done, ended),
            Some(RunState::Queued) => (RunStatus::Queued, None),
            Some(RunState::InFlight) => (RunStatus::InFlight, None),
            Some(RunState::Done(o)) => (RunStatus::Done, Some(o)),
            // Neither in memory nor ended in the transcript: a run no restart resumed.
            None => (RunStatus::Done, Some(outcome.unwrap_or(RunOutcome::Error))),
        };
        Some(SendOutcome {
            run_id,
            status,
            outcome,
        })
    }

    /// Records that `run_id` ended with `outcome` and `terminal`, wakes who waits for it, and
    /// forgets the oldest finished runs past [`FINISHED_RUNS`].
    pub(super) fn finish(
        &mut self,
        run_id: &str,
        outcome: RunOutcome,
        terminal: Option<Arc<Envelope>>,
    ) {
        if let Some(r) = self.runs.get_mut(run_id) {
            r.state = RunState::Done(outcome);
            r.terminal = terminal;
            r.done.send_replace(true);
        }
        let key = self.runs.get(run_id).map(|r| r.session_key.clone());
        if let Some(key) = key
            && let Some(cache) = self.idempotency.get_mut(&key)
        {
            for (_, entry) in cache.keys.iter_mut().filter(|(_, (id, _))| id == run_id) {
                entry.1 = Some(outcome);
            }
        }
        self.finished.push_back(run_id.to_string());
        while self.finished.len() > FINISHED_RUNS {
            if let Some(old) = self.finished.pop_front() {
                self.runs.remove(&old);
            }
        }
    }
}
