//! The real `foreman anvil` binary, standalone in a temporary directory and under a fake
//! master harness (pipes on fds 4-9 placed by `foreman::sys::place_fds`), talked to with
//! raw bytes. Every wait is on a condition with a bounded deadline.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::anvil::{foreman, wait_until, Captured, Standalone};

const HANDSHAKE: &[u8] = b"VERSION\tanvil\t1\t0\n";
const DEADLINE: Duration = Duration::from_secs(10);

struct Client(UnixStream);

impl Client {
    fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        Client(s)
    }

    fn handshaken(path: &Path) -> Client {
        let mut c = Client::connect(path);
        c.send(HANDSHAKE);
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).unwrap();
    }

    /// Reads one line (without LF), byte by byte: replies are tiny.
    fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            match self.0.read(&mut b) {
                Ok(0) => panic!("EOF after {:?}", String::from_utf8_lossy(&line)),
                Ok(_) if b[0] == b'\n' => return line,
                Ok(_) => line.push(b[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn lookup(&mut self, ident: &str) -> String {
        self.send(format!("LOOKUP\t{ident}\n").as_bytes());
        String::from_utf8(self.line()).unwrap()
    }

    /// The server closed the connection (EOF or reset) within the deadline.
    fn expect_closed(&mut self) {
        let mut buf = [0u8; 256];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("expected the server to close the connection: {e}"),
            }
        }
    }
}

/// A line of dump rows up to the empty terminator line.
fn read_dump(c: &mut Client) -> Vec<String> {
    let mut rows = Vec::new();
    loop {
        let line = c.line();
        if line.is_empty() {
            return rows;
        }
        rows.push(String::from_utf8(line).unwrap());
    }
}

#[test]
fn handshake_lookup_connect_disconnect_and_dumps() {
    let anvil = Standalone::start();
    let mut c = Client::handshaken(&anvil.socket);
    c.send(b"CONNECT\t4242\ttest/1.2.3.4/u\nCONNECT\t4242\ttest/1.2.3.4/u\n");
    c.send(b"CONNECT\t4343\ttest/1.2.3.4/u\nCONNECT\t4343\tother/u2\n");
    assert_eq!(c.lookup("test/1.2.3.4/u"), "3");
    assert_eq!(c.lookup("nobody"), "0");
    c.send(b"CONNECT-DUMP\n");
    let mut rows = read_dump(&mut c);
    rows.sort();
    assert_eq!(
        rows,
        [
            "other/u2\t4343\t1",
            "test/1.2.3.4/u\t4242\t2",
            "test/1.2.3.4/u\t4343\t1"
        ]
    );
    c.send(b"DISCONNECT\t4242\ttest/1.2.3.4/u\n");
    assert_eq!(c.lookup("test/1.2.3.4/u"), "2");

    // Sessions are not bound to a connection: another client sees them.
    let mut d = Client::handshaken(&anvil.socket);
    assert_eq!(d.lookup("other/u2"), "1");

    c.send(b"PENALTY-GET\tpA\n");
    assert_eq!(c.line(), b"0 0");
    c.send(b"PENALTY-INC\tpA\t0\t2\nPENALTY-GET\tpA\n");
    let got = String::from_utf8(c.line()).unwrap();
    let (penalty, when) = got.split_once(' ').unwrap();
    assert_eq!(penalty, "2");
    c.send(b"PENALTY-DUMP\n");
    assert_eq!(read_dump(&mut c), [format!("pA\t2\t{when}\t{when}")]);

    // DISCONNECT of an unknown session: logged, connection kept.
    c.send(b"DISCONNECT\t1\tghost\n");
    anvil.stderr.wait_contains(
        b"anvil: Error: connect limit: disconnection for unknown pid 1 + ident ghost\n",
    );
    assert_eq!(c.lookup("other/u2"), "1");
}

#[test]
fn pipelined_commands_in_one_write_and_split_lines() {
    let anvil = Standalone::start();
    let mut c = Client::connect(&anvil.socket);
    let mut batch = HANDSHAKE.to_vec();
    for i in 0..5000 {
        batch.extend_from_slice(format!("CONNECT\t{i}\tbulk\n").as_bytes());
    }
    batch.extend_from_slice(b"LOOKUP\tbulk\n");
    c.send(&batch);
    assert_eq!(c.line(), b"5000");
    // One line split over several writes.
    c.send(b"LOO");
    c.send(b"KUP\tbu");
    c.send(b"lk\r\n");
    assert_eq!(c.line(), b"5000");
}

