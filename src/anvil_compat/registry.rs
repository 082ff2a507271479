//! The process registry of Foreman's anvil extensions (`docs/anvil-extensions.md`): which
//! worker processes exist per service, whom each is bound to, their state as the master
//! reports it, and atomic claims. A synchronous state machine with time passed in; the
//! session (later slice) maps the extension commands of [`crate::wire::anvil_ext`] onto it.
//!
//! # Rules (the invariants the tests check)
//!
//! - A pid holds at most one claim at a time: a dispatch claim (with a token and an expiry)
//!   or an eviction reservation. [`Registry::claim`] and [`Registry::evict`] never return a
//!   process that holds an active claim.
//! - A process is bound to one (user, uid) the first time it is claimed for a user, and from
//!   then on is only ever returned to claims for that same user and uid. The binding is
//!   undone only by a release with [`Outcome::Unused`] of the claim that made it.
//! - A fresh process whose birth uid is not 0 (it already runs as that uid) is only bound to
//!   claims with that uid.
//! - [`Registry::evict`] only picks idle processes with no active claim; the reserved
//!   process is never returned to a claim again. [`Registry::death`] removes the process,
//!   its claim and its binding.
//! - Claims expire `claim_ttl` after they were made (a claim is active while `now < expires`);
//!   an expired claim counts as a release with [`Outcome::Failed`] (binding kept).
//!
//! Arrivals (claims) per user are remembered for the [`Policy::Predictive`] eviction policy.

use std::collections::HashMap;

use bstr::{BStr, BString, ByteSlice};

use super::UnixMillis;
use crate::wire::anvil::Pid;

/// Default claim lifetime: longer than any sane handoff (imap-hibernate waits 30 s).
pub const DEFAULT_CLAIM_TTL: UnixMillis = 30_000;

/// What the master last reported about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// Spawned, has served nobody yet.
    Fresh,
    /// No clients since this time.
    Idle { since: UnixMillis },
    /// Has clients since this time.
    Busy { since: UnixMillis },
}

/// A claim on a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Reserved for one dispatcher until released or `expires`.
    Dispatch {
        token: u64,
        expires: UnixMillis,
        /// This claim bound a fresh process (undone by [`Outcome::Unused`]).
        bound_by_claim: bool,
    },
    /// Reserved for the master to kill; lasts until the death report.
    Evict,
}

/// The (user, uid) a process serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub user: BString,
    pub uid: u32,
}

/// One registered process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: Pid,
    pub service: BString,
    /// The uid it was spawned as; 0 means root (may still be bound to any non-zero uid).
    pub birth_uid: u32,
    pub born: UnixMillis,
    pub binding: Option<Binding>,
    pub activity: Activity,
    claim: Option<Claim>,
}

impl Process {
    /// The claim active at `now` (expired dispatch claims are no claim).
    pub fn claim_at(&self, now: UnixMillis) -> Option<Claim> {
        match self.claim {
            Some(Claim::Dispatch { expires, .. }) if expires <= now => None,
            other => other,
        }
    }
}

/// Whether a claim reuses a process of the user or binds a fresh one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    Reuse,
    Fresh,
}

/// A successful claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub pid: Pid,
    pub token: u64,
    pub kind: ClaimKind,
}

/// How a dispatcher's use of a claimed process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The handoff was accepted (`+`): the process now serves the user (busy).
    Served,
    /// Nothing was sent to the process: everything is as before the claim (a binding the
    /// claim made is undone).
    Unused,
    /// Something may have reached the process: the binding stays, the state is unchanged.
    Failed,
}

/// Which idle process [`Registry::evict`] picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The process idle the longest.
    LongestIdle,
    /// A process of the user whose latest arrival (claim) is oldest; ties by longest idle.
    LruByUser,
    /// The process whose user is least likely to return soon, from each user's learnt
    /// reconnect interval (see [`Registry::expected_return_of`]).
    Predictive,
}

/// Errors of the registry; each is logged by the caller, none closes a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("unknown pid {0}")]
    UnknownPid(Pid),
    #[error("invalid claim: empty user or uid 0")]
    InvalidClaim,
    #[error("release of pid {pid} with a token that does not hold it ({token})")]
    StaleToken { pid: Pid, token: u64 },
    #[error("pid {0} cannot be evicted (claimed, busy or fresh)")]
    NotEvictable(Pid),
}

