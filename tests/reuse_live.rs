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
    start_with(&[])
}

fn start_with(extra: &[&str]) -> StockDovecot {
    let cfg = ReuseConfig {
        process_limit: 10,
        process_limit_margin: 2,
        fresh_spares: 2,
        idle_kill: "60 secs".into(),
    };
    let mut b = StockDovecot::builder()
        .master_command(FOREMAN, &["master"])
        .custom_anvil(FOREMAN, &["anvil"])
        .config_line(reuse_config(Path::new(FOREMAN), &cfg))
        .user("u1", "p1")
        .user("u2", "p2");
    for l in extra {
        b = b.config_line(*l);
    }
    b.start().expect("start foreman master with the dispatcher")
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

    fn busy(&mut self, pid: u32) {
        self.conn
            .write_all(format!("PROC-BUSY\t{pid}\t{}\n", now_ms()).as_bytes())
            .unwrap();
    }

    /// `PROC-LIST imap <user>`: the pids bound to `user` in the registry.
    fn bound_to(&mut self, user: &str) -> Vec<u32> {
        self.claims_of(user).into_iter().map(|(p, _)| p).collect()
    }

    /// `PROC-LIST imap <user>`: (pid, claim column) of the processes bound to `user`.
    fn claims_of(&mut self, user: &str) -> Vec<(u32, String)> {
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
            pids.push((f[0].parse().unwrap(), f[6].to_owned()));
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

/// The LOGIN reply (untagged and tagged lines) of stock imap and of a hand-off are equal,
/// for the default settings and for settings that change the capability string.
#[test]
fn login_reply_equals_stock() {
    let extra: &[&str] = &[
        "mail_plugins = $mail_plugins quota acl zlib",
        "protocol imap {\n  mail_plugins = $mail_plugins imap_acl imap_zlib imap_quota\n}",
        "plugin {\n  acl = vfile\n}",
        "namespace inbox {\n  inbox = yes\n  mailbox Sent {\n    special_use = \\Sent\n  }\n}",
        "imap_literal_minus = yes",
    ];
    for settings in [&[][..], extra] {
        let mut b = StockDovecot::builder().user("u1", "p1");
        for l in settings {
            b = b.config_line(*l);
        }
        let stock = b.start().expect("start stock dovecot");
        let (c, stock_reply) = login_reply(&stock, "u1", "p1");
        c.logout().unwrap();

        let d = start_with(settings);
        let mut rep = Reporter::new(d.base_dir());
        wait_for(DEADLINE, || (rep.births() >= 1).then_some(())).expect("an imap process");
        let (mut c, ours) = login_reply(&d, "u1", "p1");
        // The hand-off really happened (the registry bound a process to u1).
        assert_eq!(rep.bound_to("u1").len(), 1);
        session_works(&mut c);
        c.logout().unwrap();
        assert_eq!(ours, stock_reply, "settings {settings:?}");
        let caps = ours.untagged.join(" ") + &ours.tagged;
        assert!(caps.contains("CAPABILITY IMAP4rev1 "), "{caps}");
        if !settings.is_empty() {
            for c in [
                "QUOTA",
                "ACL",
                "SPECIAL-USE",
                "LITERAL-",
                "COMPRESS=DEFLATE",
            ] {
                assert!(caps.contains(c), "{c} missing from {caps}");
            }
        }
        assert!(
            !d.log_contents().contains("foreman-dispatch: Warning"),
            "{}",
            d.log_tail(30)
        );
    }
}

fn login_reply(
    d: &StockDovecot,
    user: &str,
    pw: &str,
) -> (ImapClient, foreman::stock::imap::ImapReply) {
    let mut c = ImapClient::connect(d.imap_port().unwrap()).unwrap();
    let r = c.login(user, pw).unwrap();
    assert!(r.is_ok(), "LOGIN {user}: {r:?}\n{}", d.log_tail(40));
    (c, r)
}

/// Two sessions of one user at once: two processes (a process serves one client at a
/// time); both work.
#[test]
fn concurrent_sessions_of_one_user_get_two_processes() {
    let d = start();
    let mut rep = Reporter::new(d.base_dir());
    wait_for(DEADLINE, || (rep.births() >= 2).then_some(())).expect("two imap processes");
    let (mut a, _) = login(&d, "u1", "p1");
    rep.births();
    let (mut b, _) = login(&d, "u1", "p1");
    session_works(&mut a);
    session_works(&mut b);
    let pa = wait_for(DEADLINE, || login_mpid(&d, "u1", 0)).unwrap();
    let pb = wait_for(DEADLINE, || login_mpid(&d, "u1", 1)).unwrap();
    assert_ne!(pa, pb);
    let mut bound = rep.bound_to("u1");
    bound.sort();
    let mut want = vec![pa, pb];
    want.sort();
    assert_eq!(bound, want);
    a.logout().unwrap();
    b.logout().unwrap();
}

/// Commands the client sent right behind LOGIN (buffered by imap-login) reach the imap
/// process through `client_input` and are answered.
#[test]
fn pipelined_command_after_login_is_answered() {
    use std::io::Read;
    let d = start();
    let mut rep = Reporter::new(d.base_dir());
    wait_for(DEADLINE, || (rep.births() >= 1).then_some(())).expect("an imap process");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.imap_port().unwrap())).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "greeting");
        got.extend_from_slice(&buf[..n]);
    }
    s.write_all(b"x1 LOGIN u1 p1\r\nx2 NOOP\r\nx3 LOGOUT\r\n")
        .unwrap();
    got.clear();
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("x1 OK "), "{text}");
    assert!(text.contains("x2 OK NOOP completed"), "{text}");
    assert!(text.contains("x3 OK Logout completed"), "{text}");
    assert_eq!(rep.bound_to("u1").len(), 1, "{text}");
}

