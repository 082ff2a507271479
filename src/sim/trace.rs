//! Connection traces for the eviction simulation: a seeded generator of synthetic webmail and
//! JMAP load, and a small text format (committed under `fixtures/traces/`).
//!
//! Format: lines starting with `#` are comments; every other line is one connection,
//! `<start ms>\t<user>\t<duration ms>`, sorted by start. Users are names like `u17`.

use std::fmt::Write as _;

/// One connection of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    /// Start, ms since the trace's beginning.
    pub start: u64,
    /// User index (`u<user>` in the file).
    pub user: u32,
    /// How long the connection keeps its process busy, ms.
    pub duration: u64,
}

/// A trace: connections sorted by start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub name: String,
    pub conns: Vec<Conn>,
}

/// A trace file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trace line {line}: {reason}")]
pub struct TraceError {
    pub line: usize,
    pub reason: &'static str,
}

/// Which synthetic workload to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Webmail: sessions of minutes, a poll every 30–300 s (per user) opening a burst of 1–3
    /// parallel short connections, plus user actions in between.
    Webmail,
    /// JMAP: long sessions, single short connections at a per-user rate spread from one
    /// every 5 s to one every 10 min (push-triggered fetches).
    Jmap,
}

impl Workload {
    /// The file-name stem.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Webmail => "webmail",
            Workload::Jmap => "jmap",
        }
    }
}

/// The seeds of the committed traces.
pub const WEBMAIL_SEED: u64 = 0x5eed_0001;
pub const JMAP_SEED: u64 = 0x5eed_0002;

/// splitmix64: a tiny deterministic generator (no dependency, same numbers everywhere).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Log-uniform in [lo, hi].
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.unit() * (hi.ln() - lo.ln())).exp()
    }

    /// Exponential with this mean.
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

const MINUTE: f64 = 60_000.0;

/// Generates a trace; the same (workload, seed, users, horizon) always gives the same trace.
pub fn generate(workload: Workload, seed: u64, users: u32, horizon_ms: u64) -> Trace {
    let mut rng = Rng(seed);
    let mut conns = Vec::new();
    for user in 0..users {
        match workload {
            Workload::Webmail => webmail_user(&mut rng, user, horizon_ms, &mut conns),
            Workload::Jmap => jmap_user(&mut rng, user, horizon_ms, &mut conns),
        }
    }
    conns.sort_by_key(|c| (c.start, c.user, c.duration));
    Trace {
        name: workload.name().into(),
        conns,
    }
}

fn webmail_user(rng: &mut Rng, user: u32, horizon: u64, out: &mut Vec<Conn>) {
    let poll = [30_000.0, 60_000.0, 120_000.0, 300_000.0][rng.range(0, 3) as usize];
    let sessions = [1, 1, 1, 2, 2, 3][rng.range(0, 5) as usize];
    for _ in 0..sessions {
        let start = rng.range(0, horizon) as f64;
        let end = (start + rng.log_uniform(3.0 * MINUTE, 60.0 * MINUTE)).min(horizon as f64);
        // Polls.
        let mut t = start;
        while t < end {
            let n = rng.range(1, 3);
            burst(rng, user, t as u64, n, out);
            t += poll * (0.9 + 0.2 * rng.unit());
        }
        // User actions.
        let mut t = start + rng.exp(45_000.0);
        while t < end {
            let n = rng.range(1, 2);
            burst(rng, user, t as u64, n, out);
            t += rng.exp(45_000.0);
        }
    }
}

fn burst(rng: &mut Rng, user: u32, t: u64, n: u64, out: &mut Vec<Conn>) {
    for _ in 0..n {
        out.push(Conn {
            start: t + rng.range(0, 40),
            user,
            duration: rng.range(30, 300),
        });
    }
}

fn jmap_user(rng: &mut Rng, user: u32, horizon: u64, out: &mut Vec<Conn>) {
    let mean_gap = rng.log_uniform(5_000.0, 600_000.0);
    let start = rng.range(0, horizon / 2) as f64;
    let end = (start + rng.log_uniform(30.0 * MINUTE, 120.0 * MINUTE)).min(horizon as f64);
    let mut t = start;
    while t < end {
        out.push(Conn {
            start: t as u64,
            user,
            duration: rng.range(20, 150),
        });
        t += rng.exp(mean_gap).max(200.0);
    }
}

/// The committed traces, as the generator makes them.
pub fn standard_traces() -> Vec<Trace> {
    vec![
        generate(Workload::Webmail, WEBMAIL_SEED, 120, 3_600_000),
        generate(Workload::Jmap, JMAP_SEED, 150, 3_600_000),
    ]
}

/// The text form of a trace.
pub fn render(trace: &Trace, comment: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# foreman eviction trace v1: {}", trace.name);
    for line in comment.lines() {
        let _ = writeln!(s, "# {line}");
    }
    for c in &trace.conns {
        let _ = writeln!(s, "{}\tu{}\t{}", c.start, c.user, c.duration);
    }
    s
}

/// Parses the text form.
pub fn parse(name: &str, text: &str) -> Result<Trace, TraceError> {
    let mut conns = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let err = |reason| TraceError {
            line: i + 1,
            reason,
        };
        let mut f = line.split('\t');
        let start = f
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(err("bad start"))?;
        let user = f
            .next()
            .and_then(|s| s.strip_prefix('u'))
            .and_then(|s| s.parse().ok())
            .ok_or(err("bad user"))?;
        let duration = f
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(err("bad duration"))?;
        if f.next().is_some() {
            return Err(err("extra field"));
        }
        if conns.last().is_some_and(|c: &Conn| c.start > start) {
            return Err(err("not sorted by start"));
        }
        conns.push(Conn {
            start,
            user,
            duration,
        });
    }
    Ok(Trace {
        name: name.into(),
        conns,
    })
}
