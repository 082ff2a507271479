//! The only module with `unsafe` and raw syscalls: inherited fd checks and taking them once,
//! fd placement for a child, SCM_RIGHTS, stderr replacement, rlimits, chroot and setuid.
//!
//! Everything here is a small safe wrapper with a typed error; callers never see a raw fd
//! they do not own.

pub mod fdplan;
pub mod process;
pub mod service;
pub mod tty;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Errors from inherited-fd validation and privilege changes.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// fd 5 is not a FIFO: the process was not started by a Dovecot master (stock's wording).
    #[error("Must be started by dovecot master process")]
    NotStartedByMaster,
    /// An inherited fd is missing or of the wrong type.
    #[error("fd {fd} ({what}): expected {expected}, found {found}")]
    BadInheritedFd {
        fd: RawFd,
        what: &'static str,
        expected: FdType,
        found: String,
    },
    /// The inherited fds were already taken once in this process.
    #[error("inherited fds were already taken")]
    AlreadyTaken,
    /// SOCKET_COUNT too small for the fixed pipes.
    #[error("SOCKET_COUNT={0} is too small: anvil needs at least its 2 pipes")]
    TooFewSockets(u32),
    /// A syscall failed.
    #[error("{what} failed: {source}")]
    Syscall { what: String, source: io::Error },
    /// After setuid, root could be regained.
    #[error("privileges could be regained after dropping them")]
    PrivilegesNotDropped,
}

fn syscall(what: impl Into<String>) -> impl FnOnce(io::Error) -> SysError {
    let what = what.into();
    move |source| SysError::Syscall { what, source }
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The type an inherited fd must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdType {
    Fifo,
    Socket,
}

impl std::fmt::Display for FdType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FdType::Fifo => "a pipe",
            FdType::Socket => "a socket",
        })
    }
}

/// What `fstat` says about `fd`: `Ok(None)` for a type we do not name, `Err` if it is not open.
fn fd_type(fd: RawFd) -> io::Result<Option<FdType>> {
    Ok(match fstat(fd)?.st_mode & libc::S_IFMT {
        libc::S_IFIFO => Some(FdType::Fifo),
        libc::S_IFSOCK => Some(FdType::Socket),
        _ => None,
    })
}

/// `fstat` of `fd`; `Err` if it is not open.
fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: fstat only writes into the zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

fn check_fd(fd: RawFd, what: &'static str, expected: FdType) -> Result<(), SysError> {
    let found = match fd_type(fd) {
        Ok(Some(t)) if t == expected => return Ok(()),
        Ok(Some(t)) => t.to_string(),
        Ok(None) => "another file type".to_owned(),
        Err(e) => format!("not open ({e})"),
    };
    Err(SysError::BadInheritedFd {
        fd,
        what,
        expected,
        found,
    })
}

/// fd 5 must be the master's status pipe: stock checks it first and uses this exact message.
fn check_status_fd() -> Result<(), SysError> {
    use crate::master_compat::child_env::MASTER_STATUS_FD;
    if fd_type(MASTER_STATUS_FD).ok().flatten() != Some(FdType::Fifo) {
        return Err(SysError::NotStartedByMaster);
    }
    Ok(())
}