/// What the registry remembers of a user's arrivals (per service).
#[derive(Debug, Clone, Copy, PartialEq)]
struct UserHistory {
    last_arrival: UnixMillis,
    /// Exponentially weighted mean reconnect interval, ms; `None` after one arrival.
    interval: Option<f64>,
}

/// Weight of the newest interval in the running mean.
const EWMA_ALPHA: f64 = 0.3;
/// Arrivals of one user closer together than this (ms) are one visit: the gap is not a
/// reconnect interval.
const VISIT_GAP: UnixMillis = 1_000;
/// A user silent for this many mean intervals is taken to have left.
const GONE_FACTOR: f64 = 4.0;

/// The registry. See the module docs for its rules.
#[derive(Debug, Clone)]
pub struct Registry {
    procs: HashMap<Pid, Process>,
    /// service -> user -> arrivals.
    history: HashMap<BString, HashMap<BString, UserHistory>>,
    next_token: u64,
    claim_ttl: UnixMillis,
    policy: Policy,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(Policy::Predictive, DEFAULT_CLAIM_TTL)
    }
}

impl Registry {
    /// An empty registry.
    pub fn new(policy: Policy, claim_ttl: UnixMillis) -> Registry {
        Registry {
            procs: HashMap::new(),
            history: HashMap::new(),
            next_token: 1,
            claim_ttl,
            policy,
        }
    }

    /// The eviction policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// `PROC-BIRTH`: a new fresh process. A pid already registered (its death report was
    /// lost) is replaced; returns true then.
    pub fn birth(&mut self, now: UnixMillis, service: &[u8], pid: Pid, uid: u32) -> bool {
        let process = Process {
            pid,
            service: service.into(),
            birth_uid: uid,
            born: now,
            binding: None,
            activity: Activity::Fresh,
            claim: None,
        };
        self.procs.insert(pid, process).is_some()
    }

    /// `PROC-IDLE`: the process has no clients since `since`. A fresh process that never
    /// served anybody stays fresh.
    pub fn set_idle(&mut self, pid: Pid, since: UnixMillis) -> Result<(), RegistryError> {
        let p = self
            .procs
            .get_mut(&pid)
            .ok_or(RegistryError::UnknownPid(pid))?;
        if p.binding.is_some() || p.activity != Activity::Fresh {
            p.activity = Activity::Idle { since };
        }
        Ok(())
    }

    /// `PROC-BUSY`: the process has clients since `since`.
    pub fn set_busy(&mut self, pid: Pid, since: UnixMillis) -> Result<(), RegistryError> {
        let p = self
            .procs
            .get_mut(&pid)
            .ok_or(RegistryError::UnknownPid(pid))?;
        p.activity = Activity::Busy { since };
        Ok(())
    }

    /// `PROC-DEATH`: forgets the process, its claim and its binding. False if unknown.
    pub fn death(&mut self, pid: Pid) -> bool {
        self.procs.remove(&pid).is_some()
    }

    /// `CLAIM`: reserves an idle process bound to (user, uid) in `service`, else binds a fresh
    /// one, else `None`. Records the arrival of the user.
    pub fn claim(
        &mut self,
        now: UnixMillis,
        service: &[u8],
        user: &[u8],
        uid: u32,
    ) -> Result<Option<Claimed>, RegistryError> {
        if user.is_empty() || uid == 0 {
            return Err(RegistryError::InvalidClaim);
        }
        self.record_arrival(now, service, user);
        let usable = |p: &&Process| p.service == service && p.claim_at(now).is_none();
        // A reuse hit: the most recently idled process of this user (warmest, and it leaves
        // the others to age towards eviction).
        let reuse = self
            .procs
            .values()
            .filter(usable)
            .filter(|p| {
                p.binding
                    .as_ref()
                    .is_some_and(|b| b.user == user && b.uid == uid)
                    && matches!(p.activity, Activity::Idle { .. })
            })
            .max_by_key(|p| (idle_since(p), std::cmp::Reverse(p.pid)))
            .map(|p| (p.pid, ClaimKind::Reuse));
        let chosen = reuse.or_else(|| {
            self.procs
                .values()
                .filter(usable)
                .filter(|p| {
                    p.binding.is_none()
                        && p.activity == Activity::Fresh
                        && (p.birth_uid == 0 || p.birth_uid == uid)
                })
                .min_by_key(|p| (p.born, p.pid))
                .map(|p| (p.pid, ClaimKind::Fresh))
        });
        let Some((pid, kind)) = chosen else {
            return Ok(None);
        };
        let token = self.next_token;
        self.next_token += 1;
        let p = self.procs.get_mut(&pid).expect("chosen from the table");
        let bound_by_claim = p.binding.is_none();
        if bound_by_claim {
            p.binding = Some(Binding {
                user: user.into(),
                uid,
            });
        }
        p.claim = Some(Claim::Dispatch {
            token,
            expires: now.saturating_add(self.claim_ttl),
            bound_by_claim,
        });
        Ok(Some(Claimed { pid, token, kind }))
    }

