//! Smaller master options, live with the stock services: `foreman master -p` (the SSL key
//! password reaches only services with inet listeners), `reuse_port` inet listeners,
//! `drop_priv_before_exec`, `shutdown_clients` after a reload.

use std::fs;
use std::time::Duration;

use foreman::stock::{wait_for, StockDovecot};

const FOREMAN: &str = env!("CARGO_BIN_EXE_foreman");
const DEADLINE: Duration = Duration::from_secs(15);

/// A service whose process writes its environment and `id -u` to `<dir>/<name>.env` and
/// waits.
fn env_service(dir: &std::path::Path, name: &str, inet_port: Option<u16>) -> String {
    env_service_with(dir, name, inet_port, "")
}

fn env_service_with(
    dir: &std::path::Path,
    name: &str,
    inet_port: Option<u16>,
    settings: &str,
) -> String {
    let script = dir.join(format!("{name}.sh"));
    let d = dir.display();
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n(env; echo \"ID_U=$(id -u)\") > {d}/{name}.env.tmp && \
             mv {d}/{name}.env.tmp {d}/{name}.env\nexec sleep 30\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let inet = inet_port
        .map(|p| format!("  inet_listener {name} {{\n    port = {p}\n  }}\n"))
        .unwrap_or_default();
    format!(
        "service {name} {{\n  executable = {}\n  process_min_avail = 1\n{settings}{inet}}}",
        script.display()
    )
}

fn env_of(dir: &std::path::Path, name: &str) -> Vec<String> {
    let path = dir.join(format!("{name}.env"));
    wait_for(DEADLINE, || fs::read_to_string(&path).ok())
        .unwrap_or_else(|| panic!("{} not written", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn dash_p_gives_the_ssl_key_password_to_inet_services_only() {
    if fs::File::open("/dev/tty").is_ok() {
        // With a terminal the master would prompt on it and wait.
        eprintln!("skipped: a terminal is attached (the password prompt would wait for it)");
        return;
    }
    // No terminal: the password is read from stdin (the harness gives /dev/null: empty).
    let dir = tempfile::tempdir().unwrap();
    let port = foreman::stock::free_port().unwrap();
    let _d = StockDovecot::builder()
        .master_command(FOREMAN, &["master", "-p"])
        .config_line(env_service(dir.path(), "withinet", Some(port)))
        .config_line(env_service(dir.path(), "noinet", None))
        .start()
        .expect("start");
    let with = env_of(dir.path(), "withinet");
    assert!(with.iter().any(|v| v == "SSL_KEY_PASSWORD="), "{with:?}");
    let without = env_of(dir.path(), "noinet");
    assert!(without.iter().any(|v| v.starts_with("SERVICE_NAME=")));
    assert!(!without.iter().any(|v| v.starts_with("SSL_KEY_PASSWORD")));
}

/// The socket inode behind a process's fd.
fn fd_inode(pid: u32, fd: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn login_pids(d: &StockDovecot) -> Vec<u32> {
    foreman::stock::procs::children_of(d.pid().unwrap())
        .into_iter()
        .filter(|p| p.title_name() == "imap-login")
        .map(|p| p.pid)
        .collect()
}

/// fd 7 (the `imap` inet listener) of two preforked imap-login processes.
fn login_sockets(reuse_port: bool) -> (Vec<String>, bool) {
    let d = StockDovecot::builder()
        .master_command(FOREMAN, &["master"])
        .user("alice", "pw")
        .config_line(format!(
            "service imap-login {{\n  process_min_avail = 2\n  inet_listener imap {{\n    \
             reuse_port = {}\n  }}\n}}",
            if reuse_port { "yes" } else { "no" }
        ))
        .start()
        .expect("start");
    let pids = wait_for(DEADLINE, || {
        let p = login_pids(&d);
        (p.len() == 2).then_some(p)
    })
    .expect("two imap-login processes");
    let socks: Vec<String> = pids.iter().filter_map(|&p| fd_inode(p, 7)).collect();
    // (Not with reuse_port: as with stock, the master's own socket stays in the group and a
    // connection the kernel puts there waits until the master polls it.)
    let ok = reuse_port || d.imap().unwrap().login("alice", "pw").unwrap().is_ok();
    (socks, ok)
}

#[test]
fn reuse_port_gives_each_process_its_own_socket() {
    let (socks, ok) = login_sockets(true);
    assert_eq!(socks.len(), 2, "{socks:?}");
    assert!(socks.iter().all(|s| s.starts_with("socket:")), "{socks:?}");
    assert_ne!(socks[0], socks[1], "own accept queues");
    assert!(ok);
    let (socks, ok) = login_sockets(false);
    assert_eq!(socks.len(), 2, "{socks:?}");
    assert_eq!(
        socks[0], socks[1],
        "without reuse_port the one shared socket"
    );
    assert!(ok);
}

#[test]
fn drop_priv_before_exec_runs_the_binary_as_the_service_user() {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let dovecot = nix::unistd::User::from_name("dovecot").unwrap().unwrap();
    let _d = StockDovecot::builder()
        .master_command(FOREMAN, &["master"])
        .config_line(env_service_with(
            dir.path(),
            "dropped",
            None,
            "  user = dovecot\n  drop_priv_before_exec = yes\n",
        ))
        .config_line(env_service_with(
            dir.path(),
            "kept",
            None,
            "  user = dovecot\n",
        ))
        .start()
        .expect("start");
    let dropped = env_of(dir.path(), "dropped");
    assert!(
        dropped.contains(&format!("ID_U={}", dovecot.uid)),
        "{dropped:?}"
    );
    assert!(dropped.contains(&format!("RESTRICT_SETUID={}", dovecot.uid)));
    // Without it the master only sets RESTRICT_* and the binary drops privileges itself
    // (this script does not, so it still runs as root).
    let kept = env_of(dir.path(), "kept");
    assert!(kept.contains(&"ID_U=0".to_owned()), "{kept:?}");
}

#[test]
fn shutdown_clients_terminates_old_processes_6_s_after_a_reload() {
    let d = StockDovecot::builder()
        .master_command(FOREMAN, &["master"])
        .user("alice", "pw")
        .start()
        .expect("start");
    let mut c = d.imap().unwrap();
    assert!(c.login("alice", "pw").unwrap().is_ok());
    // Keep the session active so imap's own shutdown callback (10 s of inactivity) does not
    // end it first.
    let out = d.doveadm(&["reload"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let t0 = std::time::Instant::now();
    let terminated = wait_for(DEADLINE, || {
        let _ = c.command("NOOP");
        d.log_contents()
            .contains("Processes aren't dying after reload, sent SIGTERM to")
            .then(|| t0.elapsed())
    });
    let after = terminated.unwrap_or_else(|| panic!("no SIGTERM round\n{}", d.log_tail(30)));
    assert!(after >= Duration::from_secs(5), "too early: {after:?}");
}
