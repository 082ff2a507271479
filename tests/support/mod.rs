//! Helpers shared by the live tests of per-user reuse and of the master's pool
//! (`tests/reuse_guarantees*.rs`, `reuse_live.rs`, `master_registry.rs`,
//! `master_per_pid.rs`): a stock stack (imap-login, auth, imap) under `foreman master` with
//! Foreman's anvil and the dispatcher (`dispatch::reuse_config`), imap-login's `Login:` lines
//! (`mpid=` = the imap process that got the client), the registry (`PROC-DUMP` on a
//! foreman-anvil connection), the processes of the instance, a client that connects as user
//! `nobody`, and a userdb with a uid per user.
//!
//! [`anvil`]: a standalone `foreman anvil` and `foreman who` (`anvil_standalone.rs`,
//! `who_cli.rs`, `who_processes.rs`).
//!
//! Every test file includes it with `mod support;`; not every file uses every helper.
#![allow(dead_code)]

pub mod anvil;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use foreman::dispatch::{reuse_config, ReuseConfig};
use foreman::stock::{procs, wait_for, AnvilClient, Builder, ImapClient, StockDovecot};
use foreman::wire::anvil_ext::{
    decode_proc_row, ClaimState, ExtReply, ProcRow, ProcState, VERSION_LINE,
};

pub const FOREMAN: &str = env!("CARGO_BIN_EXE_foreman");
/// Bound of every wait on a condition.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A reuse pool of `limit` processes, `margin` of them margin, `spares` fresh spares.
pub fn reuse(limit: u32, margin: u32, spares: u32) -> ReuseConfig {
    ReuseConfig {
        process_limit: limit,
        process_limit_margin: margin,
        fresh_spares: spares,
        idle_kill: "60 secs".into(),
    }
}

/// Builder of the stock stack under `foreman master`, Foreman's anvil and the dispatcher.
pub fn reuse_builder(cfg: &ReuseConfig) -> Builder {
    StockDovecot::builder()
        .master_command(FOREMAN, &["master"])
        .custom_anvil(FOREMAN, &["anvil"])
        .config_line(reuse_config(Path::new(FOREMAN), cfg))
}

/// The reuse stack with a pool of 10 (2 margin, 2 fresh spares) and users u1/p1, u2/p2.
pub fn start_two_users() -> StockDovecot {
    reuse_builder(&reuse(10, 2, 2))
        .user("u1", "p1")
        .user("u2", "p2")
        .start()
        .expect("start the reuse stack")
}

/// One imap-login `Login:` line: the user and the imap pid that got the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub mpid: u32,
}

/// Every `Login:` line of imap-login in the log, in order.
pub fn logins(d: &StockDovecot) -> Vec<Login> {
    d.log_contents()
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("imap-login: Info: Login: user=<")?.1;
            let (user, rest) = rest.split_once(">, ")?;
            let mpid = rest.split("mpid=").nth(1)?;
            let mpid = mpid
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()?;
            Some(Login {
                user: user.to_owned(),
                mpid,
            })
        })
        .collect()
}

/// The mpids of `user`'s logins, in order.
pub fn mpids_of(d: &StockDovecot, user: &str) -> Vec<u32> {
    logins(d)
        .into_iter()
        .filter(|l| l.user == user)
        .map(|l| l.mpid)
        .collect()
}

/// Waits for the `n`-th (0-based) login line of `user`; its mpid.
pub fn wait_mpid(d: &StockDovecot, user: &str, n: usize) -> u32 {
    wait_for(DEADLINE, || mpids_of(d, user).get(n).copied()).unwrap_or_else(|| {
        panic!(
            "no Login line #{n} of {user}: {:?}\n{}",
            logins(d),
            d.log_tail(40)
        )
    })
}

/// `(user, pid)` of every line imap writes as `imap(<user>)<<pid>>…`: which users each imap
/// process really served (imap's own view, independent of imap-login's).
pub fn imap_sessions(d: &StockDovecot) -> Vec<(String, u32)> {
    d.log_contents()
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(" imap(")?.1;
            let (user, rest) = rest.split_once(")<")?;
            let pid = rest.split('>').next()?.parse().ok()?;
            Some((user.to_owned(), pid))
        })
        .collect()
}

/// Milliseconds since the epoch (the registry's clock in PROC-* lines).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// LOGIN that must succeed.
pub fn login(d: &StockDovecot, user: &str, pw: &str) -> ImapClient {
    let mut c = d.imap().unwrap();
    let r = c.login(user, pw).unwrap();
    assert!(r.is_ok(), "LOGIN {user}: {r:?}\n{}", d.log_tail(40));
    c
}

/// SELECT INBOX and NOOP answered OK.
pub fn session_works(c: &mut ImapClient) {
    let r = c.command("SELECT INBOX").unwrap();
    assert!(r.is_ok(), "SELECT: {r:?}");
    let r = c.command("NOOP").unwrap();
    assert!(r.is_ok(), "NOOP: {r:?}");
}

