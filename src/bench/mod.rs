//! `foreman bench …`: benchmarks run side by side with stock Dovecot in one run.
//!
//! `foreman bench anvil` measures stock Dovecot 2.3's anvil (inside a stock `dovecot -F`
//! instance from [`crate::stock`]) and Foreman's (`foreman anvil --socket PATH`, standalone,
//! the same binary) with the same load generator, and prints one table with the ratio
//! Foreman/stock and the targets of issue 2. Sections (each can be skipped):
//!
//! - **throughput**: pipelined CONNECT+DISCONNECT pairs/s and LOOKUP round trips/s with p99
//!   latency, 1 and 8 clients, best of several rounds (the machine is shared);
//! - **memory**: RSS growth per tracked session at two sizes, distinct idents and one ident
//!   with many pids, each shape in a fresh process;
//! - **dump**: CONNECT-DUMP time with the smaller number of sessions;
//! - **callgrind**: instructions per pair and per LOOKUP ([`callgrind`]).
//!
//! `foreman bench master` ([`master`]) compares the two masters' login cycles; `foreman bench
//! reuse` ([`reuse`]) is the headline benchmark of per-user reuse against stock imap.
//!
//! Layout: [`target`] starts and stops the two anvils; [`client`] and [`load`] are the
//! blocking, threaded load generator; [`report`] renders the table. Design and figures:
//! `docs/bench.md`.

mod callgrind;
mod client;
mod load;
pub mod master;
pub mod report;
pub mod reuse;
pub mod target;

use std::io::{self, Write};
use std::path::PathBuf;

use load::Shape;
use report::{Row, Target, Unit};
use target::{AnvilProcess, Side};

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The stock Dovecot harness failed.
    #[error(transparent)]
    Stock(#[from] crate::stock::StockError),
    /// A local I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// An anvil answered something unexpected, or a process misbehaved.
    #[error("{0}")]
    Protocol(String),
    /// A callgrind run failed.
    #[error("callgrind: {0}")]
    Callgrind(String),
    /// Some sections failed; their rows say "error" and the messages were printed.
    #[error("{0} benchmark section(s) failed")]
    SectionsFailed(usize),
}

impl BenchError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> BenchError {
        BenchError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// What `foreman bench anvil` runs.
#[derive(Debug, Clone)]
pub struct AnvilOptions {
    /// The `foreman` binary whose `anvil` subcommand is measured.
    pub foreman_exe: PathBuf,
    /// Small sizes, one round: checks that everything runs, figures are not meaningful.
    pub quick: bool,
    pub skip_throughput: bool,
    pub skip_memory: bool,
    pub skip_dump: bool,
    pub skip_callgrind: bool,
}

/// Operation counts of one run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    rounds: usize,
    warmup_pairs: usize,
    pairs_1: usize,
    pairs_8_each: usize,
    lookups_1: usize,
    lookups_8_each: usize,
    sessions_small: usize,
    sessions_large: usize,
    dumps: usize,
    cg_pairs: usize,
    cg_lookups: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                rounds: 1,
                warmup_pairs: 1_000,
                pairs_1: 20_000,
                pairs_8_each: 2_500,
                lookups_1: 2_000,
                lookups_8_each: 250,
                sessions_small: 10_000,
                sessions_large: 50_000,
                dumps: 1,
                cg_pairs: 2_000,
                cg_lookups: 200,
            }
        } else {
            Sizes {
                rounds: 5,
                warmup_pairs: 200_000,
                pairs_1: 2_000_000,
                pairs_8_each: 250_000,
                lookups_1: 200_000,
                lookups_8_each: 25_000,
                sessions_small: 100_000,
                sessions_large: 1_000_000,
                dumps: 5,
                cg_pairs: 100_000,
                cg_lookups: 10_000,
            }
        }
    }
}

/// Stock figures measured earlier on this kind of machine (issue 2), printed for reference.
const STOCK_REFERENCE: &str = "stock figures measured earlier on this machine kind: 4,825 \
instructions/pair, 3,310 instructions/LOOKUP, 0.84 M pairs/s (1 client), 77 k LOOKUP/s \
(p99 35 us), 141-153 bytes/session";

