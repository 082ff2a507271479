//! `foreman who --processes` against a real standalone Foreman anvil fed with the master's
//! and a dispatcher's registry lines, and the anvil's registry upkeep (a claim whose
//! dispatcher vanished expires and is logged). Every wait is on a condition with a deadline.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use support::anvil::{foreman_who, wait_until, Standalone};
use support::now_ms;

const DEADLINE: Duration = Duration::from_secs(10);
const EXT_VERSION: &[u8] = b"VERSION\tforeman-anvil\t1\t0\n";

/// A standalone anvil whose claims expire after `claim_ttl_ms`.
fn start_anvil(claim_ttl_ms: u64) -> Standalone {
    Standalone::start_with(&["--claim-ttl-ms", &claim_ttl_ms.to_string()])
}

/// A connection that sent `handshake` (and read the greeting of a foreman-anvil one).
fn connect(anvil: &Standalone, handshake: &[u8]) -> UnixStream {
    let mut s = UnixStream::connect(&anvil.socket).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(handshake).unwrap();
    if handshake == EXT_VERSION {
        assert_eq!(read_lines(&mut s, 1), EXT_VERSION);
    }
    s
}

/// Reads until `n` LFs (or EOF).
fn read_lines(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while got.iter().filter(|&&b| b == b'\n').count() < n {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => got.push(byte[0]),
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    got
}

/// Sends lines and reads `replies` reply lines.
fn send(s: &mut UnixStream, lines: &str, replies: usize) -> String {
    s.write_all(lines.as_bytes()).unwrap();
    String::from_utf8(read_lines(s, replies)).unwrap()
}

/// Waits until everything sent on `s` has been handled (the registry commands from the
/// master have no reply; another connection must not overtake them).
fn sync(s: &mut UnixStream) {
    assert_eq!(send(s, "LOOKUP\tsync\n", 1), "0\n");
}

/// The registry of a small reuse pool: alice idle for 2 h (one process claimed), bob busy,
/// dave bound through a v1 CONNECT (uid unknown), one fresh spare.
fn populate(anvil: &Standalone) -> u64 {
    let two_hours_ago = now_ms() - 2 * 3_600_000;
    let mut master = connect(anvil, EXT_VERSION);
    let mut dispatcher = connect(anvil, EXT_VERSION);
    for pid in [101, 102, 103, 104, 105] {
        send(&mut master, &format!("PROC-BIRTH\timap\t{pid}\t0\n"), 0);
    }
    sync(&mut master);
    assert_eq!(
        send(&mut dispatcher, "CLAIM\timap\talice\t1000\n", 1),
        "101\t1\tfresh\n"
    );
    assert_eq!(
        send(&mut dispatcher, "CLAIM\timap\tbob\t1001\n", 1),
        "102\t2\tfresh\n"
    );
    assert_eq!(
        send(&mut dispatcher, "CLAIM\timap\talice\t1000\n", 1),
        "103\t3\tfresh\n"
    );
    send(
        &mut dispatcher,
        "RELEASE\t101\t1\tserved\nRELEASE\t102\t2\tserved\nRELEASE\t103\t3\tserved\n",
        0,
    );
    sync(&mut dispatcher);
    send(
        &mut master,
        &format!(
            "PROC-IDLE\t101\t{two_hours_ago}\nPROC-IDLE\t103\t{two_hours_ago}\n\
             PROC-BUSY\t102\t{two_hours_ago}\n"
        ),
        0,
    );
    sync(&mut master);
    // A stock login's session on 104: a plain v1 connection reports it.
    let mut v1 = connect(anvil, b"VERSION\tanvil\t1\t0\n");
    v1.write_all(b"CONNECT\t104\timap/127.0.0.1/dave\n")
        .unwrap();
    assert_eq!(send(&mut v1, "LOOKUP\timap/127.0.0.1/dave\n", 1), "1\n");
    // alice claims again: 101 and 103 idled at the same time, the lower pid is taken.
    assert_eq!(
        send(&mut dispatcher, "CLAIM\timap\talice\t1000\n", 1),
        "101\t4\treuse\n"
    );
    two_hours_ago
}

#[test]
fn processes_table_and_json_from_a_live_registry() {
    let anvil = start_anvil(30_000);
    let since = populate(&anvil);

    let out = foreman_who(&anvil.socket, &["--processes"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["username", "proto", "pid", "uid", "state", "for", "claim"],
            vec!["alice", "imap", "101", "1000", "idle", "2h00m", "claimed"],
            vec!["alice", "imap", "103", "1000", "idle", "2h00m", "-"],
            vec!["bob", "imap", "102", "1001", "busy", "2h00m", "-"],
            vec!["dave", "imap", "104", "?", "fresh", rows[4][5], "-"],
            vec!["(fresh)", "imap", "105", "0", "fresh", rows[5][5], "-"],
        ],
        "{text}"
    );

    let out = foreman_who(&anvil.socket, &["--processes", "--json", "alice"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let procs = v[0]["processes"].as_array().unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["username"], "alice");
    assert_eq!(
        procs
            .iter()
            .map(|p| (
                p["pid"].as_u64().unwrap(),
                p["state"].as_str().unwrap(),
                p["since"].as_u64().unwrap(),
                p["claim"].as_str()
            ))
            .collect::<Vec<_>>(),
        [
            (101, "idle", since, Some("claimed")),
            (103, "idle", since, None)
        ]
    );
    // The idle time is now − since, measured by `foreman who` after the feed.
    assert!(procs[0]["for_ms"].as_u64().unwrap() >= 2 * 3_600_000);

    let out = foreman_who(&anvil.socket, &["--processes", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dave = &v[2];
    assert_eq!(
        (&dave["username"], &dave["group"]),
        (&"dave".into(), &"user".into())
    );
    assert_eq!(dave["processes"][0]["uid"], serde_json::Value::Null);
    assert_eq!(v[3]["username"], serde_json::Value::Null);
    assert_eq!(v[3]["group"], "fresh");
}

#[test]
fn a_claim_whose_dispatcher_vanished_expires() {
    let anvil = start_anvil(300);
    let mut master = connect(&anvil, EXT_VERSION);
    send(&mut master, "PROC-BIRTH\timap\t4242\t0\n", 0);
    sync(&mut master);
    {
        let mut dispatcher = connect(&anvil, EXT_VERSION);
        assert_eq!(
            send(&mut dispatcher, "CLAIM\timap\talice\t1000\n", 1),
            "4242\t1\tfresh\n"
        );
        // The dispatcher goes away without a RELEASE.
    }
    wait_until("the expiry log line", || {
        anvil.stderr.text().contains(
            "registry: claim of pid 4242 (token 1) expired without a release, \
             process kept bound to user alice",
        )
    });
    // The process is unclaimed and still alice's (an expired claim counts as failed).
    let dump = send(&mut master, "PROC-DUMP\n", 2);
    assert!(
        dump.starts_with("4242\timap\talice\t1000\tfresh\t") && dump.ends_with("\t-\n\n"),
        "{dump:?}"
    );
    let mut dispatcher = connect(&anvil, EXT_VERSION);
    assert_eq!(
        send(&mut dispatcher, "CLAIM\timap\tbob\t1001\n", 1),
        "none\n"
    );
}

#[test]
fn processes_need_a_foreman_anvil() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("anvil");
    let listener = UnixListener::bind(&socket).unwrap();
    // Like stock anvil: reads the foreman-anvil handshake and closes without a word.
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.ends_with(b"PROC-DUMP\n") {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    let out = foreman_who(&socket, &["--processes"]);
    assert_eq!(
        server.join().unwrap(),
        b"VERSION\tforeman-anvil\t1\t0\nPROC-DUMP\n"
    );
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "Fatal: anvil at {} is not a Foreman anvil (no foreman-anvil greeting): no process registry\n",
            socket.display()
        )
    );
    let out = foreman_who(&socket, &["--processes", "10.0.0.0/8"]);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "Error: Network masks do not apply to --processes\n"
    );
}
