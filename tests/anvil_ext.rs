//! The foreman-anvil extension (docs/anvil-extensions.md) on real processes: stock anvil
//! rejects the opt-in handshake the stock way, Foreman's anvil greets and serves claims, and
//! a stock client on the same Foreman anvil sees nothing new. Every wait has a deadline.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use foreman::stock::{wait_for, StockDovecot};
use foreman::wire::anvil_ext::VERSION_LINE;

const DEADLINE: Duration = Duration::from_secs(20);

fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Reads until `n` LFs or EOF.
fn read_lines(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.iter().filter(|&&b| b == b'\n').count() < n {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    got
}

fn start(foreman_anvil: bool) -> StockDovecot {
    let mut b = StockDovecot::builder().user("alice", "alicepw");
    if foreman_anvil {
        b = b.custom_anvil(env!("CARGO_BIN_EXE_foreman"), &["anvil"]);
    }
    b.start().expect("start stock Dovecot")
}

#[test]
fn stock_anvil_rejects_the_opt_in_the_stock_way() {
    let d = start(false);
    let mut s = connect(&d.anvil_socket());
    s.write_all(&[VERSION_LINE, b"CLAIM\timap\talice\t1000\n"].concat())
        .unwrap();
    // No greeting, no reply: EOF.
    assert_eq!(read_lines(&mut s, 1), b"");
    let want = "Anvil client not compatible with this server (mixed old and new binaries?) \
                VERSION\tforeman-anvil\t1\t0";
    assert!(
        wait_for(DEADLINE, || d.log_contents().contains(want).then_some(())).is_some(),
        "log: {}",
        d.log_tail(20)
    );
}

#[test]
fn foreman_anvil_greets_and_claims_once() {
    let d = start(true);
    let path = d.anvil_socket();
    // A stock client is unaffected: no greeting, v1 replies only.
    let mut stock = connect(&path);
    stock
        .write_all(b"VERSION\tanvil\t1\t0\nLOOKUP\tx\n")
        .unwrap();
    assert_eq!(read_lines(&mut stock, 1), b"0\n");

    let mut master = connect(&path);
    master.write_all(VERSION_LINE).unwrap();
    assert_eq!(read_lines(&mut master, 1), VERSION_LINE);
    master
        .write_all(b"PROC-BIRTH\timap\t4242\t0\nPROC-DUMP\n")
        .unwrap();
    let dump = read_lines(&mut master, 2);
    assert!(dump.starts_with(b"4242\timap\t\t0\tfresh\t"), "{dump:?}");

    // Two dispatchers race for alice's only process: exactly one gets it.
    let mut a = connect(&path);
    let mut b = connect(&path);
    a.write_all(&[VERSION_LINE, b"CLAIM\timap\talice\t1000\n"].concat())
        .unwrap();
    b.write_all(&[VERSION_LINE, b"CLAIM\timap\talice\t1000\n"].concat())
        .unwrap();
    let ra = read_lines(&mut a, 2);
    let rb = read_lines(&mut b, 2);
    let mut replies = [
        ra[VERSION_LINE.len()..].to_vec(),
        rb[VERSION_LINE.len()..].to_vec(),
    ];
    replies.sort();
    assert_eq!(replies, [b"4242\t1\tfresh\n".to_vec(), b"none\n".to_vec()]);
}
