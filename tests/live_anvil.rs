//! Live proof against stock Dovecot 2.3.19.1: every scenario runs twice, once with the stock
//! anvil and once with `service anvil { executable = <foreman> anvil }`, and the normalised
//! outputs (pids and times replaced by placeholders, rows sorted where stock's order is hash
//! order) must be equal. Each run also checks its own expectations, so a scenario that is
//! wrong in both runs fails too.
//!
//! Needs stock Dovecot (`apt-get install dovecot-core dovecot-imapd dovecot-pop3d`; the test
//! command installs it) and root. Instances are independent (own temp dir, ports, instance
//! name), so scenarios run in parallel.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use foreman::stock::{wait_for, ImapClient, Pop3Client, StockDovecot};

const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anvil {
    Stock,
    Foreman,
}

/// Normalised outputs of one run, by name.
type Transcript = BTreeMap<&'static str, String>;

fn start(
    anvil: Anvil,
    configure: impl FnOnce(foreman::stock::Builder) -> foreman::stock::Builder,
) -> StockDovecot {
    let mut builder = StockDovecot::builder()
        .user("alice", "alicepw")
        .user("bob", "bobpw")
        .config_line("auth_failure_delay = 0");
    if anvil == Anvil::Foreman {
        builder = builder.custom_anvil(env!("CARGO_BIN_EXE_foreman"), &["anvil"]);
    }
    configure(builder)
        .start()
        .unwrap_or_else(|e| panic!("starting stock Dovecot ({anvil:?} anvil) failed: {e}"))
}

fn text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.stderr.is_empty() {
        s.push_str("[stderr]\n");
        s.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    if !out.status.success() {
        s.push_str(&format!("[exit {:?}]\n", out.status.code()));
    }
    s
}

fn doveadm(d: &StockDovecot, args: &[&str]) -> String {
    text(&d.doveadm(args).expect("run doveadm"))
}

fn foreman_who(d: &StockDovecot, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_foreman"))
        .arg("who")
        .arg("-a")
        .arg(d.anvil_socket())
        .args(args)
        .output()
        .expect("run foreman who");
    text(&out)
}

