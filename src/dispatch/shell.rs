//! The dispatcher's async shell: one current-thread tokio runtime; a task per login-process
//! connection; one persistent foreman-anvil connection and one master control connection,
//! each used by one login at a time, and a pool of idle auth-master connections. All
//! decisions are in [`super::core`].

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bstr::{BString, ByteSlice};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};

use super::caps::CapSettings;
use super::core::{
    client_untouched, decide, failure_output, login_output, show, validate, Attempt, Backoff, Next,
};
use crate::logging::{LogFormat, Logger};
use crate::master_compat::child_env::ChildEnv;
use crate::sys;
use crate::sys::service::{fd_inode, recv_with_fd, send_with_fd, tcp_progress};
use crate::wire::anvil_ext::{
    decode_claim_reply, encode_ext_request, ClaimedKind, ExtReply, ExtRequest, ReleaseOutcome,
};
use crate::wire::auth_master::{self, Reply as AuthReplyLine};
use crate::wire::imap_master::{self, Handoff, ServerLine};
use crate::wire::log::Level;
use crate::wire::master_auth::{self, AuthReply, AuthRequest, AuthStatus, LoginData};
use crate::wire::status::StatusRecord;
use crate::wire::DecodeError;

/// Errors that stop the dispatcher.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Env(#[from] crate::master_compat::child_env::ChildEnvError),
    #[error(transparent)]
    Sys(#[from] sys::SysError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Tunables; [`Default`] is what `foreman dispatch` uses.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where `anvil`, `auth-master`, `master` and `imap-master-<pid>` live (the master starts
    /// the dispatcher with cwd = base_dir).
    pub base_dir: PathBuf,
    /// The reuse pool (service) name.
    pub service: String,
    pub backoff: Backoff,
    /// How long a reused (idle) process has to send its VERSION line: an idle process
    /// answers at once; a silent one is busy (our connect sits in its backlog).
    pub version_timeout: Duration,
    /// The same for a fresh process, which may still be starting up (exec, config).
    pub fresh_version_timeout: Duration,
    /// How long imap has to answer the hand-off.
    pub reply_timeout: Duration,
    /// How long the auth lookup may take.
    pub auth_timeout: Duration,
    /// The config service socket (capabilities); `None`: stock defaults.
    pub config_socket: Option<PathBuf>,
    /// Drop CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH at start.
    pub drop_dac: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            base_dir: PathBuf::from("."),
            service: "imap".to_owned(),
            backoff: Backoff::default(),
            version_timeout: Duration::from_millis(300),
            fresh_version_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(30),
            config_socket: None,
            drop_dac: true,
        }
    }
}

const LOG_PREFIX: &str = "foreman-dispatch: ";

/// Runs as the `foreman-dispatch` service of a master: takes fds 5, 6 and the listeners,
/// sends the initial status, serves logins until the master dies.
pub fn run(mut opts: Options) -> Result<(), DispatchError> {
    let env = ChildEnv::from_process()?;
    let pid = std::process::id();
    let mut logger = Logger::for_service(&env, LOG_PREFIX);
    let fds = sys::service::take_service_fds(env.socket_count)?;
    if opts.config_socket.is_none() {
        opts.config_socket = std::env::var_os("CONFIG_FILE").map(PathBuf::from);
    }
    if opts.drop_dac {
        if let Err(e) = sys::service::drop_dac_capabilities() {
            logger.log(
                Level::Error,
                format!("capset(drop CAP_DAC_OVERRIDE) failed: {e}").as_bytes(),
            );
        }
    }
    let _ = sys::raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listeners = fds
            .listeners
            .into_iter()
            .map(|fd| {
                let l = StdUnixListener::from(fd);
                l.set_nonblocking(true)?;
                UnixListener::from_std(l)
            })
            .collect::<io::Result<Vec<_>>>()?;
        // Initial status: always fully available (the dispatcher never refuses a login).
        let rec = StatusRecord {
            pid: pid as i32,
            generation: env.generation,
            available_count: env.client_limit,
        }
        .encode();
        let status = std::fs::File::from(fds.status);
        if let Err(e) = io::Write::write(&mut &status, &rec) {
            logger.log(
                Level::Error,
                format!("write(status) failed: {e}").as_bytes(),
            );
        }
        let ctx = Rc::new(Ctx::new(opts, logger));
        for l in listeners {
            tokio::task::spawn_local(accept_loop(ctx.clone(), l));
        }
        sys::master_dead(fds.master_dead).await?;
        drop(status);
        Ok(())
    })
}

