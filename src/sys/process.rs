//! Spawning (fork + exec) a service process with a fully built plan, and the other raw process
//! syscalls of the master (signal mask, reaping, kill, per-pid listeners made in the child).
//!
//! Everything the child needs (argv, envp, fd moves, limits, per-process socket paths) is
//! built as C data before the child starts (`clone(CLONE_VM | CLONE_VFORK)`, see
//! [`fork_exec`]); until `execve` the child only makes
//! async-signal-safe calls (`fcntl`, `dup2`, `close`, `socket`, `bind`, `listen`, `chmod`,
//! `chown`, `setrlimit`, `setgroups`/`setresgid`/`setresuid` as raw syscalls, `sigprocmask`,
//! `execve`, `_exit`) and never allocates. Each failure
//! there ends the child with its own exit code ([`ChildFailure`]), which the master reports.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

/// Exit codes of a child that failed between fork and exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ChildFailure {
    /// execve failed (stock's FATAL_EXEC code).
    Exec = 84,
    /// Moving an fd to a high spare number failed.
    DupHigh = 120,
    /// dup2 onto the target number failed.
    Dup2 = 121,
    /// setrlimit failed.
    Rlimit = 122,
    /// Creating a per-process listener failed.
    PerPidListener = 123,
    /// Restoring the signal mask failed.
    SigMask = 124,
    /// Dropping privileges (`drop_priv_before_exec`) failed.
    DropPriv = 125,
}

impl ChildFailure {
    /// The failure an exit code stands for, if it is one of ours.
    pub fn from_code(code: i32) -> Option<ChildFailure> {
        use ChildFailure::*;
        [
            Exec,
            DupHigh,
            Dup2,
            Rlimit,
            PerPidListener,
            SigMask,
            DropPriv,
        ]
        .into_iter()
        .find(|f| *f as i32 == code)
    }

    /// A short description for the log.
    pub fn describe(self) -> &'static str {
        match self {
            ChildFailure::Exec => "exec() failed",
            ChildFailure::DupHigh => "fd placement failed (F_DUPFD)",
            ChildFailure::Dup2 => "fd placement failed (dup2)",
            ChildFailure::Rlimit => "setrlimit failed",
            ChildFailure::PerPidListener => "per-process listener could not be created",
            ChildFailure::SigMask => "sigprocmask failed",
            ChildFailure::DropPriv => "dropping privileges failed (drop_priv_before_exec)",
        }
    }
}

/// A UNIX listener the child creates for itself before exec, at
/// `prefix <decimal pid> suffix` (a per-process listener, `%{pid}` in the config).
#[derive(Debug, Clone)]
pub struct PerPidSocket {
    /// Absolute or base_dir-relative path before the pid.
    pub prefix: Vec<u8>,
    /// Path after the pid.
    pub suffix: Vec<u8>,
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub backlog: i32,
    /// Target fd number in the child.
    pub target: RawFd,
}

/// Everything needed to start one child.
#[derive(Debug, Clone)]
pub struct ExecPlan {
    /// Absolute path of the binary.
    pub path: CString,
    pub argv: Vec<CString>,
    /// `NAME=value` entries; the environment is exactly this.
    pub env: Vec<CString>,
    /// `(fd in the master, fd number in the child)`; sources may equal any target.
    pub fds: Vec<(RawFd, RawFd)>,
    /// RLIMIT_DATA and RLIMIT_AS (soft = hard); `None` leaves them.
    pub vsz_limit: Option<u64>,
    /// Set O_NONBLOCK on fd 2 in the child (stock does for the log pipe).
    pub nonblock_stderr: bool,
    /// Per-process listeners created in the child.
    pub per_pid: Vec<PerPidSocket>,
    /// `drop_priv_before_exec = yes`: the credentials the child takes before exec.
    pub drop_priv: Option<DropPriv>,
}

/// Credentials set in the child before exec (raw syscalls: they change only the child).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropPriv {
    /// setresuid to this (none: keep).
    pub uid: Option<u32>,
    /// setresgid(gid, gid, saved_gid) (none: keep).
    pub gid: Option<u32>,
    /// The saved gid (`privileged_group`); `gid` when none.
    pub saved_gid: Option<u32>,
    /// setgroups to these (set whenever `gid` is).
    pub groups: Vec<u32>,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Largest fd number a plan may target.
const MAX_TARGET: RawFd = 1000;

