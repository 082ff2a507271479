//! `foreman conformance record-proxy --out FILE`: a recording proxy that a stock Dovecot master
//! runs as its anvil executable (`service anvil { executable = … }`).
//!
//! It takes the fds the master gives anvil (anvil-protocol.md §1.2), starts the real stock
//! anvil behind itself with a layout of its own (new pipes for fds 7 and 8, new listening
//! sockets for 9 and 10 in a temporary directory, its own status and master-dead pipes; fds 2
//! and 4, the log pipe and the log-fd passing socket, are handed through untouched, so log
//! lines are not recorded), and forwards every byte in both directions while appending it to
//! FILE as a *raw* transcript: absolute unix times, connection ids `<proxy pid>.<n>`,
//! anvil->client data as read (not yet split into lines). `foreman conformance record`
//! turns raw captures into corpus transcripts ([`finish`]).
//!
//! Close semantics are preserved: when stock closes a client connection (bad input) the proxy
//! closes the client's side too; when stock closes a pipe for good the proxy stops reading the
//! master's pipe, as stock would. The proxy writes its own status records to the master's fd 5
//! (its own pid, its GENERATION, stock's available count), forwards the master's signals, and
//! exits the way stock exited, so the master restarts it (with `ANVIL_RESTARTED=1`) after a
//! crash. Several proxies (an anvil and its restarted successors) append to the same FILE.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::pipe2;

use super::fake_master::{exit_kind, spawn_with_layout, STOCK_ANVIL};
use super::normalise::normalise_reply;
use super::transcript::{
    ConnAction, ConnKind, Event, EventKind, ExitKind, Piece, ProcessAction, Transcript,
};
use crate::master_compat::child_env::{
    MASTER_ANVIL_LOG_FDPASS_FD, MASTER_DEAD_FD, MASTER_LISTEN_FD_FIRST, MASTER_STATUS_FD,
};
use crate::wire::status::{StatusRecord, STATUS_RECORD_LEN};

/// How long a connection close seen from stock waits for stock's exit to be recorded first,
/// so that closes caused by a crash come after the `exit` event (as a replay needs them).
const EXIT_ORDER_GRACE: Duration = Duration::from_millis(150);

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The raw capture file and shared proxy state.
struct Shared {
    file: Mutex<File>,
    pid: u32,
    next_id: AtomicU32,
    open_conns: AtomicUsize,
    exited: Mutex<bool>,
    exited_cv: Condvar,
    stop_accepting: AtomicBool,
}

impl Shared {
    fn record(&self, what: EventKind) {
        let mut line = Event {
            time: now_unix(),
            what,
        }
        .render(6);
        line.push('\n');
        let mut f = self.file.lock().unwrap();
        let _ = f.write_all(line.as_bytes());
    }

    fn new_conn(&self, kind: ConnKind) -> String {
        let id = format!(
            "{}.{}",
            self.pid,
            self.next_id.fetch_add(1, Ordering::SeqCst) + 1
        );
        self.open_conns.fetch_add(1, Ordering::SeqCst);
        self.conn(&id, kind, ConnAction::Open);
        id
    }

    fn conn(&self, id: &str, kind: ConnKind, action: ConnAction) {
        let closing = matches!(action, ConnAction::CloseByAnvil | ConnAction::CloseByClient);
        self.record(EventKind::Conn {
            id: id.to_string(),
            kind,
            action,
        });
        if closing {
            self.open_conns.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Before recording a close by stock: give stock's exit (if that is the cause) the
    /// chance to be recorded first.
    fn wait_exit_briefly(&self) {
        let g = self.exited.lock().unwrap();
        let _ = self
            .exited_cv
            .wait_timeout_while(g, EXIT_ORDER_GRACE, |e| !*e)
            .unwrap();
    }
}

/// Options of the proxy.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The raw capture file (appended to).
    pub out: PathBuf,
    /// The stock anvil binary.
    pub stock: PathBuf,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            out: PathBuf::from("anvil.raw"),
            stock: PathBuf::from(STOCK_ANVIL),
        }
    }
}

