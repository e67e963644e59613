//! The replay ring (the latest events, bounded in count and in bytes) and the decision of what
//! a subscriber resuming after `afterSeq` of an epoch receives before the live stream.

use std::collections::VecDeque;
use std::sync::Arc;

use super::envelope::Envelope;
use crate::protocol::{GapEvent, GapReason};

/// The events kept for replay, oldest first.
#[derive(Default)]
pub(super) struct ReplayRing {
    events: VecDeque<Arc<Envelope>>,
    bytes: usize,
}

impl ReplayRing {
    /// Keeps `env`, then forgets the oldest events while more than `capacity` are kept or they
    /// take more than `max_bytes` (the newest alone always fits the byte bound).
    pub(super) fn push(&mut self, env: Arc<Envelope>, capacity: usize, max_bytes: usize) {
        self.bytes += env.json.len();
        self.events.push_back(env);
        while self.events.len() > capacity || (self.bytes > max_bytes && self.events.len() > 1) {
            if let Some(old) = self.events.pop_front() {
                self.bytes -= old.json.len();
            }
        }
    }

    /// The `seq` of the oldest event kept.
    pub(super) fn oldest_seq(&self) -> Option<u64> {
        self.events.front().map(|e| e.seq)
    }

    /// The events kept, newest first.
    pub(super) fn newest_first(&self) -> impl Iterator<Item = &Arc<Envelope>> {
        self.events.iter().rev()
    }

    /// The events kept whose `seq` is above `after`, oldest first.
    pub(super) fn after(&self, after: u64) -> impl Iterator<Item = &Arc<Envelope>> {
        self.events.iter().filter(move |e| e.seq > after)
    }
}

/// Why a subscription could not start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubscribeError {
    /// `afterSeq` is beyond the latest `seq` of this epoch.
    #[error("afterSeq {after} is ahead of the latest seq {latest} of this epoch")]
    AheadOfLatest {
        /// What the client sent.
        after: u64,
        /// The latest seq.
        latest: u64,
    },
}

/// What a new subscriber receives before the live events.
#[derive(Debug, PartialEq)]
pub(super) struct Resume {
    /// A `gap` to announce first, and the `seq` its envelope carries: resuming from that `seq`
    /// replays exactly what follows the gap.
    pub gap: Option<(GapEvent, u64)>,
    /// Replay the kept events (those the filter passes) whose `seq` is above this one; `None`
    /// replays nothing.
    pub replay_after: Option<u64>,
}

