//! The `sessions.*` methods.

use serde_json::json;

use crate::agent::AgentError;
use crate::error::{Error, Result, code};
use crate::gateway::{Ctx as CallContext, Table as MethodTable};
use crate::protocol::{
    DeletedResult, Session, SessionKeyParams, SessionsCompactParams, SessionsCompactResult,
    SessionsCreateParams, SessionsForkParams, SessionsListParams, SessionsListResult,
    SessionsPatchParams,
};
use crate::rpc::{DuplicateMethod, Example, Method, Scope};

fn session_example() -> serde_json::Value {
    json!({"key": "main", "sessionId": "0f8c2a6e4b5d4c3e9a1b2c3d4e5f6a7b", "label": "Daily notes", "createdAt": 1767225600000u64, "updatedAt": 1767225660000u64, "messageCount": 12, "lastMessagePreview": "Done: the report is in your workspace.", "agentId": "main", "usage": {"inputTokens": 1200, "outputTokens": 300, "cacheReadTokens": 5000, "cacheWriteTokens": 800, "costUsd": 0.0126, "unpricedTokens": 0}})
}

/// `sessions.list`.
pub struct List;
impl Method for List {
    const NAME: &'static str = "sessions.list";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str =
        "Sessions, most recently updated first, with search and cursor paging.";
    type Params = SessionsListParams;
    type Result = SessionsListResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "first page",
            params: json!({"limit": 1, "search": "main"}),
            result: json!({"sessions": [session_example()], "total": 1}),
        }]
    }
}

/// `sessions.get`.
pub struct Get;
impl Method for Get {
    const NAME: &'static str = "sessions.get";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str = "One session.";
    const ERRORS: &'static [i32] = &[code::NOT_FOUND];
    type Params = SessionKeyParams;
    type Result = Session;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "main",
            params: json!({"key": "main"}),
            result: session_example(),
        }]
    }
}

/// `sessions.create`.
pub struct Create;
impl Method for Create {
    const NAME: &'static str = "sessions.create";
    const SCOPE: Scope = Scope::Write;
    const SUMMARY: &'static str = "Creates a session (a key is generated when absent).";
    const ERRORS: &'static [i32] = &[code::CONFLICT];
    type Params = SessionsCreateParams;
    type Result = Session;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "create",
            params: json!({"key": "work", "label": "Work"}),
            result: json!({"key": "work", "sessionId": "7d1e…", "label": "Work", "createdAt": 1767225600000u64, "updatedAt": 1767225600000u64, "messageCount": 0}),
        }]
    }
}

/// `sessions.patch`.
pub struct PatchMethod;
impl Method for PatchMethod {
    const NAME: &'static str = "sessions.patch";
    const SCOPE: Scope = Scope::Write;
    const SUMMARY: &'static str = "Sets or clears (null) a session's label or model.";
    const ERRORS: &'static [i32] = &[code::NOT_FOUND];
    type Params = SessionsPatchParams;
    type Result = Session;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "relabel",
            params: json!({"key": "main", "label": "Daily notes", "model": null}),
            result: session_example(),
        }]
    }
}

/// `sessions.reset`.
pub struct Reset;
impl Method for Reset {
    const NAME: &'static str = "sessions.reset";
    const SCOPE: Scope = Scope::Write;
    const SUMMARY: &'static str =
        "Starts a new transcript (new sessionId); the old one is archived.";
    const ERRORS: &'static [i32] = &[code::NOT_FOUND];
    type Params = SessionKeyParams;
    type Result = Session;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "reset",
            params: json!({"key": "main"}),
            result: session_example(),
        }]
    }
}

/// `sessions.delete`.
pub struct Delete;
impl Method for Delete {
    const NAME: &'static str = "sessions.delete";
    const SCOPE: Scope = Scope::Write;
    const SUMMARY: &'static str =
        "Deletes a session; its transcript is archived, never removed. `main` cannot be deleted.";
    const ERRORS: &'static [i32] = &[code::NOT_FOUND, code::CONFLICT];
    type Params = SessionKeyParams;
    type Result = DeletedResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "delete",
            params: json!({"key": "work"}),
            result: json!({"deleted": true}),
        }]
    }
}

/// `sessions.fork`.
pub struct Fork;
impl Method for Fork {
    const NAME: &'static str = "sessions.fork";
    const SCOPE: Scope = Scope::Write;
    const SUMMARY: &'static str =
        "A new session holding the original's messages up to and including atMessageId.";
    const ERRORS: &'static [i32] = &[code::NOT_FOUND, code::CONFLICT];
    type Params = SessionsForkParams;
    type Result = Session;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "fork",
            params: json!({"key": "main", "newKey": "main-alt"}),
            result: session_example(),
        }]
    }
}

