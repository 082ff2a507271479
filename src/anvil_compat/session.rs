//! One anvil connection's protocol as a pure state machine: bytes in, reply bytes and log
//! lines out, and whether the connection must be closed. The tokio shell ([`super::server`])
//! only moves bytes; every rule of anvil-protocol.md §1.8, §2 and §4 lives here.
//!
//! # Rules
//!
//! - Framing: LF-terminated lines of at most 1024 bytes including the LF
//!   ([`crate::wire::line::next_line`]). A partial line of 1024 bytes or more logs
//!   `BUG: Anvil client connection sent too much data`.
//! - Handshake: the first line must be an acceptable `VERSION\tanvil\t1\t<minor>` line,
//!   otherwise `Anvil client not compatible with this server (mixed old and new binaries?)
//!   <raw line>` is logged. With `ANVIL_RESTARTED`, a pipe (the master pipe or the shared
//!   pipe) silently skips lines until its first valid VERSION line (§1.4).
//! - After the handshake every line is parsed by [`parse_request`]; an empty line is ignored.
//!   Any error logs `Anvil client input error: <reason>`; a socket is then closed at once, and
//!   later lines of the same input are not executed, while effects and replies of the earlier
//!   lines stay. A DISCONNECT without a session only logs
//!   `connect limit: disconnection for unknown pid <pid> + ident <ident>`.
//! - KILL is checked in stock's order: not enough parameters, not the master pipe, invalid pid.
//!
//! # Where Foreman differs from stock on purpose (pipes)
//!
//! Stock anvil destroys a pipe "connection" on any error and never reads that pipe again, so
//! one bad line makes it lose every later CONNECT/DISCONNECT (shared pipe) or KILL (master
//! pipe) until anvil restarts; and PENALTY-GET, CONNECT-DUMP and PENALTY-DUMP on a pipe crash
//! it. Foreman never closes a pipe:
//!
//! - LOOKUP, PENALTY-GET, CONNECT-DUMP and PENALTY-DUMP on a pipe are input errors
//!   (`<CMD> on a FIFO, can't send reply`, stock's LOOKUP text generalised);
//! - any input error on a pipe is logged exactly as stock logs it, then only that line is
//!   skipped and reading goes on;
//! - an oversized line on a pipe is logged, then discarded up to its LF;
//! - an incompatible first line on a pipe (without `ANVIL_RESTARTED`) is logged and skipped,
//!   and the pipe keeps waiting for its VERSION line.
//!
//! The hot path allocates nothing: lines are parsed in place (idents borrow the input unless
//! unescaping changes them) and replies are appended to the caller's buffer.

use bstr::BString;

use super::{Anvil, UnixMillis};
use crate::wire::anvil::{
    is_compatible_version, parse_request, encode_reply, Command, ConnectRow, Reply, Request,
    RequestError,
};
use crate::wire::line::{next_line, LineError};
use crate::wire::log::Level;

/// What kind of connection this is (anvil-protocol.md §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnKind {
    /// A pipe (no replies possible).
    pub fifo: bool,
    /// The master pipe (fd 7): the only connection allowed to send KILL.
    pub master: bool,
}

impl ConnKind {
    /// A socket client.
    pub const SOCKET: ConnKind = ConnKind { fifo: false, master: false };
    /// The shared children pipe (fd 8).
    pub const SHARED_PIPE: ConnKind = ConnKind { fifo: true, master: false };
    /// The master pipe (fd 7).
    pub const MASTER_PIPE: ConnKind = ConnKind { fifo: true, master: true };
}

/// Log lines produced while handling input, in order.
pub type LogBuf = Vec<(Level, BString)>;

/// Result of [`Session::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of the input consumed (complete lines handled); the shell keeps the rest.
    pub consumed: usize,
    /// The connection must be destroyed now (after flushing `out`).
    pub close: bool,
}

/// The log text of an oversized line.
pub const TOO_MUCH_DATA: &str = "BUG: Anvil client connection sent too much data";
/// Prefix of the log text of a rejected handshake line (the raw line follows).
pub const NOT_COMPATIBLE: &str =
    "Anvil client not compatible with this server (mixed old and new binaries?) ";
/// Prefix of every input error log text (the reason follows).
pub const INPUT_ERROR: &str = "Anvil client input error: ";

/// Per-connection protocol state.
#[derive(Debug)]
pub struct Session {
    kind: ConnKind,
    /// The VERSION line has been accepted.
    handshaken: bool,
    /// Silently skip lines before the VERSION line (pipes of a restarted anvil).
    skip_until_version: bool,
    /// A pipe sent an oversized line: drop bytes up to the next LF.
    discarding: bool,
}

/// A handled line went wrong; already logged.
struct LineFailed;

impl Session {
    /// A new connection. `anvil_restarted` is `ANVIL_RESTARTED` from the environment: then a
    /// FIFO or master connection silently skips lines until the first valid VERSION line.
    pub fn new(kind: ConnKind, anvil_restarted: bool) -> Session {
        Session {
            kind,
            handshaken: false,
            skip_until_version: anvil_restarted && (kind.fifo || kind.master),
            discarding: false,
        }
    }

    /// The connection kind.
    pub fn kind(&self) -> ConnKind {
        self.kind
    }

