//! The eviction simulation: one reuse pool of at most `limit` processes (the service's
//! process_limit), every user with its own uid, driven by a trace through the real
//! [`Registry`] exactly as the dispatcher and the master will drive it:
//!
//! 1. connections that ended before the next arrival report their process idle;
//! 2. the arrival `CLAIM`s: a *hit* is an idle process of the same user (`reuse`);
//! 3. otherwise a new process is needed: spawned while the pool is below the limit, else the
//!    master `EVICT`s a victim chosen by the policy, reports its death and spawns;
//! 4. if every process is busy the connection is *blocked* (it would queue); a miss.
//!
//! Hit rate = hits / connections.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;

use super::trace::Trace;
use crate::anvil_compat::registry::{ClaimKind, Outcome, Policy, Registry};
use crate::wire::anvil::Pid;

const SERVICE: &[u8] = b"imap";

/// The policies compared, in table order.
pub const POLICIES: [Policy; 3] = [Policy::LongestIdle, Policy::LruByUser, Policy::Predictive];

/// The figures of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimResult {
    pub connections: u64,
    pub hits: u64,
    pub spawns: u64,
    pub evictions: u64,
    pub blocked: u64,
}

impl SimResult {
    /// Hits per connection, in percent.
    pub fn hit_rate(&self) -> f64 {
        if self.connections == 0 {
            0.0
        } else {
            100.0 * self.hits as f64 / self.connections as f64
        }
    }
}

/// Runs `trace` through a registry with `policy` and a pool of at most `limit` processes.
pub fn simulate(trace: &Trace, policy: Policy, limit: usize) -> SimResult {
    let mut reg = Registry::new(policy, 30_000);
    let mut ends: BinaryHeap<Reverse<(u64, Pid)>> = BinaryHeap::new();
    let mut next_pid = 100u32;
    let mut r = SimResult {
        connections: 0,
        hits: 0,
        spawns: 0,
        evictions: 0,
        blocked: 0,
    };
    for c in &trace.conns {
        let now = c.start;
        while let Some(&Reverse((end, pid))) = ends.peek() {
            if end > now {
                break;
            }
            ends.pop();
            reg.set_idle(pid, end)
                .expect("a busy process is registered");
        }
        r.connections += 1;
        let user = format!("u{}", c.user);
        let uid = 1000 + c.user;
        let mut claimed = reg
            .claim(now, SERVICE, user.as_bytes(), uid)
            .expect("valid");
        if claimed.is_none() {
            let room = if reg.count(SERVICE) < limit {
                true
            } else if let Some(victim) = reg.evict(now, SERVICE) {
                reg.death(victim);
                r.evictions += 1;
                true
            } else {
                false
            };
            if room {
                let pid = Pid::new(next_pid).expect("small");
                next_pid += 1;
                reg.birth(now, SERVICE, pid, 0);
                r.spawns += 1;
                claimed = reg
                    .claim(now, SERVICE, user.as_bytes(), uid)
                    .expect("valid");
            }
        }
        match claimed {
            Some(got) => {
                if got.kind == ClaimKind::Reuse {
                    r.hits += 1;
                }
                reg.release(now, got.pid, got.token, Outcome::Served)
                    .expect("own claim");
                ends.push(Reverse((now + c.duration, got.pid)));
            }
            None => r.blocked += 1,
        }
    }
    r
}

/// The short name of a policy in tables.
pub fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::LongestIdle => "longest-idle",
        Policy::LruByUser => "lru-by-user",
        Policy::Predictive => "predictive",
    }
}

/// Runs every policy at every limit on every trace and renders a markdown table:
/// hit rate % (evictions) per cell.
pub fn table(traces: &[Trace], limits: &[usize]) -> String {
    let mut s = String::new();
    for trace in traces {
        let users = trace
            .conns
            .iter()
            .map(|c| c.user)
            .collect::<std::collections::HashSet<_>>()
            .len();
        let ceiling = simulate(trace, Policy::LongestIdle, usize::MAX);
        let _ = writeln!(
            s,
            "\n{}: {} connections, {} users; hit rate with no process limit: {:.1} % \
             (at most {} processes)\n",
            trace.name,
            trace.conns.len(),
            users,
            ceiling.hit_rate(),
            ceiling.spawns
        );
        let _ = write!(s, "| process_limit |");
        for p in POLICIES {
            let _ = write!(s, " {} hit % (evictions) |", policy_name(p));
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "|---:|{}", "---:|".repeat(POLICIES.len()));
        for &limit in limits {
            let _ = write!(s, "| {limit} |");
            for p in POLICIES {
                let r = simulate(trace, p, limit);
                let _ = write!(s, " {:.1} ({}) |", r.hit_rate(), r.evictions);
            }
            let _ = writeln!(s);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::trace::{self, generate, Workload};
    use super::*;

    fn small() -> Trace {
        generate(Workload::Webmail, 7, 30, 900_000)
    }

    #[test]
    fn deterministic() {
        let t = small();
        assert_eq!(t, small());
        for p in POLICIES {
            let a = simulate(&t, p, 8);
            assert_eq!(a, simulate(&t, p, 8));
            assert_eq!(a.connections, t.conns.len() as u64);
            assert!(a.hits + a.spawns + a.blocked >= a.connections);
        }
    }

    #[test]
    fn no_eviction_without_pressure() {
        let t = small();
        // More room than users: every miss is a user's first connection or a parallel one.
        for p in POLICIES {
            let r = simulate(&t, p, 1000);
            assert_eq!(r.evictions, 0);
            assert_eq!(r.blocked, 0);
            assert!(r.hit_rate() > 50.0, "{r:?}");
        }
    }

    #[test]
    fn table_reports_every_policy() {
        let s = table(&[small()], &[4, 8]);
        for p in POLICIES {
            assert!(s.contains(policy_name(p)), "{s}");
        }
        assert_eq!(s.matches("\n| 8 |").count(), 1);
    }

    #[test]
    fn committed_traces_are_the_generator_output() {
        for t in trace::standard_traces() {
            let path = format!(
                "{}/fixtures/traces/{}.trace",
                env!("CARGO_MANIFEST_DIR"),
                t.name
            );
            let text = std::fs::read_to_string(&path).expect("committed trace");
            assert_eq!(trace::parse(&t.name, &text).unwrap(), t, "{path}");
        }
    }

    /// The figures docs/eviction.md quotes for process_limit 32 (the predictive policy's hit
    /// rate is reported; these pin it, they do not assert which policy wins in general).
    #[test]
    fn committed_trace_figures_at_32() {
        let want = [
            ("webmail", ["29.1", "28.5", "36.7"]),
            ("jmap", ["57.3", "57.3", "68.5"]),
        ];
        for (t, (name, rates)) in trace::standard_traces().iter().zip(want) {
            assert_eq!(t.name, name);
            for (p, rate) in POLICIES.into_iter().zip(rates) {
                let got = format!("{:.1}", simulate(t, p, 32).hit_rate());
                assert_eq!(got, rate, "{name} {}", policy_name(p));
            }
        }
    }

    #[test]
    fn parse_rejects_bad_lines() {
        assert!(trace::parse("x", "1\tu1\t5\n0\tu1\t5\n").is_err());
        assert!(trace::parse("x", "1\tv1\t5\n").is_err());
        assert!(trace::parse("x", "1\tu1\n").is_err());
        assert_eq!(trace::parse("x", "# c\n1\tu1\t5\n").unwrap().conns.len(), 1);
    }
}
