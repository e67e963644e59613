//! Compaction: before a model call whose estimated context passes the threshold, after a
//! provider's `context_length` error, or on `sessions.compact`, the older part of a session's
//! context is replaced by a summary the agent's model writes (rolling in the previous one),
//! recorded as a `compaction` line; nothing is deleted.
//!
//! The summary call is not a turn: no deltas, no tools, its usage on the compaction line. When
//! it fails inside a run, the older part (whole turns: the cut never separates a tool call from
//! its results) is dropped instead, with reason `overflow`. The arithmetic is [`super::window`]'s.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::protocol::{ChatEvent, CompactionReason, TranscriptMessage, Usage};
use crate::store::transcript::CompactionLine;
use crate::store::{NewCompaction, Store, StoreError, StoredContext, UsageCall};

use super::providers::{ErrorKind, Provider, ProviderError, ProviderEvent, SummaryRequest};
use super::turn::TurnEnd;
use super::window::{cut_point, dropped_summary, estimate, model_context, threshold, tokens_after};

/// A compaction just written, and the messages it keeps (the rest of the next context).
#[derive(Debug, Clone)]
pub(super) struct Compacted {
    /// The line written.
    pub(super) line: CompactionLine,
    /// The messages from its `firstKeptId` on, oldest first.
    pub(super) kept: Vec<TranscriptMessage>,
}

impl Compacted {
    /// The context of the next model call.
    pub(super) fn context(&self) -> Vec<TranscriptMessage> {
        model_context(Some(&self.line.summary), self.kept.clone())
    }

    /// The `compacted` chat payload's fields, on `base` (a run's payload, or one outside runs).
    pub(super) fn payload(&self, base: ChatEvent) -> ChatEvent {
        ChatEvent {
            tokens_before: Some(self.line.tokens_before),
            tokens_after: Some(self.line.tokens_after),
            reason: Some(self.line.reason),
            ..base
        }
    }
}

/// Why no compaction was written.
#[derive(Debug, Clone)]
pub(super) enum CompactError {
    /// The run was cancelled during the summary call.
    Cancelled,
    /// The transcript could not be read or written.
    Store(StoreError),
    /// The summary call failed (and nothing was to be dropped instead).
    Summary(ProviderError),
}

impl From<StoreError> for CompactError {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

/// Whose context a compactor compacts, and whose its summary calls are (the usage ledger's).
pub(super) struct Caller<'a> {
    /// The session key.
    pub(super) key: &'a str,
    /// Only this transcript of the session, when given.
    pub(super) session_id: Option<&'a str>,
    /// The agent making the summary calls.
    pub(super) agent_id: &'a str,
    /// The run they are part of (none for `sessions.compact`).
    pub(super) run_id: Option<&'a str>,
}

/// Compacts one session's context with one provider and model.
pub(super) struct Compactor {
    store: Arc<Store>,
    provider: Arc<dyn Provider>,
    agent: AgentConfig,
    model: String,
    key: String,
    session_id: Option<String>,
    agent_id: String,
    run_id: Option<String>,
    cancel: CancellationToken,
}

impl Compactor {
    /// A compactor of `caller`'s context for the agent `agent` calling `model`; `cancel` ends
    /// its summary calls.
    pub(super) fn new(
        store: &Arc<Store>,
        provider: &Arc<dyn Provider>,
        agent: &AgentConfig,
        model: &str,
        caller: Caller<'_>,
        cancel: &CancellationToken,
    ) -> Self {
        Self {
            store: store.clone(),
            provider: provider.clone(),
            agent: agent.clone(),
            model: model.to_string(),
            key: caller.key.to_string(),
            session_id: caller.session_id.map(str::to_string),
            agent_id: caller.agent_id.to_string(),
            run_id: caller.run_id.map(str::to_string),
            cancel: cancel.clone(),
        }
    }

    /// Records a summary call's usage in the usage ledger (a failure is logged: the
    /// compaction goes on).
    async fn record_usage(&self, session_id: &str, usage: Usage) {
        let call = UsageCall {
            session_key: self.key.clone(),
            session_id: session_id.to_string(),
            agent_id: self.agent_id.clone(),
            run_id: self.run_id.clone(),
            model: self.model.clone(),
            usage,
        };
        if let Err(err) = self.store.record_usage(&call).await {
            tracing::error!(session = %self.key, %err, "cannot record a summary call's usage");
        }
    }

    /// The context of the next model call, compacted first (`auto`) when its estimate passes
    /// the threshold and there is an older part to compact; `on_compacted` hears of it.
    pub(super) async fn before_call(
        &self,
        on_compacted: impl FnOnce(&Compacted),
    ) -> Result<Vec<TranscriptMessage>, CompactError> {
        let ctx = self.store.context(&self.key).await?;
        if estimate(&ctx) > threshold(&self.agent.context)
            && let Some(done) = self
                .compact(&ctx, CompactionReason::Auto, None, true)
                .await?
        {
            on_compacted(&done);
            return Ok(done.context());
        }
        let summary = ctx.compaction.map(|c| c.summary);
        Ok(model_context(summary.as_deref(), ctx.messages))
    }

    /// After a `context_length` error: compacts (`overflow`) and gives the context to retry
    /// with; `None` when there is nothing older left to compact (the error then stands).
    pub(super) async fn after_overflow(
        &self,
        on_compacted: impl FnOnce(&Compacted),
    ) -> Result<Option<Vec<TranscriptMessage>>, CompactError> {
        let ctx = self.store.context(&self.key).await?;
        let done = self
            .compact(&ctx, CompactionReason::Overflow, None, true)
            .await?;
        Ok(done.map(|done| {
            on_compacted(&done);
            done.context()
        }))
    }

