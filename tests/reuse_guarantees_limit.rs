//! Guarantees of per-user reuse at `process_limit`, live (see `reuse_guarantees.rs`): with
//! idle processes of other users a new user's login succeeds by eviction; with every
//! process busy it waits and is served once a session ends (not lost, not served twice);
//! stock Dovecot in the same scenario (imap `service_count = 0`, `client_limit = 1`, the
//! same `process_limit`) for comparison.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use foreman::stock::{wait_for, ImapClient, StockDovecot};
use support::*;

const USERS: [(&str, &str); 4] = [("u1", "p1"), ("u2", "p2"), ("u3", "p3"), ("u4", "p4")];

fn with_users(mut b: foreman::stock::Builder) -> foreman::stock::Builder {
    for (u, p) in USERS {
        b = b.user(u, p);
    }
    b
}

/// Foreman: 3 processes at most, no margin, no spares.
fn start_foreman() -> StockDovecot {
    with_users(reuse_builder(&reuse(3, 0, 0)))
        .start()
        .expect("start the reuse stack")
}

/// Stock Dovecot in the closest configuration: long-lived imap processes serving one client
/// at a time, at most 3; one long-lived imap-login.
const STOCK_POOL: &[&str] = &[
    "service imap {\n  service_count = 0\n  client_limit = 1\n  process_limit = 3\n}",
    "service imap-login {\n  service_count = 0\n}",
];

fn start_stock() -> StockDovecot {
    let mut b = with_users(StockDovecot::builder());
    for l in STOCK_POOL {
        b = b.config_line(*l);
    }
    b.start().expect("start stock dovecot")
}

/// u1..u3 logged in at once (three processes, the limit); the clients and their mpids.
fn three_sessions(d: &StockDovecot) -> (Vec<ImapClient>, Vec<u32>) {
    let mut held = Vec::new();
    let mut pids = Vec::new();
    for (u, p) in &USERS[..3] {
        held.push(login(d, u, p));
        pids.push(wait_mpid(d, u, 0));
    }
    (held, pids)
}

/// [`three_sessions`], then u4's LOGIN in a thread, which is not answered within a second
/// (asserted): every process is busy.
fn three_sessions_and_u4_waiting(
    d: &StockDovecot,
) -> (
    Vec<ImapClient>,
    Vec<u32>,
    std::thread::JoinHandle<(ImapClient, foreman::stock::imap::ImapReply)>,
) {
    let (held, pids) = three_sessions(d);
    let waiting = login_in_thread(d, "u4", "p4");
    // Not served while every process is busy (bounded look; the login must still be
    // pending afterwards).
    let early = wait_for(Duration::from_secs(1), || {
        (waiting.is_finished() || !mpids_of(d, "u4").is_empty()).then_some(())
    });
    assert!(
        early.is_none(),
        "u4 answered while all were busy\n{}",
        d.log_tail(30)
    );
    (held, pids, waiting)
}

/// The pids of the master's `evicting idle process <pid>` lines, once there is one.
fn evicted(d: &StockDovecot) -> Vec<u32> {
    wait_for(DEADLINE, || Some(evicted_now(d)).filter(|v| !v.is_empty()))
        .unwrap_or_else(|| panic!("nothing evicted\n{}", d.log_tail(30)))
}