/// Replaces pids (digit runs of 3+ that are not part of an IP, date or time) by `PID`.
fn mask_pids(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let before = start.checked_sub(1).map(|j| bytes[j]);
            let after = bytes.get(i).copied();
            let glued = |c: Option<u8>| matches!(c, Some(b'.' | b':' | b'-'));
            if i - start >= 3 && !glued(before) && !glued(after) {
                out.push_str("PID");
            } else {
                out.push_str(&line[start..i]);
            }
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

/// Collapses padding, masks pids and sorts the rows after the header line: the form in which
/// outputs of different runs (other pids, other hash orders) are compared.
fn normalise(output: &str) -> String {
    let mut lines = output
        .lines()
        .map(|l| mask_pids(&l.split_whitespace().collect::<Vec<_>>().join(" ")));
    let header = lines.next().unwrap_or_default();
    let mut rows: Vec<String> = lines.collect();
    rows.sort();
    std::iter::once(header)
        .chain(rows)
        .map(|l| l + "\n")
        .collect()
}

/// The `doveadm who -1` data rows.
fn sessions(d: &StockDovecot) -> Vec<String> {
    doveadm(d, &["who", "-1"])
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

fn wait_sessions(d: &StockDovecot, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
    wait_for(DEADLINE, || {
        let rows = sessions(d);
        pred(&rows).then_some(rows)
    })
    .unwrap_or_else(|| {
        panic!(
            "timed out waiting for {what}; doveadm who -1:\n{}\nlog:\n{}",
            sessions(d).join("\n"),
            d.log_tail(30)
        )
    })
}

fn count_user(rows: &[String], user: &str) -> usize {
    rows.iter()
        .filter(|r| r.split_whitespace().next() == Some(user))
        .count()
}

fn imap_login(d: &StockDovecot, user: &str, password: &str) -> (ImapClient, String) {
    let mut c = d.imap().expect("connect imap");
    let reply = c.login(user, password).expect("imap login");
    (c, reply.tagged)
}

fn pop3_login(d: &StockDovecot, user: &str, password: &str) -> (Pop3Client, String) {
    let mut c = d.pop3().expect("connect pop3");
    let reply = c.login(user, password).expect("pop3 login");
    (c, reply)
}

/// Lines the anvil logged as errors (any anvil), for the comparison.
fn anvil_errors(d: &StockDovecot) -> String {
    d.log_contents()
        .lines()
        .filter(|l| {
            l.contains("anvil")
                && (l.contains("Error") || l.contains("Fatal") || l.contains("Panic"))
        })
        .map(|l| format!("{}\n", l.split_once(' ').map_or(l, |(_, rest)| rest)))
        .collect()
}

/// Runs a scenario with both anvils (in parallel) and requires equal transcripts.
/// `LIVE_ANVIL_ONLY=stock` (or `foreman`) runs one side only, for debugging a scenario.
fn both(scenario: fn(Anvil) -> Transcript) {
    match std::env::var("LIVE_ANVIL_ONLY").as_deref() {
        Ok("stock") => {
            eprintln!("LIVE_ANVIL_ONLY=stock: Foreman's anvil NOT checked");
            eprintln!("{:#?}", scenario(Anvil::Stock));
            return;
        }
        Ok("foreman") => {
            eprintln!("LIVE_ANVIL_ONLY=foreman: no comparison with stock");
            scenario(Anvil::Foreman);
            return;
        }
        _ => {}
    }
    let (stock, foreman) = std::thread::scope(|s| {
        let stock = s.spawn(|| scenario(Anvil::Stock));
        let foreman = s.spawn(|| scenario(Anvil::Foreman));
        (stock.join(), foreman.join())
    });
    let stock = stock.unwrap_or_else(|e| std::panic::resume_unwind(e));
    let foreman = foreman.unwrap_or_else(|_| {
        panic!("the scenario failed with Foreman's anvil (see the panic above)")
    });
    for (key, want) in &stock {
        assert_eq!(
            foreman.get(key),
            Some(want),
            "{key}: Foreman's anvil differs from stock"
        );
    }
    assert_eq!(
        stock.keys().collect::<Vec<_>>(),
        foreman.keys().collect::<Vec<_>>()
    );
}

/// (a) alice with 3 IMAP sessions, bob with 1 POP3 session, all kept open: `doveadm who`
/// variants and `foreman who`.
fn sessions_and_who(anvil: Anvil) -> Transcript {
    let d = start(anvil, |b| b);
    let mut t = Transcript::new();
    let mut clients = Vec::new();
    for i in 0..3 {
        let (c, reply) = imap_login(&d, "alice", "alicepw");
        assert!(reply.starts_with("OK"), "alice login {i}: {reply}");
        clients.push(c);
    }
    let (bob, reply) = pop3_login(&d, "bob", "bobpw");
    assert!(reply.starts_with("+OK"), "bob: {reply}");
    wait_sessions(&d, "3 alice + 1 bob", |r| {
        count_user(r, "alice") == 3 && count_user(r, "bob") == 1
    });

    for args in [
        &["who"][..],
        &["who", "-1"],
        &["who", "alice"],
        &["who", "a*"],
        &["who", "127.0.0.1"],
    ] {
        let key: &'static str = match args {
            ["who"] => "doveadm who",
            ["who", "-1"] => "doveadm who -1",
            ["who", "alice"] => "doveadm who alice",
            ["who", "a*"] => "doveadm who a*",
            _ => "doveadm who 127.0.0.1",
        };
        t.insert(key, normalise(&doveadm(&d, args)));
    }
    assert_eq!(
        t["doveadm who"],
        "username # proto (pids) (ips)\nalice 3 imap (PID PID PID) (127.0.0.1)\nbob 1 pop3 (PID) (127.0.0.1)\n"
    );
    assert_eq!(
        t["doveadm who alice"],
        "username # proto (pids) (ips)\nalice 3 imap (PID PID PID) (127.0.0.1)\n"
    );
    assert_eq!(t["doveadm who a*"], t["doveadm who alice"]);
    assert_eq!(
        t["doveadm who -1"],
        "username proto pid ip\nalice imap PID 127.0.0.1\nalice imap PID 127.0.0.1\nalice imap PID 127.0.0.1\nbob pop3 PID 127.0.0.1\n"
    );

    // foreman who against the same anvil: byte for byte where the row order is defined
    // (-1 follows the dump order; a single group), same rows otherwise (stock prints groups
    // in hash order, Foreman in order of first appearance).
    for args in [
        &["-1"][..],
        &["alice"],
        &["a*"],
        &["-1", "bob"],
        &["-1", "127.0.0.0/8"],
    ] {
        let mut doveadm_args = vec!["who"];
        doveadm_args.extend_from_slice(args);
        assert_eq!(
            foreman_who(&d, args),
            doveadm(&d, &doveadm_args),
            "foreman who {args:?}"
        );
    }
    let ours = foreman_who(&d, &[]);
    assert_eq!(normalise(&ours), t["doveadm who"], "foreman who");
    t.insert("foreman who", normalise(&ours));
    t.insert("foreman who -1", normalise(&foreman_who(&d, &["-1"])));
    let json: serde_json::Value =
        serde_json::from_str(&foreman_who(&d, &["--json"])).expect("foreman who --json");
    assert_eq!(json.as_array().map(Vec::len), Some(2), "{json}");

    for c in clients {
        c.logout().expect("alice logout");
    }
    bob.quit().expect("bob quit");
    wait_sessions(&d, "all sessions gone", |r| r.is_empty());
    t.insert(
        "doveadm who after logout",
        normalise(&doveadm(&d, &["who"])),
    );
    t.insert("anvil errors", anvil_errors(&d));
    t
}

#[test]
fn a_sessions_and_who() {
    both(sessions_and_who);
}

/// (b) `mail_max_userip_connections = 2`: the third IMAP login of alice is refused.
fn userip_limit(anvil: Anvil) -> Transcript {
    let d = start(anvil, |b| b.mail_max_userip_connections(2));
    let mut t = Transcript::new();
    let (_c1, r1) = imap_login(&d, "alice", "alicepw");
    let (_c2, r2) = imap_login(&d, "alice", "alicepw");
    assert!(r1.starts_with("OK") && r2.starts_with("OK"), "{r1} / {r2}");
    // The login process asks anvil (LOOKUP) whether the user is below the limit; the CONNECTs
    // reach anvil through a pipe, so wait until both sessions are counted.
    wait_sessions(&d, "2 alice sessions", |r| count_user(r, "alice") == 2);
    let (_c3, r3) = imap_login(&d, "alice", "alicepw");
    assert_eq!(
        r3,
        "NO [LIMIT] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=2)"
    );
    t.insert("third login", r3);
    let (_b, rb) = pop3_login(&d, "bob", "bobpw");
    assert!(rb.starts_with("+OK"), "bob is not limited by alice: {rb}");
    wait_sessions(&d, "bob's session", |r| count_user(r, "bob") == 1);
    t.insert("doveadm who", normalise(&doveadm(&d, &["who"])));
    t.insert("anvil errors", anvil_errors(&d));
    t
}

#[test]
fn b_userip_limit() {
    both(userip_limit);
}

/// Masks the time columns of `doveadm penalty` (`YYYY-MM-DD HH:MM:SS` and `HH:MM:SS`).
fn mask_times(line: &str) -> String {
    line.split_whitespace()
        .map(|tok| {
            let shape: String = tok
                .chars()
                .map(|c| if c.is_ascii_digit() { '9' } else { c })
                .collect();
            match shape.as_str() {
                "9999-99-99" => "DATE",
                "99:99:99" => "TIME",
                _ => tok,
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// (c) Wrong passwords: auth penalties in anvil, listed by `doveadm penalty`.
fn auth_penalty(anvil: Anvil) -> Transcript {
    let d = start(anvil, |b| b);
    let mut t = Transcript::new();
    let mut replies = Vec::new();
    // x1, x1 (same password: the penalty stays), x2 (new password: the penalty rises).
    let penalty_value = || {
        let out = doveadm(&d, &["penalty"]);
        out.lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("-")
            .to_owned()
    };
    for (password, want) in [("x1", "1"), ("x1", "1"), ("x2", "2")] {
        let (c, reply) = imap_login(&d, "alice", password);
        replies.push(reply);
        c.abort();
        // auth reports the failure to anvil on its own connection: wait for it.
        wait_for(DEADLINE, || (penalty_value() == want).then_some(())).unwrap_or_else(|| {
            panic!(
                "penalty after {password}: want {want}, have {}",
                penalty_value()
            )
        });
    }
    assert!(
        replies
            .iter()
            .all(|r| r.starts_with("NO [AUTHENTICATIONFAILED]")),
        "{replies:?}"
    );
    t.insert("failed login replies", replies.join("\n"));
    let penalty = doveadm(&d, &["penalty"]);
    let normalised: String = penalty.lines().map(|l| mask_times(l) + "\n").collect();
    assert_eq!(
        normalised, "IP penalty last_penalty last_update\n127.0.0.1 2 DATE TIME TIME\n",
        "{penalty}"
    );
    t.insert("doveadm penalty", normalised);
    let filtered: String = doveadm(&d, &["penalty", "127.0.0.0/8"])
        .lines()
        .map(|l| mask_times(l) + "\n")
        .collect();
    t.insert("doveadm penalty 127.0.0.0/8", filtered);
    // A successful login resets the penalty to 0.
    let (c, reply) = imap_login(&d, "alice", "alicepw");
    assert!(reply.starts_with("OK"), "{reply}");
    c.logout().expect("logout");
    wait_for(DEADLINE, || (penalty_value() == "0").then_some(()))
        .expect("penalty reset after success");
    let after: String = doveadm(&d, &["penalty"])
        .lines()
        .map(|l| mask_times(l) + "\n")
        .collect();
    assert_eq!(
        after,
        "IP penalty last_penalty last_update\n127.0.0.1 0 DATE TIME TIME\n"
    );
    t.insert("doveadm penalty after success", after);
    t.insert("anvil errors", anvil_errors(&d));
    t
}

#[test]
fn c_auth_penalty() {
    both(auth_penalty);
}

/// (d) `doveadm kick alice` closes alice's sessions and leaves bob's.
fn kick(anvil: Anvil) -> Transcript {
    let d = start(anvil, |b| b);
    let mut t = Transcript::new();
    let mut alice = Vec::new();
    for _ in 0..2 {
        let (c, reply) = imap_login(&d, "alice", "alicepw");
        assert!(reply.starts_with("OK"), "{reply}");
        alice.push(c);
    }
    let (mut bob, reply) = imap_login(&d, "bob", "bobpw");
    assert!(reply.starts_with("OK"), "{reply}");
    wait_sessions(&d, "2 alice + 1 bob", |r| {
        count_user(r, "alice") == 2 && count_user(r, "bob") == 1
    });

    t.insert("doveadm kick alice", doveadm(&d, &["kick", "alice"]));
    for (i, c) in alice.iter_mut().enumerate() {
        let lines = c
            .wait_closed(DEADLINE)
            .unwrap_or_else(|e| panic!("alice session {i} not closed: {e}"));
        t.insert(
            if i == 0 {
                "alice 0 last lines"
            } else {
                "alice 1 last lines"
            },
            lines.join("\n"),
        );
    }
    wait_sessions(&d, "alice gone", |r| count_user(r, "alice") == 0);
    let who = normalise(&doveadm(&d, &["who"]));
    assert_eq!(
        who,
        "username # proto (pids) (ips)\nbob 1 imap (PID) (127.0.0.1)\n"
    );
    t.insert("doveadm who after kick", who);
    assert!(bob.command("NOOP").expect("bob still served").is_ok());
    t.insert("doveadm kick nobody", doveadm(&d, &["kick", "nobody"]));
    t.insert("anvil errors", anvil_errors(&d));
    t
}

#[test]
fn d_kick() {
    both(kick);
}

/// (e) SIGKILL of alice's imap process: the master tells anvil (KILL) and the session goes.
fn killed_process(anvil: Anvil) -> Transcript {
    let d = start(anvil, |b| b);
    let mut t = Transcript::new();
    let (mut alice, reply) = imap_login(&d, "alice", "alicepw");
    assert!(reply.starts_with("OK"), "{reply}");
    let (_bob, reply) = pop3_login(&d, "bob", "bobpw");
    assert!(reply.starts_with("+OK"), "{reply}");
    let rows = wait_sessions(&d, "alice + bob", |r| {
        count_user(r, "alice") == 1 && count_user(r, "bob") == 1
    });
    let pid: i32 = rows
        .iter()
        .find(|r| r.starts_with("alice "))
        .and_then(|r| r.split_whitespace().nth(2))
        .and_then(|p| p.parse().ok())
        .expect("alice's pid in doveadm who -1");
    assert_mail_process_of(&d, pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill imap");
    alice
        .wait_closed(DEADLINE)
        .expect("alice's connection closes");
    wait_sessions(&d, "alice's killed session gone", |r| {
        count_user(r, "alice") == 0
    });
    t.insert("doveadm who after kill", normalise(&doveadm(&d, &["who"])));
    t.insert(
        "doveadm who -1 after kill",
        normalise(&doveadm(&d, &["who", "-1"])),
    );
    let killed_log = d
        .log_contents()
        .lines()
        .any(|l| l.contains(&format!("child {pid} killed with signal 9")));
    assert!(killed_log, "master logged the kill:\n{}", d.log_tail(20));
    t.insert("anvil errors", anvil_errors(&d));
    t
}

/// Refuses to signal anything but an imap process of this instance.
fn assert_mail_process_of(d: &StockDovecot, pid: i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("mail process exists");
    let ppid: u32 = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert_eq!(
        Some(ppid),
        d.pid(),
        "pid {pid} is a child of this instance's master"
    );
    let cmdline = std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("imap"),
        "pid {pid} is an imap process"
    );
}

#[test]
fn e_killed_process() {
    both(killed_process);
}
