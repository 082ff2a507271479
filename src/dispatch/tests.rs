//! The dispatcher's shell against fakes in a temporary base dir: a login process (request +
//! client fd), auth-master, anvil's registry and imap-master listeners. Covers what the live
//! tests cannot provoke: imap refusing a hand-off, with and without the client touched, and
//! auth failures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::{serve, Options};
use crate::sys::service::{fd_inode, recv_with_fd, send_with_fd};
use crate::wire::imap_master::{decode_handoff, Handoff};
use crate::wire::master_auth::{
    encode_request, AuthReply, AuthRequest, AuthStatus, ImapLoginPrefix, LoginData,
};

const T: Duration = Duration::from_secs(10);
/// auth's USER reply for u1 (uid 1000).
const U1: &str = "USER\t{id}\tu1\tuid=1000\thome=/h/u1";

/// A temporary base dir (removed when the first value drops) and its path.
fn temp_base() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_owned();
    (dir, base)
}

fn read_line(r: &mut impl BufRead) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

/// Fake anvil: answers the handshake and each CLAIM from `claims` in turn; sends every
/// extension line it gets to the channel.
fn fake_anvil(base: &Path, claims: Vec<&'static str>) -> mpsc::Receiver<String> {
    let l = StdListener::bind(base.join("anvil")).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut claims = claims.into_iter();
        loop {
            let line = read_line(&mut r);
            if line.is_empty() {
                return;
            }
            if line.starts_with("VERSION") {
                w.write_all(b"VERSION\tforeman-anvil\t1\t0\n").unwrap();
                continue;
            }
            if line.starts_with("CLAIM") {
                let reply = claims.next().unwrap_or("none");
                w.write_all(format!("{reply}\n").as_bytes()).unwrap();
            }
            if tx.send(line.trim_end().to_owned()).is_err() {
                return;
            }
        }
    });
    rx
}

/// Fake auth-master: every lookup gets `reply` (with `{id}` replaced), after the handshake.
fn fake_auth(base: &Path, reply: &'static str) {
    let l = StdListener::bind(base.join("auth-master")).unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let s = s.unwrap();
            let mut w = s.try_clone().unwrap();
            // Like auth: handshake, then any number of requests on the connection (the
            // dispatcher keeps it for the next login).
            thread::spawn(move || {
                let mut r = BufReader::new(s);
                assert_eq!(read_line(&mut r), "VERSION\t1\t1\n");
                w.write_all(b"VERSION\t1\t1\nSPID\t100\n").unwrap();
                loop {
                    let req = read_line(&mut r);
                    if req.is_empty() {
                        return;
                    }
                    let id = req.split('\t').nth(1).unwrap().to_owned();
                    let out = format!("{}\n", reply.replace("{id}", &id));
                    if w.write_all(out.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// How a fake imap process answers a hand-off.
#[derive(Clone, Copy)]
enum Imap {
    Accept,
    Refuse,
    /// Write to the client, then refuse.
    TouchThenRefuse,
}

/// Fake imap process `pid`: one hand-off; sends (request, inode of the received fd).
fn fake_imap(base: &Path, pid: u32, how: Imap) -> mpsc::Receiver<(Handoff, u64)> {
    let l = StdListener::bind(base.join(format!("imap-master-{pid}"))).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"VERSION\timap-master\t1\t0\n").unwrap();
        s.set_nonblocking(true).unwrap();
        let mut buf = Vec::new();
        let mut fd = None;
        while buf.iter().filter(|&&b| b == b'\n').count() < 2 {
            let mut chunk = [0u8; 4096];
            match recv_with_fd(s.as_fd(), &mut chunk) {
                Ok((0, _)) => return,
                Ok((n, f)) => {
                    buf.extend_from_slice(&chunk[..n]);
                    fd = fd.or(f);
                }
                Err(_) => thread::sleep(Duration::from_millis(1)),
            }
        }
        let first = buf.iter().position(|&b| b == b'\n').unwrap();
        assert_eq!(&buf[..=first], b"VERSION\timap-master\t1\t0\n");
        let (_, h) = decode_handoff(&buf[first + 1..]).unwrap();
        let fd = fd.expect("client fd");
        let ino = fd_inode(fd.as_fd()).unwrap();
        s.set_nonblocking(false).unwrap();
        match how {
            Imap::Accept => s.write_all(b"+\n").unwrap(),
            Imap::Refuse => s.write_all(b"-Failed to create client: nope\n").unwrap(),
            Imap::TouchThenRefuse => {
                nix::unistd::write(&fd, b"* BYE oops\r\n").unwrap();
                s.write_all(b"-Failed after writing\n").unwrap();
            }
        }
        let _ = tx.send((h, ino));
    });
    rx
}

/// A TCP client and the server side of its connection (the fd imap-login passes).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

/// Plays imap-login: one request with the client fd; returns the reply.
fn login_request(base: &Path, server_side: &TcpStream) -> AuthReply {
    let s = StdStream::connect(base.join("login")).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let req = AuthRequest {
        tag: 7,
        auth_pid: 100,
        auth_id: 3,
        client_pid: 55,
        cookie: [0xab; 16],
        local_ip: Some("127.0.0.1".parse().unwrap()),
        remote_ip: Some("127.0.0.1".parse().unwrap()),
        local_port: 143,
        remote_port: 40000,
        flags: 2,
        data_size: 0,
        ino: fd_inode(server_side.as_fd()).unwrap(),
    };
    let data = LoginData {
        session_id: "sess1".into(),
        imap: Some(ImapLoginPrefix {
            send_untagged_capability: false,
            tag: "x1".into(),
            input: b"x2 NOOP\r\n".to_vec(),
        }),
    };
    let mut bytes = Vec::new();
    encode_request(&req, &data, &mut bytes);
    let n = send_with_fd(s.as_fd(), &bytes, server_side.as_fd()).unwrap();
    (&s).write_all(&bytes[n..]).unwrap();
    let mut reply = [0u8; 12];
    (&s).read_exact(&mut reply).unwrap();
    AuthReply::decode(&reply).unwrap()
}

/// Runs the dispatcher on `$base/login` while `scenario` runs on a blocking thread.
fn with_dispatcher<R: Send + 'static>(
    base: PathBuf,
    scenario: impl FnOnce() -> R + Send + 'static,
) -> R {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = tokio::net::UnixListener::bind(base.join("login")).unwrap();
        let opts = Options {
            base_dir: base,
            drop_dac: false,
            ..Options::default()
        };
        tokio::select! {
            _ = serve(listener, opts) => unreachable!("serve returned"),
            r = tokio::task::spawn_blocking(scenario) => r.unwrap(),
        }
    })
}

