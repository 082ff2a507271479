//! The README's demo command works: `foreman demo` starts the stack (stock services under
//! `foreman master`, Foreman's anvil), prints how to log in, the demo user can log in over
//! IMAP and shows up in `foreman who`, keeps an idle imap process for the user (per-user
//! reuse, `foreman who --processes`), and SIGINT stops everything with exit status 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use foreman::stock::ImapClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn demo_starts_serves_the_demo_user_and_stops_on_sigint() {
    foreman::stock::check_installed().expect("stock Dovecot");
    let exe = env!("CARGO_BIN_EXE_foreman");
    let mut demo = Command::new(exe)
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn foreman demo");
    let pid = Pid::from_raw(demo.id() as i32);

    // Read stdout on a thread so that a hung demo fails the test at the deadline.
    let (tx, rx) = mpsc::channel();
    let stdout = demo.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let ready = loop {
        match rx.recv_timeout(DEADLINE) {
            Ok(line) => {
                let done = line.contains("Press Ctrl-C");
                printed.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    if !ready {
        let _ = kill(pid, Signal::SIGKILL);
        let out = demo.wait_with_output().unwrap();
        panic!(
            "demo did not become ready; stdout: {printed:?}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = printed.join("\n");
    let port: u16 = text
        .split("IMAP  127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no IMAP port in: {text}"));
    let anvil = text
        .split(" who -a ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no anvil socket in: {text}"))
        .to_owned();

    let mut imap = ImapClient::connect(port).expect("connect to the demo's IMAP port");
    let reply = imap.login("demo", "demo").expect("LOGIN");
    assert!(reply.is_ok(), "LOGIN refused: {}", reply.tagged);

    // The session reaches the anvil through the shared pipe: wait for it.
    // `foreman who <mode> -a <anvil>`'s stdout.
    let foreman_who = |mode: &str| -> Option<String> {
        let out = Command::new(exe)
            .args(["who", mode, "-a", &anvil])
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let who = foreman::stock::wait_for(DEADLINE, || {
        let text = foreman_who("-1")?;
        text.lines().any(|l| l.starts_with("demo ")).then_some(text)
    });
    assert!(who.is_some(), "demo user never appeared in foreman who");
    imap.logout().expect("LOGOUT");

    // Per-user reuse is on: demo's imap process stays, idle, bound to demo.
    let processes = foreman::stock::wait_for(DEADLINE, || {
        let text = foreman_who("--processes")?;
        text.lines()
            .any(|l| l.starts_with("demo ") && l.contains("idle"))
            .then_some(text)
    });
    assert!(
        processes.is_some(),
        "demo's idle imap process never appeared in foreman who --processes"
    );

    kill(pid, Signal::SIGINT).unwrap();
    let status = foreman::stock::wait_for(DEADLINE, || demo.try_wait().ok().flatten());
    match status {
        Some(status) => assert!(status.success(), "demo exited with {status}"),
        None => {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("demo did not stop on SIGINT");
        }
    }
}
