//! Smaller master options, live with the stock services: `foreman master -p` (the SSL key
//! password reaches only services with inet listeners), `reuse_port` inet listeners,
//! `drop_priv_before_exec`, `log_path = syslog` for the master's own lines.

use std::fs;
use std::time::Duration;

use foreman::stock::{wait_for, StockDovecot};

const FOREMAN: &str = env!("CARGO_BIN_EXE_foreman");
const DEADLINE: Duration = Duration::from_secs(15);

/// A service whose process writes its environment to `<dir>/<name>.env` and waits.
fn env_service(dir: &std::path::Path, name: &str, inet_port: Option<u16>) -> String {
    let script = dir.join(format!("{name}.sh"));
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv > {}/{name}.env.tmp && mv {}/{name}.env.tmp {}/{name}.env\nexec sleep 30\n",
            dir.display(),
            dir.display(),
            dir.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let inet = inet_port
        .map(|p| format!("  inet_listener {name} {{\n    port = {p}\n  }}\n"))
        .unwrap_or_default();
    format!(
        "service {name} {{\n  executable = {}\n  process_min_avail = 1\n{inet}}}",
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
