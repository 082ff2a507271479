//! `foreman master`: the thin shell around [`Supervisor`]. It loads the configuration, creates
//! listeners, pipes and files, turns signals (signalfd), status pipes, readable listeners and
//! timers into [`Event`]s and executes the [`Action`]s (fork+exec via [`crate::sys::process`]).
//!
//! The loop is a plain level-triggered `poll(2)`: a listener is in the poll set only while the
//! supervisor says the service is listening, exactly as the stock master adds and removes
//! listeners from its epoll set; a level-triggered loop needs no re-arming after a spawn.

use std::collections::VecDeque;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::master_compat::config::{self, LoadOptions, MasterSettings, Mode, ServiceType};
use crate::master_compat::control::{ControlConn, ControlView};
use crate::master_compat::listeners;
use crate::master_compat::registry_client::{self, RegistryClient};
use crate::master_compat::services::{self, ProcessEnv, ServiceSet, SystemResolver};
use crate::master_compat::supervisor::{Action, Event, LogLevel, Report, ServiceId, Supervisor};
use crate::sys;
use crate::sys::process::{ExecPlan, PerPidSocket};
use crate::wire::anvil::VERSION_LINE as ANVIL_VERSION_LINE;

/// Exit code of a fatal start-up error (stock's FATAL_DEFAULT).
pub const EXIT_FATAL: u8 = 89;
/// Exit code of `stop`/`reload` when no master runs (EX_TEMPFAIL, as doveadm).
pub const EXIT_NOT_RUNNING: u8 = 75;
/// Name of the stock-acceptable config copy inside base_dir.
pub const STOCK_CONFIG_NAME: &str = "foreman-stock.conf";

/// Errors that end the master; the text is what the operator sees after `Fatal: `.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("{0}")]
    Config(String),
    #[error("Dovecot is already running with PID {pid} (read from {path})")]
    AlreadyRunning { pid: i32, path: String },
    #[error("Dovecot is not running (read from {0})")]
    NotRunning(String),
    #[error("{0}")]
    Services(#[from] services::ServiceError),
    #[error("{0}")]
    Listen(#[from] listeners::ListenError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl MasterError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            MasterError::NotRunning(_) => EXIT_NOT_RUNNING,
            _ => EXIT_FATAL,
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> MasterError {
    let context = context.into();
    move |source| MasterError::Io { context, source }
}

/// Options of `foreman master`.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub foreground: bool,
    /// `-p`: ask for the SSL key password at start (given to services with inet listeners
    /// as `SSL_KEY_PASSWORD`).
    pub ask_key_password: bool,
}

/// Asks for a password on the terminal (echo off; stdin when there is no terminal).
fn askpass(prompt: &str) -> Result<String, MasterError> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    use std::io::BufRead;
    let tty = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty");
    let mut line = String::new();
    match tty {
        Ok(mut tty) => {
            let saved = tcgetattr(&tty).ok();
            if let Some(t) = &saved {
                let mut quiet = t.clone();
                quiet.local_flags.remove(LocalFlags::ECHO);
                let _ = tcsetattr(&tty, SetArg::TCSAFLUSH, &quiet);
            }
            let _ = tty.write_all(prompt.as_bytes());
            let read = io::BufReader::new(&tty).read_line(&mut line);
            if let Some(t) = &saved {
                let _ = tcsetattr(&tty, SetArg::TCSAFLUSH, t);
            }
            let _ = tty.write_all(b"\n");
            read.map_err(io_err("read password"))?;
        }
        Err(_) => {
            sys::write_stderr(prompt.as_bytes());
            io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(io_err("read password"))?;
        }
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Loads and checks the configuration the way the master needs it.
pub fn load_settings(path: &Path) -> Result<(MasterSettings, config::Loaded), MasterError> {
    let loaded = config::load(
        &path.to_string_lossy(),
        LoadOptions {
            mode: Mode::Expand,
            foreman: true,
            ..Default::default()
        },
    );
    if let Some(first) = loaded.errors.first() {
        return Err(MasterError::Config(first.to_string()));
    }
    Ok((loaded.master_settings(), loaded))
}

fn pid_path(m: &MasterSettings) -> String {
    format!("{}/master.pid", m.base_dir)
}

/// The pid in `master.pid` if that process is alive.
fn running_pid(m: &MasterSettings) -> Option<i32> {
    let text = fs::read_to_string(pid_path(m)).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    (pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok())
        .then_some(pid)
}

/// `foreman master -c FILE stop`: SIGTERM, then wait up to 3 s for the pid to go.
pub fn stop(config: &Path) -> Result<(), MasterError> {
    let (m, _) = load_settings(config)?;
    let pid = running_pid(&m).ok_or_else(|| MasterError::NotRunning(pid_path(&m)))?;
    let _ = sys::process::send_signal(pid as u32, libc::SIGTERM);
    for _ in 0..30 {
        if running_pid(&m) != Some(pid) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

/// `foreman master -c FILE reload`: SIGHUP, no wait.
pub fn reload(config: &Path) -> Result<(), MasterError> {
    let (m, _) = load_settings(config)?;
    let pid = running_pid(&m).ok_or_else(|| MasterError::NotRunning(pid_path(&m)))?;
    sys::process::send_signal(pid as u32, libc::SIGHUP).map_err(io_err("kill"))
}

/// The master's own log: `<timestamp>master: <Level>: <text>` to `log_path`; with
/// `log_path = syslog` to syslog ([`crate::master_compat::syslog`]); stderr when neither can
/// be opened.
struct MasterLog {
    file: Option<fs::File>,
    syslog: Option<crate::master_compat::syslog::Syslog>,
    timestamp: String,
}

impl MasterLog {
    fn open(m: &MasterSettings) -> MasterLog {
        let file = (m.log_path != "syslog" && !m.log_path.is_empty())
            .then(|| {
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&m.log_path)
                    .ok()
            })
            .flatten();
        let syslog = (m.log_path == "syslog")
            .then(|| {
                crate::master_compat::syslog::Syslog::connect(
                    Path::new(crate::master_compat::syslog::DEV_LOG),
                    &m.syslog_facility,
                    &m.instance_name,
                )
                .ok()
            })
            .flatten();
        MasterLog {
            file,
            syslog,
            timestamp: m.log_timestamp.clone(),
        }
    }

    fn log(&mut self, level: LogLevel, text: &str) {
        if let Some(s) = &self.syslog {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            if s.send(
                &sys::process::strftime_local("%b %e %H:%M:%S", now),
                level,
                text,
            ) {
                return;
            }
        }
        let level = match level {
            LogLevel::Info => "Info",
            LogLevel::Warning => "Warning",
            LogLevel::Error => "Error",
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let line = format!(
            "{}master: {level}: {text}\n",
            sys::process::strftime_local(&self.timestamp, now)
        );
        match &mut self.file {
            Some(f) => {
                let _ = f.write_all(line.as_bytes());
            }
            None => sys::write_stderr(line.as_bytes()),
        }
    }
}

fn pipe_pair(nonblock_read: bool, nonblock_write: bool) -> Result<(OwnedFd, OwnedFd), MasterError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| MasterError::Io {
        context: "pipe()".into(),
        source: e.into(),
    })?;
    sys::set_nonblocking(r.as_fd(), nonblock_read).map_err(io_err("fcntl"))?;
    sys::set_nonblocking(w.as_fd(), nonblock_write).map_err(io_err("fcntl"))?;
    Ok((r, w))
}

/// What a listener fd is, to carry it over a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ListenerKey {
    Unix(String),
    Inet(String, u16),
}

/// Per-service objects owned by the master (§5.5), for one service list.
struct ServiceFds {
    listeners: Vec<(ListenerKey, OwnedFd)>,
    status_r: OwnedFd,
    status_w: OwnedFd,
    /// Both ends; `None` once closed (shutdown, reload).
    dead: Option<(OwnedFd, OwnedFd)>,
    /// Log pipe (read end for the log process, write end for children); none for log.
    log: Option<(OwnedFd, OwnedFd)>,
    /// Login-state file (login services).
    login_state: Option<OwnedFd>,
    listening: bool,
}

/// Global anvil objects (§11), kept across reloads.
struct AnvilFds {
    master_r: OwnedFd,
    master_w: OwnedFd,
    children_r: OwnedFd,
    children_w: OwnedFd,
    fdpass_child: OwnedFd,
    fdpass_master: OwnedFd,
    status_r: OwnedFd,
    status_w: OwnedFd,
    global_dead: Option<(OwnedFd, OwnedFd)>,
}

/// One service list (the configuration at start or after a reload) and its processes.
struct Gen {
    id: u64,
    m: MasterSettings,
    set: ServiceSet,
    sup: Supervisor,
    fds: Vec<ServiceFds>,
    /// The master→log control pipe; dropped when the list is retired.
    log_control: Option<(OwnedFd, OwnedFd)>,
    /// Control lines that did not fit into the pipe yet (sent when it is writable).
    control_pending: Vec<u8>,
    stock_config: String,
}

/// One `doveadm` connection on `$BASE/master`.
struct ControlClient {
    stream: std::os::unix::net::UnixStream,
    conn: ControlConn,
}

/// The current supervisor as the control socket sees it.
struct SupView<'a>(&'a Supervisor);

