//! The transcript format: a versioned, line-oriented text file of everything that crossed an
//! anvil's sockets and pipes, one event per line. `docs/conformance.md` is the reader's guide;
//! this module is the single parser and printer.
//!
//! ```text
//! foreman-anvil-transcript 1
//! # comments start with '#'
//! 0.000 - process start
//! 0.012 1 master-pipe open
//! 0.012 1 master-pipe client->anvil VERSION\x09anvil\x091\x090\x0a
//! 0.104 3 anvil client->anvil PENALTY-GET\x09x\x0a
//! 0.104 3 anvil anvil->client 2 {ts+0}
//! 0.300 3 anvil close-by-anvil
//! 1.000 - process exit status 0
//! ```
//!
//! Data is escaped so that every byte string has exactly one spelling: printable ASCII
//! (0x20..=0x7e) stands for itself except `\` and `{`; every other byte is `\xHH` (lower case
//! hex); a trailing space is `\x20` so editors cannot strip it. `{…}` is a normalisation
//! marker, allowed only in anvil->client data: `{ts+K}` / `{ts-K}` is a unix timestamp K
//! seconds after (before) the wall-clock second in which the transcript's time 0 fell.
//! anvil->client data is printed one reply line per event (the LF is implied and not
//! printed); client->anvil data is printed one event per write, as written.

use std::fmt::{self, Write as _};

/// First word of the header line.
pub const MAGIC: &str = "foreman-anvil-transcript";
/// The format version this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Which of the anvil's channels a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnKind {
    /// A client of the `anvil` socket.
    Anvil,
    /// A client of the `anvil-auth-penalty` socket.
    AnvilAuthPenalty,
    /// The master -> anvil pipe (anvil's fd 7).
    MasterPipe,
    /// The children -> anvil pipe (anvil's fd 8).
    SharedPipe,
}

impl ConnKind {
    /// The spelling in transcripts.
    pub fn name(self) -> &'static str {
        match self {
            ConnKind::Anvil => "anvil",
            ConnKind::AnvilAuthPenalty => "anvil-auth-penalty",
            ConnKind::MasterPipe => "master-pipe",
            ConnKind::SharedPipe => "shared-pipe",
        }
    }

    /// Parses the spelling in transcripts.
    pub fn parse(s: &str) -> Option<ConnKind> {
        Some(match s {
            "anvil" => ConnKind::Anvil,
            "anvil-auth-penalty" => ConnKind::AnvilAuthPenalty,
            "master-pipe" => ConnKind::MasterPipe,
            "shared-pipe" => ConnKind::SharedPipe,
            _ => return None,
        })
    }

    /// Whether this is one of the two pipes (no replies possible, one per anvil lifetime).
    pub fn is_pipe(self) -> bool {
        matches!(self, ConnKind::MasterPipe | ConnKind::SharedPipe)
    }
}

/// One piece of expected anvil->client data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// These exact bytes.
    Bytes(Vec<u8>),
    /// A decimal unix timestamp this many seconds after the transcript's base second.
    Timestamp(i64),
}

/// What happened on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnAction {
    /// The client connected (sockets) or the anvil got the pipe (pipes).
    Open,
    /// Bytes the client wrote, as one write.
    ClientToAnvil(Vec<u8>),
    /// One reply line from the anvil, without its LF.
    AnvilToClient(Vec<Piece>),
    /// The client closed its end.
    CloseByClient,
    /// The anvil closed its end (after bad input, or when it exited).
    CloseByAnvil,
}

/// How an anvil process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// exit(n).
    Status(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// Something that happened to the anvil process or its master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessAction {
    /// The master started anvil; `restarted` means `ANVIL_RESTARTED=1` was in its env.
    Start { restarted: bool },
    /// The master died: anvil's master-dead pipe (fd 6) reports an error from now on.
    MasterDead,
    /// The master sent the anvil this signal (SIGQUIT at shutdown, for example).
    Signal(i32),
    /// The anvil process ended.
    Exit(ExitKind),
}

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the transcript's time 0 (in raw proxy captures: since the unix epoch).
    pub time: f64,
    /// What happened.
    pub what: EventKind,
}

