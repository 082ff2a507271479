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
//! - A process that reports a v1 `CONNECT` for a user ([`Registry::connect`]) is bound to
//!   that user too if it was unbound (it served the user through stock imap-login); with a
//!   birth uid of 0 its uid is unknown ([`Binding::uid`] `None`) until a `served` release
//!   of a claim of that user fixes it.
//!
//! Arrivals (claims) per user are remembered for the [`Policy::Predictive`] eviction policy;
//! [`Registry::upkeep`] (the shell calls it every second) drops expired claims and the
//! history of users the policy no longer looks at.
//!
//! # Indexes
//!
//! `CLAIM` must not scan thousands of processes. [`Index`] keeps, derived from the process
//! table: per (service, user) the bound pids; per (service, birth uid) the fresh, unbound,
//! unreserved processes ordered by (birth, pid); per service the idle pids and the count.
//! Every change of a process goes through one place ([`Registry::update`]), which takes the
//! process out of the indexes, changes it and puts it back, so the indexes cannot drift.
//! Which process a query picks is still decided by the same filters and orderings as a scan
//! of the whole table would (the `matches_the_naive_model` proptest compares the two).

use std::collections::BTreeSet;

use bstr::{BStr, BString, ByteSlice};
use hashbrown::HashMap;
use hashbrown::HashMap as IndexMap;

use super::UnixMillis;
use crate::wire::anvil::Pid;

/// Default claim lifetime: longer than any sane handoff (imap-hibernate waits 30 s).
pub const DEFAULT_CLAIM_TTL: UnixMillis = 30_000;

/// Arrival histories younger than this are always kept (the LRU policy orders by them).
pub const HISTORY_MIN_KEEP: UnixMillis = 3_600_000;
/// At most this many (service, user) arrival histories are kept; beyond it the oldest go.
pub const HISTORY_MAX_ENTRIES: usize = 100_000;

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
        /// The uid claimed for: a `served` release fixes an unknown binding uid to it.
        uid: u32,
        /// The process's state-report count when claimed: a `served` release that arrives
        /// after a newer report (the master and the dispatcher use separate connections,
        /// so a short session's `PROC-IDLE` can overtake the release) leaves the state alone.
        reports: u64,
    },
    /// Reserved for the master to kill; lasts until the death report.
    Evict,
}

/// The (user, uid) a process serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub user: BString,
    /// `None`: bound by a v1 `CONNECT` of a process born as root, whose uid the registry
    /// does not know; such a process is returned to claims of the same user (any uid), and
    /// the first `served` release sets the uid.
    pub uid: Option<u32>,
}

impl Binding {
    /// Whether a claim for (user, uid) may get a process with this binding.
    fn admits(&self, user: &[u8], uid: u32) -> bool {
        self.user == user && self.uid.is_none_or(|u| u == uid)
    }
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
    /// Until then no claim returns the process: a dispatcher found it busy or unresponsive
    /// (`RELEASE … busy`). Any state report from the master ends it early.
    suspect_until: UnixMillis,
    /// How many `PROC-IDLE`/`PROC-BUSY` reports arrived for the process.
    reports: u64,
}

impl Process {
    /// The claim active at `now` (expired dispatch claims are no claim).
    pub fn claim_at(&self, now: UnixMillis) -> Option<Claim> {
        match self.claim {
            Some(Claim::Dispatch { expires, .. }) if expires <= now => None,
            other => other,
        }
    }

    /// Whether a claim may return the process at `now`: no active claim and not suspected
    /// busy by a dispatcher.
    pub fn claimable_at(&self, now: UnixMillis) -> bool {
        self.claim_at(now).is_none() && now >= self.suspect_until
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
    /// Nothing was sent, but the process turned out busy or unresponsive (its socket refused
    /// the connection with EACCES, or it never greeted): as [`Outcome::Unused`], and no claim
    /// returns the process for `claim_ttl` or until the master's next state report for it.
    /// Without this, a hung process would be claimed for its user over and over. (Not a
    /// state change: a merely slow process whose status never changes must not stay "busy"
    /// forever, out of reach of claims and of eviction.)
    Busy,
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

/// What [`Registry::connect`] did with a v1 `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectBinding {
    /// The pid is not registered (not a reuse process), or the user is empty.
    NotRegistered,
    /// It was bound to this user already.
    Already,
    /// It was unbound and is now bound to the user.
    Bound,
    /// It is bound to another user: a reuse bug somewhere (the binding is kept).
    Conflict { bound_to: BString },
}

/// A dispatch claim [`Registry::upkeep`] found expired without a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredClaim {
    pub pid: Pid,
    pub token: u64,
    pub user: Option<BString>,
}

