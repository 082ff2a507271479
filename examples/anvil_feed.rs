//! Deterministic micro-benchmark of the anvil hot path without the server: feeds pipelined
//! `CONNECT` + `DISCONNECT` pairs through [`Session::feed`] directly, in 64 KiB reads the way
//! the server does, and checks that the table ends as it started.
//!
//! ```text
//! cargo build --release --example anvil_feed
//! valgrind --tool=callgrind --toggle-collect='*Session::feed_bounded*' \
//!     target/release/examples/anvil_feed 200000 [BACKGROUND]
//! ```
//! Instructions per pair = the total Ir / N (only `Session::feed_bounded` and what it calls
//! are counted). `BACKGROUND` sessions (distinct idents, one pid each) are connected first, so the
//! tables are not empty while the pairs run (default 0: the table goes 0 -> 1 -> 0 per pair).
//! Without valgrind it prints wall-clock pairs per second.

use std::time::Instant;

use foreman::anvil_compat::session::LogBuf;
use foreman::anvil_compat::{Anvil, ConnKind, Session};
use foreman::wire::anvil::{Pid, VERSION_LINE};

const READ: usize = 64 * 1024;

fn pair(out: &mut Vec<u8>, i: u32) {
    let pid = 1000 + i % 50_000;
    let line = format!(
        "CONNECT\t{pid}\timap/10.0.0.1/user{i}\nDISCONNECT\t{pid}\timap/10.0.0.1/user{i}\n"
    );
    out.extend_from_slice(line.as_bytes());
}

/// Feeds `input` in reads of at most [`READ`] bytes, keeping the unconsumed tail.
fn feed_all(session: &mut Session, anvil: &mut Anvil, input: &[u8], out: &mut Vec<u8>) {
    let mut log = LogBuf::new();
    let mut pending: Vec<u8> = Vec::with_capacity(READ + 1024);
    for chunk in input.chunks(READ) {
        pending.extend_from_slice(chunk);
        let fed = session.feed(anvil, 0, &pending, out, &mut log);
        assert!(!fed.close && log.is_empty(), "{log:?}");
        pending.drain(..fed.consumed);
    }
    assert!(pending.is_empty());
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().map_or(200_000, |a| a.parse().expect("N"));
    let background: u32 = args.next().map_or(0, |a| a.parse().expect("BACKGROUND"));

    let mut anvil = Anvil::new();
    let mut out = Vec::new();
    // Not through `Session::feed`, so that a profile of `feed` counts only the pairs.
    for i in 0..background {
        let ident = format!("pop3/10.9.9.9/bg{i}");
        let pid = Pid::new(200_000 + i).expect("pid");
        anvil.connect_limit.connect(pid, ident.as_bytes());
    }

    let mut input = VERSION_LINE.to_vec();
    for i in 0..n {
        pair(&mut input, i);
    }
    let mut session = Session::new(ConnKind::SOCKET, false);
    let start = Instant::now();
    feed_all(&mut session, &mut anvil, &input, &mut out);
    let secs = start.elapsed().as_secs_f64();
    assert!(out.is_empty());
    assert_eq!(anvil.connect_limit.pairs(), background as usize);
    println!(
        "{n} pairs over {background} background sessions: {secs:.3} s, {:.0} pairs/s",
        f64::from(n) / secs
    );
}
