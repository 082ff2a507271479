//! Recording scripted protocol scenarios straight from the stock anvil binary under a
//! [`FakeMaster`]: the script gives the client side (connections, writes, process events), the
//! recorder writes down what the anvil answered, closed and how it exited. Used for the parts
//! of the corpus that real Dovecot clients never send (malformed arguments, escape edge cases,
//! oversized lines); the traffic of real logins is recorded by [`super::proxy`].
//!
//! Replies are collected after each step until the anvil has been quiet for
//! [`QUIET`]: recording is a one-off whose result is reviewed, so a quiet period is enough
//! there; replays never rely on it.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::fake_master::{AnvilBinary, FakeMaster};
use super::normalise::normalise_reply;
use super::replay::Live;
use super::transcript::{ConnAction, ConnKind, Event, EventKind, ProcessAction, Transcript};

/// How long the anvil must stay silent before a step's replies are taken as complete.
pub const QUIET: Duration = Duration::from_millis(150);

/// The handshake every stock client sends first.
pub const HANDSHAKE: &[u8] = b"VERSION\tanvil\t1\t0\n";

/// One step of a script.
#[derive(Debug, Clone)]
pub enum Step {
    /// Start an anvil (`restarted`: with `ANVIL_RESTARTED=1`).
    Start { restarted: bool },
    /// Open connection `id` of `kind` (a pipe: the anvil's pipe of that kind).
    Open(u32, ConnKind),
    /// Write these bytes on connection `id`, as one write.
    Send(u32, Vec<u8>),
    /// The client closes connection `id`.
    Close(u32),
    /// Kill the anvil with this signal and record how it exited.
    Kill(i32),
    /// The master dies.
    MasterDead,
    /// Wait for the anvil to exit by itself.
    WaitExit,
    /// Let time pass (for penalty timestamps and expiry).
    Sleep(Duration),
}

/// A named script.
#[derive(Debug, Clone)]
pub struct Script {
    pub name: &'static str,
    pub about: &'static str,
    pub steps: Vec<Step>,
}

