//! Anvil protocol v1 (Dovecot 2.3): the version handshake, the requests clients send and the
//! replies anvil writes. Byte-exact rules are in `../shared/reference/anvil-protocol.md` §2–§4.
//!
//! Requests are decoded from one framed line ([`crate::wire::line`]) with [`parse_request`], or
//! straight from a byte buffer with [`decode_request`]. Every argument error maps to the reason
//! text stock anvil logs (`Display` of [`RequestError`]). Replies are encoded by the server
//! with [`encode_reply`] and decoded by clients (`foreman who`, benches, the conformance
//! replayer) with the `decode_*_reply` functions.

use std::borrow::Cow;

use bstr::BString;

use super::DecodeError;

/// The handshake line every stock 2.3 client sends, LF included.
pub const VERSION_LINE: &[u8] = b"VERSION\tanvil\t1\t0\n";

/// A process id as anvil accepts it: ASCII digits only, not empty, value 0..=2147483647.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(u32);

impl Pid {
    /// The largest valid pid.
    pub const MAX: u32 = i32::MAX as u32;

    /// A pid from a number; `None` above [`Pid::MAX`].
    pub fn new(value: u32) -> Option<Pid> {
        (value <= Self::MAX).then_some(Pid(value))
    }

    /// Parses a decimal field with stock anvil's rules (leading zeros allowed, no sign,
    /// no spaces, not empty, at most 2147483647).
    pub fn parse(field: &[u8]) -> Option<Pid> {
        let _ = field;
        todo!()
    }

    /// The numeric value.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for Pid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The v1 command names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Connect,
    Disconnect,
    Kill,
    Lookup,
    PenaltyGet,
    PenaltyInc,
    PenaltySetExpireSecs,
    ConnectDump,
    PenaltyDump,
}

impl Command {
    /// The name on the wire, e.g. `PENALTY-INC`.
    pub fn name(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Disconnect => "DISCONNECT",
            Command::Kill => "KILL",
            Command::Lookup => "LOOKUP",
            Command::PenaltyGet => "PENALTY-GET",
            Command::PenaltyInc => "PENALTY-INC",
            Command::PenaltySetExpireSecs => "PENALTY-SET-EXPIRE-SECS",
            Command::ConnectDump => "CONNECT-DUMP",
            Command::PenaltyDump => "PENALTY-DUMP",
        }
    }
}

/// One decoded v1 request. Idents are bytes after unescaping, cut at the first NUL; they
/// borrow from the input line unless unescaping changed them (the hot path allocates nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Connect { pid: Pid, ident: Cow<'a, [u8]> },
    Disconnect { pid: Pid, ident: Cow<'a, [u8]> },
    /// `KILL`: stock checks "master connection only" before the pid, so an invalid pid is
    /// carried as `None` and rejected by the session after the master check.
    Kill { pid: Option<Pid> },
    Lookup { ident: Cow<'a, [u8]> },
    PenaltyGet { ident: Cow<'a, [u8]> },
    /// `value` is at most 65535, and 0 only with checksum 0.
    PenaltyInc { ident: Cow<'a, [u8]>, checksum: u32, value: u16 },
    PenaltySetExpireSecs { secs: u32 },
    ConnectDump,
    PenaltyDump,
}

impl Request<'_> {
    /// The command of this request.
    pub fn command(&self) -> Command {
        match self {
            Request::Connect { .. } => Command::Connect,
            Request::Disconnect { .. } => Command::Disconnect,
            Request::Kill { .. } => Command::Kill,
            Request::Lookup { .. } => Command::Lookup,
            Request::PenaltyGet { .. } => Command::PenaltyGet,
            Request::PenaltyInc { .. } => Command::PenaltyInc,
            Request::PenaltySetExpireSecs { .. } => Command::PenaltySetExpireSecs,
            Request::ConnectDump => Command::ConnectDump,
            Request::PenaltyDump => Command::PenaltyDump,
        }
    }
}

/// An input error; `Display` is exactly the reason stock anvil logs after
/// `Anvil client input error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `<CMD>: Not enough parameters`
    #[error("{}: Not enough parameters", .0.name())]
    NotEnoughParameters(Command),
    /// `<CMD>: Invalid pid`
    #[error("{}: Invalid pid", .0.name())]
    InvalidPid(Command),
    /// `<CMD>: Invalid parameters` (PENALTY-INC, PENALTY-SET-EXPIRE-SECS)
    #[error("{}: Invalid parameters", .0.name())]
    InvalidParameters(Command),
    /// `Unknown command: <name>` (name after unescaping, may be empty)
    #[error("Unknown command: {}", bstr::BStr::new(.0))]
    UnknownCommand(BString),
}

/// True when `line` (framed: no LF, CR stripped; not unescaped) is an acceptable v1
/// handshake: `VERSION\tanvil\t<major == 1>\t<minor fits u32>`, digits only.
pub fn is_compatible_version(line: &[u8]) -> bool {
    let _ = line;
    todo!()
}

/// Parses one framed command line (after the handshake). `Ok(None)` for an empty line,
/// which stock silently ignores. Extra fields are ignored.
pub fn parse_request(line: &[u8]) -> Result<Option<Request<'_>>, RequestError> {
    let _ = line;
    todo!()
}

