//! A minimal Dovecot master for one anvil process: the fds and environment of
//! anvil-protocol.md §1.2 / master-interface.md §5.1–§5.2, nothing more.
//!
//! It owns what a master owns across anvil restarts: the master pipe and the shared pipe (it
//! keeps their read ends, as the stock master does, so writes never fail while no anvil reads),
//! the two listening sockets, the master-dead pipe. Each [`FakeMaster::spawn`] starts a new
//! anvil on them. The anvil's status records (fd 5) and log output (fd 2) are collected by
//! reader threads: the first status record is the "ready" signal, the log is shown next to
//! mismatches.
//!
//! The stock anvil binary reads its settings through `CONFIG_FILE`; here that names a minimal
//! `dovecot.conf`, so lib-master's doveconf re-exec fallback (master-interface.md §5.7) serves
//! it. `DOVECOT_PRESERVE_ENVS` lists every variable the fake master sets, so the re-exec keeps
//! them.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::{pipe2, Pid};

use super::transcript::{ConnKind, ExitKind};
use crate::wire::status::{StatusRecord, STATUS_RECORD_LEN};

/// Where the stock anvil binary lives on Debian.
pub const STOCK_ANVIL: &str = "/usr/lib/dovecot/anvil";

/// Which anvil to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnvilBinary {
    /// The stock Dovecot binary ([`STOCK_ANVIL`]).
    Stock,
    /// A binary; if its file name is `foreman`, it is run as `foreman anvil`.
    Path(PathBuf),
}

impl AnvilBinary {
    /// `stock`, `foreman` (the running executable) or a path.
    pub fn parse(s: &str) -> io::Result<AnvilBinary> {
        Ok(match s {
            "stock" => AnvilBinary::Stock,
            "foreman" => AnvilBinary::Path(std::env::current_exe()?),
            p => AnvilBinary::Path(PathBuf::from(p)),
        })
    }

    fn command(&self) -> Command {
        match self {
            AnvilBinary::Stock => Command::new(STOCK_ANVIL),
            AnvilBinary::Path(p) => {
                let mut c = Command::new(p);
                if p.file_name().is_some_and(|n| n == "foreman") {
                    c.arg("anvil");
                }
                c
            }
        }
    }
}

/// Status records and log bytes collected from the anvil.
#[derive(Debug, Default)]
struct Collected {
    status: Vec<StatusRecord>,
    log: Vec<u8>,
}

/// The master side of one anvil service (see the module doc).
pub struct FakeMaster {
    binary: AnvilBinary,
    dir: tempfile::TempDir,
    master_pipe: (OwnedFd, File),
    shared_pipe: (OwnedFd, File),
    /// `None` in standalone mode, where the anvil binds the sockets itself.
    listeners: Option<[UnixListener; 2]>,
    status_write: OwnedFd,
    dead: (Option<OwnedFd>, OwnedFd),
    fdpass: (OwnedFd, OwnedFd),
    generation: u32,
    child: Option<Child>,
    collected: Arc<(Mutex<Collected>, Condvar)>,
}

impl FakeMaster {
    /// Creates the pipes and sockets in a new temporary directory; starts nothing yet.
    pub fn new(binary: AnvilBinary) -> io::Result<FakeMaster> {
        FakeMaster::with_mode(binary, false)
    }

    /// Like [`FakeMaster::new`]; `standalone` runs the anvil as `<binary> --socket …
    /// --penalty-socket …` instead (Foreman's standalone mode): no inherited fds, no pipes.
    pub fn with_mode(binary: AnvilBinary, standalone: bool) -> io::Result<FakeMaster> {
        let dir = tempfile::Builder::new()
            .prefix("foreman-conformance-")
            .tempdir()?;
        let run = dir.path().join("run");
        std::fs::create_dir(&run)?;
        std::fs::write(
            dir.path().join("dovecot.conf"),
            format!(
                "base_dir = {}\nstate_dir = {}\n",
                run.display(),
                dir.path().display()
            ),
        )?;
        let listeners = if standalone {
            None
        } else {
            Some([
                UnixListener::bind(run.join(ConnKind::Anvil.name()))?,
                UnixListener::bind(run.join(ConnKind::AnvilAuthPenalty.name()))?,
            ])
        };
        let (mr, mw) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let (sr, sw) = pipe2(OFlag::O_CLOEXEC)?;
        let (status_read, status_write) = pipe2(OFlag::O_CLOEXEC)?;
        let (dead_r, dead_w) = pipe2(OFlag::O_CLOEXEC)?;
        let fdpass = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let collected = Arc::new((Mutex::new(Collected::default()), Condvar::new()));
        let c = collected.clone();
        std::thread::spawn(move || {
            let mut f = File::from(status_read);
            let mut rec = [0u8; STATUS_RECORD_LEN];
            while f.read_exact(&mut rec).is_ok() {
                if let Some(r) = StatusRecord::decode(&rec) {
                    c.0.lock().unwrap().status.push(r);
                    c.1.notify_all();
                }
            }
        });
        Ok(FakeMaster {
            binary,
            dir,
            master_pipe: (mr, File::from(mw)),
            shared_pipe: (sr, File::from(sw)),
            listeners,
            status_write,
            dead: (Some(dead_r), dead_w),
            fdpass,
            generation: 0,
            child: None,
            collected,
        })
    }

