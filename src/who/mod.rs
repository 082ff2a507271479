//! `foreman who`: what `doveadm who` 2.3.19.1 prints (default grouping and `-1`), byte for
//! byte, plus `--json`. Rules: `../shared/reference/anvil-protocol.md` §6.6, and for the
//! table layout [`table`]; IP parsing, printing and network masks are in [`net`].
//!
//! Flow: [`fetch_dump`] (one `CONNECT-DUMP` over the anvil socket) → [`parse_dump`]
//! (rows via [`crate::wire::anvil::decode_connect_row`], idents split into service, IP and
//! username) → [`Filter`] → [`aggregate`] (default mode) → [`render_table`] / [`render_json`].
//!
//! `--processes` ([`processes`]) lists the reuse processes of a Foreman anvil's registry
//! instead (`PROC-DUMP` over a `foreman-anvil` connection).
//!
//! Differences from stock, on purpose: grouping is linear in the number of sessions (hash map
//! plus insertion order; stock's output order is hash order, unspecified), groups are printed
//! in order of first appearance, and an empty username is grouped like any other instead of
//! crashing.

pub mod net;
pub mod processes;
pub mod table;

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bstr::{BString, ByteSlice};
use hashbrown::HashMap;

use crate::wire::anvil::{decode_connect_row, Pid, ReplyError};
use crate::wire::DecodeError;
pub use net::Network;
use table::Column;

/// The anvil socket of a default Dovecot installation (`base_dir = /run/dovecot`).
pub const DEFAULT_SOCKET: &str = "/run/dovecot/anvil";
/// How many rows `-1` mode measures before its column widths are fixed.
pub const ONE_PER_SESSION_MEASURED_ROWS: usize = 100;
/// How long to wait for anvil's reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The request `doveadm who` sends, in one write.
const REQUEST: &[u8] = b"VERSION\tanvil\t1\t0\nCONNECT-DUMP\n";

/// Errors of `foreman who`.
#[derive(Debug, thiserror::Error)]
pub enum WhoError {
    /// Two username masks (usage error).
    #[error("Multiple username masks not supported")]
    MultipleUserMasks,
    /// Two network masks (usage error).
    #[error("Multiple network masks not supported")]
    MultipleNetworkMasks,
    /// The anvil socket could not be reached (same text as doveadm).
    #[error("net_connect_unix({}) failed: {}", path.display(), errno_text(source))]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the anvil connection failed.
    #[error("anvil connection {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("write to {what} failed: {}", errno_text(source))]
    Output {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// anvil closed the connection before the end of the dump.
    #[error("anvil connection {}: closed before the end of the dump", path.display())]
    Truncated { path: PathBuf },
    /// `--processes` against an anvil without the registry (stock anvil closes the
    /// connection at the `foreman-anvil` handshake).
    #[error("anvil at {} is not a Foreman anvil (no foreman-anvil greeting): no process registry", path.display())]
    NotForeman { path: PathBuf },
    /// `--processes` with a network mask (usage error).
    #[error("Network masks do not apply to --processes")]
    NetworkMaskWithProcesses,
}

/// The C library's text for an I/O error (`No such file or directory`), as doveadm prints it.
fn errno_text(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_owned(),
        None => err.to_string(),
    }
}

impl WhoError {
    /// How doveadm labels this error on stderr: `Error` for usage, `Fatal` for I/O.
    pub fn label(&self) -> &'static str {
        match self {
            WhoError::MultipleUserMasks
            | WhoError::MultipleNetworkMasks
            | WhoError::NetworkMaskWithProcesses => "Error",
            _ => "Fatal",
        }
    }

    /// The exit code: 64 usage (as doveadm), 75 anvil unreachable (as doveadm), 74 output.
    pub fn exit_code(&self) -> u8 {
        match self {
            WhoError::MultipleUserMasks
            | WhoError::MultipleNetworkMasks
            | WhoError::NetworkMaskWithProcesses => 64,
            WhoError::Connect { .. }
            | WhoError::Io { .. }
            | WhoError::Truncated { .. }
            | WhoError::NotForeman { .. } => 75,
            WhoError::Output { .. } => 74,
        }
    }
}

