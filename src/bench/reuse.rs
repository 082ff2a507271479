//! `foreman bench reuse`: the webmail pattern (issue 6 item 6) — many short IMAP connections
//! per user, each `LOGIN`, `SELECT INBOX`, `FETCH 1 (FLAGS)`, `LOGOUT` — against three set-ups
//! that differ only on the imap side, all with imap-login in Dovecot's high-performance mode
//! (`service_count = 0`):
//!
//! - **stock fresh**: stock `dovecot`, `service imap { service_count = 1 }` (a new imap process
//!   per login);
//! - **stock reuse**: stock `dovecot`, `service imap { service_count = 0 }` (any idle imap
//!   process takes the next login, whoever's it is; it cannot change uid);
//! - **foreman**: `foreman master`, Foreman's anvil and the dispatcher
//!   ([`crate::dispatch::reuse_config`]): a user's next login goes to an idle process of that
//!   user.
//!
//! Each set-up runs with users of one uid (a static userdb) and of many uids (user *i* has uid
//! `UID_BASE + i`), and with 1, 8 and 64 concurrent users. The load is closed-loop: one thread
//! per user, each repeating the cycle back to back. Per cell: logins/s, p50 and p99 of connect →
//! tagged `LOGIN` OK, CPU per login of the set-up (the instance's process tree plus this load
//! generator, [`procs::tree_cpu_ticks`]) and of the whole machine (`/proc/stat`), processes the
//! master spawned per login (`doveadm service status` `process_total`), and the number of
//! processes that served more than one user (imap-login's `Login: user=<u>, …, mpid=<pid>` log
//! lines). A cell whose load hits an error stops and reports
//! "fails" with the first error — stock reuse with many uids does, by design. Design and
//! figures: `docs/bench.md`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use super::load::percentile;
use super::master::spawned_total;
use super::report::{align, format_figure, verdict_text, Figure, Target, Unit};
use super::{BenchError, Result};
use crate::dispatch::ReuseConfig;
use crate::stock::{procs, wait_for, Builder, ImapClient, Protocol, StockDovecot};

/// uid/gid of user 0 with many uids (user *i* has `UID_BASE + i`).
pub const UID_BASE: u32 = 40_000;
/// Every user's password.
const PASSWORD: &str = "p";
/// How long to wait for imap-login's `Login:` lines to reach the log file.
const LOG_DEADLINE: Duration = Duration::from_secs(10);

/// Targets of issue 6: Foreman logins/s ≥ 4× stock fresh, p50 ≤ 1.2× stock reuse.
const LOGINS_TARGET: Target = Target::AtLeast(4.0);
const P50_TARGET: Target = Target::AtMost(1.2);

/// What `foreman bench reuse` runs.
#[derive(Debug, Clone)]
pub struct ReuseOptions {
    /// The `foreman` binary run as master, anvil and dispatcher in the Foreman set-up.
    pub foreman_exe: PathBuf,
    /// Small counts: checks that everything runs, figures are not meaningful.
    pub quick: bool,
    /// Concurrent users per cell.
    pub users: Vec<usize>,
    /// Measured time per cell (the cell also ends after `logins`, if given).
    pub duration: Duration,
    /// Measured logins per cell (all users together), if the cell should end by count.
    pub logins: Option<u64>,
    /// Unmeasured cycles per user before the clock starts.
    pub warmup: u32,
}

impl ReuseOptions {
    /// The defaults: a complete run of about 6 minutes, or a smoke run with `quick`.
    pub fn new(foreman_exe: PathBuf, quick: bool) -> ReuseOptions {
        if quick {
            ReuseOptions {
                foreman_exe,
                quick,
                users: vec![1, 4],
                duration: Duration::from_secs(2),
                logins: Some(40),
                warmup: 1,
            }
        } else {
            ReuseOptions {
                foreman_exe,
                quick,
                users: vec![1, 8, 64],
                duration: Duration::from_secs(15),
                logins: None,
                warmup: 2,
            }
        }
    }
}

