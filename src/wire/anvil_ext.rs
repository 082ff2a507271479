//! Foreman's anvil extensions (`docs/anvil-extensions.md`): the opt-in handshake, the
//! process-registry commands and their replies. Same framing and tab escaping as v1
//! ([`crate::wire::anvil`]): LF lines of at most 1024 bytes, every field unescaped, fields
//! beyond those a command uses ignored.
//!
//! A connection opts in with [`VERSION_LINE`] instead of the stock one; a stock anvil rejects
//! that line the stock way (logs "not compatible", closes), which is how a client tells the
//! two apart. After it, v1 commands keep working and the commands below are added.

use bstr::BString;
use nom::bytes::complete::tag;
use nom::character::complete::digit1;
use nom::combinator::{all_consuming, map_opt};
use nom::sequence::tuple;
use nom::IResult;

use super::anvil::Pid;
use super::escape::{escape_into, split_fields};
use super::line::{next_line, next_line_unlimited, LineError};
use super::DecodeError;

/// The opt-in handshake line (and, on sockets, the server's greeting), LF included.
pub const VERSION_LINE: &[u8] = b"VERSION\tforeman-anvil\t1\t0\n";

/// True when `line` (framed) is an acceptable extension handshake:
/// `VERSION\tforeman-anvil\t1\t<minor fits u32>`, digits only.
pub fn is_ext_version(line: &[u8]) -> bool {
    let version_line = tuple((
        tag(&b"VERSION\tforeman-anvil\t"[..]),
        dec_u64,
        tag(&b"\t"[..]),
        map_opt(digit1, |d: &[u8]| {
            parse_u64(d).and_then(|v| u32::try_from(v).ok())
        }),
    ));
    matches!(all_consuming(version_line)(line), Ok((_, (_, 1, _, _))))
}

/// The extension command names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtCommand {
    ProcBirth,
    ProcIdle,
    ProcBusy,
    ProcDeath,
    Claim,
    Release,
    Evict,
    ProcList,
    ProcDump,
}

impl ExtCommand {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ExtCommand::ProcBirth => "PROC-BIRTH",
            ExtCommand::ProcIdle => "PROC-IDLE",
            ExtCommand::ProcBusy => "PROC-BUSY",
            ExtCommand::ProcDeath => "PROC-DEATH",
            ExtCommand::Claim => "CLAIM",
            ExtCommand::Release => "RELEASE",
            ExtCommand::Evict => "EVICT",
            ExtCommand::ProcList => "PROC-LIST",
            ExtCommand::ProcDump => "PROC-DUMP",
        }
    }

    /// The command with this (unescaped) name, case-sensitive.
    pub fn by_name(name: &[u8]) -> Option<ExtCommand> {
        Some(match name {
            b"PROC-BIRTH" => ExtCommand::ProcBirth,
            b"PROC-IDLE" => ExtCommand::ProcIdle,
            b"PROC-BUSY" => ExtCommand::ProcBusy,
            b"PROC-DEATH" => ExtCommand::ProcDeath,
            b"CLAIM" => ExtCommand::Claim,
            b"RELEASE" => ExtCommand::Release,
            b"EVICT" => ExtCommand::Evict,
            b"PROC-LIST" => ExtCommand::ProcList,
            b"PROC-DUMP" => ExtCommand::ProcDump,
            _ => return None,
        })
    }

    /// True for the commands that answer (they need a socket).
    pub fn has_reply(self) -> bool {
        matches!(
            self,
            ExtCommand::Claim | ExtCommand::Evict | ExtCommand::ProcList | ExtCommand::ProcDump
        )
    }
}

/// How a claim ended, as `RELEASE` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// `served`
    Served,
    /// `unused`
    Unused,
    /// `failed`
    Failed,
    /// `busy`
    Busy,
}

impl ReleaseOutcome {
    fn word(self) -> &'static [u8] {
        match self {
            ReleaseOutcome::Served => b"served",
            ReleaseOutcome::Unused => b"unused",
            ReleaseOutcome::Failed => b"failed",
            ReleaseOutcome::Busy => b"busy",
        }
    }

    fn parse(w: &[u8]) -> Option<ReleaseOutcome> {
        Some(match w {
            b"served" => ReleaseOutcome::Served,
            b"unused" => ReleaseOutcome::Unused,
            b"failed" => ReleaseOutcome::Failed,
            b"busy" => ReleaseOutcome::Busy,
            _ => return None,
        })
    }
}