/// [`login_request`] with the dispatcher running: its reply.
fn one_login(base: PathBuf, server_side: TcpStream) -> AuthReply {
    let b = base.clone();
    with_dispatcher(base, move || login_request(&b, &server_side))
}

/// `rx` gets nothing more within 200 ms.
fn assert_quiet(rx: &mpsc::Receiver<String>, what: &str) {
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "{what}"
    );
}

fn lines(rx: &mpsc::Receiver<String>, n: usize) -> Vec<String> {
    (0..n).map(|_| rx.recv_timeout(T).unwrap()).collect()
}

#[test]
fn refused_untouched_hand_off_is_retried_on_another_process() {
    let (_dir, base) = temp_base();
    let anvil = fake_anvil(&base, vec!["11\t1\tfresh", "12\t2\tfresh"]);
    fake_auth(&base, "USER\t{id}\tu1\tuid=1000\tgid=1000\thome=/h/u1");
    let refused = fake_imap(&base, 11, Imap::Refuse);
    let accepted = fake_imap(&base, 12, Imap::Accept);
    let (mut client, server_side) = tcp_pair();
    let client_ino = fd_inode(server_side.as_fd()).unwrap();
    let reply = one_login(base, server_side);
    assert_eq!(
        reply,
        AuthReply {
            tag: 7,
            status: AuthStatus::Ok,
            mail_pid: 12
        }
    );
    assert_eq!(
        lines(&anvil, 4),
        [
            "CLAIM\timap\tu1\t1000",
            "RELEASE\t11\t1\tfailed",
            "CLAIM\timap\tu1\t1000",
            "RELEASE\t12\t2\tserved",
        ]
    );
    let (h11, _) = refused.recv_timeout(T).unwrap();
    let (h, ino) = accepted.recv_timeout(T).unwrap();
    assert_eq!(h11, h, "the retry sends the same request");
    assert_eq!(h.user, "u1");
    assert_eq!(h.session, Some("sess1".into()));
    assert_eq!(
        (h.lip.as_deref(), h.lport, h.rip.as_deref(), h.rport),
        (Some("127.0.0.1"), Some(143), Some("127.0.0.1"), Some(40000))
    );
    assert_eq!(h.userdb_fields, ["uid=1000", "gid=1000", "home=/h/u1"]);
    assert!(
        h.client_output.starts_with(b"x1 OK [CAPABILITY IMAP4rev1 ")
            && h.client_output.ends_with(b"] Logged in\r\n"),
        "{:?}",
        bstr::BStr::new(&h.client_output)
    );
    assert_eq!(h.client_input, b"x2 NOOP\r\n");
    // The fd imap got is the client's connection; nothing was written to the client (all
    // copies are closed now: EOF, no bytes).
    assert_eq!(ino, client_ino);
    client.set_read_timeout(Some(T)).unwrap();
    let mut b = [0u8; 16];
    assert_eq!(client.read(&mut b).unwrap(), 0);
}

