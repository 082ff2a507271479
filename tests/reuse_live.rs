//! Per-user reuse live: stock imap-login, auth and imap under `foreman master` with Foreman's
//! anvil and the dispatcher (`foreman dispatch`, `dispatch::reuse_config`).
//!
//! Until the master reports its imap processes to anvil itself (branch `mreg`), the test
//! plays that part: it watches `$BASE/imap-master-<pid>` (the per-process listeners; mode 0 =
//! busy) and sends PROC-BIRTH (only for pids the registry does not know: a second birth would
//! wipe a binding) and PROC-IDLE after a logout (harmless when the master sends it too) over
//! a foreman-anvil connection.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use foreman::stock::{wait_for, ImapClient, StockDovecot};
use support::{
    foreman_child, login, login_in_thread, mpids_of, now_ms, reuse, reuse_builder, session_works,
    wait_mpid, DEADLINE,
};

fn start() -> StockDovecot {
    start_with(&[])
}

fn start_with(extra: &[&str]) -> StockDovecot {
    let mut b = reuse_builder(&reuse(10, 2, 2))
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

impl Reporter {
    fn new(base: &Path) -> Reporter {
        // The harness waits for the socket file; the master may not listen on it yet.
        let path = base.join("anvil");
        let mut conn = wait_for(DEADLINE, || UnixStream::connect(&path).ok())
            .unwrap_or_else(|| panic!("connect {}", path.display()));
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

    /// [`Reporter::new`] once the instance has at least `n` imap processes (all reported).
    fn with_processes(d: &StockDovecot, n: usize) -> Reporter {
        let mut rep = Reporter::new(d.base_dir());
        wait_for(DEADLINE, || (rep.births() >= n).then_some(()))
            .unwrap_or_else(|| panic!("fewer than {n} imap processes\n{}", d.log_tail(40)));
        rep
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

    /// Reports every process the registry does not know yet (once the master reports its
    /// processes itself, this reports nothing); returns how many processes exist.
    fn births(&mut self) -> usize {
        let all = self.listeners();
        let known: BTreeSet<u32> = self.rows("PROC-DUMP").into_iter().map(|r| r.0).collect();
        for (pid, _) in &all {
            if !known.contains(pid) && self.born.insert(*pid) {
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
        self.claims_of(user).into_iter().map(|(p, _)| p).collect()
    }

    /// `PROC-LIST imap <user>`: (pid, claim column) of the processes bound to `user`.
    fn claims_of(&mut self, user: &str) -> Vec<(u32, String)> {
        let rows = self.rows(&format!("PROC-LIST\timap\t{user}"));
        rows.into_iter()
            .map(|(pid, u, claim)| {
                assert_eq!(u, user);
                (pid, claim)
            })
            .collect()
    }

    /// The registry's state column (`fresh`, `idle`, `busy`) of `pid`.
    fn state(&mut self, pid: u32) -> Option<String> {
        let pid = pid.to_string();
        self.fields("PROC-DUMP")
            .into_iter()
            .rev()
            .find(|f| f[0] == pid)
            .map(|f| f[4].clone())
    }

    /// (pid, user, claim) of each row a PROC-LIST / PROC-DUMP returns.
    fn rows(&mut self, command: &str) -> Vec<(u32, String, String)> {
        self.fields(command)
            .into_iter()
            .map(|f| (f[0].parse().unwrap(), f[2].clone(), f[6].clone()))
            .collect()
    }

    /// The tab-separated fields of each row `command` returns (up to the empty line).
    fn fields(&mut self, command: &str) -> Vec<Vec<String>> {
        self.conn
            .write_all(format!("{command}\n").as_bytes())
            .unwrap();
        let mut r = BufReader::new(self.conn.try_clone().unwrap());
        let mut rows = Vec::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                return rows;
            }
            rows.push(line.split('\t').map(str::to_owned).collect());
        }
    }

    fn is_idle(&self, pid: u32) -> bool {
        self.listeners().contains(&(pid, true))
    }
}

/// The `mpid=` of the n-th (0-based) imap-login `Login:` line of `user`.
fn login_mpid(d: &StockDovecot, user: &str, n: usize) -> Option<u32> {
    mpids_of(d, user).get(n).copied()
}

#[test]
fn same_user_gets_same_process_other_user_another() {
    let d = start();
    let mut rep = Reporter::with_processes(&d, 1);

    // u1, first time: a fresh process P.
    let (mut c, ok1) = login_reply(&d, "u1", "p1");
    session_works(&mut c);
    let p = wait_mpid(&d, "u1", 0);
    // The dispatcher claimed P for u1 in the registry.
    assert_eq!(rep.bound_to("u1"), vec![p]);
    c.logout().unwrap();
    wait_for(DEADLINE, || rep.is_idle(p).then_some(())).expect("P idle again");
    rep.idle(p);
    rep.births();

    // u1 again: the same process.
    let (mut c, ok2) = login_reply(&d, "u1", "p1");
    session_works(&mut c);
    let p2 = wait_mpid(&d, "u1", 1);
    assert_eq!(p2, p, "u1's second session went to another process");
    assert_eq!(ok1.tagged, ok2.tagged);
    c.logout().unwrap();
    wait_for(DEADLINE, || rep.is_idle(p).then_some(())).expect("P idle again");
    rep.idle(p);
    rep.births();

    // u2: never u1's process.
    let mut c = login(&d, "u2", "p2");
    session_works(&mut c);
    let q = wait_mpid(&d, "u2", 0);
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
        // A client that asked CAPABILITY before LOGIN: imap-login's prefix byte is `1`, the
        // capabilities come untagged before a plain tagged OK.
        let (c, stock_after_cap) = login_reply_after_capability(&stock);
        c.logout().unwrap();
        assert_eq!(stock_after_cap.tagged, "OK Logged in");

        let d = start_with(settings);
        let mut rep = Reporter::with_processes(&d, 1);
        let (mut c, ours) = login_reply(&d, "u1", "p1");
        // The hand-off really happened (the registry bound a process to u1).
        assert_eq!(rep.bound_to("u1").len(), 1);
        session_works(&mut c);
        c.logout().unwrap();
        assert_eq!(ours, stock_reply, "settings {settings:?}");
        let (c, ours_after_cap) = login_reply_after_capability(&d);
        c.logout().unwrap();
        assert_eq!(ours_after_cap, stock_after_cap, "settings {settings:?}");
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

fn login_reply_after_capability(d: &StockDovecot) -> (ImapClient, foreman::stock::imap::ImapReply) {
    let mut c = ImapClient::connect(d.imap_port().unwrap()).unwrap();
    assert!(c.command("CAPABILITY").unwrap().is_ok());
    let r = c.login("u1", "p1").unwrap();
    assert!(r.is_ok(), "LOGIN: {r:?}\n{}", d.log_tail(40));
    (c, r)
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
    let mut rep = Reporter::with_processes(&d, 2);
    let mut a = login(&d, "u1", "p1");
    rep.births();
    let mut b = login(&d, "u1", "p1");
    session_works(&mut a);
    session_works(&mut b);
    let pa = wait_mpid(&d, "u1", 0);
    let pb = wait_mpid(&d, "u1", 1);
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
    let mut rep = Reporter::with_processes(&d, 1);
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
/// the dispatcher's connect is refused (it has no DAC override), it releases the claim
/// `busy` (not claimed again until the master reports on it) and retries: a fresh process
/// serves the user.
/// Also: the dispatcher runs without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH.
#[test]
fn busy_process_believed_idle_is_skipped() {
    let d = start();
    let mut rep = Reporter::with_processes(&d, 2);
    let mut a = login(&d, "u1", "p1");
    let p = wait_mpid(&d, "u1", 0);
    wait_for(DEADLINE, || (!rep.is_idle(p)).then_some(())).expect("P's listener closed");
    // Once the registry has P busy (the dispatcher's RELEASE served, and the master's own
    // PROC-BUSY if it reports), nothing changes P's state until A logs out: now lie.
    wait_for(DEADLINE, || {
        (rep.state(p).as_deref() == Some("busy")).then_some(())
    })
    .expect("P busy in the registry");
    rep.idle(p); // the lie
    rep.births();
    let second = login_in_thread(&d, "u1", "p1");
    // CLAIM must return P first (idle, bound to u1: a reuse hit); the connect is refused
    // (mode 0, no DAC override), the dispatcher releases P `busy` and claims again: a
    // fresh process serves B.
    let (mut b, r) = second.join().unwrap();
    assert!(r.is_ok(), "{r:?}\n{}", d.log_tail(30));
    let q = wait_mpid(&d, "u1", 1);
    assert_ne!(q, p);
    session_works(&mut a);
    session_works(&mut b);
    a.logout().unwrap();
    b.logout().unwrap();

    let dispatcher = foreman_child(&d, "dispatch").expect("the dispatcher process");
    let status = fs::read_to_string(format!("/proc/{dispatcher}/status")).unwrap();
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

/// The whole path with nothing faked: the master reports its imap processes to anvil
/// itself, and with no spare process at all (`process_min_avail = 0`) every first login of
/// a user goes CLAIM → none → FOREMAN-NEED → the master spawns → CLAIM again.
#[test]
fn no_spares_the_master_spawns_on_need_and_reuse_follows() {
    let d = reuse_builder(&reuse(10, 2, 0))
        .user("u1", "p1")
        .user("u2", "p2")
        .start()
        .expect("start");
    let base = d.base_dir().to_owned();
    let mut rep = Reporter::new(&base);
    for round in 0..2 {
        for (n, user) in ["u1", "u2"].iter().enumerate() {
            let mut c = login(&d, user, &format!("p{}", n + 1));
            session_works(&mut c);
            c.logout().unwrap();
            let pid = wait_mpid(&d, user, round);
            // Wait until the master has reported the process idle again.
            wait_for(DEADLINE, || {
                (rep.state(pid).as_deref() == Some("idle")).then_some(())
            })
            .unwrap_or_else(|| panic!("{user}'s process never idle\n{}", d.log_tail(30)));
        }
    }
    let p1 = login_mpid(&d, "u1", 0).unwrap();
    let p2 = login_mpid(&d, "u2", 0).unwrap();
    assert_ne!(p1, p2);
    assert_eq!(login_mpid(&d, "u1", 1), Some(p1));
    assert_eq!(login_mpid(&d, "u2", 1), Some(p2));
    assert_eq!(rep.bound_to("u1"), vec![p1]);
    assert_eq!(rep.bound_to("u2"), vec![p2]);
    assert_eq!(rep.born.len(), 0, "the test reported nothing");
    let log = d.log_contents();
    assert!(!log.contains("foreman-dispatch: Error"), "{log}");
    assert!(!log.contains("foreman-dispatch: Warning"), "{log}");
}

/// Many concurrent logins of a few users against a pool smaller than the number of clients
/// (5 clients, 3 processes: logins wait, the master evicts idle processes): every login
/// succeeds and works, and no imap process ever serves two users (imap's own log lines name the user
/// and pid of every session).
#[test]
fn concurrent_logins_never_mix_users_in_a_process() {
    let d = reuse_builder(&reuse(3, 1, 1))
        .user("u1", "p1")
        .user("u2", "p2")
        .user("u3", "p3")
        .start()
        .expect("start");
    let port = d.imap_port().unwrap();
    let threads: Vec<_> = (0..5)
        .map(|t| {
            std::thread::spawn(move || {
                for round in 0..4 {
                    let n = (t + round) % 3 + 1;
                    let mut c = ImapClient::connect(port).unwrap();
                    let r = c.login(&format!("u{n}"), &format!("p{n}")).unwrap();
                    assert!(r.is_ok(), "thread {t} round {round}: {r:?}");
                    session_works(&mut c);
                    c.logout().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join()
            .unwrap_or_else(|_| panic!("a client failed\n{}", d.log_tail(40)));
    }
    // imap(u1)<1234><session>: ... Disconnected (logged through the log process: wait)
    let log = wait_for(DEADLINE, || {
        let log = d.log_contents();
        (log.matches("Disconnected: Logged out").count() >= 20).then_some(log)
    })
    .unwrap_or_else(|| panic!("20 sessions\n{}", d.log_contents()));
    let mut users_of: std::collections::BTreeMap<u32, BTreeSet<String>> = Default::default();
    let mut sessions = 0;
    for line in log.lines().filter(|l| l.contains("Disconnected")) {
        let Some(rest) = line.split(" imap(").nth(1) else {
            continue;
        };
        let (user, rest) = rest.split_once(")<").unwrap();
        let pid: u32 = rest.split('>').next().unwrap().parse().unwrap();
        users_of.entry(pid).or_default().insert(user.to_owned());
        sessions += 1;
    }
    assert_eq!(sessions, 20, "{log}");
    for (pid, users) in &users_of {
        assert_eq!(users.len(), 1, "pid {pid} served {users:?}\n{log}");
    }
    assert!(users_of.len() < 20, "some process was reused: {users_of:?}");
    assert!(!log.contains("foreman-dispatch: Error"), "{log}");
}

/// A malformed request on the dispatcher's listener is logged (through the master's log
/// service, with the dispatcher's prefix) and closes only that connection; logins go on.
#[test]
fn bad_login_request_is_logged_and_others_are_served() {
    use std::io::Read;
    let d = start();
    let path = d.base_dir().join("login/foreman-dispatch");
    let mut bad = UnixStream::connect(&path).unwrap();
    let mut req = [0u8; 96];
    req[80..84].copy_from_slice(&5000u32.to_ne_bytes()); // data_size above 1218
    bad.write_all(&req).unwrap();
    bad.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut b = [0u8; 12];
    assert_eq!(bad.read(&mut b).unwrap(), 0, "closed without a reply");
    let line = wait_for(DEADLINE, || {
        d.log_contents()
            .lines()
            .find(|l| l.contains("Too large auth data_size"))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no log line\n{}", d.log_tail(20)));
    assert!(
        line.contains(
            "foreman-dispatch: Error: login client: Too large auth data_size sent (5000)"
        ),
        "{line}"
    );
    let mut c = login(&d, "u1", "p1");
    session_works(&mut c);
    c.logout().unwrap();
}