/// What one [`Registry::upkeep`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upkeep {
    pub expired: Vec<ExpiredClaim>,
    /// Arrival histories forgotten.
    pub forgotten: usize,
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
    ix: Index,
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
            ix: Index::default(),
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
            suspect_until: 0,
            reports: 0,
        };
        let replaced = self.death(pid);
        self.ix.add(&process);
        self.procs.insert(pid, process);
        replaced
    }

    /// Changes one process, keeping the indexes in step; `None` if the pid is unknown.
    fn update<R>(&mut self, pid: Pid, change: impl FnOnce(&mut Process) -> R) -> Option<R> {
        let p = self.procs.get_mut(&pid)?;
        self.ix.remove(p);
        let r = change(p);
        self.ix.add(p);
        Some(r)
    }

    /// Sets the claim of a known process. Only a reservation for eviction of an unbound
    /// fresh process changes an index (it stops being a spare), so the common case, a
    /// dispatch claim taken or ended, costs no index work.
    fn set_claim(&mut self, pid: Pid, claim: Option<Claim>) {
        let p = self.procs.get_mut(&pid).expect("a known pid");
        if Index::is_spare(p) == Index::is_spare_with(p, claim) {
            p.claim = claim;
        } else {
            self.ix.remove(p);
            p.claim = claim;
            self.ix.add(p);
        }
    }

    /// `PROC-IDLE`: the process has no clients since `since`. A fresh process that never
    /// served anybody stays fresh.
    pub fn set_idle(&mut self, pid: Pid, since: UnixMillis) -> Result<(), RegistryError> {
        self.update(pid, |p| {
            p.suspect_until = 0;
            p.reports += 1;
            if p.binding.is_some() || p.activity != Activity::Fresh {
                p.activity = Activity::Idle { since };
            }
        })
        .ok_or(RegistryError::UnknownPid(pid))
    }

    /// `PROC-BUSY`: the process has clients since `since`.
    pub fn set_busy(&mut self, pid: Pid, since: UnixMillis) -> Result<(), RegistryError> {
        if self
            .procs
            .get(&pid)
            .is_some_and(|p| p.claim == Some(Claim::Evict))
        {
            // It took a client instead of exiting (stock ignores the request when busy) and
            // the master has moved on to another victim: claimable again once idle.
            self.set_claim(pid, None);
        }
        self.update(pid, |p| {
            p.suspect_until = 0;
            p.reports += 1;
            p.activity = Activity::Busy { since };
        })
        .ok_or(RegistryError::UnknownPid(pid))
    }

    /// `PROC-DEATH`: forgets the process, its claim and its binding. False if unknown.
    pub fn death(&mut self, pid: Pid) -> bool {
        match self.procs.remove(&pid) {
            Some(p) => {
                self.ix.remove(&p);
                true
            }
            None => false,
        }
    }

    /// A v1 `CONNECT` of `pid` for `user` (from any connection): binds an unbound registered
    /// process to the user (it served them without a claim, through stock imap-login), with
    /// its birth uid, or an unknown uid when it was born as root. An active claim that bound
    /// the process counts as confirmed: `RELEASE … unused` no longer undoes the binding.
    pub fn connect(&mut self, pid: Pid, user: &[u8]) -> ConnectBinding {
        if user.is_empty() {
            return ConnectBinding::NotRegistered;
        }
        self.update(pid, |p| match &p.binding {
            Some(b) if b.user == user => {
                if let Some(Claim::Dispatch { bound_by_claim, .. }) = &mut p.claim {
                    *bound_by_claim = false;
                }
                ConnectBinding::Already
            }
            Some(b) => ConnectBinding::Conflict {
                bound_to: b.user.clone(),
            },
            None => {
                p.binding = Some(Binding {
                    user: user.into(),
                    uid: (p.birth_uid != 0).then_some(p.birth_uid),
                });
                ConnectBinding::Bound
            }
        })
        .unwrap_or(ConnectBinding::NotRegistered)
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
        let Some((pid, kind)) = self.pick_claim(now, service, user, uid) else {
            return Ok(None);
        };
        let token = self.next_token;
        self.next_token += 1;
        let bound_by_claim = kind == ClaimKind::Fresh;
        let reports = self.procs[&pid].reports;
        if bound_by_claim {
            self.update(pid, |p| {
                p.binding = Some(Binding {
                    user: user.into(),
                    uid: Some(uid),
                });
            });
        }
        self.set_claim(
            pid,
            Some(Claim::Dispatch {
                token,
                expires: now.saturating_add(self.claim_ttl),
                bound_by_claim,
                uid,
                reports,
            }),
        );
        Ok(Some(Claimed { pid, token, kind }))
    }

    /// The process a claim gets, from the indexes.
    fn pick_claim(
        &self,
        now: UnixMillis,
        service: &[u8],
        user: &[u8],
        uid: u32,
    ) -> Option<(Pid, ClaimKind)> {
        let usable = |p: &&Process| p.claimable_at(now);
        // A reuse hit: the most recently idled process of this user (warmest, and it leaves
        // the others to age towards eviction).
        let reuse = self
            .ix
            .bound_pids(service, user)
            .iter()
            .map(|pid| &self.procs[pid])
            .filter(usable)
            .filter(|p| {
                p.binding.as_ref().is_some_and(|b| b.admits(user, uid))
                    && matches!(p.activity, Activity::Idle { .. })
            })
            .max_by_key(|p| (idle_since(p), std::cmp::Reverse(p.pid)))
            .map(|p| (p.pid, ClaimKind::Reuse));
        // Else the oldest fresh spare that may become this uid: the first usable entry of
        // the root-born and of the uid-born sets, whichever is older.
        reuse.or_else(|| {
            let first = |birth_uid: u32| {
                self.ix
                    .fresh_of(service, birth_uid)?
                    .iter()
                    .find(|(_, pid)| usable(&&self.procs[pid]))
                    .copied()
            };
            let root = first(0);
            let own = first(uid);
            root.into_iter()
                .chain(own)
                .min()
                .map(|(_, pid)| (pid, ClaimKind::Fresh))
        })
    }

    /// `RELEASE`: ends the claim `token` on `pid`.
    pub fn release(
        &mut self,
        now: UnixMillis,
        pid: Pid,
        token: u64,
        outcome: Outcome,
    ) -> Result<(), RegistryError> {
        let p = self.procs.get(&pid).ok_or(RegistryError::UnknownPid(pid))?;
        let newer_report = |reports| p.reports != reports;
        let (bound_by_claim, uid, newer) = match p.claim_at(now) {
            Some(Claim::Dispatch {
                token: held,
                bound_by_claim,
                uid,
                reports,
                ..
            }) if held == token => (bound_by_claim, uid, newer_report(reports)),
            _ => return Err(RegistryError::StaleToken { pid, token }),
        };
        self.set_claim(pid, None);
        match outcome {
            Outcome::Served => {
                self.update(pid, |p| {
                    if !newer {
                        p.activity = Activity::Busy { since: now };
                    }
                    // The process accepted the user with this uid: it runs as it now.
                    if let Some(b) = &mut p.binding {
                        b.uid.get_or_insert(uid);
                    }
                });
            }
            Outcome::Unused if bound_by_claim => {
                self.update(pid, |p| p.binding = None);
            }
            Outcome::Busy => {
                let until = now.saturating_add(self.claim_ttl);
                self.update(pid, |p| {
                    if bound_by_claim {
                        p.binding = None;
                    }
                    p.suspect_until = until;
                });
            }
            Outcome::Unused | Outcome::Failed => {}
        }
        Ok(())
    }

    /// `EVICT <service>`: picks an idle, unclaimed process by the policy and reserves it for
    /// the master to kill (it is never claimed again; its death report removes it).
    pub fn evict(&mut self, now: UnixMillis, service: &[u8]) -> Option<Pid> {
        let pid = self.pick_victim(now, service)?;
        self.set_claim(pid, Some(Claim::Evict));
        Some(pid)
    }

    /// `EVICT <service> <pid>`: reserves this process for killing, if it is idle (or fresh)
    /// and unclaimed.
    pub fn evict_pid(&mut self, now: UnixMillis, pid: Pid) -> Result<(), RegistryError> {
        let p = self.procs.get(&pid).ok_or(RegistryError::UnknownPid(pid))?;
        if p.claim == Some(Claim::Evict) {
            // Already reserved (an earlier answer the master did not wait for): it may kill.
            return Ok(());
        }
        if p.claim_at(now).is_some() || matches!(p.activity, Activity::Busy { .. }) {
            return Err(RegistryError::NotEvictable(pid));
        }
        self.set_claim(pid, Some(Claim::Evict));
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
        let Some(idle) = self.ix.idle.get(service) else {
            return Vec::new();
        };
        let users = self.history.get(service);
        let prior = self.mean_interval();
        idle.iter()
            .map(|pid| &self.procs[pid])
            .filter(|p| p.claim_at(now).is_none())
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

    /// Forgets the arrival history of users not seen since `cutoff` (memory bound; see
    /// [`Registry::upkeep`] for the shell's rule).
    pub fn forget_history_before(&mut self, cutoff: UnixMillis) -> usize {
        let mut forgotten = 0;
        for users in self.history.values_mut() {
            let before = users.len();
            users.retain(|_, h| h.last_arrival >= cutoff);
            forgotten += before - users.len();
        }
        self.history.retain(|_, users| !users.is_empty());
        forgotten
    }

    /// The shell's periodic upkeep (every second):
    ///
    /// - drops expired dispatch claims and returns them (a claim that expires unreleased
    ///   means a dispatcher died or hung mid-handoff; the shell logs it). Expired claims are
    ///   inactive already, so this changes no decision, only memory and the log;
    /// - forgets the arrival history the eviction policy no longer uses: users older than
    ///   [`HISTORY_MIN_KEEP`] whom the predictive rule takes to have left (silent for more
    ///   than [`GONE_FACTOR`] intervals; for them "no history" ranks the same), and beyond
    ///   [`HISTORY_MAX_ENTRIES`] entries the ones with the oldest last arrival.
    pub fn upkeep(&mut self, now: UnixMillis) -> Upkeep {
        let mut done = Upkeep::default();
        for p in self.procs.values_mut() {
            if let Some(Claim::Dispatch { token, expires, .. }) = p.claim {
                if expires <= now {
                    // Claims are not indexed: no index change.
                    p.claim = None;
                    done.expired.push(ExpiredClaim {
                        pid: p.pid,
                        token,
                        user: p.binding.as_ref().map(|b| b.user.clone()),
                    });
                }
            }
        }
        done.expired.sort_by_key(|e| e.pid);
        let prior = self.mean_interval();
        for users in self.history.values_mut() {
            let before = users.len();
            users.retain(|_, h| {
                now.saturating_sub(h.last_arrival) < HISTORY_MIN_KEEP
                    || expected_return(now, Some(h), prior) != u64::MAX
            });
            done.forgotten += before - users.len();
        }
        self.history.retain(|_, users| !users.is_empty());
        let entries: usize = self.history.values().map(|u| u.len()).sum();
        if entries > HISTORY_MAX_ENTRIES {
            let mut arrivals: Vec<UnixMillis> = self
                .history
                .values()
                .flat_map(|u| u.values().map(|h| h.last_arrival))
                .collect();
            let excess = entries - HISTORY_MAX_ENTRIES;
            // Keep the newest HISTORY_MAX_ENTRIES (ties at the cutoff all go).
            let (_, cutoff, _) = arrivals.select_nth_unstable(excess - 1);
            let cutoff = cutoff.saturating_add(1);
            done.forgotten += self.forget_history_before(cutoff);
        }
        done
    }

    /// Whether any process is registered (a v1 `CONNECT` needs no lookup otherwise).
    pub fn has_processes(&self) -> bool {
        !self.procs.is_empty()
    }

    /// Whether the registry holds nothing (no process, no history): upkeep has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty() && self.history.is_empty()
    }

    /// Number of arrival histories kept (all services).
    pub fn history_len(&self) -> usize {
        self.history.values().map(|u| u.len()).sum()
    }

    /// One process.
    pub fn get(&self, pid: Pid) -> Option<&Process> {
        self.procs.get(&pid)
    }

    /// `PROC-LIST`: the processes of `service` bound to `user`, by pid.
    pub fn list(&self, service: &[u8], user: &[u8]) -> Vec<&Process> {
        let mut v: Vec<&Process> = self
            .ix
            .bound_pids(service, user)
            .iter()
            .map(|pid| &self.procs[pid])
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
        self.ix.count.get(service).copied().unwrap_or(0)
    }

    /// Drops expired claims (they are already inactive; this only frees the memory and makes
    /// dumps show them gone). [`Registry::upkeep`] does this and more.
    pub fn expire(&mut self, now: UnixMillis) {
        // Claims are not indexed: no index change.
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

    /// Checks the indexes against a rebuild from the table (tests).
    #[cfg(test)]
    fn check_index(&self) {
        let mut rebuilt = Index::default();
        for p in self.procs.values() {
            rebuilt.add(p);
        }
        assert_eq!(rebuilt.normalised(), self.ix.normalised());
    }
}