    /// The directory holding the sockets (the anvil's base_dir).
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Starts an anvil process and waits (up to `timeout`) for its first status record.
    pub fn spawn(&mut self, restarted: bool, timeout: Duration) -> io::Result<()> {
        if self.child.is_some() {
            return Err(io::Error::other("an anvil is already running"));
        }
        self.generation += 1;
        if self.dead.0.is_none() {
            return Err(io::Error::other("the fake master is dead"));
        }
        let Some(listeners) = &self.listeners else {
            return self.spawn_standalone(timeout);
        };
        let null = crate::sys::dev_null;
        let (log_r, log_w) = pipe2(OFlag::O_CLOEXEC)?;
        let std_fds = [null()?, null()?, log_w];
        let plan = vec![
            (null()?, 3),
            (self.fdpass.1.try_clone()?, 4),
            (self.status_write.try_clone()?, 5),
            (self.dead.1.try_clone()?, 6),
            (self.master_pipe.0.try_clone()?, 7),
            (self.shared_pipe.0.try_clone()?, 8),
            (OwnedFd::from(listeners[0].try_clone()?), 9),
            (OwnedFd::from(listeners[1].try_clone()?), 10),
        ];
        let mut vars: Vec<(&str, String)> = vec![
            ("DOVECOT_CHILD_PROCESS", "1".into()),
            (
                "CONFIG_FILE",
                self.dir.path().join("dovecot.conf").display().to_string(),
            ),
            ("SERVICE_NAME", "anvil".into()),
            ("CLIENT_LIMIT", "1000".into()),
            ("PROCESS_LIMIT", "1".into()),
            ("PROCESS_MIN_AVAIL", "1".into()),
            ("IDLE_KILL", "4294967295".into()),
            ("GENERATION", self.generation.to_string()),
            ("LOG_DEBUG", String::new()),
            ("SOCKET2_SETTINGS", "anvil".into()),
            ("SOCKET3_SETTINGS", "anvil-auth-penalty".into()),
            ("LOG_SERVICE", "1".into()),
            ("SOCKET_COUNT", "4".into()),
        ];
        if restarted {
            vars.push(("ANVIL_RESTARTED", "1".into()));
        }
        let preserve: Vec<&str> = vars.iter().map(|(k, _)| *k).collect();
        let mut cmd = self.binary.command();
        cmd.env_clear()
            .current_dir(self.run_dir())
            .env("DOVECOT_PRESERVE_ENVS", preserve.join(" "));
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        let child = spawn_with_layout(&mut cmd, std_fds, plan)?;
        let pid = child.id() as i32;
        self.child = Some(child);
        let c = self.collected.clone();
        std::thread::spawn(move || {
            let mut f = File::from(log_r);
            let mut buf = [0u8; 4096];
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                c.0.lock().unwrap().log.extend_from_slice(&buf[..n]);
            }
        });
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.collected;
        let mut g = lock.lock().unwrap();
        loop {
            if g.status.iter().any(|r| r.pid == pid) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::other(format!(
                    "anvil pid {pid} sent no status record within {timeout:?}; its log: {}",
                    String::from_utf8_lossy(&g.log)
                )));
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
            drop(g);
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(io::Error::other(format!(
                    "anvil exited at start-up: {st}; log: {}",
                    self.log_text()
                )));
            }
            g = lock.lock().unwrap();
        }
    }

    /// Standalone mode: `<binary> --socket run/anvil --penalty-socket run/anvil-auth-penalty`;
    /// ready once both sockets accept a connection.
    fn spawn_standalone(&mut self, timeout: Duration) -> io::Result<()> {
        let run = self.run_dir();
        let mut cmd = self.binary.command();
        cmd.arg("--socket")
            .arg(run.join(ConnKind::Anvil.name()))
            .arg("--penalty-socket")
            .arg(run.join(ConnKind::AnvilAuthPenalty.name()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn()?;
        if let Some(err) = child.stderr.take() {
            let c = self.collected.clone();
            std::thread::spawn(move || {
                let mut f = err;
                let mut buf = [0u8; 4096];
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    c.0.lock().unwrap().log.extend_from_slice(&buf[..n]);
                }
            });
        }
        self.child = Some(child);
        let deadline = Instant::now() + timeout;
        // A probe connection that sends nothing and closes leaves no trace in an anvil.
        while !(self.connect(ConnKind::Anvil).is_ok()
            && self.connect(ConnKind::AnvilAuthPenalty).is_ok())
        {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(io::Error::other(format!(
                    "anvil exited at start-up: {st}; log: {}",
                    self.log_text()
                )));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(
                    "the standalone anvil's sockets never accepted",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The running anvil's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Everything the anvil processes wrote to their log pipe (fd 2) so far, escaped.
    pub fn log_text(&self) -> String {
        let g = self.collected.0.lock().unwrap();
        let mut s = String::new();
        super::transcript::escape_bytes(&g.log, &mut s);
        s.replace("\\x0a", "\n")
    }

    /// Connects a client to one of the two sockets.
    pub fn connect(&self, kind: ConnKind) -> io::Result<UnixStream> {
        UnixStream::connect(self.run_dir().join(kind.name()))
    }

    /// The write end of a pipe (the master's side).
    pub fn pipe_writer(&self, kind: ConnKind) -> &File {
        match kind {
            ConnKind::MasterPipe => &self.master_pipe.1,
            _ => &self.shared_pipe.1,
        }
    }

    /// Closes the master's write end of a pipe: the anvil reads EOF from it.
    pub fn close_pipe(&mut self, kind: ConnKind) -> io::Result<()> {
        // Replace the writer by /dev/null so the struct stays whole; the pipe's last write end
        // goes away with the old File.
        let null = File::options().write(true).open("/dev/null")?;
        match kind {
            ConnKind::MasterPipe => self.master_pipe.1 = null,
            _ => self.shared_pipe.1 = null,
        }
        Ok(())
    }

    /// Whether the running anvil still holds the read end of a pipe (it closes it for good
    /// after bad input). Looks for the pipe's inode among `/proc/<pid>/fd/*`.
    pub fn anvil_holds_pipe(&self, kind: ConnKind) -> io::Result<bool> {
        let Some(pid) = self.pid() else {
            return Ok(false);
        };
        let fd = match kind {
            ConnKind::MasterPipe => &self.master_pipe.0,
            _ => &self.shared_pipe.0,
        };
        let ino = File::from(fd.try_clone()?).metadata()?.ino();
        let want = format!("pipe:[{ino}]");
        let entries = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(e) => e,
            Err(_) => return Ok(false),
        };
        for e in entries.flatten() {
            if std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Bytes written to a pipe that nobody has read yet.
    pub fn pipe_unread(&self, kind: ConnKind) -> io::Result<usize> {
        crate::sys::fdplan::unconsumed_bytes(&self.pipe_writer(kind).as_fd(), false)
    }

    /// Makes the master look dead to the anvil: closes the read end of its master-dead pipe.
    pub fn master_dead(&mut self) {
        self.dead.0 = None;
    }

    /// Sends a signal to the running anvil.
    pub fn kill(&self, signal: i32) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other("no anvil running"))?;
        let sig = Signal::try_from(signal).map_err(io::Error::from)?;
        nix::sys::signal::kill(Pid::from_raw(pid as i32), sig).map_err(io::Error::from)
    }

    /// Waits up to `timeout` for the anvil to exit; `Ok(None)` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> io::Result<Option<ExitKind>> {
        let deadline = Instant::now() + timeout;
        let Some(child) = self.child.as_mut() else {
            return Err(io::Error::other("no anvil running"));
        };
        loop {
            if let Some(st) = child.try_wait()? {
                self.child = None;
                return Ok(Some(exit_kind(st)));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the anvil (SIGKILL) if it still runs.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Base directory of this instance.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes bytes to a pipe as one write (the master pipe is non-blocking; lines are small).
    pub fn write_pipe(&self, kind: ConnKind, data: &[u8]) -> io::Result<()> {
        let mut w = self.pipe_writer(kind);
        w.write_all(data)
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns `cmd` with fds 0–2 from `std_fds` and every `(fd, n)` of `plan` at number n; the
/// parent's copies are closed once the child runs.
pub fn spawn_with_layout(
    cmd: &mut Command,
    std_fds: [OwnedFd; 3],
    plan: Vec<(OwnedFd, i32)>,
) -> io::Result<Child> {
    let [i, o, e] = std_fds;
    cmd.stdin(std::process::Stdio::from(i))
        .stdout(std::process::Stdio::from(o))
        .stderr(std::process::Stdio::from(e));
    crate::sys::place_fds(cmd, plan)?;
    cmd.spawn()
}

/// Converts a process exit status.
pub fn exit_kind(st: ExitStatus) -> ExitKind {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => ExitKind::Status(c),
        (None, Some(s)) => ExitKind::Signal(s),
        _ => ExitKind::Status(-1),
    }
}
