//! Listing sessions: search on key and label, most recently updated first, a page at a time.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Store;
use super::cursor::{self, Cursor, Row};
use super::error::StoreError;
use super::live::Transcript;
use crate::protocol::Session;

/// A page of sessions.
#[derive(Debug, Clone)]
pub struct Page {
    /// The sessions of this page.
    pub sessions: Vec<Session>,
    /// The cursor of the next page.
    pub next_cursor: Option<String>,
    /// Matches in all.
    pub total: u64,
}

impl Store {
    /// Sessions matching `search` (case-insensitive substring of key or label), most recently
    /// updated first, `limit` after `cursor` ([`StoreError::BadCursor`] unless it is a
    /// [`Page::next_cursor`] of this store).
    pub fn list(
        &self,
        limit: usize,
        cursor: Option<&str>,
        search: Option<&str>,
    ) -> Result<Page, StoreError> {
        let after = match cursor {
            None => None,
            Some(c) => Some(Cursor::decode(c).ok_or(StoreError::BadCursor)?),
        };
        let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let sessions = self
            .sessions
            .read()
            .map_err(|_| StoreError::internal("session map poisoned"))?;
        // Sorting reads only the key and an atomic; entries are locked for the page alone.
        let mut rows: Vec<Row<'_, &Arc<Transcript>>> = sessions
            .values()
            .filter(|t| !t.ephemeral && needle.as_deref().is_none_or(|n| t.matches(n)))
            .map(|t| (t.updated_at.load(Ordering::Acquire), t.key.as_str(), t))
            .collect();
        let total = rows.len() as u64;
        cursor::sort(&mut rows);
        let (range, more) = cursor::page(&rows, after.as_ref(), limit);
        let page: Vec<Session> = rows[range]
            .iter()
            .map(|(_, _, t)| t.entry().session())
            .collect();
        let next_cursor = if more {
            page.last()
                .map(|s| Cursor::new(s.updated_at, &s.key).encode())
        } else {
            None
        };
        Ok(Page {
            sessions: page,
            next_cursor,
            total,
        })
    }
}

/// [`Store::list`] over `sessions` given whole (cluster mode: the shared session index), with
/// the same order, search and cursors.
pub fn list_of(
    sessions: &[Session],
    limit: usize,
    cursor: Option<&str>,
    search: Option<&str>,
) -> Result<Page, StoreError> {
    let after = match cursor {
        None => None,
        Some(c) => Some(Cursor::decode(c).ok_or(StoreError::BadCursor)?),
    };
    let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
    let matches = |s: &Session| {
        needle.as_deref().is_none_or(|n| {
            s.key.to_lowercase().contains(n)
                || s.label
                    .as_ref()
                    .is_some_and(|l| l.to_lowercase().contains(n))
        })
    };
    let mut rows: Vec<Row<'_, &Session>> = sessions
        .iter()
        .filter(|s| matches(s))
        .map(|s| (s.updated_at, s.key.as_str(), s))
        .collect();
    let total = rows.len() as u64;
    cursor::sort(&mut rows);
    let (range, more) = cursor::page(&rows, after.as_ref(), limit);
    let page: Vec<Session> = rows[range].iter().map(|(_, _, s)| (*s).clone()).collect();
    let next_cursor = if more {
        page.last()
            .map(|s| Cursor::new(s.updated_at, &s.key).encode())
    } else {
        None
    };
    Ok(Page {
        sessions: page,
        next_cursor,
        total,
    })
}
