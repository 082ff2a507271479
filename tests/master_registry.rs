//! `foreman master` + `foreman anvil` with a reuse pool (`service imap` with a `%{pid}` unix
//! listener, docs/reuse.md "Master"), stock imap-login/auth/imap: the master reports every
//! imap process to the registry (PROC-DUMP shows them with the right pids and states),
//! FOREMAN-NEED spawns fresh processes to the requested count and no more, evicts at
//! process_limit only what EVICT returns (a claimed process survives), a killed process
//! leaves the registry, and after an anvil restart the live processes are reported again.
//! With the stock anvil the master runs without reports. With the dispatcher, more users than
//! processes are all served through FOREMAN-NEED and eviction.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use foreman::stock::{wait_for, AnvilClient, StockDovecot};
use foreman::wire::anvil_ext::{ProcState, VERSION_LINE};
use support::{
    foreman_child, imap_pids, imap_rows, imap_rows_on, kill, login, registry, reuse, reuse_builder,
    DEADLINE, FOREMAN,
};

fn start(imap_settings: &str) -> StockDovecot {
    start_with(imap_settings, true)
}

fn start_with(imap_settings: &str, foreman_anvil: bool) -> StockDovecot {
    let mut b = StockDovecot::builder()
        .master_command(FOREMAN, &["master"])
        .user("alice", "pw")
        .user("bob", "pw2")
        .config_line(format!(
            "service imap {{\n  service_count = 0\n  client_limit = 1\n{imap_settings}\n  \
             unix_listener imap-master-%{{pid}} {{\n    mode = 0600\n  }}\n}}"
        ));
    if foreman_anvil {
        b = b.custom_anvil(FOREMAN, &["anvil"]);
    }
    b.start()
        .expect("start the stock stack under foreman master")
}

/// (pid, state) of the imap rows, by pid.
fn imap_states(d: &StockDovecot) -> Vec<(u32, ProcState)> {
    pid_states(imap_rows(d))
}

fn pid_states(rows: Vec<foreman::wire::anvil_ext::ProcRow>) -> Vec<(u32, ProcState)> {
    rows.into_iter().map(|r| (r.pid.get(), r.state)).collect()
}

/// Waits until the registry lists exactly the master's live imap processes and `check`
/// holds for the rows; returns them.
fn wait_rows(
    d: &StockDovecot,
    what: &str,
    check: impl Fn(&[(u32, ProcState)]) -> bool,
) -> Vec<(u32, ProcState)> {
    let got = wait_for(DEADLINE, || {
        let rows = imap_states(d);
        let pids: Vec<u32> = rows.iter().map(|r| r.0).collect();
        (pids == imap_pids(d) && check(&rows)).then_some(rows)
    });
    got.unwrap_or_else(|| {
        panic!(
            "{what}: registry {:?}, master's imap children {:?}\n{}",
            imap_states(d),
            imap_pids(d),
            d.log_tail(30)
        )
    })
}

fn count(rows: &[(u32, ProcState)], state: ProcState) -> usize {
    rows.iter().filter(|r| r.1 == state).count()
}

/// The `$BASE/master` control connection.
struct Control(BufReader<UnixStream>);

impl Control {
    fn connect(d: &StockDovecot) -> Control {
        let s = UnixStream::connect(d.base_dir().join("master")).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut c = Control(BufReader::new(s));
        c.send("VERSION\tmaster-client\t1\t0");
        assert_eq!(c.line(), "VERSION\tmaster-server\t1\t0");
        c
    }
    fn send(&mut self, line: &str) {
        self.0
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.0.read_line(&mut l).unwrap();
        l.trim_end_matches('\n').to_owned()
    }
    fn need(&mut self, waiting: u32) -> String {
        self.send(&format!("FOREMAN-NEED\timap\t{waiting}"));
        self.line()
    }
    /// imap's process_total (processes created so far). The control connection is served
    /// after the previous request's event ran, so this sees its spawns.
    fn imap_total(&mut self) -> u64 {
        self.send("SERVICE-STATUS");
        let mut total = None;
        loop {
            let l = self.line();
            if l.is_empty() {
                break;
            }
            let f: Vec<&str> = l.split('\t').collect();
            if f[0] == "imap" {
                total = f.last().and_then(|t| t.parse().ok());
            }
        }
        total.expect("imap in SERVICE-STATUS")
    }
}