/// The registry's indexes, derived from the process table (see the module docs). Empty
/// entries are removed, so memory follows the live processes.
#[derive(Debug, Clone, Default)]
struct Index {
    /// service -> user -> pids bound to the user (any uid), unordered.
    bound: IndexMap<BString, IndexMap<BString, Vec<Pid>>>,
    /// service -> birth uid -> (birth, pid) of fresh, unbound processes not reserved for
    /// eviction.
    fresh: IndexMap<BString, IndexMap<u32, BTreeSet<(UnixMillis, Pid)>>>,
    /// service -> idle pids (claimed or not).
    idle: IndexMap<BString, BTreeSet<Pid>>,
    /// service -> number of processes.
    count: IndexMap<BString, usize>,
}

impl Index {
    /// Whether `p` belongs in `fresh`.
    fn is_spare(p: &Process) -> bool {
        Self::is_spare_with(p, p.claim)
    }

    /// Whether `p` would belong in `fresh` with this claim.
    fn is_spare_with(p: &Process, claim: Option<Claim>) -> bool {
        p.binding.is_none() && p.activity == Activity::Fresh && claim != Some(Claim::Evict)
    }

    fn add(&mut self, p: &Process) {
        let service = p.service.as_slice();
        *self.count.entry_ref(service).or_default() += 1;
        if let Some(b) = &p.binding {
            self.bound
                .entry_ref(service)
                .or_default()
                .entry_ref(b.user.as_slice())
                .or_default()
                .push(p.pid);
        }
        if Self::is_spare(p) {
            self.fresh
                .entry_ref(service)
                .or_default()
                .entry(p.birth_uid)
                .or_default()
                .insert((p.born, p.pid));
        }
        if matches!(p.activity, Activity::Idle { .. }) {
            self.idle.entry_ref(service).or_default().insert(p.pid);
        }
    }