/// Formats `n` in decimal into `buf`, returning the length (no allocation).
fn fmt_decimal(mut n: u32, buf: &mut [u8; 10]) -> usize {
    let mut tmp = [0u8; 10];
    let mut len = 0;
    loop {
        tmp[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[i] = tmp[len - 1 - i];
    }
    len
}

/// Runs in the child: creates one per-pid listener at `target`. Only async-signal-safe calls.
///
/// # Safety
/// Must be called in a freshly forked child with `path_buf` large enough (checked by caller).
unsafe fn child_per_pid_socket(s: &PerPidSocket, pid: u32) -> bool {
    let mut addr: libc::sockaddr_un = std::mem::zeroed();
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let mut digits = [0u8; 10];
    let n = fmt_decimal(pid, &mut digits);
    let total = s.prefix.len() + n + s.suffix.len();
    if total >= addr.sun_path.len() {
        return false;
    }
    let bytes = s.prefix.iter().chain(&digits[..n]).chain(s.suffix.iter());
    for (slot, &b) in addr.sun_path.iter_mut().zip(bytes) {
        *slot = b as libc::c_char;
    }
    let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
    if fd < 0 {
        return false;
    }
    // A stale socket of a dead process with a reused pid: remove it first.
    libc::unlink(addr.sun_path.as_ptr());
    let old = libc::umask((!s.mode & 0o777) as libc::mode_t);
    let len = (std::mem::size_of::<libc::sa_family_t>() + total) as libc::socklen_t;
    let bound = libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len);
    libc::umask(old);
    if bound < 0 || libc::listen(fd, s.backlog) < 0 {
        return false;
    }
    if s.uid.is_some() || s.gid.is_some() {
        let uid = s.uid.map_or(u32::MAX, |u| u);
        let gid = s.gid.map_or(u32::MAX, |g| g);
        if libc::chown(addr.sun_path.as_ptr(), uid, gid) < 0 {
            return false;
        }
    }
    if fd != s.target {
        if libc::dup2(fd, s.target) < 0 {
            return false;
        }
        libc::close(fd);
    } else {
        // Keep it across exec.
        libc::fcntl(fd, libc::F_SETFD, 0);
    }
    true
}

/// What the child needs, prepared by the parent (the child shares the parent's memory while
/// it runs, see [`fork_exec`]).
struct ChildCtx<'a> {
    plan: &'a ExecPlan,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    high: *mut RawFd,
    is_target: &'a [bool],
    max_target: RawFd,
    rlim: Option<libc::rlimit>,
}

