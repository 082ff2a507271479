//! Conformance of `foreman config` with the installed stock `doveconf` (Dovecot 2.3.19.1):
//! for the stock Debian tree and every config in fixtures/config/, `-n` (and `-a` for valid
//! ones) must print the same settings, the same error/warning text with the same file:line,
//! and exit with the same status. Banner lines (`# ...` at the top) are ignored and the
//! program-name prefix of messages (`doveconf: ` / `foreman: `) is normalised.
//!
//! Skips (with a message) when doveconf is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Outcome {
    stdout: String,
    stderr: String,
    status: i32,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/config")
}

fn doveconf_available() -> bool {
    Command::new("doveconf").arg("--version").output().is_ok()
}

fn normalise(stdout: &[u8], stderr: &[u8], prefix: &str, status: Option<i32>) -> Outcome {
    let stdout = String::from_utf8_lossy(stdout);
    let body: Vec<&str> = stdout.lines().skip_while(|l| l.starts_with("# ")).collect();
    let stderr = String::from_utf8_lossy(stderr);
    let errs: Vec<String> = stderr
        .lines()
        .map(|l| l.strip_prefix(prefix).unwrap_or(l).to_owned())
        // doveconf's hint after obsolete settings; not something a loader must repeat
        .filter(|l| !l.starts_with("Warning: NOTE: You can get a new clean config file"))
        .collect();
    Outcome {
        stdout: body.join("\n"),
        stderr: errs.join("\n"),
        status: status.unwrap_or(-1),
    }
}

fn run(program: &str, prefix: &str, args: &[&str], cwd: &Path) -> Outcome {
    let out = if program == "foreman" {
        Command::new(env!("CARGO_BIN_EXE_foreman"))
            .arg("config")
            .arg("--stock")
            .args(args)
            .current_dir(cwd)
            .output()
    } else {
        Command::new(program).args(args).current_dir(cwd).output()
    }
    .expect("run");
    normalise(&out.stdout, &out.stderr, prefix, out.status.code())
}

/// Compares one config; returns a description of the differences.
fn compare(cwd: &Path, file: &str, flag: &str) -> Option<String> {
    let stock = run("doveconf", "doveconf: ", &[flag, "-c", file], cwd);
    let ours = run("foreman", "foreman: ", &[flag, "-c", file], cwd);
    let mut diff = String::new();
    if stock.status != ours.status {
        diff += &format!(
            "  exit status: doveconf {} foreman {}\n",
            stock.status, ours.status
        );
    }
    if stock.stderr != ours.stderr {
        diff += &format!(
            "  stderr:\n    doveconf: {:?}\n    foreman:  {:?}\n",
            stock.stderr, ours.stderr
        );
    }
    if stock.stdout != ours.stdout {
        let (a, b): (Vec<&str>, Vec<&str>) = (
            stock.stdout.lines().collect(),
            ours.stdout.lines().collect(),
        );
        let first = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        diff += &format!(
            "  stdout differs at line {}: doveconf {:?} foreman {:?}\n",
            first + 1,
            a.get(first),
            b.get(first)
        );
    }
    (!diff.is_empty()).then(|| format!("{file} ({flag}):\n{diff}"))
}

/// Every corpus config, as a path relative to fixtures/config.
fn corpus() -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(fixtures().join("cases")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".conf") {
            files.push(format!("cases/{name}"));
        }
    }
    for entry in std::fs::read_dir(fixtures().join("trees")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        files.push(format!("trees/{name}/dovecot.conf"));
    }
    files.sort();
    files
}

#[test]
fn corpus_is_large_enough() {
    let files = corpus();
    assert!(files.len() >= 40, "{} configs", files.len());
    let broken = files
        .iter()
        .filter(|f| f.contains("/bad-") || f.starts_with("trees/bad"))
        .count();
    assert!(broken >= 15, "{broken} broken configs");
}

#[test]
fn changed_settings_match_doveconf() {
    if !doveconf_available() {
        eprintln!("doveconf not installed: skipped");
        return;
    }
    let failures: Vec<String> = corpus()
        .iter()
        .filter_map(|f| compare(&fixtures(), f, "-n"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        corpus().len(),
        failures.join("")
    );
}

#[test]
fn all_settings_match_doveconf() {
    if !doveconf_available() {
        eprintln!("doveconf not installed: skipped");
        return;
    }
    let ok: Vec<String> = corpus()
        .into_iter()
        .filter(|f| !f.contains("bad"))
        .collect();
    let failures: Vec<String> = ok
        .iter()
        .filter_map(|f| compare(&fixtures(), f, "-a"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        ok.len(),
        failures.join("")
    );
}

#[test]
fn stock_debian_tree_matches_doveconf() {
    if !doveconf_available() || !Path::new("/etc/dovecot/dovecot.conf").exists() {
        eprintln!("doveconf or /etc/dovecot not installed: skipped");
        return;
    }
    for flag in ["-n", "-a"] {
        if let Some(diff) = compare(Path::new("/"), "/etc/dovecot/dovecot.conf", flag) {
            panic!("{diff}");
        }
    }
}
