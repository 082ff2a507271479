//! A standalone `foreman anvil` in a temporary directory (its stderr captured), a poll with
//! a bounded deadline, and `foreman who` run against a socket: shared by the tests of the
//! anvil binary and of `foreman who`.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bound of [`wait_until`].
const WAIT: Duration = Duration::from_secs(10);

/// The `foreman` binary.
pub fn foreman() -> Command {
    Command::new(env!("CARGO_BIN_EXE_foreman"))
}

/// Polls `cond` every 10 ms until it holds; panics after 10 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Collects a child's stderr (or any pipe) in the background.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn spawn(mut from: impl Read + Send + 'static) -> Captured {
        let c = Captured::default();
        let sink = c.0.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        c
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    /// What was captured so far, as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    pub fn wait_contains(&self, needle: &[u8]) {
        wait_until(
            &format!("log line {:?}", String::from_utf8_lossy(needle)),
            || self.bytes().windows(needle.len()).any(|w| w == needle),
        );
    }
}

/// A standalone anvil (`foreman anvil --socket <dir>/anvil`) in its own temporary
/// directory, killed (by its pid) on drop.
pub struct Standalone {
    pub child: Child,
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub stderr: Captured,
}

impl Standalone {
    pub fn start() -> Standalone {
        Standalone::start_with(&[])
    }

    /// With more `foreman anvil` arguments; returns once the socket accepts connections.
    pub fn start_with(args: &[&str]) -> Standalone {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("anvil");
        let mut child = foreman()
            .arg("anvil")
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Captured::spawn(child.stderr.take().unwrap());
        wait_until("the anvil socket", || UnixStream::connect(&socket).is_ok());
        Standalone {
            child,
            _dir: dir,
            socket,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `foreman who -a <socket> <args>`.
pub fn foreman_who(socket: &Path, args: &[&str]) -> Output {
    foreman()
        .arg("who")
        .arg("-a")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}