impl ControlView for SupView<'_> {
    fn services(&self) -> Vec<crate::master_compat::supervisor::ServiceStatus> {
        self.0.status(Instant::now())
    }
    fn processes(&self) -> Vec<crate::master_compat::supervisor::ProcessStatus> {
        self.0.process_status()
    }
    fn has_service(&self, name: &str) -> bool {
        self.0.service_id(name).is_some()
    }
    fn is_reuse_pool(&self, name: &str) -> bool {
        self.0
            .service_id(name)
            .is_some_and(|s| self.0.is_reuse_pool(s))
    }
}

struct Shell {
    config_path: PathBuf,
    control: std::os::unix::net::UnixListener,
    control_clients: Vec<ControlClient>,
    /// The last one is current; older ones are retired and kept until their processes exit.
    gens: Vec<Gen>,
    next_gen_id: u64,
    anvil: AnvilFds,
    devnull: OwnedFd,
    hostname: String,
    log: MasterLog,
    queue: VecDeque<(u64, Event)>,
    exit: bool,
    /// The foreman-anvil connection (reuse pools only).
    registry: RegistryClient,
    /// `-p`: the SSL key password.
    ssl_key_password: Option<String>,
}

/// Unix milliseconds of a monotonic instant (for registry reports).
fn unix_ms(t: Instant) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now.saturating_sub(Instant::now().saturating_duration_since(t).as_millis() as u64)
}

fn make_dir(path: &str, mode: u32, gid: Option<u32>) -> Result<(), MasterError> {
    let p = Path::new(path);
    if !p.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(p)
            .map_err(io_err(format!("mkdir({path})")))?;
    }
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod({path})")))?;
    if gid.is_some() {
        std::os::unix::fs::chown(p, None, gid).map_err(io_err(format!("chown({path})")))?;
    }
    Ok(())
}

fn login_gid(m: &MasterSettings) -> Option<u32> {
    use crate::master_compat::services::Resolver;
    SystemResolver.user(&m.default_login_user).map(|(_, g)| g)
}

