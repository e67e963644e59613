//! Race-free workspace confinement for the file tools (Linux).
//!
//! One file of about 690 lines on purpose: the walk, the handles it holds and the refusals
//! checked on them make one safety argument, which is reviewed as a whole.
//!
//! A path is never checked and then opened again by name. The workspace is opened once as a
//! directory handle and every component below it is opened relative to the handle of the one
//! before, with `openat2(2)` and `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`:
//! the kernel never follows a symlink for us. A symlink met on the way is read with
//! `readlinkat(2)` and walked by the same rules: an absolute target is refused, a relative one is
//! followed only while it stays inside the workspace (its `..` steps back along the handles
//! already held, never past the workspace). Swapping a directory for a symlink in between can
//! only make the open fail, never land outside.
//!
//! The gateway's own state is refused on the opened handles, not on path strings: every
//! directory on the way is compared (device and inode) with the data directory, the target file
//! with the configuration file, and a name created in the configuration file's directory with its
//! file name. Before the target is used, its directory's chain of parents (`..` of the handle) is
//! walked up to the workspace once more, so a directory moved in the meantime is caught too.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::workspace::Protected;

/// How many symlinks one path may go through.
const MAX_LINKS: u32 = 40;
/// How deep the walk up from a directory to the workspace may go.
const MAX_DEPTH: usize = 4096;

/// A file's identity: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Id {
    dev: u64,
    ino: u64,
}

fn id_of(fd: BorrowedFd<'_>) -> std::io::Result<(Id, u32)> {
    // SAFETY: `stat` is plain old data; fstat(2) fills it for a valid descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is a live descriptor borrowed for this call; `st` is a valid out pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((
        Id {
            dev: st.st_dev,
            ino: st.st_ino,
        },
        st.st_mode,
    ))
}

fn id_of_path(path: &Path) -> Option<Id> {
    if path.as_os_str().is_empty() {
        return None;
    }
    std::fs::metadata(path).ok().map(|m| Id {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// What a file type is called in an error message.
fn kind_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFLNK => "a symlink",
        _ => "not a regular file",
    }
}

/// The gateway's state, as identities taken when a tool call starts.
struct Guard {
    data_dir: Option<Id>,
    /// `<dataDir>/workspace`: the one place inside the data directory a workspace may be.
    default_workspace: Option<Id>,
    config_file: Option<Id>,
    /// The configuration file's directory and name: a file created there under that name
    /// would be loaded by the hot reload.
    config_dir: Option<Id>,
    config_name: Option<OsString>,
}

impl Guard {
    fn new(p: &Protected) -> Self {
        let config_dir = p
            .config_file
            .parent()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            })
            .filter(|_| !p.config_file.as_os_str().is_empty())
            .and_then(id_of_path);
        Self {
            data_dir: id_of_path(&p.data_dir),
            default_workspace: if p.data_dir.as_os_str().is_empty() {
                None
            } else {
                id_of_path(&p.data_dir.join("workspace"))
            },
            config_file: id_of_path(&p.config_file),
            config_dir,
            config_name: p.config_file.file_name().map(OsStr::to_os_string),
        }
    }

    /// Refuses the data directory.
    fn check_dir(&self, id: Id, shown: &str) -> Result<(), String> {
        if Some(id) == self.data_dir {
            return Err(format!(
                "`{shown}` is refused: it is (or lies inside) the gateway's data directory, \
                 which holds its transcripts and state; the file tools never touch it"
            ));
        }
        Ok(())
    }

    /// Refuses the configuration file, by identity and, in its directory, by name.
    fn check_entry(
        &self,
        dir: Id,
        name: &OsStr,
        file: Option<Id>,
        shown: &str,
    ) -> Result<(), String> {
        let by_name = Some(dir) == self.config_dir && Some(name) == self.config_name.as_deref();
        if by_name || (file.is_some() && file == self.config_file) {
            return Err(format!(
                "`{shown}` is refused: it is the gateway's configuration file, which is \
                 reloaded live; the file tools never touch it"
            ));
        }
        Ok(())
    }
}

