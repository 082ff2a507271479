//! Replays transcripts against an anvil under a [`FakeMaster`]: sends the client side of each
//! transcript in order, compares what comes back, and reports the first mismatch of each
//! transcript with its file line, connection and event index.
//!
//! Ordering across connections: after every client write the replayer waits (bounded) until
//! the anvil has read every byte of it (`FIONREAD` on pipes, `SIOCOUTQ` on sockets) before it
//! goes on, so a CONNECT written to a pipe is seen before a LOOKUP on a socket. With
//! `realtime` it also keeps the recorded gaps between events of [`KEEP_GAPS_FROM`] or more,
//! which timestamps in penalty replies and penalty expiry depend on.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::fake_master::{AnvilBinary, FakeMaster};
use super::normalise::compare_lines;
use super::transcript::{
    escape_bytes, escape_pieces, ConnAction, ConnKind, EventKind, ExitKind, Piece, ProcessAction,
    Transcript,
};

/// Recorded gaps at least this long (seconds) are kept in a realtime replay; shorter ones are
/// skipped, and expected timestamps are shifted by the time skipped so far.
pub const KEEP_GAPS_FROM: f64 = 0.5;

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The anvil under test.
    pub binary: AnvilBinary,
    /// Keep the recorded time between events.
    pub realtime: bool,
    /// How far (seconds) a replayed timestamp may be from the recorded one (after shifting).
    pub ts_tolerance: i64,
    /// How long to wait for any one expected thing (a reply, a close, a start, an exit).
    pub timeout: Duration,
    /// Run the anvil standalone (`--socket`, `--penalty-socket`) instead of under the fake
    /// master; only transcripts without pipes and process events can be replayed so.
    pub standalone: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            binary: AnvilBinary::Stock,
            realtime: true,
            ts_tolerance: 2,
            timeout: Duration::from_secs(5),
            standalone: false,
        }
    }
}

/// The first difference found in a transcript.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// The transcript's name (its path).
    pub name: String,
    /// Line number in the transcript file (0 when unknown).
    pub line: usize,
    /// Index of the event (0-based).
    pub event: usize,
    /// Connection id and kind, or `-` for the process.
    pub conn: String,
    /// What differs.
    pub what: String,
    /// Expected lines, escaped as in transcripts.
    pub expected: Vec<String>,
    /// Received lines, escaped as in transcripts.
    pub got: Vec<String>,
    /// The anvil's log output, escaped.
    pub log: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: found after the last event (output or a close nobody expected).
        let line = match self.line {
            0 => "end".to_string(),
            n => n.to_string(),
        };
        writeln!(
            f,
            "MISMATCH {}:{line} (event {}, conn {}): {}",
            self.name, self.event, self.conn, self.what
        )?;
        for e in &self.expected {
            writeln!(f, "  - expected: {e}")?;
        }
        for g in &self.got {
            writeln!(f, "  + got:      {g}")?;
        }
        if !self.log.is_empty() {
            writeln!(f, "  anvil log:")?;
            for l in self.log.lines() {
                writeln!(f, "    {l}")?;
            }
        }
        Ok(())
    }
}

/// A connection of a transcript as the client side sees it.
pub(crate) enum Live {
    Socket {
        stream: UnixStream,
        rx: Receiver<Option<Vec<u8>>>,
        buf: Vec<u8>,
        eof: bool,
    },
    Pipe(ConnKind),
}

impl Live {
    /// Opens a transcript connection: a socket connection, or the pipe of that kind.
    pub(crate) fn open(fm: &FakeMaster, kind: ConnKind) -> io::Result<Live> {
        if kind.is_pipe() {
            Ok(Live::Pipe(kind))
        } else {
            Live::open_socket(fm.connect(kind)?)
        }
    }