/// The three set-ups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Setup {
    StockFresh,
    StockReuse,
    Foreman,
}

const SETUPS: [Setup; 3] = [Setup::StockFresh, Setup::StockReuse, Setup::Foreman];

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::StockFresh => "stock fresh",
            Setup::StockReuse => "stock reuse",
            Setup::Foreman => "foreman",
        }
    }
}

/// Users of one uid or of many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Uids {
    One,
    Many,
}

impl Uids {
    fn name(self) -> &'static str {
        match self {
            Uids::One => "one uid",
            Uids::Many => "many uids",
        }
    }
}

/// The figures of one cell.
#[derive(Debug, Clone)]
struct Figures {
    logins_per_sec: f64,
    /// Seconds.
    p50: f64,
    p99: f64,
    /// Machine CPU seconds per measured login.
    machine_cpu_per_login: f64,
    /// CPU seconds per measured login of the instance's processes and the load generator.
    setup_cpu_per_login: f64,
    /// Processes the master spawned per measured login, when `doveadm` answered.
    spawned_per_login: Option<f64>,
    /// Processes that served two users or more; `None` when pids may have wrapped.
    cross_user: Option<usize>,
}

/// What became of one cell.
#[derive(Debug, Clone)]
enum Outcome {
    Done(Figures),
    /// The load hit an error (the first one).
    Fails(String),
    /// The set-up could not be measured at all.
    Error(String),
}

impl Outcome {
    fn figures(&self) -> Option<&Figures> {
        match self {
            Outcome::Done(f) => Some(f),
            _ => None,
        }
    }

    fn figure(&self, get: impl Fn(&Figures) -> Option<f64>) -> Figure {
        match self {
            Outcome::Done(f) => match get(f) {
                Some(v) => Figure::Value(v),
                None => Figure::Missing("?".into()),
            },
            Outcome::Fails(_) => Figure::Missing("fails".into()),
            Outcome::Error(_) => Figure::Missing("error".into()),
        }
    }
}

type Results = HashMap<(Setup, Uids, usize), Outcome>;

/// Runs `foreman bench reuse`: progress on `log`, the table on `out`. A missed target is not an
/// error, nor is stock reuse failing with many uids; any other cell that could not run is
/// (after the table is printed).
pub fn run_reuse(opts: &ReuseOptions, out: &mut dyn Write, log: &mut dyn Write) -> Result<()> {
    crate::stock::check_installed()?;
    let mut results = Results::new();
    for uids in [Uids::One, Uids::Many] {
        for setup in SETUPS {
            let _ = writeln!(log, "bench: {}, {}…", setup.name(), uids.name());
            for (users, outcome) in run_instance(opts, setup, uids, log) {
                results.insert((setup, uids, users), outcome);
            }
        }
    }
    let w = |e| BenchError::io("write output", e);
    out.write_all(render(opts, &results).as_bytes())
        .map_err(w)?;
    out.flush().map_err(w)?;
    let failed = results
        .iter()
        .filter(|((setup, uids, _), o)| {
            o.figures().is_none() && !(*setup == Setup::StockReuse && *uids == Uids::Many)
        })
        .count();
    if failed > 0 {
        return Err(BenchError::SectionsFailed(failed));
    }
    Ok(())
}

