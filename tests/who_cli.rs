//! `foreman who` as a binary against a fake anvil (a unix socket in a temp dir serving one
//! fixed CONNECT-DUMP): request bytes, stdout, stderr and exit codes.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::thread::JoinHandle;

use support::anvil::foreman_who;

/// Serves one connection: reads the request up to `CONNECT-DUMP\n`, writes `reply`, and
/// returns the request bytes.
fn fake_anvil(path: &Path, reply: &'static [u8]) -> JoinHandle<Vec<u8>> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 256];
        while !request.ends_with(b"CONNECT-DUMP\n") {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "client closed early");
            request.extend_from_slice(&buf[..n]);
        }
        conn.write_all(reply).unwrap();
        request
    })
}

const DUMP: &[u8] = b"imap/127.0.0.1/alice\t101\t2\nnoslash\t9\t1\npop3/::1/bob\t202\t1\nimap/10.0.0.1/alice\t103\t1\n\n";

#[test]
fn default_mode_output_and_invalid_rows() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("anvil");
    let server = fake_anvil(&socket, DUMP);
    let out = foreman_who(&socket, &[]);
    assert_eq!(
        server.join().unwrap(),
        b"VERSION\tanvil\t1\t0\nCONNECT-DUMP\n"
    );
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "Error: Invalid input: noslash\t9\t1\n"
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "username # proto (pids)    (ips)                               \n\
         alice    3 imap  (101 103) (127.0.0.1 10.0.0.1)                \n\
         bob      1 pop3  (202)     (::1)                               \n"
    );
}

#[test]
fn one_per_session_with_a_network_mask() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("anvil");
    let server = fake_anvil(&socket, DUMP);
    let out = foreman_who(&socket, &["-1", "127.0.0.0/8"]);
    server.join().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "username                           proto pid ip       \n\
         alice                              imap  101 127.0.0.1\n\
         alice                              imap  101 127.0.0.1\n"
    );
}

#[test]
fn json_output() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("anvil");
    let server = fake_anvil(&socket, DUMP);
    let out = foreman_who(&socket, &["--json", "bob"]);
    server.join().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{"username": "bob", "service": "pop3", "count": 1, "pids": [202], "ips": ["::1"]}])
    );
}

#[test]
fn usage_and_connect_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing");
    let out = foreman_who(&missing, &["al*", "bo*"]);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "Error: Multiple username masks not supported\n"
    );
    let out = foreman_who(&missing, &["1.2.3.4", "10.0.0.0/8"]);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "Error: Multiple network masks not supported\n"
    );
    let out = foreman_who(&missing, &[]);
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "Fatal: net_connect_unix({}) failed: No such file or directory\n",
            missing.display()
        )
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn truncated_dump_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("anvil");
    let server = fake_anvil(&socket, b"imap/127.0.0.1/alice\t101\t2\n");
    let out = foreman_who(&socket, &[]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(75));
    assert!(String::from_utf8_lossy(&out.stderr).contains("closed before the end of the dump"));
}
