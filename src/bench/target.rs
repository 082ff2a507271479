//! The two anvils under test, each a live process with a socket, a pid and an RSS:
//! stock Dovecot's anvil inside a stock `dovecot -F` instance ([`crate::stock`]), and Foreman's
//! `foreman anvil --socket PATH` run standalone as a child process. Every process started
//! here is stopped by pid (SIGTERM, SIGKILL after a deadline) when dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid as NixPid;

use super::{BenchError, Result};
use crate::stock::{wait_for, Protocol, StockDovecot};

/// Which anvil.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Stock,
    Foreman,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Stock => "stock",
            Side::Foreman => "foreman",
        }
    }
}

/// How long a started anvil may take to accept its first connection (valgrind is slow).
const READY_DEADLINE: Duration = Duration::from_secs(90);
/// How long after SIGTERM before SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// A running anvil.
pub struct AnvilProcess {
    side: Side,
    socket: PathBuf,
    /// The anvil's own pid (for RSS); `None` when not known (stock under valgrind).
    pid: Option<u32>,
    kind: Kind,
}

enum Kind {
    Stock(Box<StockDovecot>),
    Foreman {
        child: Option<Child>,
        dir: tempfile::TempDir,
    },
}

impl AnvilProcess {
    /// Starts stock Dovecot (IMAP listener only, nothing connects to it) and finds its anvil.
    pub fn start_stock() -> Result<AnvilProcess> {
        let dovecot = StockDovecot::builder()
            .protocols(&[Protocol::Imap])
            .start()?;
        let master = dovecot
            .pid()
            .ok_or_else(|| BenchError::Protocol("stock master already gone".into()))?;
        let pid = wait_for(Duration::from_secs(20), || find_child(master, "anvil"))
            .ok_or_else(|| BenchError::Protocol("stock anvil process not found in /proc".into()))?;
        Ok(AnvilProcess {
            side: Side::Stock,
            socket: dovecot.anvil_socket(),
            pid: Some(pid),
            kind: Kind::Stock(Box::new(dovecot)),
        })
    }

    /// Starts stock Dovecot whose anvil runs under callgrind, writing `cg_dir/cg.<pid>`.
    pub fn start_stock_callgrind(valgrind: &Path, cg_dir: &Path) -> Result<AnvilProcess> {
        // chroot off and user root: otherwise callgrind cannot write its file after the
        // privilege drop.
        let service = format!(
            "service anvil {{\n  chroot =\n  user = root\n  executable = {} --tool=callgrind \
             --callgrind-out-file={}/cg.%p /usr/lib/dovecot/anvil\n}}",
            valgrind.display(),
            cg_dir.display()
        );
        let dovecot = StockDovecot::builder()
            .protocols(&[Protocol::Imap])
            .config_line(service)
            .start()?;
        Ok(AnvilProcess {
            side: Side::Stock,
            socket: dovecot.anvil_socket(),
            pid: None,
            kind: Kind::Stock(Box::new(dovecot)),
        })
    }

    /// Starts `exe anvil --socket <tmp>/anvil`, optionally under a wrapper such as valgrind
    /// (`wrapper[0] wrapper[1..] exe anvil …`), and waits until it accepts connections.
    pub fn start_foreman(exe: &Path, wrapper: &[String]) -> Result<AnvilProcess> {
        let dir = tempfile::Builder::new()
            .prefix("fm-bench-")
            .tempdir()
            .map_err(|e| BenchError::io("create temporary directory", e))?;
        let socket = dir.path().join("anvil");
        let stderr = fs::File::create(dir.path().join("anvil.stderr"))
            .map_err(|e| BenchError::io("create anvil.stderr", e))?;
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(exe);
                cmd
            }
            None => Command::new(exe),
        };
        cmd.arg("anvil")
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let child = cmd
            .spawn()
            .map_err(|e| BenchError::io(format!("spawn {}", exe.display()), e))?;
        let pid = child.id();
        let mut process = AnvilProcess {
            side: Side::Foreman,
            socket,
            pid: Some(pid),
            kind: Kind::Foreman {
                child: Some(child),
                dir,
            },
        };
        process.wait_foreman_ready()?;
        Ok(process)
    }

    fn wait_foreman_ready(&mut self) -> Result<()> {
        let socket = self.socket.clone();
        let Kind::Foreman { child, dir } = &mut self.kind else {
            return Ok(());
        };
        let end = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(c) = child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    *child = None;
                    let log =
                        fs::read_to_string(dir.path().join("anvil.stderr")).unwrap_or_default();
                    return Err(BenchError::Protocol(format!(
                        "foreman anvil exited during start-up ({status}): {log}"
                    )));
                }
            }
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(BenchError::Protocol(format!(
                    "foreman anvil did not listen on {} within {READY_DEADLINE:?}",
                    socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn side(&self) -> Side {
        self.side
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The anvil's resident set size in bytes (`VmRSS` of /proc/<pid>/status).
    pub fn rss_bytes(&self) -> Result<u64> {
        let pid = self
            .pid
            .ok_or_else(|| BenchError::Protocol("anvil pid unknown".into()))?;
        rss_bytes(pid)
    }

    /// Stops the anvil (stock: the whole instance) and waits for it to exit.
    pub fn stop(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.kind {
            Kind::Stock(dovecot) => Ok(dovecot.stop()?),
            Kind::Foreman { child, .. } => match child.take() {
                Some(child) => stop_child(child).map(Some),
                None => Ok(None),
            },
        }
    }
}

impl Drop for AnvilProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// SIGTERM, wait up to [`STOP_DEADLINE`], then SIGKILL.
fn stop_child(mut child: Child) -> Result<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Ok(status);
    }
    let _ = kill(NixPid::from_raw(child.id() as i32), Signal::SIGTERM);
    let end = Instant::now() + STOP_DEADLINE;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                return child.wait().map_err(|e| BenchError::io("wait anvil", e));
            }
            Err(e) => return Err(BenchError::io("wait anvil", e)),
        }
    }
}

/// `VmRSS` of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status =
        fs::read_to_string(&path).map_err(|e| BenchError::io(format!("read {path}"), e))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| BenchError::Protocol(format!("no VmRSS in {path}")))
}

/// A child of `parent` whose command line contains `name`.
fn find_child(parent: u32, name: &str) -> Option<u32> {
    crate::stock::procs::children_of(parent)
        .into_iter()
        .find(|p| p.cmdline.contains(name))
        .map(|p| p.pid)
}
