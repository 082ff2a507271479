//! Runs a stock Dovecot 2.3 instance in a temporary directory, on 127.0.0.1 high ports, for
//! live tests, benchmarks and the conformance recorder.
//!
//! [`StockDovecot::builder`] writes a self-contained `dovecot.conf` (own `base_dir`,
//! `state_dir`, unique `instance_name`, log file, passwd-file passdb, static userdb with
//! `nobody`'s uid/gid and maildirs under the temporary directory) and starts
//! `dovecot -F -c <conf>` as a child. [`StockDovecot::start`] returns once the anvil socket
//! exists and the IMAP/POP3 ports accept connections. Dropping the instance stops the master
//! (SIGTERM to its pid, SIGKILL after a deadline) and removes the directory.
//!
//! The anvil can be swapped for another executable ([`AnvilExecutable::Custom`]), which is how
//! Foreman's anvil is proven against stock clients. [`Builder::foreman_reuse`] runs the whole
//! Foreman set-up instead: `foreman master`, Foreman's anvil and the per-user reuse lines of
//! [`crate::dispatch::reuse_config`].
//!
//! Users: by default every user gets one static uid/gid (the mail user's);
//! [`Builder::distinct_uids`] gives user *i* (in the order added) uid and gid `base + i`
//! through a passwd-file userdb, each with a home created and owned by it.
//! [`Builder::seed_inboxes`] puts one message into every user's INBOX before the start.
//!
//! Tiny blocking clients for live tests: [`imap::ImapClient`], [`pop3::Pop3Client`] and a raw
//! [`anvil_client::AnvilClient`]. Every socket has a read timeout, so nothing here hangs.

pub mod anvil_client;
pub mod imap;
mod line_conn;
pub mod pop3;
pub mod procs;

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid as NixPid, User};

use crate::dispatch::ReuseConfig;

pub use anvil_client::AnvilClient;
pub use imap::ImapClient;
pub use pop3::Pop3Client;

/// Where stock Dovecot's master binary is expected.
pub const DOVECOT_BIN: &str = "/usr/sbin/dovecot";
/// Where `doveadm` is expected.
pub const DOVEADM_BIN: &str = "/usr/bin/doveadm";
/// How to install the stock binaries (Debian 12).
pub const INSTALL_HINT: &str = "apt-get install dovecot-core dovecot-imapd dovecot-pop3d";

/// How long [`StockDovecot::start`] waits for the instance to become ready.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long [`StockDovecot::stop`] waits after SIGTERM before SIGKILL.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Read/write timeout of the bundled clients.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Errors of the harness and its clients.
#[derive(Debug, thiserror::Error)]
pub enum StockError {
    /// A stock binary is missing.
    #[error("stock Dovecot is not installed ({path} not found); install it with: {INSTALL_HINT}")]
    NotInstalled { path: PathBuf },
    /// A local I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// No user/group to run mail processes as.
    #[error("no unprivileged user {0:?} on this system")]
    NoUser(String),
    /// The master exited during start-up.
    #[error("dovecot exited during start-up ({status}); log tail:\n{log_tail}")]
    Exited {
        status: ExitStatus,
        log_tail: String,
    },
    /// The instance did not become ready in time.
    #[error("dovecot did not become ready within {deadline:?} ({what}); log tail:\n{log_tail}")]
    StartTimeout {
        deadline: Duration,
        what: String,
        log_tail: String,
    },
    /// Listener ports stayed busy over all retries.
    #[error("could not bind free ports after {0} attempts; last log tail:\n{1}")]
    PortsBusy(u32, String),
    /// The builder was asked for something inconsistent.
    #[error("invalid harness option: {0}")]
    InvalidOption(String),
    /// A peer sent something the client did not expect.
    #[error("{peer}: unexpected reply {line:?}")]
    Protocol { peer: &'static str, line: String },
    /// A peer closed the connection.
    #[error("{0}: connection closed by peer")]
    Closed(&'static str),
}

impl StockError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> StockError {
        StockError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = StockError> = std::result::Result<T, E>;

/// Which anvil the instance runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnvilExecutable {
    /// Dovecot's own `/usr/lib/dovecot/anvil`.
    Stock,
    /// Another executable with arguments, e.g. `foreman anvil`.
    Custom { path: PathBuf, args: Vec<String> },
}

/// A mail protocol served by the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Imap,
    Pop3,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
        }
    }
}

