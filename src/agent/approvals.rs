//! Tool calls waiting for a person: the pending approvals (each with the one channel its run
//! waits on), the ones resolved lately, and the tools a person allowed for a whole session.
//!
//! A resolution is decided here, under one lock, exactly once: by a person (`resolve`), or by
//! the waiting run itself on timeout or abort (`settle`). The waiting run writes the transcript
//! line and publishes the payloads, whoever decided.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::protocol::{Approval, ApprovalDecision, ApprovalState};

use super::error::AgentError;

/// Resolved approvals remembered for `approvals.get`.
const RESOLVED_KEPT: usize = 1000;

/// How an approval was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Allow or deny.
    pub decision: ApprovalDecision,
    /// A token name, `local`, `timeout` or `abort`.
    pub by: String,
    /// Why, when the resolver said.
    pub reason: Option<String>,
    /// Allow this tool for the rest of the session.
    pub remember: bool,
}

/// `approval` as `resolution` leaves it.
pub(super) fn resolved(mut approval: Approval, resolution: &Resolution) -> Approval {
    approval.state = match resolution.decision {
        ApprovalDecision::Allow => ApprovalState::Allowed,
        ApprovalDecision::Deny => ApprovalState::Denied,
    };
    approval.decision = Some(resolution.decision);
    approval.by = Some(resolution.by.clone());
    approval.reason = resolution.reason.clone();
    approval
}

/// Who resolves: the caller's token name (none in auth mode `none`).
#[derive(Debug, Clone)]
pub struct Resolver {
    /// The token's name; `None` when auth is off (the resolver is then `local`).
    pub token_name: Option<String>,
}

struct Waiting {
    approval: Approval,
    /// Who may resolve it (`None`: any caller with `write`).
    approvers: Option<Vec<String>>,
    tx: oneshot::Sender<Resolution>,
}

#[derive(Default)]
struct Inner {
    pending: HashMap<String, Waiting>,
    /// Pending ids in the order they were asked.
    order: Vec<String>,
    resolved: HashMap<String, Approval>,
    resolved_order: VecDeque<String>,
    /// sessionId → tool names allowed for the session.
    remembered: HashMap<String, HashSet<String>>,
    /// sessionIds whose remembered tools were read from their transcript.
    loaded: HashSet<String>,
}

/// The approvals of every run.
#[derive(Default)]
pub struct Approvals {
    inner: Mutex<Inner>,
}