    fn remove(&mut self, p: &Process) {
        let service = p.service.as_slice();
        if let Some(n) = self.count.get_mut(service) {
            *n -= 1;
            if *n == 0 {
                self.count.remove(service);
            }
        }
        if let Some(b) = &p.binding {
            if let Some(users) = self.bound.get_mut(service) {
                if let Some(pids) = users.get_mut(b.user.as_slice()) {
                    pids.retain(|&q| q != p.pid);
                    if pids.is_empty() {
                        users.remove(b.user.as_slice());
                    }
                }
                if users.is_empty() {
                    self.bound.remove(service);
                }
            }
        }
        if Self::is_spare(p) {
            if let Some(uids) = self.fresh.get_mut(service) {
                if let Some(set) = uids.get_mut(&p.birth_uid) {
                    set.remove(&(p.born, p.pid));
                    if set.is_empty() {
                        uids.remove(&p.birth_uid);
                    }
                }
                if uids.is_empty() {
                    self.fresh.remove(service);
                }
            }
        }
        if matches!(p.activity, Activity::Idle { .. }) {
            if let Some(set) = self.idle.get_mut(service) {
                set.remove(&p.pid);
                if set.is_empty() {
                    self.idle.remove(service);
                }
            }
        }
    }

    fn bound_pids(&self, service: &[u8], user: &[u8]) -> &[Pid] {
        self.bound
            .get(service)
            .and_then(|users| users.get(user))
            .map_or(&[], Vec::as_slice)
    }