/// One decoded extension request. Text fields are bytes after unescaping, cut at NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtRequest {
    /// `PROC-BIRTH\t<service>\t<pid>\t<uid>`
    ProcBirth {
        service: BString,
        pid: Pid,
        uid: u32,
    },
    /// `PROC-IDLE\t<pid>\t<since-ms>`
    ProcIdle { pid: Pid, since: u64 },
    /// `PROC-BUSY\t<pid>\t<since-ms>`
    ProcBusy { pid: Pid, since: u64 },
    /// `PROC-DEATH\t<pid>`
    ProcDeath { pid: Pid },
    /// `CLAIM\t<service>\t<user>\t<uid>`; user not empty, uid not 0.
    Claim {
        service: BString,
        user: BString,
        uid: u32,
    },
    /// `RELEASE\t<pid>\t<token>\t<served|unused|failed>`
    Release {
        pid: Pid,
        token: u64,
        outcome: ReleaseOutcome,
    },
    /// `EVICT\t<service>[\t<pid>]`; an empty pid field means none.
    Evict { service: BString, pid: Option<Pid> },
    /// `PROC-LIST\t<service>\t<user>`
    ProcList { service: BString, user: BString },
    /// `PROC-DUMP`
    ProcDump,
}

impl ExtRequest {
    /// The command of this request.
    pub fn command(&self) -> ExtCommand {
        match self {
            ExtRequest::ProcBirth { .. } => ExtCommand::ProcBirth,
            ExtRequest::ProcIdle { .. } => ExtCommand::ProcIdle,
            ExtRequest::ProcBusy { .. } => ExtCommand::ProcBusy,
            ExtRequest::ProcDeath { .. } => ExtCommand::ProcDeath,
            ExtRequest::Claim { .. } => ExtCommand::Claim,
            ExtRequest::Release { .. } => ExtCommand::Release,
            ExtRequest::Evict { .. } => ExtCommand::Evict,
            ExtRequest::ProcList { .. } => ExtCommand::ProcList,
            ExtRequest::ProcDump => ExtCommand::ProcDump,
        }
    }
}

/// An input error; `Display` is the reason logged after `Anvil client input error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtError {
    #[error("{}: Not enough parameters", .0.name())]
    NotEnoughParameters(ExtCommand),
    #[error("{}: Invalid pid", .0.name())]
    InvalidPid(ExtCommand),
    #[error("{}: Invalid parameters", .0.name())]
    InvalidParameters(ExtCommand),
}

/// Parses one framed line after the handshake. `None` when the line's command is not an
/// extension command (the caller then parses it as v1, which also handles the empty line
/// and unknown names); otherwise the request or its input error.
pub fn parse_ext_request(line: &[u8]) -> Option<Result<ExtRequest, ExtError>> {
    if line.is_empty() {
        return None;
    }
    let fields = split_fields(line);
    let command = ExtCommand::by_name(&fields[0])?;
    Some(request_from_fields(command, &fields[1..]))
}