/// The instance of one set-up and uid mode, with every user any cell needs.
fn builder(opts: &ReuseOptions, setup: Setup, uids: Uids) -> Builder {
    let max_users = opts.users.iter().copied().max().unwrap_or(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut b = StockDovecot::builder()
        .protocols(&[Protocol::Imap])
        .seed_inboxes()
        .config_line(format!(
            "service imap-login {{\n  service_count = 0\n  process_min_avail = {cores}\n}}"
        ));
    for i in 0..max_users {
        b = b.user(user_name(i), PASSWORD);
    }
    if uids == Uids::Many {
        b = b.distinct_uids(UID_BASE);
    }
    match setup {
        Setup::StockFresh => b.config_line("service imap {\n  service_count = 1\n}"),
        Setup::StockReuse => b.config_line("service imap {\n  service_count = 0\n}"),
        Setup::Foreman => {
            let cfg = ReuseConfig::default();
            let cfg = ReuseConfig {
                process_limit: cfg.process_limit.max(2 * max_users as u32 + 8),
                ..cfg
            };
            b.foreman_reuse(opts.foreman_exe.clone(), cfg)
        }
    }
}

fn user_name(i: usize) -> String {
    format!("u{i}")
}

/// Starts one instance and runs every users count against it, in order.
fn run_instance(
    opts: &ReuseOptions,
    setup: Setup,
    uids: Uids,
    log: &mut dyn Write,
) -> Vec<(usize, Outcome)> {
    let all = |why: String| {
        opts.users
            .iter()
            .map(|&n| (n, Outcome::Error(why.clone())))
            .collect()
    };
    if setup == Setup::Foreman {
        if let Err(why) = has_dispatcher(&opts.foreman_exe) {
            let _ = writeln!(log, "bench:   {why}");
            return all(why);
        }
    }
    let forks_at_start = Machine::read().forks;
    let dovecot = match builder(opts, setup, uids).start() {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(log, "bench:   could not start: {e}");
            return all(format!("start: {e}"));
        }
    };
    let mut logins_so_far = 0;
    let mut out = Vec::new();
    for &users in &opts.users {
        let outcome = run_cell(opts, &dovecot, users, forks_at_start, &mut logins_so_far);
        let _ = match &outcome {
            Outcome::Done(f) => writeln!(
                log,
                "bench:   {users} user(s): {:.1} logins/s, p50 {:.2} ms, p99 {:.2} ms, \
                 CPU {:.2} ms/login (machine {:.2}), spawned {}/login, cross-user processes {}",
                f.logins_per_sec,
                f.p50 * 1e3,
                f.p99 * 1e3,
                f.setup_cpu_per_login * 1e3,
                f.machine_cpu_per_login * 1e3,
                f.spawned_per_login
                    .map_or("?".into(), |s| format!("{s:.2}")),
                f.cross_user.map_or("?".into(), |c| c.to_string()),
            ),
            Outcome::Fails(why) | Outcome::Error(why) => {
                writeln!(log, "bench:   {users} user(s): fails: {why}")
            }
        };
        out.push((users, outcome));
    }
    out
}

