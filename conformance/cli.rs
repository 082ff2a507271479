//! `foreman conformance …`: the command-line side of the suite.

use std::io::Write as _;
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
        /// Run the anvil standalone (`PATH --socket … --penalty-socket …`, for `foreman anvil`)
        /// instead of under a fake master; transcripts that need pipes are skipped.
        #[arg(long)]
        standalone: bool,
        /// A file of documented deviations of the anvil under test (`<file>:<line>: <what>`);
        /// a transcript listed there must stop at exactly that mismatch.
        #[arg(long)]
        deviations: Option<PathBuf>,
        /// How many transcripts to replay at once (each against its own anvil).
        #[arg(long, default_value_t = 4)]
        jobs: usize,
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

/// Documented, deliberate differences of an anvil under test: for each transcript (file name),
/// the mismatch it is expected to stop at, as `<file name>:<line>: <what>`.
#[derive(Debug, Clone, Default)]
pub struct Deviations(pub Vec<(String, usize, String)>);

impl Deviations {
    /// Parses a deviations file: `# comments`, blank lines, and `<file name>:<line>: <what>`.
    pub fn parse(text: &str) -> anyhow::Result<Deviations> {
        let mut v = Vec::new();
        for (n, l) in text.lines().enumerate() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let parse = || -> Option<(String, usize, String)> {
                let (name, rest) = l.split_once(':')?;
                let (line, what) = rest.split_once(':')?;
                Some((
                    name.trim().to_string(),
                    line.trim().parse().ok()?,
                    what.trim().to_string(),
                ))
            };
            v.push(parse().with_context(|| {
                format!(
                    "deviations line {}: expected '<file>:<line>: <what>'",
                    n + 1
                )
            })?);
        }
        Ok(Deviations(v))
    }

    fn expected_for(&self, path: &Path) -> Option<&(String, usize, String)> {
        let name = path.file_name()?.to_str()?;
        self.0.iter().find(|(n, _, _)| n == name)
    }
}

/// What a replay of many files came to.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub passed: usize,
    /// Transcripts that stopped exactly at their documented deviation.
    pub deviated: usize,
    /// Transcripts a standalone anvil cannot replay (they need pipes or a master).
    pub skipped: usize,
    /// Transcripts that mismatched (or deviated differently than documented, or replayed
    /// clean although a deviation is documented), or could not be replayed.
    pub failed: Vec<String>,
}

/// How one transcript's replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Passed,
    Deviated,
    Skipped,
    Failed,
}

/// Replays one file and returns its verdict and the report text.
fn replay_one(path: &Path, opts: &ReplayOptions, deviations: &Deviations) -> (Verdict, String) {
    let name = path.display().to_string();
    let t = match load(path) {
        Ok(t) => t,
        Err(e) => return (Verdict::Failed, format!("ERROR    {name}: {e:#}\n")),
    };
    if opts.standalone && super::replay::needs_master(&t) {
        return (
            Verdict::Skipped,
            format!("skipped  {name} (needs a master)\n"),
        );
    }
    match (replay(&t, &name, opts), deviations.expected_for(path)) {
        (Ok(None), None) => (Verdict::Passed, format!("ok       {name}\n")),
        (Ok(None), Some((_, line, what))) => (
            Verdict::Failed,
            format!("STALE    {name}: replays clean, but a deviation is documented at line {line}: {what}\n"),
        ),
        (Ok(Some(m)), Some((_, line, what))) if m.line == *line && m.what == *what => {
            (Verdict::Deviated, format!("deviates {name}:{line}: {what} (documented)\n"))
        }
        (Ok(Some(m)), _) => (Verdict::Failed, format!("MISMATCH {name}\n{m}")),
        (Err(e), _) => (Verdict::Failed, format!("ERROR    {name}: {e:#}\n")),
    }
}

/// Replays every file (`jobs` at a time, each against its own anvil); prints one line per
/// transcript and each mismatch, in file order.
pub fn replay_files(
    files: &[PathBuf],
    opts: &ReplayOptions,
    deviations: &Deviations,
    jobs: usize,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<Summary> {
    let paths = transcript_paths(files)?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<(Verdict, String)>>> =
        paths.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(path) = paths.get(i) else { break };
                *results[i].lock().unwrap() = Some(replay_one(path, opts, deviations));
            });
        }
    });
    let mut summary = Summary::default();
    for (path, result) in paths.iter().zip(results) {
        let (verdict, text) = result
            .into_inner()
            .unwrap()
            .expect("every file was replayed");
        write!(out, "{text}")?;
        match verdict {
            Verdict::Passed => summary.passed += 1,
            Verdict::Deviated => summary.deviated += 1,
            Verdict::Skipped => summary.skipped += 1,
            Verdict::Failed => summary.failed.push(path.display().to_string()),
        }
    }
    Ok(summary)
}

fn load(path: &Path) -> anyhow::Result<Transcript> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Transcript::parse(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Runs a `foreman conformance` subcommand.
pub fn run(cmd: ConformanceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConformanceCommand::Replay {
            anvil,
            fast,
            timeout,
            standalone,
            deviations,
            jobs,
            files,
        } => {
            let opts = ReplayOptions {
                binary: AnvilBinary::parse(&anvil)?,
                realtime: !fast,
                timeout: Duration::from_secs(timeout),
                standalone,
                ..ReplayOptions::default()
            };
            let deviations = match deviations {
                Some(p) => Deviations::parse(
                    &std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?,
                )?,
                None => Deviations::default(),
            };
            // Written, not printed: a closed stdout is an error here, not a panic.
            let mut out = std::io::stdout().lock();
            let s = replay_files(&files, &opts, &deviations, jobs, &mut out)?;
            if s.skipped > 0 {
                writeln!(out, "{} skipped (they need a master)", s.skipped)?;
            }
            if s.deviated > 0 {
                writeln!(out, "{} deviate as documented", s.deviated)?;
            }
            writeln!(
                out,
                "{} passed, {} failed",
                s.passed + s.deviated,
                s.failed.len()
            )?;
            Ok(if s.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        ConformanceCommand::RecordProxy { out, stock } => {
            let how = super::proxy::run(&super::proxy::ProxyOptions { out, stock })?;
            Ok(exit_like(how))
        }
        ConformanceCommand::Finish { raw, out, comment } => {
            let t = super::proxy::finish(&load(&raw)?, comment);
            std::fs::write(&out, t.render(3))
                .with_context(|| format!("writing {}", out.display()))?;
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
                let t = super::direct::record(s, AnvilBinary::Stock)
                    .with_context(|| format!("recording {}", s.name))?;
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
                let t = super::live::record(s, &foreman)
                    .with_context(|| format!("recording {}", s.name))?;
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
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::this(),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            ExitCode::from(128u8.saturating_add(s as u8))
        }
    }
}