/// Options of a stock instance; see [`StockDovecot::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    anvil: AnvilExecutable,
    protocols: Vec<Protocol>,
    mail_max_userip_connections: Option<u32>,
    extra_config: Vec<String>,
    users: Vec<(String, String)>,
    mail_user: String,
    /// The master command (`None` = stock `dovecot`); `-F -c <conf>` is appended.
    master: Option<(PathBuf, Vec<String>)>,
    /// `Some(base)`: user i gets uid/gid base+i (passwd-file userdb).
    uid_base: Option<u32>,
    /// One message in every user's INBOX.
    seed_inboxes: bool,
    /// The per-user reuse lines, appended after every other line.
    reuse: Option<(PathBuf, ReuseConfig)>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            anvil: AnvilExecutable::Stock,
            protocols: vec![Protocol::Imap, Protocol::Pop3],
            mail_max_userip_connections: None,
            extra_config: Vec::new(),
            users: Vec::new(),
            mail_user: "nobody".to_owned(),
            master: None,
            uid_base: None,
            seed_inboxes: false,
            reuse: None,
        }
    }
}

impl Builder {
    /// Which anvil to run (default: stock).
    pub fn anvil(mut self, anvil: AnvilExecutable) -> Self {
        self.anvil = anvil;
        self
    }

