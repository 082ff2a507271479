//! `foreman conformance …`: the command-line side of the suite.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;

use super::fake_master::AnvilBinary;
use super::replay::{replay, ReplayOptions};
use super::transcript::Transcript;

/// What `foreman conformance` can do.
#[derive(Debug, Subcommand)]
pub enum ConformanceCommand {
    /// Replay transcripts against an anvil and report every mismatch.
    Replay {
        /// `stock` (/usr/lib/dovecot/anvil), `foreman` (this binary's `anvil`), or a path.
        #[arg(long, default_value = "stock")]
        anvil: String,
        /// Do not keep the recorded time between events (timestamps are then only checked
        /// to lie within the replay's time window).
        #[arg(long)]
        fast: bool,
        /// Seconds to wait for any one expected reply, close or exit.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
        /// Transcript files, or directories whose `*.transcript` files are replayed.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run as the anvil executable of a stock Dovecot: start the stock anvil behind this
    /// process and append every byte crossing it to a raw capture.
    RecordProxy {
        /// The raw capture file (appended to; several proxies may share it).
        #[arg(long)]
        out: PathBuf,
        /// The stock anvil binary.
        #[arg(long, default_value = super::fake_master::STOCK_ANVIL)]
        stock: PathBuf,
    },
    /// Turn a raw proxy capture into a corpus transcript.
    Finish {
        /// The raw capture written by record-proxy.
        raw: PathBuf,
        /// The transcript to write.
        #[arg(long)]
        out: PathBuf,
        /// Comment lines to put in the transcript's header.
        #[arg(long)]
        comment: Vec<String>,
    },
    /// Record scenarios from stock Dovecot into transcripts.
    Record {
        /// Directory to write `<scenario>.transcript` files into.
        #[arg(long, default_value = "fixtures/anvil")]
        out: PathBuf,
        /// List the scenarios instead of recording.
        #[arg(long)]
        list: bool,
        /// Scenario names (default: all).
        names: Vec<String>,
    },
}

/// Collects transcript paths: files as given, directories expanded (sorted).
pub fn transcript_paths(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "transcript"))
                .collect();
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Replays every file; prints one line per transcript and each mismatch. Returns the number
/// of transcripts that did not replay clean.
pub fn replay_files(files: &[PathBuf], opts: &ReplayOptions, out: &mut dyn std::io::Write) -> anyhow::Result<usize> {
    let mut failed = 0;
    for path in transcript_paths(files)? {
        let name = path.display().to_string();
        let result = load(&path).and_then(|t| replay(&t, &name, opts).map_err(anyhow::Error::from));
        match result {
            Ok(None) => writeln!(out, "ok       {name}")?,
            Ok(Some(m)) => {
                failed += 1;
                writeln!(out, "MISMATCH {name}")?;
                write!(out, "{m}")?;
            }
            Err(e) => {
                failed += 1;
                writeln!(out, "ERROR    {name}: {e:#}")?;
            }
        }
    }
    Ok(failed)
}

fn load(path: &Path) -> anyhow::Result<Transcript> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Transcript::parse(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Runs a `foreman conformance` subcommand.
pub fn run(cmd: ConformanceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConformanceCommand::Replay { anvil, fast, timeout, files } => {
            let opts = ReplayOptions {
                binary: AnvilBinary::parse(&anvil)?,
                realtime: !fast,
                timeout: Duration::from_secs(timeout),
                ..ReplayOptions::default()
            };
            let n = replay_files(&files, &opts, &mut std::io::stdout())?;
            let total = transcript_paths(&files)?.len();
            println!("{} passed, {} failed", total - n, n);
            Ok(if n == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        ConformanceCommand::RecordProxy { out, stock } => {
            let how = super::proxy::run(&super::proxy::ProxyOptions { out, stock })?;
            Ok(exit_like(how))
        }
        ConformanceCommand::Finish { raw, out, comment } => {
            let t = super::proxy::finish(&load(&raw)?, comment);
            std::fs::write(&out, t.render(3)).with_context(|| format!("writing {}", out.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        ConformanceCommand::Record { out, list, names } => {
            let scripts = super::scenarios::direct_scripts();
            let live = super::scenarios::live_scenarios();
            if list {
                for s in &scripts {
                    println!("{:28} {}", s.name, s.about.lines().next().unwrap_or(""));
                }
                for s in &live {
                    println!("{:28} {}", s.name, s.about.lines().next().unwrap_or(""));
                }
                return Ok(ExitCode::SUCCESS);
            }
            std::fs::create_dir_all(&out)?;
            let mut known = false;
            for s in &scripts {
                if !names.is_empty() && !names.iter().any(|n| n == s.name) {
                    continue;
                }
                known = true;
                let t = super::direct::record(s, AnvilBinary::Stock).with_context(|| format!("recording {}", s.name))?;
                let path = out.join(format!("{}.transcript", s.name));
                std::fs::write(&path, t.render(3))?;
                println!("recorded {}", path.display());
            }
            let foreman = std::env::current_exe()?;
            for s in &live {
                if !names.is_empty() && !names.iter().any(|n| n == s.name) {
                    continue;
                }
                known = true;
                let t = super::live::record(s, &foreman).with_context(|| format!("recording {}", s.name))?;
                let path = out.join(format!("{}.transcript", s.name));
                std::fs::write(&path, t.render(3))?;
                println!("recorded {}", path.display());
            }
            if !known {
                anyhow::bail!("no such scenario: {names:?} (see --list)");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Exits the way a child did: the same status, or killed by the same signal.
fn exit_like(how: super::transcript::ExitKind) -> ExitCode {
    match how {
        super::transcript::ExitKind::Status(n) => ExitCode::from(n.clamp(0, 255) as u8),
        super::transcript::ExitKind::Signal(s) => {
            if let Ok(sig) = nix::sys::signal::Signal::try_from(s) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), sig);
                // Still alive: the signal was caught or ignored; SIGKILL is never.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
            }
            ExitCode::from(128u8.saturating_add(s as u8))
        }
    }
}