/// Logs `user` in, checks the session works and logs out; the mpid imap-login named.
pub fn in_and_out(d: &StockDovecot, user: &str, pw: &str) -> u32 {
    let n = mpids_of(d, user).len();
    let mut c = login(d, user, pw);
    session_works(&mut c);
    let p = wait_mpid(d, user, n);
    c.logout().unwrap();
    p
}

/// [`in_and_out`], then waits until the process that served `user` is idle again; its pid.
pub fn served_once(d: &StockDovecot, user: &str, pw: &str) -> u32 {
    let p = in_and_out(d, user, pw);
    wait_idle(d, p);
    p
}

/// LOGIN on a new connection in a thread: the client and the reply.
pub fn login_in_thread(
    d: &StockDovecot,
    user: &'static str,
    pw: &'static str,
) -> std::thread::JoinHandle<(ImapClient, foreman::stock::imap::ImapReply)> {
    let port = d.imap_port().unwrap();
    std::thread::spawn(move || {
        let mut c = ImapClient::connect(port).unwrap();
        let r = c.login(user, pw).unwrap();
        (c, r)
    })
}

/// A foreman-anvil connection (greeting checked).
pub fn registry(d: &StockDovecot) -> AnvilClient {
    let mut c = AnvilClient::connect_raw(&d.anvil_socket()).unwrap();
    c.send_raw(VERSION_LINE).unwrap();
    let greeting = c.read_line().unwrap();
    assert_eq!(greeting, &VERSION_LINE[..VERSION_LINE.len() - 1]);
    c
}

/// `PROC-DUMP` rows of the imap pool.
pub fn imap_rows_on(c: &mut AnvilClient) -> Vec<ProcRow> {
    c.dump(b"PROC-DUMP")
        .unwrap()
        .into_iter()
        .map(|mut line| {
            line.push(b'\n');
            match decode_proc_row(&line) {
                Ok((_, ExtReply::Row(row))) => row,
                other => panic!("bad row {other:?}"),
            }
        })
        .filter(|r| r.service == "imap")
        .collect()
}

/// `PROC-DUMP` rows of the imap pool, on a new connection.
pub fn imap_rows(d: &StockDovecot) -> Vec<ProcRow> {
    imap_rows_on(&mut registry(d))
}

/// The registry row of `pid`.
pub fn row_of(d: &StockDovecot, pid: u32) -> Option<ProcRow> {
    imap_rows(d).into_iter().find(|r| r.pid.get() == pid)
}

/// Waits until the registry says `pid` is idle (the master reported its status record).
pub fn wait_idle(d: &StockDovecot, pid: u32) {
    wait_for(DEADLINE, || {
        row_of(d, pid)
            .is_some_and(|r| r.state == ProcState::Idle && r.claim == ClaimState::None)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("pid {pid} not idle: {:?}\n{}", imap_rows(d), d.log_tail(30)));
}

/// The live children of the instance's master.
pub fn children(d: &StockDovecot) -> Vec<procs::Proc> {
    procs::children_of(d.pid().unwrap())
}

/// The live imap processes, by pid.
pub fn imap_pids(d: &StockDovecot) -> Vec<u32> {
    children(d)
        .into_iter()
        .filter(|p| p.title_name() == "imap")
        .map(|p| p.pid)
        .collect()
}

/// Whether `pid` is a live (not zombie) child of the master.
pub fn alive(d: &StockDovecot, pid: u32) -> bool {
    children(d).iter().any(|p| p.pid == pid)
}

/// The pid of the child whose command line's second word is `word` (`dispatch`, `anvil`).
pub fn foreman_child(d: &StockDovecot, word: &str) -> Option<u32> {
    children(d)
        .into_iter()
        .find(|p| p.cmdline.split(' ').nth(1) == Some(word))
        .map(|p| p.pid)
}

pub fn kill(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

/// Set in the environment of the re-executed test binary: the path to connect to.
pub const CLIENT_ENV: &str = "FOREMAN_TEST_CONNECT_PATH";

/// The body of each test file's `connect_helper` test: when the binary is re-executed by
/// [`connect_as_nobody`], connects to the path and prints the outcome; else does nothing.
pub fn connect_helper() {
    let Ok(path) = std::env::var(CLIENT_ENV) else {
        return;
    };
    match std::os::unix::net::UnixStream::connect(&path) {
        Ok(_) => println!("CONNECT-RESULT ok"),
        Err(e) => println!("CONNECT-RESULT errno={}", e.raw_os_error().unwrap_or(0)),
    }
}

/// Connects to `path` as user nobody (root would bypass the permission check) by
/// re-executing this test binary's `connect_helper` test; `ok` or `errno=<n>`.
pub fn connect_as_nobody(path: &Path) -> String {
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "connect_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CLIENT_ENV, path)
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("CONNECT-RESULT ")?;
            rest.split_whitespace().next().map(str::to_owned)
        })
        .unwrap_or_else(|| format!("helper failed: {out:?}"))
}

