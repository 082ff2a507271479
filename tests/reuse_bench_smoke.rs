//! `foreman bench reuse --quick` runs end to end and prints its table with the Foreman set-up
//! measured and no Foreman process ever serving two users; and the harness's many-uid users
//! (`Builder::distinct_uids` + `seed_inboxes`) log in as their own uid with one message in INBOX.
//! Figures are not asserted (benchmarks measure, tests do not).

use std::fs;
use std::process::Command;
use std::time::Duration;

use foreman::bench::reuse::TABLE_COLUMNS;
use foreman::stock::{procs, wait_for, Protocol, StockDovecot};

/// The columns of a table line (separated by two spaces or more).
fn columns(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn bench_reuse_quick_prints_the_table_and_foreman_never_mixes_users() {
    let out = Command::new(env!("CARGO_BIN_EXE_foreman"))
        .args(["bench", "reuse", "--quick"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{log}");
    let header = text
        .lines()
        .find(|l| l.starts_with("figure"))
        .unwrap_or_else(|| panic!("no table:\n{text}"));
    assert_eq!(columns(header), TABLE_COLUMNS[..7]);
    // The rows of figure `what`, as columns.
    let rows_of = |what: &str| -> Vec<Vec<&str>> {
        text.lines()
            .filter(|l| l.contains(&format!(": {what}")))
            .map(columns)
            .collect()
    };
    // --quick: users 1 and 4, one uid and many uids.
    let cross = rows_of("processes serving 2+ users");
    assert_eq!(cross.len(), 4, "{text}");
    for row in &cross {
        assert_eq!(row[3], "0", "foreman column of {row:?}:\n{text}");
        assert_eq!(row.last(), Some(&"PASS"), "{row:?}");
    }
    // The spawn count comes from the master (`doveadm service status`), Foreman's included.
    let spawned = rows_of("processes spawned/login");
    assert_eq!(spawned.len(), 4, "{text}");
    for row in &spawned {
        assert!(row[3].parse::<f64>().is_ok(), "foreman column of {row:?}");
    }
    for what in [
        "logins/s",
        "p50 connect->LOGIN OK",
        "set-up CPU/login",
        "machine CPU/login",
    ] {
        let rows = rows_of(what).len();
        assert_eq!(rows, 4, "{what}:\n{text}");
    }
    assert!(text.contains("targets met: "), "{text}");
}

#[test]
fn distinct_uids_log_in_as_their_own_uid_with_a_seeded_inbox() {
    const BASE: u32 = 41_000;
    let d = StockDovecot::builder()
        .protocols(&[Protocol::Imap])
        .user("u0", "p")
        .user("u1", "p")
        .distinct_uids(BASE)
        .seed_inboxes()
        .start()
        .expect("start");
    let home = d.dir().join("home/u1");
    let meta = fs::metadata(&home).expect("home of u1");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), BASE + 1);

    let mut c = d.imap().expect("connect");
    assert!(c.login("u1", "p").unwrap().is_ok());
    let select = c.command("SELECT INBOX").unwrap();
    assert!(select.is_ok(), "{select:?}");
    assert!(
        select.untagged.iter().any(|l| l == "* 1 EXISTS"),
        "{select:?}"
    );
    let fetch = c.command("FETCH 1 (FLAGS)").unwrap();
    assert!(fetch.is_ok(), "{fetch:?}");

    // The logged-in imap process (title `imap [u1 …]`) runs as u1's uid.
    let master = d.pid().expect("master pid");
    let pid = wait_for(Duration::from_secs(10), || {
        procs::children_of(master)
            .into_iter()
            .find(|p| p.cmdline.contains("imap [u1"))
            .map(|p| p.pid)
    })
    .expect("u1's imap process");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some((BASE + 1).to_string().as_str()),
        "{uid_line}"
    );
    c.logout().unwrap();
}
