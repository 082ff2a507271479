//! The load generator: std threads and blocking unix sockets ([`Client`]), identical for both
//! anvils. Every workload ends with a LOOKUP whose reply is checked, so a figure is only
//! reported once the anvil has processed everything, and correctly.

use std::io::Write as _;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use super::client::Client;
use super::{BenchError, Result};

/// Socket timeout of the load clients.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// Pairs per pre-built batch; a client writes the same batch again and again.
const BATCH_PAIRS: usize = 1000;
/// Sessions present during the LOOKUP runs (one per ident, the idents looked up).
pub(crate) const LOOKUP_IDENTS: usize = 1000;
/// The pid that holds the LOOKUP sessions.
const LOOKUP_PID: u32 = 30_000;

/// Result of a pipelined-pairs run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PairsResult {
    pub per_sec: f64,
}

/// Result of a LOOKUP round-trip run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LookupResult {
    pub per_sec: f64,
    pub p99: Duration,
}

/// One client's pre-built batch of `CONNECT`+`DISCONNECT` pairs (pid `20000 + client`, a
/// distinct ident per pair) and the byte offset where each pair ends.
fn pairs_batch(client: usize) -> (Vec<u8>, Vec<usize>) {
    let pid = 20_000 + client;
    let mut bytes = Vec::with_capacity(BATCH_PAIRS * 80);
    let mut ends = Vec::with_capacity(BATCH_PAIRS);
    for j in 0..BATCH_PAIRS {
        let ident = pair_ident(client, j);
        let _ = write!(
            bytes,
            "CONNECT\t{pid}\t{ident}\nDISCONNECT\t{pid}\t{ident}\n"
        );
        ends.push(bytes.len());
    }
    (bytes, ends)
}

fn pair_ident(client: usize, j: usize) -> String {
    format!("imap/10.{client}.{}.{}/user{j}", (j >> 8) & 255, j & 255)
}

/// Sends `pairs` pipelined pairs on an open connection, then a LOOKUP that must answer 0.
pub(crate) fn send_pairs(conn: &mut Client, client: usize, pairs: usize) -> Result<()> {
    let (batch, ends) = pairs_batch(client);
    for _ in 0..pairs / BATCH_PAIRS {
        conn.write_all(&batch)?;
    }
    let rest = pairs % BATCH_PAIRS;
    if rest > 0 {
        conn.write_all(&batch[..ends[rest - 1]])?;
    }
    let sync = format!("LOOKUP\t{}\n", pair_ident(client, 0));
    let n = conn.count(sync.as_bytes())?;
    if n != 0 {
        return Err(BenchError::Protocol(format!(
            "after {pairs} pairs LOOKUP answered {n}, expected 0"
        )));
    }
    Ok(())
}

/// `clients` connections, each sending `pairs_each` pipelined pairs; wall time from the
/// moment all are connected until the last one's final LOOKUP is answered.
pub(crate) fn pairs(socket: &Path, clients: usize, pairs_each: usize) -> Result<PairsResult> {
    let (elapsed, _) = run_clients(socket, clients, |conn, c| send_pairs(conn, c, pairs_each))?;
    Ok(PairsResult {
        per_sec: (clients * pairs_each) as f64 / elapsed.as_secs_f64(),
    })
}

/// The LOOKUP request for ident number `j` of the LOOKUP set.
fn lookup_request(j: usize) -> Vec<u8> {
    format!(
        "LOOKUP\timap/10.99.{}.{}/lookup{j}\n",
        (j >> 8) & 255,
        j & 255
    )
    .into_bytes()
}

/// Creates the [`LOOKUP_IDENTS`] sessions the LOOKUP runs query (one session per ident).
pub(crate) fn prepare_lookups(socket: &Path) -> Result<()> {
    let mut conn = Client::connect(socket, CLIENT_TIMEOUT)?;
    let mut bytes = Vec::new();
    for j in 0..LOOKUP_IDENTS {
        let ident = &lookup_request(j)[b"LOOKUP\t".len()..];
        bytes.extend_from_slice(format!("CONNECT\t{LOOKUP_PID}\t").as_bytes());
        bytes.extend_from_slice(ident);
    }
    conn.write_all(&bytes)?;
    expect_count(&mut conn, &lookup_request(LOOKUP_IDENTS - 1), 1)
}

/// Sends `lookups` LOOKUP round trips (one outstanding at a time) on an open connection,
/// starting at ident `first`; returns each round trip's latency in nanoseconds.
pub(crate) fn send_lookups(conn: &mut Client, first: usize, lookups: usize) -> Result<Vec<u32>> {
    let requests: Vec<Vec<u8>> = (0..LOOKUP_IDENTS).map(lookup_request).collect();
    let mut latencies = Vec::with_capacity(lookups);
    for i in 0..lookups {
        let request = &requests[(first + i) % LOOKUP_IDENTS];
        let t = Instant::now();
        let n = conn.count(request)?;
        latencies.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
        if n != 1 {
            return Err(BenchError::Protocol(format!(
                "LOOKUP answered {n}, expected 1"
            )));
        }
    }
    Ok(latencies)
}