/// Frames and parses the first line of `buf`: `Ok((consumed, request))`.
/// `Incomplete` when no full line is buffered yet (and fewer than 1024 bytes are);
/// `Invalid(Err(TooLong))` / `Invalid(Ok(reason))` otherwise.
pub fn decode_request(
    buf: &[u8],
) -> Result<(usize, Option<Request<'_>>), DecodeError<Result<RequestError, crate::wire::line::LineError>>> {
    let _ = buf;
    todo!()
}

/// Appends the canonical wire form of `req` (idents escaped, LF-terminated).
pub fn encode_request(req: &Request<'_>, out: &mut Vec<u8>) {
    let _ = (req, out);
    todo!()
}

/// One row of a CONNECT-DUMP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRow {
    pub ident: BString,
    pub pid: Pid,
    pub refcount: u32,
}

/// One row of a PENALTY-DUMP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PenaltyRow {
    pub ident: BString,
    pub penalty: u32,
    pub last_penalty: u32,
    pub last_update: u32,
}

/// A reply line as anvil writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// LOOKUP: `<n>\n`
    Count(u32),
    /// PENALTY-GET: `<penalty> <last_penalty>\n` (a space, not a TAB)
    Penalty { penalty: u32, last_penalty: u32 },
    /// A CONNECT-DUMP row: `<escaped ident>\t<pid>\t<refcount>\n`
    ConnectRow(ConnectRow),
    /// A PENALTY-DUMP row: `<escaped ident>\t<penalty>\t<last_penalty>\t<last_update>\n`
    PenaltyRow(PenaltyRow),
    /// The dump terminator, an empty line `\n`.
    DumpEnd,
}

/// Appends the exact bytes of `reply`.
pub fn encode_reply(reply: &Reply, out: &mut Vec<u8>) {
    let _ = (reply, out);
    todo!()
}

/// A reply line a client could not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid anvil reply: {}", bstr::BStr::new(.0))]
pub struct ReplyError(pub BString);

/// Decodes a LOOKUP reply from the start of `buf`: `(consumed, count)`.
pub fn decode_count_reply(buf: &[u8]) -> Result<(usize, u32), DecodeError<ReplyError>> {
    let _ = buf;
    todo!()
}

/// Decodes a PENALTY-GET reply: `(consumed, penalty, last_penalty)`.
pub fn decode_penalty_reply(buf: &[u8]) -> Result<(usize, (u32, u32)), DecodeError<ReplyError>> {
    let _ = buf;
    todo!()
}

/// Decodes one CONNECT-DUMP line: `Some(row)`, or `None` for the terminating empty line.
pub fn decode_connect_row(buf: &[u8]) -> Result<(usize, Option<ConnectRow>), DecodeError<ReplyError>> {
    let _ = buf;
    todo!()
}

/// Decodes one PENALTY-DUMP line: `Some(row)`, or `None` for the terminating empty line.
pub fn decode_penalty_row(buf: &[u8]) -> Result<(usize, Option<PenaltyRow>), DecodeError<ReplyError>> {
    let _ = buf;
    todo!()
}