/// Sends `input` on a fresh connection, expects the connection closed and `log` on stderr,
/// and a second client still served.
fn bad_input(anvil: &Standalone, input: &[u8], log: &str) {
    let mut good = Client::handshaken(&anvil.socket);
    let mut bad = Client::connect(&anvil.socket);
    bad.send(input);
    bad.expect_closed();
    anvil
        .stderr
        .wait_contains(format!("anvil: Error: {log}\n").as_bytes());
    good.send(b"CONNECT\t77\tstill-served\n");
    assert_eq!(good.lookup("still-served"), "1");
    good.send(b"DISCONNECT\t77\tstill-served\n");
    assert_eq!(
        Client::handshaken(&anvil.socket).lookup("still-served"),
        "0"
    );
}

fn with_handshake(rest: &[u8]) -> Vec<u8> {
    [HANDSHAKE, rest].concat()
}

#[test]
fn bad_input_line_over_1024_bytes() {
    let anvil = Standalone::start();
    // 1024 bytes including LF is still fine.
    let mut ok = Client::handshaken(&anvil.socket);
    let max = format!("LOOKUP\t{}\n", "a".repeat(1016));
    assert_eq!(max.len(), 1024);
    ok.send(max.as_bytes());
    assert_eq!(ok.line(), b"0");
    let too_long = format!("LOOKUP\t{}\n", "a".repeat(1017));
    bad_input(
        &anvil,
        &with_handshake(too_long.as_bytes()),
        "BUG: Anvil client connection sent too much data",
    );
}

#[test]
fn bad_input_nul_ends_the_line() {
    let anvil = Standalone::start();
    // Everything after a NUL is ignored: this is LOOKUP without its argument.
    bad_input(
        &anvil,
        &with_handshake(b"LOOKUP\0\tignored\n"),
        "Anvil client input error: LOOKUP: Not enough parameters",
    );
}

#[test]
fn bad_input_lone_cr_is_data() {
    let anvil = Standalone::start();
    bad_input(
        &anvil,
        &with_handshake(b"LOOKUP\rX\tu\n"),
        "Anvil client input error: Unknown command: LOOKUP\rX",
    );
}

#[test]
fn bad_input_escapes() {
    let anvil = Standalone::start();
    // A lenient escape still works: \x01U is U.
    let mut c = Client::handshaken(&anvil.socket);
    c.send(b"LOOK\x01UP\tu\n");
    assert_eq!(c.line(), b"0");
    // \x01t is a TAB inside the command name: an unknown command.
    bad_input(
        &anvil,
        &with_handshake(b"LOOKUP\x01tu\n"),
        "Anvil client input error: Unknown command: LOOKUP\tu",
    );
}

#[test]
fn bad_input_unknown_command() {
    let anvil = Standalone::start();
    bad_input(
        &anvil,
        &with_handshake(b"FROB\tx\n"),
        "Anvil client input error: Unknown command: FROB",
    );
}

#[test]
fn bad_input_missing_handshake() {
    let anvil = Standalone::start();
    bad_input(
        &anvil,
        b"LOOKUP\tx\n",
        "Anvil client not compatible with this server (mixed old and new binaries?) LOOKUP\tx",
    );
}

#[test]
fn bad_input_invalid_pid() {
    let anvil = Standalone::start();
    bad_input(
        &anvil,
        &with_handshake(b"CONNECT\t-1\tx\n"),
        "Anvil client input error: CONNECT: Invalid pid",
    );
}

#[test]
fn bad_input_huge_pids() {
    let anvil = Standalone::start();
    bad_input(
        &anvil,
        &with_handshake(b"CONNECT\t2147483648\tx\n"),
        "Anvil client input error: CONNECT: Invalid pid",
    );
    bad_input(
        &anvil,
        &with_handshake(b"DISCONNECT\t123456789012345678901234\tx\n"),
        "Anvil client input error: DISCONNECT: Invalid pid",
    );
}

#[test]
fn bad_input_kill_from_a_socket() {
    let anvil = Standalone::start();
    bad_input(
        &anvil,
        &with_handshake(b"KILL\t1\n"),
        "Anvil client input error: KILL sent by a non-master connection",
    );
}