/// `clients` connections, each doing `lookups_each` LOOKUP round trips.
pub(crate) fn lookups(socket: &Path, clients: usize, lookups_each: usize) -> Result<LookupResult> {
    let (elapsed, latencies) = run_clients(socket, clients, |conn, c| {
        send_lookups(conn, c * 97, lookups_each)
    })?;
    let mut all: Vec<u32> = latencies.into_iter().flatten().collect();
    all.sort_unstable();
    let p99 = percentile(&all, 99).unwrap_or(0);
    Ok(LookupResult {
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p99: Duration::from_nanos(u64::from(p99)),
    })
}

/// The `pct`-th percentile of sorted values (nearest rank), `None` when empty.
pub(crate) fn percentile<T: Copy>(sorted: &[T], pct: usize) -> Option<T> {
    sorted
        .get((sorted.len() * pct).div_ceil(100).saturating_sub(1))
        .copied()
}

/// Connects `clients` clients, releases them together, and returns the wall time until the
/// last one finished plus each one's result.
fn run_clients<T: Send>(
    socket: &Path,
    clients: usize,
    work: impl Fn(&mut Client, usize) -> Result<T> + Sync,
) -> Result<(Duration, Vec<T>)> {
    let mut conns = (0..clients)
        .map(|_| Client::connect(socket, CLIENT_TIMEOUT))
        .collect::<Result<Vec<_>>>()?;
    // The handshake has no reply: one round trip makes sure every connection is accepted
    // and served before the clock starts.
    for conn in &mut conns {
        conn.count(b"LOOKUP\tbench-warm\n")?;
    }
    let barrier = Barrier::new(clients + 1);
    let work = &work;
    let barrier = &barrier;
    std::thread::scope(|scope| {
        let handles: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(c, mut conn)| {
                scope.spawn(move || {
                    barrier.wait();
                    work(&mut conn, c)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut results = Vec::with_capacity(clients);
        let mut first_err = None;
        for h in handles {
            match h.join() {
                Ok(Ok(r)) => results.push(r),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(BenchError::Protocol("load thread panicked".into()));
                }
            }
        }
        let elapsed = start.elapsed();
        match first_err {
            Some(e) => Err(e),
            None => Ok((elapsed, results)),
        }
    })
}

/// The shape of the tracked sessions in the memory runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `imap/10.a.b.c/userN`, one pid per session.
    DistinctIdents,
    /// One ident, one pid per session.
    OneIdent,
}

impl Shape {
    fn ident(self, i: usize, out: &mut Vec<u8>) {
        match self {
            Shape::DistinctIdents => {
                let _ = write!(
                    out,
                    "imap/10.{}.{}.{}/user{i}",
                    (i >> 16) & 255,
                    (i >> 8) & 255,
                    i & 255
                );
            }
            Shape::OneIdent => out.extend_from_slice(b"imap/10.0.0.1/user"),
        }
    }

    /// The pid of session `i`.
    fn pid(i: usize) -> usize {
        1_000_000 + i
    }
}

/// CONNECTs sessions `from..to` of `shape` on `conn` (pipelined), then checks with a LOOKUP
/// that all of them are in the table.
pub(crate) fn fill(conn: &mut Client, shape: Shape, from: usize, to: usize) -> Result<()> {
    const CHUNK: usize = 256 * 1024;
    let mut bytes = Vec::with_capacity(CHUNK + 128);
    for i in from..to {
        let _ = write!(bytes, "CONNECT\t{}\t", Shape::pid(i));
        shape.ident(i, &mut bytes);
        bytes.push(b'\n');
        if bytes.len() >= CHUNK {
            conn.write_all(&bytes)?;
            bytes.clear();
        }
    }
    conn.write_all(&bytes)?;
    if to == 0 {
        return Ok(());
    }
    let mut request = b"LOOKUP\t".to_vec();
    shape.ident(to - 1, &mut request);
    request.push(b'\n');
    let expected = match shape {
        Shape::DistinctIdents => 1,
        Shape::OneIdent => to as u64,
    };
    expect_count(conn, &request, expected)
}

fn expect_count(conn: &mut Client, request: &[u8], expected: u64) -> Result<()> {
    let n = conn.count(request)?;
    if n != expected {
        return Err(BenchError::Protocol(format!(
            "{} answered {n}, expected {expected}",
            String::from_utf8_lossy(request).trim_end()
        )));
    }
    Ok(())
}

/// Times one CONNECT-DUMP and checks its row count.
pub(crate) fn timed_dump(conn: &mut Client, expected_rows: usize) -> Result<Duration> {
    let t = Instant::now();
    let rows = conn.connect_dump()?;
    let elapsed = t.elapsed();
    if rows != expected_rows {
        return Err(BenchError::Protocol(format!(
            "CONNECT-DUMP gave {rows} rows, expected {expected_rows}"
        )));
    }
    Ok(elapsed)
}