/// The two families of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// On a connection: its id (unique within the transcript), kind and action.
    Conn {
        id: String,
        kind: ConnKind,
        action: ConnAction,
    },
    /// To the anvil process.
    Process(ProcessAction),
}

/// A whole transcript.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transcript {
    /// Comment lines (without the leading `# `), printed after the header.
    pub comments: Vec<String>,
    /// The events, in order.
    pub events: Vec<Event>,
    /// For each event, its 1-based line number in the file it was parsed from (0 if built).
    pub lines: Vec<usize>,
}

/// A syntax error, with its line number.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Escapes bytes as described in the module doc.
pub fn escape_bytes(data: &[u8], out: &mut String) {
    escape_bytes_at(data, out, true)
}

/// [`escape_bytes`]; `at_end` says whether the data ends the line (a final space is escaped).
fn escape_bytes_at(data: &[u8], out: &mut String, at_end: bool) {
    for (i, &b) in data.iter().enumerate() {
        let last = at_end && i + 1 == data.len();
        if (0x20..=0x7e).contains(&b) && b != b'\\' && b != b'{' && !(b == b' ' && last) {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// Prints expected pieces, markers included.
pub fn escape_pieces(pieces: &[Piece], out: &mut String) {
    for (i, p) in pieces.iter().enumerate() {
        match p {
            Piece::Bytes(b) => escape_bytes_at(b, out, i + 1 == pieces.len()),
            Piece::Timestamp(k) if *k >= 0 => {
                let _ = write!(out, "{{ts+{k}}}");
            }
            Piece::Timestamp(k) => {
                let _ = write!(out, "{{ts{k}}}");
            }
        }
    }
}

/// Parses escaped data; markers are allowed only when `markers` is true.
pub fn unescape(text: &str, markers: bool) -> Result<Vec<Piece>, String> {
    let bytes = text.as_bytes();
    let mut pieces = Vec::new();
    let mut cur = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                let hex = text.get(i + 1..i + 4).ok_or("truncated \\x escape")?;
                let h = hex.strip_prefix('x').ok_or("backslash must start \\xHH")?;
                let v = u8::from_str_radix(h, 16).map_err(|_| format!("bad hex in \\{hex}"))?;
                cur.push(v);
                i += 4;
            }
            b'{' => {
                if !markers {
                    return Err("markers are only allowed in anvil->client data".into());
                }
                let end = text[i..].find('}').ok_or("unterminated {marker}")? + i;
                let m = &text[i + 1..end];
                let off = m
                    .strip_prefix("ts")
                    .ok_or_else(|| format!("unknown marker {{{m}}}"))?;
                let k: i64 = off.parse().map_err(|_| format!("bad offset in {{{m}}}"))?;
                if !off.starts_with(['+', '-']) {
                    return Err(format!("marker offset needs a sign: {{{m}}}"));
                }
                if !cur.is_empty() {
                    pieces.push(Piece::Bytes(std::mem::take(&mut cur)));
                }
                pieces.push(Piece::Timestamp(k));
                i = end + 1;
            }
            b @ 0x20..=0x7e => {
                cur.push(b);
                i += 1;
            }
            b => return Err(format!("raw byte 0x{b:02x} must be escaped")),
        }
    }
    if !cur.is_empty() {
        pieces.push(Piece::Bytes(cur));
    }
    Ok(pieces)
}

/// Flattens pieces without markers into bytes (markers make this fail).
pub fn plain_bytes(pieces: &[Piece]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Bytes(b) => out.extend_from_slice(b),
            Piece::Timestamp(_) => return None,
        }
    }
    Some(out)
}

impl fmt::Display for ExitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitKind::Status(n) => write!(f, "status {n}"),
            ExitKind::Signal(n) => write!(f, "signal {n}"),
        }
    }
}

