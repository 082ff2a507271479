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
//! - After the handshake every line is framed and parsed in one pass by
//!   [`decode_request`]; an empty line is ignored. Any error logs
//!   `Anvil client input error: <reason>`; a socket is then closed at once, and later lines
//!   of the same input are not executed, while effects and replies of the earlier lines
//!   stay. A DISCONNECT without a session only logs
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
    decode_request, encode_reply, is_compatible_version, Command, ConnectRow, Reply, Request,
    RequestError,
};
use crate::wire::line::{next_line, LineError};
use crate::wire::log::Level;
use crate::wire::DecodeError;

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
    pub const SOCKET: ConnKind = ConnKind {
        fifo: false,
        master: false,
    };
    /// The shared children pipe (fd 8).
    pub const SHARED_PIPE: ConnKind = ConnKind {
        fifo: true,
        master: false,
    };
    /// The master pipe (fd 7).
    pub const MASTER_PIPE: ConnKind = ConnKind {
        fifo: true,
        master: true,
    };
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
    /// Opened with the foreman-anvil handshake: extension commands allowed.
    ext: bool,
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
            ext: false,
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
        self.feed_bounded(anvil, now, input, out, log, usize::MAX)
    }

    /// [`Session::feed`] that also stops before a line once `out` holds `out_cap` bytes or
    /// more (a shell bounding its unsent output); the rest is consumed by a later call.
    // Never inlined: one call per read, and profiles can count it (examples/anvil_feed).
    #[inline(never)]
    pub fn feed_bounded(
        &mut self,
        anvil: &mut Anvil,
        now: UnixMillis,
        input: &[u8],
        out: &mut Vec<u8>,
        log: &mut LogBuf,
        out_cap: usize,
    ) -> Fed {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            if rest.is_empty() || out.len() >= out_cap {
                return Fed {
                    consumed: pos,
                    close: false,
                };
            }
            if self.discarding {
                match memchr::memchr(b'\n', rest) {
                    Some(lf) => {
                        pos += lf + 1;
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        return Fed {
                            consumed: input.len(),
                            close: false,
                        }
                    }
                }
            }
            if !self.handshaken {
                let (n, line) = match next_line(rest) {
                    Ok(Some(framed)) => framed,
                    Ok(None) => {
                        return Fed {
                            consumed: pos,
                            close: false,
                        }
                    }
                    Err(LineError::TooLong) => {
                        if self.too_long(log) {
                            return Fed {
                                consumed: input.len(),
                                close: true,
                            };
                        }
                        continue;
                    }
                };
                pos += n;
                if self.handshake(line, out, log).is_err() && !self.kind.fifo {
                    return Fed {
                        consumed: pos,
                        close: true,
                    };
                }
                continue;
            }
            // A foreman-anvil connection: extension commands first (docs/anvil-extensions.md).
            if self.ext {
                if let Ok(Some((n, line))) = next_line(rest) {
                    if let Some(done) = super::ext_session::handle_line(anvil, now, line, out, log)
                    {
                        pos += n;
                        if done.is_err() {
                            return Fed {
                                consumed: pos,
                                close: true,
                            };
                        }
                        continue;
                    }
                }
            }
            // After the handshake: framing and parsing in one pass.
            let result = match decode_request(rest) {
                Ok((n, request)) => {
                    pos += n;
                    match request {
                        Some(request) => self.execute(anvil, now, request, out, log),
                        None => Ok(()), // an empty line
                    }
                }
                Err(DecodeError::Incomplete) => {
                    return Fed {
                        consumed: pos,
                        close: false,
                    }
                }
                Err(DecodeError::Invalid(Err(LineError::TooLong))) => {
                    if self.too_long(log) {
                        return Fed {
                            consumed: input.len(),
                            close: true,
                        };
                    }
                    continue;
                }
                Err(DecodeError::Invalid(Ok(reason))) => {
                    // Errors are rare: frame the line again for its length.
                    pos += match next_line(rest) {
                        Ok(Some((n, _))) => n,
                        _ => rest.len(),
                    };
                    request_error(log, reason)
                }
            };
            if result.is_err() && !self.kind.fifo {
                return Fed {
                    consumed: pos,
                    close: true,
                };
            }
        }
    }

    /// An oversized line: logged; a pipe discards it up to its LF, a socket must be closed
    /// (true).
    fn too_long(&mut self, log: &mut LogBuf) -> bool {
        log.push((Level::Error, TOO_MUCH_DATA.into()));
        if self.kind.fifo {
            self.discarding = true;
        }
        !self.kind.fifo
    }

    /// A line before the handshake.
    fn handshake(
        &mut self,
        line: &[u8],
        out: &mut Vec<u8>,
        log: &mut LogBuf,
    ) -> Result<(), LineFailed> {
        if is_compatible_version(line) {
            self.handshaken = true;
            self.skip_until_version = false;
            return Ok(());
        }
        if super::ext_session::accept_handshake(self.kind, line, out) {
            (self.handshaken, self.ext) = (true, true);
            return Ok(());
        }
        if self.skip_until_version {
            return Ok(());
        }
        log.push((Level::Error, concat(NOT_COMPATIBLE, line)));
        Err(LineFailed)
    }

    /// Runs one parsed request.
    #[inline]
    fn execute(
        &mut self,
        anvil: &mut Anvil,
        now: UnixMillis,
        request: Request<'_>,
        out: &mut Vec<u8>,
        log: &mut LogBuf,
    ) -> Result<(), LineFailed> {
        let command = request.command();
        if self.kind.fifo && needs_reply(command) {
            return input_error(
                log,
                format!("{} on a FIFO, can't send reply", command.name()).as_bytes(),
            );
        }
        match request {
            Request::Connect { pid, ident } => {
                anvil.connect_limit.connect(pid, &ident);
                super::ext_session::on_connect(anvil, pid, &ident, log);
            }
            Request::Disconnect { pid, ident } => {
                if anvil.connect_limit.disconnect(pid, &ident).is_err() {
                    let text =
                        format!("connect limit: disconnection for unknown pid {pid} + ident ");
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
                encode_reply(
                    &Reply::Penalty {
                        penalty,
                        last_penalty,
                    },
                    out,
                );
            }
            Request::PenaltyInc {
                ident,
                checksum,
                value,
            } => {
                anvil.penalty.inc(now, &ident, checksum, value);
            }
            Request::PenaltySetExpireSecs { secs } => anvil.penalty.set_expire_secs(secs),
            Request::ConnectDump => {
                anvil.connect_limit.for_each(|ident, pid, refcount| {
                    let row = ConnectRow {
                        ident: ident.into(),
                        pid,
                        refcount,
                    };
                    encode_reply(&Reply::ConnectRow(row), out);
                });
                encode_reply(&Reply::DumpEnd, out);
            }
            Request::PenaltyDump => {
                anvil
                    .penalty
                    .for_each(|row| encode_reply(&Reply::PenaltyRow(row.clone()), out));
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

fn request_error(log: &mut LogBuf, reason: RequestError) -> Result<(), LineFailed> {
    match reason {
        // The name is logged raw, whatever its bytes.
        RequestError::UnknownCommand(name) => input_error(log, &concat("Unknown command: ", &name)),
        e => input_error(log, e.to_string().as_bytes()),
    }
}

fn input_error(log: &mut LogBuf, reason: &[u8]) -> Result<(), LineFailed> {
    log.push((Level::Error, concat(INPUT_ERROR, reason)));
    Err(LineFailed)
}

#[cfg(test)]
mod tests {
    use bstr::ByteSlice;

    use super::*;
    use crate::wire::anvil::VERSION_LINE;

    const NOW: UnixMillis = 1_795_892_735_000;

    struct Run {
        out: Vec<u8>,
        logs: Vec<Vec<u8>>,
        fed: Fed,
    }

    /// Feeds `input` in one piece to a new session on `anvil`.
    fn feed(anvil: &mut Anvil, kind: ConnKind, restarted: bool, input: &[u8]) -> Run {
        let mut s = Session::new(kind, restarted);
        feed_session(&mut s, anvil, input)
    }

    fn feed_session(s: &mut Session, anvil: &mut Anvil, input: &[u8]) -> Run {
        let (mut out, mut log) = (Vec::new(), LogBuf::new());
        let fed = s.feed(anvil, NOW, input, &mut out, &mut log);
        for (level, _) in &log {
            assert_eq!(*level, Level::Error, "every anvil log message is an error");
        }
        Run {
            out,
            logs: log.into_iter().map(|(_, t)| t.into()).collect(),
            fed,
        }
    }

    fn with_version(lines: &[u8]) -> Vec<u8> {
        [VERSION_LINE, lines].concat()
    }

    fn input_error(reason: &str) -> Vec<u8> {
        format!("{INPUT_ERROR}{reason}").into_bytes()
    }

    struct Case {
        name: &'static str,
        kind: ConnKind,
        /// Sent after the VERSION line.
        lines: &'static [u8],
        out: &'static [u8],
        /// Input error reasons / other log texts, in order.
        logs: &'static [&'static str],
        close: bool,
    }

    const S: ConnKind = ConnKind::SOCKET;
    const P: ConnKind = ConnKind::SHARED_PIPE;
    const M: ConnKind = ConnKind::MASTER_PIPE;

    /// `logs` entries starting with `!` are input error reasons, others are full texts.
    fn cases() -> Vec<Case> {
        let c = |name, kind, lines, out, logs, close| Case {
            name,
            kind,
            lines,
            out,
            logs,
            close,
        };
        vec![
            c("lookup unknown", S, b"LOOKUP\tx\n", b"0\n", &[], false),
            c(
                "connect then lookup",
                S,
                b"CONNECT\t1\tx\nCONNECT\t2\tx\nLOOKUP\tx\n",
                b"2\n",
                &[],
                false,
            ),
            c(
                "extra fields ignored",
                S,
                b"CONNECT\t1\tx\tmore\nLOOKUP\tx\textra\tmore\n",
                b"1\n",
                &[],
                false,
            ),
            c(
                "empty lines ignored",
                S,
                b"\n\r\nLOOKUP\tx\n",
                b"0\n",
                &[],
                false,
            ),
            c(
                "escaped command name",
                S,
                b"LOOK\x01UP\tx\n",
                b"0\n",
                &[],
                false,
            ),
            c(
                "nul ends the line",
                S,
                b"CONNECT\t1\tx\0junk\nLOOKUP\tx\n",
                b"1\n",
                &[],
                false,
            ),
            c(
                "pid leading zeros",
                S,
                b"CONNECT\t007\tx\nCONNECT-DUMP\n",
                b"x\t7\t1\n\n",
                &[],
                false,
            ),
            c(
                "connect not enough",
                S,
                b"CONNECT\t1\n",
                b"",
                &["!CONNECT: Not enough parameters"],
                true,
            ),
            c(
                "connect invalid pid",
                S,
                b"CONNECT\t-1\tx\n",
                b"",
                &["!CONNECT: Invalid pid"],
                true,
            ),
            c(
                "connect pid too big",
                S,
                b"CONNECT\t2147483648\tx\n",
                b"",
                &["!CONNECT: Invalid pid"],
                true,
            ),
            c(
                "disconnect not enough",
                S,
                b"DISCONNECT\n",
                b"",
                &["!DISCONNECT: Not enough parameters"],
                true,
            ),
            c(
                "disconnect invalid pid",
                S,
                b"DISCONNECT\tabc\tx\n",
                b"",
                &["!DISCONNECT: Invalid pid"],
                true,
            ),
            c(
                "disconnect unknown keeps the connection",
                S,
                b"DISCONNECT\t0042\ta\x01tb\nLOOKUP\ta\tb\n",
                b"0\n",
                &["connect limit: disconnection for unknown pid 42 + ident a\tb"],
                false,
            ),
            c(
                "disconnect with another pid is unknown",
                S,
                b"CONNECT\t1\tx\nDISCONNECT\t2\tx\nLOOKUP\tx\n",
                b"1\n",
                &["connect limit: disconnection for unknown pid 2 + ident x"],
                false,
            ),
            c(
                "kill not enough on a socket",
                S,
                b"KILL\n",
                b"",
                &["!KILL: Not enough parameters"],
                true,
            ),
            c(
                "kill on a socket",
                S,
                b"KILL\t5\n",
                b"",
                &["!KILL sent by a non-master connection"],
                true,
            ),
            c(
                "kill bad pid on a socket",
                S,
                b"KILL\tabc\n",
                b"",
                &["!KILL sent by a non-master connection"],
                true,
            ),
            c(
                "kill bad pid on the master pipe",
                M,
                b"KILL\tabc\n",
                b"",
                &["!KILL: Invalid pid"],
                false,
            ),
            c(
                "kill on the shared pipe",
                P,
                b"KILL\t5\n",
                b"",
                &["!KILL sent by a non-master connection"],
                false,
            ),
            c(
                "kill unknown pid logs nothing",
                M,
                b"KILL\t5\n",
                b"",
                &[],
                false,
            ),
            c(
                "lookup not enough",
                S,
                b"LOOKUP\n",
                b"",
                &["!LOOKUP: Not enough parameters"],
                true,
            ),
            c(
                "lookup on a pipe",
                P,
                b"LOOKUP\tx\n",
                b"",
                &["!LOOKUP on a FIFO, can't send reply"],
                false,
            ),
            c(
                "lookup not enough on a pipe",
                P,
                b"LOOKUP\n",
                b"",
                &["!LOOKUP: Not enough parameters"],
                false,
            ),
            c(
                "penalty-get unknown",
                S,
                b"PENALTY-GET\t1.2.3.4\n",
                b"0 0\n",
                &[],
                false,
            ),
            c(
                "penalty-get not enough",
                S,
                b"PENALTY-GET\n",
                b"",
                &["!PENALTY-GET: Not enough parameters"],
                true,
            ),
            c(
                "penalty-get on a pipe",
                M,
                b"PENALTY-GET\tx\n",
                b"",
                &["!PENALTY-GET on a FIFO, can't send reply"],
                false,
            ),
            c(
                "penalty-inc then get",
                S,
                b"PENALTY-INC\t1.2.3.4\t77\t3\nPENALTY-GET\t1.2.3.4\n",
                b"3 1795892735\n",
                &[],
                false,
            ),
            c(
                "penalty-inc on a pipe works",
                P,
                b"PENALTY-INC\tx\t0\t1\n",
                b"",
                &[],
                false,
            ),
            c(
                "penalty-inc not enough",
                S,
                b"PENALTY-INC\tx\t1\n",
                b"",
                &["!PENALTY-INC: Not enough parameters"],
                true,
            ),
            c(
                "penalty-inc value too big",
                S,
                b"PENALTY-INC\tx\t1\t65536\n",
                b"",
                &["!PENALTY-INC: Invalid parameters"],
                true,
            ),
            c(
                "penalty-inc bad checksum",
                S,
                b"PENALTY-INC\tx\ty\t1\n",
                b"",
                &["!PENALTY-INC: Invalid parameters"],
                true,
            ),
            c(
                "penalty-inc zero value",
                S,
                b"PENALTY-INC\tx\t1\t0\n",
                b"",
                &["!PENALTY-INC: Invalid parameters"],
                true,
            ),
            c(
                "set-expire ok",
                S,
                b"PENALTY-SET-EXPIRE-SECS\t29\n",
                b"",
                &[],
                false,
            ),
            c(
                "set-expire missing",
                S,
                b"PENALTY-SET-EXPIRE-SECS\n",
                b"",
                &["!PENALTY-SET-EXPIRE-SECS: Invalid parameters"],
                true,
            ),
            c(
                "set-expire invalid",
                S,
                b"PENALTY-SET-EXPIRE-SECS\t4294967296\n",
                b"",
                &["!PENALTY-SET-EXPIRE-SECS: Invalid parameters"],
                true,
            ),
            c(
                "connect-dump empty",
                S,
                b"CONNECT-DUMP\targs\tignored\n",
                b"\n",
                &[],
                false,
            ),
            c(
                "connect-dump escapes",
                S,
                b"CONNECT\t9\tesc/a\x01tb\x01nc\x01rd\x011e\nCONNECT-DUMP\n",
                b"esc/a\x01tb\x01nc\x01rd\x011e\t9\t1\n\n",
                &[],
                false,
            ),
            c(
                "connect-dump on a pipe",
                P,
                b"CONNECT-DUMP\n",
                b"",
                &["!CONNECT-DUMP on a FIFO, can't send reply"],
                false,
            ),
            c(
                "penalty-dump",
                S,
                b"PENALTY-INC\tp\x01tA\t0\t2\nPENALTY-DUMP\n",
                b"p\x01tA\t2\t1795892735\t1795892735\n\n",
                &[],
                false,
            ),
            c(
                "penalty-dump on a pipe",
                M,
                b"PENALTY-DUMP\n",
                b"",
                &["!PENALTY-DUMP on a FIFO, can't send reply"],
                false,
            ),
            c(
                "unknown command",
                S,
                b"FOO\tx\n",
                b"",
                &["!Unknown command: FOO"],
                true,
            ),
            c(
                "empty command name",
                S,
                b"\tx\n",
                b"",
                &["!Unknown command: "],
                true,
            ),
            c(
                "lower case command",
                S,
                b"lookup\tx\n",
                b"",
                &["!Unknown command: lookup"],
                true,
            ),
            c(
                "second version line",
                S,
                b"VERSION\tanvil\t1\t0\n",
                b"",
                &["!Unknown command: VERSION"],
                true,
            ),
            c(
                "raw bytes in a name",
                S,
                b"\xff\xfe\n",
                b"",
                &["!Unknown command: \u{0}"],
                true,
            ),
            c(
                "an error stops later lines, earlier replies stay",
                S,
                b"CONNECT\t1\ta\nLOOKUP\ta\nBOGUS\nCONNECT\t1\tb\nLOOKUP\ta\n",
                b"1\n",
                &["!Unknown command: BOGUS"],
                true,
            ),
            c(
                "a pipe error skips only its line",
                P,
                b"CONNECT\t1\ta\nBOGUS\nCONNECT\t1\tb\nCONNECT\tx\tc\nCONNECT\t2\ta\n",
                b"",
                &["!Unknown command: BOGUS", "!CONNECT: Invalid pid"],
                false,
            ),
        ]
    }

    #[test]
    fn every_command_and_error() {
        for case in cases() {
            let mut anvil = Anvil::default();
            let input = with_version(case.lines);
            let run = feed(&mut anvil, case.kind, false, &input);
            let logs: Vec<Vec<u8>> = case
                .logs
                .iter()
                .map(|l| match l.strip_prefix('!') {
                    // A raw 0xff 0xfe name: written with a placeholder above.
                    Some("Unknown command: \u{0}") => input_error("Unknown command: ")
                        .into_iter()
                        .chain([0xff, 0xfe])
                        .collect(),
                    Some(reason) => input_error(reason),
                    None => l.as_bytes().to_vec(),
                })
                .collect();
            assert_eq!(
                run.out.as_bstr(),
                case.out.as_bstr(),
                "{}: replies",
                case.name
            );
            assert_eq!(
                run.logs.iter().map(|l| l.as_bstr()).collect::<Vec<_>>(),
                logs.iter().map(|l| l.as_bstr()).collect::<Vec<_>>(),
                "{}: logs",
                case.name
            );
            assert_eq!(run.fed.close, case.close, "{}: close", case.name);
            if !case.close {
                assert_eq!(run.fed.consumed, input.len(), "{}: consumed", case.name);
            }
        }
    }

    #[test]
    fn state_effects_of_the_table_cases() {
        // "an error stops later lines": a counted, b not.
        let mut anvil = Anvil::default();
        let input = with_version(b"CONNECT\t1\ta\nBOGUS\nCONNECT\t1\tb\n");
        let run = feed(&mut anvil, S, false, &input);
        assert!(run.fed.close);
        assert_eq!(run.fed.consumed, input.len() - b"CONNECT\t1\tb\n".len());
        assert_eq!(anvil.connect_limit.lookup(b"a"), 1);
        assert_eq!(anvil.connect_limit.lookup(b"b"), 0);
        // On a pipe both sides of the bad line are executed.
        let mut anvil = Anvil::default();
        feed(
            &mut anvil,
            P,
            false,
            &with_version(b"CONNECT\t1\ta\nBOGUS\nCONNECT\t1\tb\nLOOKUP\tb\nCONNECT\t2\tb\n"),
        );
        assert_eq!(anvil.connect_limit.lookup(b"a"), 1);
        assert_eq!(anvil.connect_limit.lookup(b"b"), 2);
    }

    #[test]
    fn live_c1_dump_as_a_multiset() {
        let mut anvil = Anvil::default();
        let lines = b"CONNECT\t4242\ttest/1.2.3.4/u\nCONNECT\t4242\ttest/1.2.3.4/u\n\
            CONNECT\t4343\ttest/1.2.3.4/u\nCONNECT\t4343\tother/u2\nCONNECT-DUMP\n";
        let run = feed(&mut anvil, S, false, &with_version(lines));
        assert!(run.out.ends_with(b"\n\n"));
        let mut rows: Vec<&[u8]> = run.out[..run.out.len() - 1].lines().collect();
        rows.sort();
        assert_eq!(
            rows,
            [
                &b"other/u2\t4343\t1"[..],
                b"test/1.2.3.4/u\t4242\t2",
                b"test/1.2.3.4/u\t4343\t1"
            ]
        );
    }

    #[test]
    fn handshake_rules() {
        let not_compatible = |line: &[u8]| [NOT_COMPATIBLE.as_bytes(), line].concat();
        // Accepted first lines, followed by a LOOKUP that must answer.
        for ok in [
            &b"VERSION\tanvil\t1\t0\n"[..],
            b"VERSION\tanvil\t01\t99\n",
            b"VERSION\tanvil\t1\t4294967295\n",
            b"VERSION\tanvil\t1\t0\r\n",
        ] {
            let run = feed(
                &mut Anvil::default(),
                S,
                false,
                &[ok, b"LOOKUP\tx\n"].concat(),
            );
            assert_eq!(
                (run.out.as_bstr(), run.logs.len(), run.fed.close),
                (b"0\n".as_bstr(), 0, false),
                "{ok:?}"
            );
        }
        for bad in [
            &b"LOOKUP\tx"[..],
            b"",
            b"VERSION\tanvil\t2\t0",
            b"VERSION\tanvilx\t1\t0",
            b"version\tanvil\t1\t0",
            b"VERSION\tanvil\t1",
            b"VERSION\tanvil\t1\t4294967296",
            b"VERSION\tanvil\t1\t0\tx",
        ] {
            let run = feed(
                &mut Anvil::default(),
                S,
                false,
                &[bad, b"\nLOOKUP\tx\n"].concat(),
            );
            assert_eq!(run.logs, [not_compatible(bad)], "{bad:?}");
            assert!(run.fed.close);
            assert!(run.out.is_empty());
            // ANVIL_RESTARTED does not exempt sockets.
            let run = feed(
                &mut Anvil::default(),
                S,
                true,
                &[bad, b"\nLOOKUP\tx\n"].concat(),
            );
            assert_eq!(run.logs, [not_compatible(bad)], "{bad:?}");
            assert!(run.fed.close);
        }
        // The server sends nothing for the handshake.
        let run = feed(&mut Anvil::default(), S, false, VERSION_LINE);
        assert!(run.out.is_empty() && run.logs.is_empty() && !run.fed.close);
    }

    #[test]
    fn restarted_pipes_skip_stale_lines_silently() {
        for kind in [M, P] {
            let mut anvil = Anvil::default();
            let input = b"KILL\t4711\nCONNECT\t1\tstale\nVERSION\tanvil\t2\t0\n\
                VERSION\tanvil\t1\t0\nCONNECT\t2\tfresh\n";
            let run = feed(&mut anvil, kind, true, input);
            assert!(run.logs.is_empty(), "{:?}", run.logs);
            assert!(!run.fed.close);
            assert_eq!(run.fed.consumed, input.len());
            assert_eq!(anvil.connect_limit.lookup(b"stale"), 0);
            assert_eq!(anvil.connect_limit.lookup(b"fresh"), 1);
        }
        // After the VERSION line, errors are logged again.
        let mut anvil = Anvil::default();
        let run = feed(&mut anvil, P, true, &with_version(b"BOGUS\n"));
        assert_eq!(run.logs, [input_error("Unknown command: BOGUS")]);
    }

    #[test]
    fn unrestarted_pipe_logs_a_bad_first_line_and_waits_for_version() {
        let mut anvil = Anvil::default();
        let input = b"CONNECT\t1\tstale\nVERSION\tanvil\t1\t0\nCONNECT\t2\tfresh\n";
        let run = feed(&mut anvil, P, false, input);
        assert_eq!(
            run.logs,
            [[NOT_COMPATIBLE.as_bytes(), b"CONNECT\t1\tstale"].concat()]
        );
        assert!(!run.fed.close);
        assert_eq!(anvil.connect_limit.lookup(b"stale"), 0);
        assert_eq!(anvil.connect_limit.lookup(b"fresh"), 1);
    }

    #[test]
    fn kill_and_disconnect_interplay() {
        let mut anvil = Anvil::default();
        let mut shared = Session::new(P, false);
        let mut master = Session::new(M, false);
        let run = feed_session(
            &mut shared,
            &mut anvil,
            &with_version(b"CONNECT\t5\ta\nCONNECT\t5\ta\nCONNECT\t5\tb\nCONNECT\t6\ta\n"),
        );
        assert!(run.logs.is_empty());
        let run = feed_session(&mut master, &mut anvil, &with_version(b"KILL\t5\n"));
        assert!(run.logs.is_empty());
        assert_eq!(anvil.connect_limit.lookup(b"a"), 1);
        assert_eq!(anvil.connect_limit.lookup(b"b"), 0);
        // The killed process's late DISCONNECT is unknown; the other pid's is fine.
        let run = feed_session(
            &mut shared,
            &mut anvil,
            b"DISCONNECT\t5\ta\nDISCONNECT\t6\ta\n",
        );
        assert_eq!(
            run.logs,
            [b"connect limit: disconnection for unknown pid 5 + ident a".to_vec()]
        );
        assert_eq!(anvil.connect_limit.pairs(), 0);
        // Sessions outlive the connection that reported them and are seen by any other.
        feed_session(&mut shared, &mut anvil, b"CONNECT\t7\tc\n");
        let run = feed(&mut anvil, S, false, &with_version(b"LOOKUP\tc\n"));
        assert_eq!(run.out, b"1\n");
    }

    #[test]
    fn lines_split_across_feeds() {
        let mut anvil = Anvil::default();
        let mut s = Session::new(S, false);
        let all = with_version(b"CONNECT\t1\tx\nLOOKUP\tx\n");
        // The shell keeps unconsumed bytes and feeds them again with the next read.
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for chunk in all.chunks(3) {
            pending.extend_from_slice(chunk);
            let run = feed_session(&mut s, &mut anvil, &pending);
            assert!(run.logs.is_empty() && !run.fed.close);
            out.extend_from_slice(&run.out);
            pending.drain(..run.fed.consumed);
        }
        assert!(pending.is_empty());
        assert_eq!(out, b"1\n");
    }

    #[test]
    fn feed_bounded_stops_before_a_line_once_the_output_is_full() {
        let mut anvil = Anvil::default();
        let mut s = Session::new(S, false);
        let input = with_version(b"LOOKUP\tx\nCONNECT\t1\tx\nLOOKUP\tx\nLOOKUP\ty\n");
        let (mut out, mut log) = (Vec::new(), LogBuf::new());
        // 2 bytes of output reach the cap: the CONNECT waits for the next call.
        let fed = s.feed_bounded(&mut anvil, NOW, &input, &mut out, &mut log, 2);
        assert_eq!(out, b"0\n");
        assert_eq!(
            &input[fed.consumed..],
            b"CONNECT\t1\tx\nLOOKUP\tx\nLOOKUP\ty\n"
        );
        assert_eq!(anvil.connect_limit.lookup(b"x"), 0);
        // A full buffer takes nothing.
        let rest = &input[fed.consumed..];
        let again = s.feed_bounded(&mut anvil, NOW, rest, &mut out, &mut log, 2);
        assert_eq!(again.consumed, 0);
        out.clear();
        let fed = s.feed_bounded(&mut anvil, NOW, rest, &mut out, &mut log, 3);
        assert_eq!((out.as_slice(), fed.consumed), (&b"1\n0\n"[..], rest.len()));
        assert!(log.is_empty() && !fed.close);
    }

    #[test]
    fn line_length_limit_on_a_socket() {
        // 1024 bytes with the LF are fine [L7].
        let line = [b"LOOKUP\t".as_slice(), &[b'a'; 1016], b"\n"].concat();
        assert_eq!(line.len(), 1024);
        let run = feed(&mut Anvil::default(), S, false, &with_version(&line));
        assert_eq!((run.out.as_slice(), run.fed.close), (&b"0\n"[..], false));
        // 1023 bytes without LF: wait for more.
        let mut s = Session::new(S, false);
        let mut anvil = Anvil::default();
        feed_session(&mut s, &mut anvil, VERSION_LINE);
        let run = feed_session(&mut s, &mut anvil, &line[..1023]);
        assert_eq!(
            run.fed,
            Fed {
                consumed: 0,
                close: false
            }
        );
        // 1024 bytes without LF: too much data, closed; earlier replies are kept [X3].
        let input = with_version(&[b"LOOKUP\tx\n".as_slice(), &[b'a'; 1024]].concat());
        let run = feed(&mut Anvil::default(), S, false, &input);
        assert_eq!(run.out, b"0\n");
        assert_eq!(run.logs, [TOO_MUCH_DATA.as_bytes().to_vec()]);
        assert!(run.fed.close);
    }

    #[test]
    fn oversized_line_on_a_pipe_is_discarded_up_to_its_lf() {
        let mut anvil = Anvil::default();
        let mut s = Session::new(P, false);
        feed_session(&mut s, &mut anvil, VERSION_LINE);
        // 1500 bytes with a CONNECT hidden in it, arriving in two reads.
        let mut long = vec![b'z'; 1500];
        long[1100..1112].copy_from_slice(b"CONNECT\t1\th\0");
        let run = feed_session(&mut s, &mut anvil, &long[..1200]);
        assert_eq!(run.logs, [TOO_MUCH_DATA.as_bytes().to_vec()]);
        assert_eq!(
            run.fed,
            Fed {
                consumed: 1200,
                close: false
            }
        );
        let rest = [&long[1200..], b"\nCONNECT\t1\tok\n"].concat();
        let run = feed_session(&mut s, &mut anvil, &rest);
        assert!(run.logs.is_empty());
        assert_eq!(
            run.fed,
            Fed {
                consumed: rest.len(),
                close: false
            }
        );
        assert_eq!(anvil.connect_limit.lookup(b"ok"), 1);
        assert_eq!(anvil.connect_limit.lookup(b"h"), 0);
        // An oversized line in one read, followed by good lines.
        let input = [&[b'q'; 2000][..], b"\nCONNECT\t2\tok\n"].concat();
        let run = feed_session(&mut s, &mut anvil, &input);
        assert_eq!(run.logs.len(), 1);
        assert_eq!(anvil.connect_limit.lookup(b"ok"), 2);
    }

    #[test]
    fn penalty_timer_is_left_to_the_shell() {
        // expire 0: the record is visible in the same batch; the shell runs the timer later.
        let mut anvil = Anvil::default();
        let run = feed(
            &mut anvil,
            S,
            false,
            &with_version(b"PENALTY-SET-EXPIRE-SECS\t0\nPENALTY-INC\tip\t0\t1\nPENALTY-GET\tip\n"),
        );
        assert_eq!(run.out, b"1 1795892735\n");
        assert_eq!(anvil.penalty.next_deadline(), Some(NOW));
        anvil.penalty.on_timer(NOW);
        assert!(anvil.penalty.is_empty());
    }

    mod split_invariance {
        use proptest::prelude::*;

        use super::*;

        fn line() -> impl Strategy<Value = Vec<u8>> {
            let ident = prop_oneof![Just("a"), Just("b"), Just(""), Just("x\x01ty")];
            let pid = prop_oneof![Just("1"), Just("2"), Just("007"), Just("-1")];
            prop_oneof![
                (pid.clone(), ident.clone())
                    .prop_map(|(p, i)| format!("CONNECT\t{p}\t{i}\n").into_bytes()),
                (pid.clone(), ident.clone())
                    .prop_map(|(p, i)| format!("DISCONNECT\t{p}\t{i}\n").into_bytes()),
                pid.prop_map(|p| format!("KILL\t{p}\n").into_bytes()),
                ident
                    .clone()
                    .prop_map(|i| format!("LOOKUP\t{i}\n").into_bytes()),
                ident
                    .clone()
                    .prop_map(|i| format!("PENALTY-GET\t{i}\n").into_bytes()),
                (ident, 0u32..3, 0u32..3)
                    .prop_map(|(i, c, v)| format!("PENALTY-INC\t{i}\t{c}\t{v}\n").into_bytes()),
                Just(b"CONNECT-DUMP\n".to_vec()),
                Just(b"PENALTY-DUMP\n".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(VERSION_LINE.to_vec()),
                (1000usize..1100).prop_map(|n| [vec![b'L'; n], b"\n".to_vec()].concat()),
                proptest::collection::vec(any::<u8>(), 0..20),
            ]
        }

        /// Sorted CONNECT-DUMP rows and the PENALTY-DUMP bytes.
        type Dumps = (Vec<(Vec<u8>, u32, u32)>, Vec<u8>);

        fn dumps(anvil: &Anvil) -> Dumps {
            let mut rows = Vec::new();
            anvil
                .connect_limit
                .for_each(|i, p, r| rows.push((i.to_vec(), p.get(), r)));
            rows.sort();
            let mut pen = Vec::new();
            anvil
                .penalty
                .for_each(|r| encode_reply(&Reply::PenaltyRow(r.clone()), &mut pen));
            (rows, pen)
        }

        /// Feeds `input` in the given pieces the way the shell does (keeping the unconsumed
        /// tail) and returns everything observable.
        fn run(
            kind: ConnKind,
            restarted: bool,
            input: &[u8],
            cuts: &[usize],
        ) -> (Vec<u8>, LogBuf, bool, Dumps) {
            let mut anvil = Anvil::default();
            let mut s = Session::new(kind, restarted);
            let (mut out, mut log) = (Vec::new(), LogBuf::new());
            let mut pending = Vec::new();
            let mut closed = false;
            let mut start = 0;
            let mut ends: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            ends.sort();
            ends.push(input.len());
            for end in ends {
                pending.extend_from_slice(&input[start..end.max(start)]);
                start = end.max(start);
                let fed = s.feed(&mut anvil, NOW, &pending, &mut out, &mut log);
                assert!(fed.consumed <= pending.len());
                pending.drain(..fed.consumed);
                if fed.close {
                    closed = true;
                    break;
                }
            }
            (out, log, closed, dumps(&anvil))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn any_split_gives_the_same_result(
                lines in proptest::collection::vec(line(), 0..40),
                cuts in proptest::collection::vec(any::<usize>(), 0..12),
                kind in prop_oneof![Just(S), Just(P), Just(M)],
                restarted in any::<bool>(),
                version_first in any::<bool>(),
            ) {
                let mut input = if version_first { VERSION_LINE.to_vec() } else { Vec::new() };
                input.extend(lines.concat());
                let whole = run(kind, restarted, &input, &[]);
                let split = run(kind, restarted, &input, &cuts);
                prop_assert_eq!(whole, split);
            }
        }
    }
}