/// Runs the proxy until stock anvil exits; returns how it exited (the caller exits the same way).
pub fn run(opts: &ProxyOptions) -> io::Result<ExitKind> {
    let restarted = std::env::var_os("ANVIL_RESTARTED").is_some();
    let generation: u32 = std::env::var("GENERATION")
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0);
    let socket_count: u32 = std::env::var("SOCKET_COUNT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4);
    let fds = crate::sys::take_anvil_fds(socket_count).map_err(io::Error::other)?;
    let fdpass = fds.log_fdpass;
    let status_out = File::from(fds.status);
    let dead = fds.master_dead;
    let master_pipe = fds.master_pipe;
    let shared_pipe = fds.shared_pipe;
    let mut listeners = fds.listeners.into_iter();
    let (Some(listen_anvil), Some(listen_penalty)) = (listeners.next(), listeners.next()) else {
        return Err(io::Error::other(
            "the master gave fewer than two anvil listeners",
        ));
    };
    let (listen_anvil, listen_penalty) = (
        UnixListener::from(listen_anvil),
        UnixListener::from(listen_penalty),
    );

    let file = File::options().create(true).append(true).open(&opts.out)?;
    if file.metadata()?.len() == 0 {
        (&file).write_all(
            format!(
                "{} {}\n",
                super::transcript::MAGIC,
                super::transcript::FORMAT_VERSION
            )
            .as_bytes(),
        )?;
    }
    let shared = Arc::new(Shared {
        file: Mutex::new(file),
        pid: std::process::id(),
        next_id: AtomicU32::new(0),
        open_conns: AtomicUsize::new(0),
        exited: Mutex::new(false),
        exited_cv: Condvar::new(),
        stop_accepting: AtomicBool::new(false),
    });

    // Stock's own layout.
    let dir = tempfile::Builder::new()
        .prefix("foreman-record-proxy-")
        .tempdir()?;
    let stock_sock = |k: ConnKind| dir.path().join(k.name());
    let stock_listen_anvil = UnixListener::bind(stock_sock(ConnKind::Anvil))?;
    let stock_listen_penalty = UnixListener::bind(stock_sock(ConnKind::AnvilAuthPenalty))?;
    let (m_r, m_w) = pipe2(OFlag::O_CLOEXEC)?;
    fcntl(m_r.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    let (s_r, s_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (st_r, st_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (dead_r, dead_w) = pipe2(OFlag::O_CLOEXEC)?;
    let null = crate::sys::dev_null;
    let std_fds = [null()?, null()?, io::stderr().as_fd().try_clone_to_owned()?];
    let plan = vec![
        (null()?, 3),
        (fdpass, MASTER_ANVIL_LOG_FDPASS_FD),
        (st_w, MASTER_STATUS_FD),
        (dead_w, MASTER_DEAD_FD),
        (m_r, MASTER_LISTEN_FD_FIRST),
        (s_r, MASTER_LISTEN_FD_FIRST + 1),
        (
            OwnedFd::from(stock_listen_anvil),
            MASTER_LISTEN_FD_FIRST + 2,
        ),
        (
            OwnedFd::from(stock_listen_penalty),
            MASTER_LISTEN_FD_FIRST + 3,
        ),
    ];
    let mut child = spawn_with_layout(&mut Command::new(&opts.stock), std_fds, plan)?;
    let child_pid = child.id() as i32;
    shared.record(EventKind::Process(ProcessAction::Start { restarted }));

    // Status relay: stock's records, re-signed with our pid and generation.
    let own_pid = std::process::id() as i32;
    std::thread::spawn(move || {
        let mut r = File::from(st_r);
        let mut out = status_out;
        let mut rec = [0u8; STATUS_RECORD_LEN];
        while r.read_exact(&mut rec).is_ok() {
            if let Some(s) = StatusRecord::decode(&rec) {
                let mine = StatusRecord {
                    pid: own_pid,
                    generation,
                    available_count: s.available_count,
                };
                let _ = out.write_all(&mine.encode());
            }
        }
    });

    // Master-dead watcher: an error on fd 6 means the master is gone.
    let dead_r = Arc::new(Mutex::new(Some(dead_r)));
    {
        let shared = shared.clone();
        let dead_r = dead_r.clone();
        std::thread::spawn(move || {
            let mut fds = [PollFd::new(dead.as_fd(), PollFlags::empty())];
            loop {
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) if fds[0].revents().is_some_and(|r| !r.is_empty()) => break,
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return,
                }
            }
            shared.record(EventKind::Process(ProcessAction::MasterDead));
            shared.stop_accepting.store(true, Ordering::SeqCst);
            dead_r.lock().unwrap().take();
        });
    }

    // Signals from the master, forwarded to stock.
    {
        let shared = shared.clone();
        std::thread::spawn(move || forward_signals(shared, child_pid));
    }

    for (fd, to_stock, kind) in [
        (master_pipe, m_w, ConnKind::MasterPipe),
        (shared_pipe, s_w, ConnKind::SharedPipe),
    ] {
        let shared = shared.clone();
        let id = shared.new_conn(kind);
        std::thread::spawn(move || serve_pipe(&shared, &id, kind, fd, to_stock));
    }
    for (listener, kind) in [
        (listen_anvil, ConnKind::Anvil),
        (listen_penalty, ConnKind::AnvilAuthPenalty),
    ] {
        let shared = shared.clone();
        let path = stock_sock(kind);
        std::thread::spawn(move || accept_loop(&shared, listener, kind, &path));
    }

    let status = child.wait()?;
    let how = exit_kind(status);
    shared.record(EventKind::Process(ProcessAction::Exit(how)));
    *shared.exited.lock().unwrap() = true;
    shared.exited_cv.notify_all();
    // Let the connection threads record the closes stock's exit caused.
    for _ in 0..200 {
        if shared.open_conns.load(Ordering::SeqCst) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(dead_r);
    Ok(how)
}

fn forward_signals(shared: Arc<Shared>, child: i32) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        let kinds = [
            libc::SIGQUIT,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGUSR1,
        ];
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for k in kinds {
            let Ok(mut s) = signal(SignalKind::from_raw(k)) else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(k).is_err() {
                        break;
                    }
                }
            });
        }
        while let Some(k) = rx.recv().await {
            if *shared.exited.lock().unwrap() {
                continue;
            }
            shared.record(EventKind::Process(ProcessAction::Signal(k)));
            if k == libc::SIGQUIT {
                shared.stop_accepting.store(true, Ordering::SeqCst);
            }
            if let Ok(sig) = nix::sys::signal::Signal::try_from(k) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), sig);
            }
        }
    });
}

