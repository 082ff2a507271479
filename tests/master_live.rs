//! The full stock Dovecot 2.3 stack (config, log, anvil, auth, imap-login, imap, pop3-login,
//! pop3, stats) under `foreman master`, in a temporary directory on 127.0.0.1 high ports. The
//! configuration is the stock harness's ([`foreman::stock`]), only the master binary differs.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use foreman::stock::procs;
use foreman::stock::{wait_for, StockDovecot};

const FOREMAN: &str = env!("CARGO_BIN_EXE_foreman");
const DEADLINE: Duration = Duration::from_secs(15);

fn start() -> StockDovecot {
    StockDovecot::builder()
        .master_command(FOREMAN, &["master"])
        .user("alice", "pw")
        .user("bob", "pw2")
        .start()
        .expect("start the stock stack under foreman master")
}

/// Pids of the live children of `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    procs::children_of(parent).iter().map(|p| p.pid).collect()
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; count it as gone.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn who(d: &StockDovecot) -> String {
    let out = d.doveadm(&["who"]).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn imap_and_pop3_logins_who_and_kick() {
    let d = start();
    let mut imap = d.imap().unwrap();
    let reply = imap.login("alice", "pw").unwrap();
    assert!(reply.is_ok(), "{reply:?}\n{}", d.log_tail(30));
    assert!(imap.command("SELECT INBOX").unwrap().is_ok());
    let mut pop3 = d.pop3().unwrap();
    let reply = pop3.login("bob", "pw2").unwrap();
    assert!(reply.starts_with("+OK"), "{reply}\n{}", d.log_tail(30));

    // doveadm who reads anvil, which heard CONNECT over the pipe the master created.
    let table = wait_for(DEADLINE, || {
        let t = who(&d);
        (t.contains("alice") && t.contains("bob")).then_some(t)
    })
    .unwrap_or_else(|| panic!("doveadm who: {}\n{}", who(&d), d.log_tail(30)));
    assert!(table.contains("imap") && table.contains("pop3"), "{table}");

    // The log process writes the services' lines with their prefixes.
    let log = d.log_contents();
    assert!(
        log.contains("imap-login: Info: Login: user=<alice>"),
        "{log}"
    );
    assert!(log.contains("pop3-login: Info: Login: user=<bob>"), "{log}");

    // doveadm kick signals the imap process; the client sees the connection close.
    let out = d.doveadm(&["kick", "alice"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    imap.wait_closed(DEADLINE).unwrap();
    let gone = wait_for(DEADLINE, || (!who(&d).contains("alice")).then_some(()));
    assert!(gone.is_some(), "alice still listed: {}", who(&d));
    pop3.quit().unwrap();
}

#[test]
fn foreman_master_stop_ends_every_child_and_removes_the_pid_file() {
    let mut d = start();
    let mut imap = d.imap().unwrap();
    assert!(imap.login("alice", "pw").unwrap().is_ok());
    imap.logout().unwrap();
    let master = d.pid().unwrap();
    let kids = children_of(master);
    assert!(kids.len() >= 3, "expected anvil, log, config…: {kids:?}");
    let pid_file = d.base_dir().join("master.pid");
    assert_eq!(
        fs::read_to_string(&pid_file).unwrap().trim(),
        master.to_string()
    );
    let out = Command::new(FOREMAN)
        .args(["master", "-c"])
        .arg(d.conf_path())
        .arg("stop")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let exited = wait_for(DEADLINE, || d.exited());
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    assert!(!pid_file.exists());
    let left = wait_for(DEADLINE, || {
        let left: Vec<u32> = kids.iter().copied().filter(|&p| alive(p)).collect();
        left.is_empty().then_some(())
    });
    assert!(left.is_some(), "children still alive after stop: {kids:?}");
    // A second stop finds nothing to stop.
    let out = Command::new(FOREMAN)
        .args(["master", "-c"])
        .arg(d.conf_path())
        .arg("stop")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75), "{out:?}");
}

#[test]
fn killing_the_master_makes_every_child_exit() {
    let mut d = start();
    let mut pop3 = d.pop3().unwrap();
    assert!(pop3.login("bob", "pw2").unwrap().starts_with("+OK"));
    pop3.quit().unwrap();
    let master = d.pid().unwrap();
    let kids = children_of(master);
    assert!(!kids.is_empty());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_for(DEADLINE, || d.exited()).is_some());
    let left = wait_for(Duration::from_secs(30), || {
        let left: Vec<u32> = kids.iter().copied().filter(|&p| alive(p)).collect();
        left.is_empty().then_some(())
    });
    assert!(
        left.is_some(),
        "children alive after the master was killed: {:?}",
        kids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
    );
}

