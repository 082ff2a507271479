//! Cost of `CLAIM` (and `EVICT`) on the process registry with many processes, without the
//! server: the pure [`Registry`] is filled with `PROCS` processes of one service and each
//! operation is timed over `N` repetitions that leave the registry as they found it.
//!
//! ```text
//! cargo run --release --example registry_claim [PROCS] [N]
//! ```
//!
//! The pool: half the processes idle and bound to users (two per user), a quarter busy
//! (bound), a quarter fresh spares born as root. Cases, each a CLAIM plus the RELEASE that
//! undoes it:
//! - `reuse`: a user with idle processes (hit);
//! - `fresh`: a new user gets a spare (`RELEASE unused` unbinds it again);
//! - `miss`: a user with busy processes only, uid-restricted pool without spares;
//!
//! and `evict`: `EVICT` + `PROC-DEATH` + `PROC-BIRTH` + claim/release to rebind a
//! replacement for the victim's user. Prints ns per operation (wall clock; no assertion on
//! it anywhere).

use std::time::Instant;

use foreman::anvil_compat::registry::{Outcome, Policy, Registry};
use foreman::wire::anvil::Pid;

const S: &[u8] = b"imap";

fn pid(n: u32) -> Pid {
    Pid::new(n).unwrap()
}

/// CLAIM for `user` (which must get a process), then RELEASE with `outcome`; the pid.
fn claim_release(r: &mut Registry, now: u64, user: &[u8], uid: u32, outcome: Outcome) -> Pid {
    let c = r.claim(now, S, user, uid).unwrap().unwrap();
    r.release(now, c.pid, c.token, outcome).unwrap();
    c.pid
}

fn main() {
    let mut args = std::env::args().skip(1);
    let procs: u32 = args.next().map_or(10_000, |a| a.parse().unwrap());
    let n: u32 = args.next().map_or(100_000, |a| a.parse().unwrap());
    let mut r = Registry::new(Policy::Predictive, 30_000);
    let now = 1_000_000u64;
    let idle_users = procs / 4; // two idle processes each
    let busy = procs / 4;
    let spares = procs - 2 * idle_users - busy;
    let mut next = 1000u32;
    for u in 0..idle_users {
        let user = format!("idle{u}");
        for _ in 0..2 {
            r.birth(now, S, pid(next), 0);
            next += 1;
        }
        for k in 0..2u64 {
            claim_release(
                &mut r,
                now + k,
                user.as_bytes(),
                10_000 + u,
                Outcome::Served,
            );
        }
        for p in [next - 2, next - 1] {
            r.set_idle(pid(p), now + u64::from(p)).unwrap();
        }
    }
    for b in 0..busy {
        r.birth(now, S, pid(next), 0);
        let user = format!("busy{b}");
        claim_release(&mut r, now, user.as_bytes(), 50_000 + b, Outcome::Served);
        next += 1;
    }
    for _ in 0..spares {
        r.birth(now, S, pid(next), 0);
        next += 1;
    }
    let users: Vec<Vec<u8>> = (0..idle_users)
        .map(|u| format!("idle{u}").into_bytes())
        .collect();
    let busy_users: Vec<Vec<u8>> = (0..busy).map(|b| format!("busy{b}").into_bytes()).collect();
    let t = now + 10_000;

    let time = |name: &str, r: &mut Registry, op: &mut dyn FnMut(&mut Registry, u32)| {
        let start = Instant::now();
        for i in 0..n {
            op(r, i);
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
        println!("{name:6} {ns:9.0} ns/op  ({procs} processes)");
    };

    time("reuse", &mut r, &mut |r, i| {
        let u = i % idle_users;
        claim_release(r, t, &users[u as usize], 10_000 + u, Outcome::Unused);
    });
    time("fresh", &mut r, &mut |r, i| {
        claim_release(r, t, b"newcomer", 90_000 + i % 7, Outcome::Unused);
    });
    // Misses: users whose processes are all busy, once every spare is taken (claimed for
    // one user and held).
    let mut held = Vec::new();
    while let Some(c) = r.claim(t, S, b"hoarder", 99_999).unwrap() {
        held.push(c);
    }
    time("miss", &mut r, &mut |r, i| {
        let b = i % busy;
        let got = r.claim(t, S, &busy_users[b as usize], 50_000 + b).unwrap();
        assert!(got.is_none());
    });
    for c in held {
        r.release(t, c.pid, c.token, Outcome::Unused).unwrap();
    }
    let mut next_pid = next;
    time("evict", &mut r, &mut |r, i| {
        let victim = r.evict(t, S).unwrap();
        r.death(victim);
        r.birth(t, S, pid(next_pid), 0);
        next_pid += 1;
        let u = i % idle_users;
        let p = claim_release(r, t, &users[u as usize], 10_000 + u, Outcome::Served);
        r.set_idle(p, t).unwrap();
    });
}