/// Sets `taken` (once per process: `AlreadyTaken` the second time) and returns what turns
/// an inherited fd number into an owned fd. Only for fds just checked to be open.
fn take_once(taken: &AtomicBool) -> Result<impl Fn(RawFd) -> OwnedFd, SysError> {
    if taken.swap(true, Ordering::SeqCst) {
        return Err(SysError::AlreadyTaken);
    }
    // SAFETY: callers pass only inherited fds they just checked to be open, and the flag
    // guarantees that no other OwnedFd for these numbers is ever created in this process.
    Ok(|fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The fds a Dovecot 2.3 master gives its anvil (anvil-protocol.md §1.2), validated and owned.
#[derive(Debug)]
pub struct AnvilFds {
    /// fd 4: socketpair end carrying replacement log fds.
    pub log_fdpass: OwnedFd,
    /// fd 5: status pipe write end.
    pub status: OwnedFd,
    /// fd 6: master-dead pipe write end.
    pub master_dead: OwnedFd,
    /// fd 7: master pipe read end.
    pub master_pipe: OwnedFd,
    /// fd 8: shared children pipe read end.
    pub shared_pipe: OwnedFd,
    /// fds 9..: listening unix sockets, in slot order.
    pub listeners: Vec<OwnedFd>,
}

static ANVIL_FDS_TAKEN: AtomicBool = AtomicBool::new(false);

/// Validates (fstat) and takes ownership of anvil's inherited fds, once per process.
/// `socket_count` is `SOCKET_COUNT`, which counts the two pipes.
pub fn take_anvil_fds(socket_count: u32) -> Result<AnvilFds, SysError> {
    use crate::master_compat::child_env::{
        MASTER_ANVIL_LOG_FDPASS_FD, MASTER_DEAD_FD, MASTER_LISTEN_FD_FIRST, MASTER_STATUS_FD,
    };
    if socket_count < 2 {
        return Err(SysError::TooFewSockets(socket_count));
    }
    check_status_fd()?;
    check_fd(
        MASTER_ANVIL_LOG_FDPASS_FD,
        "log fd-pass socket",
        FdType::Socket,
    )?;
    check_fd(MASTER_DEAD_FD, "master-dead pipe", FdType::Fifo)?;
    check_fd(MASTER_LISTEN_FD_FIRST, "master pipe", FdType::Fifo)?;
    check_fd(MASTER_LISTEN_FD_FIRST + 1, "shared pipe", FdType::Fifo)?;
    let last = MASTER_LISTEN_FD_FIRST + socket_count as i32;
    for fd in MASTER_LISTEN_FD_FIRST + 2..last {
        check_fd(fd, "listener", FdType::Socket)?;
    }
    let own = take_once(&ANVIL_FDS_TAKEN)?;
    Ok(AnvilFds {
        log_fdpass: own(MASTER_ANVIL_LOG_FDPASS_FD),
        status: own(MASTER_STATUS_FD),
        master_dead: own(MASTER_DEAD_FD),
        master_pipe: own(MASTER_LISTEN_FD_FIRST),
        shared_pipe: own(MASTER_LISTEN_FD_FIRST + 1),
        listeners: (MASTER_LISTEN_FD_FIRST + 2..last).map(own).collect(),
    })
}

/// One non-blocking `accept4` (close-on-exec): `Ok(None)` when nothing is queued.
pub fn accept_nonblocking(fd: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    // SAFETY: accept4 on a borrowed socket; a returned fd is new and ours.
    let r = unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(unsafe { OwnedFd::from_raw_fd(r) }))
}

/// `/dev/null` opened read-write and close-on-exec: what a child gets on fds it must not use.
pub fn dev_null() -> io::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into())
}

/// Sets or clears O_NONBLOCK.
pub fn set_nonblocking(fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a borrowed, open fd.
    let flags = cvt(unsafe { libc::fcntl(raw, libc::F_GETFL) })?;
    let new = if nonblocking {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        cvt(unsafe { libc::fcntl(raw, libc::F_SETFL, new) })?;
    }
    Ok(())
}

/// Registers an owned fd with the current tokio reactor for `interest`
/// (e.g. [`tokio::io::Interest::ERROR`] for a master-dead pipe).
pub fn async_fd(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd stays open and keeps its number until the AsyncFd drops it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
        .map_err(|e| e.into_parts().1)
}

/// Waits on the master-dead pipe (fd 6, master-interface.md §5.1) until an error or
/// hang-up condition says the master is gone. `Err` only if the fd cannot be registered.
pub async fn master_dead(fd: OwnedFd) -> io::Result<()> {
    let fd = async_fd(fd, tokio::io::Interest::ERROR)?;
    let _ = fd.ready(tokio::io::Interest::ERROR).await;
    Ok(())
}

/// Result of one [`recv_passed_fd`].
#[derive(Debug)]
pub enum FdPass {
    /// A message carried this fd.
    Fd(OwnedFd),
    /// A message without an fd (ignored by the caller).
    NoFd,
    /// The peer closed the socket.
    Eof,
    /// Nothing to read right now.
    WouldBlock,
}