/// Checks that `foreman` has the `dispatch` subcommand the Foreman set-up runs.
fn has_dispatcher(foreman: &std::path::Path) -> Result<(), String> {
    let out = std::process::Command::new(foreman)
        .args(["dispatch", "--help"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("run {}: {e}", foreman.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "{} has no working `dispatch` subcommand (the dispatcher is not built in): {}",
        foreman.display(),
        stderr.lines().next().unwrap_or("").trim()
    ))
}

/// Shared state of one cell's user threads.
struct Control {
    port: u16,
    warmup: u32,
    stop: AtomicBool,
    /// Measured cycles started, for `--logins`.
    started: AtomicU64,
    limit: Option<u64>,
    warmed: Barrier,
    go: Barrier,
    deadline: OnceLock<Instant>,
}

/// One user thread's run.
struct UserRun {
    /// connect → LOGIN OK of every measured cycle.
    latencies: Vec<Duration>,
    /// Cycles completed, warm-up included (each logs one `Login:` line).
    completed: u64,
    error: Option<String>,
}

fn run_cell(
    opts: &ReuseOptions,
    dovecot: &StockDovecot,
    users: usize,
    forks_at_start: u64,
    logins_so_far: &mut u64,
) -> Outcome {
    let Some(port) = dovecot.imap_port() else {
        return Outcome::Error("no IMAP port".into());
    };
    let log_offset = dovecot.log_contents().len();
    let forks_at_cell = Machine::read().forks;
    let ctl = Control {
        port,
        warmup: opts.warmup,
        stop: AtomicBool::new(false),
        started: AtomicU64::new(0),
        limit: opts.logins,
        warmed: Barrier::new(users + 1),
        go: Barrier::new(users + 1),
        deadline: OnceLock::new(),
    };
    let names: Vec<String> = (0..users).map(user_name).collect();
    let (runs, elapsed, before, after) = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| {
                let ctl = &ctl;
                scope.spawn(move || user_loop(ctl, name))
            })
            .collect();
        ctl.warmed.wait();
        let before = Snapshot::before(dovecot);
        let _ = ctl.deadline.set(Instant::now() + opts.duration);
        let start = Instant::now();
        ctl.go.wait();
        let runs: Vec<UserRun> = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| UserRun {
                    latencies: Vec::new(),
                    completed: 0,
                    error: Some("load thread panicked".into()),
                })
            })
            .collect();
        let elapsed = start.elapsed();
        let after = Snapshot::after(dovecot);
        (runs, elapsed, before, after)
    });
    *logins_so_far += runs.iter().map(|r| r.completed).sum::<u64>();
    if let Some(e) = runs.iter().find_map(|r| r.error.clone()) {
        let text = dovecot.log_contents();
        return Outcome::Fails(match first_error(text.get(log_offset..).unwrap_or("")) {
            Some(line) => format!("{e}; log: {line}"),
            None => e,
        });
    }
    let mut latencies: Vec<Duration> = runs.into_iter().flat_map(|r| r.latencies).collect();
    latencies.sort_unstable();
    let logins = latencies.len() as u64;
    if logins == 0 {
        return Outcome::Error("no login completed in the measured time".into());
    }
    // Every completed cycle logged one `Login:` line; wait until they are all in the file.
    let expected = *logins_so_far;
    let log_text = wait_for(LOG_DEADLINE, || {
        let text = dovecot.log_contents();
        (login_lines(&text).count() as u64 >= expected).then_some(text)
    })
    .unwrap_or_else(|| dovecot.log_contents());
    let forks_now = after.machine.forks;
    let safe = pid_reuse_free_forks();
    let cross_user = if forks_now.saturating_sub(forks_at_start) < safe {
        Some(cross_user_pids(&log_text))
    } else if forks_now.saturating_sub(forks_at_cell) < safe {
        Some(cross_user_pids(log_text.get(log_offset..).unwrap_or("")))
    } else {
        None
    };
    let n = logins as f64;
    Outcome::Done(Figures {
        logins_per_sec: n / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 50).unwrap_or_default().as_secs_f64(),
        p99: percentile(&latencies, 99).unwrap_or_default().as_secs_f64(),
        machine_cpu_per_login: (after.machine.busy_ticks - before.machine.busy_ticks) as f64
            / TICKS_PER_SEC
            / n,
        setup_cpu_per_login: (after.setup_ticks - before.setup_ticks) as f64 / TICKS_PER_SEC / n,
        spawned_per_login: match (before.spawned, after.spawned) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / n),
            _ => None,
        },
        cross_user,
    })
}

fn user_loop(ctl: &Control, user: &str) -> UserRun {
    let mut run = UserRun {
        latencies: Vec::new(),
        completed: 0,
        error: None,
    };
    let once = |run: &mut UserRun| match cycle(ctl.port, user) {
        Ok(latency) => {
            run.completed += 1;
            Some(latency)
        }
        Err(e) => {
            run.error = Some(format!("{user}: {e}"));
            ctl.stop.store(true, Ordering::Relaxed);
            None
        }
    };
    for _ in 0..ctl.warmup {
        if ctl.stop.load(Ordering::Relaxed) || once(&mut run).is_none() {
            break;
        }
    }
    ctl.warmed.wait();
    ctl.go.wait();
    let deadline = *ctl.deadline.get().expect("deadline set before the release");
    while run.error.is_none() && !ctl.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if let Some(limit) = ctl.limit {
            if ctl.started.fetch_add(1, Ordering::Relaxed) >= limit {
                break;
            }
        }
        if let Some(latency) = once(&mut run) {
            run.latencies.push(latency);
        }
    }
    run
}