    /// Writes `data` as one write, then waits (until `deadline`) for the anvil to have read
    /// all of it, so that what follows on another connection comes after it.
    pub(crate) fn send(
        &mut self,
        fm: &FakeMaster,
        data: &[u8],
        deadline: Instant,
    ) -> io::Result<()> {
        match self {
            Live::Socket { stream, .. } => {
                // A write after the anvil closed fails; the transcript says whether a close
                // was expected, so the error itself is not a mismatch.
                if stream.write_all(data).is_ok() {
                    while crate::sys::fdplan::unconsumed_bytes(stream, true).unwrap_or(0) > 0
                        && Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            Live::Pipe(k) => {
                let k = *k;
                if fm.pid().is_none() || fm.anvil_holds_pipe(k)? {
                    fm.write_pipe(k, data)?;
                }
                while fm.pid().is_some()
                    && fm.pipe_unread(k)? > 0
                    && fm.anvil_holds_pipe(k)?
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        // Let an anvil that hands reads to another task finish processing them.
        std::thread::sleep(Duration::from_millis(2));
        Ok(())
    }

    fn open_socket(stream: UnixStream) -> io::Result<Live> {
        let (tx, rx) = mpsc::channel();
        let mut reader = stream.try_clone()?;
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        break;
                    }
                    Ok(n) => {
                        if tx.send(Some(chunk[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Live::Socket {
            stream,
            rx,
            buf: Vec::new(),
            eof: false,
        })
    }

    /// Receives until `done(buf, eof)` holds or `deadline` passes.
    pub(crate) fn fill(&mut self, deadline: Instant, done: impl Fn(&[u8], bool) -> bool) {
        let Live::Socket { rx, buf, eof, .. } = self else {
            return;
        };
        while !done(buf, *eof) && !*eof {
            let now = Instant::now();
            let wait = deadline.saturating_duration_since(now);
            match rx.recv_timeout(wait) {
                Ok(Some(d)) => buf.extend_from_slice(&d),
                Ok(None) | Err(RecvTimeoutError::Disconnected) => *eof = true,
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
    }

    /// Takes whatever has already arrived without waiting.
    pub(crate) fn drain_now(&mut self) {
        self.fill(Instant::now(), |_, _| false);
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn show_bytes(b: &[u8]) -> String {
    let mut s = String::new();
    escape_bytes(b, &mut s);
    s
}

fn show_pieces(p: &[Piece]) -> String {
    let mut s = String::new();
    escape_pieces(p, &mut s);
    s
}

/// Whether a transcript needs a master: pipes, restarts, master death, signals or an exit.
/// Such transcripts cannot be replayed against a standalone anvil.
pub fn needs_master(t: &Transcript) -> bool {
    t.events.iter().any(|e| match &e.what {
        EventKind::Conn { kind, .. } => kind.is_pipe(),
        EventKind::Process(ProcessAction::Start { restarted }) => *restarted,
        EventKind::Process(_) => true,
    })
}

/// Replays one transcript. `Ok(None)`: everything matched. `Err`: the replay itself could not
/// run (a binary that does not start, a socket that cannot be connected).
pub fn replay(t: &Transcript, name: &str, opts: &ReplayOptions) -> io::Result<Option<Mismatch>> {
    let mut fm = FakeMaster::with_mode(opts.binary.clone(), opts.standalone)?;
    let mut conns: HashMap<String, Live> = HashMap::new();
    let mut closed_by_anvil: std::collections::HashSet<String> = Default::default();
    let start = Instant::now();
    let base = now_unix().floor() as i64;
    let t0 = t.events.first().map(|e| e.time).unwrap_or(0.0);
    let tol = opts.ts_tolerance;
    let realtime = opts.realtime;
    // Seconds of recorded time skipped so far (short gaps are not waited for).
    let skipped = std::cell::Cell::new(0.0f64);
    let ts_ok = |k: i64, v: i64| {
        if realtime {
            // The value was produced at some earlier event, when between 0 and all of the
            // skipped time had been skipped.
            let hi = (base + k) as f64;
            let lo = hi - skipped.get();
            let (v, t) = (v as f64, tol as f64 + 0.5);
            v >= lo - t && v <= hi + t
        } else {
            v >= base - tol && v <= now_unix().ceil() as i64 + tol
        }
    };
    let mut i = 0;
    while i < t.events.len() {
        let ev = &t.events[i];
        let line = t.lines.get(i).copied().unwrap_or(0);
        let mismatch =
            |conn: &str, what: String, expected: Vec<String>, got: Vec<String>, fm: &FakeMaster| {
                Mismatch {
                    name: name.to_string(),
                    line,
                    event: i,
                    conn: conn.to_string(),
                    what,
                    expected,
                    got,
                    log: fm.log_text(),
                }
            };
        if opts.realtime {
            let target = (ev.time - t0 - skipped.get()).max(0.0);
            let gap = target - start.elapsed().as_secs_f64();
            if gap >= KEEP_GAPS_FROM {
                std::thread::sleep(Duration::from_secs_f64(gap));
            } else if gap > 0.0 {
                skipped.set(skipped.get() + gap);
            }
        }
        let deadline = Instant::now() + opts.timeout;
        match &ev.what {
            EventKind::Process(p) => match p {
                ProcessAction::Start { restarted } => fm.spawn(*restarted, opts.timeout)?,
                ProcessAction::MasterDead => fm.master_dead(),
                // A signal to an anvil that already exited is a no-op, as kill(2) would be.
                ProcessAction::Signal(n) => {
                    if fm.pid().is_some() {
                        fm.kill(*n)?;
                    }
                }
                ProcessAction::Exit(want) => {
                    let mut got = fm.wait_exit(Duration::ZERO)?;
                    if got.is_none() {
                        if let ExitKind::Signal(s) = want {
                            fm.kill(*s)?;
                        }
                        got = fm.wait_exit(opts.timeout)?;
                    }
                    if got != Some(*want) {
                        let got = got.map_or("still running".to_string(), |g| format!("exit {g}"));
                        return Ok(Some(mismatch(
                            "-",
                            "anvil process".into(),
                            vec![format!("exit {want}")],
                            vec![got],
                            &fm,
                        )));
                    }
                }
            },
            EventKind::Conn { id, kind, action } => {
                let label = format!("{id} {}", kind.name());
                match action {
                    ConnAction::Open => {
                        conns.insert(id.clone(), Live::open(&fm, *kind)?);
                    }
                    ConnAction::ClientToAnvil(data) => {
                        let live = conns
                            .get_mut(id)
                            .ok_or_else(|| unknown_conn(name, line, id))?;
                        live.send(&fm, data, deadline)?;
                    }
                    ConnAction::AnvilToClient(_) => {
                        let mut j = i;
                        let mut expected: Vec<Vec<Piece>> = Vec::new();
                        while let Some(EventKind::Conn {
                            id: id2,
                            action: ConnAction::AnvilToClient(p),
                            ..
                        }) = t.events.get(j).map(|e| &e.what)
                        {
                            if id2 != id {
                                break;
                            }
                            expected.push(p.clone());
                            j += 1;
                        }
                        let live = conns
                            .get_mut(id)
                            .ok_or_else(|| unknown_conn(name, line, id))?;
                        let n = expected.len();
                        live.fill(deadline, |b, _| {
                            b.iter().filter(|&&c| c == b'\n').count() >= n
                        });
                        let Live::Socket { buf, eof, .. } = live else {
                            return Ok(Some(mismatch(
                                &label,
                                "a pipe cannot carry replies".into(),
                                vec![],
                                vec![],
                                &fm,
                            )));
                        };
                        let mut got: Vec<Vec<u8>> = Vec::new();
                        let mut used = 0;
                        for l in buf.split_inclusive(|&c| c == b'\n').take(n) {
                            if l.last() != Some(&b'\n') {
                                break;
                            }
                            used += l.len();
                            got.push(l[..l.len() - 1].to_vec());
                        }
                        let result = if got.len() < n {
                            Err((
                                got.len(),
                                if *eof {
                                    "anvil closed the connection"
                                } else {
                                    "timed out waiting for a reply"
                                }
                                .to_string(),
                            ))
                        } else {
                            compare_lines(&expected, &got, &ts_ok)
                        };
                        if let Err((k, what)) = result {
                            let mut gl: Vec<String> = got.iter().map(|g| show_bytes(g)).collect();
                            let partial = &buf[used..];
                            if !partial.is_empty() {
                                gl.push(format!("{} (no LF yet)", show_bytes(partial)));
                            }
                            let mut m = mismatch(
                                &label,
                                what,
                                expected.iter().map(|e| show_pieces(e)).collect(),
                                gl,
                                &fm,
                            );
                            m.event = i + k;
                            m.line = t.lines.get(i + k).copied().unwrap_or(line);
                            return Ok(Some(m));
                        }
                        buf.drain(..used);
                        i = j;
                        continue;
                    }
                    ConnAction::CloseByClient => {
                        let mut live = conns
                            .remove(id)
                            .ok_or_else(|| unknown_conn(name, line, id))?;
                        live.drain_now();
                        match live {
                            Live::Socket {
                                stream, buf, eof, ..
                            } => {
                                if !buf.is_empty() {
                                    return Ok(Some(mismatch(
                                        &label,
                                        "unexpected output before the client closed".into(),
                                        vec![],
                                        vec![show_bytes(&buf)],
                                        &fm,
                                    )));
                                }
                                if eof && !closed_by_anvil.contains(id) {
                                    return Ok(Some(mismatch(
                                        &label,
                                        "the anvil closed a connection the recording kept open"
                                            .into(),
                                        vec!["(open until the client closes)".into()],
                                        vec!["(closed by the anvil)".into()],
                                        &fm,
                                    )));
                                }
                                let _ = stream.shutdown(Shutdown::Both);
                            }
                            Live::Pipe(k) => fm.close_pipe(k)?,
                        }
                    }
                    ConnAction::CloseByAnvil => {
                        let live = conns
                            .get_mut(id)
                            .ok_or_else(|| unknown_conn(name, line, id))?;
                        match live {
                            Live::Socket { .. } => {
                                live.fill(deadline, |_, eof| eof);
                                let Live::Socket { buf, eof, .. } = live else {
                                    unreachable!()
                                };
                                if !buf.is_empty() {
                                    return Ok(Some(mismatch(
                                        &label,
                                        "unexpected output before the anvil closed".into(),
                                        vec!["(close)".into()],
                                        vec![show_bytes(buf)],
                                        &fm,
                                    )));
                                }
                                if !*eof {
                                    return Ok(Some(mismatch(
                                        &label,
                                        "the anvil did not close the connection".into(),
                                        vec!["(close)".into()],
                                        vec!["(still open)".into()],
                                        &fm,
                                    )));
                                }
                            }
                            Live::Pipe(k) => {
                                let k = *k;
                                while fm.anvil_holds_pipe(k)? && Instant::now() < deadline {
                                    std::thread::sleep(Duration::from_millis(2));
                                }
                                if fm.anvil_holds_pipe(k)? {
                                    return Ok(Some(mismatch(
                                        &label,
                                        "the anvil did not close the pipe".into(),
                                        vec!["(close)".into()],
                                        vec!["(still open)".into()],
                                        &fm,
                                    )));
                                }
                            }
                        }
                        closed_by_anvil.insert(id.clone());
                        // Kept: later client writes to it are replayed (and go nowhere).
                        if let Some(Live::Socket { eof, .. }) = conns.get_mut(id) {
                            *eof = true;
                        }
                    }
                }
            }
        }
        i += 1;
    }
    // Whatever arrived and was never expected is a mismatch too, and so is a close the
    // recording does not have.
    let mut ids: Vec<String> = conns.keys().cloned().collect();
    ids.sort();
    for id in ids {
        let live = conns.get_mut(&id).unwrap();
        live.drain_now();
        let expected_open = !closed_by_anvil.contains(&id);
        let (what, got) = match live {
            Live::Socket { buf, .. } if !buf.is_empty() => (
                "unexpected output at the end of the transcript",
                show_bytes(buf),
            ),
            Live::Socket { eof: true, .. } if expected_open => (
                "the anvil closed a connection the recording kept open",
                "(closed by the anvil)".to_string(),
            ),
            Live::Pipe(k) if expected_open && fm.pid().is_some() && !fm.anvil_holds_pipe(*k)? => (
                "the anvil closed a pipe the recording kept open",
                "(closed by the anvil)".to_string(),
            ),
            _ => continue,
        };
        return Ok(Some(Mismatch {
            name: name.to_string(),
            line: 0,
            event: t.events.len(),
            conn: id,
            what: what.into(),
            expected: vec![],
            got: vec![got],
            log: fm.log_text(),
        }));
    }
    fm.stop();
    Ok(None)
}

fn unknown_conn(name: &str, line: usize, id: &str) -> io::Error {
    io::Error::other(format!("{name}:{line}: connection {id} was never opened"))
}