/// One non-blocking `recvmsg` of a 1-byte payload with an SCM_RIGHTS fd (the master's
/// log-fd pass, anvil-protocol.md §1.4). Received fds are close-on-exec; if a message
/// carries more than one fd, the extra ones are closed.
pub fn recv_passed_fd(sock: BorrowedFd<'_>) -> io::Result<FdPass> {
    let mut byte = [0u8; 1];
    match service::recv_with_fd(sock, &mut byte) {
        Ok((_, Some(fd))) => Ok(FdPass::Fd(fd)),
        Ok((0, None)) => Ok(FdPass::Eof),
        Ok((_, None)) => Ok(FdPass::NoFd),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(FdPass::WouldBlock)
        }
        Err(e) => Err(e),
    }
}

/// Sends `fd` with a 1-byte `\0` payload over a unix socket, as the master does on fd 4.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    service::sendmsg_with_fd(sock, &[0], fd, 0).map(drop)
}

/// `dup2(fd, 2)`, then closes `fd`: the new log pipe becomes stderr.
pub fn replace_stderr(fd: OwnedFd) -> io::Result<()> {
    if fd.as_raw_fd() == libc::STDERR_FILENO {
        // Already in place; do not close it.
        std::mem::forget(fd);
        return Ok(());
    }
    // SAFETY: dup2 onto fd 2, which this process always keeps open for logging.
    cvt(unsafe { libc::dup2(fd.as_raw_fd(), libc::STDERR_FILENO) })?;
    Ok(())
}

