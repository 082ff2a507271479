//! The master's one connection to the foreman-anvil registry (`$BASE/anvil`,
//! docs/anvil-extensions.md §3 "From the master", §6): reports are buffered and written
//! without blocking; `EVICT` is the only request with a reply, waited for at most
//! [`EVICT_WAIT`]. The master's loop polls [`RegistryClient::fd`] for the greeting, EOF (anvil
//! restarted or stock) and for writability while reports are buffered.
//!
//! States: `Off` (no connection: no reuse pool, or the anvil closed it), `Connecting`
//! (handshake sent, greeting not yet seen: reports are dropped, the supervisor re-reports
//! everything on [`Input::Up`]), `Up`, `Stock` (the anvil closed without a greeting: a stock
//! anvil; no reporting until the next anvil process).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::wire::anvil::Pid;
use crate::wire::anvil_ext::{
    decode_evict_reply, encode_ext_request, is_ext_version, ExtReply, ExtRequest, VERSION_LINE,
};
use crate::wire::DecodeError;

/// How long the master waits for an `EVICT` reply before treating it as "none".
pub const EVICT_WAIT: Duration = Duration::from_millis(200);
/// Buffered reports beyond this mean the anvil does not read: the connection is dropped.
pub const MAX_BUFFERED: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Off,
    Connecting,
    Up,
    Stock,
}

/// What reading the connection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Nothing of interest.
    Nothing,
    /// The greeting arrived: reporting is on.
    Up,
    /// A stock anvil (EOF before the greeting): reporting stays off.
    Stock,
    /// The connection was lost after the greeting.
    Down,
}

/// Why an `EVICT` got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvictError {
    /// The connection is not up, or was lost: the caller tells the supervisor.
    #[error("registry connection lost")]
    Down,
    /// No reply within [`EVICT_WAIT`]; the reply will be discarded when it comes.
    #[error("no EVICT reply within {} ms", EVICT_WAIT.as_millis())]
    Timeout,
    /// The reply was not a pid or `none`; the connection was dropped.
    #[error("{0}")]
    Invalid(String),
}

/// The registry connection.
#[derive(Debug)]
pub struct RegistryClient {
    path: PathBuf,
    state: State,
    stream: Option<UnixStream>,
    out: Vec<u8>,
    input: Vec<u8>,
    /// Replies still to come for EVICTs that timed out.
    stale: usize,
}

