//! Security guarantees of per-user reuse, live (see `reuse_guarantees.rs`): user names and
//! uids are validated before anything reaches imap (stock imap trusts an imap-master caller
//! completely), and users of different uids each get their own processes. (The per-pid
//! listeners' permissions: `reuse_guarantees_races.rs`.)

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use foreman::stock::{ImapClient, StockDovecot};
use support::*;

const INTERNAL: &str = "NO [UNAVAILABLE] Internal error occurred.";

/// A LOGIN the dispatcher refuses: the client gets stock's internal-error NO and the log a
/// `login failed: <why>` line of the dispatcher. The client.
fn refused(d: &StockDovecot, user: &str, pw: &str, why: &str) -> ImapClient {
    let mut c = d.imap().unwrap();
    let r = c.login(user, pw).unwrap();
    assert!(r.tagged.starts_with(INTERNAL), "{r:?}\n{}", d.log_tail(20));
    wait_log(d, &format!("foreman-dispatch: Error: login failed: {why}"));
    c
}

/// No imap line names a user for which `bad` holds, and imap never died abnormally.
fn imap_never_saw(d: &StockDovecot, bad: impl Fn(&str) -> bool) {
    for (u, pid) in imap_sessions(d) {
        assert!(!bad(&u), "imap {pid} served {u:?}\n{}", d.log_tail(30));
    }
    let log = d.log_contents();
    for word in ["Panic", "Fatal", "killed with signal"] {
        assert!(!log.contains(word), "{word}:\n{}", d.log_tail(30));
    }
}

/// A passdb that renames the user to one with a control byte (`user=` extra field): stock
/// would serve `a\x01b` (its log shows `imap(ab)`); the dispatcher refuses it with a clear
/// log line, the client gets stock's internal-error NO, no imap process and no registry row
/// ever sees the name, and other users go on.
#[test]
fn user_name_with_a_control_byte_never_reaches_imap() {
    let d = reuse_builder(&reuse(10, 2, 2))
        .user("u1", "p1")
        .start()
        .expect("start the reuse stack");
    let passwd = d.dir().join("passwd");
    fs::write(
        &passwd,
        "u1:{PLAIN}p1::::::\nctl:{PLAIN}pw::::::user=a\x01b\n",
    )
    .unwrap();
    // auth may have read the file already, in this same second: another mtime makes it
    // read it again.
    fs::File::options()
        .write(true)
        .open(&passwd)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))
        .unwrap();
    let mut c = refused(
        &d,
        "ctl",
        "pw",
        "user name \"a\\x01b\" contains a control character",
    );
    assert!(c.wait_closed(DEADLINE).is_ok(), "imap-login closes it");
    assert!(
        imap_rows(&d)
            .iter()
            .all(|r| r.user.is_empty() || r.user == "u1"),
        "{:?}",
        imap_rows(&d)
    );
    in_and_out(&d, "u1", "p1");
    imap_never_saw(&d, |u| u != "u1");
}

/// A userdb that returns uid 0: refused by the dispatcher (imap would refuse root, and a
/// process that became root must never exist), clear log line, no imap process touched.
#[test]
fn uid_zero_from_the_userdb_never_reaches_imap() {
    let users = [
        DbUser::new("u1", "p1", 60001),
        DbUser::new("toor", "pw", 60002),
    ];
    let db = UserdbDir::new(&users);
    // passwd-file refuses a 0 in its uid column, not in a `userdb_uid` extra field (with
    // the column empty).
    let toor_home = db.path().parent().unwrap().join("toor");
    let text = fs::read_to_string(db.path()).unwrap().replace(
        &format!("toor::60002:65534::{}::\n", toor_home.display()),
        &format!("toor:::::{}::userdb_uid=0\n", toor_home.display()),
    );
    assert!(text.contains("::userdb_uid=0"), "{text}");
    fs::write(db.path(), text).unwrap();
    let d = db.start_foreman(&reuse(10, 2, 2), &users);
    let _c = refused(&d, "toor", "pw", "userdb returned 0 as uid for \"toor\"");
    assert!(imap_rows(&d)
        .iter()
        .all(|r| r.uid != 0 || r.user.is_empty()));
    in_and_out(&d, "u1", "p1");
    imap_never_saw(&d, |u| u == "toor");
    assert!(mpids_of(&d, "toor").is_empty());
}

/// A userdb that gives no uid (the column empty), with `mail_uid` set globally, as many
/// virtual-user set-ups do: imap runs the user as `mail_uid`, so the dispatcher claims with
/// that uid (read from the config service) and the user is served, and reused.
#[test]
fn a_user_without_a_userdb_uid_is_served_as_mail_uid() {
    let users = [
        DbUser::new("u1", "p1", 60001),
        DbUser::new("plain", "pw", 60005),
    ];
    let db = UserdbDir::new(&users);
    let home = db.path().parent().unwrap().join("plain");
    let text = fs::read_to_string(db.path()).unwrap().replace(
        &format!("plain::60005:65534::{}::\n", home.display()),
        &format!("plain:::::{}::\n", home.display()),
    );
    assert!(text.contains("plain:::::"), "{text}");
    fs::write(db.path(), text).unwrap();
    let fm = format!("{FOREMAN} master");
    let d = db
        .apply(
            reuse_builder(&reuse(10, 2, 2)).config_line("mail_uid = 60005\nmail_gid = 65534"),
            &users,
            &fm,
        )
        .start()
        .expect("start the reuse stack");
    let p = served_once(&d, "plain", "pw");
    assert_eq!(uid_of(p), Some(60005), "{}", d.log_tail(20));
    let q = served_once(&d, "plain", "pw");
    assert_eq!(q, p, "the second login reuses the process");
    assert!(imap_rows(&d)
        .iter()
        .any(|r| r.user == "plain" && r.uid == 60005));
    imap_never_saw(&d, |_| false);
}