/// One webmail cycle; returns the time from connect to the tagged LOGIN OK.
fn cycle(port: u16, user: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let mut client = ImapClient::connect(port).map_err(|e| format!("greeting: {e}"))?;
    let login = client
        .login(user, PASSWORD)
        .map_err(|e| format!("LOGIN: {e}"))?;
    if !login.is_ok() {
        return Err(format!("LOGIN answered {:?}", login.tagged));
    }
    let latency = start.elapsed();
    let select = client
        .command("SELECT INBOX")
        .map_err(|e| format!("SELECT: {e}"))?;
    if !select.is_ok() {
        return Err(format!("SELECT answered {:?}", select.tagged));
    }
    let fetch = client
        .command("FETCH 1 (FLAGS)")
        .map_err(|e| format!("FETCH: {e}"))?;
    if !fetch.is_ok() || !fetch.untagged.iter().any(|l| l.starts_with("* 1 FETCH")) {
        return Err(format!(
            "FETCH 1 answered {:?} after {:?}",
            fetch.tagged, fetch.untagged
        ));
    }
    client.logout().map_err(|e| format!("LOGOUT: {e}"))?;
    Ok(latency)
}

/// imap-login's `Login: user=<u>, …, mpid=<pid>` lines as `(user, pid)`.
fn login_lines(log: &str) -> impl Iterator<Item = (&str, u32)> {
    log.lines().filter_map(|line| {
        let (_, rest) = line.split_once("imap-login: Info: Login: user=<")?;
        let (user, rest) = rest.split_once(">, ")?;
        let (_, rest) = rest.split_once("mpid=")?;
        let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
        Some((user, digits.parse().ok()?))
    })
}

/// The first `Fatal:` or `Error:` line of a log, without its timestamp.
fn first_error(log: &str) -> Option<&str> {
    let line = log
        .lines()
        .find(|l| l.contains(": Fatal: ") || l.contains(": Error: "))?;
    // `Nov 28 19:03:24 imap(u1)…`: drop the three timestamp words.
    Some(line.splitn(4, ' ').nth(3).unwrap_or(line))
}

/// How many imap processes (by mpid) served two users or more.
fn cross_user_pids(log: &str) -> usize {
    let mut users: HashMap<u32, HashSet<&str>> = HashMap::new();
    for (user, pid) in login_lines(log) {
        users.entry(pid).or_default().insert(user);
    }
    users.values().filter(|u| u.len() > 1).count()
}

/// Forks (threads included) the machine may make before a pid can come round again: pids are
/// handed out in order up to `pid_max`, then from the bottom, skipping live ones. Half of
/// `pid_max` leaves room for every live process.
fn pid_reuse_free_forks() -> u64 {
    fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(32_768)
        / 2
}

/// Machine-wide counters from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
struct Machine {
    /// Non-idle CPU time of all cores, in clock ticks.
    busy_ticks: u64,
    /// `processes`: forks since boot.
    forks: u64,
}

impl Machine {
    fn read() -> Machine {
        fs::read_to_string("/proc/stat")
            .map(|s| Machine::parse(&s))
            .unwrap_or_default()
    }

    fn parse(stat: &str) -> Machine {
        let mut m = Machine::default();
        for line in stat.lines() {
            let mut fields = line.split_whitespace();
            match fields.next() {
                // user nice system idle iowait irq softirq steal (guest time is in user).
                Some("cpu") => {
                    let v: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
                    m.busy_ticks = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
                }
                Some("processes") => {
                    m.forks = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
                }
                _ => {}
            }
        }
        m
    }
}

/// Clock ticks per second of `/proc` CPU times (USER_HZ on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// The counters at one end of a cell's measured window.
struct Snapshot {
    machine: Machine,
    /// CPU ticks of the instance (master and all descendants) plus the load generator.
    setup_ticks: u64,
    spawned: Option<u64>,
}

impl Snapshot {
    fn cpu(dovecot: &StockDovecot, spawned: Option<u64>) -> Snapshot {
        Snapshot {
            machine: Machine::read(),
            setup_ticks: dovecot.pid().map_or(0, procs::tree_cpu_ticks) + procs::own_cpu_ticks(),
            spawned,
        }
    }

