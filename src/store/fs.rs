//! File-system steps the store takes as wholes: a private directory, the data directory's
//! lock, a durable swap or rename of transcripts, the replacement of a snapshot file (the
//! indexes), and a probe of whether writing works again.
//!
//! Each step either completes, flushed, or leaves the names as they were.

use std::fs::File;
use std::io;
use std::path::Path;

use super::error::{OpenError, io_err};
use super::transcript::{DirSync, Header, Staged, Writer};

/// Creates `dir` (and its parents) readable by its owner only.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Replaces the file `name` of `dir` with `bytes`: written under a temporary name, flushed,
/// renamed into place, and the directory flushed. A failed write leaves no temporary file.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp-{}", std::process::id()));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = options.open(&tmp).and_then(|mut file| {
            file.write_all(bytes)?;
            crate::metrics::fsync(|| file.sync_all())
        });
        if let Err(err) = written {
            // A partial copy on a full disk would only hold space.
            let _ = std::fs::remove_file(&tmp);
            return Err(err);
        }
    }
    std::fs::rename(&tmp, dir.join(name))?;
    crate::util::sync_dir(dir)
}

/// Takes the data directory's advisory lock (released by the OS when the process dies).
pub(super) fn lock_data_dir(data_dir: &Path) -> Result<File, OpenError> {
    use std::io::{Read, Seek, Write};
    create_private_dir(data_dir)
        .map_err(io_err(format!("cannot create {}", data_dir.display())))?;
    let path = data_dir.join("clawgate.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(format!("cannot open {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(OpenError::Locked {
                dir: data_dir.to_path_buf(),
                pid: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            });
        }
        Err(std::fs::TryLockError::Error(err)) => {
            return Err(OpenError::Io {
                context: format!("cannot lock {}", path.display()),
                source: err,
            });
        }
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    let _ = file.sync_all();
    Ok(file)
}

/// Makes the complete transcript `path` (`header`, `lines`) the session's in place of `from`,
/// which is renamed to `archive`; every step is flushed. On failure the names are as before
/// and nothing new is left behind. The directory is opened first, so that running out of
/// descriptors fails before any name changes.
pub(super) fn swap_in(
    dir: &Path,
    from: &Path,
    archive: &Path,
    path: &Path,
    header: &Header,
    lines: &[Vec<u8>],
) -> io::Result<Writer> {
    let dir = DirSync::open(dir)?;
    let new = Staged::write(path, header, lines)?.commit(path)?;
    // Two transcripts claim the key now; were the process to die here, the newer (this one)
    // would win at the next start, as if the reset had completed.
    let undo = |new: Writer| {
        drop(new);
        let _ = std::fs::remove_file(path);
    };
    if let Err(err) = std::fs::rename(from, archive) {
        undo(new);
        let _ = dir.sync();
        return Err(err);
    }
    if let Err(err) = dir.sync() {
        undo(new);
        if let Err(back) = std::fs::rename(archive, from) {
            tracing::error!(file = %archive.display(), err = %back, "cannot restore a transcript after a failed reset");
        }
        let _ = dir.sync();
        return Err(err);
    }
    Ok(new)
}

/// Renames `from` to `to` in `dir` and flushes the directory; on failure the name is as before.
pub(super) fn rename_durably(dir: &Path, from: &Path, to: &Path) -> io::Result<()> {
    let dir = DirSync::open(dir)?;
    std::fs::rename(from, to)?;
    if let Err(err) = dir.sync() {
        if let Err(back) = std::fs::rename(to, from) {
            tracing::error!(file = %to.display(), err = %back, "cannot restore a transcript after a failed rename");
        }
        let _ = dir.sync();
        return Err(err);
    }
    Ok(())
}

/// Writes, flushes and removes a small file in `dir`: whether the store can write again.
pub(super) fn probe_write(dir: &Path) -> io::Result<()> {
    use std::io::Write;
    let path = dir.join(".write-probe");
    let written = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(b"ok\n")?;
        f.sync_all()
    });
    let removed = std::fs::remove_file(&path);
    written?;
    removed
}