/// `openat2(dir, name, flags, mode)` resolving one component, following no symlink and never
/// leaving `dir`.
fn open_beneath(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    flags: i32,
    mode: u32,
) -> std::io::Result<OwnedFd> {
    let name = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `open_how` is plain old data (it is `non_exhaustive`, so it is zeroed, then set).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
    // A mode is only allowed with O_CREAT.
    how.mode = if flags & libc::O_CREAT != 0 {
        u64::from(mode)
    } else {
        0
    };
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    loop {
        // SAFETY: the pointers are valid for the call (a NUL-terminated name and a live
        // `open_how` of the size passed); the descriptor is borrowed for the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                name.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            let fd =
                RawFd::try_from(fd).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
            // SAFETY: openat2 returned a new descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = std::io::Error::last_os_error();
        // EAGAIN: the kernel saw a concurrent rename and asks to retry.
        if !matches!(err.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
            return Err(err);
        }
    }
}

/// `..` of a directory handle, as a path-only handle (the kernel's parent, now).
fn open_parent(dir: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated literal and a borrowed live descriptor.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c"..".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn read_link(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<OsString> {
    let name = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: valid name and buffer pointers with the buffer's true length.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
    buf.truncate(n);
    Ok(OsString::from_vec(buf))
}

/// The type of `name` in `dir` without following it, if it exists.
fn mode_at(dir: BorrowedFd<'_>, name: &OsStr) -> Option<u32> {
    let name = CString::new(name.as_bytes()).ok()?;
    // SAFETY: plain old data, filled by fstatat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid name, out pointer and borrowed descriptor.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    (rc == 0).then_some(st.st_mode)
}

fn is_link(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    mode_at(dir, name).is_some_and(|m| m & libc::S_IFMT == libc::S_IFLNK)
}

fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<()> {
    let name = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid name and borrowed descriptor; mkdirat creates one entry in that directory.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o777) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EEXIST) {
            return Err(err);
        }
    }
    Ok(())
}

/// The workspace, opened.
struct Root {
    fd: OwnedFd,
    id: Id,
    guard: Guard,
    /// The workspace path as configured and canonical, to accept absolute paths inside it.
    prefixes: Vec<PathBuf>,
}

fn open_root(workspace: &Path, protected: &Protected) -> Result<Root, String> {
    let unusable = |e: &dyn std::fmt::Display| {
        format!("the workspace {} is not usable: {e}", workspace.display())
    };
    let path = CString::new(workspace.as_os_str().as_bytes()).map_err(|e| unusable(&e))?;
    // SAFETY: a valid NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(unusable(&std::io::Error::last_os_error()));
    }
    // SAFETY: open returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (id, _) = id_of(fd.as_fd()).map_err(|e| unusable(&e))?;
    let guard = Guard::new(protected);
    if Some(id) == guard.data_dir {
        return Err(format!(
            "the workspace {} is the gateway's data directory: the file tools refuse it (set \
             agent.workspace to a directory outside it)",
            workspace.display()
        ));
    }
    // A workspace inside the data directory exposes its neighbours (transcripts): only the
    // default `<dataDir>/workspace` may be there.
    if guard.data_dir.is_some() && Some(id) != guard.default_workspace {
        let mut cur = open_parent(fd.as_fd()).map_err(|e| unusable(&e))?;
        let mut last = id;
        for _ in 0..MAX_DEPTH {
            let (cid, _) = id_of(cur.as_fd()).map_err(|e| unusable(&e))?;
            if cid == last {
                break;
            }
            if Some(cid) == guard.data_dir {
                return Err(format!(
                    "the workspace {} lies inside the gateway's data directory: the file tools \
                     refuse it (only <dataDir>/workspace may be there)",
                    workspace.display()
                ));
            }
            last = cid;
            cur = open_parent(cur.as_fd()).map_err(|e| unusable(&e))?;
        }
    }
    let mut prefixes = vec![workspace.to_path_buf()];
    if let Ok(canonical) = workspace.canonicalize() {
        prefixes.push(canonical);
    }
    Ok(Root {
        fd,
        id,
        guard,
        prefixes,
    })
}