    /// `doveadm` first, so that its own work falls outside the window.
    fn before(dovecot: &StockDovecot) -> Snapshot {
        let spawned = spawned_total(dovecot).ok();
        Snapshot::cpu(dovecot, spawned)
    }

    /// CPU first, then `doveadm`.
    fn after(dovecot: &StockDovecot) -> Snapshot {
        let mut s = Snapshot::cpu(dovecot, None);
        s.spawned = spawned_total(dovecot).ok();
        s
    }
}

/// One line of the table.
struct Line {
    label: String,
    unit: Unit,
    /// stock fresh, stock reuse, foreman.
    figures: [Figure; 3],
    /// The stock reuse figure the foreman/reuse ratio is taken against, and whether it comes
    /// from the one-uid run (stock reuse cannot run with many uids).
    reuse_reference: (Figure, bool),
    check: Check,
}

enum Check {
    None,
    /// foreman / stock fresh against a target.
    VsFresh(Target),
    /// foreman / stock reuse against a target.
    VsReuse(Target),
    /// foreman must be 0.
    Zero,
}

fn ratio(num: &Figure, den: &Figure) -> Option<f64> {
    match (num, den) {
        (Figure::Value(n), Figure::Value(d)) if *d > 0.0 => Some(n / d),
        _ => None,
    }
}

impl Line {
    fn vs_fresh(&self) -> Option<f64> {
        ratio(&self.figures[2], &self.figures[0])
    }

    fn vs_reuse(&self) -> Option<f64> {
        ratio(&self.figures[2], &self.reuse_reference.0)
    }

    fn verdict(&self) -> Option<bool> {
        match self.check {
            Check::None => None,
            Check::VsFresh(t) => Some(t.met(self.vs_fresh()?)),
            Check::VsReuse(t) => Some(t.met(self.vs_reuse()?)),
            Check::Zero => match self.figures[2] {
                Figure::Value(v) => Some(v == 0.0),
                Figure::Missing(_) => None,
            },
        }
    }

    fn cells(&self) -> Vec<String> {
        let mut cells = vec![self.label.clone()];
        cells.extend(self.figures.iter().map(|f| format_figure(self.unit, f)));
        // Per-login spawn counts are ~0 with reuse; their ratios would only show noise.
        let comparable = !matches!(self.check, Check::Zero) && self.unit != Unit::Decimal;
        let x = |r: Option<f64>, mark: &str| match r {
            Some(r) if comparable => format!("{r:.2}x{mark}"),
            _ => "-".into(),
        };
        cells.push(x(self.vs_fresh(), ""));
        cells.push(x(
            self.vs_reuse(),
            if self.reuse_reference.1 { "*" } else { "" },
        ));
        cells.push(match self.check {
            Check::None => "-".into(),
            Check::VsFresh(t) => format!("{} fresh", t.text()),
            Check::VsReuse(t) => format!("{} reuse", t.text()),
            Check::Zero => "= 0".into(),
        });
        cells.push(verdict_text(self.verdict()).into());
        cells
    }
}

/// The columns of the comparison table (the last one, untitled, is the verdict).
pub const TABLE_COLUMNS: [&str; 8] = [
    "figure",
    "stock fresh",
    "stock reuse",
    "foreman",
    "foreman/fresh",
    "foreman/reuse",
    "target",
    "",
];

