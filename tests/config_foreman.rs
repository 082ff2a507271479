//! The loader as the master uses it: the typed model with stock defaults, Foreman's
//! extensions (`%{pid}` listeners, `process_limit_margin`), every error at once, and the
//! flattened copy for stock processes (checked with the installed doveconf).

use std::path::{Path, PathBuf};
use std::process::Command;

use foreman::master_compat::config::{load, load_str, LoadOptions, ServiceType};

fn fixture(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/config")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

fn foreman_opts() -> LoadOptions {
    LoadOptions {
        foreman: true,
        ..Default::default()
    }
}

#[test]
fn stock_defaults_fill_every_builtin_service() {
    let loaded = load_str("empty.conf", "", foreman_opts());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let m = loaded.master_settings();
    assert_eq!(m.base_dir, "/run/dovecot");
    assert_eq!(m.listen, ["*", "::"]);
    assert!(
        m.protocols.is_empty(),
        "Debian's built-in protocols is empty"
    );
    assert_eq!(
        (
            m.default_process_limit,
            m.default_client_limit,
            m.default_idle_kill
        ),
        (100, 1000, 60)
    );
    assert_eq!(m.default_vsz_limit, 256 << 20);
    assert_eq!(m.services.len(), 30);

    let imap = m.service("imap").unwrap();
    assert_eq!(
        (imap.process_limit, imap.client_limit, imap.service_count),
        (1024, 1, 1)
    );
    assert_eq!(imap.extra_groups, "$default_internal_group");
    let paths: Vec<(String, u32)> = imap
        .unix_listeners
        .iter()
        .map(|l| (l.path.to_string(), l.mode))
        .collect();
    assert_eq!(
        paths,
        [
            ("imap-master".to_owned(), 0o600),
            ("login/imap".to_owned(), 0o666)
        ]
    );
    assert_eq!(imap.process_limit_margin, 0);

    let login = m.service("imap-login").unwrap();
    assert_eq!(login.service_type, ServiceType::Login);
    assert_eq!(login.chroot, "login");
    let inet: Vec<(&str, u16, bool)> = login
        .inet_listeners
        .iter()
        .map(|l| (l.name.as_str(), l.port, l.ssl))
        .collect();
    assert_eq!(inet, [("imap", 143, false), ("imaps", 993, true)]);

    let anvil = m.service("anvil").unwrap();
    assert_eq!((anvil.process_min_avail, anvil.process_limit), (1, 1));
    assert_eq!(anvil.effective_idle_kill(&m), None);
    assert_eq!(anvil.effective_vsz_limit(&m), Some(256 << 20));
    let old_stats = m.service("old-stats").unwrap();
    assert_eq!(old_stats.fifo_listeners.len(), 2);
}

#[test]
fn stock_debian_tree_loads_into_the_model() {
    if !Path::new("/etc/dovecot/dovecot.conf").exists() {
        eprintln!("/etc/dovecot not installed: skipped");
        return;
    }
    let loaded = load("/etc/dovecot/dovecot.conf", foreman_opts());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let m = loaded.master_settings();
    assert!(m.protocols.iter().any(|p| p == "imap"));
    assert!(m.service("imap").unwrap().in_use(&m));
    assert!(!m.service("submission").unwrap().in_use(&m));
}

#[test]
fn per_process_listener_and_margin() {
    let loaded = load(&fixture("foreman/reuse.conf"), foreman_opts());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let m = loaded.master_settings();
    let imap = m.service("imap").unwrap();
    assert_eq!(imap.process_limit_margin, 10);
    assert_eq!(imap.eviction_threshold(&m), 90);
    let per_pid: Vec<_> = imap
        .unix_listeners
        .iter()
        .filter(|l| l.path.is_per_process())
        .collect();
    assert_eq!(per_pid.len(), 1);
    assert_eq!(per_pid[0].path.for_pid(1234), "imap-master-1234");
    assert_eq!(per_pid[0].path.child_name(), "imap-master");
    // The built-in shared imap-master socket is still there too.
    assert!(imap
        .unix_listeners
        .iter()
        .any(|l| l.path.to_string() == "imap-master"));
}

#[test]
fn stock_mode_rejects_foreman_settings() {
    let loaded = load(&fixture("foreman/reuse.conf"), LoadOptions::default());
    let msgs: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].ends_with("line 11: Unknown setting: service { process_limit_margin"),
        "{msgs:?}"
    );
}

