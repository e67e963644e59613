//! A webhook's own queue: at most [`CAPACITY`] envelopes, the oldest dropped first when full.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::events::Envelope;

/// Envelopes a webhook keeps waiting at most (the one being delivered not counted).
pub const CAPACITY: usize = 1_000;

/// A bounded FIFO of envelopes with a wake-up for its one consumer.
pub(super) struct Queue {
    items: Mutex<VecDeque<Arc<Envelope>>>,
    capacity: usize,
    ready: Notify,
}

impl Queue {
    /// An empty queue of `capacity` envelopes.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Envelope>>> {
        // A poisoned lock only means a panic elsewhere; a VecDeque is never left half-updated.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `env`; returns the queue's length and how many of the oldest were dropped for it.
    pub(super) fn push(&self, env: Arc<Envelope>) -> (usize, u64) {
        let mut items = self.lock();
        let mut dropped = 0;
        while items.len() >= self.capacity {
            items.pop_front();
            dropped += 1;
        }
        items.push_back(env);
        let len = items.len();
        drop(items);
        self.ready.notify_one();
        (len, dropped)
    }

    /// The oldest envelope, waiting for one; with the length left. Cancel-safe.
    pub(super) async fn pop(&self) -> (Arc<Envelope>, usize) {
        loop {
            let notified = self.ready.notified();
            {
                let mut items = self.lock();
                if let Some(env) = items.pop_front() {
                    return (env, items.len());
                }
            }
            // `notify_one` stores a permit when nobody waits, so a push between the look
            // above and this wait is not lost.
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(seq: u64) -> Arc<Envelope> {
        Arc::new(Envelope {
            seq,
            event: "a".into(),
            session_key: None,
            json: format!("{{\"seq\":{seq}}}").into(),
            control: false,
            run_id: None,
            ends_run: false,
            state: None,
        })
    }

    #[tokio::test]
    async fn keeps_the_newest_and_drops_the_oldest_first() {
        let q = Queue::new(3);
        for seq in 1..=3 {
            assert_eq!(q.push(env(seq)), (seq as usize, 0));
        }
        assert_eq!(q.push(env(4)), (3, 1));
        assert_eq!(q.push(env(5)), (3, 1));
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(q.pop().await.0.seq);
        }
        assert_eq!(seen, vec![3, 4, 5]);
        // A push before the wait wakes it.
        q.push(env(6));
        let (e, left) = q.pop().await;
        assert_eq!((e.seq, left), (6, 0));
    }
}