/// The child between clone and exec. Only async-signal-safe calls, no allocation, no panic.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildCtx` the parent keeps alive (it is suspended until we exec
    // or exit, CLONE_VFORK); every pointer in it points into memory the parent owns.
    unsafe {
        let ctx = &*(arg as *const ChildCtx<'_>);
        let plan = ctx.plan;
        let die = |f: ChildFailure| -> ! { libc::_exit(f as i32) };
        let me = libc::getpid() as u32;
        // 1. Every source to a spare number above every target (collision-safe).
        for (i, &(src, _)) in plan.fds.iter().enumerate() {
            let h = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, ctx.max_target + 1);
            if h < 0 {
                die(ChildFailure::DupHigh);
            }
            *ctx.high.add(i) = h;
        }
        // 2. Onto the targets (dup2 clears close-on-exec).
        for (i, &(_, t)) in plan.fds.iter().enumerate() {
            if libc::dup2(*ctx.high.add(i), t) < 0 {
                die(ChildFailure::Dup2);
            }
        }
        // 3. Nothing else below the highest target survives exec (an fd we did not place
        //    may have been inherited without close-on-exec); everything above is closed.
        for fd in 3..=ctx.max_target {
            if !ctx.is_target[fd as usize] {
                libc::close(fd);
            }
        }
        libc::syscall(libc::SYS_close_range, ctx.max_target + 1, u32::MAX, 0);
        for s in &plan.per_pid {
            if !child_per_pid_socket(s, me) {
                die(ChildFailure::PerPidListener);
            }
        }
        if plan.nonblock_stderr {
            let fl = libc::fcntl(2, libc::F_GETFL);
            if fl >= 0 {
                libc::fcntl(2, libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
        }
        if let Some(r) = &ctx.rlim {
            if libc::setrlimit(libc::RLIMIT_DATA, r) < 0 || libc::setrlimit(libc::RLIMIT_AS, r) < 0
            {
                die(ChildFailure::Rlimit);
            }
        }
        if let Some(d) = &plan.drop_priv {
            // Raw syscalls: glibc's wrappers would try to change every thread of the parent
            // (the child shares its memory until exec).
            if let Some(gid) = d.gid {
                if libc::syscall(libc::SYS_setgroups, d.groups.len(), d.groups.as_ptr()) < 0
                    || libc::syscall(libc::SYS_setresgid, gid, gid, d.saved_gid.unwrap_or(gid)) < 0
                {
                    die(ChildFailure::DropPriv);
                }
            }
            if let Some(uid) = d.uid {
                if libc::syscall(libc::SYS_setresuid, uid, uid, uid) < 0 {
                    die(ChildFailure::DropPriv);
                }
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) < 0 {
            die(ChildFailure::SigMask);
        }
        libc::execve(plan.path.as_ptr(), ctx.argv, ctx.envp);
        die(ChildFailure::Exec)
    }
}

/// Size of the child's own stack (it only runs `child_main`).
const CHILD_STACK: usize = 64 * 1024;

/// Starts `plan` as a new process and returns its pid. The caller must register the pid
/// before it next reaps children.
///
/// Like `posix_spawn`, this uses `clone(CLONE_VM | CLONE_VFORK)` with a separate stack instead
/// of `fork`: no page tables are copied and the parent takes no copy-on-write faults
/// afterwards (the largest cost of a spawn in the master). The parent is suspended until the
/// child has exec'ed or exited. The master has no signal handlers (signals arrive through a
/// signalfd), so none can run in the child on the shared memory.
pub fn fork_exec(plan: &ExecPlan) -> io::Result<u32> {
    for &(_, t) in &plan.fds {
        if !(0..=MAX_TARGET).contains(&t) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fd target out of range",
            ));
        }
    }
    let max_target = plan
        .fds
        .iter()
        .map(|&(_, t)| t)
        .chain(plan.per_pid.iter().map(|p| p.target))
        .max()
        .unwrap_or(2);
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut high: Vec<RawFd> = vec![-1; plan.fds.len()];
    let mut is_target = vec![false; max_target as usize + 1];
    for &(_, t) in &plan.fds {
        is_target[t as usize] = true;
    }
    for p in &plan.per_pid {
        is_target[p.target as usize] = true;
    }
    let ctx = ChildCtx {
        plan,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        high: high.as_mut_ptr(),
        is_target: &is_target,
        max_target,
        rlim: plan.vsz_limit.map(|v| libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        }),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down on x86-64/aarch64: pass its (16-byte aligned) top.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
    // SAFETY: child_main only touches `ctx` and the buffers above, which outlive the call
    // because CLONE_VFORK suspends us until the child has exec'ed or exited.
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &ctx as *const ChildCtx<'_> as *mut libc::c_void,
        )
    };
    drop(stack);
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid as u32)
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitHow {
    Code(i32),
    Signal { signal: i32, core_dumped: bool },
}

/// One non-blocking `waitpid(-1, WNOHANG)`: `None` when no child has exited (or none exists).
pub fn reap_one() -> Option<(u32, ExitHow)> {
    let mut status = 0;
    // SAFETY: waitpid writes into a local int.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let how = if libc::WIFSIGNALED(status) {
        ExitHow::Signal {
            signal: libc::WTERMSIG(status),
            core_dumped: libc::WCOREDUMP(status),
        }
    } else {
        ExitHow::Code(libc::WEXITSTATUS(status))
    };
    Some((pid as u32, how))
}

/// `kill(pid, signal)`; ESRCH is not an error.
pub fn send_signal(pid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: plain syscall.
    match cvt(unsafe { libc::kill(pid as libc::pid_t, signal) }) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        r => r.map(|_| ()),
    }
}

/// Blocks `signals` in this thread (before a signalfd reads them) and returns a
/// non-blocking, close-on-exec signalfd for them. Children get an empty mask before exec.
pub fn block_signals_fd(signals: &[i32]) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: sigset manipulation on a local set; signalfd returns a new fd we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        cvt(libc::pthread_sigmask(
            libc::SIG_BLOCK,
            &set,
            std::ptr::null_mut(),
        ))?;
        let fd = cvt(libc::signalfd(
            -1,
            &set,
            libc::SFD_NONBLOCK | libc::SFD_CLOEXEC,
        ))?;
        Ok(std::os::fd::OwnedFd::from_raw_fd(fd))
    }
}

/// A signal read from a signalfd: number and sender pid/uid.
#[derive(Debug, Clone, Copy)]
pub struct SignalInfo {
    pub signal: i32,
    pub pid: u32,
    pub uid: u32,
    pub code: i32,
}

