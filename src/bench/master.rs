//! `foreman bench master`: the stock `dovecot` master and `foreman master` side by side in one
//! run, same stock services, same configuration (the stock harness's), on 127.0.0.1.
//!
//! Measured per master: IMAP login cycles per second (connect, LOGIN, LOGOUT; each cycle spawns
//! and reaps an imap-login and an imap process), master CPU (utime + stime from
//! `/proc/<pid>/stat`) per cycle and per spawned process (spawns counted with `doveadm service
//! status` `process_total`), and the master's open fds and RSS with 1 and with N logged-in imap
//! processes.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use crate::stock::{Builder, StockDovecot, StockError};

/// Options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `foreman` binary.
    pub foreman: PathBuf,
    /// Sequential login cycles per master.
    pub cycles: u32,
    /// Concurrent logged-in sessions for the fd/RSS figures (besides 1).
    pub sessions: Vec<u32>,
}

/// Figures for one master.
#[derive(Debug, Clone)]
pub struct Figures {
    pub name: &'static str,
    pub cycles_per_sec: f64,
    pub cpu_ms_per_cycle: f64,
    pub cpu_ms_per_spawn: f64,
    pub spawned: u64,
    /// (sessions, open fds, RSS kB)
    pub footprint: Vec<(u32, usize, u64)>,
}

fn ticks_per_sec() -> f64 {
    100.0 // USER_HZ on Linux
}

/// utime + stime of `pid` in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields after ")": state=0 … utime=11, stime=12.
    (t(11) + t(12)) as f64 / ticks_per_sec()
}

fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn rss_kb(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Sum of `process_total` over all services (processes the master created).
pub(crate) fn spawned_total(d: &StockDovecot) -> Result<u64, StockError> {
    let out = d.doveadm_master(&["service", "status"])?;
    if !out.status.success() {
        return Err(StockError::Protocol {
            peer: "doveadm service status",
            line: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("process_total: "))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .sum())
}

fn measure(name: &'static str, b: Builder, opts: &Options) -> Result<Figures, StockError> {
    let max = opts.sessions.iter().copied().max().unwrap_or(1);
    let d = b
        .user("bench", "pw")
        .mail_max_userip_connections(max + 10)
        .start()?;
    let pid = d.pid().unwrap_or(0);
    // Warm up (auth, stats, config started).
    let mut c = d.imap()?;
    c.login("bench", "pw")?;
    c.logout()?;
    let spawned0 = spawned_total(&d)?;
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    for _ in 0..opts.cycles {
        let mut c = d.imap()?;
        let r = c.login("bench", "pw")?;
        if !r.is_ok() {
            return Err(StockError::Protocol {
                peer: "imap",
                line: r.tagged,
            });
        }
        c.logout()?;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    let spawned = spawned_total(&d)? - spawned0;
    let mut footprint = Vec::new();
    let mut sessions = Vec::new();
    let mut levels = vec![1];
    levels.extend(opts.sessions.iter().copied());
    for level in levels {
        while sessions.len() < level as usize {
            let mut c = d.imap()?;
            c.login("bench", "pw")?;
            sessions.push(c);
        }
        footprint.push((level, fds(pid), rss_kb(pid)));
    }
    Ok(Figures {
        name,
        cycles_per_sec: f64::from(opts.cycles) / wall,
        cpu_ms_per_cycle: cpu * 1000.0 / f64::from(opts.cycles),
        cpu_ms_per_spawn: if spawned > 0 {
            cpu * 1000.0 / spawned as f64
        } else {
            0.0
        },
        spawned,
        footprint,
    })
}

/// Runs both masters and returns their figures (stock first).
pub fn run(opts: &Options) -> Result<Vec<Figures>, StockError> {
    let stock = measure("stock dovecot", StockDovecot::builder(), opts)?;
    let foreman = measure(
        "foreman master",
        StockDovecot::builder().master_command(&opts.foreman, &["master"]),
        opts,
    )?;
    Ok(vec![stock, foreman])
}

/// The figures as a text table.
pub fn format(figs: &[Figures], cycles: u32) -> String {
    let mut out = format!(
        "{cycles} sequential IMAP login cycles (connect, LOGIN, LOGOUT) per master\n\n\
         {:<16} {:>10} {:>14} {:>15} {:>8}\n",
        "master", "cycles/s", "CPU ms/cycle", "CPU ms/spawn", "spawned"
    );
    for f in figs {
        out.push_str(&format!(
            "{:<16} {:>10.1} {:>14.3} {:>15.3} {:>8}\n",
            f.name, f.cycles_per_sec, f.cpu_ms_per_cycle, f.cpu_ms_per_spawn, f.spawned
        ));
    }
    out.push_str("\nmaster footprint with N logged-in imap sessions (fds, RSS kB)\n");
    for f in figs {
        out.push_str(&format!("{:<16}", f.name));
        for (n, fds, rss) in &f.footprint {
            out.push_str(&format!("  N={n}: {fds} fds {rss} kB"));
        }
        out.push('\n');
    }
    out
}