/// A process the registry wrongly believes idle (its listener is mode 0 because it is busy):
/// the dispatcher's connect is refused (it has no DAC override), it releases the claim and
/// retries; once the registry knows the process is busy, a fresh process serves the user.
/// Also: the dispatcher runs without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH.
#[test]
fn busy_process_believed_idle_is_skipped() {
    let d = start();
    let mut rep = Reporter::new(d.base_dir());
    wait_for(DEADLINE, || (rep.births() >= 2).then_some(())).expect("two imap processes");
    let (mut a, _) = login(&d, "u1", "p1");
    let p = wait_for(DEADLINE, || login_mpid(&d, "u1", 0)).unwrap();
    wait_for(DEADLINE, || (!rep.is_idle(p)).then_some(())).expect("P's listener closed");
    rep.idle(p); // the lie
    rep.births();
    let port = d.imap_port().unwrap();
    let second = std::thread::spawn(move || {
        let mut c = ImapClient::connect(port).unwrap();
        let r = c.login("u1", "p1").unwrap();
        (c, r)
    });
    // The dispatcher holds a claim on P (it is retrying on it) ...
    wait_for(DEADLINE, || {
        rep.claims_of("u1")
            .contains(&(p, "claimed".to_owned()))
            .then_some(())
    })
    .expect("the dispatcher claims P");
    // ... until the truth arrives.
    rep.busy(p);
    let (mut b, r) = second.join().unwrap();
    assert!(r.is_ok(), "{r:?}\n{}", d.log_tail(30));
    let q = wait_for(DEADLINE, || login_mpid(&d, "u1", 1)).unwrap();
    assert_ne!(q, p);
    session_works(&mut a);
    session_works(&mut b);
    a.logout().unwrap();
    b.logout().unwrap();

    let dispatcher = foreman::stock::procs::children_of(d.pid().unwrap())
        .into_iter()
        .find(|p| p.cmdline.contains("dispatch"))
        .expect("the dispatcher process");
    let status = fs::read_to_string(format!("/proc/{}/status", dispatcher.pid)).unwrap();
    for set in ["CapEff:", "CapPrm:"] {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(set))
            .unwrap()
            .trim();
        let bits = u64::from_str_radix(hex, 16).unwrap();
        assert_eq!(bits & 0b110, 0, "{set} {hex}");
        assert_ne!(bits, 0, "{set}: the other capabilities stay");
    }
}