/// Writes all of `bytes` to fd 2 with as few `write`s as possible. fd 2 may be
/// non-blocking (a master's log pipe is): on EAGAIN wait up to a second for room, then give
/// up on the rest, so a stuck log reader cannot hang the service forever.
pub fn write_stderr(bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: write from a live slice to fd 2.
        let n = unsafe { libc::write(libc::STDERR_FILENO, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            rest = &rest[n as usize..];
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd: libc::STDERR_FILENO,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: poll on one pollfd we own.
                if unsafe { libc::poll(&mut pfd, 1, 1000) } <= 0 {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

/// A privilege drop request (the master's `RESTRICT_*` variables).
#[derive(Debug, Clone, Copy, Default)]
pub struct PrivDrop<'a> {
    pub chroot: Option<&'a Path>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Supplementary groups besides `gid`.
    pub extra_groups: &'a [u32],
}

/// What [`drop_privileges`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivDropOutcome {
    /// Nothing was asked.
    NothingToDo,
    /// Done.
    Dropped,
    /// Not running as root: nothing can be changed; the reason says why it was skipped.
    Skipped(String),
}

/// Drops privileges the way stock services do: setgid, setgroups, chroot, chdir("/"),
/// setuid, then checks that root cannot be regained. Call after every fd is taken and
/// before serving any client.
pub fn drop_privileges(req: PrivDrop<'_>) -> Result<PrivDropOutcome, SysError> {
    use nix::unistd::{chdir, chroot, geteuid, setgid, setgroups, setuid, Gid, Uid};
    if req.chroot.is_none() && req.uid.is_none() && req.gid.is_none() && req.extra_groups.is_empty()
    {
        return Ok(PrivDropOutcome::NothingToDo);
    }
    if !geteuid().is_root() {
        return Ok(PrivDropOutcome::Skipped(format!(
            "running as uid {} (not root): chroot/setuid/setgid skipped",
            geteuid()
        )));
    }
    let io = |e: nix::Error| io::Error::from_raw_os_error(e as i32);
    if let Some(gid) = req.gid {
        setgid(Gid::from_raw(gid))
            .map_err(io)
            .map_err(syscall(format!("setgid({gid})")))?;
    }
    if req.gid.is_some() || !req.extra_groups.is_empty() {
        let mut groups: Vec<Gid> = req.gid.into_iter().map(Gid::from_raw).collect();
        groups.extend(req.extra_groups.iter().map(|&g| Gid::from_raw(g)));
        setgroups(&groups)
            .map_err(io)
            .map_err(syscall("setgroups"))?;
    }
    if let Some(dir) = req.chroot {
        chroot(dir)
            .map_err(io)
            .map_err(syscall(format!("chroot({})", dir.display())))?;
        chdir("/").map_err(io).map_err(syscall("chdir(/)"))?;
    }
    if let Some(uid) = req.uid {
        setuid(Uid::from_raw(uid))
            .map_err(io)
            .map_err(syscall(format!("setuid({uid})")))?;
        if uid != 0 && setuid(Uid::from_raw(0)).is_ok() {
            return Err(SysError::PrivilegesNotDropped);
        }
    }
    Ok(PrivDropOutcome::Dropped)
}

/// Arranges for `cmd`'s child to get each `(fd, target)` pair's fd at number `target`
/// (targets must be above 2 and below 64). Collision-safe: the sources are first duplicated
/// (close-on-exec) to numbers above every target, and the child only `dup2`s those, which
/// is async-signal-safe. The duplicates live in the command and close when it is dropped.
pub fn place_fds(cmd: &mut std::process::Command, fds: Vec<(OwnedFd, RawFd)>) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    const ABOVE_TARGETS: RawFd = 64;
    let mut plan: Vec<(OwnedFd, RawFd)> = Vec::with_capacity(fds.len());
    for (fd, target) in fds {
        if !(3..ABOVE_TARGETS).contains(&target) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fd target out of range",
            ));
        }
        // SAFETY: F_DUPFD_CLOEXEC on a borrowed open fd returns a new fd that we own.
        let high =
            cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, ABOVE_TARGETS) })?;
        plan.push((unsafe { OwnedFd::from_raw_fd(high) }, target));
    }
    // SAFETY: the closure runs between fork and exec and only calls dup2 on fds that exist
    // (owned by `plan`, which the closure keeps alive), with no allocation.
    unsafe {
        cmd.pre_exec(move || {
            for (high, target) in &plan {
                if libc::dup2(high.as_fd().as_raw_fd(), *target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn scm_rights_round_trip() {
        let (a, b) = UnixStream::pair().unwrap();
        let (p_read, p_write) = nix::unistd::pipe().unwrap();
        send_fd(a.as_fd(), p_write.as_fd()).unwrap();
        drop(p_write);
        let got = match recv_passed_fd(b.as_fd()).unwrap() {
            FdPass::Fd(fd) => fd,
            other => panic!("expected an fd, got {other:?}"),
        };
        // The received fd is the pipe's write end: writing through it reaches p_read.
        nix::unistd::write(&got, b"hi").unwrap();
        let mut buf = [0u8; 2];
        nix::unistd::read(p_read.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        assert!(matches!(
            recv_passed_fd(b.as_fd()).unwrap(),
            FdPass::WouldBlock
        ));
        drop(a);
        assert!(matches!(recv_passed_fd(b.as_fd()).unwrap(), FdPass::Eof));
    }

    #[test]
    fn message_without_fd() {
        let (a, b) = UnixStream::pair().unwrap();
        use std::io::Write;
        (&a).write_all(b"\0").unwrap();
        assert!(matches!(recv_passed_fd(b.as_fd()).unwrap(), FdPass::NoFd));
    }

    #[test]
    fn fd_types() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert_eq!(fd_type(r.as_raw_fd()).unwrap(), Some(FdType::Fifo));
        let (s, _t) = UnixStream::pair().unwrap();
        assert_eq!(fd_type(s.as_raw_fd()).unwrap(), Some(FdType::Socket));
        let f = tempfile::tempfile().unwrap();
        assert_eq!(fd_type(f.as_raw_fd()).unwrap(), None);
    }

    #[test]
    fn nonblocking_toggle() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        set_nonblocking(r.as_fd(), true).unwrap();
        let mut buf = [0u8; 1];
        let err = nix::unistd::read(r.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(err, nix::errno::Errno::EAGAIN);
    }

    #[test]
    fn place_fds_in_child() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg("echo placed >&9");
        place_fds(&mut cmd, vec![(w, 9)]).unwrap();
        let status = cmd.status().unwrap();
        assert!(status.success());
        drop(cmd);
        let mut buf = [0u8; 7];
        nix::unistd::read(r.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf, b"placed\n");
    }
}