    /// `RELEASE`: ends the claim `token` on `pid`.
    pub fn release(
        &mut self,
        now: UnixMillis,
        pid: Pid,
        token: u64,
        outcome: Outcome,
    ) -> Result<(), RegistryError> {
        let p = self
            .procs
            .get_mut(&pid)
            .ok_or(RegistryError::UnknownPid(pid))?;
        let bound_by_claim = match p.claim_at(now) {
            Some(Claim::Dispatch {
                token: held,
                bound_by_claim,
                ..
            }) if held == token => bound_by_claim,
            _ => return Err(RegistryError::StaleToken { pid, token }),
        };
        p.claim = None;
        match outcome {
            Outcome::Served => p.activity = Activity::Busy { since: now },
            Outcome::Unused => {
                if bound_by_claim {
                    p.binding = None;
                }
            }
            Outcome::Failed => {}
        }
        Ok(())
    }

    /// `EVICT <service>`: picks an idle, unclaimed process by the policy and reserves it for
    /// the master to kill (it is never claimed again; its death report removes it).
    pub fn evict(&mut self, now: UnixMillis, service: &[u8]) -> Option<Pid> {
        let pid = self.pick_victim(now, service)?;
        self.procs.get_mut(&pid).expect("picked").claim = Some(Claim::Evict);
        Some(pid)
    }

    /// `EVICT <service> <pid>`: reserves this process for killing, if it is idle (or fresh)
    /// and unclaimed.
    pub fn evict_pid(&mut self, now: UnixMillis, pid: Pid) -> Result<(), RegistryError> {
        let p = self
            .procs
            .get_mut(&pid)
            .ok_or(RegistryError::UnknownPid(pid))?;
        if p.claim_at(now).is_some() || matches!(p.activity, Activity::Busy { .. }) {
            return Err(RegistryError::NotEvictable(pid));
        }
        p.claim = Some(Claim::Evict);
        Ok(())
    }

    /// The idle, unclaimed processes of `service`, in the order the policy would evict
    /// them (first = next victim). Fresh processes are never listed: they are the spares a
    /// new user gets, evicting one gains no room.
    pub fn evictable(&self, now: UnixMillis, service: &[u8]) -> Vec<Pid> {
        let mut ranked = self.ranked(now, service);
        ranked.sort_unstable();
        ranked.into_iter().map(|(_, pid)| pid).collect()
    }

    fn pick_victim(&self, now: UnixMillis, service: &[u8]) -> Option<Pid> {
        self.ranked(now, service)
            .into_iter()
            .min()
            .map(|(_, pid)| pid)
    }

    /// Every eviction candidate with its order key (smaller is evicted first; ties by pid).
    fn ranked(&self, now: UnixMillis, service: &[u8]) -> Vec<(Score, Pid)> {
        let users = self.history.get(service);
        let prior = self.mean_interval();
        self.procs
            .values()
            .filter(|p| p.service == service && p.claim_at(now).is_none())
            .filter(|p| matches!(p.activity, Activity::Idle { .. }))
            .map(|p| {
                let since = idle_since(p);
                let history = p
                    .binding
                    .as_ref()
                    .and_then(|b| users?.get(b.user.as_slice()));
                let key = match self.policy {
                    Policy::LongestIdle => 0,
                    Policy::LruByUser => history.map_or(0, |h| h.last_arrival),
                    // Evict first the process whose user is expected back last; ties (users
                    // taken to have left, expected back "never") go to the longest idle.
                    Policy::Predictive => u64::MAX - expected_return(now, history, prior),
                };
                (Score(key, since), p.pid)
            })
            .collect()
    }

    /// When the user of process `pid` is expected to connect next (absolute ms; `u64::MAX`
    /// for "never": no history, or silent for more than [`GONE_FACTOR`] mean intervals).
    pub fn expected_return_of(&self, now: UnixMillis, pid: Pid) -> UnixMillis {
        let Some(p) = self.procs.get(&pid) else {
            return u64::MAX;
        };
        let history = p.binding.as_ref().and_then(|b| {
            self.history
                .get(p.service.as_slice())?
                .get(b.user.as_slice())
        });
        expected_return(now, history, self.mean_interval())
    }

