//! Guarantees of per-user reuse across restarts, live (see `reuse_guarantees.rs`): the
//! dispatcher, anvil or a user's imap process killed (-9); the master restarts what it
//! supervises and logins work again, reuse included.

mod support;

use foreman::stock::{wait_for, StockDovecot};
use foreman::wire::anvil_ext::ProcState;
use nix::sys::signal::Signal;
use support::*;

/// Waits for a `foreman <word>` child other than `old`.
fn wait_restarted(d: &StockDovecot, word: &str, old: u32) -> u32 {
    wait_for(DEADLINE, || foreman_child(d, word).filter(|&p| p != old))
        .unwrap_or_else(|| panic!("no new {word} process\n{}", d.log_tail(30)))
}

#[test]
fn dispatcher_killed_is_restarted_and_reuse_goes_on() {
    let d = start_two_users();
    let p = served_once(&d, "u1", "p1");
    let old = foreman_child(&d, "dispatch").expect("the dispatcher");
    kill(old, Signal::SIGKILL);
    let new = wait_restarted(&d, "dispatch", old);
    assert!(!alive(&d, old));
    // The registry outlived the dispatcher: u1 gets its process back.
    let again = served_once(&d, "u1", "p1");
    assert_eq!(again, p, "u1 not reused after a dispatcher restart");
    let q = served_once(&d, "u2", "p2");
    assert_ne!(q, p);
    assert_eq!(foreman_child(&d, "dispatch"), Some(new));
}

/// A login in flight when the dispatcher dies (it is waiting on a stopped process): the
/// client gets an answer (imap-login's error or a close), not silence, and the next login
/// works.
#[test]
fn dispatcher_killed_with_a_login_in_flight() {
    let d = start_two_users();
    let p = served_once(&d, "u1", "p1");
    kill(p, Signal::SIGSTOP);
    let port = d.imap_port().unwrap();
    let inflight = std::thread::spawn(move || {
        let mut c = foreman::stock::ImapClient::connect(port).unwrap();
        c.login("u1", "p1")
            .map(|r| r.tagged)
            .map_err(|e| e.to_string())
    });
    let mut reg = registry(&d);
    wait_claimed(&d, &mut reg, "u1", p);
    let old = foreman_child(&d, "dispatch").unwrap();
    kill(old, Signal::SIGKILL);
    let answer = inflight.join().unwrap();
    // Not served: either a NO or the connection closed (the client never hangs: bounded by
    // the client's read timeout, which is an error of its own kind).
    match &answer {
        Ok(t) => assert!(t.starts_with("NO") || t.starts_with("BAD"), "{answer:?}"),
        Err(e) => assert!(!e.contains("timed out") && !e.contains("WouldBlock"), "{e}"),
    }
    assert_eq!(mpids_of(&d, "u1").len(), 1, "{:?}", logins(&d));
    kill(p, Signal::SIGCONT);
    wait_restarted(&d, "dispatch", old);
    // u2 is served at once; u1 too (its process is still claimed by the dead dispatcher
    // until the claim expires, so a fresh one serves it meanwhile, or the old one after).
    let q = served_once(&d, "u2", "p2");
    assert_ne!(q, p);
    let r = served_once(&d, "u1", "p1");
    let sessions = imap_sessions(&d);
    assert!(
        sessions.iter().all(|(u, pid)| *pid != r || u == "u1"),
        "{sessions:?}"
    );
}

