//! `foreman bench anvil --quick` runs against a live stock Dovecot and prints every row of
//! the table. No thresholds: performance is never asserted in tests.

use std::process::Command;

/// The label of every row `foreman bench anvil --quick` prints.
const ROWS: &[&str] = &[
    "pipelined pairs/s, 1 client",
    "pipelined pairs/s, 8 clients",
    "LOOKUP/s, 1 client",
    "LOOKUP p99, 1 client",
    "LOOKUP/s, 8 clients",
    "LOOKUP p99, 8 clients",
    "RSS bytes/session, distinct idents, 10 k",
    "RSS bytes/session, distinct idents, 50 k",
    "RSS bytes/session, one ident, 10 k",
    "RSS bytes/session, one ident, 50 k",
    "CONNECT-DUMP time, 10 k sessions",
    "instructions/pair (callgrind)",
    "instructions/LOOKUP (callgrind)",
];

#[test]
fn quick_bench_prints_every_row() {
    let mut args = vec!["bench", "anvil", "--quick"];
    // Without valgrind the callgrind rows still print, marked skipped.
    if !std::path::Path::new("/usr/bin/valgrind").exists() {
        args.push("--skip-callgrind");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_foreman"))
        .args(&args)
        .output()
        .expect("run foreman bench anvil");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    for row in ROWS {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row:?} in:\n{stdout}"));
        // Every measured row has a figure on both sides and a ratio.
        if !line.contains("skipped") {
            assert!(line.contains('x'), "row without ratio: {line}");
            assert!(!line.contains("error"), "row failed: {line}\n{stderr}");
        }
    }
    assert!(stdout.contains("targets met:"), "{stdout}");
}