fn request_from_fields(
    command: ExtCommand,
    args: &[std::borrow::Cow<'_, [u8]>],
) -> Result<ExtRequest, ExtError> {
    let needed = match command {
        ExtCommand::ProcDump => 0,
        ExtCommand::ProcDeath | ExtCommand::Evict => 1,
        ExtCommand::ProcIdle | ExtCommand::ProcBusy | ExtCommand::ProcList => 2,
        ExtCommand::ProcBirth | ExtCommand::Claim | ExtCommand::Release => 3,
    };
    if args.len() < needed {
        return Err(ExtError::NotEnoughParameters(command));
    }
    let text = |i: usize| BString::from(args[i].as_ref());
    let pid = |i: usize| Pid::parse(&args[i]).ok_or(ExtError::InvalidPid(command));
    let invalid = ExtError::InvalidParameters(command);
    let u32_at = |i: usize| {
        parse_u64(&args[i])
            .and_then(|v| u32::try_from(v).ok())
            .ok_or(invalid.clone())
    };
    let u64_at = |i: usize| parse_u64(&args[i]).ok_or(invalid.clone());
    Ok(match command {
        ExtCommand::ProcBirth => ExtRequest::ProcBirth {
            service: text(0),
            pid: pid(1)?,
            uid: u32_at(2)?,
        },
        ExtCommand::ProcIdle => ExtRequest::ProcIdle {
            pid: pid(0)?,
            since: u64_at(1)?,
        },
        ExtCommand::ProcBusy => ExtRequest::ProcBusy {
            pid: pid(0)?,
            since: u64_at(1)?,
        },
        ExtCommand::ProcDeath => ExtRequest::ProcDeath { pid: pid(0)? },
        ExtCommand::Claim => {
            let uid = u32_at(2)?;
            if args[1].is_empty() || uid == 0 {
                return Err(invalid);
            }
            ExtRequest::Claim {
                service: text(0),
                user: text(1),
                uid,
            }
        }
        ExtCommand::Release => ExtRequest::Release {
            pid: pid(0)?,
            token: u64_at(1)?,
            outcome: ReleaseOutcome::parse(&args[2]).ok_or(invalid)?,
        },
        ExtCommand::Evict => ExtRequest::Evict {
            service: text(0),
            pid: match args.get(1) {
                None => None,
                Some(f) if f.is_empty() => None,
                Some(_) => Some(pid(1)?),
            },
        },
        ExtCommand::ProcList => ExtRequest::ProcList {
            service: text(0),
            user: text(1),
        },
        ExtCommand::ProcDump => ExtRequest::ProcDump,
    })
}

/// Frames and parses the first line of `buf` (1024-byte limit): `Ok((consumed, request))`,
/// where `request` is `None` when the line is not an extension command (see
/// [`parse_ext_request`]). `Incomplete` until a whole line is buffered.
#[allow(clippy::type_complexity)]
pub fn decode_ext_request(
    buf: &[u8],
) -> Result<(usize, Option<ExtRequest>), DecodeError<Result<ExtError, LineError>>> {
    match next_line(buf) {
        Ok(Some((consumed, line))) => match parse_ext_request(line) {
            None => Ok((consumed, None)),
            Some(Ok(req)) => Ok((consumed, Some(req))),
            Some(Err(e)) => Err(DecodeError::Invalid(Ok(e))),
        },
        Ok(None) => Err(DecodeError::Incomplete),
        Err(e) => Err(DecodeError::Invalid(Err(e))),
    }
}

/// Appends the canonical wire form of `req`, LF-terminated.
pub fn encode_ext_request(req: &ExtRequest, out: &mut Vec<u8>) {
    out.extend_from_slice(req.command().name().as_bytes());
    let field = |out: &mut Vec<u8>, raw: &[u8]| {
        out.push(b'\t');
        escape_into(raw, out);
    };
    match req {
        ExtRequest::ProcBirth { service, pid, uid } => {
            field(out, service);
            field(out, pid.to_string().as_bytes());
            field(out, uid.to_string().as_bytes());
        }
        ExtRequest::ProcIdle { pid, since } | ExtRequest::ProcBusy { pid, since } => {
            field(out, pid.to_string().as_bytes());
            field(out, since.to_string().as_bytes());
        }
        ExtRequest::ProcDeath { pid } => field(out, pid.to_string().as_bytes()),
        ExtRequest::Claim { service, user, uid } => {
            field(out, service);
            field(out, user);
            field(out, uid.to_string().as_bytes());
        }
        ExtRequest::Release {
            pid,
            token,
            outcome,
        } => {
            field(out, pid.to_string().as_bytes());
            field(out, token.to_string().as_bytes());
            field(out, outcome.word());
        }
        ExtRequest::Evict { service, pid } => {
            field(out, service);
            if let Some(pid) = pid {
                field(out, pid.to_string().as_bytes());
            }
        }
        ExtRequest::ProcList { service, user } => {
            field(out, service);
            field(out, user);
        }
        ExtRequest::ProcDump => {}
    }
    out.push(b'\n');
}

// ---- replies ----

/// `reuse` or `fresh` in a CLAIM reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimedKind {
    Reuse,
    Fresh,
}

/// A process's state in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    Fresh,
    Idle,
    Busy,
}

/// A process's claim in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    /// `-`
    None,
    /// `claimed`
    Claimed,
    /// `evicting`
    Evicting,
}

/// One row of PROC-LIST / PROC-DUMP:
/// `<pid>\t<service>\t<user>\t<uid>\t<state>\t<since-ms>\t<claim>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcRow {
    pub pid: Pid,
    pub service: BString,
    /// Empty when the process is bound to nobody.
    pub user: BString,
    /// The bound uid, or the birth uid when unbound.
    pub uid: u32,
    pub state: ProcState,
    /// Since when the state holds (birth time for fresh).
    pub since: u64,
    pub claim: ClaimState,
}

/// A reply line of an extension command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtReply {
    /// CLAIM: `<pid>\t<token>\t<reuse|fresh>`
    Claimed {
        pid: Pid,
        token: u64,
        kind: ClaimedKind,
    },
    /// EVICT: `<pid>`
    Evicted(Pid),
    /// CLAIM / EVICT found nothing: `none`
    None,
    /// A PROC-LIST / PROC-DUMP row.
    Row(ProcRow),
    /// The list terminator, an empty line.
    End,
}