#[test]
fn anvil_killed_is_restarted_and_reuse_resumes() {
    let d = start_two_users();
    let p = served_once(&d, "u1", "p1");
    let old = foreman_child(&d, "anvil").expect("anvil");
    kill(old, Signal::SIGKILL);
    wait_restarted(&d, "anvil", old);
    // The new registry knows nothing of u1's binding: the master retires the served
    // process (it must never be handed to another user) ...
    wait_for(DEADLINE, || (!alive(&d, p)).then_some(()))
        .unwrap_or_else(|| panic!("served process {p} not retired\n{}", d.log_tail(30)));
    // ... and re-reported the fresh ones.
    wait_for(DEADLINE, || {
        let rows = imap_rows(&d);
        (rows.len() == imap_pids(&d).len()
            && rows.iter().filter(|r| r.state == ProcState::Fresh).count() >= 2)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("registry {:?}\n{}", imap_rows(&d), d.log_tail(30)));
    // Logins work and reuse resumes. Stock auth loses its anvil-auth-penalty connection with
    // the anvil and cannot reconnect (it runs as dovecot, the socket is root's 0600); it
    // restarts, and a login it authenticated before is refused by the auth-master lookup
    // (stock imap fails such a login the same way: "Internal login failure"). Such logins
    // are retried here; any other failure is not.
    let q = wait_for(DEADLINE, || {
        let n = mpids_of(&d, "u1").len();
        let mut c = d.imap().unwrap();
        if !c.login("u1", "p1").unwrap().is_ok() {
            return None;
        }
        let q = wait_mpid(&d, "u1", n);
        c.logout().unwrap();
        wait_idle(&d, q);
        Some(q)
    })
    .unwrap_or_else(|| panic!("no login works after the anvil restart\n{}", d.log_tail(30)));
    assert_ne!(q, p);
    let again = served_once(&d, "u1", "p1");
    assert_eq!(again, q, "reuse did not resume after the anvil restart");
    let r = served_once(&d, "u2", "p2");
    assert_ne!(r, q);
    for l in d.log_contents().lines() {
        assert!(
            !l.contains("login failed") || l.contains("(auth restarted?)"),
            "{l}\n{}",
            d.log_tail(30)
        );
    }
}

#[test]
fn imap_process_killed_next_login_gets_a_new_one() {
    let d = start_two_users();
    // Idle process killed.
    let p = served_once(&d, "u1", "p1");
    kill(p, Signal::SIGKILL);
    wait_for(DEADLINE, || {
        (!alive(&d, p) && row_of(&d, p).is_none()).then_some(())
    })
    .expect("reaped and gone from the registry");
    let q = served_once(&d, "u1", "p1");
    assert_ne!(q, p);

    // Busy process killed: its client sees the connection close; the next login works.
    let mut c = login(&d, "u1", "p1");
    assert_eq!(wait_mpid(&d, "u1", 2), q);
    kill(q, Signal::SIGKILL);
    let closed = c.wait_closed(DEADLINE);
    assert!(closed.is_ok(), "{closed:?}");
    let r = served_once(&d, "u1", "p1");
    assert_ne!(r, q);
    assert_ne!(r, p);
    assert!(
        !d.log_contents().contains("login failed"),
        "{}",
        d.log_tail(30)
    );
}

/// Runs `gdb` on the master with a breakpoint on the `send` of its first `PROC-BUSY` report:
/// the master freezes right before that report until [`Freeze::release`] (or drop).
struct Freeze {
    gdb: std::process::Child,
    go: std::path::PathBuf,
}

impl Freeze {
    /// `None` when gdb is not installed.
    fn before_proc_busy(d: &StockDovecot) -> Option<Freeze> {
        let go = d.dir().join("gdb-go");
        let script = format!(
            "set pagination off\n\
             break __libc_send if *(char*)($rsi) == 'P' && *(char*)($rsi+6) == 'U'\n\
             shell touch {0}.ready\ncontinue\nshell touch {0}.stopped\n\
             shell while [ ! -e {0} ]; do sleep 0.05; done\ndelete\ndetach\nquit\n",
            go.display()
        );
        let cmd = d.dir().join("gdb.cmd");
        std::fs::write(&cmd, script).unwrap();
        let out = std::fs::File::create(d.dir().join("gdb.out")).unwrap();
        let gdb = std::process::Command::new("gdb")
            .args([
                "-q",
                "-nx",
                "-batch",
                "-p",
                &d.pid().unwrap().to_string(),
                "-x",
            ])
            .arg(&cmd)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .ok()?;
        wait_for(DEADLINE, || {
            go.with_extension("ready").exists().then_some(())
        })
        .expect("gdb attached");
        Some(Freeze { gdb, go })
    }

    fn wait_stopped(&self) -> bool {
        wait_for(DEADLINE, || {
            self.go.with_extension("stopped").exists().then_some(())
        })
        .is_some()
    }

    /// Lets the master go on (gdb removes the breakpoint and detaches).
    fn release(self) {}
}

impl Drop for Freeze {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.go, "");
        let _ = self.gdb.wait();
    }
}

