//! `foreman bench master` runs end to end (tiny sizes) and prints both masters' rows.
//! Figures are not asserted (benchmarks measure, tests do not).

use std::process::Command;

#[test]
fn bench_master_prints_both_masters() {
    let out = Command::new(env!("CARGO_BIN_EXE_foreman"))
        .args(["bench", "master", "--cycles", "5", "--sessions", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for name in ["stock dovecot", "foreman master"] {
        assert!(
            text.lines().filter(|l| l.starts_with(name)).count() == 2,
            "{name} missing:\n{text}"
        );
    }
    assert!(text.contains("N=3:"), "{text}");
    // Every cycle spawns an imap-login and an imap process, under both masters.
    assert_eq!(
        text.lines()
            .filter(|l| l.split_whitespace().last() == Some("10"))
            .count(),
        2,
        "{text}"
    );
}