/// `sessions.compact`.
pub struct Compact;
impl Method for Compact {
    const NAME: &'static str = "sessions.compact";
    const SCOPE: Scope = Scope::Write;
    const SUMMARY: &'static str = "Replaces the older part of a session's context with a summary by its model now; the transcript keeps every message.";
    const ERRORS: &'static [i32] = &[code::NOT_FOUND, code::CONFLICT, code::UPSTREAM];
    type Params = SessionsCompactParams;
    type Result = SessionsCompactResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "compact",
            params: json!({"key": "main", "instructions": "Keep every file path."}),
            result: json!({"compacted": true, "tokensBefore": 61234, "tokensAfter": 2410, "firstKeptId": "5e0b9c1d2f3a4b5c6d7e8f9a0b1c2d3e"}),
        }]
    }
}

/// Registers the `sessions.*` methods.
pub fn register(table: &mut MethodTable) -> Result<(), DuplicateMethod> {
    table.method::<List, _, _>(|ctx: CallContext, p: SessionsListParams| async move {
        let limit = p.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid_params(
                "limit",
                format!("expected 1 to 1000, found {limit}"),
            ));
        }
        // Cluster mode: every node's sessions, from the shared index.
        let page = match ctx.gateway.indexed_sessions().await {
            Some(all) => crate::store::list_of(
                &all?,
                limit as usize,
                p.cursor.as_deref(),
                p.search.as_deref(),
            )?,
            None => ctx.gateway.store().list(
                limit as usize,
                p.cursor.as_deref(),
                p.search.as_deref(),
            )?,
        };
        Ok(SessionsListResult {
            sessions: page.sessions,
            next_cursor: page.next_cursor,
            total: page.total,
        })
    })?;
    // Keys, labels and models are checked types: a bad one never reaches a handler.
    table.method::<Get, _, _>(|ctx: CallContext, p: SessionKeyParams| async move {
        Ok(ctx.gateway.store().get(&p.key)?)
    })?;
    table.method::<Create, _, _>(|ctx: CallContext, p: SessionsCreateParams| async move {
        let config = ctx.gateway.config();
        let agent = match &p.agent {
            Some(id) if config.agent(id).is_none() => {
                return Err(AgentError::NoSuchAgent(id.to_string()).into());
            }
            Some(id) => id.to_string(),
            None => config.default_agent_id().to_string(),
        };
        Ok(ctx
            .gateway
            .store()
            .create(
                p.key.map(String::from),
                p.label.map(String::from),
                p.model.map(String::from),
                &agent,
            )
            .await?)
    })?;
    table.method::<PatchMethod, _, _>(|ctx: CallContext, p: SessionsPatchParams| async move {
        Ok(ctx
            .gateway
            .store()
            .patch(&p.key, p.label.map(String::from), p.model.map(String::from))
            .await?)
    })?;
    table.method::<Reset, _, _>(|ctx: CallContext, p: SessionKeyParams| async move {
        // An active run is aborted first (its partial text lands in the old transcript).
        ctx.gateway
            .agent()
            .abort(&ctx.gateway, None, Some(&p.key))
            .await?;
        Ok(ctx.gateway.store().reset(&p.key).await?)
    })?;
    table.method::<Delete, _, _>(|ctx: CallContext, p: SessionKeyParams| async move {
        if p.key == "main" {
            return Err(Error::Conflict(
                "the session `main` cannot be deleted; reset it instead".into(),
            ));
        }
        ctx.gateway
            .agent()
            .abort(&ctx.gateway, None, Some(&p.key))
            .await?;
        ctx.gateway.store().delete(&p.key).await?;
        Ok(DeletedResult { deleted: true })
    })?;
    table.method::<Compact, _, _>(|ctx: CallContext, p: SessionsCompactParams| async move {
        let done = ctx
            .gateway
            .agent()
            .compact(&ctx.gateway, &p.key, p.instructions.as_deref())
            .await?;
        Ok(
            done.map_or_else(SessionsCompactResult::default, |c| SessionsCompactResult {
                compacted: true,
                tokens_before: Some(c.tokens_before),
                tokens_after: Some(c.tokens_after),
                first_kept_id: Some(c.first_kept_id),
            }),
        )
    })?;
    table.method::<Fork, _, _>(|ctx: CallContext, p: SessionsForkParams| async move {
        Ok(ctx
            .gateway
            .store()
            .fork(&p.key, p.new_key.map(String::from), p.at_message_id)
            .await?)
    })?;
    Ok(())
}