/// The components of `requested`: relative to the workspace, or absolute inside it; `..` is
/// refused.
fn components(root: &Root, requested: &str) -> Result<VecDeque<OsString>, String> {
    let path = Path::new(requested);
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!(
            "`{requested}` uses `..`: paths must stay inside the workspace"
        ));
    }
    let relative = if path.is_absolute() {
        root.prefixes
            .iter()
            .find_map(|p| path.strip_prefix(p).ok())
            .ok_or_else(|| format!("`{requested}` is outside the workspace"))?
    } else {
        path
    };
    Ok(relative
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect())
}

/// What the walk ends on.
#[derive(Clone, Copy, PartialEq)]
enum Want {
    Dir,
    Read,
    Write,
}

/// The end of a walk.
enum Opened {
    Dir(OwnedFd),
    File(File),
}

/// A walk from the workspace down, holding each directory's handle.
struct Walk<'a> {
    root: &'a Root,
    stack: Vec<(OwnedFd, Id)>,
    shown: &'a str,
}

impl Walk<'_> {
    fn cur(&self) -> (BorrowedFd<'_>, Id) {
        match self.stack.last() {
            Some((fd, id)) => (fd.as_fd(), *id),
            None => (self.root.fd.as_fd(), self.root.id),
        }
    }

    /// Expands the symlink `name` of the current directory in front of `queue`.
    fn expand(
        &self,
        name: &OsStr,
        queue: &mut VecDeque<OsString>,
        links: &mut u32,
    ) -> Result<(), String> {
        let shown = self.shown;
        *links += 1;
        if *links > MAX_LINKS {
            return Err(format!("`{shown}` goes through too many symlinks"));
        }
        let target = read_link(self.cur().0, name).map_err(|e| {
            format!(
                "cannot read the symlink `{}` of `{shown}`: {e}",
                name.to_string_lossy()
            )
        })?;
        let target = Path::new(&target);
        if target.is_absolute() {
            return Err(format!(
                "`{shown}` is refused: the symlink `{}` points to the absolute path {}; \
                 symlinks must stay inside the workspace",
                name.to_string_lossy(),
                target.display()
            ));
        }
        for c in target.components().rev() {
            match c {
                Component::Normal(n) => queue.push_front(n.to_os_string()),
                Component::ParentDir => queue.push_front(OsString::from("..")),
                _ => {}
            }
        }
        Ok(())
    }

    fn outside(&self) -> String {
        format!(
            "`{}` is refused: a symlink on the way leads outside the workspace",
            self.shown
        )
    }

    /// Walks `queue`, creating missing directories when `create`, to `want`.
    fn run(&mut self, mut queue: VecDeque<OsString>, want: Want) -> Result<Opened, String> {
        let shown = self.shown;
        let mut links = 0u32;
        let mut retries = 0u32;
        while let Some(name) = queue.pop_front() {
            if name == ".." {
                if self.stack.pop().is_none() {
                    return Err(self.outside());
                }
                continue;
            }
            if name.is_empty() || name == "." {
                continue;
            }
            let last = queue.is_empty();
            let (dir, dir_id) = self.cur();
            if !last || want == Want::Dir {
                match open_beneath(dir, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
                    Ok(fd) => {
                        let (id, _) =
                            id_of(fd.as_fd()).map_err(|e| format!("cannot open `{shown}`: {e}"))?;
                        self.root.guard.check_dir(id, shown)?;
                        self.stack.push((fd, id));
                    }
                    // A symlink fails (ELOOP, or ENOTDIR with O_DIRECTORY): walk it ourselves.
                    Err(_) if is_link(dir, &name) => {
                        self.expand(&name, &mut queue, &mut links)?;
                    }
                    Err(e)
                        if e.raw_os_error() == Some(libc::ENOENT)
                            && want == Want::Write
                            && !last =>
                    {
                        retries += 1;
                        if retries > 64 {
                            return Err(format!(
                                "cannot create the directory of `{shown}`: it keeps changing"
                            ));
                        }
                        mkdir_at(dir, &name).map_err(|e| {
                            format!(
                                "cannot create the directory `{}` for `{shown}`: {e}",
                                name.to_string_lossy()
                            )
                        })?;
                        queue.push_front(name);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                        return Err(format!(
                            "cannot use `{shown}`: `{}` is not a directory",
                            name.to_string_lossy()
                        ));
                    }
                    Err(e) => return Err(format!("cannot open `{shown}`: {e}")),
                }
                continue;
            }
            // The last component, a file.
            self.root.guard.check_entry(dir_id, &name, None, shown)?;
            let flags = match want {
                Want::Write => libc::O_WRONLY | libc::O_CREAT | libc::O_NONBLOCK | libc::O_NOCTTY,
                _ => libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
            };
            match open_beneath(dir, &name, flags, 0o666) {
                Ok(fd) => {
                    let (id, mode) =
                        id_of(fd.as_fd()).map_err(|e| format!("cannot open `{shown}`: {e}"))?;
                    self.root
                        .guard
                        .check_entry(dir_id, &name, Some(id), shown)?;
                    if mode & libc::S_IFMT != libc::S_IFREG {
                        return Err(not_regular(shown, mode));
                    }
                    self.verify_beneath()?;
                    return Ok(Opened::File(File::from(fd)));
                }
                Err(e) => match mode_at(dir, &name) {
                    Some(m) if m & libc::S_IFMT == libc::S_IFLNK => {
                        self.expand(&name, &mut queue, &mut links)?;
                    }
                    Some(m) if m & libc::S_IFMT != libc::S_IFREG => {
                        return Err(not_regular(shown, m));
                    }
                    _ if e.raw_os_error() == Some(libc::ENOENT) => {
                        return Err(format!("cannot read `{shown}`: no such file"));
                    }
                    _ => return Err(format!("cannot open `{shown}`: {e}")),
                },
            }
        }
        // The walk ended on a directory (the workspace itself when nothing was left).
        if want != Want::Dir {
            return Err(format!("`{shown}` is a directory, not a file"));
        }
        self.verify_beneath()?;
        let (fd, _) = self.cur();
        let fd = fd
            .try_clone_to_owned()
            .map_err(|e| format!("cannot open `{shown}`: {e}"))?;
        Ok(Opened::Dir(fd))
    }

    /// Walks up from the current directory by `..` to the workspace: refuses it if it is no
    /// longer inside (moved meanwhile) or if the data directory is on the way.
    fn verify_beneath(&self) -> Result<(), String> {
        let shown = self.shown;
        let (dir, id) = self.cur();
        if id == self.root.id {
            return Ok(());
        }
        let fail = |e: std::io::Error| format!("cannot check `{shown}`: {e}");
        let mut cur = open_parent(dir).map_err(fail)?;
        let mut last = id;
        for _ in 0..MAX_DEPTH {
            let (cid, _) = id_of(cur.as_fd()).map_err(fail)?;
            if cid == self.root.id {
                return Ok(());
            }
            self.root.guard.check_dir(cid, shown)?;
            if cid == last {
                break;
            }
            last = cid;
            cur = open_parent(cur.as_fd()).map_err(fail)?;
        }
        Err(format!(
            "`{shown}` is refused: it was moved outside the workspace while it was opened"
        ))
    }
}

