//! The tokio shell around [`super::session`]: accepts socket clients, reads the master and
//! shared pipes, runs the penalty timer and the registry upkeep (every [`UPKEEP_INTERVAL`]
//! while the registry holds anything: expired claims are dropped and logged, old arrival
//! history forgotten, [`super::registry::Registry::upkeep`]), writes status records to
//! fd 5 and log lines to fd 2, exits when the master-dead pipe (fd 6) reports an error and no socket client is left.
//! Runs either under a Dovecot master (fds of master-interface.md §5.1 / anvil-protocol.md
//! §1.2) or standalone on sockets it binds itself. Design note: `docs/anvil-server.md`.
//!
//! One current-thread runtime; the [`Anvil`] tables, the logger and one set of scratch
//! buffers live in a single [`Shared`] behind `Rc`, borrowed only between awaits. A
//! connection task reads up to [`READ_CHUNK`] bytes at once into the shared input buffer
//! (after its own unconsumed tail, which is always under one line), hands every buffered
//! byte to [`Session::feed`], writes the replies straight from the shared output buffer, and
//! keeps only what the socket did not take. So an idle connection holds no buffer at all,
//! and a pipelining client costs one `read` per 64 KiB. A client whose unsent replies exceed
//! [`OUTPUT_CAP`] is not read again until they drain.
//!
//! No protocol rule lives here: framing, handshake, commands and their errors are all
//! [`Session`]'s.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::socket::MsgFlags;
use tokio::io::unix::AsyncFd;
use tokio::io::{Interest, Ready};
use tokio::net::unix::pipe;
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};

use super::registry::{Policy, Registry, DEFAULT_CLAIM_TTL};
use super::session::{ConnKind, LogBuf, Session};
use super::{Anvil, UnixMillis};
use crate::logging::{LogFormat, Logger};
use crate::master_compat::child_env::{ChildEnv, ChildEnvError};
use crate::sys::{self, FdPass, PrivDrop, PrivDropOutcome, SysError};
use crate::wire::line::MAX_LINE;
use crate::wire::log::Level;
use crate::wire::status::StatusRecord;

/// Bytes read from a connection at once.
pub const READ_CHUNK: usize = 64 * 1024;
/// Unsent reply bytes above which a client is not read until they drain.
pub const OUTPUT_CAP: usize = 1024 * 1024;
/// A drained per-connection output buffer larger than this is freed.
const KEEP_OUTPUT_CAPACITY: usize = 64 * 1024;
/// Pause after an accept() failure such as EMFILE, so it cannot spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How often the registry's upkeep runs while the registry holds anything.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);
/// The log prefix stock anvil sets.
const LOG_PREFIX: &str = "anvil: ";

/// Standalone mode: no master, sockets bound by Foreman.
#[derive(Debug, Clone)]
pub struct StandaloneOptions {
    /// The main socket (`anvil`).
    pub socket: PathBuf,
    /// The auth penalty socket (`anvil-auth-penalty`), if wanted.
    pub penalty_socket: Option<PathBuf>,
    /// The registry's claim lifetime (`docs/anvil-extensions.md`), ms.
    pub claim_ttl: UnixMillis,
}

/// Errors that stop the anvil server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not started by a Dovecot master: {0}")]
    NoMaster(String),
    /// The master's environment is unusable.
    #[error("{0}")]
    Env(ChildEnvError),
    /// Inherited fds or privilege drop.
    #[error("{0}")]
    Sys(#[from] SysError),
    /// A standalone socket could not be bound.
    #[error("bind({path}) failed: {source}")]
    Bind { path: PathBuf, source: io::Error },
    /// A standalone socket path is served by a live process.
    #[error("{0}: another process is already listening there")]
    InUse(PathBuf),
}

/// Wall-clock milliseconds since the epoch (the only clock the tables see).
fn now_ms() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as UnixMillis)
}

