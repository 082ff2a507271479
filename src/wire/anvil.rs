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
use nom::bytes::complete::tag;
use nom::character::complete::digit1;
use nom::combinator::{all_consuming, map_opt};
use nom::sequence::{preceded, separated_pair, tuple};
use nom::IResult;

use super::escape::{escape_into, take_field};
use super::line::{next_line, next_line_unlimited, LineError, MAX_LINE};
use super::scan::{plain_tabs, scan_plain_line, Tabs};
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
    #[inline]
    pub fn parse(field: &[u8]) -> Option<Pid> {
        if field.is_empty() {
            return None;
        }
        // Up to 19 digits cannot overflow a u64, so the range is checked once at the end;
        // only absurdly zero-padded fields need their leading zeros dropped first.
        let digits = if field.len() > 19 {
            let first = field.iter().position(|&b| b != b'0').unwrap_or(field.len());
            &field[first..]
        } else {
            field
        };
        if digits.len() > 19 {
            return None;
        }
        let mut value: u64 = 0;
        for &b in digits {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            value = value * 10 + u64::from(digit);
        }
        u32::try_from(value).ok().and_then(Pid::new)
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
    Connect {
        pid: Pid,
        ident: Cow<'a, [u8]>,
    },
    Disconnect {
        pid: Pid,
        ident: Cow<'a, [u8]>,
    },
    /// `KILL`: stock checks "master connection only" before the pid, so an invalid pid is
    /// carried as `None` and rejected by the session after the master check.
    Kill {
        pid: Option<Pid>,
    },
    Lookup {
        ident: Cow<'a, [u8]>,
    },
    PenaltyGet {
        ident: Cow<'a, [u8]>,
    },
    /// `value` is at most 65535, and 0 only with checksum 0.
    PenaltyInc {
        ident: Cow<'a, [u8]>,
        checksum: u32,
        value: u16,
    },
    PenaltySetExpireSecs {
        secs: u32,
    },
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
    // Rules R3–R9: the major must be digits that fit 64 bits and equal 1; everything after
    // the next TAB must be digits that fit 32 bits (so a fourth field is rejected).
    let version_line = tuple((
        tag(&b"VERSION\tanvil\t"[..]),
        dec_u64,
        tag(&b"\t"[..]),
        dec_u32,
    ));
    matches!(all_consuming(version_line)(line), Ok((_, (_, 1, _, _))))
}

/// Parses one framed command line (after the handshake). `Ok(None)` for an empty line,
/// which stock silently ignores. Extra fields are ignored.
pub fn parse_request(line: &[u8]) -> Result<Option<Request<'_>>, RequestError> {
    if line.is_empty() {
        return Ok(None); // zero fields [live, L1]
    }
    match plain_tabs(line) {
        // Hot path: the fields that matter hold no escape; they are slices of the line.
        Some(tabs) => request_from_tabs(line, tabs),
        None => {
            let (mut rest, name) = field(line).expect("field never fails");
            let mut args: Args<'_> = [None, None, None];
            for slot in &mut args {
                let Ok((after, arg)) = arg(rest) else { break };
                *slot = Some(arg);
                rest = after;
            }
            request_from_fields(name, args)
        }
    }
}

/// The first three arguments of a request line (no command uses more), `None` when missing.
type Args<'a> = [Option<Cow<'a, [u8]>>; 3];

/// Builds the request from a line whose fields are plain and whose TABs are known.
#[inline(always)]
fn request_from_tabs(line: &[u8], tabs: Tabs) -> Result<Option<Request<'_>>, RequestError> {
    // Field k runs from the TAB before it (or the start) to the TAB after it (or the end).
    let field = |k: usize| -> Option<Cow<'_, [u8]>> {
        if k > tabs.count {
            return None;
        }
        let start = if k == 0 { 0 } else { tabs.at[k - 1] + 1 };
        let end = if k < tabs.count {
            tabs.at[k]
        } else {
            line.len()
        };
        Some(Cow::Borrowed(&line[start..end]))
    };
    let name = field(0).expect("a line has a first field");
    request_from_fields(name, [field(1), field(2), field(3)])
}

