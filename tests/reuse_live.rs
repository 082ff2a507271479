//! Per-user reuse live: stock imap-login, auth and imap under `foreman master` with Foreman's
//! anvil and the dispatcher (`foreman dispatch`, `dispatch::reuse_config`).
//!
//! Until the master reports its imap processes to anvil itself (branch `mreg`), the test
//! plays that part: it watches `$BASE/imap-master-<pid>` (the per-process listeners; mode 0 =
//! busy) and sends PROC-BIRTH / PROC-IDLE over a foreman-anvil connection. Extra reports once
//! the master reports too are harmless (a second PROC-BIRTH of a registered pid only replaces
//! the entry while it is fresh; the test reports births before any login).

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foreman::dispatch::{reuse_config, ReuseConfig};
use foreman::stock::{wait_for, ImapClient, StockDovecot};

const FOREMAN: &str = env!("CARGO_BIN_EXE_foreman");
const DEADLINE: Duration = Duration::from_secs(20);

fn start() -> StockDovecot {
    let cfg = ReuseConfig {
        process_limit: 10,
        process_limit_margin: 2,
        fresh_spares: 2,
        idle_kill: "60 secs".into(),
    };
    StockDovecot::builder()
        .master_command(FOREMAN, &["master"])
        .custom_anvil(FOREMAN, &["anvil"])
        .config_line(reuse_config(Path::new(FOREMAN), &cfg))
        .user("u1", "p1")
        .user("u2", "p2")
        .start()
        .expect("start foreman master with the dispatcher")
}

/// Plays the master's registry reports (see the module docs).
struct Reporter {
    base: PathBuf,
    conn: UnixStream,
    born: BTreeSet<u32>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl Reporter {
    fn new(base: &Path) -> Reporter {
        let mut conn = UnixStream::connect(base.join("anvil")).unwrap();
        conn.write_all(b"VERSION\tforeman-anvil\t1\t0\n").unwrap();
        let mut line = String::new();
        BufReader::new(conn.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "VERSION\tforeman-anvil\t1\t0\n");
        Reporter {
            base: base.to_owned(),
            conn,
            born: BTreeSet::new(),
        }
    }

    /// (pid, idle) of every per-process listener.
    fn listeners(&self) -> Vec<(u32, bool)> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.base).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name
                .strip_prefix("imap-master-")
                .and_then(|p| p.parse().ok())
            {
                if let Ok(md) = e.metadata() {
                    out.push((pid, md.permissions().mode() & 0o777 != 0));
                }
            }
        }
        out
    }

    /// Reports every process not reported yet; returns how many exist.
    fn births(&mut self) -> usize {
        let all = self.listeners();
        for (pid, _) in &all {
            if self.born.insert(*pid) {
                self.conn
                    .write_all(format!("PROC-BIRTH\timap\t{pid}\t0\n").as_bytes())
                    .unwrap();
            }
        }
        all.len()
    }

    fn idle(&mut self, pid: u32) {
        self.conn
            .write_all(format!("PROC-IDLE\t{pid}\t{}\n", now_ms()).as_bytes())
            .unwrap();
    }

    /// `PROC-LIST imap <user>`: the pids bound to `user` in the registry.
    fn bound_to(&mut self, user: &str) -> Vec<u32> {
        self.conn
            .write_all(format!("PROC-LIST\timap\t{user}\n").as_bytes())
            .unwrap();
        let mut r = BufReader::new(self.conn.try_clone().unwrap());
        let mut pids = Vec::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                return pids;
            }
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f[2], user, "{line}");
            pids.push(f[0].parse().unwrap());
        }
    }

    fn is_idle(&self, pid: u32) -> bool {
        self.listeners().contains(&(pid, true))
    }
}

/// The `mpid=` of the n-th (0-based) imap-login `Login:` line of `user`.
fn login_mpid(d: &StockDovecot, user: &str, n: usize) -> Option<u32> {
    let log = d.log_contents();
    let needle = format!("Login: user=<{user}>");
    let line = log.lines().filter(|l| l.contains(&needle)).nth(n)?;
    let rest = line.split("mpid=").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn login(d: &StockDovecot, user: &str, pw: &str) -> (ImapClient, String) {
    let mut c = ImapClient::connect(d.imap_port().unwrap()).unwrap();
    let r = c.login(user, pw).unwrap();
    assert!(r.is_ok(), "LOGIN {user}: {r:?}\n{}", d.log_tail(40));
    (c, r.tagged)
}

fn session_works(c: &mut ImapClient) {
    let r = c.command("SELECT INBOX").unwrap();
    assert!(r.is_ok(), "SELECT: {r:?}");
    let r = c.command("NOOP").unwrap();
    assert!(r.is_ok(), "NOOP: {r:?}");
}

#[test]
fn same_user_gets_same_process_other_user_another() {
    let d = start();
    let base = d.base_dir().to_owned();
    let mut rep = Reporter::new(&base);
    wait_for(DEADLINE, || (rep.births() >= 1).then_some(()))
        .unwrap_or_else(|| panic!("no imap process\n{}", d.log_tail(40)));

    // u1, first time: a fresh process P.
    let (mut c, ok1) = login(&d, "u1", "p1");
    session_works(&mut c);
    let p = wait_for(DEADLINE, || login_mpid(&d, "u1", 0)).expect("Login line of u1");
    // The dispatcher claimed P for u1 in the registry.
    assert_eq!(rep.bound_to("u1"), vec![p]);
    c.logout().unwrap();
    wait_for(DEADLINE, || rep.is_idle(p).then_some(())).expect("P idle again");
    rep.idle(p);
    rep.births();

    // u1 again: the same process.
    let (mut c, ok2) = login(&d, "u1", "p1");
    session_works(&mut c);
    let p2 = wait_for(DEADLINE, || login_mpid(&d, "u1", 1)).expect("second Login line");
    assert_eq!(p2, p, "u1's second session went to another process");
    assert_eq!(ok1, ok2);
    c.logout().unwrap();
    wait_for(DEADLINE, || rep.is_idle(p).then_some(())).expect("P idle again");
    rep.idle(p);
    rep.births();

    // u2: never u1's process.
    let (mut c, _) = login(&d, "u2", "p2");
    session_works(&mut c);
    let q = wait_for(DEADLINE, || login_mpid(&d, "u2", 0)).expect("Login line of u2");
    assert_ne!(q, p, "u2 was handed u1's process");
    assert_eq!(rep.bound_to("u2"), vec![q]);
    assert_eq!(rep.bound_to("u1"), vec![p]);
    if std::env::var_os("REUSE_LIVE_LOG").is_some() {
        eprintln!("{}", d.log_contents());
    }
    c.logout().unwrap();
    assert!(
        !d.log_contents().contains("foreman-dispatch: Error"),
        "{}",
        d.log_tail(40)
    );
}

#[test]
fn login_reply_equals_stock() {
    // Stock: the same config without reuse.
    let stock = StockDovecot::builder()
        .user("u1", "p1")
        .start()
        .expect("start stock dovecot");
    let (c, stock_ok) = login(&stock, "u1", "p1");
    c.logout().unwrap();

    let d = start();
    let mut rep = Reporter::new(d.base_dir());
    wait_for(DEADLINE, || (rep.births() >= 1).then_some(())).expect("an imap process");
    let (c, ours) = login(&d, "u1", "p1");
    c.logout().unwrap();
    assert_eq!(ours, stock_ok);
    assert!(ours.starts_with("OK [CAPABILITY IMAP4rev1 "), "{ours}");
}