impl RegistryClient {
    pub fn new(path: impl AsRef<Path>) -> RegistryClient {
        RegistryClient {
            path: path.as_ref().to_owned(),
            state: State::Off,
            stream: None,
            out: Vec::new(),
            input: Vec::new(),
            stale: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Drops the connection (no event).
    pub fn close(&mut self) {
        self.stream = None;
        self.out.clear();
        self.input.clear();
        self.stale = 0;
        self.state = State::Off;
    }

    /// Opens a new connection and sends the handshake (any old one is closed first).
    pub fn connect(&mut self) -> io::Result<()> {
        self.close();
        let stream = UnixStream::connect(&self.path)?;
        stream.set_nonblocking(true)?;
        self.stream = Some(stream);
        self.state = State::Connecting;
        self.out.extend_from_slice(VERSION_LINE);
        self.flush()?;
        Ok(())
    }

    /// The socket, to poll for input (and for output while [`Self::wants_write`]).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.stream.as_ref().map(|s| s.as_fd())
    }

    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes what fits without blocking.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while !self.out.is_empty() {
            match stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Queues one report (only while up); `Err` when the connection is lost (the caller
    /// tells the supervisor).
    pub fn report(&mut self, req: &ExtRequest) -> Result<(), EvictError> {
        if self.state != State::Up {
            return Ok(());
        }
        encode_ext_request(req, &mut self.out);
        if self.flush().is_err() || self.out.len() > MAX_BUFFERED {
            self.close();
            return Err(EvictError::Down);
        }
        Ok(())
    }

    /// Reads what is there (call when the fd is readable).
    pub fn on_readable(&mut self) -> Input {
        let Some(stream) = self.stream.as_mut() else {
            return Input::Nothing;
        };
        let mut buf = [0u8; 4096];
        let mut eof = false;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        let mut result = Input::Nothing;
        if self.state == State::Connecting {
            if let Some(pos) = self.input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.input.drain(..=pos).collect();
                if is_ext_version(&line[..line.len() - 1]) {
                    self.state = State::Up;
                    result = Input::Up;
                } else {
                    eof = true;
                }
            }
        }
        if self.state == State::Up {
            // Late replies of timed-out EVICTs.
            while self.stale > 0 {
                let Some(pos) = self.input.iter().position(|&b| b == b'\n') else {
                    break;
                };
                self.input.drain(..=pos);
                self.stale -= 1;
            }
        }
        if eof {
            let was = self.state;
            self.close();
            return match was {
                State::Connecting => {
                    self.state = State::Stock;
                    Input::Stock
                }
                State::Up => Input::Down,
                _ => Input::Nothing,
            };
        }
        result
    }

    /// `EVICT <service>[ <pid>]`: the reserved pid, or `None`. Waits at most [`EVICT_WAIT`].
    pub fn evict(&mut self, service: &[u8], pid: Option<u32>) -> Result<Option<u32>, EvictError> {
        if self.state != State::Up {
            return Err(EvictError::Down);
        }
        encode_ext_request(
            &ExtRequest::Evict {
                service: service.into(),
                pid: pid.and_then(Pid::new),
            },
            &mut self.out,
        );
        let deadline = Instant::now() + EVICT_WAIT;
        loop {
            if self.flush().is_err() {
                self.close();
                return Err(EvictError::Down);
            }
            // Stale replies first, then ours.
            while let Some(pos) = self.input.iter().position(|&b| b == b'\n') {
                if self.stale > 0 {
                    self.input.drain(..=pos);
                    self.stale -= 1;
                    continue;
                }
                if !self.out.is_empty() {
                    break;
                }
                return match decode_evict_reply(&self.input) {
                    Ok((n, reply)) => {
                        self.input.drain(..n);
                        Ok(match reply {
                            ExtReply::Evicted(p) => Some(p.get()),
                            _ => None,
                        })
                    }
                    Err(DecodeError::Invalid(e)) => {
                        self.close();
                        Err(EvictError::Invalid(e.to_string()))
                    }
                    Err(DecodeError::Incomplete) => {
                        self.close();
                        Err(EvictError::Invalid("incomplete EVICT reply".into()))
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.stale += 1;
                return Err(EvictError::Timeout);
            }
            let Some(stream) = self.stream.as_ref() else {
                return Err(EvictError::Down);
            };
            let mut flags = PollFlags::POLLIN;
            if !self.out.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            let mut pfd = [PollFd::new(stream.as_fd(), flags)];
            let ms = PollTimeout::try_from(left.as_millis() as i32 + 1).unwrap_or(PollTimeout::MAX);
            match nix::poll::poll(&mut pfd, ms) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => {
                    self.close();
                    return Err(EvictError::Down);
                }
            }
            let readable = pfd[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP));
            if readable {
                let mut buf = [0u8; 4096];
                let stream = self.stream.as_mut().expect("checked");
                match stream.read(&mut buf) {
                    Ok(0) => {
                        self.close();
                        return Err(EvictError::Down);
                    }
                    Ok(n) => self.input.extend_from_slice(&buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Err(_) => {
                        self.close();
                        return Err(EvictError::Down);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixListener;

    fn server() -> (tempfile::TempDir, PathBuf, UnixListener) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anvil");
        let l = UnixListener::bind(&path).unwrap();
        (dir, path, l)
    }

    fn wait_input(c: &mut RegistryClient) -> Input {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let fd = c.fd().unwrap();
            let mut pfd = [PollFd::new(fd, PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut pfd, PollTimeout::from(100u16));
            match c.on_readable() {
                Input::Nothing => {}
                other => return other,
            }
        }
        Input::Nothing
    }

    #[test]
    fn greeting_then_reports_and_an_evict_round_trip() {
        let (_d, path, l) = server();
        let mut c = RegistryClient::new(&path);
        c.connect().unwrap();
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line.as_bytes(), VERSION_LINE);
        (&s).write_all(VERSION_LINE).unwrap();
        assert_eq!(wait_input(&mut c), Input::Up);
        c.report(&ExtRequest::ProcDeath {
            pid: Pid::new(7).unwrap(),
        })
        .unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "PROC-DEATH\t7\n");
        // The server answers an EVICT from another thread.
        let t = std::thread::spawn(move || {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, "EVICT\timap\n");
            (&s).write_all(b"4242\n").unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, "EVICT\timap\t9\n");
            (&s).write_all(b"none\n").unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            // No answer to the third: it times out; the late reply is discarded.
            std::thread::sleep(EVICT_WAIT * 2);
            (&s).write_all(b"77\n").unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            (&s).write_all(b"none\n").unwrap();
            s
        });
        assert_eq!(c.evict(b"imap", None), Ok(Some(4242)));
        assert_eq!(c.evict(b"imap", Some(9)), Ok(None));
        assert_eq!(c.evict(b"imap", None), Err(EvictError::Timeout));
        std::thread::sleep(EVICT_WAIT * 2);
        assert_eq!(c.evict(b"imap", None), Ok(None), "the late 77 is not ours");
        let s = t.join().unwrap();
        drop(s);
        assert_eq!(wait_input(&mut c), Input::Down);
        assert_eq!(c.evict(b"imap", None), Err(EvictError::Down));
    }

    #[test]
    fn eof_before_the_greeting_is_a_stock_anvil() {
        let (_d, path, l) = server();
        let mut c = RegistryClient::new(&path);
        c.connect().unwrap();
        let (s, _) = l.accept().unwrap();
        drop(s);
        assert_eq!(wait_input(&mut c), Input::Stock);
        assert_eq!(c.state(), State::Stock);
        // Reports are dropped silently.
        assert!(c
            .report(&ExtRequest::ProcDeath {
                pid: Pid::new(7).unwrap()
            })
            .is_ok());
    }
}