    /// Runs `path args…` as the anvil service.
    pub fn custom_anvil(self, path: impl Into<PathBuf>, args: &[&str]) -> Self {
        self.anvil(AnvilExecutable::Custom {
            path: path.into(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    /// The protocols to serve (default: IMAP and POP3).
    pub fn protocols(mut self, protocols: &[Protocol]) -> Self {
        self.protocols = protocols.to_vec();
        self
    }

    /// `mail_max_userip_connections` (default: Dovecot's, 10).
    pub fn mail_max_userip_connections(mut self, limit: u32) -> Self {
        self.mail_max_userip_connections = Some(limit);
        self
    }

    /// A raw line appended to dovecot.conf.
    pub fn config_line(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }

    /// A user with a plaintext password.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }

    /// The system user whose uid/gid own the maildirs (default `nobody`).
    pub fn mail_user(mut self, name: impl Into<String>) -> Self {
        self.mail_user = name.into();
        self
    }

    /// Runs `path args… -F -c <conf>` as the master instead of stock `dovecot` (e.g.
    /// `foreman master`), with the same configuration.
    pub fn master_command(mut self, path: impl Into<PathBuf>, args: &[&str]) -> Self {
        self.master = Some((path.into(), args.iter().map(|s| (*s).to_owned()).collect()));
        self
    }

    /// Foreman's per-user reuse set-up: `foreman_bin master` as the master, `foreman_bin
    /// anvil` as the anvil, and the lines of [`crate::dispatch::reuse_config`] appended after
    /// every other configuration line.
    pub fn foreman_reuse(self, foreman_bin: PathBuf, cfg: ReuseConfig) -> Self {
        let mut b = self
            .master_command(&foreman_bin, &["master"])
            .custom_anvil(&foreman_bin, &["anvil"]);
        b.reuse = Some((foreman_bin, cfg));
        b
    }

    /// User *i* (in the order of [`Builder::user`]) gets uid and gid `base + i`, from a
    /// passwd-file userdb, with its home created and owned by that uid. Without this every
    /// user has the mail user's uid/gid (a static userdb). `base` must be at least 500
    /// (Dovecot's `first_valid_uid`).
    pub fn distinct_uids(mut self, base: u32) -> Self {
        self.uid_base = Some(base);
        self
    }

    /// Writes one message into every user's `~/Maildir/cur` (owned by the user's uid) before
    /// the start, so that `SELECT INBOX` finds one message.
    pub fn seed_inboxes(mut self) -> Self {
        self.seed_inboxes = true;
        self
    }

    /// The uid/gid of user number `i`: `base + i` with [`Builder::distinct_uids`], else `mail`.
    fn user_ids(&self, i: usize, mail: (u32, u32)) -> (u32, u32) {
        match self.uid_base {
            Some(base) => {
                let id = base + i as u32;
                (id, id)
            }
            None => mail,
        }
    }

    /// Writes the configuration and starts the instance.
    pub fn start(self) -> Result<StockDovecot> {
        StockDovecot::start(self)
    }
}

/// A running stock Dovecot master in its own temporary directory.
#[derive(Debug)]
pub struct StockDovecot {
    // Declared first so that the child is stopped (in Drop) before the directory goes.
    child: Option<Child>,
    dir: tempfile::TempDir,
    conf: PathBuf,
    base_dir: PathBuf,
    log_path: PathBuf,
    instance_name: String,
    imap_port: Option<u16>,
    pop3_port: Option<u16>,
}

static INSTANCE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fails with [`StockError::NotInstalled`] when the stock binaries are missing.
pub fn check_installed() -> Result<()> {
    for bin in [DOVECOT_BIN, DOVEADM_BIN, "/usr/lib/dovecot/anvil"] {
        if !Path::new(bin).exists() {
            return Err(StockError::NotInstalled { path: bin.into() });
        }
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound to port 0, then released).
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| StockError::io("bind 127.0.0.1:0", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| StockError::io("local_addr", e))
}

/// Polls `check` until it returns `Some` or `deadline` passes.
pub fn wait_for<T>(deadline: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

const MAX_START_ATTEMPTS: u32 = 5;

/// The configuration [`StockDovecot::doveadm_master`] uses (inside the instance directory).
const DOVEADM_MASTER_CONF: &str = "doveadm-master.conf";

impl StockDovecot {
    /// Options for a new instance.
    pub fn builder() -> Builder {
        Builder::default()
    }

    fn start(opts: Builder) -> Result<StockDovecot> {
        check_installed()?;
        if opts.protocols.is_empty() {
            return Err(StockError::InvalidOption("no protocols".into()));
        }
        let mut last_tail = String::new();
        for _ in 0..MAX_START_ATTEMPTS {
            match Self::start_once(&opts) {
                Ok(instance) => return Ok(instance),
                Err((err, true)) => {
                    last_tail = match err {
                        StockError::Exited { log_tail, .. } => log_tail,
                        other => other.to_string(),
                    }
                }
                Err((err, false)) => return Err(err),
            }
        }
        Err(StockError::PortsBusy(MAX_START_ATTEMPTS, last_tail))
    }

    /// One start attempt; the bool says whether a retry with other ports may help.
    fn start_once(opts: &Builder) -> Result<StockDovecot, (StockError, bool)> {
        let fatal = |e| (e, false);
        let user = User::from_name(&opts.mail_user)
            .ok()
            .flatten()
            .ok_or_else(|| fatal(StockError::NoUser(opts.mail_user.clone())))?;

        let dir = tempfile::Builder::new()
            .prefix("fm-")
            .tempdir()
            .map_err(|e| fatal(StockError::io("create temporary directory", e)))?;
        let root = dir.path().to_path_buf();
        let set_mode = |path: &Path, mode: u32| {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| fatal(StockError::io(format!("chmod {}", path.display()), e)))
        };
        // Mail processes run as the mail user and must traverse the directory.
        set_mode(&root, 0o755)?;
        let base_dir = root.join("base");
        let state_dir = root.join("state");
        let home_root = root.join("home");
        for d in [&state_dir, &home_root] {
            fs::create_dir(d)
                .map_err(|e| fatal(StockError::io(format!("mkdir {}", d.display()), e)))?;
            set_mode(d, 0o755)?;
        }
        chown(&home_root, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .map_err(|e| fatal(StockError::io(format!("chown {}", home_root.display()), e)))?;

        let mail_ids = (user.uid.as_raw(), user.gid.as_raw());
        let passwd = root.join("passwd");
        let mut passwd_text = String::new();
        for (i, (name, password)) in opts.users.iter().enumerate() {
            let (uid, gid) = opts.user_ids(i, mail_ids);
            let home = home_root.join(name);
            if opts.uid_base.is_some() {
                let _ = writeln!(
                    passwd_text,
                    "{name}:{{PLAIN}}{password}:{uid}:{gid}::{}::",
                    home.display()
                );
            } else {
                let _ = writeln!(passwd_text, "{name}:{{PLAIN}}{password}::::::");
            }
            if opts.uid_base.is_some() || opts.seed_inboxes {
                make_home(&home, uid, gid, opts.seed_inboxes).map_err(fatal)?;
            }
        }
        fs::write(&passwd, passwd_text).map_err(|e| fatal(StockError::io("write passwd", e)))?;
        set_mode(&passwd, 0o644)?;

        let imap_port = if opts.protocols.contains(&Protocol::Imap) {
            Some(free_port().map_err(fatal)?)
        } else {
            None
        };
        let pop3_port = if opts.protocols.contains(&Protocol::Pop3) {
            Some(free_port().map_err(fatal)?)
        } else {
            None
        };

        let n = INSTANCE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let instance_name = format!("fm-{}-{n}", std::process::id());
        let log_path = root.join("dovecot.log");
        let conf = root.join("dovecot.conf");
        let text = render_config(&ConfigParams {
            opts,
            base_dir: &base_dir,
            state_dir: &state_dir,
            log_path: &log_path,
            instance_name: &instance_name,
            passwd: &passwd,
            home_root: &home_root,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            imap_port,
            pop3_port,
        });
        fs::write(&conf, text).map_err(|e| fatal(StockError::io("write dovecot.conf", e)))?;
        set_mode(&conf, 0o644)?;
        let master_conf = root.join(DOVEADM_MASTER_CONF);
        fs::write(&master_conf, format!("base_dir = {}\n", base_dir.display()))
            .map_err(|e| fatal(StockError::io("write doveadm-master.conf", e)))?;

        let (master_bin, master_args) = match &opts.master {
            Some((path, args)) => (path.clone(), args.clone()),
            None => (PathBuf::from(DOVECOT_BIN), Vec::new()),
        };
        let child = Command::new(&master_bin)
            .args(&master_args)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::File::create(root.join("master.stderr"))
                    .map_err(|e| fatal(StockError::io("create master.stderr", e)))?,
            ))
            .spawn()
            .map_err(|e| fatal(StockError::io(format!("spawn {}", master_bin.display()), e)))?;

        let mut instance = StockDovecot {
            child: Some(child),
            dir,
            conf,
            base_dir,
            log_path,
            instance_name,
            imap_port,
            pop3_port,
        };
        instance.wait_ready()?;
        Ok(instance)
    }

    /// Waits for the anvil socket and the TCP listeners. On failure the bool says whether
    /// the master died of a busy port (retry with other ports).
    fn wait_ready(&mut self) -> Result<(), (StockError, bool)> {
        let end = Instant::now() + START_DEADLINE;
        let anvil = self.anvil_socket();
        let waiting_for = loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    let log_tail = self.log_tail(30);
                    let busy = log_tail.contains("Address already in use");
                    return Err((StockError::Exited { status, log_tail }, busy));
                }
            }
            // Checked in /proc rather than by connecting: a probe connection would start a
            // login process and leave traces in the log and in anvil.
            let listening = listening_ports();
            let ports_ok = self.ports().iter().all(|p| listening.contains(p));
            let anvil_ok = anvil.exists();
            if ports_ok && anvil_ok {
                return Ok(());
            }
            if Instant::now() >= end {
                break match anvil_ok {
                    false => format!("{} missing", anvil.display()),
                    true => "TCP ports not accepting".to_owned(),
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log_tail = self.log_tail(30);
        Err((
            StockError::StartTimeout {
                deadline: START_DEADLINE,
                what: waiting_for,
                log_tail,
            },
            false,
        ))
    }

    fn ports(&self) -> Vec<u16> {
        self.imap_port.into_iter().chain(self.pop3_port).collect()
    }

    /// The temporary directory holding everything of this instance.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration file.
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// `base_dir` of the instance.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// `<base_dir>/anvil`.
    pub fn anvil_socket(&self) -> PathBuf {
        self.base_dir.join("anvil")
    }

    /// `<base_dir>/anvil-auth-penalty`.
    pub fn penalty_socket(&self) -> PathBuf {
        self.base_dir.join("anvil-auth-penalty")
    }

    /// The unique `instance_name`.
    pub fn instance_name(&self) -> &str {
        &self.instance_name
    }

    /// The IMAP port, when IMAP is served.
    pub fn imap_port(&self) -> Option<u16> {
        self.imap_port
    }

    /// The POP3 port, when POP3 is served.
    pub fn pop3_port(&self) -> Option<u16> {
        self.pop3_port
    }

    /// The master's pid (`None` once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A new IMAP connection (greeting read).
    pub fn imap(&self) -> Result<ImapClient> {
        let port = self
            .imap_port
            .ok_or_else(|| StockError::InvalidOption("IMAP is not enabled".into()))?;
        ImapClient::connect(port)
    }

    /// A new POP3 connection (greeting read).
    pub fn pop3(&self) -> Result<Pop3Client> {
        let port = self
            .pop3_port
            .ok_or_else(|| StockError::InvalidOption("POP3 is not enabled".into()))?;
        Pop3Client::connect(port)
    }

    /// A raw anvil connection to `<base_dir>/anvil` (VERSION sent).
    pub fn anvil_client(&self) -> Result<AnvilClient> {
        AnvilClient::connect(&self.anvil_socket())
    }

    /// Runs `doveadm -c <conf> args…` and returns its output.
    pub fn doveadm<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Output> {
        Command::new(DOVEADM_BIN)
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| StockError::io(format!("run {DOVEADM_BIN}"), e))
    }

    /// Runs `doveadm` for a command that only talks to the master (`service status`, `service
    /// stop`) with a configuration that holds nothing but `base_dir`: stock `doveadm` refuses
    /// dovecot.conf files with Foreman's extra settings (e.g. `process_limit_margin`).
    pub fn doveadm_master<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Output> {
        Command::new(DOVEADM_BIN)
            .arg("-c")
            .arg(self.dir.path().join(DOVEADM_MASTER_CONF))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| StockError::io(format!("run {DOVEADM_BIN}"), e))
    }

    /// The whole log file (empty if not yet written).
    pub fn log_contents(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log, plus the master's stderr if it wrote any.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = tail(&self.log_contents(), lines);
        if let Ok(stderr) = fs::read_to_string(self.dir.path().join("master.stderr")) {
            if !stderr.trim().is_empty() {
                text.push_str("\n[master stderr]\n");
                text.push_str(&tail(&stderr, lines));
            }
        }
        text
    }

    /// The master's exit status if it has exited (without waiting), `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// Stops the master: SIGTERM, wait up to [`STOP_DEADLINE`], then SIGKILL.
    pub fn stop(&mut self) -> Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(Some(status));
        }
        let pid = NixPid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let end = Instant::now() + STOP_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(Some(status)),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = child.kill();
                    return child
                        .wait()
                        .map(Some)
                        .map_err(|e| StockError::io("wait dovecot", e));
                }
                Err(e) => return Err(StockError::io("wait dovecot", e)),
            }
        }
    }
}