fn not_regular(shown: &str, mode: u32) -> String {
    format!(
        "`{shown}` is {}, not a regular file: the file tools only read and write regular files",
        kind_name(mode)
    )
}

fn open(
    workspace: &Path,
    protected: &Protected,
    requested: &str,
    want: Want,
) -> Result<(Root, Opened), String> {
    let root = open_root(workspace, protected)?;
    let queue = components(&root, requested)?;
    let opened = Walk {
        root: &root,
        stack: Vec::new(),
        shown: requested,
    }
    .run(queue, want)?;
    Ok((root, opened))
}

/// Reads the regular file `requested` of the workspace, up to `max` bytes.
pub(super) fn read_file(
    workspace: &Path,
    protected: &Protected,
    requested: &str,
    max: u64,
) -> Result<Vec<u8>, String> {
    let (_, opened) = open(workspace, protected, requested, Want::Read)?;
    let Opened::File(file) = opened else {
        return Err(format!("`{requested}` is not a file"));
    };
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read `{requested}`: {e}"))?
        .len();
    if len > max {
        return Err(format!("`{requested}` is {len} bytes; the limit is {max}"));
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read `{requested}`: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("`{requested}` is over the limit of {max} bytes"));
    }
    Ok(bytes)
}

/// The first `max` bytes of the regular file `requested` of the workspace, and whether the
/// file holds more (the system prompt's instruction files are cut, not refused).
pub(super) fn read_prefix(
    workspace: &Path,
    protected: &Protected,
    requested: &str,
    max: u64,
) -> Result<(Vec<u8>, bool), String> {
    let (_, opened) = open(workspace, protected, requested, Want::Read)?;
    let Opened::File(file) = opened else {
        return Err(format!("`{requested}` is not a file"));
    };
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read `{requested}`: {e}"))?;
    let more = bytes.len() as u64 > max;
    bytes.truncate(max as usize);
    Ok((bytes, more))
}