#[test]
fn refused_hand_off_after_the_client_saw_bytes_fails_the_login() {
    let (_dir, base) = temp_base();
    let anvil = fake_anvil(&base, vec!["11\t1\treuse", "12\t2\tfresh"]);
    fake_auth(&base, U1);
    let touched = fake_imap(&base, 11, Imap::TouchThenRefuse);
    let (mut client, server_side) = tcp_pair();
    let reply = one_login(base, server_side);
    assert_eq!(reply.status, AuthStatus::InternalError);
    assert_eq!(reply.tag, 7);
    assert_eq!(
        lines(&anvil, 2),
        ["CLAIM\timap\tu1\t1000", "RELEASE\t11\t1\tfailed"]
    );
    assert_quiet(&anvil, "no second claim");
    touched.recv_timeout(T).unwrap();
    // The client saw only what the failed process wrote: no NO line from the dispatcher.
    client.set_read_timeout(Some(T)).unwrap();
    let mut got = [0u8; 64];
    let n = client.read(&mut got).unwrap();
    assert_eq!(&got[..n], b"* BYE oops\r\n");
}

#[test]
fn auth_lookup_failure_fails_the_login_like_stock() {
    let (_dir, base) = temp_base();
    let anvil = fake_anvil(&base, vec![]);
    fake_auth(&base, "NOTFOUND\t{id}");
    let (mut client, server_side) = tcp_pair();
    let reply = one_login(base, server_side);
    assert_eq!(reply.status, AuthStatus::InternalError);
    client.set_read_timeout(Some(T)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"\r\n") {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        got,
        b"x1 NO [UNAVAILABLE] Internal error occurred. Refer to server log for more information.\r\n"
    );
    assert_quiet(&anvil, "no claim");
}

#[test]
fn uid_zero_is_never_handed_over() {
    let (_dir, base) = temp_base();
    let anvil = fake_anvil(&base, vec!["11\t1\tfresh"]);
    fake_auth(&base, "USER\t{id}\troot\tuid=0\thome=/root");
    let _imap = fake_imap(&base, 11, Imap::Accept);
    let (_client, server_side) = tcp_pair();
    let reply = one_login(base, server_side);
    assert_eq!(reply.status, AuthStatus::InternalError);
    assert_quiet(&anvil, "no claim");
}