/// Runs a standalone anvil until SIGTERM / SIGINT.
pub fn run_standalone(opts: StandaloneOptions) -> Result<(), ServerError> {
    let mut logger = Logger::new(LogFormat::Plain, LOG_PREFIX, false);
    if let Err(e) = sys::raise_nofile_limit() {
        logger.log(
            Level::Warning,
            format!("setrlimit(RLIMIT_NOFILE) failed: {e}").as_bytes(),
        );
    }
    let mut paths = vec![opts.socket];
    paths.extend(opts.penalty_socket);
    let mut bound = Vec::new();
    // Bound only once the signal handlers are in place: a client that sees the socket may
    // send SIGTERM right away.
    let result = run(|| {
        let mut listeners = Vec::new();
        for path in &paths {
            listeners.push(bind_standalone(path)?);
            bound.push(path.clone());
        }
        Ok(Setup {
            listeners,
            master_pipe: None,
            shared_pipe: None,
            status: None,
            master_dead: None,
            log_fdpass: None,
            client_limit: None,
            anvil_restarted: false,
            claim_ttl: opts.claim_ttl,
            logger,
        })
    });
    for path in &bound {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Binds a unix socket, replacing a stale socket file but never a live one.
fn bind_standalone(path: &Path) -> Result<StdUnixListener, ServerError> {
    match StdUnixListener::bind(path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(|source| ServerError::Bind {
                path: path.to_owned(),
                source,
            })?;
            StdUnixListener::bind(path).map_err(|source| ServerError::Bind {
                path: path.to_owned(),
                source,
            })
        }
        Err(source) => Err(ServerError::Bind {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Runs as the anvil service of a Dovecot master (stock `dovecot` or `foreman master`).
pub fn run_under_master() -> Result<(), ServerError> {
    let env = ChildEnv::from_process().map_err(|e| match e {
        ChildEnvError::NotUnderMaster => ServerError::NoMaster(
            "GENERATION is not set (run standalone with --socket PATH)".into(),
        ),
        other => ServerError::Env(other),
    })?;
    let pid = std::process::id();
    let mut logger = Logger::for_service(&env, LOG_PREFIX);
    let fds = sys::take_anvil_fds(env.socket_count)?;
    if let Err(e) = sys::raise_nofile_limit() {
        logger.log(
            Level::Warning,
            format!("setrlimit(RLIMIT_NOFILE) failed: {e}").as_bytes(),
        );
    }
    let listeners = fds
        .listeners
        .into_iter()
        .map(StdUnixListener::from)
        .collect();

    // Every fd is taken. Signal handlers go in next (inside `run`), then privileges are
    // dropped, as stock anvil does after its setup.
    run(move || {
        drop_privileges(&env, &mut logger)?;
        Ok(Setup {
            listeners,
            master_pipe: Some(fds.master_pipe),
            shared_pipe: Some(fds.shared_pipe),
            status: Some(StatusSetup {
                fd: fds.status,
                pid: pid as i32,
                generation: env.generation,
            }),
            master_dead: Some(fds.master_dead),
            log_fdpass: Some(fds.log_fdpass),
            client_limit: Some(env.client_limit),
            anvil_restarted: env.anvil_restarted,
            claim_ttl: DEFAULT_CLAIM_TTL,
            logger,
        })
    })
}

/// setgid, setgroups, chroot, setuid from the `RESTRICT_*` variables.
fn drop_privileges(env: &ChildEnv, logger: &mut Logger) -> Result<(), ServerError> {
    let r = &env.restrict;
    let mut extra_groups = r.extra_groups.clone();
    extra_groups.extend(r.gid_priv);
    let outcome = sys::drop_privileges(PrivDrop {
        chroot: r.chroot.as_deref(),
        uid: r.uid,
        gid: r.gid,
        extra_groups: &extra_groups,
    })?;
    if let PrivDropOutcome::Skipped(why) = outcome {
        logger.log(Level::Info, format!("privilege drop: {why}").as_bytes());
    }
    Ok(())
}

/// Everything the event loop starts from, in either mode.
struct Setup {
    listeners: Vec<StdUnixListener>,
    master_pipe: Option<OwnedFd>,
    shared_pipe: Option<OwnedFd>,
    status: Option<StatusSetup>,
    master_dead: Option<OwnedFd>,
    log_fdpass: Option<OwnedFd>,
    /// `None`: unlimited (standalone).
    client_limit: Option<u32>,
    anvil_restarted: bool,
    claim_ttl: UnixMillis,
    logger: Logger,
}

struct StatusSetup {
    fd: OwnedFd,
    pid: i32,
    generation: u32,
}

/// The signals the event loop handles, registered before anything is visible to clients.
struct Signals {
    term: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// Starts the runtime, installs the signal handlers, then calls `prepare` (bind or drop
/// privileges) and serves.
fn run(prepare: impl FnOnce() -> Result<Setup, ServerError>) -> Result<(), ServerError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let signals = Signals {
            term: signal(SignalKind::terminate())?,
            quit: signal(SignalKind::quit())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        };
        let setup = prepare()?;
        // `serve` runs as a task of its own: the LocalSet polls the future it was given
        // every time any local task is woken, and polling `serve`'s select over the
        // signals on every request cost ~700 instructions per LOOKUP round trip. A join
        // handle is cheap to poll.
        match tokio::task::spawn_local(serve(setup, signals)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(ServerError::Io(io::Error::other(e))),
        }
    })
}

/// Buffers shared by every connection: used only inside one synchronous step.
struct Scratch {
    /// A connection's tail, then freshly read bytes.
    input: Vec<u8>,
    /// Replies produced by one feed.
    out: Vec<u8>,
    /// Log lines produced by one feed.
    log: LogBuf,
}

/// The state every task sees.
struct Shared {
    anvil: RefCell<Anvil>,
    logger: RefCell<Logger>,
    scratch: RefCell<Scratch>,
    anvil_restarted: bool,
    client_limit: Option<u32>,
    /// Connected socket clients (pipes do not count).
    clients: Cell<u32>,
    /// Listeners closed for good (master gone, SIGQUIT).
    stopped: Cell<bool>,
    /// Exit once no socket client is left (master gone).
    exit_when_idle: Cell<bool>,
    /// Whether accepting is allowed now; accept loops watch it.
    gate: watch::Sender<bool>,
    /// The status pipe (under a master).
    status: Option<Status>,
    /// The penalty deadline the timer task last saw.
    penalty_seen: Cell<Option<UnixMillis>>,
    penalty_changed: Notify,
    /// The upkeep task waits for the registry to hold something.
    upkeep_waiting: Cell<bool>,
    registry_used: Notify,
    exit: Notify,
}

impl Shared {
    fn log(&self, level: Level, text: impl AsRef<[u8]>) {
        self.logger.borrow_mut().log(level, text.as_ref());
    }

    /// The status record's `available_count`.
    fn available_count(&self) -> u32 {
        if self.stopped.get() {
            return 0;
        }
        self.client_limit
            .map_or(u32::MAX, |l| l.saturating_sub(self.clients.get()))
    }

    fn update_gate(&self) {
        let open = !self.stopped.get() && self.available_count() > 0;
        self.gate
            .send_if_modified(|g| std::mem::replace(g, open) != open);
    }

    fn client_joined(&self) {
        self.clients.set(self.clients.get() + 1);
        self.update_gate();
        self.update_status();
    }

    fn client_left(&self) {
        self.clients.set(self.clients.get() - 1);
        self.update_gate();
        self.update_status();
        self.maybe_exit();
    }

    /// Closes the listeners for good; the status goes to 0.
    fn close_listeners(&self) {
        if !self.stopped.replace(true) {
            self.update_gate();
            self.update_status();
        }
    }

    /// The master is gone: stop accepting, exit when the last socket client leaves.
    fn stop(&self) {
        self.close_listeners();
        self.exit_when_idle.set(true);
        self.maybe_exit();
    }

    /// Reports the current `available_count` on fd 5 (rate limited), synchronously with the
    /// change, as stock does.
    fn update_status(&self) {
        if let Some(status) = &self.status {
            status.update(self.available_count(), &self.logger);
        }
    }

    fn maybe_exit(&self) {
        if self.exit_when_idle.get() && self.clients.get() == 0 {
            self.exit.notify_one();
        }
    }

    /// Wakes the penalty timer task if a feed changed the table's deadline.
    fn note_penalty_deadline(&self, anvil: &Anvil) {
        let deadline = anvil.penalty.next_deadline();
        if deadline != self.penalty_seen.get() {
            self.penalty_seen.set(deadline);
            self.penalty_changed.notify_one();
        }
    }

    /// Wakes the upkeep task if it waits and a feed filled the registry.
    fn note_registry(&self, anvil: &Anvil) {
        if self.upkeep_waiting.get() && !anvil.registry.is_empty() {
            self.upkeep_waiting.set(false);
            self.registry_used.notify_one();
        }
    }
}

async fn serve(setup: Setup, mut signals: Signals) -> Result<(), ServerError> {
    let (gate, _) = watch::channel(true);
    let standalone = setup.status.is_none();
    let shared = Rc::new(Shared {
        anvil: RefCell::new(Anvil {
            registry: Registry::new(Policy::Predictive, setup.claim_ttl),
            ..Anvil::default()
        }),
        logger: RefCell::new(setup.logger),
        scratch: RefCell::new(Scratch {
            input: vec![0; MAX_LINE + READ_CHUNK],
            out: Vec::new(),
            log: LogBuf::new(),
        }),
        anvil_restarted: setup.anvil_restarted,
        client_limit: setup.client_limit,
        clients: Cell::new(0),
        stopped: Cell::new(false),
        exit_when_idle: Cell::new(false),
        gate,
        status: match setup.status {
            Some(st) => Some(Status {
                tx: pipe::Sender::from_owned_fd(st.fd)?,
                pid: st.pid,
                generation: st.generation,
                limiter: Cell::new(StatusLimiter::default()),
                deferred: Cell::new(None),
                blocked: Cell::new(false),
                broken: Cell::new(false),
                wake: Notify::new(),
            }),
            None => None,
        },
        penalty_seen: Cell::new(None),
        penalty_changed: Notify::new(),
        upkeep_waiting: Cell::new(false),
        registry_used: Notify::new(),
        exit: Notify::new(),
    });

    for (fd, kind) in [
        (setup.master_pipe, ConnKind::MASTER_PIPE),
        (setup.shared_pipe, ConnKind::SHARED_PIPE),
    ] {
        if let Some(fd) = fd {
            let rx = pipe::Receiver::from_owned_fd(fd)?;
            tokio::task::spawn_local(serve_conn(shared.clone(), PipeIo(rx), kind, None));
        }
    }
    for listener in setup.listeners {
        listener.set_nonblocking(true)?;
        tokio::task::spawn_local(accept_loop(
            shared.clone(),
            UnixListener::from_std(listener)?,
        ));
    }
    tokio::task::spawn_local(penalty_timer(shared.clone()));
    tokio::task::spawn_local(registry_upkeep(shared.clone()));
    if let Some(fd) = setup.master_dead {
        tokio::task::spawn_local(watch_master_dead(shared.clone(), fd));
    }
    if let Some(fd) = setup.log_fdpass {
        tokio::task::spawn_local(receive_log_fds(shared.clone(), fd));
    }
    if shared.status.is_some() {
        tokio::task::spawn_local(status_task(shared.clone()));
        // The first record marks the end of initialisation.
        shared.update_status();
    }

    loop {
        tokio::select! {
            _ = shared.exit.notified() => return Ok(()),
            _ = signals.term.recv() => return Ok(()),
            _ = signals.int.recv() => {
                // Standalone: Ctrl-C. Under a master: the idle-kill request, honoured
                // only when no socket client is connected.
                if standalone || shared.clients.get() == 0 {
                    return Ok(());
                }
            }
            _ = signals.quit.recv() => {
                if standalone {
                    shared.stop();
                } else {
                    shared.close_listeners();
                }
            }
            _ = signals.hup.recv() => {}
        }
    }
}

/// Accepts socket clients while the gate is open; returns (closing the listener) once the
/// listeners are closed for good.
async fn accept_loop(shared: Rc<Shared>, listener: UnixListener) {
    let mut gate = shared.gate.subscribe();
    loop {
        if shared.stopped.get() {
            return;
        }
        if !*gate.borrow_and_update() {
            if gate.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            biased;
            changed = gate.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match SocketIo::new(stream) {
                    Ok(io) => {
                        let guard = ClientGuard::new(shared.clone());
                        tokio::task::spawn_local(serve_conn(
                            shared.clone(),
                            io,
                            ConnKind::SOCKET,
                            Some(guard),
                        ));
                    }
                    Err(e) => shared.log(Level::Error, format!("accept(): register socket: {e}")),
                },
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    shared.log(Level::Error, format!("accept() failed: {e}"));
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
}

/// Counts one socket client for as long as it lives.
struct ClientGuard(Rc<Shared>);

impl ClientGuard {
    fn new(shared: Rc<Shared>) -> ClientGuard {
        shared.client_joined();
        ClientGuard(shared)
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.client_left();
    }
}

/// The byte transport of one connection: a socket, or a pipe (read only).
trait ConnIo {
    async fn ready(&self, interest: Interest) -> io::Result<Ready>;
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

/// A client socket, registered for writability only while replies wait for the peer.
///
/// Registered for both (as tokio's `UnixStream` is, edge-triggered), every reply the client
/// reads raises a write-space edge that wakes the idle event loop for nothing: one spurious
/// wake-up per LOOKUP round trip, which halved single-client LOOKUP throughput. Writes go
/// straight to the socket; only a write that would block switches the registration to
/// read+write until the backlog drains.
struct SocketIo {
    fd: RefCell<Option<AsyncFd<OwnedFd>>>,
    /// Registered with WRITABLE interest too.
    watching_writes: Cell<bool>,
}

impl SocketIo {
    fn new(stream: UnixStream) -> io::Result<SocketIo> {
        // into_std deregisters from tokio and keeps the socket non-blocking.
        let fd = OwnedFd::from(stream.into_std()?);
        Ok(SocketIo {
            fd: RefCell::new(Some(sys::async_fd(fd, Interest::READABLE)?)),
            watching_writes: Cell::new(false),
        })
    }

    /// Re-registers the socket with `interest` (deregisters, registers anew).
    fn register(&self, interest: Interest) -> io::Result<()> {
        let mut slot = self.fd.borrow_mut();
        let Some(old) = slot.take() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        *slot = Some(sys::async_fd(old.into_inner(), interest)?);
        self.watching_writes.set(interest.is_writable());
        Ok(())
    }

    fn with_fd<R>(&self, f: impl FnOnce(&AsyncFd<OwnedFd>) -> io::Result<R>) -> io::Result<R> {
        match self.fd.borrow().as_ref() {
            Some(fd) => f(fd),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl ConnIo for SocketIo {
    // The shared borrow lives across the await, and that is sound here: the only mutable
    // borrow is `register`, called solely from `ready` before it borrows, and one task owns
    // the connection (try_read/try_write borrow immutably).
    #[allow(clippy::await_holding_refcell_ref)]
    async fn ready(&self, interest: Interest) -> io::Result<Ready> {
        if interest.is_writable() != self.watching_writes.get() {
            let wanted = if interest.is_writable() {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            self.register(wanted)?;
        }
        let fd = self.fd.borrow();
        let Some(fd) = fd.as_ref() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let guard = fd.ready(interest).await?;
        Ok(guard.ready())
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // try_io clears the read readiness on WouldBlock. A short read deliberately does not
        // clear it (as tokio's own streams do): the loop's next read usually fails with
        // EAGAIN, but under load it often finds the client's next request already there and
        // skips a trip through epoll. Clearing on a short read was measured (server CPU per
        // LOOKUP round trip, 8 clients): 3.1-3.45 us kept, 3.8-4.15 us cleared.
        self.with_fd(|fd| fd.try_io(Interest::READABLE, |s| recv(s, buf)))
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.with_fd(|fd| {
            if self.watching_writes.get() {
                fd.try_io(Interest::WRITABLE, |s| send(s, buf))
            } else {
                send(fd.get_ref(), buf)
            }
        })
    }
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    nix::sys::socket::recv(fd.as_raw_fd(), buf, MsgFlags::empty()).map_err(io::Error::from)
}

/// MSG_NOSIGNAL: a vanished peer is EPIPE, never SIGPIPE.
fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    nix::sys::socket::send(fd.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
}

struct PipeIo(pipe::Receiver);

impl ConnIo for PipeIo {
    async fn ready(&self, interest: Interest) -> io::Result<Ready> {
        self.0.ready(interest).await
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
    /// A FIFO has no output stream: anything written is dropped.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
}

/// One connection's own state between reads.
struct Conn {
    session: Session,
    /// Unconsumed input: a partial line (under [`MAX_LINE`]), or, when `backlog` is set,
    /// complete lines held back because the peer was not taking replies.
    tail: Vec<u8>,
    /// `tail` holds complete lines to handle before reading again.
    backlog: bool,
    /// Replies the peer has not taken yet.
    pending: Vec<u8>,
    /// A write failed: further replies are dropped (stock ignores write errors).
    write_failed: bool,
}

impl Conn {
    /// Writes as much of `pending` as the peer takes now.
    fn flush(&mut self, io: &impl ConnIo) {
        let mut pending = std::mem::take(&mut self.pending);
        let written = self.write_some(io, &pending);
        pending.drain(..written);
        self.pending = pending;
        if self.pending.is_empty() && self.pending.capacity() > KEEP_OUTPUT_CAPACITY {
            self.pending = Vec::new();
        }
    }

    /// Writes `data` (fresh replies, nothing pending before them) and queues what is left.
    fn send(&mut self, io: &impl ConnIo, data: &[u8]) {
        let written = self.write_some(io, data);
        if !self.write_failed {
            self.pending.extend_from_slice(&data[written..]);
        }
    }

    /// Non-blocking writes until done or the peer is full; returns the bytes written.
    fn write_some(&mut self, io: &impl ConnIo, data: &[u8]) -> usize {
        let mut off = 0;
        while off < data.len() && !self.write_failed {
            match io.try_write(&data[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.write_failed = true;
                    return data.len();
                }
            }
        }
        off
    }
}

enum Step {
    Continue,
    Close,
}

/// Serves one connection until EOF, an error or a protocol close.
async fn serve_conn(
    shared: Rc<Shared>,
    io: impl ConnIo,
    kind: ConnKind,
    _client: Option<ClientGuard>,
) {
    let mut conn = Conn {
        session: Session::new(kind, shared.anvil_restarted),
        tail: Vec::new(),
        backlog: false,
        pending: Vec::new(),
        write_failed: false,
    };
    loop {
        let backpressure = conn.pending.len() >= OUTPUT_CAP;
        if conn.backlog && !backpressure {
            // Lines held back earlier: handle them before reading more, letting other
            // tasks run in between.
            if let Step::Close = step(&shared, &mut conn, &io, false) {
                return;
            }
            tokio::task::yield_now().await;
            continue;
        }
        let interest = match (backpressure || conn.backlog, conn.pending.is_empty()) {
            (true, _) => Interest::WRITABLE,
            (false, true) => Interest::READABLE,
            (false, false) => Interest::READABLE | Interest::WRITABLE,
        };
        let ready = match io.ready(interest).await {
            Ok(ready) => ready,
            Err(_) => return,
        };
        if interest.is_writable() && (ready.is_writable() || ready.is_write_closed()) {
            conn.flush(&io);
        }
        if interest.is_readable() && (ready.is_readable() || ready.is_read_closed()) {
            if let Step::Close = step(&shared, &mut conn, &io, true) {
                return;
            }
            // Let every other connection that is ready be served before this one reads
            // again, as stock's epoll loop serves all ready fds once per wake-up: the
            // immediate re-read made 8 clients' LOOKUP p99 1.5x stock's (137 vs 206 us),
            // with this yield it is level (134-141 vs 139-142 us).
            tokio::task::yield_now().await;
        }
    }
}

/// The synchronous core step: the held-back tail plus (if `read`) one read's bytes go
/// through the session line by line while the connection's unsent output stays under
/// [`OUTPUT_CAP`]; replies are written at once, the rest queued.
fn step(shared: &Shared, conn: &mut Conn, io: &impl ConnIo, read: bool) -> Step {
    let mut scratch = shared.scratch.borrow_mut();
    let Scratch { input, out, log } = &mut *scratch;
    let tail = conn.tail.len();
    input[..tail].copy_from_slice(&conn.tail);
    let mut len = tail;
    if read {
        match io.try_read(&mut input[tail..]) {
            Ok(0) => return Step::Close,
            Ok(n) => len += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Step::Continue;
            }
            // A read error ends the connection like EOF does (anvil-protocol.md §1.8).
            Err(_) => return Step::Close,
        }
    }
    let input = &input[..len];
    let (consumed, close) = {
        let mut anvil = shared.anvil.borrow_mut();
        let fed = feed_bounded(conn, &mut anvil, input, out, log);
        shared.note_penalty_deadline(&anvil);
        shared.note_registry(&anvil);
        fed
    };
    if !log.is_empty() {
        let mut logger = shared.logger.borrow_mut();
        for (level, text) in log.drain(..) {
            logger.log(level, &text);
        }
    }
    if !out.is_empty() {
        conn.send(io, out);
        out.clear();
    } else if !conn.pending.is_empty() {
        conn.flush(io);
    }
    if close {
        return Step::Close;
    }
    let rest = &input[consumed..];
    conn.backlog = memchr::memchr(b'\n', rest).is_some();
    conn.tail.clear();
    conn.tail.extend_from_slice(rest);
    if !conn.backlog && conn.tail.capacity() > KEEP_OUTPUT_CAPACITY {
        conn.tail = rest.to_vec();
    }
    Step::Continue
}

/// Feeds `input` to the session in one call that stops early once the unsent output
/// (`out`, or the connection's pending bytes) reaches [`OUTPUT_CAP`]: a pipelined batch of
/// dump requests cannot make the server buffer more than one reply beyond the cap.
/// Returns the bytes consumed and whether the connection must close.
fn feed_bounded(
    conn: &mut Conn,
    anvil: &mut Anvil,
    input: &[u8],
    out: &mut Vec<u8>,
    log: &mut LogBuf,
) -> (usize, bool) {
    let now = now_ms();
    if conn.session.kind().fifo {
        // A pipe has no output to bound: all of it in one call.
        let fed = conn.session.feed(anvil, now, input, out, log);
        out.clear();
        return (fed.consumed, fed.close);
    }
    // Replies go after anything still pending, in order. Only one of `out` and `pending`
    // grows during the call, so bounding the target bounds their sum.
    let target = if conn.pending.is_empty() {
        &mut *out
    } else {
        &mut conn.pending
    };
    let fed = conn
        .session
        .feed_bounded(anvil, now, input, target, log, OUTPUT_CAP);
    (fed.consumed, fed.close)
}

/// Runs [`super::PenaltyTable::on_timer`] at the table's deadline.
async fn penalty_timer(shared: Rc<Shared>) {
    loop {
        let deadline = shared.anvil.borrow().penalty.next_deadline();
        shared.penalty_seen.set(deadline);
        let Some(deadline) = deadline else {
            shared.penalty_changed.notified().await;
            continue;
        };
        let now = now_ms();
        if deadline <= now {
            shared.anvil.borrow_mut().penalty.on_timer(now);
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(deadline - now)) => {}
            _ = shared.penalty_changed.notified() => {}
        }
    }
}

/// Runs [`Registry::upkeep`] every [`UPKEEP_INTERVAL`] while the registry holds anything,
/// and logs each claim that expired without a release (its dispatcher died or hung).
async fn registry_upkeep(shared: Rc<Shared>) {
    loop {
        if shared.anvil.borrow().registry.is_empty() {
            shared.upkeep_waiting.set(true);
            shared.registry_used.notified().await;
            continue;
        }
        tokio::time::sleep(UPKEEP_INTERVAL).await;
        let done = shared.anvil.borrow_mut().registry.upkeep(now_ms());
        for e in done.expired {
            let mut text = format!(
                "registry: claim of pid {} (token {}) expired without a release",
                e.pid, e.token
            )
            .into_bytes();
            if let Some(user) = e.user {
                text.extend_from_slice(b", process kept bound to user ");
                text.extend_from_slice(&user);
            }
            shared.log(Level::Warning, text);
        }
    }
}

/// fd 6: an error or hang-up condition means the master is gone.
async fn watch_master_dead(shared: Rc<Shared>, fd: OwnedFd) {
    match sys::master_dead(fd).await {
        Ok(()) => shared.stop(),
        Err(e) => shared.log(Level::Error, format!("master-dead fd: {e}")),
    }
}

/// fd 4: replacement log fds from the master, each `dup2`ed onto fd 2.
async fn receive_log_fds(shared: Rc<Shared>, fd: OwnedFd) {
    let fd = match sys::async_fd(fd, Interest::READABLE) {
        Ok(fd) => fd,
        Err(e) => {
            shared.log(Level::Error, format!("log fd-pass socket: {e}"));
            return;
        }
    };
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return;
        };
        match sys::recv_passed_fd(fd.get_ref().as_fd()) {
            Ok(FdPass::Fd(new)) => match sys::replace_stderr(new) {
                Ok(()) => shared.logger.borrow_mut().stderr_replaced(),
                Err(e) => {
                    shared.log(
                        Level::Fatal,
                        format!("dup2(fd_read  log fd, stderr) failed: {e}"),
                    );
                    shared.exit.notify_one();
                    return;
                }
            },
            Ok(FdPass::NoFd) => {}
            // The master is gone: stop watching.
            Ok(FdPass::Eof) => return,
            Ok(FdPass::WouldBlock) => guard.clear_ready(),
            Err(e) => {
                shared.log(Level::Error, format!("fd_read(log fd) failed: {e}"));
                return;
            }
        }
    }
}

/// What to do with a new `available_count` (master-interface.md §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusDecision {
    /// Write it now.
    Send,
    /// Equal to the last record sent.
    Skip,
    /// A record already went out this second: send from the 1 s timer.
    Defer,
}

/// Stock's status rate limit: at most one record per wall-clock second, except that
/// reaching 0 and leaving a sent 0 (and the first record) go out at once.
#[derive(Debug, Default, Clone, Copy)]
struct StatusLimiter {
    last_sent: Option<u32>,
    last_sent_sec: Option<u64>,
}

impl StatusLimiter {
    fn decide(&self, now: UnixMillis, value: u32) -> StatusDecision {
        if self.last_sent == Some(value) {
            return StatusDecision::Skip;
        }
        let important = value == 0 || matches!(self.last_sent, None | Some(0));
        if !important && self.last_sent_sec == Some(now / 1000) {
            StatusDecision::Defer
        } else {
            StatusDecision::Send
        }
    }

    fn sent(&mut self, now: UnixMillis, value: u32) {
        self.last_sent = Some(value);
        self.last_sent_sec = Some(now / 1000);
    }
}

/// The status pipe's writer state.
struct Status {
    tx: pipe::Sender,
    pid: i32,
    generation: u32,
    limiter: Cell<StatusLimiter>,
    /// The 1 s timer for a deferred record, when armed.
    deferred: Cell<Option<tokio::time::Instant>>,
    /// The pipe was full: the status task retries when it is writable.
    blocked: Cell<bool>,
    /// Writing failed for good (the master closed the pipe).
    broken: Cell<bool>,
    /// Wakes the status task (timer armed or pipe full).
    wake: Notify,
}

impl Status {
    fn update(&self, value: u32, logger: &RefCell<Logger>) {
        if self.blocked.get() || self.broken.get() {
            return;
        }
        let now = now_ms();
        let mut limiter = self.limiter.get();
        match limiter.decide(now, value) {
            StatusDecision::Skip => {}
            StatusDecision::Defer => {
                if self.deferred.get().is_none() {
                    let at = tokio::time::Instant::now() + Duration::from_secs(1);
                    self.deferred.set(Some(at));
                    self.wake.notify_one();
                }
            }
            StatusDecision::Send => {
                let record = StatusRecord {
                    pid: self.pid,
                    generation: self.generation,
                    available_count: value,
                }
                .encode();
                match self.tx.try_write(&record) {
                    Ok(n) if n == record.len() => {
                        limiter.sent(now, value);
                        self.limiter.set(limiter);
                        self.deferred.set(None);
                    }
                    Ok(n) => {
                        logger
                            .borrow_mut()
                            .error(format!("write(status) wrote {n} of 12 bytes"));
                        self.broken.set(true);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.blocked.set(true);
                        self.wake.notify_one();
                    }
                    // EPIPE: the master is gone; fd 6 tells the rest.
                    Err(_) => self.broken.set(true),
                }
            }
        }
    }
}

/// Runs the status pipe's timers: the deferred record and the retry after a full pipe.
async fn status_task(shared: Rc<Shared>) {
    let Some(status) = &shared.status else { return };
    loop {
        if status.broken.get() {
            return;
        }
        if status.blocked.get() {
            if status.tx.writable().await.is_err() {
                status.broken.set(true);
                return;
            }
            status.blocked.set(false);
            shared.update_status();
            continue;
        }
        match status.deferred.get() {
            Some(at) => tokio::select! {
                _ = tokio::time::sleep_until(at) => {
                    status.deferred.set(None);
                    shared.update_status();
                }
                _ = status.wake.notified() => {}
            },
            None => status.wake.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_first_record_and_important_changes_go_out_at_once() {
        let mut l = StatusLimiter::default();
        assert_eq!(l.decide(1_000, 1000), StatusDecision::Send);
        l.sent(1_000, 1000);
        // Same value: nothing.
        assert_eq!(l.decide(1_100, 1000), StatusDecision::Skip);
        // A normal change in the same second is deferred.
        assert_eq!(l.decide(1_500, 999), StatusDecision::Defer);
        // Reaching 0 is never deferred.
        assert_eq!(l.decide(1_600, 0), StatusDecision::Send);
        l.sent(1_600, 0);
        // Leaving a sent 0 is never deferred either.
        assert_eq!(l.decide(1_700, 1), StatusDecision::Send);
        l.sent(1_700, 1);
        assert_eq!(l.decide(1_800, 2), StatusDecision::Defer);
        // The next wall-clock second sends.
        assert_eq!(l.decide(2_000, 2), StatusDecision::Send);
    }
}