/// Writes `content` to the regular file `requested` of the workspace (created if missing, with
/// its parent directories), replacing what it held.
pub(super) fn write_file(
    workspace: &Path,
    protected: &Protected,
    requested: &str,
    content: &[u8],
) -> Result<(), String> {
    let (_, opened) = open(workspace, protected, requested, Want::Write)?;
    let Opened::File(mut file) = opened else {
        return Err(format!("`{requested}` is not a file"));
    };
    // Truncated only now that it is known to be a regular file of the workspace.
    file.set_len(0)
        .and_then(|()| file.write_all(content))
        .map_err(|e| format!("cannot write `{requested}`: {e}"))
}

/// One entry of a listing.
pub(super) struct Entry {
    /// The entry's name.
    pub name: String,
    /// Whether it is a directory (not following a symlink).
    pub is_dir: bool,
    /// Why the file tools refuse it, if they do.
    pub refused: Option<&'static str>,
}

/// Lists the directory `requested` of the workspace, at most `max` entries.
pub(super) fn list_dir(
    workspace: &Path,
    protected: &Protected,
    requested: &str,
    max: usize,
) -> Result<Vec<Entry>, String> {
    let (root, opened) = open(workspace, protected, requested, Want::Dir)?;
    let Opened::Dir(fd) = opened else {
        return Err(format!("`{requested}` is not a directory"));
    };
    let (dir_id, _) = id_of(fd.as_fd()).map_err(|e| format!("cannot list `{requested}`: {e}"))?;
    // The handle is listed through its /proc entry, which names the open directory itself.
    let dir = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| format!("cannot list `{requested}`: {e}"))?;
    let mut out = Vec::new();
    for entry in dir {
        let Ok(entry) = entry else { break };
        let meta = entry.metadata().ok();
        let id = meta.as_ref().map(|m| Id {
            dev: m.dev(),
            ino: m.ino(),
        });
        let name = entry.file_name();
        let refused = if id.is_some() && id == root.guard.data_dir {
            Some("the gateway's data directory")
        } else if root.guard.check_entry(dir_id, &name, id, "").is_err() {
            Some("the gateway's configuration file")
        } else {
            None
        };
        out.push(Entry {
            name: name.to_string_lossy().into_owned(),
            is_dir: meta.is_some_and(|m| m.is_dir()),
            refused,
        });
        if out.len() >= max {
            break;
        }
    }
    Ok(out)
}