/// The pids of the master's `evicting idle process <pid>` lines so far.
fn evicted_now(d: &StockDovecot) -> Vec<u32> {
    d.log_contents()
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("evicting idle process ")?.1;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn at_process_limit_with_idle_processes_a_new_user_gets_in_by_eviction() {
    let d = start_foreman();
    let old: Vec<u32> = USERS[..3]
        .iter()
        .map(|(u, p)| served_once(&d, u, p))
        .collect();
    assert_eq!(old.iter().collect::<BTreeSet<_>>().len(), 3, "{old:?}");
    assert_eq!(imap_pids(&d), {
        let mut o = old.clone();
        o.sort();
        o
    });

    // u4 has no process and the pool is full of other users' idle processes.
    let q = in_and_out(&d, "u4", "p4");
    assert!(!old.contains(&q), "u4 handed another user's process {q}");
    let victims = evicted(&d);
    assert_eq!(victims.len(), 1, "{victims:?}\n{}", d.log_tail(30));
    let v = victims[0];
    assert!(old.contains(&v), "{v} {old:?}");
    wait_for(DEADLINE, || (!alive(&d, v)).then_some(())).expect("the victim is gone");
    for p in &old {
        if *p != v {
            assert!(alive(&d, *p), "{p} died too");
        }
    }
    let live = imap_pids(&d);
    assert!(live.len() <= 3, "over process_limit: {live:?}");
    // Which one: the registry's policy (predictive: a user seen once is expected back one
    // prior interval after their arrival, so the latest arrival is expected back last and
    // goes first; longest-idle would pick u1's).
    assert_eq!(v, old[2], "not the policy's choice; u1..u3: {old:?}");
    for (pid, users) in per_pid(&d) {
        assert_eq!(users.len(), 1, "{pid} served {users:?}");
    }
}

/// pid → users, from imap's own log lines.
fn per_pid(d: &StockDovecot) -> std::collections::BTreeMap<u32, BTreeSet<String>> {
    let mut m: std::collections::BTreeMap<u32, BTreeSet<String>> = Default::default();
    for (u, p) in imap_sessions(d) {
        m.entry(p).or_default().insert(u);
    }
    m
}

/// Stock, same scenario (the pool filled by three users' sessions, then idle): u4 is served
/// at once by a process that served another user before (one uid for all users here): no
/// isolation between users. Foreman (above) never does this.
#[test]
fn stock_at_process_limit_hands_a_new_user_another_users_process() {
    let d = start_stock();
    // Three sessions at once fill the pool (three processes, the limit); then all idle.
    let (held, old) = three_sessions(&d);
    for c in held {
        c.logout().unwrap();
    }
    let q = in_and_out(&d, "u4", "p4");
    assert!(
        old.contains(&q),
        "stock served u4 in a new process {q} (old {old:?})"
    );
    // imap's own log: u4's session line in the pid of another user's (log lines come
    // asynchronously).
    let shared = wait_for(DEADLINE, || {
        per_pid(&d)
            .get(&q)
            .filter(|users| users.contains("u4") && users.len() > 1)
            .cloned()
    });
    assert!(
        shared.is_some(),
        "stock shared no process\n{}",
        d.log_tail(20)
    );
    assert!(imap_pids(&d).len() <= 3);
}

/// Every process busy: the new login waits (it is neither refused nor handed to a busy
/// process) and is served as soon as a session ends, by a new process (the ended session's
/// process is evicted); exactly once.
#[test]
fn at_process_limit_all_busy_a_new_login_waits_and_is_served_once() {
    let d = start_foreman();
    let (mut held, pids, waiting) = three_sessions_and_u4_waiting(&d);
    assert_eq!(imap_pids(&d).len(), 3);

    let first = held.remove(0);
    first.logout().unwrap();
    let (mut c, r) = waiting.join().unwrap();
    assert!(r.is_ok(), "{r:?}\n{}", d.log_tail(30));
    let q = wait_mpid(&d, "u4", 0);
    assert!(!pids.contains(&q), "u4 handed another user's process");
    assert_eq!(mpids_of(&d, "u4"), vec![q], "served once");
    let r = c.command("NOOP").unwrap();
    assert!(r.is_ok() && r.untagged.iter().all(|l| !l.contains("Logged in")));
    assert_eq!(evicted(&d), vec![pids[0]], "{}", d.log_tail(30));
    for h in &mut held {
        session_works(h);
    }
    assert!(imap_pids(&d).len() <= 3);
    assert!(!d.log_contents().contains("login failed"));
}

/// Stock, same scenario: the login waits as well (the master stops listening at
/// process_limit) and is served by the process whose session ended: the process that served
/// u1 now serves u4.
#[test]
fn stock_at_process_limit_all_busy_queues_then_shares_a_process() {
    let d = start_stock();
    let (mut held, pids, waiting) = three_sessions_and_u4_waiting(&d);
    held.remove(0).logout().unwrap();
    let (_c, r) = waiting.join().unwrap();
    assert!(r.is_ok(), "{r:?}\n{}", d.log_tail(30));
    let q = wait_mpid(&d, "u4", 0);
    assert_eq!(q, pids[0], "stock: u4 in u1's former process");
}

/// u1..u3 in at once (three processes, the limit), then out: three idle processes of three
/// uids. Then u4 (a fourth uid) logs in: the client and its LOGIN reply (or error).
fn distinct_uids_scenario(d: &StockDovecot) -> (Vec<u32>, Result<ImapClient, String>) {
    let (held, pids) = three_sessions(d);
    for c in held {
        c.logout().unwrap();
    }
    let mut c = d.imap().unwrap();
    let r = c
        .login("u4", "p4")
        .map_err(|e| e.to_string())
        .and_then(|r| {
            if r.is_ok() {
                Ok(c)
            } else {
                Err(format!("{r:?}"))
            }
        });
    (pids, r)
}

/// Users of four uids, process_limit 3, three idle processes: stock hands u4's client to an
/// idle process of another uid, which dies on the uid change (the client is dropped without
/// a LOGIN reply); Foreman evicts one and serves u4 in a new process.
#[test]
fn distinct_uids_at_process_limit_foreman_evicts_where_stock_drops() {
    let db = UserdbDir::new(&FOUR_UIDS);
    let mut b = db.apply(StockDovecot::builder(), &FOUR_UIDS, "/usr/sbin/dovecot");
    for l in STOCK_POOL {
        b = b.config_line(*l);
    }
    let stock = b.start().expect("start stock dovecot");
    let (old, r) = distinct_uids_scenario(&stock);
    assert!(r.is_err(), "stock served u4");
    let fatal = wait_for(DEADLINE, || {
        stock
            .log_contents()
            .lines()
            .find(|l| l.contains("imap(u4)") && l.contains("Fatal: setuid(60004"))
            .map(str::to_owned)
    });
    assert!(fatal.is_some(), "{}", stock.log_tail(20));
    assert!(old.contains(&wait_mpid(&stock, "u4", 0)));
    drop(stock);

    let db = UserdbDir::new(&FOUR_UIDS);
    let d = db.start_foreman(&reuse(3, 0, 0), &FOUR_UIDS);
    let (old, r) = distinct_uids_scenario(&d);
    let mut c = r.unwrap_or_else(|e| panic!("u4: {e}\n{}", d.log_tail(30)));
    session_works(&mut c);
    let q = wait_mpid(&d, "u4", 0);
    assert!(!old.contains(&q), "u4 in another uid's process");
    assert_eq!(evicted(&d).len(), 1, "{}", d.log_tail(30));
    assert!(!d.log_contents().contains("Fatal"), "{}", d.log_tail(30));
    c.logout().unwrap();
}

/// Eviction under pressure: 12 users (one uid: only the registry keeps them apart), two
/// sessions each in a row, all users at once, process_limit 4. Every login is served once,
/// no process ever serves two users, and the pool never exceeds its limit.
#[test]
fn many_users_at_a_small_limit_all_served_never_shared() {
    let mut b = reuse_builder(&reuse(4, 0, 0)).mail_max_userip_connections(100);
    let names: Vec<String> = (1..=12).map(|i| format!("m{i}")).collect();
    for n in &names {
        b = b.user(n.clone(), "pw");
    }
    let d = b.start().expect("start the reuse stack");
    let port = d.imap_port().unwrap();
    let threads: Vec<_> = names
        .iter()
        .cloned()
        .map(|n| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for _ in 0..2 {
                    let mut c = ImapClient::connect(port).unwrap();
                    let r = c.login(&n, "pw").unwrap();
                    let ok = r.is_ok();
                    out.push(r);
                    if ok {
                        let noop = c.command("NOOP").unwrap();
                        out.push(noop);
                        c.logout().unwrap();
                    }
                }
                (n, out)
            })
        })
        .collect();
    let mut most = 0;
    while !threads.iter().all(|t| t.is_finished()) {
        most = most.max(imap_pids(&d).len());
        std::thread::sleep(Duration::from_millis(5));
    }
    for t in threads {
        let (n, out) = t.join().unwrap();
        assert_eq!(out.len(), 4, "{n}: {out:?}\n{}", d.log_tail(30));
        for r in &out {
            assert!(r.is_ok(), "{n}: {out:?}\n{}", d.log_tail(30));
            assert!(
                r.untagged.iter().all(|l| !l.contains("Logged in")),
                "{n}: {out:?}"
            );
        }
    }
    assert!(most <= 4, "{most} imap processes at once (limit 4)");
    let l = wait_logins(&d, 24);
    assert_eq!(l.len(), 24);
    let mut owner = std::collections::BTreeMap::new();
    for x in &l {
        if let Some(prev) = owner.insert(x.mpid, x.user.clone()) {
            assert_eq!(prev, x.user, "pid {} served two users: {l:?}", x.mpid);
        }
    }
    for (pid, users) in per_pid(&d) {
        assert_eq!(users.len(), 1, "{pid} served {users:?}");
    }
    assert!(
        !d.log_contents().contains("login failed"),
        "{}",
        d.log_tail(30)
    );
}