/// `100 k`, `1 M`, `2500`.
fn count_label(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{} M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{} k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// Runs `foreman bench anvil`: progress on `log`, the table on `out`. A missed target is not
/// an error; a section that could not run is (after the table is printed).
pub fn run_anvil(opts: &AnvilOptions, out: &mut dyn Write, log: &mut dyn Write) -> Result<()> {
    crate::stock::check_installed()?;
    let sizes = Sizes::new(opts.quick);
    let mut rows = Vec::new();
    let mut failures = 0;
    let mut section = |name: &str,
                       rows: &mut Vec<Row>,
                       skip: bool,
                       skeleton: Vec<Row>,
                       run: &dyn Fn(&mut dyn Write) -> Result<Vec<Row>>,
                       log: &mut dyn Write| {
        if skip {
            rows.extend(skeleton.into_iter().map(|r| r.missing("skipped")));
            return;
        }
        let _ = writeln!(log, "bench: {name}…");
        match run(log) {
            Ok(measured) => rows.extend(measured),
            Err(e) => {
                let _ = writeln!(log, "bench: {name} failed: {e}");
                failures += 1;
                rows.extend(skeleton.into_iter().map(|r| r.missing("error")));
            }
        }
    };

    section(
        "throughput",
        &mut rows,
        opts.skip_throughput,
        throughput_rows(),
        &|log| throughput(opts, sizes, log),
        log,
    );
    section(
        "memory",
        &mut rows,
        opts.skip_memory,
        memory_rows(sizes),
        &|log| memory(sizes, opts, log),
        log,
    );
    section(
        "dump",
        &mut rows,
        opts.skip_dump,
        dump_rows(sizes),
        &|log| dump(sizes, opts, log),
        log,
    );
    let valgrind = callgrind::valgrind();
    section(
        "callgrind",
        &mut rows,
        opts.skip_callgrind || valgrind.is_none(),
        callgrind_rows(),
        &|log| instructions(sizes, opts, valgrind.as_deref(), log),
        log,
    );
    if valgrind.is_none() && !opts.skip_callgrind {
        let _ = writeln!(
            log,
            "bench: callgrind skipped: {} not found",
            callgrind::VALGRIND_BIN
        );
    }

    let w = |e| BenchError::io("write output", e);
    writeln!(
        out,
        "foreman bench anvil{}: stock = /usr/lib/dovecot/anvil inside `dovecot -F` (2.3.19.1); \
         foreman = `{} anvil --socket PATH` standalone. Same load generator (std threads, \
         blocking unix sockets) for both; throughput rows are the best of {} round(s).",
        if opts.quick {
            " --quick (sizes too small to mean much)"
        } else {
            ""
        },
        opts.foreman_exe.display(),
        sizes.rounds
    )
    .map_err(w)?;
    writeln!(out).map_err(w)?;
    out.write_all(report::render(&rows).as_bytes()).map_err(w)?;
    let verdicts: Vec<bool> = rows.iter().filter_map(Row::verdict).collect();
    let met = verdicts.iter().filter(|v| **v).count();
    writeln!(out).map_err(w)?;
    writeln!(out, "targets met: {met} of {}", verdicts.len()).map_err(w)?;
    writeln!(out, "{STOCK_REFERENCE}").map_err(w)?;
    out.flush().map_err(w)?;
    if failures > 0 {
        return Err(BenchError::SectionsFailed(failures));
    }
    Ok(())
}

fn throughput_rows() -> Vec<Row> {
    vec![
        Row::new(
            "pipelined pairs/s, 1 client",
            Unit::PerSec,
            Some(Target::AtLeast(2.0)),
        ),
        Row::new(
            "pipelined pairs/s, 8 clients",
            Unit::PerSec,
            Some(Target::AtLeast(2.0)),
        ),
        Row::new(
            "LOOKUP/s, 1 client",
            Unit::PerSec,
            Some(Target::AtLeast(1.5)),
        ),
        Row::new(
            "LOOKUP p99, 1 client",
            Unit::Seconds,
            Some(Target::AtMost(1.0)),
        ),
        Row::new(
            "LOOKUP/s, 8 clients",
            Unit::PerSec,
            Some(Target::AtLeast(1.5)),
        ),
        Row::new(
            "LOOKUP p99, 8 clients",
            Unit::Seconds,
            Some(Target::AtMost(1.0)),
        ),
    ]
}

fn memory_rows(sizes: Sizes) -> Vec<Row> {
    let mut rows = Vec::new();
    for shape in ["distinct idents", "one ident"] {
        for n in [sizes.sessions_small, sizes.sessions_large] {
            rows.push(Row::new(
                format!("RSS bytes/session, {shape}, {}", count_label(n)),
                Unit::Bytes,
                Some(Target::AtMost(0.5)),
            ));
        }
    }
    rows
}

fn dump_rows(sizes: Sizes) -> Vec<Row> {
    vec![Row::new(
        format!(
            "CONNECT-DUMP time, {} sessions",
            count_label(sizes.sessions_small)
        ),
        Unit::Seconds,
        None,
    )]
}

fn callgrind_rows() -> Vec<Row> {
    vec![
        Row::new(
            "instructions/pair (callgrind)",
            Unit::Count,
            Some(Target::AtMost(1.0 / 3.0)),
        ),
        Row::new("instructions/LOOKUP (callgrind)", Unit::Count, None),
    ]
}

/// Both anvils, started fresh.
fn start_both(opts: &AnvilOptions) -> Result<[AnvilProcess; 2]> {
    Ok([
        AnvilProcess::start_stock()?,
        AnvilProcess::start_foreman(&opts.foreman_exe, &[])?,
    ])
}

/// Best (largest) value per side over rounds, `[stock, foreman]`.
fn best(values: &mut [f64; 2], side: usize, v: f64, larger_is_better: bool) {
    let better = if larger_is_better {
        v > values[side]
    } else {
        v < values[side]
    };
    if better || values[side].is_nan() {
        values[side] = v;
    }
}

fn throughput(opts: &AnvilOptions, sizes: Sizes, log: &mut dyn Write) -> Result<Vec<Row>> {
    let anvils = start_both(opts)?;
    for a in &anvils {
        load::pairs(a.socket(), 1, sizes.warmup_pairs)?;
        load::prepare_lookups(a.socket())?;
    }
    let pair_runs = [(1, sizes.pairs_1), (8, sizes.pairs_8_each)];
    let lookup_runs = [(1, sizes.lookups_1), (8, sizes.lookups_8_each)];
    let mut pairs = [[f64::NAN; 2]; 2];
    let mut lookups = [[f64::NAN; 2]; 2];
    let mut p99 = [[f64::NAN; 2]; 2];
    for round in 0..sizes.rounds {
        for (i, &(clients, each)) in pair_runs.iter().enumerate() {
            for (s, a) in anvils.iter().enumerate() {
                let r = load::pairs(a.socket(), clients, each)?;
                let _ = writeln!(
                    log,
                    "bench:   round {}: {} pairs, {clients} client(s): {:.0}/s",
                    round + 1,
                    a.side().name(),
                    r.per_sec
                );
                best(&mut pairs[i], s, r.per_sec, true);
            }
        }
        for (i, &(clients, each)) in lookup_runs.iter().enumerate() {
            for (s, a) in anvils.iter().enumerate() {
                let r = load::lookups(a.socket(), clients, each)?;
                let _ = writeln!(
                    log,
                    "bench:   round {}: {} LOOKUP, {clients} client(s): {:.0}/s, p99 {:?}",
                    round + 1,
                    a.side().name(),
                    r.per_sec,
                    r.p99
                );
                best(&mut lookups[i], s, r.per_sec, true);
                best(&mut p99[i], s, r.p99.as_secs_f64(), false);
            }
        }
    }
    let mut rows = throughput_rows().into_iter();
    let mut next = |v: [f64; 2]| rows.next().expect("row").values(v[0], v[1]);
    Ok(vec![
        next(pairs[0]),
        next(pairs[1]),
        next(lookups[0]),
        next(p99[0]),
        next(lookups[1]),
        next(p99[1]),
    ])
}

/// `[stock, foreman]` anvils, one fresh process per call.
fn fresh(opts: &AnvilOptions, side: Side) -> Result<AnvilProcess> {
    match side {
        Side::Stock => AnvilProcess::start_stock(),
        Side::Foreman => AnvilProcess::start_foreman(&opts.foreman_exe, &[]),
    }
}

fn memory(sizes: Sizes, opts: &AnvilOptions, log: &mut dyn Write) -> Result<Vec<Row>> {
    let mut rows = memory_rows(sizes).into_iter();
    let mut out = Vec::new();
    for shape in [Shape::DistinctIdents, Shape::OneIdent] {
        // [small, large] x [stock, foreman]
        let mut per_session = [[0.0; 2]; 2];
        for (s, side) in [Side::Stock, Side::Foreman].into_iter().enumerate() {
            let anvil = fresh(opts, side)?;
            let mut conn = client::Client::connect(anvil.socket(), load::CLIENT_TIMEOUT)?;
            conn.count(b"LOOKUP\tbench-warm\n")?;
            let before = anvil.rss_bytes()?;
            let mut done = 0;
            for (i, n) in [sizes.sessions_small, sizes.sessions_large]
                .into_iter()
                .enumerate()
            {
                load::fill(&mut conn, shape, done, n)?;
                done = n;
                let rss = anvil.rss_bytes()?;
                per_session[i][s] = rss.saturating_sub(before) as f64 / n as f64;
                let _ = writeln!(
                    log,
                    "bench:   {} {shape:?} {n} sessions: RSS {} -> {} kB",
                    side.name(),
                    before / 1024,
                    rss / 1024
                );
            }
        }
        for v in per_session {
            out.push(rows.next().expect("row").values(v[0], v[1]));
        }
    }
    Ok(out)
}

fn dump(sizes: Sizes, opts: &AnvilOptions, log: &mut dyn Write) -> Result<Vec<Row>> {
    let mut times = [f64::NAN; 2];
    for (s, side) in [Side::Stock, Side::Foreman].into_iter().enumerate() {
        let anvil = fresh(opts, side)?;
        let mut conn = client::Client::connect(anvil.socket(), load::CLIENT_TIMEOUT)?;
        load::fill(&mut conn, Shape::DistinctIdents, 0, sizes.sessions_small)?;
        for _ in 0..sizes.dumps {
            let t = load::timed_dump(&mut conn, sizes.sessions_small)?;
            let _ = writeln!(log, "bench:   {} CONNECT-DUMP: {t:?}", side.name());
            best(&mut times, s, t.as_secs_f64(), false);
        }
    }
    Ok(dump_rows(sizes)
        .into_iter()
        .map(|r| r.values(times[0], times[1]))
        .collect())
}

fn instructions(
    sizes: Sizes,
    opts: &AnvilOptions,
    valgrind: Option<&std::path::Path>,
    log: &mut dyn Write,
) -> Result<Vec<Row>> {
    let valgrind = valgrind.ok_or_else(|| BenchError::Callgrind("valgrind not found".into()))?;
    let mut figures = Vec::new();
    for side in [Side::Stock, Side::Foreman] {
        let f = callgrind::measure(
            side,
            valgrind,
            &opts.foreman_exe,
            sizes.cg_pairs,
            sizes.cg_lookups,
        )?;
        let _ = writeln!(
            log,
            "bench:   {}: {:.0} instructions/pair, {:.0} instructions/LOOKUP",
            side.name(),
            f.per_pair,
            f.per_lookup
        );
        figures.push(f);
    }
    let mut rows = callgrind_rows().into_iter();
    Ok(vec![
        rows.next()
            .expect("row")
            .values(figures[0].per_pair, figures[1].per_pair),
        rows.next()
            .expect("row")
            .values(figures[0].per_lookup, figures[1].per_lookup),
    ])
}

#[cfg(test)]
mod tests {
    use super::count_label;

    #[test]
    fn count_labels() {
        assert_eq!(count_label(100_000), "100 k");
        assert_eq!(count_label(1_000_000), "1 M");
        assert_eq!(count_label(2_500), "2500");
        assert_eq!(count_label(50_000), "50 k");
    }
}
