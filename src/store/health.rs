//! Whether the store can write, and the one place its I/O errors become store errors.
//!
//! A write that fails because the storage failed or ran out (space, quota, descriptors, the
//! device, a read-only mount) is [`StoreError::Storage`], is logged at ERROR (at most one line
//! per [`LOG_INTERVAL`], with a count of the lines held back), and marks the store failing
//! (`/readyz` reports it) until a write succeeds again.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::error::StoreError;

/// At most one ERROR line about failing storage per this long.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Whether `err` says the storage itself failed or ran out (no space, quota, too many open
/// files, an I/O error of the device, a read-only file system, a file too large), as opposed to a
/// bug or a missing file.
pub fn is_storage_failure(err: &io::Error) -> bool {
    use io::ErrorKind as K;
    if matches!(
        err.kind(),
        K::StorageFull | K::QuotaExceeded | K::ReadOnlyFilesystem | K::FileTooLarge
    ) {
        return true;
    }
    #[cfg(unix)]
    if let Some(code) = err.raw_os_error() {
        return matches!(
            code,
            libc::ENOSPC
                | libc::EDQUOT
                | libc::EMFILE
                | libc::ENFILE
                | libc::EIO
                | libc::EROFS
                | libc::EFBIG
        );
    }
    false
}

/// Lets one log line through per [`LOG_INTERVAL`] and counts the others.
#[derive(Debug, Default)]
struct Gate {
    last: Option<Instant>,
    suppressed: u64,
}

impl Gate {
    /// `Some(lines held back since the last one)` when a line may be logged at `now`.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < LOG_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The store's storage health: failing from a failed write until a write succeeds.
#[derive(Debug, Default)]
pub struct StorageHealth {
    failing: AtomicBool,
    /// The last storage error, for the message of a call refused while failing.
    last: Mutex<Option<String>>,
    gate: Mutex<Gate>,
}

impl StorageHealth {
    /// Whether the last write failed for want of storage (and none succeeded since).
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// The error a call gets for the I/O error `err` of `what` ("cannot append to session
    /// `main`": the operation and the session, no path). A storage failure marks the store
    /// failing and is [`StoreError::Storage`]; anything else is [`StoreError::Internal`]. Both
    /// are logged at ERROR, rate-limited.
    pub fn error(&self, what: &str, err: &io::Error) -> StoreError {
        let storage = is_storage_failure(err);
        if storage {
            if let Ok(mut last) = self.last.lock() {
                *last = Some(err.to_string());
            }
            self.failing.store(true, Ordering::Release);
        }
        let admitted = self
            .gate
            .lock()
            .map(|mut g| g.admit(Instant::now()))
            .unwrap_or(Some(0));
        if let Some(suppressed) = admitted {
            if storage {
                tracing::error!(
                    %err,
                    suppressed,
                    "storage failure: {what}; the store is not ready until a write succeeds"
                );
            } else {
                tracing::error!(%err, suppressed, "store I/O failure: {what}");
            }
        }
        if storage {
            StoreError::Storage(format!("{what}: {err}"))
        } else {
            StoreError::Internal(format!("{what}: {err}"))
        }
    }

    /// `Err` (storage) while the store is failing: `what` ("cannot start a run in session
    /// `main`") would need a write that is bound to fail.
    pub fn check(&self, what: &str) -> Result<(), StoreError> {
        if !self.is_failing() {
            return Ok(());
        }
        let last = self
            .last
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .unwrap_or_else(|| "a write failed".into());
        Err(StoreError::Storage(format!(
            "{what}: the store cannot write ({last}); retry when /readyz is ready"
        )))
    }

    /// A write succeeded: the store is writable again.
    pub fn succeeded(&self) {
        // A load first: appends call this every time, and the flag is almost always clear.
        if !self.failing.load(Ordering::Acquire) || !self.failing.swap(false, Ordering::AcqRel) {
            return;
        }
        let suppressed = self
            .gate
            .lock()
            .map(|mut g| std::mem::take(&mut g.suppressed))
            .unwrap_or(0);
        tracing::info!(suppressed, "storage is writable again");
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn storage_failures_are_told_from_other_io_errors() {
        for code in [
            libc::ENOSPC,
            libc::EDQUOT,
            libc::EMFILE,
            libc::ENFILE,
            libc::EIO,
            libc::EROFS,
            libc::EFBIG,
        ] {
            assert!(is_storage_failure(&os(code)), "{}", os(code));
        }
        for code in [libc::ENOENT, libc::EACCES, libc::EINVAL, libc::EEXIST] {
            assert!(!is_storage_failure(&os(code)), "{}", os(code));
        }
        assert!(is_storage_failure(&io::Error::from(
            io::ErrorKind::StorageFull
        )));
        assert!(!is_storage_failure(&io::Error::other("a bug")));
    }

    #[test]
    fn the_gate_lets_one_line_through_per_interval_and_counts_the_rest() {
        let mut gate = Gate::default();
        let t0 = Instant::now();
        assert_eq!(gate.admit(t0), Some(0));
        assert_eq!(gate.admit(t0 + Duration::from_secs(1)), None);
        assert_eq!(gate.admit(t0 + Duration::from_secs(9)), None);
        assert_eq!(gate.admit(t0 + LOG_INTERVAL), Some(2));
        assert_eq!(gate.admit(t0 + LOG_INTERVAL), None);
        assert_eq!(gate.admit(t0 + LOG_INTERVAL * 3), Some(1));
    }

    #[test]
    fn failing_from_a_storage_error_until_a_write_succeeds() {
        let health = StorageHealth::default();
        assert!(!health.is_failing());
        assert!(health.check("cannot start a run in session `main`").is_ok());
        let err = health.error("cannot read session `main`", &os(libc::ENOENT));
        assert!(matches!(err, StoreError::Internal(_)), "{err:?}");
        assert!(
            !health.is_failing(),
            "a missing file is not a storage failure"
        );
        let err = health.error("cannot append to session `main`", &os(libc::ENOSPC));
        let StoreError::Storage(message) = &err else {
            panic!("{err:?}")
        };
        assert!(
            message.starts_with("cannot append to session `main`: "),
            "{message}"
        );
        assert!(health.is_failing());
        let refused = health.check("cannot start a run in session `main`");
        assert!(
            matches!(&refused, Err(StoreError::Storage(m)) if m.contains("`main`")),
            "{refused:?}"
        );
        health.succeeded();
        assert!(!health.is_failing());
        assert!(health.check("x").is_ok());
    }
}