fn serve_pipe(shared: &Shared, id: &str, kind: ConnKind, from_master: OwnedFd, to_stock: OwnedFd) {
    let mut to_stock = File::from(to_stock);
    let mut buf = [0u8; 4096];
    loop {
        let (stock_gone, readable) = {
            let mut fds = [
                PollFd::new(from_master.as_fd(), PollFlags::POLLIN),
                PollFd::new(to_stock.as_fd(), PollFlags::empty()),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            (
                fds[1].revents().is_some_and(|r| !r.is_empty()),
                fds[0].revents().is_some_and(|r| !r.is_empty()),
            )
        };
        if stock_gone {
            shared.wait_exit_briefly();
            shared.conn(id, kind, ConnAction::CloseByAnvil);
            return;
        }
        if !readable {
            continue;
        }
        match nix::unistd::read(from_master.as_raw_fd(), &mut buf) {
            Ok(0) => {
                shared.conn(id, kind, ConnAction::CloseByClient);
                return;
            }
            Ok(n) => {
                shared.conn(id, kind, ConnAction::ClientToAnvil(buf[..n].to_vec()));
                if to_stock.write_all(&buf[..n]).is_err() {
                    shared.wait_exit_briefly();
                    shared.conn(id, kind, ConnAction::CloseByAnvil);
                    return;
                }
            }
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                shared.conn(id, kind, ConnAction::CloseByClient);
                return;
            }
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: UnixListener, kind: ConnKind, stock_path: &Path) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !shared.stop_accepting.load(Ordering::SeqCst) {
        let ready = {
            let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            matches!(poll(&mut fds, PollTimeout::from(100u16)), Ok(n) if n > 0)
        };
        if !ready {
            continue;
        }
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let shared = shared.clone();
                let path = stock_path.to_path_buf();
                std::thread::spawn(move || serve_socket(&shared, kind, client, &path));
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn serve_socket(shared: &Arc<Shared>, kind: ConnKind, mut client: UnixStream, stock_path: &Path) {
    let id = shared.new_conn(kind);
    let Ok(mut stock) = UnixStream::connect(stock_path) else {
        shared.conn(&id, kind, ConnAction::CloseByAnvil);
        return;
    };
    let done = Arc::new(Mutex::new(false));
    let (Ok(mut client_r), Ok(mut stock_w)) = (client.try_clone(), stock.try_clone()) else {
        return;
    };
    {
        let shared = shared.clone();
        let id = id.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match client_r.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let mut d = done.lock().unwrap();
                        if !*d {
                            *d = true;
                            shared.conn(&id, kind, ConnAction::CloseByClient);
                        }
                        let _ = stock_w.shutdown(Shutdown::Write);
                        return;
                    }
                    Ok(n) => {
                        shared.conn(&id, kind, ConnAction::ClientToAnvil(buf[..n].to_vec()));
                        let _ = stock_w.write_all(&buf[..n]);
                    }
                }
            }
        });
    }
    let mut buf = [0u8; 4096];
    loop {
        match stock.read(&mut buf) {
            Ok(n) if n > 0 => {
                shared.conn(
                    &id,
                    kind,
                    ConnAction::AnvilToClient(vec![Piece::Bytes(buf[..n].to_vec())]),
                );
                let _ = client.write_all(&buf[..n]);
            }
            _ => {
                if !*done.lock().unwrap() {
                    shared.wait_exit_briefly();
                }
                let mut d = done.lock().unwrap();
                if !*d {
                    *d = true;
                    shared.conn(&id, kind, ConnAction::CloseByAnvil);
                }
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Turns a raw proxy capture into a corpus transcript: times relative to the first event,
/// connections numbered 1, 2, … in order of appearance, anvil->client data split into one
/// event per line, unix timestamps in replies replaced by markers.
pub fn finish(raw: &Transcript, comments: Vec<String>) -> Transcript {
    let t0 = raw.events.first().map(|e| e.time).unwrap_or(0.0);
    let t_end = raw.events.last().map(|e| e.time).unwrap_or(t0);
    let base = t0.floor() as i64;
    let window = (base, t_end.ceil() as i64);
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut pending: HashMap<String, Vec<u8>> = HashMap::new();
    let mut events = Vec::new();
    for e in &raw.events {
        let time = ((e.time - t0) * 1000.0).round() / 1000.0;
        let EventKind::Conn { id, kind, action } = &e.what else {
            events.push(Event {
                time,
                what: e.what.clone(),
            });
            continue;
        };
        let n = ids.len() + 1;
        let new_id = ids
            .entry(id.clone())
            .or_insert_with(|| n.to_string())
            .clone();
        let mut push = |action: ConnAction| {
            events.push(Event {
                time,
                what: EventKind::Conn {
                    id: new_id.clone(),
                    kind: *kind,
                    action,
                },
            })
        };
        match action {
            ConnAction::AnvilToClient(p) => {
                let buf = pending.entry(id.clone()).or_default();
                buf.extend(super::transcript::plain_bytes(p).unwrap_or_default());
                while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    push(ConnAction::AnvilToClient(normalise_reply(
                        &line[..line.len() - 1],
                        base,
                        window,
                    )));
                }
            }
            ConnAction::CloseByAnvil | ConnAction::CloseByClient => {
                if let Some(rest) = pending.remove(id).filter(|r| !r.is_empty()) {
                    push(ConnAction::AnvilToClient(normalise_reply(
                        &rest, base, window,
                    )));
                }
                push(action.clone());
            }
            other => push(other.clone()),
        }
    }
    let lines = vec![0; events.len()];
    Transcript {
        comments,
        events,
        lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_renumbers_splits_replies_and_marks_timestamps() {
        let raw = "foreman-anvil-transcript 1\n\
1795899183.400000 - process start\n\
1795899183.500000 77.1 shared-pipe open\n\
1795899186.000000 77.3 anvil-auth-penalty open\n\
1795899186.100000 77.3 anvil-auth-penalty client->anvil PENALTY-GET\\x09x\\x0aPENALTY-DUMP\\x0a\n\
1795899186.200000 77.3 anvil-auth-penalty anvil->client 2 1795899185\\x0ax\\x092\n\
1795899186.300000 77.3 anvil-auth-penalty anvil->client \\x091795899185\\x091795899186\\x0a\\x0a\n\
1795899187.000000 77.3 anvil-auth-penalty close-by-client\n";
        let t = finish(&Transcript::parse(raw).unwrap(), vec!["c".into()]);
        let text = t.render(3);
        let want =
            "foreman-anvil-transcript 1\n# c\n0.000 - process start\n0.100 1 shared-pipe open\n\
2.600 2 anvil-auth-penalty open\n\
2.700 2 anvil-auth-penalty client->anvil PENALTY-GET\\x09x\\x0aPENALTY-DUMP\\x0a\n\
2.800 2 anvil-auth-penalty anvil->client 2 {ts+2}\n\
2.900 2 anvil-auth-penalty anvil->client x\\x092\\x09{ts+2}\\x09{ts+3}\n\
2.900 2 anvil-auth-penalty anvil->client\n\
3.600 2 anvil-auth-penalty close-by-client\n";
        assert_eq!(text, want);
    }
}