/// Regression: after an anvil restart the master re-reported each live process as
/// `PROC-BIRTH` (fresh) and then, in a separate send, `PROC-BUSY` when it had served somebody;
/// a CLAIM landing between the two got the served process as a *fresh* one for another user.
/// Made deterministic by freezing the master (gdb) right before that PROC-BUSY. Fixed by
/// `PROC-BIRTH … used` (one command); the freeze point is then never reached and u2's login,
/// which waits on a stopped fresh spare, must still never get u1's former process.
#[test]
fn anvil_restart_never_hands_a_served_process_to_another_user() {
    let d = reuse_builder(&reuse(10, 0, 1))
        .user("u1", "p1")
        .user("u2", "p2")
        .start()
        .expect("start the reuse stack");
    let p = served_once(&d, "u1", "p1");
    let spare = wait_for(DEADLINE, || {
        imap_rows(&d)
            .into_iter()
            .find(|r| r.pid.get() != p && r.state == ProcState::Fresh)
    })
    .expect("a fresh spare")
    .pid
    .get();
    // u2's login waits (5 s) on the stopped spare while the anvil restarts.
    kill(spare, Signal::SIGSTOP);
    let port = d.imap_port().unwrap();
    let login = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut rd = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        rd.read_line(&mut line).unwrap();
        (&s).write_all(b"x LOGIN u2 p2\r\n").unwrap();
        loop {
            line.clear();
            if rd.read_line(&mut line).unwrap_or(0) == 0 || line.starts_with("x ") {
                return line;
            }
        }
    });
    let mut reg = registry(&d);
    wait_for(DEADLINE, || {
        let rows = reg.dump(b"PROC-LIST\timap\tu2").unwrap();
        rows.iter()
            .any(|r| String::from_utf8_lossy(r).ends_with("\tclaimed"))
            .then_some(())
    })
    .expect("the spare claimed for u2");
    let Some(freeze) = Freeze::before_proc_busy(&d) else {
        eprintln!("gdb not installed: skipped");
        kill(spare, Signal::SIGCONT);
        return;
    };
    let old = foreman_child(&d, "anvil").expect("anvil");
    kill(old, Signal::SIGKILL);
    assert!(freeze.wait_stopped(), "the master never sent PROC-BUSY");
    // The new registry now lists u1's former process as fresh and unbound.
    let row = row_of(&d, p);
    let answer = login.join().unwrap();
    freeze.release();
    kill(spare, Signal::SIGCONT);
    let got = mpids_of(&d, "u2");
    assert!(
        got.is_empty() || got[0] != p,
        "u2 handed {p}, which served u1 (registry during the re-report: {row:?}; answer \
         {answer:?})\n{}",
        d.log_tail(12)
    );
}

/// A reload (SIGHUP) restarts the dispatcher and every service; logins must work again, in
/// new processes (the old list's processes are retired).
#[test]
fn reload_keeps_logins_working() {
    let d = start_two_users();
    let p = served_once(&d, "u1", "p1");
    let old = foreman_child(&d, "dispatch").expect("the dispatcher");
    kill(d.pid().unwrap(), Signal::SIGHUP);
    let q = wait_for(DEADLINE, || {
        let mut c = d.imap().ok()?;
        if !c.login("u1", "p1").ok()?.is_ok() {
            return None;
        }
        c.logout().ok()?;
        mpids_of(&d, "u1").get(1).copied()
    });
    let q = q.unwrap_or_else(|| {
        panic!(
            "no login after the reload; children {:?}\n{}",
            children(&d),
            d.log_tail(10)
        )
    });
    assert_ne!(q, p, "a retired process served");
    assert_ne!(foreman_child(&d, "dispatch"), Some(old));
}

/// The same without the dispatcher: a reuse pool (a `%{pid}` listener), with the stock anvil
/// and with Foreman's (the registry connected: before 827c758 the master lost the new list's
/// listeners and never accepted a login again).
#[test]
fn reload_with_a_reuse_pool_and_the_registry_keeps_listening() {
    for foreman_anvil in [false, true] {
        let mut b = StockDovecot::builder()
            .master_command(FOREMAN, &["master"])
            .user("u1", "p1")
            .config_line(
                "service imap {\n  service_count = 0\n  client_limit = 1\n  \
                 unix_listener imap-master-%{pid} {\n    mode = 0600\n  }\n}",
            );
        if foreman_anvil {
            b = b.custom_anvil(FOREMAN, &["anvil"]);
        }
        let d = b.start().expect("start");
        login(&d, "u1", "p1").logout().unwrap();
        kill(d.pid().unwrap(), Signal::SIGHUP);
        let ok = wait_for(DEADLINE, || {
            let mut c = d.imap().ok()?;
            c.login("u1", "p1").ok()?.is_ok().then_some(())
        });
        assert!(
            ok.is_some(),
            "foreman anvil: {foreman_anvil}: no login after the reload; children {:?}\n{}",
            children(&d),
            d.log_tail(10)
        );
    }
}