    fn fresh_of(&self, service: &[u8], birth_uid: u32) -> Option<&BTreeSet<(UnixMillis, Pid)>> {
        self.fresh.get(service)?.get(&birth_uid)
    }

    /// A comparable form (tests).
    #[cfg(test)]
    #[allow(clippy::type_complexity)]
    fn normalised(
        &self,
    ) -> (
        std::collections::BTreeMap<(BString, BString), Vec<Pid>>,
        std::collections::BTreeMap<(BString, u32), BTreeSet<(UnixMillis, Pid)>>,
        std::collections::BTreeMap<BString, BTreeSet<Pid>>,
        std::collections::BTreeMap<BString, usize>,
    ) {
        let bound = self
            .bound
            .iter()
            .flat_map(|(s, users)| {
                users.iter().map(|(u, pids)| {
                    let mut pids = pids.clone();
                    pids.sort();
                    ((s.clone(), u.clone()), pids)
                })
            })
            .collect();
        let fresh = self
            .fresh
            .iter()
            .flat_map(|(s, uids)| uids.iter().map(|(u, set)| ((s.clone(), *u), set.clone())))
            .collect();
        let idle = self
            .idle
            .iter()
            .map(|(s, v)| (s.clone(), v.clone()))
            .collect();
        let count = self.count.iter().map(|(s, n)| (s.clone(), *n)).collect();
        (bound, fresh, idle, count)
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