/// One CONNECT-DUMP row with its ident split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub service: BString,
    /// `None` when the ident has no IP part (LMTP form) or it does not parse.
    pub ip: Option<IpAddr>,
    pub username: BString,
    pub pid: Pid,
    pub refcount: u32,
}

/// A parsed dump: valid sessions in dump order, and the raw rows that were invalid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    pub sessions: Vec<Session>,
    pub invalid: Vec<BString>,
}

/// Splits an ident like `doveadm who`: `service/ip/username` or `service/username`.
/// The text before the first `/` is the service; if the rest holds another `/`, the text
/// before it is the IP (unparsable → no IP) and the rest the username. `None` without `/`.
pub fn split_ident(ident: &[u8]) -> Option<(&[u8], Option<IpAddr>, &[u8])> {
    let (service, ip, username) = split_ident_raw(ident)?;
    Some((service, ip.and_then(net::parse_ip), username))
}

/// An ident's parts as bytes: (service, IP text if any, username).
pub type RawIdent<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8]);

/// [`split_ident`] without parsing the IP. Also used by the anvil to learn which user a
/// process serves from its `CONNECT`.
pub fn split_ident_raw(ident: &[u8]) -> Option<RawIdent<'_>> {
    let (service, rest) = ident.split_once_str("/")?;
    match rest.split_once_str("/") {
        Some((ip, username)) => Some((service, Some(ip), username)),
        None => Some((service, None, rest)),
    }
}

/// Parses a complete CONNECT-DUMP reply (rows up to the empty line; bytes after it are
/// ignored). Returns `None` if the terminating empty line is missing.
pub fn parse_dump(mut bytes: &[u8]) -> Option<Dump> {
    let mut dump = Dump::default();
    loop {
        match decode_connect_row(bytes) {
            Ok((_, None)) => return Some(dump),
            Ok((consumed, Some(row))) => {
                match split_ident(&row.ident) {
                    Some((service, ip, username)) => dump.sessions.push(Session {
                        service: service.into(),
                        ip,
                        username: username.into(),
                        pid: row.pid,
                        refcount: row.refcount,
                    }),
                    None => dump.invalid.push(bytes[..consumed - 1].into()),
                }
                bytes = &bytes[consumed..];
            }
            Err(DecodeError::Invalid(ReplyError(raw))) => {
                bytes = &bytes[raw.len() + 1..];
                dump.invalid.push(raw);
            }
            Err(DecodeError::Incomplete) => return None,
        }
    }
}

/// Connects to anvil, sends `CONNECT-DUMP` and reads the reply up to its empty line.
pub fn fetch_dump(socket: &Path) -> Result<Vec<u8>, WhoError> {
    fetch(socket, REQUEST)
}

/// Connects to anvil, sends `request` (a handshake and one dump command) and reads the reply
/// up to its empty line. EOF before any byte is [`WhoError::NotForeman`] for a
/// `foreman-anvil` request (stock anvil closes the connection at that handshake).
pub fn fetch(socket: &Path, request: &[u8]) -> Result<Vec<u8>, WhoError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| WhoError::Connect {
        path: socket.into(),
        source,
    })?;
    let io = |source| WhoError::Io {
        path: socket.into(),
        source,
    };
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
    stream.write_all(request).map_err(io)?;
    let mut reply = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).map_err(io)?;
        if n == 0 {
            let path = socket.into();
            return Err(
                if reply.is_empty() && request.starts_with(crate::wire::anvil_ext::VERSION_LINE) {
                    WhoError::NotForeman { path }
                } else {
                    WhoError::Truncated { path }
                },
            );
        }
        let scan_from = reply.len().saturating_sub(1);
        reply.extend_from_slice(&chunk[..n]);
        if reply == b"\n" || reply[scan_from..].windows(2).any(|w| w == b"\n\n") {
            return Ok(reply);
        }
    }
}