#[test]
fn client_disconnecting_mid_line() {
    let anvil = Standalone::start();
    let mut good = Client::handshaken(&anvil.socket);
    {
        let mut bad = Client::handshaken(&anvil.socket);
        bad.send(b"CONNECT\t5\thalf");
        // Closing here drops the partial line; stock logs nothing for EOF.
    }
    // The half line never became a session, and the server still serves.
    assert_eq!(good.lookup("half"), "0");
    good.send(b"CONNECT\t5\thalf\n");
    assert_eq!(good.lookup("half"), "1");
}

fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

#[test]
fn ten_thousand_idle_clients() {
    raise_nofile();
    let anvil = Standalone::start();
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let mut c = Client::connect(&anvil.socket);
        c.send(HANDSHAKE);
        idle.push(c);
    }
    // One more client is served, and so is an old idle one.
    let mut extra = Client::handshaken(&anvil.socket);
    extra.send(b"CONNECT\t9\tmany\n");
    assert_eq!(extra.lookup("many"), "1");
    assert_eq!(idle[5000].lookup("many"), "1");
    assert_eq!(idle[0].lookup("many"), "1");
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn client_not_reading_replies_is_throttled_and_others_are_served() {
    let anvil = Standalone::start();
    // A table whose dump is about 100 KB.
    let mut setup = Client::handshaken(&anvil.socket);
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.extend_from_slice(format!("CONNECT\t{i}\t{}\n", "x".repeat(500)).as_bytes());
    }
    setup.send(&batch);
    assert_eq!(setup.lookup(&"x".repeat(500)), "200");
    let before = vm_rss_kib(anvil.pid());

    // 300 dump requests (~30 MB of replies) that the client does not read for now.
    let mut slow = Client::handshaken(&anvil.socket);
    slow.send(&b"CONNECT-DUMP\n".repeat(300));
    let mut other = Client::handshaken(&anvil.socket);
    for _ in 0..50 {
        assert_eq!(other.lookup(&"x".repeat(500)), "200");
    }
    // Without backpressure the server would buffer all 30 MB for the slow client.
    let end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < end {
        let grown = vm_rss_kib(anvil.pid()).saturating_sub(before);
        assert!(
            grown < 12 * 1024,
            "server RSS grew by {grown} KiB for one slow client"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Once the client reads, every reply arrives, complete and in order.
    let mut reader = std::io::BufReader::with_capacity(1 << 16, &slow.0);
    let mut dumps = 0;
    let mut rows = 0;
    let mut line = Vec::new();
    while dumps < 300 {
        line.clear();
        let n = std::io::BufRead::read_until(&mut reader, b'\n', &mut line).unwrap();
        assert!(n > 0, "EOF after {dumps} dumps");
        if line == b"\n" {
            assert_eq!(rows, 200);
            rows = 0;
            dumps += 1;
        } else {
            rows += 1;
        }
    }
    drop(reader);
    assert_eq!(slow.lookup("nobody"), "0");
}

// ---------------------------------------------------------------------------------------
// Under a fake master: fds 4-9 and a log pipe on fd 2 placed by the test.

struct FakeMaster {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
    log_fdpass: UnixStream,
    status: OwnedFd,
    dead: Option<OwnedFd>,
    master_pipe: OwnedFd,
    shared_pipe: OwnedFd,
    log: Captured,
}

fn cloexec_pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

impl FakeMaster {
    fn start() -> FakeMaster {
        FakeMaster::start_with(&[])
    }

    fn start_with(extra_env: &[(&str, &str)]) -> FakeMaster {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("anvil");
        let listener = UnixListener::bind(&socket).unwrap();
        let (fdpass_ours, fdpass_theirs) = UnixStream::pair().unwrap();
        let (status_r, status_w) = cloexec_pipe();
        let (dead_r, dead_w) = cloexec_pipe();
        let (master_r, master_w) = cloexec_pipe();
        let (shared_r, shared_w) = cloexec_pipe();
        let (log_r, log_w) = cloexec_pipe();
        let mut cmd = foreman();
        cmd.arg("anvil")
            .env_clear()
            .env("GENERATION", "7")
            .env("CLIENT_LIMIT", "3")
            .env("SOCKET_COUNT", "3")
            .env("SOCKET2_SETTINGS", "anvil")
            .env("LOG_SERVICE", "1")
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_w));
        foreman::sys::place_fds(
            &mut cmd,
            vec![
                (fdpass_theirs.into(), 4),
                (status_w, 5),
                (dead_w, 6),
                (master_r, 7),
                (shared_r, 8),
                (listener.into(), 9),
            ],
        )
        .unwrap();
        let child = cmd.spawn().unwrap();
        drop(cmd);
        FakeMaster {
            child,
            _dir: dir,
            socket,
            log_fdpass: fdpass_ours,
            status: status_r,
            dead: Some(dead_r),
            master_pipe: master_w,
            shared_pipe: shared_w,
            log: Captured::spawn(std::fs::File::from(log_r)),
        }
    }

    /// Reads the next 12-byte status record.
    fn status(&self) -> (i32, u32, u32) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut rec = [0u8; 12];
        let mut got = 0;
        while got < 12 {
            let mut fds = [PollFd::new(self.status.as_fd(), PollFlags::POLLIN)];
            let n = match poll(
                &mut fds,
                PollTimeout::try_from(DEADLINE.as_millis() as i32).unwrap(),
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => other.unwrap(),
            };
            assert!(n > 0, "no status record within the deadline");
            let r = match nix::unistd::read(self.status.as_raw_fd(), &mut rec[got..]) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => other.unwrap(),
            };
            assert!(r > 0, "status pipe EOF");
            got += r;
        }
        let rec = foreman::wire::status::StatusRecord::decode(&rec).unwrap();
        (rec.pid, rec.generation, rec.available_count)
    }

    /// Reads status records until one reports `avail`.
    fn status_until(&self, avail: u32) {
        while self.status().2 != avail {}
    }

    fn write_pipe(fd: &OwnedFd, bytes: &[u8]) {
        std::fs::File::from(fd.try_clone().unwrap())
            .write_all(bytes)
            .unwrap();
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn under_a_fake_master() {
    let mut m = FakeMaster::start();
    let pid = m.child.id() as i32;

    // The first status record: our pid, GENERATION, CLIENT_LIMIT.
    assert_eq!(m.status(), (pid, 7, 3));

    FakeMaster::write_pipe(&m.master_pipe, HANDSHAKE);
    FakeMaster::write_pipe(&m.shared_pipe, HANDSHAKE);
    let mut c = Client::handshaken(&m.socket);
    // 3 -> 2 within a second of the first record: deferred to the 1 s timer, but sent.
    assert_eq!(m.status(), (pid, 7, 2));

    // KILL from the master pipe is accepted.
    FakeMaster::write_pipe(&m.master_pipe, b"CONNECT\t200\tv\n");
    wait_until("CONNECT via the master pipe", || c.lookup("v") == "1");
    FakeMaster::write_pipe(&m.master_pipe, b"KILL\t200\n");
    wait_until("KILL via the master pipe", || c.lookup("v") == "0");

    // KILL from the shared pipe is refused: logged in the internal format.
    FakeMaster::write_pipe(&m.shared_pipe, b"CONNECT\t300\tw\nKILL\t300\n");
    let expected = format!(
        "\x01\x08{pid} prefix=anvil: \n\x01\x04{pid} Anvil client input error: KILL sent by a non-master connection\n"
    );
    m.log.wait_contains(expected.as_bytes());
    assert_eq!(c.lookup("w"), "1");
    // Nothing else was logged: the master's KILL is silent.
    assert_eq!(m.log.bytes(), expected.as_bytes());

    // fd 4: a replacement log pipe; the prefix is sent again on it.
    let (new_r, new_w) = cloexec_pipe();
    foreman::sys::send_fd(m.log_fdpass.as_fd(), new_w.as_fd()).unwrap();
    drop(new_w);
    let new_log = Captured::spawn(std::fs::File::from(new_r));
    let mut bad = Client::handshaken(&m.socket);
    bad.send(b"FROB\n");
    bad.expect_closed();
    new_log.wait_contains(
        format!("\x01\x08{pid} prefix=anvil: \n\x01\x04{pid} Anvil client input error: Unknown command: FROB\n")
            .as_bytes(),
    );

    // CLIENT_LIMIT=3 reached: status 0 at once, and no further client is served.
    let c2 = Client::handshaken(&m.socket);
    let c3 = Client::handshaken(&m.socket);
    m.status_until(0);
    let mut c4 = Client::handshaken(&m.socket);
    c4.send(b"LOOKUP\tw\n");
    c4.0.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = c4.0.read(&mut byte);
    assert!(
        early.is_err(),
        "a client beyond CLIENT_LIMIT was served: {early:?}"
    );
    c4.0.set_read_timeout(Some(DEADLINE)).unwrap();
    // One leaves: leaving 0 is reported at once, the waiting client is accepted (0 again).
    drop(c3);
    m.status_until(1);
    m.status_until(0);
    assert_eq!(c4.line(), b"1");
    drop(c4);
    drop(c2);
    m.status_until(1);

    // The master goes away (fd 6's read end closes): status 0, listener closed, connected
    // clients still served, exit 0 once the last one leaves.
    drop(m.dead.take());
    m.status_until(0);
    wait_until("the listener to close", || {
        UnixStream::connect(&m.socket).is_err()
    });
    assert_eq!(c.lookup("w"), "1");
    assert!(
        m.exited().is_none(),
        "anvil exited while a client was connected"
    );
    drop(c);
    wait_until("anvil to exit", || m.exited().is_some());
    assert!(m.exited().unwrap().success());
}

#[test]
fn fd_5_not_a_fifo_is_refused() {
    let out = foreman()
        .arg("anvil")
        .env_clear()
        .env("GENERATION", "1")
        .env("CLIENT_LIMIT", "1")
        .env("SOCKET_COUNT", "2")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Must be started by dovecot master process"),
        "{err}"
    );
}