impl Event {
    /// Prints the event as one transcript line (no LF), with `decimals` digits of time.
    pub fn render(&self, decimals: usize) -> String {
        let mut s = format!("{:.*} ", decimals, self.time);
        match &self.what {
            EventKind::Process(p) => {
                s.push_str("- process ");
                match p {
                    ProcessAction::Start { restarted: false } => s.push_str("start"),
                    ProcessAction::Start { restarted: true } => s.push_str("start restarted"),
                    ProcessAction::MasterDead => s.push_str("master-dead"),
                    ProcessAction::Signal(n) => {
                        let _ = write!(s, "signal {n}");
                    }
                    ProcessAction::Exit(e) => {
                        let _ = write!(s, "exit {e}");
                    }
                }
            }
            EventKind::Conn { id, kind, action } => {
                let _ = write!(s, "{id} {} ", kind.name());
                match action {
                    ConnAction::Open => s.push_str("open"),
                    ConnAction::CloseByClient => s.push_str("close-by-client"),
                    ConnAction::CloseByAnvil => s.push_str("close-by-anvil"),
                    ConnAction::ClientToAnvil(d) => {
                        s.push_str("client->anvil ");
                        escape_bytes(d, &mut s);
                    }
                    ConnAction::AnvilToClient(p) => {
                        // An empty reply line (a dump terminator) prints no trailing space.
                        s.push_str("anvil->client");
                        if !p.is_empty() {
                            s.push(' ');
                            escape_pieces(p, &mut s);
                        }
                    }
                }
            }
        }
        s
    }

    /// Parses one event line.
    pub fn parse(line: &str) -> Result<Event, String> {
        let mut it = line.splitn(5, ' ');
        let time: f64 = it.next().unwrap_or("").parse().map_err(|_| "bad time")?;
        if !time.is_finite() || time < 0.0 {
            return Err("bad time".into());
        }
        let id = it.next().ok_or("missing connection id")?;
        let kind = it.next().ok_or("missing kind")?;
        let action = it.next().ok_or("missing action")?;
        let rest = it.next();
        if id == "-" {
            if kind != "process" {
                return Err(format!(
                    "connection id '-' needs kind 'process', not '{kind}'"
                ));
            }
            let p = match (action, rest) {
                ("start", None) => ProcessAction::Start { restarted: false },
                ("start", Some("restarted")) => ProcessAction::Start { restarted: true },
                ("master-dead", None) => ProcessAction::MasterDead,
                ("signal", Some(n)) => {
                    ProcessAction::Signal(n.parse().map_err(|_| "bad signal number")?)
                }
                ("exit", Some(r)) => {
                    let (how, n) = r
                        .split_once(' ')
                        .ok_or("exit needs 'status N' or 'signal N'")?;
                    let n: i32 = n.parse().map_err(|_| "bad exit number")?;
                    match how {
                        "status" => ProcessAction::Exit(ExitKind::Status(n)),
                        "signal" => ProcessAction::Exit(ExitKind::Signal(n)),
                        _ => return Err("exit needs 'status N' or 'signal N'".into()),
                    }
                }
                _ => return Err(format!("unknown process event '{action}'")),
            };
            return Ok(Event {
                time,
                what: EventKind::Process(p),
            });
        }
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
        {
            return Err(format!("bad connection id '{id}'"));
        }
        let kind =
            ConnKind::parse(kind).ok_or_else(|| format!("unknown connection kind '{kind}'"))?;
        let action = match (action, rest) {
            ("open", None) => ConnAction::Open,
            ("close-by-client", None) => ConnAction::CloseByClient,
            ("close-by-anvil", None) => ConnAction::CloseByAnvil,
            ("client->anvil", Some(d)) => {
                let p = unescape(d, false)?;
                ConnAction::ClientToAnvil(plain_bytes(&p).unwrap_or_default())
            }
            ("anvil->client", d) => ConnAction::AnvilToClient(unescape(d.unwrap_or(""), true)?),
            (a, _) => return Err(format!("unknown or malformed action '{a}'")),
        };
        Ok(Event {
            time,
            what: EventKind::Conn {
                id: id.to_string(),
                kind,
                action,
            },
        })
    }
}