/// Fake master control socket: answers the handshake and every FOREMAN-NEED with `+`.
fn fake_master(base: &Path) -> mpsc::Receiver<String> {
    let l = StdListener::bind(base.join("master")).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for s in l.incoming() {
            let s = s.unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            loop {
                let line = read_line(&mut r);
                if line.is_empty() {
                    break;
                }
                let reply: &[u8] = if line.starts_with("VERSION") {
                    b"VERSION\tmaster-server\t1\t0\n"
                } else {
                    b"+\n"
                };
                w.write_all(reply).unwrap();
                if tx.send(line.trim_end().to_owned()).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

#[test]
fn no_process_asks_the_master_and_claims_again() {
    let (_dir, base) = temp_base();
    let anvil = fake_anvil(&base, vec!["none", "none", "12\t5\tfresh"]);
    let master = fake_master(&base);
    fake_auth(&base, U1);
    let _imap = fake_imap(&base, 12, Imap::Accept);
    let (_client, server_side) = tcp_pair();
    let reply = one_login(base, server_side);
    assert_eq!((reply.status, reply.mail_pid), (AuthStatus::Ok, 12));
    assert_eq!(
        lines(&anvil, 4),
        [
            "CLAIM\timap\tu1\t1000",
            "CLAIM\timap\tu1\t1000",
            "CLAIM\timap\tu1\t1000",
            "RELEASE\t12\t5\tserved",
        ]
    );
    // The second round comes 2 ms after the first: the same count within 5 ms is not re-sent.
    assert_eq!(
        lines(&master, 2),
        ["VERSION\tmaster-client\t1\t0", "FOREMAN-NEED\timap\t1"]
    );
    while let Ok(l) = master.recv_timeout(Duration::from_millis(100)) {
        assert_eq!(l, "FOREMAN-NEED\timap\t1");
    }
}

#[test]
fn busy_process_without_version_is_released_busy() {
    let (_dir, base) = temp_base();
    let anvil = fake_anvil(&base, vec!["11\t1\treuse", "12\t2\tfresh"]);
    fake_auth(&base, U1);
    // Process 11 listens but never accepts: our connect sits in its backlog.
    let _busy = StdListener::bind(base.join("imap-master-11")).unwrap();
    let _imap = fake_imap(&base, 12, Imap::Accept);
    let (_client, server_side) = tcp_pair();
    let reply = one_login(base, server_side);
    assert_eq!((reply.status, reply.mail_pid), (AuthStatus::Ok, 12));
    assert_eq!(
        lines(&anvil, 4),
        [
            "CLAIM\timap\tu1\t1000",
            "RELEASE\t11\t1\tbusy",
            "CLAIM\timap\tu1\t1000",
            "RELEASE\t12\t2\tserved",
        ]
    );
}

#[test]
fn anvil_restart_costs_only_a_reconnect() {
    let (_dir, base) = temp_base();
    // An anvil that serves one login per connection, then "restarts" (closes).
    let l = StdListener::bind(base.join("anvil")).unwrap();
    let (tx, anvil) = mpsc::channel::<String>();
    thread::spawn(move || {
        for (n, s) in l.incoming().enumerate() {
            let s = s.unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            assert_eq!(read_line(&mut r), "VERSION\tforeman-anvil\t1\t0\n");
            w.write_all(b"VERSION\tforeman-anvil\t1\t0\n").unwrap();
            let claim = read_line(&mut r);
            w.write_all(format!("{}\t{n}\tfresh\n", 12 + n).as_bytes())
                .unwrap();
            let release = read_line(&mut r);
            let _ = tx.send(format!("conn {n}: {}", claim.trim_end()));
            let _ = tx.send(format!("conn {n}: {}", release.trim_end()));
        }
    });
    fake_auth(&base, U1);
    let _a = fake_imap(&base, 12, Imap::Accept);
    let _b = fake_imap(&base, 13, Imap::Accept);
    let b = base.clone();
    let replies = with_dispatcher(base, move || {
        let (_c1, s1) = tcp_pair();
        let r1 = login_request(&b, &s1);
        let (_c2, s2) = tcp_pair();
        let r2 = login_request(&b, &s2);
        (r1, r2)
    });
    assert_eq!(
        (replies.0.mail_pid, replies.1.mail_pid),
        (12, 13),
        "{replies:?}"
    );
    assert_eq!(
        lines(&anvil, 4),
        [
            "conn 0: CLAIM\timap\tu1\t1000",
            "conn 0: RELEASE\t12\t0\tserved",
            "conn 1: CLAIM\timap\tu1\t1000",
            "conn 1: RELEASE\t13\t1\tserved",
        ]
    );
}

#[test]
fn stock_anvil_fails_the_login_at_once() {
    let (_dir, base) = temp_base();
    // Stock anvil: reads the unknown handshake and closes.
    let l = StdListener::bind(base.join("anvil")).unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let mut r = BufReader::new(s.unwrap());
            read_line(&mut r);
        }
    });
    fake_auth(&base, U1);
    let (_client, server_side) = tcp_pair();
    let reply = one_login(base, server_side);
    assert_eq!(reply.status, AuthStatus::InternalError);
}

#[test]
fn client_reset_while_waiting_ends_the_login() {
    let (_dir, base) = temp_base();
    let anvil = fake_anvil(&base, vec![]); // always `none`
    let _master = fake_master(&base);
    fake_auth(&base, U1);
    let (client, server_side) = tcp_pair();
    let b = base.clone();
    let reply = with_dispatcher(base, move || {
        let login = thread::spawn(move || login_request(&b, &server_side));
        // Once the login waits (its first CLAIM got `none`), the client resets.
        assert_eq!(anvil.recv_timeout(T).unwrap(), "CLAIM\timap\tu1\t1000");
        nix::sys::socket::setsockopt(
            &client,
            nix::sys::socket::sockopt::Linger,
            &libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .unwrap();
        drop(client);
        login.join().unwrap()
    });
    assert_eq!(reply.status, AuthStatus::InternalError);
}