/// Directories the services need: base_dir, state_dir, `empty`, `login`, `token-login`.
fn prepare_dirs(m: &MasterSettings, set: &ServiceSet) -> Result<(), MasterError> {
    let base = &m.base_dir;
    make_dir(base, 0o755, None)?;
    if !m.state_dir.is_empty() {
        make_dir(&m.state_dir, 0o750, None)?;
    }
    make_dir(&format!("{base}/empty"), 0o755, None)?;
    for dir in ["login", "token-login"] {
        let prefix = format!("{base}/{dir}/");
        let used = set.services.iter().any(|s| {
            s.unix
                .iter()
                .chain(&s.per_pid)
                .any(|u| u.path.to_string().starts_with(&prefix))
        });
        if used {
            make_dir(&format!("{base}/{dir}"), 0o750, login_gid(m))?;
        }
    }
    Ok(())
}

/// Writes the copy of the configuration stock processes read (Foreman's extensions removed).
fn write_stock_config(m: &MasterSettings, loaded: &config::Loaded) -> Result<String, MasterError> {
    let path = format!("{}/{STOCK_CONFIG_NAME}", m.base_dir);
    fs::write(&path, config::render::stock_copy(&loaded.tree.root))
        .map_err(io_err(format!("write {path}")))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).map_err(io_err("chmod"))?;
    Ok(path)
}

fn keyed(def: &services::ServiceDef, fds: Vec<OwnedFd>) -> Vec<(ListenerKey, OwnedFd)> {
    let keys = def
        .unix
        .iter()
        .map(|u| ListenerKey::Unix(u.path.to_string()))
        .chain(
            def.inet
                .iter()
                .map(|i| ListenerKey::Inet(i.address.clone(), i.port)),
        );
    keys.zip(fds).collect()
}

/// Runs the master until shutdown. Returns after the pid file is removed.
pub fn run(opts: &Options) -> Result<(), MasterError> {
    let config_path = fs::canonicalize(&opts.config).unwrap_or_else(|_| opts.config.clone());
    let (m, loaded) = load_settings(&config_path)?;
    let env: Vec<(String, String)> = std::env::vars().collect();
    let set = services::resolve(&m, &SystemResolver, &env)?;
    if let Some(pid) = running_pid(&m) {
        if pid != std::process::id() as i32 {
            return Err(MasterError::AlreadyRunning {
                pid,
                path: pid_path(&m),
            });
        }
    }
    let ssl_key_password = if opts.ask_key_password {
        Some(askpass("Give the password for SSL keys: ")?)
    } else {
        None
    };
    prepare_dirs(&m, &set)?;
    let stock_config = write_stock_config(&m, &loaded)?;
    let mut all_listeners = Vec::new();
    for def in &set.services {
        let fds = listeners::bind_service(def)
            .map_err(|e| MasterError::Config(format!("{e}\nFailed to start listeners")))?;
        all_listeners.push(keyed(def, fds));
    }
    let base = m.base_dir.clone();
    let control = listeners::bind_control(&format!("{base}/master"))
        .map_err(|e| MasterError::Config(format!("{e}\nFailed to start listeners")))?;
    let control = std::os::unix::net::UnixListener::from(control);
    std::env::set_current_dir(&base).map_err(io_err(format!("chdir({base})")))?;
    if !opts.foreground {
        nix::unistd::daemon(true, true).map_err(|e| MasterError::Io {
            context: "daemon()".into(),
            source: e.into(),
        })?;
    }
    sys::process::set_umask(0o077);
    let sigfd = sys::process::block_signals_fd(&[
        libc::SIGCHLD,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGUSR1,
    ])
    .map_err(io_err("signalfd"))?;
    let mut log = MasterLog::open(&m);
    log.log(
        LogLevel::Info,
        &format!(
            "Dovecot v{} (Foreman master) starting up for {}",
            services::DOVECOT_VERSION,
            if m.protocols.is_empty() {
                "none".to_owned()
            } else {
                m.protocols.join(", ")
            }
        ),
    );
    fs::write(pid_path(&m), format!("{}\n", std::process::id()))
        .map_err(io_err("write master.pid"))?;
    let _ = fs::set_permissions(pid_path(&m), fs::Permissions::from_mode(0o644));
    let link = format!("{base}/dovecot.conf");
    let _ = fs::remove_file(&link);
    let _ = std::os::unix::fs::symlink(&config_path, &link);

    let devnull: OwnedFd = crate::sys::dev_null().map_err(io_err("open /dev/null"))?;
    let (master_r, master_w) = pipe_pair(true, true)?;
    let (children_r, children_w) = pipe_pair(true, false)?;
    let (status_r, status_w) = pipe_pair(true, true)?;
    let (fdpass_child, fdpass_master) =
        std::os::unix::net::UnixStream::pair().map_err(io_err("socketpair"))?;
    let anvil = AnvilFds {
        master_r,
        master_w,
        children_r,
        children_w,
        fdpass_child: fdpass_child.into(),
        fdpass_master: fdpass_master.into(),
        status_r,
        status_w,
        global_dead: Some(pipe_pair(false, false)?),
    };
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    let gen = build_gen(0, m, set, all_listeners, stock_config, 1)?;
    let mut shell = Shell {
        config_path,
        control,
        control_clients: Vec::new(),
        gens: vec![gen],
        next_gen_id: 1,
        anvil,
        devnull,
        hostname,
        log,
        queue: VecDeque::from([(0, Event::Start)]),
        exit: false,
        registry: RegistryClient::new(format!("{base}/anvil")),
        ssl_key_password,
    };
    shell.run_loop(sigfd)
}

