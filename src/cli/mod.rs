//! The `foreman` command line: parse arguments, call one `run` function, map errors to an
//! exit code. Each subcommand's logic lives in its own module.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Foreman: Dovecot 2.3 compatible anvil and master with per-user worker reuse.
#[derive(Debug, Parser)]
#[command(name = "foreman", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the anvil service: under a Dovecot master (no options) or standalone (--socket).
    Anvil {
        /// Standalone: bind the anvil socket here.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Standalone: also bind the auth penalty socket here.
        #[arg(long, requires = "socket")]
        penalty_socket: Option<PathBuf>,
        /// Standalone: lifetime of a registry claim in ms (docs/anvil-extensions.md).
        #[arg(long, requires = "socket", default_value_t = crate::anvil_compat::registry::DEFAULT_CLAIM_TTL)]
        claim_ttl_ms: u64,
    },
    /// List logged-in users, like `doveadm who`.
    Who {
        /// The anvil socket (default: /run/dovecot/anvil).
        #[arg(long, short = 'a')]
        socket: Option<PathBuf>,
        /// One line per session.
        #[arg(short = '1')]
        one_per_session: bool,
        /// The reuse processes per user instead (Foreman anvil only, docs/who.md).
        #[arg(long, conflicts_with = "one_per_session")]
        processes: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// A user mask (`*`, `?`) and/or an IP network `ip/bits`.
        masks: Vec<String>,
    },
    /// Read a dovecot.conf (2.3 syntax) and print it like `doveconf` (see docs/config.md).
    Config(crate::master_compat::config::cli::ConfigArgs),
    /// The anvil conformance suite: record transcripts from stock Dovecot, replay them.
    Conformance {
        #[command(subcommand)]
        what: crate::conformance::cli::ConformanceCommand,
    },
    /// Run the per-user reuse dispatcher (a service of the master; docs/dispatch.md).
    Dispatch,
    /// Run the demo stack: stock Dovecot services with Foreman on 127.0.0.1 high ports.
    Demo,
    /// Trace-driven simulations (`docs/eviction.md`).
    Sim {
        #[command(subcommand)]
        what: SimCommand,
    },
    /// Run the master (drop-in for `dovecot`): `foreman master -c FILE [-F] [stop|reload]`.
    Master {
        /// The configuration file.
        #[arg(short = 'c', default_value = "/etc/dovecot/dovecot.conf")]
        config: PathBuf,
        /// Stay in the foreground.
        #[arg(short = 'F')]
        foreground: bool,
        /// Ask for the SSL key password (passed to services with inet listeners).
        #[arg(short = 'p')]
        ask_key_password: bool,
        /// `stop` or `reload` a running master instead of starting one.
        action: Option<MasterAction>,
    },
    /// Benchmarks side by side with stock Dovecot.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

/// What to simulate.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Reuse hit rate of the eviction policies at several process_limit sizes.
    Eviction {
        /// Trace files (default: the committed fixtures/traces/*.trace, regenerated in memory).
        traces: Vec<PathBuf>,
        /// Comma-separated process_limit sizes.
        #[arg(long, default_value = "8,16,32,64,128")]
        limits: String,
        /// Write the standard traces into this directory instead of simulating.
        #[arg(long, value_name = "DIR")]
        write_traces: Option<PathBuf>,
    },
}

/// What `foreman master` does to a running master.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MasterAction {
    Stop,
    Reload,
}

/// What to benchmark.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The anvil: Foreman's vs stock, pipelined pairs, LOOKUP latency, memory.
    Anvil {
        /// Shorter run (fewer operations), for smoke tests.
        #[arg(long)]
        quick: bool,
        /// Skip pairs/s and LOOKUP/s.
        #[arg(long)]
        skip_throughput: bool,
        /// Skip RSS per tracked session.
        #[arg(long)]
        skip_memory: bool,
        /// Skip CONNECT-DUMP time.
        #[arg(long)]
        skip_dump: bool,
        /// Skip instructions per operation (valgrind --tool=callgrind).
        #[arg(long)]
        skip_callgrind: bool,
        /// Measure another build's `foreman anvil` (default: this binary).
        #[arg(long, value_name = "PATH")]
        foreman_exe: Option<PathBuf>,
    },
    /// The master: stock `dovecot` vs `foreman master`, login cycles, CPU per spawn, fds, RSS.
    Master {
        /// Sequential login cycles per master.
        #[arg(long, default_value_t = 200)]
        cycles: u32,
        /// Concurrent sessions for the footprint figures (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "100")]
        sessions: Vec<u32>,
    },
}

/// Entry point of the `foreman` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("foreman: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Anvil {
            socket: Some(socket),
            penalty_socket,
            claim_ttl_ms,
        } => {
            crate::anvil_compat::server::run_standalone(
                crate::anvil_compat::server::StandaloneOptions {
                    socket,
                    penalty_socket,
                    claim_ttl: claim_ttl_ms,
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Anvil { socket: None, .. } => {
            crate::anvil_compat::server::run_under_master()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Who {
            socket,
            one_per_session,
            processes,
            json,
            masks,
        } => {
            let opts = crate::who::Options {
                socket: socket.unwrap_or_else(|| crate::who::DEFAULT_SOCKET.into()),
                one_per_session,
                processes,
                json,
                masks,
                screen: crate::who::stdout_screen(),
            };
            let mut stdout = std::io::stdout().lock();
            let mut stderr = std::io::stderr().lock();
            match crate::who::run(&opts, &mut stdout, &mut stderr) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(err) => {
                    eprintln!("{}: {err}", err.label());
                    Ok(ExitCode::from(err.exit_code()))
                }
            }
        }
        Command::Config(args) => {
            let status = crate::master_compat::config::cli::run(&args);
            Ok(ExitCode::from(status))
        }
        Command::Conformance { what } => crate::conformance::cli::run(what),
        Command::Sim {
            what:
                SimCommand::Eviction {
                    traces,
                    limits,
                    write_traces,
                },
        } => {
            let limits = limits
                .split(',')
                .map(|l| l.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()?;
            crate::sim::run_eviction(
                &traces,
                &limits,
                write_traces.as_deref(),
                &mut std::io::stdout().lock(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dispatch => {
            crate::dispatch::run(crate::dispatch::Options::default())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            crate::demo::run(std::env::current_exe()?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Master {
            config,
            foreground,
            ask_key_password,
            action,
        } => {
            use crate::master_compat::master;
            let res = match action {
                None => master::run(&master::Options {
                    config,
                    foreground,
                    ask_key_password,
                }),
                Some(MasterAction::Stop) => master::stop(&config),
                Some(MasterAction::Reload) => master::reload(&config),
            };
            match res {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("Fatal: {e}");
                    Ok(ExitCode::from(e.exit_code()))
                }
            }
        }
        Command::Bench {
            what: BenchCommand::Master { cycles, sessions },
        } => {
            let opts = crate::bench::master::Options {
                foreman: std::env::current_exe()?,
                cycles,
                sessions,
            };
            let figs = crate::bench::master::run(&opts)?;
            print!("{}", crate::bench::master::format(&figs, cycles));
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                BenchCommand::Anvil {
                    quick,
                    skip_throughput,
                    skip_memory,
                    skip_dump,
                    skip_callgrind,
                    foreman_exe,
                },
        } => {
            let opts = crate::bench::AnvilOptions {
                foreman_exe: match foreman_exe {
                    Some(path) => path,
                    None => std::env::current_exe()?,
                },
                quick,
                skip_throughput,
                skip_memory,
                skip_dump,
                skip_callgrind,
            };
            crate::bench::run_anvil(
                &opts,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