/// Builds the request from its unescaped command name and arguments (extra ones unused).
#[inline(always)]
fn request_from_fields<'a>(
    name: Cow<'a, [u8]>,
    args: Args<'a>,
) -> Result<Option<Request<'a>>, RequestError> {
    let [a0, a1, a2] = args;
    let Some(command) = command_by_name(&name) else {
        return Err(RequestError::UnknownCommand(BString::from(
            name.into_owned(),
        )));
    };
    let not_enough = || RequestError::NotEnoughParameters(command);
    let request = match command {
        Command::Connect | Command::Disconnect => {
            let (Some(pid), Some(ident)) = (a0, a1) else {
                return Err(not_enough());
            };
            let pid = Pid::parse(&pid).ok_or(RequestError::InvalidPid(command))?;
            if command == Command::Connect {
                Request::Connect { pid, ident }
            } else {
                Request::Disconnect { pid, ident }
            }
        }
        Command::Kill => {
            // The pid is checked later, after the session's master-connection check.
            let pid = a0.ok_or_else(not_enough)?;
            Request::Kill {
                pid: Pid::parse(&pid),
            }
        }
        Command::Lookup => Request::Lookup {
            ident: a0.ok_or_else(not_enough)?,
        },
        Command::PenaltyGet => Request::PenaltyGet {
            ident: a0.ok_or_else(not_enough)?,
        },
        Command::PenaltyInc => {
            let (Some(ident), Some(checksum), Some(value)) = (a0, a1, a2) else {
                return Err(not_enough());
            };
            // P8–P17: both numbers fit u32, value at most 65535, and 0 only with checksum 0.
            let checksum = parse_u32(&checksum);
            let value = parse_u32(&value).and_then(|v| u16::try_from(v).ok());
            match (checksum, value) {
                (Some(checksum), Some(value)) if value != 0 || checksum == 0 => {
                    Request::PenaltyInc {
                        ident,
                        checksum,
                        value,
                    }
                }
                _ => return Err(RequestError::InvalidParameters(command)),
            }
        }
        Command::PenaltySetExpireSecs => {
            // Missing and invalid share one message [live, P13/P14].
            let secs = a0
                .and_then(|f| parse_u32(&f))
                .ok_or(RequestError::InvalidParameters(command))?;
            Request::PenaltySetExpireSecs { secs }
        }
        Command::ConnectDump => Request::ConnectDump,
        Command::PenaltyDump => Request::PenaltyDump,
    };
    Ok(Some(request))
}

/// The command with this (unescaped) name; names are case-sensitive [live, L4].
#[inline]
fn command_by_name(name: &[u8]) -> Option<Command> {
    Some(match name {
        b"CONNECT" => Command::Connect,
        b"DISCONNECT" => Command::Disconnect,
        b"KILL" => Command::Kill,
        b"LOOKUP" => Command::Lookup,
        b"PENALTY-GET" => Command::PenaltyGet,
        b"PENALTY-INC" => Command::PenaltyInc,
        b"PENALTY-SET-EXPIRE-SECS" => Command::PenaltySetExpireSecs,
        b"CONNECT-DUMP" => Command::ConnectDump,
        b"PENALTY-DUMP" => Command::PenaltyDump,
        _ => return None,
    })
}