/// The child of `master` whose process title names `service` (`…/anvil [..]`).
fn service_pid(master: u32, service: &str) -> Option<u32> {
    procs::children_of(master)
        .into_iter()
        .find(|p| p.title_name() == service)
        .map(|p| p.pid)
}

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().ino()
}

/// The socket inode of the 127.0.0.1 listener on `port` (from /proc/net/tcp).
fn tcp_listener_inode(port: u16) -> Option<String> {
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (addr, p) = f.get(1)?.split_once(':')?;
        (addr == "0100007F" && u16::from_str_radix(p, 16).ok()? == port && f[3] == "0A")
            .then(|| f[9].to_owned())
    })
}

#[test]
fn doveadm_reload_keeps_anvil_and_tcp_recreates_unix_sockets_and_log() {
    let d = start();
    let master = d.pid().unwrap();
    let mut imap = d.imap().unwrap();
    assert!(imap.login("alice", "pw").unwrap().is_ok());
    imap.logout().unwrap();
    let anvil = service_pid(master, "anvil").expect("anvil runs");
    let log = service_pid(master, "log").expect("log runs");
    let config_sock = d.base_dir().join("config");
    let config_inode = inode(&config_sock);
    let imap_port = d.imap_port().unwrap();
    let tcp = tcp_listener_inode(imap_port).expect("imap port listening");

    let out = d.doveadm(&["reload"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let new_log = wait_for(DEADLINE, || {
        service_pid(master, "log").filter(|&p| p != log && !alive(log))
    });
    assert!(
        new_log.is_some(),
        "log process not replaced\n{}",
        d.log_tail(20)
    );
    assert_eq!(
        service_pid(master, "anvil"),
        Some(anvil),
        "anvil must be kept"
    );
    assert_ne!(
        inode(&config_sock),
        config_inode,
        "unix socket not re-created"
    );
    assert_eq!(
        tcp_listener_inode(imap_port),
        Some(tcp),
        "TCP listener must be kept"
    );
    assert!(d
        .log_contents()
        .contains("master: Warning: SIGHUP received - reloading configuration"));

    // Everything works after the reload, anvil included.
    let mut imap = d.imap().unwrap();
    assert!(
        imap.login("alice", "pw").unwrap().is_ok(),
        "{}",
        d.log_tail(30)
    );
    let mut pop3 = d.pop3().unwrap();
    assert!(pop3.login("bob", "pw2").unwrap().starts_with("+OK"));
    let listed = wait_for(DEADLINE, || {
        let t = who(&d);
        (t.contains("alice") && t.contains("bob")).then_some(())
    });
    assert!(listed.is_some(), "{}", who(&d));
    imap.logout().unwrap();
    pop3.quit().unwrap();
}

#[test]
fn doveadm_stop_uses_the_pid_file() {
    let mut d = start();
    let out = d.doveadm(&["stop"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let exited = wait_for(DEADLINE, || d.exited());
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    assert!(!Path::new(&d.base_dir().join("master.pid")).exists());
}

#[test]
fn doveadm_service_and_process_status_read_the_master_socket() {
    let d = start();
    let master = d.pid().unwrap();
    let mut imap = d.imap().unwrap();
    assert!(imap.login("alice", "pw").unwrap().is_ok());
    let out = d.doveadm(&["service", "status", "imap-login"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("name: imap-login"), "{text}");
    assert!(text.contains("process_limit: 100"), "{text}");
    assert!(text.contains("process_total: 1"), "{text}");
    let out = d.doveadm(&["process", "status"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let anvil = service_pid(master, "anvil").unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("anvil") && l.contains(&anvil.to_string())),
        "{text}"
    );
    // The logged-in imap process is listed with no free slot.
    assert!(
        text.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&"imap") && f.get(2) == Some(&"0")
        }),
        "{text}"
    );
    imap.logout().unwrap();
}