/// Creates the per-list pipes and files (§2.2 step 17) and the supervisor.
fn build_gen(
    id: u64,
    m: MasterSettings,
    set: ServiceSet,
    all_listeners: Vec<Vec<(ListenerKey, OwnedFd)>>,
    stock_config: String,
    first_generation: u32,
) -> Result<Gen, MasterError> {
    let (control_r, control_w) = pipe_pair(false, true)?;
    let mut hs = Vec::new();
    crate::wire::log::encode_handshake(b"MASTER", &mut hs);
    write_all_fd(control_w.as_fd(), &hs);
    let mut fds = Vec::new();
    for (i, (def, listeners)) in set.services.iter().zip(all_listeners).enumerate() {
        let (status_r, status_w) = pipe_pair(true, true)?;
        let dead = pipe_pair(false, false)?;
        let log_pipe = if i == set.log {
            None
        } else {
            let (r, w) = pipe_pair(false, true)?;
            let mut hs = Vec::new();
            crate::wire::log::encode_handshake(format!("{}: ", def.name).as_bytes(), &mut hs);
            write_all_fd(w.as_fd(), &hs);
            Some((r, w))
        };
        let login_state = if def.kind == ServiceType::Login {
            let f = tempfile::tempfile_in(&m.base_dir).map_err(io_err("login-master-notify"))?;
            Some(OwnedFd::from(f))
        } else {
            None
        };
        fds.push(ServiceFds {
            listeners,
            status_r,
            status_w,
            dead: Some(dead),
            log: log_pipe,
            login_state,
            listening: false,
        });
    }
    let mut sup = Supervisor::new(&set);
    sup.set_shutdown_clients(m.shutdown_clients);
    sup.set_next_generation(first_generation);
    Ok(Gen {
        id,
        m,
        set,
        sup,
        fds,
        log_control: Some((control_r, control_w)),
        control_pending: Vec::new(),
        stock_config,
    })
}