/// Reads one pending signal from a signalfd made by [`block_signals_fd`].
pub fn read_signal(fd: std::os::fd::BorrowedFd<'_>) -> Option<SignalInfo> {
    use std::os::fd::AsRawFd;
    // SAFETY: reads one signalfd_siginfo into a local struct.
    unsafe {
        let mut info: libc::signalfd_siginfo = std::mem::zeroed();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        let n = libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        );
        if n as usize != size {
            return None;
        }
        Some(SignalInfo {
            signal: info.ssi_signo as i32,
            pid: info.ssi_pid,
            uid: info.ssi_uid,
            code: info.ssi_code,
        })
    }
}

/// Formats `unix_secs` in local time with a strftime pattern (`log_timestamp`).
pub fn strftime_local(pattern: &str, unix_secs: i64) -> String {
    let Ok(fmt) = CString::new(pattern) else {
        return String::new();
    };
    // SAFETY: localtime_r and strftime write into local buffers of the given sizes.
    unsafe {
        let t: libc::time_t = unix_secs as libc::time_t;
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return String::new();
        }
        let mut buf = [0u8; 256];
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// Sets the listen backlog of a listening socket (Linux updates it on a second `listen`).
pub fn set_backlog(fd: std::os::fd::BorrowedFd<'_>, backlog: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: listen on a borrowed socket.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) }).map(|_| ())
}

/// `lseek(fd, offset, SEEK_SET)`: the login-state file's offset is its state.
pub fn seek_to(fd: std::os::fd::BorrowedFd<'_>, offset: i64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: lseek on a borrowed fd.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset, libc::SEEK_SET) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets the process umask; returns the old one.
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn wait_for(pid: u32) -> ExitHow {
        let mut status = 0;
        unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        if libc::WIFSIGNALED(status) {
            ExitHow::Signal {
                signal: libc::WTERMSIG(status),
                core_dumped: false,
            }
        } else {
            ExitHow::Code(libc::WEXITSTATUS(status))
        }
    }

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    #[test]
    fn decimal() {
        let mut b = [0u8; 10];
        let n = fmt_decimal(4294967295, &mut b);
        assert_eq!(&b[..n], b"4294967295");
        let n = fmt_decimal(0, &mut b);
        assert_eq!(&b[..n], b"0");
    }

    /// Two pipes whose master fds are swapped targets of each other: the child must still
    /// get each at the right number, and an unlisted fd must not leak.
    #[test]
    fn collision_safe_placement_and_env() {
        let (r1, w1) = nix::unistd::pipe().unwrap();
        let (r2, w2) = nix::unistd::pipe().unwrap();
        let t1 = w2.as_raw_fd();
        let t2 = w1.as_raw_fd();
        // bash, not sh: dash rejects redirections to fd numbers above 9, which these pipes
        // get when other tests hold many fds open.
        let plan = ExecPlan {
            path: c("/bin/bash"),
            argv: vec![c("bash"), c("-c"), c(&format!(
                "echo one >&{t1}; echo two$X >&{t2}; [ -e /proc/self/fd/{} ] && echo leak >&{t1}; true",
                r1.as_raw_fd()
            ))],
            env: vec![c("X=env")],
            fds: vec![(w1.as_raw_fd(), t1), (w2.as_raw_fd(), t2)],
            vsz_limit: None,
            nonblock_stderr: false,
            per_pid: vec![],
            drop_priv: None,
        };
        let pid = fork_exec(&plan).unwrap();
        assert_eq!(wait_for(pid), ExitHow::Code(0));
        drop((w1, w2));
        let read_all = |r: std::os::fd::OwnedFd| {
            let mut s = String::new();
            use std::io::Read;
            std::fs::File::from(r).read_to_string(&mut s).unwrap();
            s
        };
        // w1 went to t1 = w2's old number, which reads back through r1.
        assert_eq!(read_all(r1), "one\n");
        assert_eq!(read_all(r2), "twoenv\n");
    }

    #[test]
    fn exec_failure_has_its_code() {
        let plan = ExecPlan {
            path: c("/nonexistent/binary"),
            argv: vec![c("x")],
            env: vec![],
            fds: vec![],
            vsz_limit: None,
            nonblock_stderr: false,
            per_pid: vec![],
            drop_priv: None,
        };
        let pid = fork_exec(&plan).unwrap();
        assert_eq!(wait_for(pid), ExitHow::Code(ChildFailure::Exec as i32));
    }
}