impl Approvals {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `approval` as pending; the receiver gets its resolution by a person.
    pub(super) fn request(
        &self,
        approval: Approval,
        approvers: Option<Vec<String>>,
    ) -> oneshot::Receiver<Resolution> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        let id = approval.approval_id.clone();
        inner.resolved.remove(&id);
        inner.order.retain(|o| o != &id);
        inner.order.push(id.clone());
        inner.pending.insert(
            id,
            Waiting {
                approval,
                approvers,
                tx,
            },
        );
        rx
    }

    /// A person resolves `approval_id`; answers the approval as resolved.
    pub fn resolve(
        &self,
        approval_id: &str,
        resolution: Resolution,
        resolver: &Resolver,
    ) -> Result<Approval, AgentError> {
        let mut inner = self.lock();
        let Some(waiting) = inner.pending.get(approval_id) else {
            return Err(match inner.resolved.get(approval_id) {
                Some(done) => AgentError::ApprovalResolved {
                    approval_id: approval_id.to_string(),
                    state: done.state,
                },
                None => AgentError::NoSuchApproval(approval_id.to_string()),
            });
        };
        if let (Some(approvers), Some(name)) = (&waiting.approvers, &resolver.token_name)
            && !approvers.contains(name)
        {
            return Err(AgentError::NotApprover {
                approval_id: approval_id.to_string(),
                token: name.clone(),
            });
        }
        Self::decide(&mut inner, approval_id, resolution)
            .ok_or_else(|| AgentError::NoSuchApproval(approval_id.to_string()))
    }

    /// The waiting run decides `approval_id` itself (timeout, abort), unless a person did
    /// first: `None` then, and the person's resolution is on the run's receiver.
    pub(super) fn settle(&self, approval_id: &str, resolution: Resolution) -> Option<Approval> {
        Self::decide(&mut self.lock(), approval_id, resolution)
    }

    /// Forgets a pending approval without resolving it (its run was suspended: it is asked
    /// again after the restart).
    pub(super) fn withdraw(&self, approval_id: &str) {
        let mut inner = self.lock();
        inner.pending.remove(approval_id);
        inner.order.retain(|o| o != approval_id);
    }

    fn decide(inner: &mut Inner, approval_id: &str, resolution: Resolution) -> Option<Approval> {
        let waiting = inner.pending.remove(approval_id)?;
        inner.order.retain(|o| o != approval_id);
        let approval = resolved(waiting.approval, &resolution);
        // The run may have stopped waiting meanwhile (it then settles it itself).
        let _ = waiting.tx.send(resolution);
        inner
            .resolved
            .insert(approval_id.to_string(), approval.clone());
        inner.resolved_order.push_back(approval_id.to_string());
        while inner.resolved_order.len() > RESOLVED_KEPT {
            if let Some(old) = inner.resolved_order.pop_front() {
                inner.resolved.remove(&old);
            }
        }
        Some(approval)
    }

    /// The pending approvals (of `session_key` only, when given), oldest first.
    pub fn list(&self, session_key: Option<&str>) -> Vec<Approval> {
        let inner = self.lock();
        inner
            .order
            .iter()
            .filter_map(|id| inner.pending.get(id))
            .map(|w| w.approval.clone())
            .filter(|a| session_key.is_none_or(|k| a.session_key == k))
            .collect()
    }

    /// One approval, pending or resolved lately.
    pub fn get(&self, approval_id: &str) -> Result<Approval, AgentError> {
        let inner = self.lock();
        inner
            .pending
            .get(approval_id)
            .map(|w| w.approval.clone())
            .or_else(|| inner.resolved.get(approval_id).cloned())
            .ok_or_else(|| AgentError::NoSuchApproval(approval_id.to_string()))
    }

    /// Whether the tools a person allowed for `session_id` are known (read from its
    /// transcript once).
    pub(super) fn remembered_loaded(&self, session_id: &str) -> bool {
        self.lock().loaded.contains(session_id)
    }

    /// Adds the tools read from `session_id`'s transcript.
    pub(super) fn load_remembered(&self, session_id: &str, names: HashSet<String>) {
        let mut inner = self.lock();
        inner.loaded.insert(session_id.to_string());
        inner
            .remembered
            .entry(session_id.to_string())
            .or_default()
            .extend(names);
    }

    /// Allows `name` for the rest of `session_id`.
    pub(super) fn remember(&self, session_id: &str, name: &str) {
        self.lock()
            .remembered
            .entry(session_id.to_string())
            .or_default()
            .insert(name.to_string());
    }

    /// Whether a person allowed `name` for `session_id`.
    pub(super) fn is_remembered(&self, session_id: &str, name: &str) -> bool {
        self.lock()
            .remembered
            .get(session_id)
            .is_some_and(|names| names.contains(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(id: &str, key: &str) -> Approval {
        Approval {
            approval_id: id.into(),
            state: ApprovalState::Pending,
            run_id: "r".into(),
            session_key: key.into(),
            agent_id: "main".into(),
            tool_call_id: "c".into(),
            name: "exec".into(),
            input: serde_json::json!({}),
            requested_at: 1,
            expires_at: 2,
            decision: None,
            by: None,
            reason: None,
        }
    }

    fn by(name: &str, decision: ApprovalDecision) -> Resolution {
        Resolution {
            decision,
            by: name.into(),
            reason: None,
            remember: false,
        }
    }

    #[tokio::test]
    async fn a_resolution_happens_once_and_reaches_the_waiting_run() {
        let approvals = Approvals::default();
        let rx = approvals.request(approval("a1", "s"), Some(vec!["ops".into()]));
        approvals.request(approval("a2", "t"), None);
        assert_eq!(approvals.list(None).len(), 2);
        assert_eq!(approvals.list(Some("t")).len(), 1);
        let stranger = Resolver {
            token_name: Some("guest".into()),
        };
        assert!(matches!(
            approvals.resolve("a1", by("guest", ApprovalDecision::Allow), &stranger),
            Err(AgentError::NotApprover { .. })
        ));
        let ops = Resolver {
            token_name: Some("ops".into()),
        };
        let done = approvals
            .resolve("a1", by("ops", ApprovalDecision::Allow), &ops)
            .expect("resolved");
        assert_eq!(done.state, ApprovalState::Allowed);
        assert_eq!(rx.await.expect("sent").by, "ops");
        assert!(matches!(
            approvals.resolve("a1", by("ops", ApprovalDecision::Deny), &ops),
            Err(AgentError::ApprovalResolved { .. })
        ));
        assert!(matches!(
            approvals.resolve("zz", by("ops", ApprovalDecision::Deny), &ops),
            Err(AgentError::NoSuchApproval(_))
        ));
        // The run's own timeout loses to a person who came first.
        assert!(
            approvals
                .settle("a1", by("timeout", ApprovalDecision::Deny))
                .is_none()
        );
        assert_eq!(
            approvals.get("a1").expect("kept").by.as_deref(),
            Some("ops")
        );
        assert_eq!(approvals.list(None).len(), 1);
        approvals.withdraw("a2");
        assert!(approvals.list(None).is_empty());
    }
}