/// Serves logins on `listener` until the future is dropped (tests use this with a
/// temporary base dir).
pub async fn serve(listener: UnixListener, opts: Options) {
    let ctx = Rc::new(Ctx::new(
        opts,
        Logger::new(LogFormat::Plain, LOG_PREFIX, false),
    ));
    accept_loop(ctx, listener).await
}

async fn accept_loop(ctx: Rc<Ctx>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::task::spawn_local(login_connection(ctx.clone(), stream));
            }
            Err(e) => {
                ctx.log(Level::Error, format!("accept() failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The state shared by all logins.
struct Ctx {
    opts: Options,
    logger: RefCell<Logger>,
    anvil: tokio::sync::Mutex<Option<LineConn>>,
    master: tokio::sync::Mutex<Option<LineConn>>,
    /// Logins currently waiting for a process.
    waiting: Cell<u32>,
    /// The capability string and `mail_uid` as a number, fetched once from the config
    /// service.
    caps: RefCell<Option<(Rc<str>, Option<u32>)>>,
    next_auth_id: Cell<u32>,
    /// Idle auth-master connections (handshake done), with the auth pid each announced.
    /// Stock imap keeps its auth-master connection open across logins too; a connect and
    /// handshake per login cost a measurable part of a reused login.
    auth_pool: RefCell<Vec<(LineConn, u32)>>,
    /// When the last "master refused FOREMAN-NEED" warning was logged.
    need_warned: Cell<Option<Instant>>,
    /// The last FOREMAN-NEED accepted: (waiting count, when). Many waiting logins retry in
    /// the same few ms; the same count again within [`NEED_COALESCE`] is not re-sent (the
    /// command is idempotent, so this only saves round trips).
    need_sent: Cell<Option<(u32, Instant)>>,
}

/// See [`Ctx::need_sent`].
const NEED_COALESCE: Duration = Duration::from_millis(5);

impl Ctx {
    fn new(opts: Options, logger: Logger) -> Ctx {
        Ctx {
            opts,
            logger: RefCell::new(logger),
            anvil: tokio::sync::Mutex::new(None),
            master: tokio::sync::Mutex::new(None),
            waiting: Cell::new(0),
            caps: RefCell::new(None),
            next_auth_id: Cell::new(1),
            auth_pool: RefCell::new(Vec::new()),
            need_warned: Cell::new(None),
            need_sent: Cell::new(None),
        }
    }

    fn log(&self, level: Level, text: impl AsRef<[u8]>) {
        self.logger.borrow_mut().log(level, text.as_ref());
    }

    fn path(&self, name: &str) -> PathBuf {
        self.opts.base_dir.join(name)
    }
}

/// A line-oriented unix socket connection with an input buffer.
struct LineConn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl LineConn {
    async fn connect(path: &Path) -> io::Result<LineConn> {
        Ok(LineConn {
            stream: UnixStream::connect(path).await?,
            buf: Vec::new(),
        })
    }

    /// Reads until `decode` yields a value.
    async fn read<T, E: std::fmt::Display>(
        &mut self,
        decode: impl Fn(&[u8]) -> Result<(usize, T), DecodeError<E>>,
    ) -> io::Result<T> {
        loop {
            match decode(&self.buf) {
                Ok((n, v)) => {
                    self.buf.drain(..n);
                    return Ok(v);
                }
                Err(DecodeError::Invalid(e)) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
                }
                Err(DecodeError::Incomplete) => {}
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn simple_line(buf: &[u8]) -> Result<(usize, BString), DecodeError<&'static str>> {
    match memchr::memchr(b'\n', buf) {
        Some(lf) => Ok((lf + 1, BString::from(&buf[..lf]))),
        None if buf.len() > 65536 => Err(DecodeError::Invalid("line too long")),
        None => Err(DecodeError::Incomplete),
    }
}

/// One connection from a login process: requests (each with a client fd), one reply each.
async fn login_connection(ctx: Rc<Ctx>, mut stream: UnixStream) {
    let mut buf: Vec<u8> = Vec::new();
    let mut client_fd: Option<OwnedFd> = None;
    loop {
        // Read until one whole request is buffered.
        let (used, req, data) = loop {
            match master_auth::decode_request(&buf) {
                Ok(x) => break x,
                Err(DecodeError::Invalid(e)) => {
                    ctx.log(Level::Error, format!("login client: {e}"));
                    return;
                }
                Err(DecodeError::Incomplete) => {}
            }
            let mut chunk = [0u8; 2048];
            let r = stream
                .async_io(Interest::READABLE, || {
                    recv_with_fd(stream.as_fd(), &mut chunk)
                })
                .await;
            match r {
                Ok((0, _)) => {
                    if !buf.is_empty() {
                        ctx.log(
                            Level::Error,
                            format!(
                                "login client: disconnected with a partial request ({} bytes)",
                                buf.len()
                            ),
                        );
                    }
                    return;
                }
                Ok((n, fd)) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if client_fd.is_none() {
                        client_fd = fd;
                    }
                }
                Err(e) => {
                    ctx.log(Level::Error, format!("login client: recvmsg failed: {e}"));
                    return;
                }
            }
        };
        buf.drain(..used);
        let Some(fd) = client_fd.take() else {
            ctx.log(
                Level::Error,
                "login client: Auth request missing a file descriptor",
            );
            return;
        };
        match fd_inode(fd.as_fd()) {
            Ok(ino) if ino == req.ino => {}
            Ok(ino) => {
                ctx.log(
                    Level::Error,
                    format!(
                        "login client: Auth request inode mismatch: {ino} != {}",
                        req.ino
                    ),
                );
                return;
            }
            Err(e) => {
                ctx.log(
                    Level::Error,
                    format!("login client: fstat(client fd) failed: {e}"),
                );
                return;
            }
        }
        let reply = login(&ctx, &req, &data, fd).await;
        if let Err(e) = stream.write_all(&reply.encode()).await {
            ctx.log(
                Level::Error,
                format!("login client: write(reply) failed: {e}"),
            );
            return;
        }
    }
}

/// Why a login failed before any process saw it.
#[derive(Debug)]
struct LoginFailure(String);

/// Runs one login to its end and returns the reply for the login process.
async fn login(ctx: &Ctx, req: &AuthRequest, data: &LoginData, client: OwnedFd) -> AuthReply {
    let prefix = data.imap.as_ref();
    let fail = |pid: i32| AuthReply {
        tag: req.tag,
        status: AuthStatus::InternalError,
        mail_pid: pid,
    };
    let my_pid = std::process::id() as i32;
    let (user, fields) =
        match tokio::time::timeout(ctx.opts.auth_timeout, auth_lookup(ctx, req)).await {
            Ok(Ok(x)) => x,
            Ok(Err(LoginFailure(why))) => {
                ctx.log(Level::Error, format!("login failed: {why}"));
                write_failure(&client, prefix);
                return fail(my_pid);
            }
            Err(_) => {
                ctx.log(Level::Error, "login failed: auth-master lookup timed out");
                write_failure(&client, prefix);
                return fail(my_pid);
            }
        };
    let (caps, mail_uid) = imap_settings(ctx).await;
    let valid = match validate(&user, &fields, mail_uid) {
        Ok(v) => v,
        Err(e) => {
            ctx.log(Level::Error, format!("login failed: {e}"));
            write_failure(&client, prefix);
            return fail(my_pid);
        }
    };
    let lp = |ip: Option<std::net::IpAddr>, port: u16| match ip {
        Some(ip) => (Some(ip.to_string()), Some(port)),
        None => (None, None),
    };
    let (lip, lport) = lp(req.local_ip, req.local_port);
    let (rip, rport) = lp(req.remote_ip, req.remote_port);
    let handoff = Handoff {
        user: valid.user.clone(),
        session: (!data.session_id.is_empty()).then(|| data.session_id.clone()),
        lip,
        lport,
        rip,
        rport,
        userdb_fields: fields,
        client_output: login_output(prefix, &caps),
        client_input: prefix.map(|p| p.input.clone()).unwrap_or_default(),
    };
    let started = Instant::now();
    let mut round = 0u32;
    let mut attempts = 0u32;
    let mut waiting = WaitGuard::new(ctx);
    loop {
        if round > 0 && client_gone(&client) {
            ctx.log(
                Level::Info,
                format!(
                    "user {}: client disconnected while waiting for a process",
                    show(&valid.user)
                ),
            );
            return fail(my_pid);
        }
        let claimed = match ctx.claim(&valid.user, valid.uid).await {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                ctx.log(
                    Level::Error,
                    format!("login failed: anvil CLAIM failed: {e}"),
                );
                write_failure(&client, prefix);
                return fail(my_pid);
            }
            Err(e) => {
                ctx.log(Level::Error, format!("anvil CLAIM failed: {e}"));
                None
            }
        };
        match claimed {
            None => {
                waiting.enter();
                ctx.need().await;
            }
            Some((pid, token, kind)) => {
                waiting.leave();
                attempts += 1;
                let version_timeout = match kind {
                    ClaimedKind::Fresh => ctx.opts.fresh_version_timeout,
                    ClaimedKind::Reuse => ctx.opts.version_timeout,
                };
                let attempt = try_process(ctx, pid, version_timeout, &handoff, &client).await;
                let (outcome, next) = decide(&attempt);
                ctx.release(pid, token, outcome).await;
                match next {
                    Next::ReplyOk => {
                        drop(client);
                        return AuthReply {
                            tag: req.tag,
                            status: AuthStatus::Ok,
                            mail_pid: pid as i32,
                        };
                    }
                    Next::FailLogin => {
                        ctx.log(
                            Level::Error,
                            format!(
                                "login failed: user {}: imap pid {pid} failed the hand-off after the client may have seen it",
                                show(&valid.user)
                            ),
                        );
                        return fail(pid as i32);
                    }
                    Next::ClaimAgain => {
                        if attempts >= ctx.opts.backoff.max_attempts {
                            ctx.log(
                                Level::Error,
                                format!(
                                    "login failed: user {}: {attempts} attempts failed",
                                    show(&valid.user)
                                ),
                            );
                            write_failure(&client, prefix);
                            return fail(my_pid);
                        }
                    }
                }
            }
        }
        match ctx.opts.backoff.wait(round, started.elapsed()) {
            Some(w) => tokio::time::sleep(w).await,
            None => {
                ctx.log(
                    Level::Error,
                    format!(
                        "login failed: user {}: no {} process became available in {:?}",
                        show(&valid.user),
                        ctx.opts.service,
                        ctx.opts.backoff.deadline
                    ),
                );
                write_failure(&client, prefix);
                return fail(my_pid);
            }
        }
        round += 1;
    }
}

/// Counts this login in `waiting` while it has no process.
struct WaitGuard<'a> {
    ctx: &'a Ctx,
    counted: bool,
}

impl<'a> WaitGuard<'a> {
    fn new(ctx: &'a Ctx) -> Self {
        WaitGuard {
            ctx,
            counted: false,
        }
    }
    fn enter(&mut self) {
        if !self.counted {
            self.counted = true;
            self.ctx.waiting.set(self.ctx.waiting.get() + 1);
        }
    }
    fn leave(&mut self) {
        if self.counted {
            self.counted = false;
            self.ctx.waiting.set(self.ctx.waiting.get() - 1);
        }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

/// The client connection is closed in both directions or broken (POLLHUP / POLLERR). A
/// half-close (the client shut down only its sending side, e.g. a pipelined script) is not
/// "gone": it still expects its replies.
fn client_gone(client: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(client.as_fd(), PollFlags::empty())];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
        _ => false,
    }
}

/// Writes stock's failure line to the client (best effort, as stock).
fn write_failure(client: &OwnedFd, prefix: Option<&master_auth::ImapLoginPrefix>) {
    let out = failure_output(prefix);
    if !out.is_empty() {
        let _ = nix::unistd::write(client, &out);
    }
}

/// Most idle auth-master connections kept open.
const AUTH_POOL_MAX: usize = 16;

/// The auth-master lookup: user name and userdb fields. Uses a pooled connection when one is
/// idle; a pooled connection that fails before any reply (auth restarted and closed it) is
/// dropped and the lookup retried once on a new connection.
async fn auth_lookup(
    ctx: &Ctx,
    req: &AuthRequest,
) -> Result<(BString, Vec<BString>), LoginFailure> {
    let pooled = ctx.auth_pool.borrow_mut().pop();
    // A pooled connection to another auth pid (auth restarted) is dropped: a new one decides.
    if let Some((conn, spid)) = pooled.filter(|(_, spid)| *spid == req.auth_pid) {
        match auth_request(ctx, req, conn, spid).await {
            Err(AuthError::Io(_)) => {}
            other => return other.map_err(|e| e.into_failure(ctx)),
        }
    }
    let path = ctx.path("auth-master");
    let mut conn = LineConn::connect(&path)
        .await
        .map_err(|e| AuthError::Io(format!("connect: {e}")).into_failure(ctx))?;
    let spid = auth_handshake(&mut conn)
        .await
        .map_err(|e| e.into_failure(ctx))?;
    auth_request(ctx, req, conn, spid)
        .await
        .map_err(|e| e.into_failure(ctx))
}

/// Why an auth-master lookup failed.
enum AuthError {
    /// The connection failed (connect, read, write, EOF): retried once when pooled.
    Io(String),
    /// A definite answer or a protocol problem: the login fails.
    Fail(LoginFailure),
}

impl AuthError {
    fn into_failure(self, ctx: &Ctx) -> LoginFailure {
        match self {
            AuthError::Io(e) => LoginFailure(format!(
                "auth-master ({}): {e}",
                ctx.path("auth-master").display()
            )),
            AuthError::Fail(f) => f,
        }
    }
}

/// Sends our VERSION and reads auth's VERSION and SPID; returns the auth pid.
async fn auth_handshake(conn: &mut LineConn) -> Result<u32, AuthError> {
    conn.stream
        .write_all(auth_master::CLIENT_VERSION)
        .await
        .map_err(|e| AuthError::Io(format!("write: {e}")))?;
    loop {
        let line = conn
            .read(auth_master::decode_reply)
            .await
            .map_err(|e| AuthError::Io(format!("read: {e}")))?;
        match line {
            AuthReplyLine::Version { major: 1, .. } => {}
            AuthReplyLine::Version { major, .. } => {
                return Err(AuthError::Fail(LoginFailure(format!(
                    "auth-master: handshake: unsupported major version {major}"
                ))))
            }
            AuthReplyLine::Spid(pid) => return Ok(pid),
            AuthReplyLine::Cuid => {
                return Err(AuthError::Fail(LoginFailure(
                    "auth-master is an auth client socket, not auth-master".into(),
                )))
            }
            _ => {}
        }
    }
}

/// One REQUEST on a connection whose handshake is done; the connection goes back to the
/// pool after a definite answer.
async fn auth_request(
    ctx: &Ctx,
    req: &AuthRequest,
    mut conn: LineConn,
    spid: u32,
) -> Result<(BString, Vec<BString>), AuthError> {
    if spid != req.auth_pid {
        return Err(AuthError::Fail(LoginFailure(format!(
            "auth server pid {spid} is not the login's {} (auth restarted?)",
            req.auth_pid
        ))));
    }
    let id = ctx.next_auth_id.get();
    ctx.next_auth_id.set(id.wrapping_add(1).max(1));
    let mut out = Vec::new();
    auth_master::encode_request(
        &auth_master::Request {
            id,
            client_pid: req.client_pid,
            auth_id: req.auth_id,
            cookie: req.cookie,
            params: Vec::new(),
        },
        &mut out,
    );
    conn.stream
        .write_all(&out)
        .await
        .map_err(|e| AuthError::Io(format!("write: {e}")))?;
    let answer = loop {
        let line = conn
            .read(auth_master::decode_reply)
            .await
            .map_err(|e| AuthError::Io(format!("read: {e}")))?;
        match line {
            AuthReplyLine::User {
                id: rid,
                user,
                fields,
            } if rid == id => break Ok((user, fields)),
            AuthReplyLine::NotFound { id: rid } if rid == id => {
                break Err(AuthError::Fail(LoginFailure(
                    "auth-master: user not found (cookie expired?)".into(),
                )))
            }
            AuthReplyLine::Fail { id: rid, reason } if rid == id => {
                break Err(AuthError::Fail(LoginFailure(format!(
                    "auth-master lookup failed: {}",
                    reason.unwrap_or_else(|| "no reason".into())
                ))))
            }
            _ => {}
        }
    };
    let mut pool = ctx.auth_pool.borrow_mut();
    if pool.len() < AUTH_POOL_MAX {
        pool.push((conn, spid));
    }
    answer
}

impl Ctx {
    /// CLAIM on the persistent anvil connection; reconnects once after an error.
    async fn claim(&self, user: &[u8], uid: u32) -> io::Result<Option<(u32, u64, ClaimedKind)>> {
        let mut req = Vec::new();
        encode_ext_request(
            &ExtRequest::Claim {
                service: self.opts.service.as_str().into(),
                user: user.into(),
                uid,
            },
            &mut req,
        );
        let reply = self.anvil_call(&req, true).await?;
        Ok(match reply {
            Some(ExtReply::Claimed { pid, token, kind }) => Some((pid.get(), token, kind)),
            _ => None,
        })
    }

    async fn release(&self, pid: u32, token: u64, outcome: ReleaseOutcome) {
        let Some(pid) = crate::wire::anvil::Pid::new(pid) else {
            return;
        };
        let mut req = Vec::new();
        encode_ext_request(
            &ExtRequest::Release {
                pid,
                token,
                outcome,
            },
            &mut req,
        );
        if let Err(e) = self.anvil_call(&req, false).await {
            self.log(Level::Error, format!("anvil RELEASE failed: {e}"));
        }
    }

    async fn anvil_call(&self, req: &[u8], reply: bool) -> io::Result<Option<ExtReply>> {
        let mut guard = self.anvil.lock().await;
        let mut last = None;
        for _ in 0..2 {
            if guard.is_none() {
                match connect_anvil(&self.path("anvil")).await {
                    Ok(c) => *guard = Some(c),
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                }
            }
            let conn = guard.as_mut().expect("connected");
            let r = async {
                conn.stream.write_all(req).await?;
                if reply {
                    conn.read(decode_claim_reply).await.map(Some)
                } else {
                    Ok(None)
                }
            }
            .await;
            match r {
                Ok(x) => return Ok(x),
                Err(e) => {
                    *guard = None;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| io::ErrorKind::Other.into()))
    }

    /// Tells the master how many logins wait (`FOREMAN-NEED`). Errors are logged at most
    /// every 10 s: an older master does not know the command.
    async fn need(&self) {
        let mut guard = self.master.lock().await;
        let waiting = self.waiting.get();
        if let Some((n, at)) = self.need_sent.get() {
            if n == waiting && at.elapsed() < NEED_COALESCE {
                return;
            }
        }
        let line = format!("FOREMAN-NEED\t{}\t{waiting}\n", self.opts.service);
        let r = async {
            if guard.is_none() {
                let mut c = LineConn::connect(&self.path("master")).await?;
                c.stream
                    .write_all(b"VERSION\tmaster-client\t1\t0\n")
                    .await?;
                let v = c.read(simple_line).await?;
                if !v.starts_with(b"VERSION\tmaster-server\t1\t") {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected handshake {v:?}"),
                    ));
                }
                *guard = Some(c);
            }
            let c = guard.as_mut().expect("connected");
            c.stream.write_all(line.as_bytes()).await?;
            let r = c.read(simple_line).await?;
            if r.as_slice() == b"+" {
                Ok(())
            } else {
                Err(io::Error::other(format!("master: {}", r.as_bstr())))
            }
        }
        .await;
        if r.is_ok() {
            self.need_sent.set(Some((waiting, Instant::now())));
        }
        if let Err(e) = r {
            *guard = None;
            let now = Instant::now();
            if self
                .need_warned
                .get()
                .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
            {
                self.need_warned.set(Some(now));
                self.log(
                    Level::Warning,
                    format!("FOREMAN-NEED to the master failed: {e}"),
                );
            }
        }
    }
}

async fn connect_anvil(path: &Path) -> io::Result<LineConn> {
    let mut c = LineConn::connect(path).await?;
    c.stream
        .write_all(b"VERSION\tforeman-anvil\t1\t0\n")
        .await?;
    let v = c.read(simple_line).await.map_err(|e| {
        // Stock anvil closes the connection on a handshake it does not know.
        let kind = match e.kind() {
            io::ErrorKind::UnexpectedEof => io::ErrorKind::Unsupported,
            k => k,
        };
        io::Error::new(
            kind,
            format!("anvil did not accept the foreman-anvil handshake (stock anvil? reuse needs Foreman's anvil): {e}"),
        )
    })?;
    if v.as_slice() != b"VERSION\tforeman-anvil\t1\t0" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("anvil handshake: {:?}", v.as_bstr()),
        ));
    }
    Ok(c)
}