/// Appends the exact bytes of `reply`.
pub fn encode_ext_reply(reply: &ExtReply, out: &mut Vec<u8>) {
    match reply {
        ExtReply::Claimed { pid, token, kind } => {
            let kind = match kind {
                ClaimedKind::Reuse => "reuse",
                ClaimedKind::Fresh => "fresh",
            };
            out.extend_from_slice(format!("{pid}\t{token}\t{kind}").as_bytes());
        }
        ExtReply::Evicted(pid) => out.extend_from_slice(pid.to_string().as_bytes()),
        ExtReply::None => out.extend_from_slice(b"none"),
        ExtReply::Row(row) => {
            out.extend_from_slice(row.pid.to_string().as_bytes());
            out.push(b'\t');
            escape_into(&row.service, out);
            out.push(b'\t');
            escape_into(&row.user, out);
            let state = match row.state {
                ProcState::Fresh => "fresh",
                ProcState::Idle => "idle",
                ProcState::Busy => "busy",
            };
            let claim = match row.claim {
                ClaimState::None => "-",
                ClaimState::Claimed => "claimed",
                ClaimState::Evicting => "evicting",
            };
            out.extend_from_slice(
                format!("\t{}\t{state}\t{}\t{claim}", row.uid, row.since).as_bytes(),
            );
        }
        ExtReply::End => {}
    }
    out.push(b'\n');
}

/// A reply line a client could not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid foreman-anvil reply: {}", bstr::BStr::new(.0))]
pub struct ExtReplyError(pub BString);

/// Decodes a CLAIM reply: [`ExtReply::Claimed`] or [`ExtReply::None`].
pub fn decode_claim_reply(buf: &[u8]) -> Result<(usize, ExtReply), DecodeError<ExtReplyError>> {
    reply_line(buf, |line| {
        if line == b"none" {
            return Some(ExtReply::None);
        }
        let f = split_fields(line);
        if f.len() != 3 {
            return None;
        }
        Some(ExtReply::Claimed {
            pid: Pid::parse(&f[0])?,
            token: parse_u64(&f[1])?,
            kind: match f[2].as_ref() {
                b"reuse" => ClaimedKind::Reuse,
                b"fresh" => ClaimedKind::Fresh,
                _ => return None,
            },
        })
    })
}

/// Decodes an EVICT reply: [`ExtReply::Evicted`] or [`ExtReply::None`].
pub fn decode_evict_reply(buf: &[u8]) -> Result<(usize, ExtReply), DecodeError<ExtReplyError>> {
    reply_line(buf, |line| {
        if line == b"none" {
            return Some(ExtReply::None);
        }
        Pid::parse(line).map(ExtReply::Evicted)
    })
}

/// Decodes one PROC-LIST / PROC-DUMP line: [`ExtReply::Row`] or [`ExtReply::End`].
pub fn decode_proc_row(buf: &[u8]) -> Result<(usize, ExtReply), DecodeError<ExtReplyError>> {
    reply_line(buf, |line| {
        if line.is_empty() {
            return Some(ExtReply::End);
        }
        let f = split_fields(line);
        if f.len() != 7 {
            return None;
        }
        Some(ExtReply::Row(ProcRow {
            pid: Pid::parse(&f[0])?,
            service: BString::from(f[1].as_ref()),
            user: BString::from(f[2].as_ref()),
            uid: parse_u64(&f[3]).and_then(|v| u32::try_from(v).ok())?,
            state: match f[4].as_ref() {
                b"fresh" => ProcState::Fresh,
                b"idle" => ProcState::Idle,
                b"busy" => ProcState::Busy,
                _ => return None,
            },
            since: parse_u64(&f[5])?,
            claim: match f[6].as_ref() {
                b"-" => ClaimState::None,
                b"claimed" => ClaimState::Claimed,
                b"evicting" => ClaimState::Evicting,
                _ => return None,
            },
        }))
    })
}

fn reply_line<T>(
    buf: &[u8],
    parse: impl FnOnce(&[u8]) -> Option<T>,
) -> Result<(usize, T), DecodeError<ExtReplyError>> {
    let (consumed, line) = next_line_unlimited(buf).ok_or(DecodeError::Incomplete)?;
    match parse(line) {
        Some(v) => Ok((consumed, v)),
        None => Err(DecodeError::Invalid(ExtReplyError(BString::from(
            &buf[..consumed - 1],
        )))),
    }
}

fn dec_u64(input: &[u8]) -> IResult<&[u8], u64> {
    map_opt(digit1, parse_u64)(input)
}

/// Digits only, not empty, fits u64.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |v, &b| {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v.checked_mul(10)?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
mod tests;
