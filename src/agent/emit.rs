//! The publisher of one run's `chat` payloads: every payload of a run gets the next `runSeq`,
//! and the terminal ones (`final`, `aborted`, `error`) are tagged as ending the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::events::{Envelope, EventHub, RunTag};
use crate::protocol::{ChatEvent, RunError};

use super::providers::ProviderError;

/// Publishes a run's `chat` payloads with increasing `runSeq`.
pub(super) struct Emitter {
    hub: Arc<EventHub>,
    session_key: String,
    run_id: String,
    seq: Arc<AtomicU64>,
    /// Set before a terminal payload is published.
    ended: Option<Arc<AtomicBool>>,
}

impl Emitter {
    /// An emitter for `run_id` of `session_key` whose `runSeq` counter is `seq` (shared by every
    /// emitter of the run, so payloads published before the run starts keep their order).
    pub(super) fn with_seq(
        hub: &Arc<EventHub>,
        session_key: &str,
        run_id: &str,
        seq: Arc<AtomicU64>,
    ) -> Self {
        Self {
            hub: hub.clone(),
            session_key: session_key.into(),
            run_id: run_id.into(),
            seq,
            ended: None,
        }
    }

    /// This emitter, setting `ended` before it publishes a terminal payload (so a client that
    /// got the payload never finds the run still in progress).
    pub(super) fn marking_end(mut self, ended: Arc<AtomicBool>) -> Self {
        self.ended = Some(ended);
        self
    }

    /// Publishes another event of the run's session (`approvals.changed`, `injected`).
    pub(super) fn publish<E: crate::protocol::Event>(&self, event: &E) {
        self.hub.emit(Some(&self.session_key), event);
    }

    /// The run this emitter publishes for.
    pub(super) fn run_id(&self) -> &str {
        &self.run_id
    }

    /// A payload of this run in `state`, every other field empty.
    pub(super) fn base(&self, state: &str) -> ChatEvent {
        ChatEvent {
            run_id: Some(self.run_id.clone()),
            session_key: self.session_key.clone(),
            state: state.into(),
            ..Default::default()
        }
    }

    /// Publishes `event` with the next `runSeq`; returns its envelope.
    pub(super) fn emit(&self, mut event: ChatEvent) -> Option<Arc<Envelope>> {
        event.run_seq = Some(self.seq.fetch_add(1, Ordering::Relaxed));
        let run = RunTag {
            run_id: &self.run_id,
            ends_run: matches!(event.state.as_str(), "final" | "aborted" | "error"),
        };
        if run.ends_run
            && let Some(ended) = &self.ended
        {
            ended.store(true, Ordering::Release);
        }
        self.hub
            .emit_tagged(Some(&self.session_key), Some(run), &event)
    }
}

/// Publishes the run's terminal `error` payload for `error`; returns its envelope.
pub(super) fn error_event(emitter: &Emitter, error: &ProviderError) -> Option<Arc<Envelope>> {
    emitter.emit(ChatEvent {
        error: Some(RunError {
            kind: error.kind.as_str().into(),
            message: error.message.clone(),
            retryable: error.retryable,
        }),
        ..emitter.base("error")
    })
}