#[test]
fn fresh_processes_are_registered_and_follow_a_login() {
    let d = start("  process_min_avail = 2");
    let rows = wait_rows(&d, "two fresh spares", |r| {
        r.len() == 2 && count(r, ProcState::Fresh) == 2
    });
    for row in imap_rows(&d) {
        assert!(row.user.is_empty(), "unbound");
        assert_eq!(row.uid, 0, "birth uid: imap starts as root");
    }
    let before: Vec<u32> = rows.iter().map(|r| r.0).collect();

    // A stock login takes one of the spares: it is busy, and a new spare replaces it.
    let mut alice = d.imap().unwrap();
    assert!(
        alice.login("alice", "pw").unwrap().is_ok(),
        "{}",
        d.log_tail(30)
    );
    let rows = wait_rows(&d, "one busy, two fresh", |r| {
        r.len() == 3 && count(r, ProcState::Busy) == 1 && count(r, ProcState::Fresh) == 2
    });
    let busy = rows.iter().find(|r| r.1 == ProcState::Busy).unwrap().0;
    assert!(before.contains(&busy));

    alice.logout().unwrap();
    let rows = wait_rows(&d, "the served process idle", |r| {
        r.iter().any(|&(p, s)| p == busy && s == ProcState::Idle)
    });
    assert_eq!(count(&rows, ProcState::Fresh), 2, "{rows:?}");

    // kill -9: the master reaps it and reports the death.
    kill(busy, nix::sys::signal::Signal::SIGKILL);
    let rows = wait_rows(&d, "the killed process gone", |r| {
        !r.iter().any(|&(p, _)| p == busy)
    });
    assert_eq!(rows.len(), 2, "{rows:?}");
}

#[test]
fn need_spawns_to_the_requested_count_and_no_more() {
    let d = start("  process_min_avail = 2");
    wait_rows(&d, "two fresh spares", |r| r.len() == 2);
    let mut c = Control::connect(&d);
    assert_eq!(c.imap_total(), 2);
    assert_eq!(c.need(3), "+");
    assert_eq!(c.imap_total(), 5, "3 waiting + 2 spares");
    assert_eq!(c.need(3), "+");
    assert_eq!(c.imap_total(), 5, "the same need again spawns nothing");
    let rows = wait_rows(&d, "five fresh", |r| {
        r.len() == 5 && count(r, ProcState::Fresh) == 5
    });
    assert_eq!(rows.len(), 5);
    assert_eq!(c.need(1), "+");
    assert_eq!(c.imap_total(), 5, "fewer waiting than fresh: nothing");
    c.send("FOREMAN-NEED\tauth\t1");
    assert_eq!(c.line(), "-Not a reuse pool: auth");
    c.send("FOREMAN-NEED\tnope\t1");
    assert_eq!(c.line(), "-Unknown service: nope");
}