/// The user and network masks of the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub user_mask: Option<BString>,
    pub network: Option<Network>,
}

impl Filter {
    /// Classifies each argument: digits only → username mask; an `ip[/bits]` → network;
    /// anything else → username mask. At most one of each.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Filter, WhoError> {
        let mut filter = Filter::default();
        for arg in args {
            let arg = arg.as_ref();
            let numeric = !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit());
            match (numeric, Network::parse(arg)) {
                (false, Some(network)) => {
                    if filter.network.replace(network).is_some() {
                        return Err(WhoError::MultipleNetworkMasks);
                    }
                }
                _ => {
                    if filter.user_mask.replace(arg.into()).is_some() {
                        return Err(WhoError::MultipleUserMasks);
                    }
                }
            }
        }
        Ok(filter)
    }

    fn user_matches(&self, username: &[u8]) -> bool {
        self.user_mask
            .as_ref()
            .is_none_or(|mask| wildcard_match_icase(username, mask))
    }

    /// Whether one session passes (the `-1` mode test).
    pub fn matches_session(&self, session: &Session) -> bool {
        self.user_matches(&session.username) && self.network.is_none_or(|n| n.contains(session.ip))
    }

    /// Whether a group passes: its username, and any of its IPs (a `/0` network takes all).
    pub fn matches_group(&self, group: &Group) -> bool {
        self.user_matches(&group.username)
            && self
                .network
                .is_none_or(|n| n.bits == 0 || group.ips.iter().any(|ip| n.contains(Some(*ip))))
    }
}

/// Case-insensitive (ASCII) wildcard match: `*` any run of bytes, `?` exactly one byte.
pub fn wildcard_match_icase(text: &[u8], mask: &[u8]) -> bool {
    let (mut t, mut m) = (0, 0);
    // Where the last `*` was and which text position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if m < mask.len() && mask[m] == b'*' {
            star = Some((m, t));
            m += 1;
        } else if m < mask.len() && (mask[m] == b'?' || mask[m].eq_ignore_ascii_case(&text[t])) {
            m += 1;
            t += 1;
        } else if let Some((sm, st)) = star {
            m = sm + 1;
            t = st + 1;
            star = Some((sm, st + 1));
        } else {
            return false;
        }
    }
    mask[m..].iter().all(|&c| c == b'*')
}

/// Sessions of one (username, service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub username: BString,
    pub service: BString,
    /// Sum of refcounts.
    pub count: u64,
    /// Distinct pids, in order of first appearance.
    pub pids: Vec<Pid>,
    /// Distinct IPs, in order of first appearance.
    pub ips: Vec<IpAddr>,
}

/// Groups sessions by (username, service) in linear time; groups come out in order of
/// first appearance.
pub fn aggregate(sessions: &[Session]) -> Vec<Group> {
    struct Building {
        group: Group,
        seen_pids: hashbrown::HashSet<Pid>,
        seen_ips: hashbrown::HashSet<IpAddr>,
    }
    let mut index: HashMap<(&[u8], &[u8]), usize> = HashMap::new();
    let mut groups: Vec<Building> = Vec::new();
    for s in sessions {
        let i = *index.entry((&s.username, &s.service)).or_insert_with(|| {
            groups.push(Building {
                group: Group {
                    username: s.username.clone(),
                    service: s.service.clone(),
                    count: 0,
                    pids: Vec::new(),
                    ips: Vec::new(),
                },
                seen_pids: Default::default(),
                seen_ips: Default::default(),
            });
            groups.len() - 1
        });
        let b = &mut groups[i];
        b.group.count += u64::from(s.refcount);
        if b.seen_pids.insert(s.pid) {
            b.group.pids.push(s.pid);
        }
        if let Some(ip) = s.ip {
            if b.seen_ips.insert(ip) {
                b.group.ips.push(ip);
            }
        }
    }
    groups.into_iter().map(|b| b.group).collect()
}

