//! Guarantees of per-user reuse under races, live (see `reuse_guarantees.rs`): a process
//! that turns busy between the registry lookup and the dispatcher's connect, the per-pid
//! listeners reachable only by the dispatcher's user, and the target killed (-9) in the
//! middle of a hand-off.

mod support;

use std::time::Instant;

use foreman::stock::{wait_for, ImapClient};
use foreman::wire::anvil_ext::ProcState;
use nix::sys::signal::Signal;
use support::*;

/// Not a test of its own: the unprivileged client of [`connect_as_nobody`].
#[test]
fn connect_helper() {
    support::connect_helper();
}

/// NOOP whose reply carries nothing but NOOP's own lines (no stray LOGIN reply from a
/// second process writing to the same client).
fn clean_noop(c: &mut ImapClient, who: &str) {
    let r = c.command("NOOP").unwrap();
    assert!(r.is_ok(), "{who}: NOOP {r:?}");
    assert!(
        r.untagged
            .iter()
            .all(|l| !l.contains("Logged in") && !l.contains("CAPABILITY")),
        "{who}: stray lines {r:?}"
    );
}

/// The registry believes a busy process idle (PROC-IDLE sent for it: the state the registry
/// is in when the process turned busy after the lookup and the master's PROC-BUSY is still
/// on its way). The dispatcher claims it (reuse comes first), its connect is refused (mode 0
/// while busy; the dispatcher has no DAC override), it releases it `busy` and the login goes
/// to another process. The busy session sees nothing of it, and the process is not claimed
/// again until the master reports it (a claim of our own gets another one). Then: the
/// per-pid listeners refuse an unprivileged client both busy (mode 0) and idle (0600 root).
#[test]
fn process_turning_busy_between_lookup_and_connect() {
    let d = start_two_users();
    let mut a = login(&d, "u1", "p1");
    let p = wait_mpid(&d, "u1", 0);
    let mut reg = registry(&d);
    wait_for(DEADLINE, || {
        imap_rows_on(&mut reg)
            .iter()
            .any(|r| r.pid.get() == p && r.state == ProcState::Busy)
            .then_some(())
    })
    .expect("the master reports P busy");
    let listener = d.base_dir().join(format!("imap-master-{p}"));
    assert_eq!(mode(&listener), Some(0), "busy listener mode");

    // The lie (a request on the same connection afterwards: anvil has applied it).
    reg.send_line(format!("PROC-IDLE\t{p}\t{}", now_ms()).as_bytes())
        .unwrap();
    let row = imap_rows_on(&mut reg)
        .into_iter()
        .find(|r| r.pid.get() == p)
        .unwrap();
    assert_eq!(
        (row.state, row.user.to_string()),
        (ProcState::Idle, "u1".into())
    );
    let mut b = login(&d, "u1", "p1");
    let q = wait_mpid(&d, "u1", 1);
    assert_ne!(q, p, "handed to the busy process");
    assert_eq!(mpids_of(&d, "u1").len(), 2);
    // The dispatcher did try P: it is suspended (the registry still believes it idle and
    // bound to u1, yet a claim for u1 does not return it).
    let uid = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let claim = reg
        .request(format!("CLAIM\timap\tu1\t{uid}").as_bytes())
        .unwrap();
    let claim = String::from_utf8_lossy(&claim).into_owned();
    assert!(!claim.starts_with(&format!("{p}\t")), "{claim}");
    if let [pid, token, _] = claim.split('\t').collect::<Vec<_>>()[..] {
        reg.send_line(format!("RELEASE\t{pid}\t{token}\tunused").as_bytes())
            .unwrap();
    }
    clean_noop(&mut a, "busy session");
    session_works(&mut a);
    clean_noop(&mut b, "second session");
    assert!(
        !d.log_contents().contains("login failed"),
        "{}",
        d.log_tail(30)
    );

    // Only the dispatcher's user may connect: busy (mode 0) and idle (0600 root) alike.
    assert_eq!(mode(&listener), Some(0));
    assert_eq!(
        connect_as_nobody(&listener),
        format!("errno={}", libc::EACCES)
    );
    b.logout().unwrap();
    wait_idle(&d, q);
    let idle = d.base_dir().join(format!("imap-master-{q}"));
    assert_eq!(mode(&idle), Some(0o600), "idle listener mode");
    let md = std::fs::metadata(&idle).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&md),
        0,
        "owner of the idle listener"
    );
    assert_eq!(connect_as_nobody(&idle), format!("errno={}", libc::EACCES));
    a.logout().unwrap();
}