/// Frames and parses the first line of `buf`: `Ok((consumed, request))`.
/// `Incomplete` when no full line is buffered yet (and fewer than 1024 bytes are);
/// `Invalid(Err(TooLong))` / `Invalid(Ok(reason))` otherwise.
#[allow(clippy::type_complexity)]
pub fn decode_request(
    buf: &[u8],
) -> Result<
    (usize, Option<Request<'_>>),
    DecodeError<Result<RequestError, crate::wire::line::LineError>>,
> {
    // Hot path: one pass frames the line and finds its TABs.
    if let Some((lf, tabs)) = scan_plain_line(&buf[..buf.len().min(MAX_LINE)]) {
        // A CR stripped before the LF never holds a TAB, so the positions stay valid.
        let line = &buf[..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok((lf + 1, None));
        }
        return match request_from_tabs(line, tabs) {
            Ok(request) => Ok((lf + 1, request)),
            Err(reason) => Err(DecodeError::Invalid(Ok(reason))),
        };
    }
    match next_line(buf) {
        Ok(Some((consumed, line))) => match parse_request(line) {
            Ok(request) => Ok((consumed, request)),
            Err(reason) => Err(DecodeError::Invalid(Ok(reason))),
        },
        Ok(None) => Err(DecodeError::Incomplete),
        Err(LineError::TooLong) => Err(DecodeError::Invalid(Err(LineError::TooLong))),
    }
}

/// Appends the canonical wire form of `req` (idents escaped, LF-terminated).
///
/// `Kill { pid: None }` is written as `KILL\t` (an empty pid, which decodes back to `None`).
/// An ident holding NUL cannot be represented: it is written as is and reads back truncated.
pub fn encode_request(req: &Request<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(req.command().name().as_bytes());
    match req {
        Request::Connect { pid, ident } | Request::Disconnect { pid, ident } => {
            out.push(b'\t');
            push_dec(out, pid.get());
            out.push(b'\t');
            escape_into(ident, out);
        }
        Request::Kill { pid } => {
            out.push(b'\t');
            if let Some(pid) = pid {
                push_dec(out, pid.get());
            }
        }
        Request::Lookup { ident } | Request::PenaltyGet { ident } => {
            out.push(b'\t');
            escape_into(ident, out);
        }
        Request::PenaltyInc {
            ident,
            checksum,
            value,
        } => {
            out.push(b'\t');
            escape_into(ident, out);
            out.push(b'\t');
            push_dec(out, *checksum);
            out.push(b'\t');
            push_dec(out, u32::from(*value));
        }
        Request::PenaltySetExpireSecs { secs } => {
            out.push(b'\t');
            push_dec(out, *secs);
        }
        Request::ConnectDump | Request::PenaltyDump => {}
    }
    out.push(b'\n');
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
    match reply {
        Reply::Count(n) => push_dec(out, *n),
        Reply::Penalty {
            penalty,
            last_penalty,
        } => {
            push_dec(out, *penalty);
            out.push(b' ');
            push_dec(out, *last_penalty);
        }
        Reply::ConnectRow(row) => {
            escape_into(&row.ident, out);
            out.push(b'\t');
            push_dec(out, row.pid.get());
            out.push(b'\t');
            push_dec(out, row.refcount);
        }
        Reply::PenaltyRow(row) => {
            escape_into(&row.ident, out);
            for n in [row.penalty, row.last_penalty, row.last_update] {
                out.push(b'\t');
                push_dec(out, n);
            }
        }
        Reply::DumpEnd => {}
    }
    out.push(b'\n');
}

/// A reply line a client could not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid anvil reply: {}", bstr::BStr::new(.0))]
pub struct ReplyError(pub BString);

/// Decodes a LOOKUP reply from the start of `buf`: `(consumed, count)`.
pub fn decode_count_reply(buf: &[u8]) -> Result<(usize, u32), DecodeError<ReplyError>> {
    decode_reply_line(buf, |line| {
        all_consuming(dec_u32)(line).ok().map(|(_, n)| n)
    })
}

/// Decodes a PENALTY-GET reply: `(consumed, penalty, last_penalty)`.
pub fn decode_penalty_reply(buf: &[u8]) -> Result<(usize, (u32, u32)), DecodeError<ReplyError>> {
    decode_reply_line(buf, |line| {
        all_consuming(separated_pair(dec_u32, tag(&b" "[..]), dec_u32))(line)
            .ok()
            .map(|(_, pair)| pair)
    })
}

/// Decodes one CONNECT-DUMP line: `Some(row)`, or `None` for the terminating empty line.
///
/// Like doveadm, every field is unescaped (so `9\x0105` is pid 9) and fields after the
/// third are ignored.
pub fn decode_connect_row(
    buf: &[u8],
) -> Result<(usize, Option<ConnectRow>), DecodeError<ReplyError>> {
    decode_reply_line(buf, |line| {
        if line.is_empty() {
            return Some(None);
        }
        let (_, (ident, pid, refcount)) = tuple((field, arg, arg))(line).ok()?;
        Some(Some(ConnectRow {
            ident: BString::from(ident.into_owned()),
            pid: Pid::parse(&pid)?,
            refcount: parse_u32(&refcount)?,
        }))
    })
}

/// Decodes one PENALTY-DUMP line: `Some(row)`, or `None` for the terminating empty line.
/// Fields after the fourth are ignored.
pub fn decode_penalty_row(
    buf: &[u8],
) -> Result<(usize, Option<PenaltyRow>), DecodeError<ReplyError>> {
    decode_reply_line(buf, |line| {
        if line.is_empty() {
            return Some(None);
        }
        let (_, (ident, penalty, last_penalty, last_update)) =
            tuple((field, arg, arg, arg))(line).ok()?;
        Some(Some(PenaltyRow {
            ident: BString::from(ident.into_owned()),
            penalty: parse_u32(&penalty)?,
            last_penalty: parse_u32(&last_penalty)?,
            last_update: parse_u32(&last_update)?,
        }))
    })
}

/// Frames one reply line (no length limit, one CR stripped, cut at NUL, as stock clients
/// read them) and parses it with `parse`; `None` from `parse` means an invalid reply.
fn decode_reply_line<'a, T>(
    buf: &'a [u8],
    parse: impl FnOnce(&'a [u8]) -> Option<T>,
) -> Result<(usize, T), DecodeError<ReplyError>> {
    let (consumed, line) = next_line_unlimited(buf).ok_or(DecodeError::Incomplete)?;
    match parse(line) {
        Some(value) => Ok((consumed, value)),
        None => Err(DecodeError::Invalid(ReplyError(BString::from(
            &buf[..consumed - 1],
        )))),
    }
}

// ---- grammar pieces (nom) ----

/// One field, unescaped: everything up to the next TAB, possibly empty. Never fails.
/// Borrowed unless it holds an escape (see [`take_field`]).
#[inline]
fn field(input: &[u8]) -> IResult<&[u8], Cow<'_, [u8]>> {
    Ok(take_field(input))
}

/// A TAB and the field after it; fails at the end of the line (no more arguments).
#[inline]
fn arg(input: &[u8]) -> IResult<&[u8], Cow<'_, [u8]>> {
    preceded(tag(&b"\t"[..]), field)(input)
}

/// An unsigned decimal (digits only) that fits 32 bits.
fn dec_u32(input: &[u8]) -> IResult<&[u8], u32> {
    map_opt(digit1, parse_u32)(input)
}

/// An unsigned decimal (digits only) that fits 64 bits.
fn dec_u64(input: &[u8]) -> IResult<&[u8], u64> {
    map_opt(digit1, parse_u64)(input)
}

/// Digits only, not empty, at most `u32::MAX` (stock `str_to_uint`).
#[inline]
fn parse_u32(digits: &[u8]) -> Option<u32> {
    parse_u64(digits).and_then(|v| u32::try_from(v).ok())
}

/// Digits only, not empty, at most `u64::MAX` (stock `str_to_uintmax`).
#[inline]
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in digits {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    Some(value)
}

/// Appends `n` in decimal.
#[inline]
fn push_dec(out: &mut Vec<u8>, mut n: u32) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests;