/// Writes as much of `bytes` as fits without blocking; returns how much was written.
fn write_some(fd: BorrowedFd<'_>, bytes: &[u8]) -> usize {
    let mut done = 0;
    while done < bytes.len() {
        match nix::unistd::write(fd, &bytes[done..]) {
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    done
}

/// Writes all of `bytes`; false if the fd would block or failed (nothing is retried).
fn write_all_fd(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

fn c(s: &str) -> CString {
    CString::new(s.replace('\0', "")).expect("no NUL")
}

#[derive(Clone, Copy)]
enum Src {
    Signal,
    Status(u64, ServiceId),
    AnvilStatus,
    Listener(ServiceId),
    AnvilDrain(bool),
    ControlAccept,
    ControlClient(usize),
    LogControlWritable(u64),
    Registry,
}

impl Shell {
    fn current(&self) -> &Gen {
        self.gens.last().expect("a current service list")
    }

    fn gen_index(&self, id: u64) -> Option<usize> {
        self.gens.iter().position(|g| g.id == id)
    }

    fn anvil_running(&self) -> bool {
        self.current().sup.anvil_running()
    }

    fn run_loop(&mut self, sigfd: OwnedFd) -> Result<(), MasterError> {
        loop {
            while let Some((gid, ev)) = self.queue.pop_front() {
                let Some(gi) = self.gen_index(gid) else {
                    continue;
                };
                let actions = self.gens[gi].sup.handle(Instant::now(), ev);
                for a in actions {
                    self.execute(gid, a);
                }
            }
            if self.exit {
                self.cleanup();
                return Ok(());
            }
            // Retired lists whose processes are all gone are dropped.
            let current = self.current().id;
            self.gens.retain(|g| g.id == current || !g.sup.is_empty());

            let deadline = self.gens.iter().filter_map(|g| g.sup.next_deadline()).min();
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let ms = d.saturating_duration_since(Instant::now()).as_millis() + 1;
                    PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
                }
            };
            let ready: Vec<Src> = {
                let mut srcs: Vec<Src> = vec![Src::Signal, Src::AnvilStatus];
                let mut pfds = vec![
                    PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.anvil.status_r.as_fd(), PollFlags::POLLIN),
                ];
                for g in &self.gens {
                    let is_current = g.id == current;
                    for (i, f) in g.fds.iter().enumerate() {
                        srcs.push(Src::Status(g.id, i));
                        pfds.push(PollFd::new(f.status_r.as_fd(), PollFlags::POLLIN));
                        if is_current && f.listening {
                            for (_, l) in &f.listeners {
                                srcs.push(Src::Listener(i));
                                pfds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                            }
                        }
                    }
                }
                for g in &self.gens {
                    if let (Some((_, w)), false) = (&g.log_control, g.control_pending.is_empty()) {
                        srcs.push(Src::LogControlWritable(g.id));
                        pfds.push(PollFd::new(w.as_fd(), PollFlags::POLLOUT));
                    }
                }
                srcs.push(Src::ControlAccept);
                pfds.push(PollFd::new(self.control.as_fd(), PollFlags::POLLIN));
                for (i, c) in self.control_clients.iter().enumerate() {
                    srcs.push(Src::ControlClient(i));
                    pfds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
                }
                if let Some(fd) = self.registry.fd() {
                    let mut flags = PollFlags::POLLIN;
                    if self.registry.wants_write() {
                        flags |= PollFlags::POLLOUT;
                    }
                    srcs.push(Src::Registry);
                    pfds.push(PollFd::new(fd, flags));
                }
                if !self.anvil_running() {
                    srcs.push(Src::AnvilDrain(true));
                    pfds.push(PollFd::new(self.anvil.master_r.as_fd(), PollFlags::POLLIN));
                    srcs.push(Src::AnvilDrain(false));
                    pfds.push(PollFd::new(
                        self.anvil.children_r.as_fd(),
                        PollFlags::POLLIN,
                    ));
                }
                match nix::poll::poll(&mut pfds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        self.log
                            .log(LogLevel::Error, &format!("poll() failed: {e}"));
                        continue;
                    }
                }
                pfds.iter()
                    .zip(&srcs)
                    .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(_, s)| *s)
                    .collect()
            };
            let mut saw_listener = vec![false; self.current().fds.len()];
            let mut closed_clients = Vec::new();
            for src in ready {
                match src {
                    Src::Signal => self.read_signals(sigfd.as_fd()),
                    Src::Status(g, s) => self.read_status(g, s),
                    Src::AnvilStatus => {
                        if let Some(a) = self.current().set.anvil {
                            let id = self.current().id;
                            let fd = self.anvil.status_r.as_raw_fd();
                            self.read_status_fd(id, a, fd);
                        } else {
                            drain(self.anvil.status_r.as_fd());
                        }
                    }
                    Src::Listener(s) => {
                        if !saw_listener[s] {
                            saw_listener[s] = true;
                            self.queue.push_back((current, Event::ListenerReadable(s)));
                        }
                    }
                    Src::AnvilDrain(master) => drain(if master {
                        self.anvil.master_r.as_fd()
                    } else {
                        self.anvil.children_r.as_fd()
                    }),
                    Src::LogControlWritable(id) => {
                        if let Some(gi) = self.gen_index(id) {
                            let g = &mut self.gens[gi];
                            if let Some((_, w)) = &g.log_control {
                                let n = write_some(w.as_fd(), &g.control_pending);
                                g.control_pending.drain(..n);
                            } else {
                                g.control_pending.clear();
                            }
                        }
                    }
                    Src::ControlAccept => {
                        while let Ok((stream, _)) = self.control.accept() {
                            if stream.set_nonblocking(true).is_ok() {
                                self.control_clients.push(ControlClient {
                                    stream,
                                    conn: ControlConn::default(),
                                });
                            }
                        }
                    }
                    Src::ControlClient(i) => {
                        if !self.control_input(i) {
                            closed_clients.push(i);
                        }
                    }
                    Src::Registry => self.registry_input(),
                }
            }
            for i in closed_clients.into_iter().rev() {
                self.control_clients.remove(i);
            }
            let now = Instant::now();
            for g in &self.gens {
                if g.sup.next_deadline().is_some_and(|d| d <= now) {
                    self.queue.push_back((g.id, Event::Tick));
                }
            }
        }
    }

    /// Serves one readable control connection; false when it is to be closed.
    fn control_input(&mut self, i: usize) -> bool {
        let mut buf = [0u8; 4096];
        let n = match (&self.control_clients[i].stream).read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        };
        let g = self.gens.last().expect("current");
        let out = self.control_clients[i].conn.input(
            &buf[..n],
            &SupView(&g.sup),
            Instant::now(),
            crate::master_compat::control::unix_now(),
        );
        let gid = g.id;
        for name in &out.stop {
            if let Some(s) = g.sup.service_id(name) {
                self.queue.push_back((gid, Event::StopService(s)));
            }
        }
        for (name, waiting) in &out.need {
            if let Some(service) = g.sup.service_id(name) {
                self.queue.push_back((
                    gid,
                    Event::NeedFresh {
                        service,
                        waiting: *waiting,
                    },
                ));
            }
        }
        if let Some(e) = &out.error {
            self.log.log(LogLevel::Error, e);
        }
        let _ = write_all_fd(self.control_clients[i].stream.as_fd(), &out.reply);
        !out.close
    }

    fn read_signals(&mut self, fd: BorrowedFd<'_>) {
        while let Some(info) = sys::process::read_signal(fd) {
            match info.signal {
                libc::SIGCHLD => {
                    while let Some((pid, how)) = sys::process::reap_one() {
                        let owner = self
                            .gens
                            .iter()
                            .find(|g| g.sup.service_of(pid).is_some())
                            .unwrap_or_else(|| self.current())
                            .id;
                        self.queue
                            .push_back((owner, Event::ChildExited { pid, how }));
                    }
                }
                libc::SIGTERM | libc::SIGINT => {
                    self.log.log(
                        LogLevel::Warning,
                        &format!(
                            "Killed with signal {} (by pid={} uid={} code=kill)",
                            info.signal, info.pid, info.uid
                        ),
                    );
                    self.queue.push_back((self.current().id, Event::Shutdown));
                }
                libc::SIGHUP => {
                    self.log.log(
                        LogLevel::Warning,
                        "SIGHUP received - reloading configuration",
                    );
                    self.reload();
                }
                libc::SIGUSR1 => {
                    let g = self.current();
                    for pid in g.sup.pids(g.set.log) {
                        let _ = sys::process::send_signal(pid, libc::SIGUSR1);
                    }
                    self.log = MasterLog::open(&self.current().m);
                }
                _ => {}
            }
        }
    }

    /// SIGHUP (§16.2): a new service list from the re-read file; unix listeners re-created,
    /// TCP listeners with the same address and port kept, anvil moved with its listeners,
    /// a new log process; the old list's processes see their dead pipes close and finish.
    fn reload(&mut self) {
        let (m, loaded) = match load_settings(&self.config_path) {
            Ok(x) => x,
            Err(e) => {
                self.log.log(
                    LogLevel::Error,
                    &format!("Error reading configuration: {e}"),
                );
                return;
            }
        };
        let env: Vec<(String, String)> = std::env::vars().collect();
        let set = match services::resolve(&m, &SystemResolver, &env) {
            Ok(s) => s,
            Err(e) => {
                self.log
                    .log(LogLevel::Error, &format!("Config reload failed: {e}"));
                return;
            }
        };
        if let Err(e) = prepare_dirs(&m, &set) {
            self.log
                .log(LogLevel::Error, &format!("Config reload failed: {e}"));
            return;
        }
        let stock_config = match write_stock_config(&m, &loaded) {
            Ok(p) => p,
            Err(e) => {
                self.log
                    .log(LogLevel::Error, &format!("Config reload failed: {e}"));
                return;
            }
        };
        let old_i = self.gens.len() - 1;
        // Take the old listeners: anvil's move as they are; TCP by address and port; UNIX
        // ones are closed and unlinked before the new ones are bound.
        let old_anvil = self.gens[old_i].set.anvil;
        let mut old_anvil_listeners = Vec::new();
        let mut old_inet: Vec<(ListenerKey, OwnedFd)> = Vec::new();
        for (si, f) in self.gens[old_i].fds.iter_mut().enumerate() {
            for (key, fd) in std::mem::take(&mut f.listeners) {
                match key {
                    _ if Some(si) == old_anvil => old_anvil_listeners.push((key, fd)),
                    ListenerKey::Inet(..) => old_inet.push((key, fd)),
                    ListenerKey::Unix(path) => {
                        drop(fd);
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
        let mut all_listeners = Vec::new();
        for (si, def) in set.services.iter().enumerate() {
            if Some(si) == set.anvil {
                all_listeners.push(std::mem::take(&mut old_anvil_listeners));
                continue;
            }
            let mut fds = Vec::new();
            for u in &def.unix {
                let key = ListenerKey::Unix(u.path.to_string());
                let one = services::ServiceDef {
                    unix: vec![u.clone()],
                    inet: Vec::new(),
                    ..def.clone()
                };
                match listeners::bind_service(&one) {
                    Ok(mut v) => fds.push((key, v.remove(0))),
                    Err(e) => self.log.log(LogLevel::Error, &e.to_string()),
                }
            }
            for i in &def.inet {
                let key = ListenerKey::Inet(i.address.clone(), i.port);
                if let Some(pos) = old_inet.iter().position(|(k, _)| *k == key) {
                    fds.push(old_inet.remove(pos));
                    continue;
                }
                let one = services::ServiceDef {
                    unix: Vec::new(),
                    inet: vec![i.clone()],
                    ..def.clone()
                };
                match listeners::bind_service(&one) {
                    Ok(mut v) => fds.push((key, v.remove(0))),
                    Err(e) => self.log.log(LogLevel::Error, &e.to_string()),
                }
            }
            all_listeners.push(fds);
        }
        drop(old_inet);
        let id = self.next_gen_id;
        let first_generation = self.gens[old_i].sup.next_generation();
        let mut gen = match build_gen(id, m, set, all_listeners, stock_config, first_generation) {
            Ok(g) => g,
            Err(e) => {
                self.log
                    .log(LogLevel::Error, &format!("Config reload failed: {e}"));
                return;
            }
        };
        self.next_gen_id += 1;
        // Anvil moves to the new list and gets its new stderr (the new list's log pipe).
        let moved = self.gens[old_i].sup.release_anvil();
        if !moved.is_empty() {
            if let Some(a) = gen.set.anvil {
                if let Some((_, w)) = &gen.fds[a].log {
                    if let Err(e) = sys::send_fd(self.anvil.fdpass_master.as_fd(), w.as_fd()) {
                        self.log.log(
                            LogLevel::Error,
                            &format!("Failed to send anvil its new log fd: {e}"),
                        );
                    }
                }
            }
            gen.sup.adopt_anvil(moved);
        }
        let old_id = self.gens[old_i].id;
        let connect = gen.sup.has_reuse_pool()
            && self.registry.state() == registry_client::State::Off
            && self.anvil_running();
        self.gens.push(gen);
        if connect {
            self.registry_connect();
        }
        self.queue.push_back((old_id, Event::Retire));
        if self.registry.is_up() {
            // Before Start: the new list has no process yet, so nothing is re-reported. Queued
            // like every event so that its actions (Listen among them) are executed: dropping
            // them left the supervisor believing it listened while the shell did not.
            self.queue.push_back((id, Event::RegistryConnected(true)));
        }
        self.queue.push_back((id, Event::Start));
    }

    fn read_status(&mut self, g: u64, s: ServiceId) {
        let Some(gi) = self.gen_index(g) else {
            return;
        };
        let fd = self.gens[gi].fds[s].status_r.as_raw_fd();
        self.read_status_fd(g, s, fd);
    }

    fn read_status_fd(&mut self, g: u64, s: ServiceId, fd: RawFd) {
        let mut buf = [0u8; 1020];
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => self.queue.push_back((g, Event::StatusEof(s))),
            Ok(n) => self
                .queue
                .push_back((g, Event::StatusData(s, buf[..n].to_vec()))),
            Err(_) => {}
        }
    }

    fn execute(&mut self, gid: u64, a: Action) {
        let Some(gi) = self.gen_index(gid) else {
            return;
        };
        match a {
            Action::Spawn {
                service,
                generation,
                anvil_restarted,
            } => {
                let (plan, own_sockets, errors) =
                    self.plan(gi, service, generation, anvil_restarted);
                for e in errors {
                    self.log.log(LogLevel::Error, &e);
                }
                let forked = sys::process::fork_exec(&plan);
                // The child has its own copies of its reuse_port sockets.
                drop(own_sockets);
                match forked {
                    Ok(pid) => {
                        if Some(service) == self.gens[gi].set.anvil {
                            write_all_fd(self.anvil.master_w.as_fd(), ANVIL_VERSION_LINE);
                            write_all_fd(self.anvil.children_w.as_fd(), ANVIL_VERSION_LINE);
                            self.registry_connect();
                        }
                        // Registered before anything is reaped again.
                        let acts = self.gens[gi]
                            .sup
                            .handle(Instant::now(), Event::Spawned { generation, pid });
                        for a in acts {
                            self.execute(gid, a);
                        }
                    }
                    Err(e) => self.queue.push_back((
                        gid,
                        Event::SpawnFailed {
                            generation,
                            error: e.to_string(),
                        },
                    )),
                }
            }
            Action::Kill { pid, signal } => {
                let _ = sys::process::send_signal(pid, signal);
            }
            Action::AnvilKill(pid) => {
                if self.anvil_running() {
                    write_all_fd(
                        self.anvil.master_w.as_fd(),
                        format!("KILL\t{pid}\n").as_bytes(),
                    );
                }
            }
            Action::LogControl(line) => {
                let g = &mut self.gens[gi];
                if let Some((_, w)) = &g.log_control {
                    let mut bytes = line.into_bytes();
                    bytes.push(b'\n');
                    // Keep order: nothing new is written while older lines wait.
                    let written = if g.control_pending.is_empty() {
                        write_some(w.as_fd(), &bytes)
                    } else {
                        0
                    };
                    g.control_pending.extend_from_slice(&bytes[written..]);
                }
            }
            Action::Log(level, text) => self.log.log(level, &text),
            Action::Listen { service, on } => self.gens[gi].fds[service].listening = on,
            Action::DropQueued(s) => {
                let fds: Vec<&OwnedFd> = self.gens[gi].fds[s]
                    .listeners
                    .iter()
                    .map(|(_, f)| f)
                    .collect();
                listeners::drop_queued(&fds);
            }
            Action::PerPidMode { service, pid, open } => {
                for u in &self.gens[gi].set.services[service].per_pid {
                    let mode = if open { u.mode } else { 0 };
                    let path = u.path.for_pid(pid);
                    if let Err(e) = fs::set_permissions(&path, fs::Permissions::from_mode(mode)) {
                        self.log
                            .log(LogLevel::Error, &format!("chmod({path}) failed: {e}"));
                    }
                }
            }
            Action::UnlinkPerPid { service, pid } => {
                for u in &self.gens[gi].set.services[service].per_pid {
                    let _ = fs::remove_file(u.path.for_pid(pid));
                }
            }
            Action::LoginState { service, full } => {
                if let Some(f) = &self.gens[gi].fds[service].login_state {
                    let _ = sys::process::seek_to(f.as_fd(), i64::from(full));
                }
            }
            Action::StopService(s) => {
                let f = &mut self.gens[gi].fds[s];
                f.dead = None;
                f.login_state = None;
                for (key, fd) in std::mem::take(&mut f.listeners) {
                    drop(fd);
                    if let ListenerKey::Unix(path) = key {
                        let _ = fs::remove_file(path);
                    }
                }
            }
            Action::CloseDeadPipes => {
                let is_current = gi == self.gens.len() - 1;
                let g = &mut self.gens[gi];
                for f in &mut g.fds {
                    f.dead = None;
                }
                if is_current {
                    // Shutdown: anvil sees it too.
                    self.anvil.global_dead = None;
                } else {
                    // Reload: the old log process exits once the old children are gone.
                    g.log_control = None;
                    g.control_pending.clear();
                    for f in &mut g.fds {
                        f.log = None;
                    }
                }
            }
            Action::Exit => self.exit = true,
            Action::Registry(report) => {
                let req = self.report_request(gi, report);
                if let Err(e) = req.map_or(Ok(()), |r| self.registry.report(&r)) {
                    self.log
                        .log(LogLevel::Error, &format!("anvil registry: {e}"));
                    self.registry_down();
                }
            }
            Action::AskEvict { service, pid } => {
                let name = self.gens[gi].set.services[service].name.clone();
                let answer = match self.registry.evict(name.as_bytes(), pid) {
                    Ok(answer) => answer,
                    Err(registry_client::EvictError::Timeout) => {
                        self.log.log(
                            LogLevel::Warning,
                            &format!(
                                "anvil registry: no EVICT reply for {name} in {} ms: nothing evicted",
                                registry_client::EVICT_WAIT.as_millis()
                            ),
                        );
                        None
                    }
                    Err(e) => {
                        self.log
                            .log(LogLevel::Error, &format!("anvil registry: {e}"));
                        // The supervisor's pending questions fall back to its own choice.
                        self.registry_down();
                        return;
                    }
                };
                let acts = self.gens[gi].sup.handle(
                    Instant::now(),
                    Event::EvictAnswer {
                        service,
                        pid: answer,
                    },
                );
                for a in acts {
                    self.execute(gid, a);
                }
            }
        }
    }

    /// The wire request of a report; `None` for a pid out of range (never happens).
    fn report_request(
        &self,
        gi: usize,
        report: Report,
    ) -> Option<crate::wire::anvil_ext::ExtRequest> {
        use crate::wire::anvil::Pid;
        use crate::wire::anvil_ext::ExtRequest;
        Some(match report {
            Report::Birth { service, pid, uid } => ExtRequest::ProcBirth {
                service: self.gens[gi].set.services[service].name.as_bytes().into(),
                pid: Pid::new(pid)?,
                uid,
            },
            Report::Idle { pid, since } => ExtRequest::ProcIdle {
                pid: Pid::new(pid)?,
                since: unix_ms(since),
            },
            Report::Busy { pid, since } => ExtRequest::ProcBusy {
                pid: Pid::new(pid)?,
                since: unix_ms(since),
            },
            Report::Death { pid } => ExtRequest::ProcDeath {
                pid: Pid::new(pid)?,
            },
        })
    }

    /// A new anvil process runs: (re)connect to its registry if a reuse pool is configured.
    fn registry_connect(&mut self) {
        if !self.gens.iter().any(|g| g.sup.has_reuse_pool()) {
            return;
        }
        if self.registry.is_up() {
            self.registry_down();
        }
        if let Err(e) = self.registry.connect() {
            self.log.log(
                LogLevel::Error,
                &format!("anvil registry: connect(anvil) failed: {e}"),
            );
        }
    }

    /// The registry connection is gone: every supervisor falls back to its own choices.
    fn registry_down(&mut self) {
        self.registry.close();
        self.registry_event(false);
    }

    /// Tells every supervisor (now, not queued) that the registry is up or down.
    fn registry_event(&mut self, up: bool) {
        let ids: Vec<u64> = self.gens.iter().map(|g| g.id).collect();
        for id in ids {
            let Some(gi) = self.gen_index(id) else {
                continue;
            };
            let acts = self.gens[gi]
                .sup
                .handle(Instant::now(), Event::RegistryConnected(up));
            for a in acts {
                self.execute(id, a);
            }
        }
    }

    fn registry_input(&mut self) {
        if let Err(e) = self.registry.flush() {
            self.log.log(
                LogLevel::Error,
                &format!("anvil registry: write failed: {e}"),
            );
            self.registry_down();
            return;
        }
        match self.registry.on_readable() {
            registry_client::Input::Nothing => {}
            registry_client::Input::Up => {
                self.log.log(
                    LogLevel::Info,
                    "anvil registry: connected (foreman-anvil 1.0), reporting reuse pools",
                );
                self.registry_event(true);
            }
            registry_client::Input::Stock => self.log.log(
                LogLevel::Info,
                "anvil registry: anvil does not speak foreman-anvil: no process reports",
            ),
            registry_client::Input::Down => {
                self.log
                    .log(LogLevel::Warning, "anvil registry: connection lost");
                self.registry_event(false);
            }
        }
    }

    /// The fd table, argv and environment of one new process (§5.1–§5.3).
    /// Also returns the process's own `reuse_port` sockets (to close after the spawn) and
    /// errors creating them (the shared socket is passed instead).
    fn plan(
        &self,
        gi: usize,
        s: ServiceId,
        generation: u32,
        anvil_restarted: bool,
    ) -> (ExecPlan, Vec<OwnedFd>, Vec<String>) {
        let g = &self.gens[gi];
        let def = &g.set.services[s];
        let f = &g.fds[s];
        let env = services::child_env(
            &g.set,
            s,
            &g.m,
            ProcessEnv {
                generation,
                anvil_restarted,
                hostname: &self.hostname,
                config_file: &g.stock_config,
                ssl_key_password: self.ssl_key_password.as_deref(),
            },
        );
        let devnull = self.devnull.as_raw_fd();
        let mut fds: Vec<(RawFd, RawFd)> = vec![(devnull, 0)];
        if let Some((_, w)) = &f.log {
            fds.push((w.as_raw_fd(), 2));
        }
        let is_anvil = Some(s) == g.set.anvil;
        fds.push((
            if def.gets_anvil_pipe() {
                self.anvil.children_w.as_raw_fd()
            } else {
                devnull
            },
            3,
        ));
        if let Some(ls) = &f.login_state {
            fds.push((ls.as_raw_fd(), 4));
        }
        if is_anvil {
            fds.push((self.anvil.fdpass_child.as_raw_fd(), 4));
            fds.push((self.anvil.status_w.as_raw_fd(), 5));
        } else {
            fds.push((f.status_w.as_raw_fd(), 5));
        }
        let dead_w = if is_anvil {
            self.anvil.global_dead.as_ref().map(|(_, w)| w.as_raw_fd())
        } else {
            f.dead.as_ref().map(|(_, w)| w.as_raw_fd())
        };
        fds.push((dead_w.unwrap_or(devnull), 6));
        let mut next = crate::master_compat::child_env::MASTER_LISTEN_FD_FIRST;
        let mut put = |fds: &mut Vec<(RawFd, RawFd)>, fd: RawFd| {
            fds.push((fd, next));
            next += 1;
        };
        if is_anvil {
            put(&mut fds, self.anvil.master_r.as_raw_fd());
            put(&mut fds, self.anvil.children_r.as_raw_fd());
        }
        if s == g.set.log {
            if let Some((r, _)) = &g.log_control {
                put(&mut fds, r.as_raw_fd());
            }
            for (i, other) in g.fds.iter().enumerate() {
                if i != s {
                    if let Some((r, _)) = &other.log {
                        put(&mut fds, r.as_raw_fd());
                    }
                }
            }
        }
        let mut own = Vec::new();
        let mut errors = Vec::new();
        for (key, l) in &f.listeners {
            let fresh = match key {
                ListenerKey::Inet(address, port) => def
                    .inet
                    .iter()
                    .find(|i| i.reuse_port && i.address == *address && i.port == *port)
                    .and_then(|i| match listeners::bind_inet_for_child(i, def.backlog) {
                        Ok(fd) => Some(fd),
                        Err(e) => {
                            errors.push(format!("service({}): {e}", def.name));
                            None
                        }
                    }),
                ListenerKey::Unix(_) => None,
            };
            match fresh {
                Some(fd) => {
                    put(&mut fds, fd.as_raw_fd());
                    own.push(fd);
                }
                None => put(&mut fds, l.as_raw_fd()),
            }
        }
        let per_pid = def
            .per_pid
            .iter()
            .map(|u| {
                let (prefix, suffix) = match &u.path {
                    config::ListenerPath::PerProcess { prefix, suffix } => {
                        (prefix.clone().into_bytes(), suffix.clone().into_bytes())
                    }
                    config::ListenerPath::Shared(p) => (p.clone().into_bytes(), Vec::new()),
                };
                let target = next;
                next += 1;
                PerPidSocket {
                    prefix,
                    suffix,
                    mode: u.mode,
                    uid: u.uid,
                    gid: u.gid,
                    backlog: def.backlog,
                    target,
                }
            })
            .collect();
        let plan = ExecPlan {
            path: c(&def.binary),
            argv: def.argv.iter().map(|a| c(a)).collect(),
            env: env.iter().map(|(k, v)| c(&format!("{k}={v}"))).collect(),
            fds,
            vsz_limit: def.vsz_limit,
            nonblock_stderr: s != g.set.log,
            per_pid,
            drop_priv: def.drop_priv(),
        };
        (plan, own, errors)
    }

    fn cleanup(&mut self) {
        for g in &self.gens {
            for pid in g.sup.all_pids() {
                if let Some(s) = g.sup.service_of(pid) {
                    for u in &g.set.services[s].per_pid {
                        let _ = fs::remove_file(u.path.for_pid(pid));
                    }
                }
            }
        }
        let _ = fs::remove_file(pid_path(&self.current().m));
        self.log.log(LogLevel::Info, "Foreman master exiting");
    }
}

fn drain(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 4096];
    while matches!(nix::unistd::read(fd.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
}