    /// The mean of the users' learnt intervals (the prior for users seen once), 60 s if none.
    fn mean_interval(&self) -> f64 {
        let (sum, n) = self
            .history
            .values()
            .flat_map(|users| users.values())
            .filter_map(|h| h.interval)
            .fold((0.0, 0u32), |(s, n), i| (s + i, n + 1));
        if n == 0 {
            60_000.0
        } else {
            sum / f64::from(n)
        }
    }

    fn record_arrival(&mut self, now: UnixMillis, service: &[u8], user: &[u8]) {
        let users = match self.history.get_mut(service) {
            Some(users) => users,
            None => self.history.entry(service.into()).or_default(),
        };
        match users.get_mut(user) {
            // Arrivals closer than this are one visit (a client's parallel connections).
            Some(h) if now.saturating_sub(h.last_arrival) < VISIT_GAP => h.last_arrival = now,
            Some(h) => {
                let gap = now.saturating_sub(h.last_arrival) as f64;
                h.interval = Some(match h.interval {
                    None => gap,
                    Some(mean) => mean + EWMA_ALPHA * (gap - mean),
                });
                h.last_arrival = now;
            }
            None => {
                users.insert(
                    user.into(),
                    UserHistory {
                        last_arrival: now,
                        interval: None,
                    },
                );
            }
        }
    }

    /// Forgets the arrival history of users not seen since `cutoff` (memory bound; the shell
    /// calls it now and then).
    pub fn forget_history_before(&mut self, cutoff: UnixMillis) {
        for users in self.history.values_mut() {
            users.retain(|_, h| h.last_arrival >= cutoff);
        }
        self.history.retain(|_, users| !users.is_empty());
    }

    /// One process.
    pub fn get(&self, pid: Pid) -> Option<&Process> {
        self.procs.get(&pid)
    }

    /// `PROC-LIST`: the processes of `service` bound to `user`, by pid.
    pub fn list(&self, service: &[u8], user: &[u8]) -> Vec<&Process> {
        let mut v: Vec<&Process> = self
            .procs
            .values()
            .filter(|p| p.service == service && p.binding.as_ref().is_some_and(|b| b.user == user))
            .collect();
        v.sort_by_key(|p| p.pid);
        v
    }

    /// `PROC-DUMP`: every process, by service then pid.
    pub fn dump(&self) -> Vec<&Process> {
        let mut v: Vec<&Process> = self.procs.values().collect();
        v.sort_by(|a, b| a.service.cmp(&b.service).then(a.pid.cmp(&b.pid)));
        v
    }

    /// Number of processes of `service`.
    pub fn count(&self, service: &[u8]) -> usize {
        self.procs.values().filter(|p| p.service == service).count()
    }

    /// Drops expired claims (they are already inactive; this only frees the memory and makes
    /// dumps show them gone).
    pub fn expire(&mut self, now: UnixMillis) {
        for p in self.procs.values_mut() {
            if p.claim.is_some() && p.claim_at(now).is_none() {
                p.claim = None;
            }
        }
    }

    /// The user a process is bound to, for logs.
    pub fn user_of(&self, pid: Pid) -> Option<&BStr> {
        self.procs
            .get(&pid)?
            .binding
            .as_ref()
            .map(|b| b.user.as_bstr())
    }
}

/// When the process became idle; busy and fresh processes count as "now-ish" (never the
/// longest idle), 0 never happens for idle ones.
fn idle_since(p: &Process) -> UnixMillis {
    match p.activity {
        Activity::Idle { since } => since,
        _ => u64::MAX,
    }
}

/// When a user with this history is expected back (see [`Registry::expected_return_of`]).
fn expected_return(now: UnixMillis, history: Option<&UserHistory>, prior: f64) -> UnixMillis {
    let Some(h) = history else {
        return u64::MAX;
    };
    let interval = h.interval.unwrap_or(prior);
    let elapsed = now.saturating_sub(h.last_arrival) as f64;
    if elapsed > GONE_FACTOR * interval {
        return u64::MAX;
    }
    h.last_arrival.saturating_add(interval as u64).max(now)
}

/// Eviction order key (policy value, idle since); smaller first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Score(u64, UnixMillis);

#[cfg(test)]
mod tests;