#[test]
fn need_at_process_limit_evicts_what_evict_returns_and_never_a_claimed_process() {
    let d = start("  process_min_avail = 1\n  process_limit = 3");
    // Two users at once: two processes serve them, a third is the spare (= process_limit).
    let alice = login(&d, "alice", "pw");
    let bob = login(&d, "bob", "pw2");
    wait_rows(&d, "two busy + a spare", |r| {
        r.len() == 3 && count(r, ProcState::Busy) == 2 && count(r, ProcState::Fresh) == 1
    });
    alice.logout().unwrap();
    bob.logout().unwrap();
    let rows = wait_rows(&d, "two idle + a spare", |r| {
        count(r, ProcState::Idle) == 2 && count(r, ProcState::Fresh) == 1
    });
    let idle: Vec<u32> = rows
        .iter()
        .filter(|r| r.1 == ProcState::Idle)
        .map(|r| r.0)
        .collect();
    let spare = rows.iter().find(|r| r.1 == ProcState::Fresh).unwrap().0;

    // Claim one of the idle processes. Served through stock imap-login, the registry does not
    // know their users; re-reporting one as born makes it claimable for this test (the test
    // connection is root, as the master's). The spare is older, so it is claimed first.
    let mut reg = registry(&d);
    reg.send_line(format!("PROC-BIRTH\timap\t{}\t0", idle[0]).as_bytes())
        .unwrap();
    let first = reg.request(b"CLAIM\timap\tcarol\t65534").unwrap();
    assert!(first.starts_with(format!("{spare}\t").as_bytes()));
    let second = reg.request(b"CLAIM\timap\tdave\t65534").unwrap();
    assert!(
        second.starts_with(format!("{}\t", idle[0]).as_bytes()),
        "{}",
        String::from_utf8_lossy(&second)
    );

    // One login waits; fresh = the claimed spare only: at process_limit the master asks
    // EVICT, which can only return the other idle process; it dies and a new spare comes.
    let mut c = Control::connect(&d);
    let total = c.imap_total();
    assert_eq!(c.need(1), "+");
    let rows = wait_rows(&d, "the unclaimed idle process evicted, a new spare", |r| {
        !r.iter().any(|&(p, _)| p == idle[1]) && r.len() == 3
    });
    assert!(rows.iter().any(|&(p, _)| p == idle[0]), "claimed survives");
    assert!(rows.iter().any(|&(p, _)| p == spare), "claimed survives");
    assert_eq!(c.imap_total(), total + 1);
    assert!(d
        .log_contents()
        .contains(&format!("evicting idle process {}", idle[1])));

    // Nothing else is idle and unclaimed: EVICT says none, nothing is killed or spawned.
    assert_eq!(c.need(2), "+");
    assert_eq!(c.imap_total(), total + 1);
    let rows = imap_states(&d);
    assert!(rows.iter().any(|&(p, _)| p == idle[0]));
    assert!(rows.iter().any(|&(p, _)| p == spare));
    assert_eq!(imap_pids(&d).len(), 3);
}

#[test]
fn after_an_anvil_restart_the_live_processes_are_reported_again() {
    let d = start("  process_min_avail = 2");
    let alice = login(&d, "alice", "pw");
    let rows = wait_rows(&d, "one busy, two fresh", |r| {
        count(r, ProcState::Busy) == 1 && count(r, ProcState::Fresh) == 2
    });
    let anvil = foreman_child(&d, "anvil").expect("anvil process");
    kill(anvil, nix::sys::signal::Signal::SIGKILL);
    // A new anvil (empty registry) gets the same processes again: the fresh ones fresh, the
    // one serving alice busy (never fresh again).
    let again = wait_for(DEADLINE, || {
        if foreman_child(&d, "anvil").is_none_or(|p| p == anvil) {
            return None;
        }
        let mut c = AnvilClient::connect_raw(&d.anvil_socket()).ok()?;
        c.send_raw(VERSION_LINE).ok()?;
        c.read_line().ok()?;
        let now = pid_states(imap_rows_on(&mut c));
        (now == rows).then_some(now)
    });
    assert!(
        again.is_some(),
        "before {rows:?}, now {:?}\n{}",
        imap_states(&d),
        d.log_tail(30)
    );
    assert!(d.log_contents().contains("anvil registry: connected"));
    alice.logout().unwrap();
}

#[test]
fn with_the_stock_anvil_the_master_runs_without_reports() {
    let d = start_with("  process_min_avail = 1", false);
    let mut c = Control::connect(&d);
    assert_eq!(c.need(2), "+");
    assert_eq!(c.imap_total(), 3);
    let logged = wait_for(DEADLINE, || {
        d.log_contents()
            .contains("anvil does not speak foreman-anvil")
            .then_some(())
    });
    assert!(logged.is_some(), "{}", d.log_tail(30));
    let alice = login(&d, "alice", "pw");
    alice.logout().unwrap();
}

