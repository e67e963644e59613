//! The store's errors, in the store's own words: which session, which message, which argument.
//!
//! Nothing here knows a JSON-RPC code or a wire field name; `api::errors` maps each variant to
//! the protocol error clients get. The texts of [`StoreError::NoSession`],
//! [`StoreError::Storage`] and [`StoreError::Internal`] read as the protocol messages do, so a
//! caller that puts a store error into a sentence of its own (the agent's run errors) says the
//! same as before.

use std::io;
use std::path::PathBuf;

/// Which key argument of a store call was not a valid session key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyArg {
    /// The key of the session a message is written to, created if missing ([`ensure`]).
    ///
    /// [`ensure`]: super::Store::ensure
    Session,
    /// The key a new session is asked for ([`create`]).
    ///
    /// [`create`]: super::Store::create
    Create,
    /// The key of the copy a fork makes ([`fork`]).
    ///
    /// [`fork`]: super::Store::fork
    Fork,
}

/// Which message argument of a store call named a message the transcript does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageArg {
    /// The last message a fork copies ([`fork`]).
    ///
    /// [`fork`]: super::Store::fork
    ForkAt,
    /// The message a page of history ends before ([`history`]).
    ///
    /// [`history`]: super::Store::history
    Before,
}

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A key argument is not a valid session key.
    #[error("invalid session key: {reason}")]
    InvalidKey {
        /// Which argument.
        arg: KeyArg,
        /// What a key must look like.
        reason: String,
    },
    /// A listing cursor that no listing of this store handed out.
    #[error("not a cursor of this store's listing")]
    BadCursor,
    /// No session has this key.
    #[error("no session with key `{key}`")]
    NoSession {
        /// The key asked for.
        key: String,
    },
    /// A session with this key exists already.
    #[error("a session with key `{key}` already exists")]
    KeyTaken {
        /// The key asked for.
        key: String,
    },
    /// This session can be reset but never deleted.
    #[error("the session `{key}` cannot be deleted; reset it instead")]
    Undeletable {
        /// The session (`main`).
        key: String,
    },
    /// The session is ephemeral (one OpenAI door request's): it is never reset or forked, and
    /// is removed once its answer is out.
    #[error(
        "the session `{key}` is ephemeral (one request of the OpenAI door): it cannot be reset or forked"
    )]
    Ephemeral {
        /// The session.
        key: String,
    },
    /// The transcript a write was meant for was archived by a reset; the session has a new one.
    #[error("session `{key}` was reset: transcript {session_id} is archived")]
    Archived {
        /// The session.
        key: String,
        /// The archived transcript.
        session_id: String,
    },
    /// The transcript has no message with this id.
    #[error("no message `{id}` in session `{key}`")]
    NoMessage {
        /// The session.
        key: String,
        /// The id asked for.
        id: String,
        /// Which argument named it.
        arg: MessageArg,
    },
    /// The session was archived and replaced over and over while a write waited; retrying can
    /// succeed.
    #[error("session `{key}` keeps changing under this write; try again")]
    Contended {
        /// The session.
        key: String,
    },
    /// The storage failed or ran out (a full disk, too few file descriptors, an I/O error of
    /// the device): retrying once it is back can succeed. The text says which operation and
    /// which session, never a path.
    #[error("storage unavailable: {0}")]
    Storage(String),
    /// Cluster mode: the shared transcript log (JetStream) did not take the lines; nothing was
    /// written. Retryable.
    #[error("the cluster's transcript log did not take the write: {0}")]
    Log(String),
    /// A bug, or an I/O failure that is not the storage's (a missing file, a failed task).
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    /// [`StoreError::Internal`] from anything displayable.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        Self::Internal(err.to_string())
    }

    /// [`StoreError::NoSession`] for `key`.
    pub fn no_session(key: &str) -> Self {
        Self::NoSession {
            key: key.to_string(),
        }
    }
}

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the data directory.
    #[error(
        "data directory {dir} is in use by another clawgate{pid}; stop it, or give this one its own --data-dir"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// ` (pid N)` when known.
        pid: String,
    },
    /// I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
}

/// An [`OpenError::Io`] maker for `map_err`, saying what was being done.
pub(super) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> OpenError {
    let context = context.into();
    move |source| OpenError::Io { context, source }
}