impl Script {
    pub fn new(name: &'static str, about: &'static str) -> Script {
        Script {
            name,
            about,
            steps: vec![Step::Start { restarted: false }],
        }
    }
    /// Opens both pipes (ids `m` and `s`) and writes the master's handshakes, shared pipe
    /// first, as the stock master does right after forking anvil.
    pub fn pipes(mut self, m: u32, s: u32) -> Script {
        self.steps.push(Step::Open(s, ConnKind::SharedPipe));
        self.steps.push(Step::Open(m, ConnKind::MasterPipe));
        self.steps.push(Step::Send(s, HANDSHAKE.to_vec()));
        self.steps.push(Step::Send(m, HANDSHAKE.to_vec()));
        self
    }
    /// Opens a socket connection without sending anything.
    pub fn open(mut self, id: u32, kind: ConnKind) -> Script {
        self.steps.push(Step::Open(id, kind));
        self
    }
    /// Opens an `anvil` socket connection and sends the handshake.
    pub fn client(self, id: u32) -> Script {
        self.open(id, ConnKind::Anvil).send(id, HANDSHAKE)
    }
    /// Opens an `anvil-auth-penalty` socket connection and sends the handshake.
    pub fn penalty_client(self, id: u32) -> Script {
        self.open(id, ConnKind::AnvilAuthPenalty)
            .send(id, HANDSHAKE)
    }
    pub fn send(mut self, id: u32, data: impl AsRef<[u8]>) -> Script {
        self.steps.push(Step::Send(id, data.as_ref().to_vec()));
        self
    }
    pub fn close(mut self, id: u32) -> Script {
        self.steps.push(Step::Close(id));
        self
    }
    pub fn step(mut self, s: Step) -> Script {
        self.steps.push(s);
        self
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct Recorder {
    start: Instant,
    events: Vec<Event>,
    conns: BTreeMap<u32, (ConnKind, Live)>,
    /// Connections the anvil closed: writes to them are still recorded (the master keeps
    /// writing into a pipe nobody reads), but not performed.
    closed: BTreeMap<u32, ConnKind>,
}

impl Recorder {
    fn push(&mut self, what: EventKind) {
        self.events.push(Event {
            time: self.start.elapsed().as_secs_f64(),
            what,
        });
    }

    fn conn(&mut self, id: u32, kind: ConnKind, action: ConnAction) {
        self.push(EventKind::Conn {
            id: id.to_string(),
            kind,
            action,
        });
    }

    /// Collects replies and closes until the anvil has been quiet for [`QUIET`].
    fn collect(&mut self, fm: &FakeMaster) -> io::Result<()> {
        let hard = Instant::now() + Duration::from_secs(5);
        let mut last_change = Instant::now();
        let mut seen = self.progress();
        while last_change.elapsed() < QUIET && Instant::now() < hard {
            for (_, live) in self.conns.values_mut() {
                live.fill(Instant::now() + Duration::from_millis(5), |_, _| false);
            }
            let p = self.progress();
            if p != seen {
                seen = p;
                last_change = Instant::now();
            }
        }
        let ids: Vec<u32> = self.conns.keys().copied().collect();
        for id in ids {
            let (kind, mut live) = self.conns.remove(&id).unwrap();
            let closed = match &mut live {
                Live::Socket { buf, eof, .. } => {
                    let mut used = 0;
                    let mut lines = Vec::new();
                    for l in buf.split_inclusive(|&c| c == b'\n') {
                        if l.last() == Some(&b'\n') {
                            used += l.len();
                            lines.push(l[..l.len() - 1].to_vec());
                        }
                    }
                    buf.drain(..used);
                    if *eof && !buf.is_empty() {
                        lines.push(std::mem::take(buf));
                    }
                    for l in lines {
                        self.conn(
                            id,
                            kind,
                            ConnAction::AnvilToClient(vec![super::transcript::Piece::Bytes(l)]),
                        );
                    }
                    *eof
                }
                Live::Pipe(k) => !fm.anvil_holds_pipe(*k)?,
            };
            if closed {
                self.conn(id, kind, ConnAction::CloseByAnvil);
                self.closed.insert(id, kind);
            } else {
                self.conns.insert(id, (kind, live));
            }
        }
        Ok(())
    }

    fn progress(&self) -> (usize, usize) {
        let mut n = 0;
        let mut e = 0;
        for (_, l) in self.conns.values() {
            if let Live::Socket { buf, eof, .. } = l {
                n += buf.len();
                e += *eof as usize;
            }
        }
        (n, e)
    }
}

/// Runs a script against `binary` (normally the stock anvil) and returns the transcript.
pub fn record(script: &Script, binary: AnvilBinary) -> io::Result<Transcript> {
    let mut fm = FakeMaster::new(binary)?;
    let base = now_unix();
    let mut r = Recorder {
        start: Instant::now(),
        events: Vec::new(),
        conns: BTreeMap::new(),
        closed: BTreeMap::new(),
    };
    let timeout = Duration::from_secs(10);
    for step in &script.steps {
        match step {
            Step::Start { restarted } => {
                fm.spawn(*restarted, timeout)?;
                r.push(EventKind::Process(ProcessAction::Start {
                    restarted: *restarted,
                }));
            }
            Step::Open(id, kind) => {
                r.conns.insert(*id, (*kind, Live::open(&fm, *kind)?));
                r.conn(*id, *kind, ConnAction::Open);
            }
            Step::Send(id, data) if r.closed.contains_key(id) => {
                let kind = r.closed[id];
                if kind.is_pipe() {
                    Live::Pipe(kind).send(&fm, data, Instant::now() + timeout)?;
                }
                r.conn(*id, kind, ConnAction::ClientToAnvil(data.clone()));
            }
            Step::Send(id, data) => {
                let (kind, live) = r.conns.get_mut(id).ok_or_else(|| {
                    io::Error::other(format!(
                        "{}: send on connection {id} that is not open",
                        script.name
                    ))
                })?;
                let kind = *kind;
                live.send(&fm, data, Instant::now() + timeout)?;
                r.conn(*id, kind, ConnAction::ClientToAnvil(data.clone()));
            }
            Step::Close(id) => {
                r.collect(&fm)?;
                let Some((kind, live)) = r.conns.remove(id) else {
                    continue;
                };
                match live {
                    Live::Socket { stream, .. } => {
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                    }
                    Live::Pipe(k) => fm.close_pipe(k)?,
                }
                r.conn(*id, kind, ConnAction::CloseByClient);
            }
            Step::Kill(sig) => {
                r.collect(&fm)?;
                fm.kill(*sig)?;
                let how = fm
                    .wait_exit(timeout)?
                    .ok_or_else(|| io::Error::other("anvil survived a kill"))?;
                r.push(EventKind::Process(ProcessAction::Exit(how)));
            }
            Step::MasterDead => {
                fm.master_dead();
                r.push(EventKind::Process(ProcessAction::MasterDead));
            }
            Step::WaitExit => {
                r.collect(&fm)?;
                let how = fm.wait_exit(timeout)?.ok_or_else(|| {
                    io::Error::other(format!("{}: anvil did not exit", script.name))
                })?;
                r.push(EventKind::Process(ProcessAction::Exit(how)));
            }
            Step::Sleep(d) => std::thread::sleep(*d),
        }
        r.collect(&fm)?;
        if matches!(step, Step::Kill(_) | Step::WaitExit) {
            // The anvil is gone: its pipes are closed too.
            let pipes: Vec<u32> = r
                .conns
                .iter()
                .filter(|(_, (k, _))| k.is_pipe())
                .map(|(id, _)| *id)
                .collect();
            for id in pipes {
                let (kind, _) = r.conns.remove(&id).unwrap();
                r.conn(id, kind, ConnAction::CloseByAnvil);
                r.closed.insert(id, kind);
            }
        }
    }
    fm.stop();
    let end = now_unix();
    for e in &mut r.events {
        if let EventKind::Conn {
            action: ConnAction::AnvilToClient(p),
            ..
        } = &mut e.what
        {
            if let [super::transcript::Piece::Bytes(b)] = p.as_slice() {
                *p = normalise_reply(b, base, (base, end));
            }
        }
    }
    let mut comments = vec![
        format!("scenario: {}", script.name),
        format!(
            "recorded from the stock anvil binary ({}) under Foreman's fake master",
            super::fake_master::STOCK_ANVIL
        ),
    ];
    comments.extend(script.about.lines().map(str::to_string));
    Ok(Transcript {
        comments,
        lines: vec![0; r.events.len()],
        events: r.events,
    })
}