    /// True once the VERSION line has been accepted.
    pub fn handshaken(&self) -> bool {
        self.handshaken
    }

    /// Handles every complete line at the start of `input` against `anvil` at time `now`,
    /// appending replies to `out` and log lines to `log`. On a socket it stops at the first
    /// error (logged, `close` set; later lines are not executed). On a pipe an error only
    /// skips its line (see the module docs). Stops when only a partial line is left; a
    /// partial line of 1024 bytes or more is the "sent too much data" error.
    pub fn feed(
        &mut self,
        anvil: &mut Anvil,
        now: UnixMillis,
        input: &[u8],
        out: &mut Vec<u8>,
        log: &mut LogBuf,
    ) -> Fed {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            if self.discarding {
                match memchr::memchr(b'\n', rest) {
                    Some(lf) => {
                        pos += lf + 1;
                        self.discarding = false;
                        continue;
                    }
                    None => return Fed { consumed: input.len(), close: false },
                }
            }
            let (n, line) = match next_line(rest) {
                Ok(Some(framed)) => framed,
                Ok(None) => return Fed { consumed: pos, close: false },
                Err(LineError::TooLong) => {
                    log.push((Level::Error, TOO_MUCH_DATA.into()));
                    if self.kind.fifo {
                        self.discarding = true;
                        continue;
                    }
                    return Fed { consumed: input.len(), close: true };
                }
            };
            pos += n;
            if self.handle_line(anvil, now, line, out, log).is_err() && !self.kind.fifo {
                return Fed { consumed: pos, close: true };
            }
        }
    }

    fn handle_line(
        &mut self,
        anvil: &mut Anvil,
        now: UnixMillis,
        line: &[u8],
        out: &mut Vec<u8>,
        log: &mut LogBuf,
    ) -> Result<(), LineFailed> {
        if !self.handshaken {
            if is_compatible_version(line) {
                self.handshaken = true;
                self.skip_until_version = false;
                return Ok(());
            }
            if self.skip_until_version {
                return Ok(());
            }
            log.push((Level::Error, concat(NOT_COMPATIBLE, line)));
            return Err(LineFailed);
        }
        let request = match parse_request(line) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(RequestError::UnknownCommand(name)) => {
                // The name is logged raw, whatever its bytes.
                return input_error(log, &concat("Unknown command: ", &name));
            }
            Err(e) => return input_error(log, e.to_string().as_bytes()),
        };
        let command = request.command();
        if self.kind.fifo && needs_reply(command) {
            return input_error(log, format!("{} on a FIFO, can't send reply", command.name()).as_bytes());
        }
        match request {
            Request::Connect { pid, ident } => anvil.connect_limit.connect(pid, &ident),
            Request::Disconnect { pid, ident } => {
                if anvil.connect_limit.disconnect(pid, &ident).is_err() {
                    let text = format!("connect limit: disconnection for unknown pid {pid} + ident ");
                    log.push((Level::Error, concat(&text, &ident)));
                }
            }
            Request::Kill { pid } => {
                if !self.kind.master {
                    return input_error(log, b"KILL sent by a non-master connection");
                }
                let Some(pid) = pid else {
                    let reason = RequestError::InvalidPid(Command::Kill).to_string();
                    return input_error(log, reason.as_bytes());
                };
                anvil.connect_limit.kill(pid);
            }
            Request::Lookup { ident } => {
                encode_reply(&Reply::Count(anvil.connect_limit.lookup(&ident)), out);
            }
            Request::PenaltyGet { ident } => {
                let (penalty, last_penalty) = anvil.penalty.get(&ident);
                encode_reply(&Reply::Penalty { penalty, last_penalty }, out);
            }
            Request::PenaltyInc { ident, checksum, value } => {
                anvil.penalty.inc(now, &ident, checksum, value);
            }
            Request::PenaltySetExpireSecs { secs } => anvil.penalty.set_expire_secs(secs),
            Request::ConnectDump => {
                anvil.connect_limit.for_each(|ident, pid, refcount| {
                    let row = ConnectRow { ident: ident.into(), pid, refcount };
                    encode_reply(&Reply::ConnectRow(row), out);
                });
                encode_reply(&Reply::DumpEnd, out);
            }
            Request::PenaltyDump => {
                anvil.penalty.for_each(|row| encode_reply(&Reply::PenaltyRow(row.clone()), out));
                encode_reply(&Reply::DumpEnd, out);
            }
        }
        Ok(())
    }
}

/// Commands that answer; they cannot work on a pipe.
fn needs_reply(command: Command) -> bool {
    matches!(
        command,
        Command::Lookup | Command::PenaltyGet | Command::ConnectDump | Command::PenaltyDump
    )
}

fn concat(prefix: &str, raw: &[u8]) -> BString {
    let mut text = Vec::with_capacity(prefix.len() + raw.len());
    text.extend_from_slice(prefix.as_bytes());
    text.extend_from_slice(raw);
    BString::from(text)
}

fn input_error(log: &mut LogBuf, reason: &[u8]) -> Result<(), LineFailed> {
    log.push((Level::Error, concat(INPUT_ERROR, reason)));
    Err(LineFailed)
}