/// One attempt on a claimed process.
async fn try_process(
    ctx: &Ctx,
    pid: u32,
    version_timeout: Duration,
    handoff: &Handoff,
    client: &OwnedFd,
) -> Attempt {
    let path = ctx.path(&format!("{}-master-{pid}", ctx.opts.service));
    let mut conn = match LineConn::connect(&path).await {
        Ok(c) => c,
        Err(e) => {
            if !matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::ECONNREFUSED | libc::ENOENT | libc::EAGAIN)
            ) {
                ctx.log(
                    Level::Warning,
                    format!("connect({}) failed: {e}", path.display()),
                );
            }
            return Attempt::ConnectBusy;
        }
    };
    match tokio::time::timeout(version_timeout, conn.read(imap_master::decode_server_line)).await {
        Ok(Ok(ServerLine::Version { major: 1, .. })) => {}
        Ok(Ok(other)) => {
            ctx.log(
                Level::Error,
                format!("{}: unexpected first line {other:?}", path.display()),
            );
            return Attempt::NoVersion;
        }
        Ok(Err(_)) | Err(_) => return Attempt::NoVersion,
    }
    let mut bytes = imap_master::VERSION_LINE.to_vec();
    imap_master::encode_handoff(handoff, &mut bytes);
    let before = tcp_progress(client.as_fd()).ok().flatten();
    let sent = async {
        let n = conn
            .stream
            .async_io(Interest::WRITABLE, || {
                send_with_fd(conn.stream.as_fd(), &bytes, client.as_fd())
            })
            .await?;
        conn.stream.write_all(&bytes[n..]).await
    }
    .await;
    let reply = match sent {
        Ok(()) => tokio::time::timeout(
            ctx.opts.reply_timeout,
            conn.read(imap_master::decode_server_line),
        )
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
        Err(e) => Err(e),
    };
    let failed = |why: String| {
        let after = tcp_progress(client.as_fd()).ok().flatten();
        let untouched = client_untouched(before, after);
        ctx.log(
            Level::Error,
            format!(
                "hand-off of user {} to imap pid {pid} failed: {why}{}",
                show(&handoff.user),
                if untouched {
                    " (client untouched, retrying)"
                } else {
                    ""
                }
            ),
        );
        Attempt::Failed {
            client_untouched: untouched,
        }
    };
    match reply {
        Ok(ServerLine::Accepted) => Attempt::Accepted,
        Ok(ServerLine::Rejected(e)) => failed(format!("imap replied -{}", e.as_bstr())),
        Ok(other) => failed(format!("unexpected reply {other:?}")),
        Err(e) => failed(e.to_string()),
    }
}