/// The columns of the default (grouped) output.
pub(crate) const GROUP_COLUMNS: [Column; 5] = [
    Column::left("username"),
    Column::right("#"),
    Column::left("proto"),
    Column::left("(pids)"),
    Column::left("(ips)"),
];

/// The columns of the `-1` output.
pub(crate) const SESSION_COLUMNS: [Column; 4] = [
    Column::left("username"),
    Column::left("proto"),
    Column::left("pid"),
    Column::left("ip"),
];

fn ip_text(ip: Option<IpAddr>) -> String {
    ip.map(|ip| net::format_ip(&ip)).unwrap_or_default()
}

/// The sessions `-1` mode prints: each passing session repeated refcount times.
fn session_rows<'a>(
    sessions: &'a [Session],
    filter: &'a Filter,
) -> impl Iterator<Item = &'a Session> {
    sessions
        .iter()
        .filter(|s| filter.matches_session(s))
        .flat_map(|s| std::iter::repeat_n(s, s.refcount as usize))
}

/// Writes the table `doveadm who` (or `doveadm who -1`) prints. Sessions are streamed, so a
/// huge refcount costs time, not memory.
pub fn write_table<W: Write + ?Sized>(
    dump: &Dump,
    filter: &Filter,
    one_per_session: bool,
    screen: usize,
    out: &mut W,
) -> std::io::Result<()> {
    if one_per_session {
        let rows = session_rows(&dump.sessions, filter).map(|s| {
            vec![
                s.username.to_vec(),
                s.service.to_vec(),
                s.pid.to_string().into_bytes(),
                ip_text(s.ip).into_bytes(),
            ]
        });
        table::write_table(
            &SESSION_COLUMNS,
            rows,
            ONE_PER_SESSION_MEASURED_ROWS,
            0,
            screen,
            out,
        )
    } else {
        let rows = aggregate(&dump.sessions)
            .into_iter()
            .filter(|g| filter.matches_group(g))
            .map(|g| {
                let pids: Vec<String> = g.pids.iter().map(|p| p.to_string()).collect();
                let ips: Vec<String> = g.ips.iter().map(net::format_ip).collect();
                vec![
                    g.username.to_vec(),
                    g.count.to_string().into_bytes(),
                    g.service.to_vec(),
                    format!("({})", pids.join(" ")).into_bytes(),
                    format!("({})", ips.join(" ")).into_bytes(),
                ]
            });
        table::write_table(
            &GROUP_COLUMNS,
            rows,
            1,
            GROUP_COLUMNS.len() - 1,
            screen,
            out,
        )
    }
}

/// [`write_table`] into a buffer.
pub fn render_table(dump: &Dump, filter: &Filter, one_per_session: bool, screen: usize) -> Vec<u8> {
    let mut out = Vec::new();
    write_table(dump, filter, one_per_session, screen, &mut out).expect("writing to a Vec");
    out
}

/// `--json`: an array of group objects, or of session objects with `-1` (one per session,
/// refcount times, streamed). Non-UTF-8 bytes in names become U+FFFD.
pub fn write_json<W: Write + ?Sized>(
    dump: &Dump,
    filter: &Filter,
    one_per_session: bool,
    out: &mut W,
) -> std::io::Result<()> {
    use serde_json::{json, Value};
    let text = |b: &[u8]| Value::String(String::from_utf8_lossy(b).into_owned());
    let items: Box<dyn Iterator<Item = Value>> = if one_per_session {
        Box::new(session_rows(&dump.sessions, filter).map(move |s| {
            json!({
                "username": text(&s.username),
                "service": text(&s.service),
                "pid": s.pid.get(),
                "ip": s.ip.map(|ip| net::format_ip(&ip)),
            })
        }))
    } else {
        Box::new(
            aggregate(&dump.sessions)
                .into_iter()
                .filter(|g| filter.matches_group(g))
                .map(move |g| {
                    json!({
                        "username": text(&g.username),
                        "service": text(&g.service),
                        "count": g.count,
                        "pids": g.pids.iter().map(|p| p.get()).collect::<Vec<_>>(),
                        "ips": g.ips.iter().map(net::format_ip).collect::<Vec<_>>(),
                    })
                }),
        )
    };
    out.write_all(b"[")?;
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &item)?;
    }
    out.write_all(b"]\n")
}