/// The rows of one cell.
fn lines(results: &Results, uids: Uids, users: usize) -> Vec<Line> {
    let missing = Outcome::Error("not run".into());
    let get = |setup, uids| results.get(&(setup, uids, users)).unwrap_or(&missing);
    let outcomes = SETUPS.map(|s| get(s, uids));
    // With many uids stock reuse fails; the p50 target is then taken against one uid's.
    let reuse = get(Setup::StockReuse, uids);
    let (reuse, from_one_uid) = match (uids, reuse.figures()) {
        (Uids::Many, None) => (get(Setup::StockReuse, Uids::One), true),
        _ => (reuse, false),
    };
    let who = format!(
        "{}, {users} user{}",
        uids.name(),
        if users == 1 { "" } else { "s" }
    );
    type Get = fn(&Figures) -> Option<f64>;
    let specs: [(&str, Unit, Get, Check); 7] = [
        (
            "logins/s",
            Unit::PerSec,
            |f| Some(f.logins_per_sec),
            Check::VsFresh(LOGINS_TARGET),
        ),
        (
            "p50 connect->LOGIN OK",
            Unit::Seconds,
            |f| Some(f.p50),
            Check::VsReuse(P50_TARGET),
        ),
        (
            "p99 connect->LOGIN OK",
            Unit::Seconds,
            |f| Some(f.p99),
            Check::None,
        ),
        (
            "set-up CPU/login",
            Unit::Seconds,
            |f| Some(f.setup_cpu_per_login),
            Check::None,
        ),
        (
            "machine CPU/login",
            Unit::Seconds,
            |f| Some(f.machine_cpu_per_login),
            Check::None,
        ),
        (
            "processes spawned/login",
            Unit::Decimal,
            |f| f.spawned_per_login,
            Check::None,
        ),
        (
            "processes serving 2+ users",
            Unit::Count,
            |f| f.cross_user.map(|c| c as f64),
            Check::Zero,
        ),
    ];
    specs
        .into_iter()
        .map(|(what, unit, get, check)| Line {
            label: format!("{who}: {what}"),
            unit,
            figures: outcomes.map(|o| o.figure(get)),
            reuse_reference: (reuse.figure(get), from_one_uid),
            check,
        })
        .collect()
}