/// The user's idle process is stopped (SIGSTOP) so the dispatcher's connect waits for an
/// imap VERSION that never comes; while it holds the claim the process is killed (-9). The
/// login is served exactly once, by another process.
#[test]
fn target_killed_mid_handoff_login_served_once_elsewhere() {
    let d = start_two_users();
    let p = served_once(&d, "u1", "p1");

    kill(p, Signal::SIGSTOP);
    let mut reg = registry(&d);
    let second = login_in_thread(&d, "u1", "p1");
    wait_claimed(&d, &mut reg, "u1", p);
    kill(p, Signal::SIGKILL);
    let (mut b, r) = second.join().unwrap();
    assert!(r.is_ok(), "{r:?}\n{}", d.log_tail(30));
    let q = wait_mpid(&d, "u1", 1);
    assert_ne!(q, p);
    clean_noop(&mut b, "re-dispatched session");
    session_works(&mut b);
    assert_eq!(mpids_of(&d, "u1").len(), 2, "{:?}", logins(&d));
    wait_for(DEADLINE, || {
        (!alive(&d, p) && row_of(&d, p).is_none()).then_some(())
    })
    .expect("the killed process reaped and gone from the registry");
    let log = d.log_contents();
    assert!(!log.contains("login failed"), "{}", d.log_tail(30));
    assert!(!log.contains("after the client may have seen it"), "{log}");
    b.logout().unwrap();
    // u1's next session reuses the new process.
    wait_idle(&d, q);
    let c = login(&d, "u1", "p1");
    assert_eq!(wait_mpid(&d, "u1", 2), q);
    c.logout().unwrap();
}

/// A user's idle process hangs (SIGSTOP: it never accepts, never answers VERSION, stays
/// "idle" in the registry). The user's next login goes to another process: the dispatcher
/// releases the hung one `busy` after the VERSION timeout and the registry does not return
/// it again until the master reports it. (Before `RELEASE … busy` the dispatcher claimed it
/// again and again until its 60 s deadline failed the login.)
#[test]
fn hung_idle_process_does_not_starve_its_user() {
    let d = start_two_users();
    let p = served_once(&d, "u1", "p1");
    kill(p, Signal::SIGSTOP);
    // A raw client: the answer may take the dispatcher's whole 60 s deadline.
    use std::io::{BufRead, BufReader, Write};
    let s = std::net::TcpStream::connect(("127.0.0.1", d.imap_port().unwrap())).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(75)))
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let started = Instant::now();
    (&s).write_all(b"x LOGIN u1 p1\r\n").unwrap();
    // (imap-login says `* OK Waiting for authentication master process to respond..` after
    // 30 s without the dispatcher's reply.)
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 || !line.starts_with("* ") {
            break;
        }
    }
    kill(p, Signal::SIGCONT);
    assert!(
        line.starts_with("x OK"),
        "after {:?}: {line:?}\n{}",
        started.elapsed(),
        d.log_tail(10)
    );
    assert_ne!(wait_mpid(&d, "u1", 1), p);
}

/// The dispatcher is killed (-9) right after its hand-off reached imap (gdb stops it when its
/// `sendmsg` of the request and the client fd returns), before it answers imap-login. The
/// client sees exactly one LOGIN reply (imap's OK; imap-login writes no NO over it), then
/// the connection ends (imap-login shuts the socket down); the dispatcher is restarted and
/// the next login works. Skipped without gdb.
#[test]
fn dispatcher_killed_after_the_hand_off_client_sees_one_reply() {
    let d = start_two_users();
    wait_for(DEADLINE, || (imap_rows(&d).len() >= 2).then_some(())).expect("spares");
    let disp = foreman_child(&d, "dispatch").expect("the dispatcher");
    let dir = d.dir().to_owned();
    let script = format!(
        "set pagination off\nbreak __libc_sendmsg\nshell touch {0}/gdb-ready\ncontinue\n\
         finish\nshell touch {0}/gdb-sent\nshell kill -9 {1}\nquit\n",
        dir.display(),
        disp
    );
    std::fs::write(dir.join("gdb.cmd"), script).unwrap();
    let out = std::fs::File::create(dir.join("gdb.out")).unwrap();
    let Ok(mut gdb) = std::process::Command::new("gdb")
        .args(["-q", "-nx", "-batch", "-p", &disp.to_string(), "-x"])
        .arg(dir.join("gdb.cmd"))
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
    else {
        eprintln!("gdb not installed: skipped");
        return;
    };
    wait_for(DEADLINE, || dir.join("gdb-ready").exists().then_some(())).expect("gdb attached");

    use std::io::{BufRead, BufReader, Write};
    let s = std::net::TcpStream::connect(("127.0.0.1", d.imap_port().unwrap())).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut rd = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    rd.read_line(&mut line).unwrap();
    (&s).write_all(b"x LOGIN u1 p1\r\n").unwrap();
    let mut lines = Vec::new();
    loop {
        line.clear();
        match rd.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => lines.push(line.trim_end().to_owned()),
            Err(e) => panic!("no end of the connection: {e}; {lines:?}"),
        }
    }
    let _ = gdb.wait();
    assert!(dir.join("gdb-sent").exists(), "the hand-off never happened");
    let replies: Vec<&String> = lines.iter().filter(|l| l.starts_with("x ")).collect();
    assert_eq!(replies.len(), 1, "{lines:?}");
    assert!(replies[0].starts_with("x OK "), "{lines:?}");
    let new = wait_for(DEADLINE, || {
        foreman_child(&d, "dispatch").filter(|&p| p != disp)
    })
    .expect("the dispatcher restarted");
    assert_ne!(new, disp);
    let mut c = login(&d, "u1", "p1");
    session_works(&mut c);
    c.logout().unwrap();
}
