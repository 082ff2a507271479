//! Instructions per operation with `valgrind --tool=callgrind`: repeatable on a noisy machine,
//! unlike wall time. Each anvil is run three times under callgrind with the same preamble (the
//! handshake and the [`load::LOOKUP_IDENTS`] sessions the LOOKUPs query) and one of three
//! workloads: nothing more; N pipelined pairs; M more LOOKUP round trips. Every run ends with
//! one LOOKUP. Instructions per pair = (total of the pairs run − total of the empty run) / N,
//! likewise per LOOKUP, so start-up, shutdown and the preamble cancel out.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::client::Client;
use super::load::{self, CLIENT_TIMEOUT};
use super::target::{AnvilProcess, Side};
use super::{BenchError, Result};
use crate::stock::wait_for;

/// Where valgrind is expected.
pub const VALGRIND_BIN: &str = "/usr/bin/valgrind";

/// How long a callgrind output file may take to appear once its anvil was told to stop.
const OUTPUT_DEADLINE: Duration = Duration::from_secs(120);

/// What one callgrind run does after the preamble.
#[derive(Debug, Clone, Copy)]
enum Workload {
    Empty,
    Pairs(usize),
    Lookups(usize),
}

/// Instructions per operation of one anvil.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Instructions {
    pub per_pair: f64,
    pub per_lookup: f64,
}

/// `valgrind` if it is installed.
pub(crate) fn valgrind() -> Option<PathBuf> {
    Path::new(VALGRIND_BIN)
        .exists()
        .then(|| PathBuf::from(VALGRIND_BIN))
}

/// Measures one side: three runs, `pairs` pairs and `lookups` LOOKUPs.
pub(crate) fn measure(
    side: Side,
    valgrind: &Path,
    foreman_exe: &Path,
    pairs: usize,
    lookups: usize,
) -> Result<Instructions> {
    let run = |w| run_once(side, valgrind, foreman_exe, w);
    let empty = run(Workload::Empty)?;
    let with_pairs = run(Workload::Pairs(pairs))?;
    let with_lookups = run(Workload::Lookups(lookups))?;
    let per = |total: u64, n: usize| (total as f64 - empty as f64) / n as f64;
    Ok(Instructions {
        per_pair: per(with_pairs, pairs),
        per_lookup: per(with_lookups, lookups),
    })
}

/// One anvil under callgrind: start, run the workload, stop, return the `totals:` count.
fn run_once(side: Side, valgrind: &Path, foreman_exe: &Path, workload: Workload) -> Result<u64> {
    let cg_dir = tempfile::Builder::new()
        .prefix("fm-bench-cg-")
        .tempdir()
        .map_err(|e| BenchError::io("create temporary directory", e))?;
    let mut anvil = match side {
        Side::Stock => AnvilProcess::start_stock_callgrind(valgrind, cg_dir.path())?,
        Side::Foreman => AnvilProcess::start_foreman(
            foreman_exe,
            &[
                valgrind.display().to_string(),
                "--tool=callgrind".to_owned(),
                format!("--callgrind-out-file={}/cg.%p", cg_dir.path().display()),
            ],
        )?,
    };
    {
        load::prepare_lookups(anvil.socket())?;
        let mut conn = Client::connect(anvil.socket(), CLIENT_TIMEOUT)?;
        match workload {
            Workload::Empty => {
                load::send_lookups(&mut conn, 0, 1)?;
            }
            Workload::Pairs(n) => load::send_pairs(&mut conn, 0, n)?,
            Workload::Lookups(n) => {
                load::send_lookups(&mut conn, 0, n + 1)?;
            }
        }
    }
    let status = anvil.stop()?;
    if side == Side::Foreman && !status.is_some_and(|s| s.success()) {
        return Err(BenchError::Callgrind(format!(
            "foreman anvil under valgrind did not exit cleanly on SIGTERM: {status:?}"
        )));
    }
    let (path, pid) =
        wait_for(OUTPUT_DEADLINE, || output_file(cg_dir.path())).ok_or_else(|| {
            BenchError::Callgrind(format!("no cg.<pid> in {}", cg_dir.path().display()))
        })?;
    // The file is complete once its process is gone.
    wait_for(OUTPUT_DEADLINE, || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .ok_or_else(|| BenchError::Callgrind(format!("callgrind process {pid} did not exit")))?;
    let text = fs::read_to_string(&path)
        .map_err(|e| BenchError::io(format!("read {}", path.display()), e))?;
    totals(&text)
        .ok_or_else(|| BenchError::Callgrind(format!("no totals: line in {}", path.display())))
}

/// The single `cg.<pid>` file in `dir`.
fn output_file(dir: &Path) -> Option<(PathBuf, u32)> {
    let mut found = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name();
        let pid = name.to_str()?.strip_prefix("cg.")?.parse::<u32>().ok()?;
        found = Some((entry.path(), pid));
    }
    found
}

/// The first number of the `totals:` (or, failing that, `summary:`) line.
fn totals(text: &str) -> Option<u64> {
    let line = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    line("totals:").or_else(|| line("summary:"))
}

#[cfg(test)]
mod tests {
    use super::totals;

    #[test]
    fn totals_line() {
        let text = "events: Ir\nfl=foo\n1 2\nsummary: 99\ntotals: 1234567\n";
        assert_eq!(totals(text), Some(1_234_567));
        assert_eq!(totals("summary: 42\n"), Some(42));
        assert_eq!(totals("events: Ir\n"), None);
    }
}