impl Transcript {
    /// Parses a whole file.
    pub fn parse(text: &str) -> Result<Transcript, ParseError> {
        let mut lines = text.lines().enumerate();
        let (_, header) = lines.next().ok_or(ParseError {
            line: 1,
            message: "empty file".into(),
        })?;
        let want = format!("{MAGIC} {FORMAT_VERSION}");
        if header != want {
            return Err(ParseError {
                line: 1,
                message: format!("header must be '{want}', got '{header}'"),
            });
        }
        let mut t = Transcript::default();
        for (i, line) in lines {
            if let Some(c) = line.strip_prefix('#') {
                t.comments
                    .push(c.strip_prefix(' ').unwrap_or(c).to_string());
                continue;
            }
            if line.is_empty() {
                continue;
            }
            let ev = Event::parse(line).map_err(|message| ParseError {
                line: i + 1,
                message,
            })?;
            t.events.push(ev);
            t.lines.push(i + 1);
        }
        Ok(t)
    }

    /// Prints the whole file with `decimals` digits of time (3 for transcripts).
    pub fn render(&self, decimals: usize) -> String {
        let mut s = format!("{MAGIC} {FORMAT_VERSION}\n");
        for c in &self.comments {
            s.push_str("# ");
            s.push_str(c);
            s.push('\n');
        }
        for e in &self.events {
            s.push_str(&e.render(decimals));
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_unambiguous_and_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255u8).chain(*b" ").collect();
        let mut s = String::new();
        escape_bytes(&all, &mut s);
        assert!(s.ends_with("\\x20"), "trailing space is escaped: {s}");
        assert!(s.contains("\\x5c") && s.contains("\\x7b") && s.contains("\\x09"));
        assert_eq!(plain_bytes(&unescape(&s, false).unwrap()).unwrap(), all);
    }

    #[test]
    fn markers_only_in_replies() {
        assert!(unescape("2 {ts+3}", false).is_err());
        assert_eq!(
            unescape("2 {ts-3}x", true).unwrap(),
            vec![
                Piece::Bytes(b"2 ".to_vec()),
                Piece::Timestamp(-3),
                Piece::Bytes(b"x".to_vec())
            ]
        );
        assert!(unescape("{ts3}", true).is_err());
        assert!(unescape("{pid}", true).is_err());
        assert!(unescape("a\\q", false).is_err());
        assert!(unescape("a\tb", false).is_err());
    }

    #[test]
    fn transcript_round_trips() {
        let text = "foreman-anvil-transcript 1\n# hello\n0.000 - process start\n0.010 1 master-pipe open\n\
0.010 1 master-pipe client->anvil VERSION\\x09anvil\\x091\\x090\\x0a\n0.020 2 anvil-auth-penalty anvil->client 2 {ts+0}\n\
0.021 2 anvil-auth-penalty anvil->client\n0.030 2 anvil-auth-penalty close-by-anvil\n0.040 - process master-dead\n\
0.045 - process signal 3\n0.050 - process exit signal 9\n0.060 - process start restarted\n";
        let t = Transcript::parse(text).unwrap();
        assert_eq!(t.events.len(), 10);
        assert_eq!(t.lines[0], 3);
        assert_eq!(t.render(3), text);
    }

    #[test]
    fn bad_lines_are_rejected_with_their_number() {
        let e =
            Transcript::parse("foreman-anvil-transcript 1\n0.0 1 anvil frobnicate\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(Transcript::parse("foreman-anvil-transcript 2\n").is_err());
        assert!(Transcript::parse("foreman-anvil-transcript 1\n0.0 1 nope open\n").is_err());
    }
}
