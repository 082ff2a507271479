//! The guarantees of per-user reuse (docs/reuse.md, issue 6), live: stock imap-login, auth
//! and imap under `foreman master` with Foreman's anvil and the dispatcher.
//!
//! This file: no client lost and none served twice under 100 parallel logins of one user;
//! two users in parallel never share a process. Other guarantees: `reuse_guarantees_*.rs`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use foreman::stock::{wait_for, ImapClient, StockDovecot};
use support::*;

/// What one client saw.
#[derive(Debug)]
struct Outcome {
    user: String,
    /// Tagged LOGIN reply (without tag) or the error.
    login: Result<String, String>,
    /// Every line after the LOGIN reply up to the close (NOOP's and LOGOUT's replies).
    rest: Result<Vec<String>, String>,
}

/// LOGIN, NOOP, LOGOUT; every line the server sent after the LOGIN reply.
fn one_client(port: u16, user: &str, pw: &str) -> Outcome {
    let mut out = Outcome {
        user: user.to_owned(),
        login: Err("not connected".into()),
        rest: Err("not run".into()),
    };
    let mut c = match ImapClient::connect(port) {
        Ok(c) => c,
        Err(e) => {
            out.login = Err(format!("connect: {e}"));
            return out;
        }
    };
    out.login = c
        .login(user, pw)
        .map(|r| r.tagged)
        .map_err(|e| e.to_string());
    if out.login.is_err() {
        return out;
    }
    let mut lines = Vec::new();
    let run = (|| {
        let r = c.command("NOOP").map_err(|e| e.to_string())?;
        lines.extend(r.untagged);
        lines.push(format!("a2 {}", r.tagged));
        let r = c.command("LOGOUT").map_err(|e| e.to_string())?;
        lines.extend(r.untagged);
        lines.push(format!("a3 {}", r.tagged));
        lines.extend(c.wait_closed(DEADLINE).map_err(|e| e.to_string())?);
        Ok::<_, String>(())
    })();
    out.rest = run.map(|()| lines);
    out
}

/// Runs `users.len()` clients at once (one thread each); every outcome, or a panic naming
/// the clients that got no answer within `deadline`.
fn run_parallel(d: &StockDovecot, users: &[(&str, &str)], deadline: Duration) -> Vec<Outcome> {
    let port = d.imap_port().unwrap();
    let (tx, rx) = mpsc::channel();
    for (i, &(user, pw)) in users.iter().enumerate() {
        let tx = tx.clone();
        let (user, pw) = (user.to_owned(), pw.to_owned());
        std::thread::spawn(move || {
            let _ = tx.send((i, one_client(port, &user, &pw)));
        });
    }
    drop(tx);
    let end = Instant::now() + deadline;
    let mut got = BTreeMap::new();
    while got.len() < users.len() {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, o)) => {
                got.insert(i, o);
            }
            Err(_) => {
                let missing: Vec<usize> =
                    (0..users.len()).filter(|i| !got.contains_key(i)).collect();
                panic!(
                    "{} of {} clients without an answer after {deadline:?}: {missing:?}\n{}",
                    missing.len(),
                    users.len(),
                    d.log_tail(40)
                );
            }
        }
    }
    got.into_values().collect()
}

/// Every client: one tagged LOGIN OK, its NOOP answered, LOGOUT answered, and no second
/// LOGIN reply (a second process writing to the same client) anywhere after it.
fn check_outcomes(d: &StockDovecot, outcomes: &[Outcome]) {
    for (i, o) in outcomes.iter().enumerate() {
        let ctx = || format!("client {i} ({}): {o:?}\n{}", o.user, d.log_tail(30));
        match &o.login {
            Ok(t) if t.starts_with("OK ") => {}
            _ => panic!("LOGIN not OK: {}", ctx()),
        }
        let rest = o.rest.as_ref().unwrap_or_else(|_| panic!("{}", ctx()));
        assert!(
            rest.iter().any(|l| l.starts_with("a2 OK NOOP completed")),
            "{}",
            ctx()
        );
        assert!(
            rest.iter().any(|l| l.starts_with("a3 OK Logout completed")),
            "{}",
            ctx()
        );
        assert!(
            !rest.iter().any(|l| l.starts_with("a1 ")),
            "a second LOGIN reply: {}",
            ctx()
        );
        assert!(
            !rest.iter().any(|l| l.contains("CAPABILITY IMAP4rev1")),
            "a second LOGIN reply: {}",
            ctx()
        );
    }
}