/// Decides what a subscriber resuming after `after_seq` receives first, given the latest
/// `seq` published and the oldest one still kept; `restart` says the client's epoch is another
/// lifetime's.
///
/// - Another epoch: `gap {restart}` (0..0), then every event kept: the client's `seq`s mean
///   nothing here.
/// - `after_seq` beyond the latest: refused.
/// - `after_seq` older than the ring: `gap {expired}` for what was forgotten, then the rest.
/// - Neither: live events only.
pub(super) fn resume(
    latest: u64,
    oldest_kept: Option<u64>,
    after_seq: Option<u64>,
    restart: bool,
) -> Result<Resume, SubscribeError> {
    if restart {
        let before = oldest_kept.map_or(latest, |oldest| oldest - 1);
        let gap = GapEvent {
            from_seq: 0,
            to_seq: 0,
            reason: GapReason::Restart,
        };
        // Every event kept has a `seq` above 0.
        return Ok(Resume {
            gap: Some((gap, before)),
            replay_after: Some(0),
        });
    }
    let Some(after) = after_seq else {
        return Ok(Resume {
            gap: None,
            replay_after: None,
        });
    };
    if after > latest {
        return Err(SubscribeError::AheadOfLatest { after, latest });
    }
    let oldest = oldest_kept.unwrap_or(latest + 1);
    let gap = (after + 1 < oldest).then(|| {
        let gap = GapEvent {
            from_seq: after + 1,
            to_seq: oldest - 1,
            reason: GapReason::Expired,
        };
        (gap, oldest - 1)
    });
    Ok(Resume {
        gap,
        replay_after: Some(after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Filter;
    use crate::events::testkit::{limits, next_event};
    use crate::events::{EventHub, HubLimits};
    use serde_json::json;

    fn env(seq: u64, bytes: usize) -> Arc<Envelope> {
        Arc::new(Envelope {
            seq,
            event: "a".into(),
            session_key: None,
            json: "x".repeat(bytes).into(),
            control: false,
            run_id: None,
            ends_run: false,
            state: None,
        })
    }

    fn seqs(ring: &ReplayRing, after: u64) -> Vec<u64> {
        ring.after(after).map(|e| e.seq).collect()
    }

    #[test]
    fn the_ring_is_bounded_in_count_and_bytes() {
        let mut ring = ReplayRing::default();
        for seq in 1..=5 {
            ring.push(env(seq, 10), 3, usize::MAX);
        }
        assert_eq!(seqs(&ring, 0), vec![3, 4, 5]);
        assert_eq!(ring.oldest_seq(), Some(3));
        assert_eq!(seqs(&ring, 4), vec![5]);

        let mut ring = ReplayRing::default();
        for seq in 1..=5 {
            ring.push(env(seq, 10), 100, 25);
        }
        assert_eq!(seqs(&ring, 0), vec![4, 5], "20 of 25 bytes");
        ring.push(env(6, 100), 100, 25);
        assert_eq!(
            seqs(&ring, 0),
            vec![6],
            "one event larger than the bound is kept"
        );
        assert_eq!(ring.bytes, 100);

        let mut ring = ReplayRing::default();
        ring.push(env(1, 1), 0, usize::MAX);
        assert_eq!(ring.oldest_seq(), None, "a ring of no events keeps none");
        assert_eq!(ring.bytes, 0);
    }

    fn gap(from_seq: u64, to_seq: u64, reason: GapReason, seq: u64) -> Option<(GapEvent, u64)> {
        Some((
            GapEvent {
                from_seq,
                to_seq,
                reason,
            },
            seq,
        ))
    }

    #[test]
    fn resume_decisions() {
        // Live only.
        assert_eq!(
            resume(10, Some(5), None, false).ok(),
            Some(Resume {
                gap: None,
                replay_after: None
            })
        );
        // Within the ring: replay after it, no gap.
        for after in [4, 7, 10] {
            assert_eq!(
                resume(10, Some(5), Some(after), false).ok(),
                Some(Resume {
                    gap: None,
                    replay_after: Some(after)
                }),
                "{after}"
            );
        }
        // Older than the ring: what was forgotten is announced, its seq the last forgotten.
        assert_eq!(
            resume(10, Some(5), Some(2), false).ok(),
            Some(Resume {
                gap: gap(3, 4, GapReason::Expired, 4),
                replay_after: Some(2)
            })
        );
        // An empty ring forgot everything up to the latest.
        assert_eq!(
            resume(10, None, Some(3), false).ok(),
            Some(Resume {
                gap: gap(4, 10, GapReason::Expired, 10),
                replay_after: Some(3)
            })
        );
        assert_eq!(
            resume(10, None, Some(10), false).ok(),
            Some(Resume {
                gap: None,
                replay_after: Some(10)
            })
        );
        // Ahead of the latest: refused.
        assert!(matches!(
            resume(10, Some(5), Some(11), false),
            Err(SubscribeError::AheadOfLatest {
                after: 11,
                latest: 10
            })
        ));
    }

    #[test]
    fn a_restart_replays_everything_kept_whatever_the_after_seq() {
        for after in [None, Some(3), Some(99)] {
            assert_eq!(
                resume(10, Some(5), after, true).ok(),
                Some(Resume {
                    gap: gap(0, 0, GapReason::Restart, 4),
                    replay_after: Some(0)
                }),
                "{after:?}"
            );
        }
        assert_eq!(
            resume(10, None, None, true).ok(),
            Some(Resume {
                gap: gap(0, 0, GapReason::Restart, 10),
                replay_after: Some(0)
            })
        );
    }

    #[tokio::test]
    async fn replay_then_live_without_hole() {
        let hub = EventHub::new(limits(64, 64));
        for i in 0..10 {
            hub.publish("a", None, &json!(i));
        }
        let mut sub = hub
            .subscribe(Filter::default_all(), Some(4), Some(&hub.epoch()))
            .expect("subscribes");
        hub.publish("a", None, &json!(10));
        let mut got = Vec::new();
        for _ in 0..7 {
            got.push(next_event(&mut sub).await["seq"].as_u64().unwrap_or(0));
        }
        assert_eq!(got, vec![5, 6, 7, 8, 9, 10, 11]);
    }

    #[tokio::test]
    async fn expired_and_restart_gaps() {
        let hub = EventHub::new(limits(64, 3));
        for i in 0..10 {
            hub.publish("a", None, &json!(i));
        }
        let mut sub = hub
            .subscribe(Filter::default_all(), Some(2), None)
            .expect("subscribes");
        let gap = next_event(&mut sub).await;
        assert_eq!(gap["event"], "gap");
        assert_eq!(
            gap["payload"],
            json!({"fromSeq": 3, "toSeq": 7, "reason": "expired"})
        );
        assert_eq!(next_event(&mut sub).await["seq"], 8);

        let mut sub = hub
            .subscribe(Filter::default_all(), Some(2), Some("old"))
            .expect("subscribes");
        let gap = next_event(&mut sub).await;
        assert_eq!(
            gap["payload"],
            json!({"fromSeq": 0, "toSeq": 0, "reason": "restart"})
        );
        assert_eq!(next_event(&mut sub).await["seq"], 8);
        assert!(
            hub.subscribe(Filter::default_all(), Some(11), None)
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_hub_replays_within_its_byte_bound() {
        let hub = EventHub::new(HubLimits {
            replay_max_bytes: 1,
            ..limits(64, 64)
        });
        for i in 0..5 {
            hub.publish("a", None, &json!(i));
        }
        let mut sub = hub
            .subscribe(Filter::default_all(), Some(0), None)
            .expect("subscribes");
        let gap = next_event(&mut sub).await;
        assert_eq!(
            gap["payload"],
            json!({"fromSeq": 1, "toSeq": 4, "reason": "expired"})
        );
        assert_eq!(next_event(&mut sub).await["seq"], 5);
    }
}