/// Mode bits of a path.
pub fn mode(path: &Path) -> Option<u32> {
    fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

/// A user of [`UserdbDir`]: name, password, uid.
pub struct DbUser<'a> {
    pub name: &'a str,
    pub password: &'a str,
    pub uid: u32,
}

impl<'a> DbUser<'a> {
    pub const fn new(name: &'a str, password: &'a str, uid: u32) -> DbUser<'a> {
        DbUser {
            name,
            password,
            uid,
        }
    }
}

/// u1..u4 (passwords p1..p4) with uids 60001..60004.
pub const FOUR_UIDS: [DbUser<'static>; 4] = [
    DbUser::new("u1", "p1", 60001),
    DbUser::new("u2", "p2", 60002),
    DbUser::new("u3", "p3", 60003),
    DbUser::new("u4", "p4", 60004),
];

/// A passwd-file userdb with its own uid per user (and homes owned by those uids), swapped
/// in for the harness's static userdb (one uid for everybody). The harness has no option
/// for it, so the master is started through `sh`, which edits the generated dovecot.conf
/// (the `userdb { driver = static … }` section) before it execs `foreman master`.
pub struct UserdbDir {
    dir: tempfile::TempDir,
}

impl UserdbDir {
    pub fn new(users: &[DbUser<'_>]) -> UserdbDir {
        let dir = tempfile::Builder::new()
            .prefix("fm-udb-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let nogroup = 65534;
        let mut text = String::new();
        for u in users {
            let home = dir.path().join(u.name);
            fs::create_dir(&home).unwrap();
            nix::unistd::chown(
                &home,
                Some(nix::unistd::Uid::from_raw(u.uid)),
                Some(nix::unistd::Gid::from_raw(nogroup)),
            )
            .unwrap();
            text.push_str(&format!(
                "{}::{}:{nogroup}::{}::\n",
                u.name,
                u.uid,
                home.display()
            ));
        }
        let path = dir.path().join("userdb");
        let mut f = fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        UserdbDir { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("userdb")
    }

    /// `b` with the users' passwords and the master started through the editing wrapper
    /// (`master` = `foreman master` or stock `dovecot`).
    pub fn apply(&self, mut b: Builder, users: &[DbUser<'_>], master: &str) -> Builder {
        for u in users {
            b = b.user(u.name, u.password);
        }
        let script = format!(
            "conf=\"$3\"; sed -i -e 's/^  driver = static$/  driver = passwd-file/' \
             -e 's|^  args = uid=.*$|  args = {}|' \"$conf\" && exec {master} \"$@\"",
            self.path().display()
        );
        b.master_command("/bin/sh", &["-c", &script, "fm-userdb"])
    }

    /// The reuse stack (`cfg`) under `foreman master` with this userdb, started.
    pub fn start_foreman(&self, cfg: &ReuseConfig, users: &[DbUser<'_>]) -> StockDovecot {
        let fm = format!("{FOREMAN} master");
        self.apply(reuse_builder(cfg), users, &fm)
            .start()
            .expect("start the reuse stack")
    }
}

/// Waits until the log has a line containing `needle` (the log process writes lines
/// asynchronously: a client may see its answer before the line is in the file).
pub fn wait_log(d: &StockDovecot, needle: &str) {
    wait_for(DEADLINE, || d.log_contents().contains(needle).then_some(()))
        .unwrap_or_else(|| panic!("no log line with {needle:?}\n{}", d.log_tail(30)));
}

/// Waits until the log has at least `n` `Login:` lines; all of them.
pub fn wait_logins(d: &StockDovecot, n: usize) -> Vec<Login> {
    wait_for(DEADLINE, || Some(logins(d)).filter(|l| l.len() >= n))
        .unwrap_or_else(|| panic!("fewer than {n} Login lines: {:?}", logins(d)))
}

/// Waits until the registry shows a dispatch claim on `user`'s process `pid` (the dispatcher
/// took it and is trying it). Asks in a tight loop (`PROC-LIST` on one connection, bounded
/// by [`DEADLINE`]): a claim that ends in a refused connect lasts only microseconds.
pub fn wait_claimed(d: &StockDovecot, reg: &mut AnvilClient, user: &str, pid: u32) {
    let end = std::time::Instant::now() + DEADLINE;
    let want = format!("{pid}\t");
    let cmd = format!("PROC-LIST\timap\t{user}");
    while std::time::Instant::now() < end {
        let rows = reg.dump(cmd.as_bytes()).unwrap();
        if rows.iter().any(|r| {
            let r = String::from_utf8_lossy(r);
            r.starts_with(&want) && r.ends_with("\tclaimed")
        }) {
            return;
        }
    }
    panic!("the dispatcher never claimed {pid}\n{}", d.log_tail(30));
}