/// With the dispatcher (`dispatch::reuse_config`): more users than processes. Each login
/// that finds no process makes the dispatcher send FOREMAN-NEED; at the threshold the master
/// spawns into the margin and evicts another user's idle process (chosen by EVICT), so every
/// login is served and the pool never exceeds process_limit.
#[test]
fn with_the_dispatcher_more_users_than_processes_are_served_by_eviction() {
    let users = ["u1", "u2", "u3", "u4", "u5"];
    let mut b = reuse_builder(&reuse(3, 1, 1));
    for u in users {
        b = b.user(u, "pw");
    }
    let d = b.start().expect("start with the dispatcher");
    let mut most = 0;
    for round in 0..2 {
        for u in users {
            let mut c = d.imap().unwrap();
            let r = c.login(u, "pw").unwrap();
            assert!(r.is_ok(), "round {round} {u}: {r:?}\n{}", d.log_tail(40));
            let r = c.command("SELECT INBOX").unwrap();
            assert!(r.is_ok(), "{r:?}");
            c.logout().unwrap();
            most = most.max(imap_pids(&d).len());
        }
    }
    // Quick sessions of one user: its process is reused (the dispatcher's RELEASE may reach
    // anvil after the master's PROC-IDLE; a FOREMAN-NEED makes the master repeat it), then
    // the others are served again.
    for u in ["u1"; 15].into_iter().chain(users) {
        let mut c = d.imap().unwrap();
        let r = c.login(u, "pw").unwrap();
        assert!(r.is_ok(), "{u}: {r:?}\n{}", d.log_tail(40));
        c.logout().unwrap();
        most = most.max(imap_pids(&d).len());
    }
    assert!(
        most <= 3,
        "at most process_limit imap processes, saw {most}"
    );
    let log = d.log_contents();
    assert!(log.contains("evicting idle process"), "{}", d.log_tail(40));
    assert!(
        !log.contains("foreman-dispatch: Error"),
        "{}",
        d.log_tail(40)
    );
    // The registry agrees with the master about which processes exist.
    wait_rows(&d, "registry = master's processes", |_| true);
}

/// A dispatcher's `RELEASE … served` can reach anvil after the master's PROC-IDLE of a short
/// session, leaving an idle process "busy" in the registry. Played here with PROC-BUSY on a
/// test connection: a FOREMAN-NEED makes the master repeat its idle reports before it asks
/// EVICT, so the process can still be evicted (and reused).
#[test]
fn a_need_repairs_idle_processes_the_registry_believes_busy() {
    let d = start("  process_min_avail = 1\n  process_limit = 3\n  process_limit_margin = 0");
    let alice = login(&d, "alice", "pw");
    let bob = login(&d, "bob", "pw2");
    wait_rows(&d, "two busy + a spare", |r| {
        count(r, ProcState::Busy) == 2 && count(r, ProcState::Fresh) == 1
    });
    alice.logout().unwrap();
    bob.logout().unwrap();
    let rows = wait_rows(&d, "two idle + a spare", |r| count(r, ProcState::Idle) == 2);
    let idle: Vec<u32> = rows
        .iter()
        .filter(|r| r.1 == ProcState::Idle)
        .map(|r| r.0)
        .collect();
    // The late RELEASE: both look busy now.
    let mut reg = registry(&d);
    for pid in &idle {
        reg.send_line(format!("PROC-BUSY\t{pid}\t1").as_bytes())
            .unwrap();
    }
    wait_rows(&d, "the registry believes them busy", |r| {
        count(r, ProcState::Busy) == 2
    });
    let mut c = Control::connect(&d);
    let total = c.imap_total();
    assert_eq!(c.need(1), "+");
    let rows = wait_rows(&d, "one of them evicted, a new spare", |r| {
        idle.iter().filter(|p| r.iter().any(|x| x.0 == **p)).count() == 1 && r.len() == 3
    });
    assert_eq!(c.imap_total(), total + 1, "{rows:?}");
}