/// The real uid of a process.
fn uid_of(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Four users of four uids, three sessions each at once, twice: no process ever serves two
/// users, every process runs as its user's uid (and the registry binds it to that uid), and
/// the second round reuses each user's own processes.
#[test]
fn users_of_different_uids_each_get_their_own_processes() {
    let users = FOUR_UIDS;
    let db = UserdbDir::new(&users);
    let d = db.start_foreman(&reuse(20, 2, 2), &users);
    let port = d.imap_port().unwrap();
    let uid_of_user: BTreeMap<&str, u32> = users.iter().map(|u| (u.name, u.uid)).collect();

    let mut rounds: Vec<BTreeMap<String, BTreeSet<u32>>> = Vec::new();
    for round in 0..2 {
        let before = logins(&d).len();
        let threads: Vec<_> = users
            .iter()
            .flat_map(|u| std::iter::repeat_n((u.name, u.password), 3))
            .map(|(name, pw)| {
                std::thread::spawn(move || {
                    let mut c = ImapClient::connect(port).unwrap();
                    let r = c.login(name, pw).unwrap();
                    (c, r)
                })
            })
            .collect();
        let mut held = Vec::new();
        for t in threads {
            let (c, r) = t.join().unwrap();
            assert!(r.is_ok(), "round {round}: {r:?}\n{}", d.log_tail(30));
            held.push(c);
        }
        let got = foreman::stock::wait_for(DEADLINE, || {
            let l = logins(&d);
            (l.len() == before + 12).then_some(l)
        })
        .expect("12 Login lines");
        let mut by_user: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for l in &got[before..] {
            by_user.entry(l.user.clone()).or_default().insert(l.mpid);
        }
        // While the sessions run: each process runs as its user's uid.
        for (user, pids) in &by_user {
            assert_eq!(pids.len(), 3, "{user}: {pids:?}");
            for p in pids {
                assert_eq!(uid_of(*p), Some(uid_of_user[user.as_str()]), "{user} {p}");
            }
        }
        for c in held {
            c.logout().unwrap();
        }
        for pids in by_user.values() {
            for p in pids {
                wait_idle(&d, *p);
            }
        }
        rounds.push(by_user);
    }
    // Never shared: by imap-login's view, imap's own log and the registry.
    let mut owner: BTreeMap<u32, String> = BTreeMap::new();
    for l in logins(&d) {
        if let Some(prev) = owner.insert(l.mpid, l.user.clone()) {
            assert_eq!(prev, l.user, "pid {} served two users", l.mpid);
        }
    }
    for (u, pid) in imap_sessions(&d) {
        assert_eq!(owner.get(&pid), Some(&u), "imap {pid} logged {u}");
    }
    for row in imap_rows(&d) {
        if let Some(u) = owner.get(&row.pid.get()) {
            assert_eq!(row.user, u.as_str(), "{row:?}");
            assert_eq!(row.uid, uid_of_user[u.as_str()], "{row:?}");
        }
    }
    // Reuse per user: the second round went to the same processes.
    assert_eq!(rounds[0], rounds[1]);
}

/// The userdb renames users (`userdb_user=` extra field): to an empty name (auth itself
/// refuses that and keeps the login name: `username attempted to be changed to empty`) and
/// to a name with a control byte (the dispatcher refuses it, clear log line). imap never sees
/// an empty or control-byte user and never dies.
#[test]
fn userdb_renames_never_bring_an_empty_or_control_user_to_imap() {
    let users = [
        DbUser::new("u1", "p1", 60001),
        DbUser::new("e", "pw", 60002),
        DbUser::new("c", "pw", 60003),
    ];
    let db = UserdbDir::new(&users);
    let text: String = fs::read_to_string(db.path())
        .unwrap()
        .lines()
        .map(|l| match l.split(':').next() {
            Some("e") => format!("{l}userdb_user=\n"),
            Some("c") => format!("{l}userdb_user=x\x01y\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    fs::write(db.path(), text).unwrap();
    let d = db.start_foreman(&reuse(10, 2, 2), &users);

    let mut e = login(&d, "e", "pw");
    session_works(&mut e);
    e.logout().unwrap();
    wait_log(&d, "username attempted to be changed to empty");
    assert_eq!(mpids_of(&d, "e").len(), 1);

    let _c = refused(
        &d,
        "c",
        "pw",
        "user name \"x\\x01y\" contains a control character",
    );
    in_and_out(&d, "u1", "p1");
    imap_never_saw(&d, |u| u.is_empty() || u.bytes().any(|b| b < 0x20));
}
