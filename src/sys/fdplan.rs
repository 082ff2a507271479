//! Placing fds at fixed numbers in a child process, and taking fds a parent left at fixed
//! numbers. Used wherever Foreman plays a Dovecot master towards a stock service binary (the
//! conformance replayer and recording proxy) and will serve the master's spawner too.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// First fd number used to park sources before they are moved onto their targets, so that
/// a source sitting on another entry's target number is never overwritten.
const PARK_BASE: RawFd = 200;

/// Spawns `cmd` with each `(fd, target)` of `plan` placed at fd number `target` (without
/// close-on-exec). Every other fd this process holds stays close-on-exec as Rust opens them.
/// The `OwnedFd`s are closed in the parent once the child has been spawned.
pub fn spawn_with_fds(cmd: &mut Command, plan: Vec<(OwnedFd, RawFd)>) -> io::Result<Child> {
    let raw: Vec<(RawFd, RawFd)> = plan.iter().map(|(fd, target)| (fd.as_raw_fd(), *target)).collect();
    // SAFETY: the closure only calls fcntl/dup2/close (async-signal-safe) on fds that stay
    // open in the parent until spawn() returns, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let mut parked = [0 as RawFd; 64];
            if raw.len() > parked.len() {
                return Err(io::Error::from_raw_os_error(libc::EMFILE));
            }
            for (i, (src, _)) in raw.iter().enumerate() {
                let fd = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, PARK_BASE);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                parked[i] = fd;
            }
            for (i, (_, target)) in raw.iter().enumerate() {
                if libc::dup2(parked[i], *target) < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(parked[i]);
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(plan);
    child
}

/// Takes ownership of fd `fd` inherited from the parent, if it is open. Call at most once per
/// number, at start-up, before anything else could have opened or closed that number.
pub fn take_inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only queries; it fails with EBADF when the number is not open.
    let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
    if !open {
        return None;
    }
    // SAFETY: the fd is open and, per this function's contract, owned by nobody else in
    // this process. Mark it close-on-exec so it does not leak into our own children.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        Some(OwnedFd::from_raw_fd(fd))
    }
}

/// Bytes waiting in the kernel on `fd`'s connection that its reader has not consumed yet:
/// for a pipe (either end) the bytes in the pipe buffer (FIONREAD), for a connected unix
/// stream socket the bytes this end sent that the peer has not read (SIOCOUTQ).
pub fn unconsumed_bytes(fd: &impl AsRawFd, is_socket: bool) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    let req = if is_socket { libc::TIOCOUTQ } else { libc::FIONREAD };
    // SAFETY: the ioctl writes one c_int to the pointer we pass.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut n as *mut libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}