fn render(opts: &ReuseOptions, results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "foreman bench reuse{}: webmail cycles (connect, LOGIN, SELECT INBOX, FETCH 1, LOGOUT), \
         closed loop, one thread per user, {} per cell{}, after {} warm-up cycle(s) per user. \
         imap-login service_count = 0 everywhere; stock fresh = stock dovecot, imap \
         service_count = 1; stock reuse = stock dovecot, imap service_count = 0; foreman = \
         `{} master` + anvil + dispatcher (per-user reuse).",
        if opts.quick {
            " --quick (counts too small to mean much)"
        } else {
            ""
        },
        humanize(opts.duration),
        opts.logins
            .map_or(String::new(), |n| format!(" or {n} logins")),
        opts.warmup,
        opts.foreman_exe.display()
    );
    let _ = writeln!(out);
    let mut all = Vec::new();
    for uids in [Uids::One, Uids::Many] {
        for &users in &opts.users {
            all.extend(lines(results, uids, users));
        }
    }
    let cells: Vec<Vec<String>> = all.iter().map(Line::cells).collect();
    out.push_str(&align(&TABLE_COLUMNS, &cells));
    let verdicts: Vec<bool> = all.iter().filter_map(Line::verdict).collect();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "targets met: {} of {}",
        verdicts.iter().filter(|v| **v).count(),
        verdicts.len()
    );
    if all.iter().any(|l| l.reuse_reference.1) {
        let _ = writeln!(
            out,
            "* stock reuse cannot serve many uids (an imap process cannot change uid): ratio \
             against stock reuse with one uid"
        );
    }
    for uids in [Uids::One, Uids::Many] {
        for setup in SETUPS {
            for &users in &opts.users {
                let (kind, why) = match results.get(&(setup, uids, users)) {
                    Some(Outcome::Fails(why)) => ("fails", why),
                    Some(Outcome::Error(why)) => ("error", why),
                    _ => continue,
                };
                let _ = writeln!(
                    out,
                    "{}, {}, {users} user(s): {kind}: {why}",
                    setup.name(),
                    uids.name()
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "measured earlier (issue 6, 1 client): stock fresh 182 logins/s, p50 5 ms; stock reuse \
         863 logins/s, p50 1.0 ms"
    );
    out
}

/// `15 s`, `500 ms`.
fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
Nov 28 19:03:24 imap-login: Info: Login: user=<u0>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=100, secured, session=<a>
Nov 28 19:03:24 imap(u0)<100><a>: Info: Logged out in=10 out=20
Nov 28 19:03:25 imap-login: Info: Login: user=<u1>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=101, secured, session=<b>
Nov 28 19:03:25 imap-login: Info: Login: user=<u0>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=100, secured, session=<c>
Nov 28 19:03:26 imap-login: Info: Login: user=<u2>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=101, secured, session=<d>
Nov 28 19:03:26 imap-login: Info: Disconnected (auth failed, 1 attempts in 2 secs): user=<u3>, method=PLAIN, rip=127.0.0.1
";

    #[test]
    fn login_lines_give_user_and_mpid() {
        let lines: Vec<_> = login_lines(LOG).collect();
        assert_eq!(lines, [("u0", 100), ("u1", 101), ("u0", 100), ("u2", 101)]);
    }

    #[test]
    fn a_pid_with_two_users_counts_once() {
        assert_eq!(cross_user_pids(LOG), 1);
        let same_user: String = LOG.lines().take(4).collect::<Vec<_>>().join("\n");
        assert_eq!(cross_user_pids(&same_user), 0);
    }

    #[test]
    fn first_error_line_without_timestamp() {
        let log = format!(
            "{LOG}Nov 28 19:03:27 imap(u1)<101><e>: Fatal: setuid(40001) failed: Operation not \
             permitted\nNov 28 19:03:28 imap(u2): Error: later\n"
        );
        assert_eq!(
            first_error(&log),
            Some("imap(u1)<101><e>: Fatal: setuid(40001) failed: Operation not permitted")
        );
        assert_eq!(first_error(LOG), None);
    }

    #[test]
    fn proc_stat_busy_and_forks() {
        let m = Machine::parse(
            "cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 50 2 25 500 3 1 1 0 0 0\nprocesses 4242\n",
        );
        assert_eq!(m.busy_ticks, 100 + 5 + 50 + 3 + 2 + 1);
        assert_eq!(m.forks, 4242);
    }

    fn done(per_sec: f64, p50: f64) -> Outcome {
        Outcome::Done(Figures {
            logins_per_sec: per_sec,
            p50,
            p99: p50 * 2.0,
            machine_cpu_per_login: 0.001,
            setup_cpu_per_login: 0.001,
            spawned_per_login: Some(0.0),
            cross_user: Some(0),
        })
    }

    #[test]
    fn many_uids_p50_is_judged_against_one_uid_stock_reuse() {
        let mut r = Results::new();
        r.insert((Setup::StockFresh, Uids::One, 8), done(100.0, 0.005));
        r.insert((Setup::StockReuse, Uids::One, 8), done(800.0, 0.001));
        r.insert((Setup::Foreman, Uids::One, 8), done(900.0, 0.0011));
        r.insert((Setup::StockFresh, Uids::Many, 8), done(100.0, 0.005));
        r.insert(
            (Setup::StockReuse, Uids::Many, 8),
            Outcome::Fails("u1: imap: connection closed by peer".into()),
        );
        r.insert((Setup::Foreman, Uids::Many, 8), done(300.0, 0.002));
        let one = lines(&r, Uids::One, 8);
        assert_eq!(one[0].verdict(), Some(true)); // 9x fresh
        assert_eq!(one[1].verdict(), Some(true)); // 1.1x reuse
        assert_eq!(one[6].verdict(), Some(true)); // no cross-user process
        let many = lines(&r, Uids::Many, 8);
        assert_eq!(many[0].verdict(), Some(false)); // 3x fresh
        assert_eq!(many[1].verdict(), Some(false)); // 2x one-uid reuse
        assert_eq!(many[1].cells()[2], "fails");
        assert_eq!(many[1].cells()[5], "2.00x*");
        let opts = ReuseOptions {
            users: vec![8],
            ..ReuseOptions::new("foreman".into(), false)
        };
        let text = render(&opts, &r);
        assert!(text.contains("targets met: 4 of 6"), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("one uid")).count(), 7);
        assert!(
            text.contains("stock reuse, many uids, 8 user(s): fails: u1:"),
            "{text}"
        );
    }
}