#[test]
fn penalty_expiry_timer_runs() {
    let anvil = Standalone::start();
    let mut c = Client::handshaken(&anvil.socket);
    c.send(b"PENALTY-SET-EXPIRE-SECS\t1\nPENALTY-INC\t10.0.0.1\t0\t3\nPENALTY-GET\t10.0.0.1\n");
    assert!(c.line().starts_with(b"3 "));
    // The record is purged by the timer about a second later.
    wait_until("the penalty record to expire", || {
        c.send(b"PENALTY-GET\t10.0.0.1\n");
        c.line() == b"0 0"
    });
    c.send(b"PENALTY-DUMP\n");
    assert!(read_dump(&mut c).is_empty());
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

#[test]
fn sigquit_stops_accepting_and_exits_after_the_last_client() {
    let mut anvil = Standalone::start();
    let mut c = Client::handshaken(&anvil.socket);
    c.send(b"CONNECT\t1\tq\n");
    assert_eq!(c.lookup("q"), "1");
    signal(&anvil.child, nix::sys::signal::Signal::SIGQUIT);
    wait_until("the listener to close", || {
        UnixStream::connect(&anvil.socket).is_err()
    });
    assert_eq!(c.lookup("q"), "1");
    assert!(anvil.child.try_wait().unwrap().is_none());
    drop(c);
    wait_until("anvil to exit", || {
        anvil.child.try_wait().unwrap().is_some()
    });
    assert!(anvil.child.wait().unwrap().success());
}

#[test]
fn sigterm_exits_and_removes_the_socket() {
    let mut anvil = Standalone::start();
    let _c = Client::handshaken(&anvil.socket);
    signal(&anvil.child, nix::sys::signal::Signal::SIGTERM);
    wait_until("anvil to exit", || {
        anvil.child.try_wait().unwrap().is_some()
    });
    assert!(anvil.child.wait().unwrap().success());
    assert!(!anvil.socket.exists());
}

#[test]
fn restarted_anvil_skips_stale_pipe_lines_silently() {
    let m = FakeMaster::start_with(&[("ANVIL_RESTARTED", "1")]);
    let pid = m.child.id() as i32;
    assert_eq!(m.status(), (pid, 7, 3));
    // Stale lines before the VERSION line on both pipes are dropped without a log line.
    FakeMaster::write_pipe(&m.master_pipe, b"KILL\t4242\nCONNECT\t1\tstale\n");
    FakeMaster::write_pipe(&m.master_pipe, HANDSHAKE);
    FakeMaster::write_pipe(&m.shared_pipe, b"CONNECT\t2\tstale\n");
    FakeMaster::write_pipe(&m.shared_pipe, HANDSHAKE);
    FakeMaster::write_pipe(&m.shared_pipe, b"CONNECT\t3\tfresh\n");
    let mut c = Client::handshaken(&m.socket);
    wait_until("the fresh CONNECT", || c.lookup("fresh") == "1");
    assert_eq!(c.lookup("stale"), "0");
    // Sockets are not exempt: a bad first line there is still an error.
    let mut bad = Client::connect(&m.socket);
    bad.send(b"LOOKUP\tx\n");
    bad.expect_closed();
    let expected = format!(
        "\x01\x08{pid} prefix=anvil: \n\x01\x04{pid} Anvil client not compatible with this server (mixed old and new binaries?) LOOKUP\tx\n"
    );
    m.log.wait_contains(expected.as_bytes());
    assert_eq!(m.log.bytes(), expected.as_bytes());
}
