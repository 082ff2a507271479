//! Conformance of `foreman config` with the installed stock `doveconf` (Dovecot 2.3.19.1):
//! for the stock Debian tree and every config in fixtures/config/, `-n` (and `-a` for valid
//! ones) must print the same settings, the same error/warning text with the same file:line,
//! and exit with the same status. Banner lines (`# ...` at the top) are ignored and the
//! program-name prefix of messages (`doveconf: ` / `foreman: `) is normalised.
//!
//! Fails with the install hint when doveconf is not installed (the test command installs it).

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

/// Panics with the install hint when stock doveconf is missing: these tests compare with it,
/// and the README's test command installs it, so a missing binary is a broken set-up.
fn require_doveconf() {
    assert!(
        Command::new("doveconf").arg("--version").output().is_ok(),
        "doveconf not found; install stock Dovecot: {}",
        foreman::stock::INSTALL_HINT
    );
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
fn compare(cwd: &Path, file: &str, flags: &[&str]) -> Option<String> {
    let args: Vec<&str> = flags.iter().copied().chain(["-c", file]).collect();
    let stock = run("doveconf", "doveconf: ", &args, cwd);
    let ours = run("foreman", "foreman: ", &args, cwd);
    let flag = flags.join(" ");
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

/// The corpus configs that doveconf accepts.
fn valid_corpus() -> Vec<String> {
    corpus()
        .into_iter()
        .filter(|f| !f.contains("bad"))
        .collect()
}

/// Compares every config of `files` with doveconf under `flags`; fails listing every difference.
fn assert_all_match(files: &[String], flags: &[&str]) {
    require_doveconf();
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| compare(&fixtures(), f, flags))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        files.len(),
        failures.join("")
    );
}

#[test]
fn changed_settings_match_doveconf() {
    assert_all_match(&corpus(), &["-n"]);
}

#[test]
fn all_settings_match_doveconf() {
    assert_all_match(&valid_corpus(), &["-a"]);
}

#[test]
fn stock_debian_tree_matches_doveconf() {
    require_doveconf();
    for flag in ["-n", "-a"] {
        if let Some(diff) = compare(Path::new("/"), "/etc/dovecot/dovecot.conf", &[flag]) {
            panic!("{diff}");
        }
    }
}

/// Expanding mode (`-x`: `$variables`, `$ENV:`, `<file` contents) on the valid configs.
#[test]
fn expanding_mode_matches_doveconf() {
    assert_all_match(&valid_corpus(), &["-x", "-n"]);
}
