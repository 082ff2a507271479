//! The stock Dovecot harness itself: start, log in over IMAP and POP3, see the sessions in
//! anvil, stop cleanly.

use std::time::Duration;

use foreman::stock::{wait_for, StockDovecot};

#[test]
fn harness_logs_in_and_stops() {
    let mut d = StockDovecot::builder()
        .user("alice", "pw")
        .user("bob", "pw2")
        .start()
        .expect("start stock dovecot");
    let mut imap = d.imap().unwrap();
    let reply = imap.login("alice", "pw").unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    let mut pop3 = d.pop3().unwrap();
    let reply = pop3.login("bob", "pw2").unwrap();
    assert!(reply.starts_with("+OK"), "{reply}");

    // CONNECT travels over a pipe that anvil reads asynchronously: wait for it.
    let expected = ["imap/127.0.0.1/alice", "pop3/127.0.0.1/bob"];
    let rows = wait_for(Duration::from_secs(10), || {
        let mut rows: Vec<String> = d
            .anvil_client()
            .unwrap()
            .dump(b"CONNECT-DUMP")
            .unwrap()
            .iter()
            .map(|r| {
                String::from_utf8_lossy(r)
                    .split('\t')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        rows.sort();
        (rows == expected).then_some(rows)
    });
    assert!(rows.is_some(), "sessions not in CONNECT-DUMP");

    let who = d.doveadm(&["who"]).unwrap();
    assert!(who.status.success());
    assert_eq!(String::from_utf8_lossy(&who.stdout).lines().count(), 3);

    imap.logout().unwrap();
    pop3.quit().unwrap();
    assert!(d.log_contents().contains("Login: user=<alice>"));

    let pid = d.pid().unwrap();
    let dir = d.dir().to_path_buf();
    d.stop().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(d);
    assert!(!dir.exists());
}

#[test]
fn custom_anvil_executable_runs_with_its_arguments() {
    // A wrapper script leaves a marker, then execs the stock anvil: proves that the path
    // and the arguments reach the master.
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("marker");
    let script = scratch.path().join("anvil.sh");
    std::fs::write(
        &script,
        format!(
            "echo \"$1\" > {}\nshift\nexec /usr/lib/dovecot/anvil \"$@\"\n",
            marker.display()
        ),
    )
    .unwrap();
    let d = StockDovecot::builder()
        .custom_anvil("/bin/sh", &[script.to_str().unwrap(), "hello"])
        .user("alice", "pw")
        .start()
        .expect("start stock dovecot");
    let mut imap = d.imap().unwrap();
    assert!(imap.login("alice", "pw").unwrap().is_ok());
    let lookup = wait_for(Duration::from_secs(10), || {
        let n = d
            .anvil_client()
            .unwrap()
            .request(b"LOOKUP\timap/127.0.0.1/alice")
            .unwrap();
        (n == b"1").then_some(())
    });
    assert!(lookup.is_some(), "{}", d.log_tail(20));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "hello\n");
}
