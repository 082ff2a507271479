//! The stock Dovecot harness itself: start, log in over IMAP and POP3, see the sessions in
//! anvil, stop cleanly.

use foreman::stock::StockDovecot;

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

    let mut rows: Vec<String> = d
        .anvil_client()
        .unwrap()
        .dump(b"CONNECT-DUMP")
        .unwrap()
        .iter()
        .map(|r| String::from_utf8_lossy(r).split('\t').next().unwrap().to_owned())
        .collect();
    rows.sort();
    assert_eq!(rows, ["imap/127.0.0.1/alice", "pop3/127.0.0.1/bob"]);

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