    /// `sessions.compact`: compacts now (`manual`), whatever the estimate; a failed summary
    /// call drops nothing and is returned.
    pub(super) async fn manual(
        &self,
        instructions: Option<&str>,
    ) -> Result<Option<Compacted>, CompactError> {
        let ctx = self.store.context(&self.key).await?;
        self.compact(&ctx, CompactionReason::Manual, instructions, false)
            .await
    }

    /// Compacts `ctx`: summarises its older part (rolling in its summary) and writes the line;
    /// `None` when there is too little to compact. When the summary call fails, the older part
    /// is dropped instead (`overflow`) if `drop_on_failure`, else the failure is returned.
    pub(super) async fn compact(
        &self,
        ctx: &StoredContext,
        reason: CompactionReason,
        instructions: Option<&str>,
        drop_on_failure: bool,
    ) -> Result<Option<Compacted>, CompactError> {
        let Some(cut) = cut_point(&ctx.messages, self.agent.context.keep_messages) else {
            return Ok(None);
        };
        let before = estimate(ctx);
        let (older, kept) = ctx.messages.split_at(cut);
        let Some(first_kept) = kept.first() else {
            return Ok(None);
        };
        let previous = ctx.compaction.as_ref().map(|c| c.summary.as_str());
        let request = SummaryRequest {
            model: self.model.clone(),
            previous: previous.map(str::to_string),
            messages: older.to_vec(),
            instructions: instructions.map(str::to_string),
            max_tokens: self.agent.max_output_tokens,
        };
        let idle = Duration::from_millis(self.agent.idle_timeout_ms.max(1));
        let (summary, usage, reason) = match summary_call(
            &self.provider,
            request,
            &self.cancel,
            idle,
        )
        .await
        {
            Ok((text, usage)) => {
                if let Some(usage) = usage {
                    self.record_usage(&ctx.session_id, usage).await;
                }
                (text, usage, reason)
            }
            Err(SummaryFailure::Cancelled) => return Err(CompactError::Cancelled),
            Err(SummaryFailure::Failed(err)) if drop_on_failure => {
                tracing::warn!(session = %self.key, kind = err.kind.as_str(), error = %err.message, dropped = cut, "the summary call failed; dropping the oldest turns instead");
                (
                    dropped_summary(previous, cut),
                    None,
                    CompactionReason::Overflow,
                )
            }
            Err(SummaryFailure::Failed(err)) => return Err(CompactError::Summary(err)),
        };
        let after = tokens_after(before, previous, older, &summary, kept);
        let line = self
            .store
            .append_compaction(
                &self.key,
                self.session_id.as_deref(),
                NewCompaction {
                    summary,
                    first_kept_id: first_kept.id.clone(),
                    tokens_before: before,
                    tokens_after: after,
                    reason,
                    usage,
                },
            )
            .await?;
        tracing::info!(session = %self.key, reason = reason.as_str(), tokens_before = before, tokens_after = after, summarised = cut, "compacted the context");
        Ok(Some(Compacted {
            line,
            kept: kept.to_vec(),
        }))
    }
}

/// Whether a turn failed with `context_length` before any of its text was sent (so a retry
/// cannot repeat a delta).
pub(super) fn is_overflow(end: &TurnEnd) -> bool {
    matches!(end, TurnEnd::Failed { error, partial } if error.kind == ErrorKind::ContextLength && partial.is_empty())
}

/// Why a summary call gave no summary.
enum SummaryFailure {
    /// The cancellation token fired.
    Cancelled,
    /// A silence of the idle timeout, a stream cut, the provider's error, an empty answer.
    Failed(ProviderError),
}

/// Runs one summary call to its end: the text (trimmed) and the usage.
async fn summary_call(
    provider: &Arc<dyn Provider>,
    request: SummaryRequest,
    cancel: &CancellationToken,
    idle: Duration,
) -> Result<(String, Option<Usage>), SummaryFailure> {
    let mut rx = provider.summarize(request, cancel.child_token());
    let mut text = String::new();
    let mut usage = None;
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(SummaryFailure::Cancelled),
            next = tokio::time::timeout(idle, rx.recv()) => next,
        };
        let event = match next {
            Err(_) => {
                return Err(SummaryFailure::Failed(ProviderError::new(
                    ErrorKind::Timeout,
                    format!(
                        "the provider sent nothing for {} ms (idle_timeout_ms)",
                        idle.as_millis()
                    ),
                    true,
                )));
            }
            Ok(None) => {
                return Err(SummaryFailure::Failed(ProviderError::new(
                    ErrorKind::StreamCut,
                    "the summary stream ended before it was complete",
                    true,
                )));
            }
            Ok(Some(Err(err))) => return Err(SummaryFailure::Failed(err)),
            Ok(Some(Ok(event))) => event,
        };
        match event {
            ProviderEvent::Text(t) => text.push_str(&t),
            ProviderEvent::Usage(u) => usage = Some(u),
            ProviderEvent::Stop(_) => break,
            // No tools are offered; a call is not run.
            ProviderEvent::ToolCall(_)
            | ProviderEvent::BrokenToolCall { .. }
            | ProviderEvent::Progress => {}
        }
    }
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(SummaryFailure::Failed(ProviderError::new(
            ErrorKind::Upstream,
            "the model answered the summary call with no text",
            true,
        )));
    }
    Ok((text, usage))
}