impl Drop for StockDovecot {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Ports in LISTEN state on 127.0.0.1 (from /proc/net/tcp).
fn listening_ports() -> Vec<u16> {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return Vec::new();
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            let (addr, port) = local.split_once(':')?;
            (state == "0A" && addr == "0100007F").then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

struct ConfigParams<'a> {
    opts: &'a Builder,
    base_dir: &'a Path,
    state_dir: &'a Path,
    log_path: &'a Path,
    instance_name: &'a str,
    passwd: &'a Path,
    home_root: &'a Path,
    uid: u32,
    gid: u32,
    imap_port: Option<u16>,
    pop3_port: Option<u16>,
}

fn render_config(p: &ConfigParams<'_>) -> String {
    let protocols: Vec<&str> = p.opts.protocols.iter().map(|p| p.name()).collect();
    let mut c = String::new();
    let _ = writeln!(c, "# Written by foreman::stock");
    let _ = writeln!(c, "base_dir = {}", p.base_dir.display());
    let _ = writeln!(c, "state_dir = {}", p.state_dir.display());
    let _ = writeln!(c, "instance_name = {}", p.instance_name);
    let _ = writeln!(c, "log_path = {}", p.log_path.display());
    let _ = writeln!(c, "listen = 127.0.0.1");
    let _ = writeln!(c, "protocols = {}", protocols.join(" "));
    let _ = writeln!(c, "default_internal_user = dovecot");
    let _ = writeln!(c, "default_login_user = dovenull");
    let _ = writeln!(c, "ssl = no");
    let _ = writeln!(c, "disable_plaintext_auth = no");
    let _ = writeln!(c, "verbose_proctitle = yes");
    let _ = writeln!(c, "auth_mechanisms = plain login");
    let _ = writeln!(c, "mail_location = maildir:~/Maildir");
    if let Some(limit) = p.opts.mail_max_userip_connections {
        let _ = writeln!(c, "mail_max_userip_connections = {limit}");
    }
    let _ = writeln!(
        c,
        "passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {}\n}}",
        p.passwd.display()
    );
    if p.opts.uid_base.is_some() {
        let _ = writeln!(
            c,
            "userdb {{\n  driver = passwd-file\n  args = username_format=%u {}\n}}",
            p.passwd.display()
        );
    } else {
        let _ = writeln!(
            c,
            "userdb {{\n  driver = static\n  args = uid={} gid={} home={}/%u\n}}",
            p.uid,
            p.gid,
            p.home_root.display()
        );
    }
    let imap_port = p.imap_port.unwrap_or(0);
    let pop3_port = p.pop3_port.unwrap_or(0);
    let _ = writeln!(
        c,
        "service imap-login {{\n  inet_listener imap {{\n    port = {imap_port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}"
    );
    let _ = writeln!(
        c,
        "service pop3-login {{\n  inet_listener pop3 {{\n    port = {pop3_port}\n  }}\n  inet_listener pop3s {{\n    port = 0\n  }}\n}}"
    );
    let _ = writeln!(
        c,
        "service submission-login {{\n  inet_listener submission {{\n    port = 0\n  }}\n}}"
    );
    if let AnvilExecutable::Custom { path, args } = &p.opts.anvil {
        let mut exe = path.display().to_string();
        for a in args {
            exe.push(' ');
            exe.push_str(a);
        }
        let _ = writeln!(c, "service anvil {{\n  executable = {exe}\n}}");
    }
    for line in &p.opts.extra_config {
        let _ = writeln!(c, "{line}");
    }
    if let Some((foreman, cfg)) = &p.opts.reuse {
        c.push_str(&crate::dispatch::reuse_config(foreman, cfg));
    }
    c
}

/// The message [`Builder::seed_inboxes`] puts into every INBOX.
const SEED_MESSAGE: &str = "From: bench@example.com\r\nTo: user@example.com\r\n\
Subject: seed\r\nDate: Sat, 28 Nov 2026 00:00:00 +0000\r\nMessage-ID: <seed@foreman>\r\n\r\n\
One message, so that FETCH 1 has something to return.\r\n";

/// Creates `home` (and, with `seed`, `Maildir/{cur,new,tmp}` with one message in `cur`), all
/// owned by `uid:gid`, mode 0700.
fn make_home(home: &Path, uid: u32, gid: u32, seed: bool) -> Result<()> {
    let maildir = home.join("Maildir");
    let mut dirs = vec![home.to_path_buf()];
    let mut files = Vec::new();
    if seed {
        dirs.push(maildir.clone());
        for sub in ["cur", "new", "tmp"] {
            dirs.push(maildir.join(sub));
        }
        let message = maildir.join("cur/1700000000.M1P1.foreman:2,");
        files.push(message);
    }
    let own = |path: &Path, mode: u32| -> Result<()> {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| StockError::io(format!("chmod {}", path.display()), e))?;
        chown(path, Some(uid), Some(gid))
            .map_err(|e| StockError::io(format!("chown {}", path.display()), e))
    };
    for d in &dirs {
        fs::create_dir_all(d).map_err(|e| StockError::io(format!("mkdir {}", d.display()), e))?;
        own(d, 0o700)?;
    }
    for f in &files {
        fs::write(f, SEED_MESSAGE)
            .map_err(|e| StockError::io(format!("write {}", f.display()), e))?;
        own(f, 0o600)?;
    }
    Ok(())
}
