//! Recording scenarios of real traffic: a stock Dovecot 2.3 ([`crate::stock`]) whose anvil
//! service is `foreman conformance record-proxy` ([`super::proxy`]), driven by real IMAP/POP3
//! clients, doveadm, signals to the master and its children. The raw capture is turned into a
//! corpus transcript by [`super::proxy::finish`].
//!
//! Between steps the driver waits until the capture has been quiet for [`SETTLE`]: this is a
//! one-off recording whose result is reviewed, so a quiet period is enough; replays never
//! rely on it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::transcript::Transcript;
use crate::stock::StockDovecot;

/// How long the raw capture must stay unchanged before a step counts as finished.
pub const SETTLE: Duration = Duration::from_millis(400);

/// A running instance under recording.
pub struct Ctx {
    pub dovecot: StockDovecot,
    pub raw: PathBuf,
}

impl Ctx {
    /// Waits until the capture has not grown for [`SETTLE`] (at most 10 s).
    pub fn settle(&self) {
        let end = Instant::now() + Duration::from_secs(10);
        let mut last = (raw_len(&self.raw), Instant::now());
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
            let n = raw_len(&self.raw);
            if n != last.0 {
                last = (n, Instant::now());
            } else if last.1.elapsed() >= SETTLE {
                return;
            }
        }
    }

    /// Waits until the capture contains `needle` at least `count` times.
    pub fn wait_raw(&self, needle: &str, count: usize) -> anyhow::Result<()> {
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            let text = std::fs::read_to_string(&self.raw).unwrap_or_default();
            if text.matches(needle).count() >= count {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "the capture never showed {needle:?} {count} time(s); dovecot log:\n{}",
            self.dovecot.log_tail(20)
        )
    }

    fn master_pid(&self) -> anyhow::Result<u32> {
        self.dovecot.pid().context("dovecot is not running")
    }

    /// Pids of the live children of `parent` whose kernel command name is `comm`.
    pub fn children(&self, parent: u32, comm: &str) -> Vec<u32> {
        crate::stock::procs::children_of(parent)
            .into_iter()
            .filter(|p| p.comm == comm)
            .map(|p| p.pid)
            .collect()
    }

    /// The single mail process of service `comm` (imap, pop3).
    pub fn mail_process(&self, comm: &str) -> anyhow::Result<u32> {
        let pids = self.children(self.master_pid()?, comm);
        match pids.as_slice() {
            [p] => Ok(*p),
            other => bail!("expected one {comm} process, found {other:?}"),
        }
    }

    /// The stock anvil behind the current proxy.
    pub fn stock_anvil(&self) -> anyhow::Result<u32> {
        let proxies = self.children(self.master_pid()?, "foreman");
        let [proxy] = proxies.as_slice() else {
            bail!("expected one proxy, found {proxies:?}")
        };
        let anvils = self.children(*proxy, "anvil");
        let [anvil] = anvils.as_slice() else {
            bail!("expected one stock anvil, found {anvils:?}")
        };
        Ok(*anvil)
    }

    pub fn signal(&self, pid: u32, sig: nix::sys::signal::Signal) -> anyhow::Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
            .with_context(|| format!("kill {pid}"))
    }

    /// Runs doveadm and returns its stdout.
    pub fn doveadm(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.dovecot.doveadm(args)?;
        self.settle();
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn raw_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// A scenario of real traffic.
pub struct LiveScenario {
    pub name: &'static str,
    pub about: &'static str,
    /// `mail_max_userip_connections`, when the scenario needs a small one.
    pub userip_limit: Option<u32>,
    pub run: fn(&mut Ctx) -> anyhow::Result<()>,
}

/// Records one scenario: starts stock Dovecot with the proxy as anvil, runs it, stops
/// Dovecot, and returns the finished transcript.
pub fn record(s: &LiveScenario, foreman: &Path) -> anyhow::Result<Transcript> {
    let work = tempfile::Builder::new()
        .prefix("foreman-live-record-")
        .tempdir()?;
    let raw = work.path().join("anvil.raw");
    let raw_s = raw.to_str().context("non-UTF-8 temp path")?.to_string();
    let foreman_s = foreman
        .to_str()
        .context("non-UTF-8 foreman path")?
        .to_string();
    let mut b = StockDovecot::builder()
        .custom_anvil(
            &foreman_s,
            &["conformance", "record-proxy", "--out", &raw_s],
        )
        .user("alice", "secret")
        .user("bob", "secret");
    if let Some(n) = s.userip_limit {
        b = b.mail_max_userip_connections(n);
    }
    let dovecot = b
        .start()
        .with_context(|| format!("starting stock dovecot for {}", s.name))?;
    let mut ctx = Ctx { dovecot, raw };
    ctx.wait_raw("master-pipe client->anvil VERSION", 1)?;
    ctx.wait_raw("shared-pipe client->anvil VERSION", 1)?;
    ctx.settle();
    (s.run)(&mut ctx).with_context(|| {
        format!(
            "scenario {}; dovecot log:\n{}",
            s.name,
            ctx.dovecot.log_tail(30)
        )
    })?;
    ctx.settle();
    ctx.dovecot.stop()?;
    ctx.wait_raw("- process exit", count_starts(&ctx.raw))?;
    ctx.settle();
    let text = std::fs::read_to_string(&ctx.raw)?;
    let parsed = Transcript::parse(&text).context("parsing the raw capture")?;
    let mut comments = vec![
        format!("scenario: {}", s.name),
        "recorded from stock Dovecot 2.3.19.1 through `foreman conformance record-proxy`"
            .to_string(),
    ];
    comments.extend(s.about.lines().map(str::to_string));
    Ok(super::proxy::finish(&parsed, comments))
}

fn count_starts(raw: &Path) -> usize {
    std::fs::read_to_string(raw)
        .map(|t| t.matches("- process start").count())
        .unwrap_or(1)
}