/// The capability string and `mail_uid` (the uid of users the userdb gives none), fetched
/// once from the config service.
async fn imap_settings(ctx: &Ctx) -> (Rc<str>, Option<u32>) {
    if let Some(c) = ctx.caps.borrow().as_ref() {
        return c.clone();
    }
    let settings = match &ctx.opts.config_socket {
        Some(p) => match fetch_config(p).await {
            Ok(s) => s,
            Err(e) => {
                ctx.log(
                    Level::Warning,
                    format!(
                        "config lookup ({}) failed, using default capabilities: {e}",
                        p.display()
                    ),
                );
                CapSettings::default()
            }
        },
        None => CapSettings::default(),
    };
    let (caps, unknown) = settings.capability_string();
    if !unknown.is_empty() {
        ctx.log(
            Level::Warning,
            format!(
                "capabilities of plugins {unknown:?} are not known; the LOGIN reply may lack them"
            ),
        );
    }
    let mail_uid = settings.mail_uid_number();
    if mail_uid.is_none() && !settings.mail_uid.is_empty() {
        ctx.log(
            Level::Warning,
            format!(
                "mail_uid {} is not a known user: users without a userdb uid are refused",
                settings.mail_uid
            ),
        );
    }
    let caps: Rc<str> = caps.into();
    *ctx.caps.borrow_mut() = Some((caps.clone(), mail_uid));
    (caps, mail_uid)
}

/// Asks the config service for imap's settings (master-interface.md §12).
async fn fetch_config(path: &Path) -> io::Result<CapSettings> {
    let mut c = LineConn::connect(path).await?;
    c.stream
        .write_all(b"VERSION\tconfig\t2\t0\nREQ\tservice=imap\n")
        .await?;
    let mut reply = Vec::new();
    let mut header_seen = false;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = c.read(simple_line).await?;
            if line.starts_with(b"VERSION\t") && !header_seen {
                continue;
            }
            if line.starts_with(b"ERROR") {
                return Err(io::Error::other(line.to_string()));
            }
            if !header_seen {
                header_seen = true;
                continue;
            }
            if line.is_empty() {
                return Ok(());
            }
            reply.extend_from_slice(&line);
            reply.push(b'\n');
        }
    })
    .await
    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
    Ok(CapSettings::from_config_reply(&reply))
}