/// Waits until imap has logged the end of `n` sessions (its `Disconnected` lines); returns
/// the `(user, pid)` of imap's log lines.
fn wait_sessions_logged(d: &StockDovecot, n: usize) -> Vec<(String, u32)> {
    wait_for(DEADLINE, || {
        let ended = d
            .log_contents()
            .lines()
            .filter(|l| l.contains(" imap(") && l.contains("Disconnected: Logged out"))
            .count();
        (ended >= n).then(|| imap_sessions(d))
    })
    .unwrap_or_else(|| panic!("imap did not log {n} session ends\n{}", d.log_tail(40)))
}

/// pid → the users imap's own log lines show for it.
fn users_per_pid(sessions: &[(String, u32)]) -> BTreeMap<u32, BTreeSet<String>> {
    let mut m: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for (u, p) in sessions {
        m.entry(*p).or_default().insert(u.clone());
    }
    m
}

fn start(limit: u32) -> StockDovecot {
    reuse_builder(&reuse(limit, 2, 2))
        .mail_max_userip_connections(1000)
        .user("u1", "p1")
        .user("u2", "p2")
        .start()
        .expect("start the reuse stack")
}

#[test]
fn hundred_parallel_logins_of_one_user_each_served_exactly_once() {
    let d = start(20);
    let users = vec![("u1", "p1"); 100];
    let outcomes = run_parallel(&d, &users, Duration::from_secs(60));
    check_outcomes(&d, &outcomes);

    // imap-login: exactly 100 logins, each handed to an imap process (mpid).
    let l = wait_logins(&d, 100);
    assert_eq!(l.len(), 100, "{l:?}");
    assert!(l.iter().all(|l| l.user == "u1"), "{l:?}");
    // imap: 100 sessions ended, every one of u1, in the processes imap-login named.
    let sessions = wait_sessions_logged(&d, 100);
    let per_pid = users_per_pid(&sessions);
    let mpids: BTreeSet<u32> = l.iter().map(|l| l.mpid).collect();
    for (pid, users) in &per_pid {
        assert_eq!(users.len(), 1, "pid {pid} served {users:?}");
        assert!(mpids.contains(pid), "pid {pid} not named by imap-login");
    }
    assert!(
        mpids.len() <= 20,
        "more processes than process_limit: {mpids:?}"
    );
    // The dispatcher failed nobody.
    assert!(
        !d.log_contents().contains("login failed"),
        "{}",
        d.log_tail(40)
    );
    // The registry binds every process that served u1 to u1 alone.
    for row in imap_rows(&d) {
        if mpids.contains(&row.pid.get()) {
            assert_eq!(row.user, "u1", "{row:?}");
        }
    }
}

#[test]
fn two_users_in_parallel_never_share_a_process() {
    let d = start(20);
    let mut users = Vec::new();
    for _ in 0..50 {
        users.push(("u1", "p1"));
        users.push(("u2", "p2"));
    }
    let outcomes = run_parallel(&d, &users, Duration::from_secs(60));
    check_outcomes(&d, &outcomes);
    let l = wait_logins(&d, 100);
    assert_eq!(l.len(), 100, "{l:?}");
    let of =
        |u: &str| -> BTreeSet<u32> { l.iter().filter(|x| x.user == u).map(|x| x.mpid).collect() };
    let (p1, p2) = (of("u1"), of("u2"));
    assert_eq!(l.iter().filter(|x| x.user == "u1").count(), 50);
    let shared: Vec<&u32> = p1.intersection(&p2).collect();
    assert!(shared.is_empty(), "pids served both users: {shared:?}");
    // imap's own view agrees: no pid logged sessions of both users.
    let sessions = wait_sessions_logged(&d, 100);
    for (pid, users) in users_per_pid(&sessions) {
        assert_eq!(users.len(), 1, "pid {pid} served {users:?}");
    }
    for row in imap_rows(&d) {
        let pid = row.pid.get();
        if p1.contains(&pid) {
            assert_eq!(row.user, "u1", "{row:?}");
        }
        if p2.contains(&pid) {
            assert_eq!(row.user, "u2", "{row:?}");
        }
    }
}