#[test]
fn pid_token_errors_are_all_reported() {
    let loaded = load(&fixture("foreman/bad-pid-token.conf"), foreman_opts());
    let lines: Vec<u32> = loaded
        .errors
        .iter()
        .map(|e| match &e.place {
            foreman::master_compat::config::error::Place::Line(p) => p.line,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(lines, [2, 4, 6, 10]);
    let loaded = load(&fixture("foreman/bad-margin.conf"), foreman_opts());
    assert_eq!(
        loaded.errors[0].message,
        "service(imap): process_limit_margin (10) must be lower than process_limit (10)"
    );
}

#[test]
fn every_syntax_error_at_once() {
    let text = "foo = 1\nverbose_proctitle = maybe\nservice imap {\n  bar = 2\n}\n}\ndefault_idle_kill = 5\n";
    let loaded = load_str("t.conf", text, foreman_opts());
    let msgs: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        msgs,
        [
            "Error in configuration file t.conf line 1: Unknown setting: foo",
            "Error in configuration file t.conf line 2: Invalid boolean value: maybe (use yes or no)",
            "Error in configuration file t.conf line 4: Unknown setting: service { bar",
            "Error in configuration file t.conf line 6: Unexpected '}'",
            "Error in configuration file t.conf line 7: Time interval '5' is missing units (add e.g. 's' for seconds)",
        ]
    );
}

#[test]
fn expanding_mode_reads_files_and_variables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greeting.txt"), "hello from a file").unwrap();
    let main = dir.path().join("d.conf");
    std::fs::write(
        &main,
        "login_greeting = <greeting.txt\ninstance_name = $ENV:FOREMAN_TEST_UNSET_VAR x\nmail_location = $foo\n",
    )
    .unwrap();
    let opts = LoadOptions {
        mode: foreman::master_compat::config::Mode::Expand,
        ..foreman_opts()
    };
    let loaded = load(main.to_str().unwrap(), opts);
    assert_eq!(
        loaded.store.filters[0].values["login_greeting"].value,
        "hello from a file"
    );
    assert_eq!(loaded.store.filters[0].values["instance_name"].value, " x");
    assert_eq!(loaded.errors.len(), 1);
    assert_eq!(loaded.errors[0].message, "Unknown variable: $foo");
    // Literal mode keeps them.
    let literal = load(main.to_str().unwrap(), foreman_opts());
    assert!(literal.errors.is_empty(), "{:?}", literal.errors);
    assert_eq!(
        literal.store.filters[0].values["login_greeting"].value,
        "<greeting.txt"
    );
}

fn doveconf_n(path: &Path, cwd: &Path) -> Option<(String, i32)> {
    let out = Command::new("doveconf")
        .args(["-n", "-c"])
        .arg(path)
        .current_dir(cwd)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let body: Vec<&str> = text.lines().skip_while(|l| l.starts_with("# ")).collect();
    Some((body.join("\n"), out.status.code().unwrap_or(-1)))
}

fn render(config: &str, out: &Path, cwd: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_foreman"))
        .args(["config", "-n", "-c", config, "--render-stock"])
        .arg(out)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{config}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// The rendered copy of every valid corpus config means the same to stock doveconf as the
/// original; the copy of a config with Foreman's extensions is accepted and has none left.
#[test]
fn stock_copy_is_accepted_by_doveconf() {
    if Command::new("doveconf").arg("--version").output().is_err() {
        eprintln!("doveconf not installed: skipped");
        return;
    }
    let root = PathBuf::from(fixture(""));
    let tmp = tempfile::tempdir().unwrap();
    let mut configs: Vec<String> = std::fs::read_dir(root.join("cases"))
        .unwrap()
        .map(|e| format!("cases/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|n| n.contains("/ok-"))
        .collect();
    configs.push("trees/includes/dovecot.conf".to_owned());
    configs.sort();
    for (i, config) in configs.iter().enumerate() {
        let out = tmp.path().join(format!("{i}.conf"));
        render(config, &out, &root);
        let original = doveconf_n(&root.join(config), &root).unwrap();
        let (copy, status) = doveconf_n(&out, &root).unwrap();
        // Relative `<file` paths were made absolute (the copy lives elsewhere).
        let dir = root
            .join(config)
            .parent()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let copy = copy.replace(&format!("<{dir}/"), "<");
        if std::fs::read_to_string(root.join(config))
            .unwrap()
            .contains("%{pid}")
        {
            // doveconf accepts `%{pid}` as a literal path; the copy drops those listeners.
            assert_eq!(status, 0, "{config}");
            assert!(!copy.contains("%{pid}"), "{config}");
            continue;
        }
        assert_eq!((copy, status), original, "{config}");
    }
    let out = tmp.path().join("reuse.conf");
    render("foreman/reuse.conf", &out, &root);
    let (text, status) = doveconf_n(&out, &root).unwrap();
    assert_eq!(status, 0, "{text}");
    assert!(
        !text.contains("process_limit_margin") && !text.contains("%{pid}"),
        "{text}"
    );
    assert!(text.contains("process_limit = 100"), "{text}");
}
