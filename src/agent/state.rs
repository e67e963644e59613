//! The run manager's bookkeeping, behind the agent's one lock: what a send asked for, a record
//! per run (state, cancellation, `runSeq`), a lane per session (the run in flight and the queue
//! behind it), and the idempotency keys of each session's current transcript.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::events::Envelope;
use crate::protocol::{RunOutcome, RunStatus};

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

/// What the manager knows of one run.
pub(super) struct RunRecord {
    pub(super) session_key: String,
    /// The next `runSeq`, shared by every emitter of the run.
    pub(super) seq: Arc<AtomicU64>,
    pub(super) state: RunState,
    pub(super) cancel: CancellationToken,
    pub(super) aborted: Arc<AtomicBool>,
    /// Set when its terminal payload is published (before the lane worker records the end).
    pub(super) ended: Arc<AtomicBool>,
    pub(super) done: watch::Sender<bool>,
    pub(super) terminal: Option<Arc<Envelope>>,
}

/// A run waiting in its lane.
pub(super) struct Pending {
    pub(super) run_id: String,
    pub(super) request: SendRequest,
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
    /// The run an idempotency key of `session_key` already started, with its status now.
    pub(super) fn existing_run(&self, session_key: &str, key: &str) -> Option<SendOutcome> {
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
            let _ = r.done.send(true);
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