/// [`write_json`] into a buffer.
pub fn render_json(dump: &Dump, filter: &Filter, one_per_session: bool) -> Vec<u8> {
    let mut out = Vec::new();
    write_json(dump, filter, one_per_session, &mut out).expect("writing to a Vec");
    out
}

/// The stderr line for an invalid dump row.
pub fn invalid_row_message(raw: &[u8]) -> Vec<u8> {
    let mut line = b"Error: Invalid input: ".to_vec();
    line.extend_from_slice(raw);
    line.push(b'\n');
    line
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct Options {
    pub socket: PathBuf,
    pub one_per_session: bool,
    /// List the registry's processes instead of sessions ([`processes`]).
    pub processes: bool,
    pub json: bool,
    pub masks: Vec<String>,
    /// Screen width for the table (see [`table`]).
    pub screen: usize,
}

/// Runs `foreman who`: fetches the dump and writes the output. Invalid rows are reported
/// on `stderr` and skipped, like stock.
pub fn run(opts: &Options, stdout: &mut dyn Write, stderr: &mut dyn Write) -> Result<(), WhoError> {
    let filter = Filter::parse(&opts.masks)?;
    if opts.processes {
        return run_processes(opts, &filter, stdout, stderr);
    }
    let reply = fetch_dump(&opts.socket)?;
    let dump = parse_dump(&reply).ok_or_else(|| WhoError::Truncated {
        path: opts.socket.clone(),
    })?;
    write_out(stdout, stderr, &dump.invalid, |out| {
        if opts.json {
            write_json(&dump, &filter, opts.one_per_session, out)
        } else {
            write_table(&dump, &filter, opts.one_per_session, opts.screen, out)
        }
    })
}

/// `--processes`: one `PROC-DUMP`, rendered per user at the local wall clock.
fn run_processes(
    opts: &Options,
    filter: &Filter,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<(), WhoError> {
    if filter.network.is_some() {
        return Err(WhoError::NetworkMaskWithProcesses);
    }
    let reply = fetch(&opts.socket, processes::REQUEST)?;
    let path = opts.socket.clone();
    let dump = processes::parse_proc_dump(&reply).map_err(|e| match e {
        processes::ProcDumpError::NoGreeting => WhoError::NotForeman { path },
        processes::ProcDumpError::Truncated => WhoError::Truncated { path },
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    write_out(stdout, stderr, &dump.invalid, |out| {
        if opts.json {
            processes::write_json(&dump, filter, now, out)
        } else {
            processes::write_table(&dump, filter, now, opts.screen, out)
        }
    })
}

/// Reports invalid rows on `stderr`, then writes the output through a buffer.
fn write_out(
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
    invalid: &[BString],
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), WhoError> {
    // A reader that went away (`foreman who | head`) is not an error worth reporting.
    let io = |what| {
        move |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::BrokenPipe => None,
            _ => Some(WhoError::Output { what, source }),
        }
    };
    let result = (|| {
        for raw in invalid {
            stderr
                .write_all(&invalid_row_message(raw))
                .map_err(io("stderr"))?;
        }
        let mut out = std::io::BufWriter::new(stdout);
        write(&mut out).map_err(io("stdout"))?;
        out.flush().map_err(io("stdout"))
    })();
    match result {
        Ok(()) | Err(None) => Ok(()),
        Err(Some(err)) => Err(err),
    }
}

/// The screen width doveadm would use for stdout.
pub fn stdout_screen() -> usize {
    match crate::sys::tty::terminal_columns(std::io::stdout()) {
        Some(cols) => usize::from(cols).max(table::MIN_SCREEN),
        None => table::DEFAULT_SCREEN,
    }
}

#[cfg(test)]
mod tests;
