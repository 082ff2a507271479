//! Per-process listeners (`unix_listener imap-master-%{pid}`) under `foreman master` with the
//! stock `imap` binary: the socket appears for each process, is chmod'ed to 0 while the process
//! has no free slot (an unprivileged client gets EACCES), is opened again when a slot frees,
//! and disappears when the process dies (kill -9 included) and when the master stops.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use foreman::stock::{wait_for, StockDovecot};
use support::{connect_as_nobody, mode, FOREMAN};

const DEADLINE: Duration = Duration::from_secs(15);

/// Not a test of its own: the body of [`connect_as_nobody`]'s re-executed test binary.
#[test]
fn connect_helper() {
    support::connect_helper();
}

fn start() -> StockDovecot {
    StockDovecot::builder()
        .master_command(FOREMAN, &["master"])
        .user("alice", "pw")
        .user("bob", "pw2")
        .config_line(
            "service imap {\n  service_count = 0\n  client_limit = 2\n  \
             unix_listener imap-master-%{pid} {\n    mode = 0666\n  }\n}",
        )
        .start()
        .expect("start the stock stack under foreman master")
}

fn per_pid_sockets(base: &Path) -> Vec<(u32, PathBuf)> {
    fs::read_dir(base)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix("imap-master-")?.parse().ok()?;
            Some((pid, e.path()))
        })
        .collect()
}

#[test]
fn per_pid_socket_follows_the_process_slots_and_lifetime() {
    let mut d = start();
    let base = d.base_dir().to_path_buf();
    assert!(per_pid_sockets(&base).is_empty());

    let mut alice = d.imap().unwrap();
    assert!(
        alice.login("alice", "pw").unwrap().is_ok(),
        "{}",
        d.log_tail(30)
    );
    let socks = per_pid_sockets(&base);
    assert_eq!(socks.len(), 1, "{socks:?}");
    let (pid, path) = socks[0].clone();
    // The log process writes imap-login's line asynchronously.
    let logged = wait_for(DEADLINE, || {
        d.log_contents()
            .contains(&format!("mpid={pid}"))
            .then_some(())
    });
    assert!(logged.is_some(), "{}", d.log_tail(20));
    // One of two slots used: open.
    assert_eq!(mode(&path), Some(0o666));

    // The second user fills the process: the path is closed (mode 0) → EACCES for others.
    let mut bob = d.imap().unwrap();
    assert!(
        bob.login("bob", "pw2").unwrap().is_ok(),
        "{}",
        d.log_tail(30)
    );
    assert_eq!(per_pid_sockets(&base).len(), 1, "same process serves both");
    let closed = wait_for(DEADLINE, || (mode(&path) == Some(0)).then_some(()));
    assert!(
        closed.is_some(),
        "mode stayed {:o}",
        mode(&path).unwrap_or(7777)
    );
    assert_eq!(connect_as_nobody(&path), format!("errno={}", libc::EACCES));

    // A slot frees: open again.
    bob.logout().unwrap();
    let open = wait_for(DEADLINE, || (mode(&path) == Some(0o666)).then_some(()));
    assert!(
        open.is_some(),
        "mode stayed {:o}",
        mode(&path).unwrap_or(7777)
    );
    // (Connecting takes the free slot for a moment; the process closes the empty
    // connection, so this comes last before the process is killed.)
    assert_eq!(connect_as_nobody(&path), "ok");

    // kill -9: the master unlinks the path when it reaps the process.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let gone = wait_for(DEADLINE, || (!path.exists()).then_some(()));
    assert!(gone.is_some(), "{} still exists", path.display());
    let _ = alice.wait_closed(DEADLINE);

    // A new process gets its own socket; stopping the master removes it too.
    let mut carol = d.imap().unwrap();
    assert!(carol.login("alice", "pw").unwrap().is_ok());
    let socks = per_pid_sockets(&base);
    assert_eq!(socks.len(), 1, "{socks:?}");
    assert_ne!(socks[0].0, pid);
    d.stop().unwrap();
    assert!(!socks[0].1.exists(), "per-pid socket left after shutdown");
}

fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// The master never opens per-process sockets: its fd count is the same with 1 and with 20
/// imap processes.
#[test]
fn master_fds_do_not_grow_with_processes() {
    let d = StockDovecot::builder()
        .master_command(FOREMAN, &["master"])
        .user("alice", "pw")
        .mail_max_userip_connections(100)
        .config_line(
            "service imap {\n  unix_listener imap-master-%{pid} {\n    mode = 0600\n  }\n}",
        )
        .start()
        .unwrap();
    let master = d.pid().unwrap();
    let mut first = d.imap().unwrap();
    assert!(first.login("alice", "pw").unwrap().is_ok());
    let with_one = fd_count(master);
    let mut clients = Vec::new();
    for _ in 0..19 {
        let mut c = d.imap().unwrap();
        assert!(
            c.login("alice", "pw").unwrap().is_ok(),
            "{}",
            d.log_tail(20)
        );
        clients.push(c);
    }
    assert_eq!(per_pid_sockets(d.base_dir()).len(), 20);
    assert_eq!(fd_count(master), with_one);
}
