//! The master's core: a synchronous state machine over services and their processes
//! (master-interface.md §5.6–§9, §16.3). Events in ([`Event`]), actions out ([`Action`]);
//! time is passed in; nothing here touches a process, a socket or the clock, so tests drive it
//! directly. The shell ([`super::master`]) owns pipes, listeners and children and executes
//! the actions.
//!
//! Bookkeeping follows stock 2.3.19.1: per process `available_count` (starts at the effective
//! client_limit until the first status record), per service `process_count` and
//! `process_avail` (= processes with at least one free slot). The service's listeners are
//! polled only while `process_avail == 0`, the service is not throttled and not waiting in
//! the drop path; a readable listener forks one process (demand spawning).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::master_compat::config::ServiceType;
use crate::master_compat::services::ServiceSet;
use crate::sys::process::{ChildFailure, ExitHow};
use crate::wire::status::{StatusRecord, STATUS_RECORD_LEN};

/// Index of a service in the [`ServiceSet`].
pub type ServiceId = usize;

/// A child must send its first status record within this time.
pub const FIRST_STATUS_TIMEOUT: Duration = Duration::from_secs(30);
/// Shutdown: how long to wait for every service to stop accepting.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// Shutdown: pause after SIGQUIT before exiting.
pub const SHUTDOWN_QUIT_PAUSE: Duration = Duration::from_secs(1);
/// Drop path: how long connections wait in the queue at process_limit.
pub const DROP_DELAY: Duration = Duration::from_secs(10);
/// Login services are told about a FULL/NONFULL change at most this often.
pub const LOGIN_NOTIFY_INTERVAL: Duration = Duration::from_secs(2);
/// Longest throttle interval.
pub const MAX_THROTTLE: Duration = Duration::from_secs(60);

/// Inputs of the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start-up: create the first processes.
    Start,
    /// A listener of the service has a pending connection.
    ListenerReadable(ServiceId),
    /// Bytes read from the service's status pipe (any number of records).
    StatusData(ServiceId, Vec<u8>),
    /// The service's status pipe reported EOF.
    StatusEof(ServiceId),
    /// A [`Action::Spawn`] became process `pid`.
    Spawned { generation: u32, pid: u32 },
    /// A [`Action::Spawn`] could not fork.
    SpawnFailed { generation: u32, error: String },
    /// `waitpid` returned this child.
    ChildExited { pid: u32, how: ExitHow },
    /// Time passed (call at [`Supervisor::next_deadline`]).
    Tick,
    /// SIGTERM/SIGINT: shut down.
    Shutdown,
    /// A new process of the service is needed although idle processes may exist (they
    /// cannot take this client, e.g. they are reserved for other users): spawn, or evict the
    /// longest-idle process at `process_limit − process_limit_margin`.
    NeedProcess(ServiceId),
    /// `doveadm service stop`: stop watching the service; its processes see master death.
    StopService(ServiceId),
    /// Reload: this supervisor's service list is replaced. Stop listening and spawning,
    /// close the dead pipes (old processes finish and exit), keep reaping.
    Retire,
}

/// Log levels of the master's own messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Warning,
    Error,
}

/// Outputs of the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fork+exec a process of the service with this GENERATION.
    Spawn {
        service: ServiceId,
        generation: u32,
        anvil_restarted: bool,
    },
    /// Send a signal.
    Kill { pid: u32, signal: i32 },
    /// Write `KILL\t<pid>\n` to the master→anvil pipe.
    AnvilKill(u32),
    /// A line for the log process's control pipe (LF added by the shell).
    LogControl(String),
    /// The master's own log.
    Log(LogLevel, String),
    /// Start or stop polling the service's listeners.
    Listen { service: ServiceId, on: bool },
    /// Accept and close every connection queued on the service's listeners (drop path).
    DropQueued(ServiceId),
    /// chmod the process's per-process listener paths: 0 while it has no free slot
    /// (`open = false`), the configured mode again when it has one.
    PerPidMode {
        service: ServiceId,
        pid: u32,
        open: bool,
    },
    /// Remove the per-process listeners of a reaped process.
    UnlinkPerPid { service: ServiceId, pid: u32 },
    /// Set the login-state file (`lseek` to 1 = FULL, 0 = NONFULL).
    LoginState { service: ServiceId, full: bool },
    /// Close the service's dead pipe and listeners (`doveadm service stop`).
    StopService(ServiceId),
    /// Close every service's dead pipe (and anvil's global one): children see master death.
    CloseDeadPipes,
    /// Shutdown finished: unlink the pid file and exit.
    Exit,
}

#[derive(Debug, Clone)]
struct Proc {
    service: ServiceId,
    generation: u32,
    available: u32,
    total_count: u64,
    initialized: bool,
    spawned_at: Instant,
    idle_start: Option<Instant>,
    last_status_update: Option<Instant>,
    last_kill_sent: Option<Instant>,
    idle_deadline: Option<Instant>,
    /// SIGINT sent to make room (eviction).
    evicting: bool,
}

#[derive(Debug, Clone)]
struct Svc {
    name: String,
    kind: ServiceType,
    process_limit: u32,
    client_limit: u32,
    min_avail: u32,
    idle_kill: Option<Duration>,
    log_fd: Option<i32>,
    has_listeners: bool,
    has_per_pid: bool,
    process_count: u32,
    process_avail: u32,
    listening: bool,
    listen_pending: bool,
    drop_mode: bool,
    drop_deadline: Option<Instant>,
    last_drop_warning: Option<Instant>,
    throttled_until: Option<Instant>,
    throttle: Duration,
    had_successful_exit: bool,
    failure_second: Option<Instant>,
    failures_in_sec: u32,
    login_full: bool,
    login_notified_at: Option<Instant>,
    login_notify_deadline: Option<Instant>,
    stopped: bool,
    process_total: u64,
    /// Interval of the current/last throttle.
    throttle_current: Duration,
    /// `process_limit_margin`.
    margin: u32,
    /// Idle processes asked to exit to make room, not yet gone.
    evictions_in_flight: u32,
}

/// Per-service numbers for status output (`doveadm service status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    pub name: String,
    pub process_count: u32,
    pub process_avail: u32,
    pub process_limit: u32,
    pub client_limit: u32,
    /// Current throttle interval if throttled.
    pub throttle_secs: u64,
    pub exit_failure_last: Option<Instant>,
    pub exit_failures_in_sec: u32,
    pub last_drop_warning: Option<Instant>,
    pub listening: bool,
    pub listen_pending: bool,
    pub doveadm_stop: bool,
    /// Processes created so far.
    pub process_total: u64,
}

/// Per-process numbers (`doveadm process status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStatus {
    pub service: String,
    pub pid: u32,
    pub available_count: u32,
    pub total_count: u64,
    pub idle_start: Option<Instant>,
    pub last_status_update: Option<Instant>,
    pub last_kill_sent: Option<Instant>,
}

/// The master's state.
#[derive(Debug)]
pub struct Supervisor {
    svcs: Vec<Svc>,
    procs: BTreeMap<u32, Proc>,
    /// Spawns whose pid is not known yet: generation → service.
    pending: BTreeMap<u32, ServiceId>,
    next_generation: u32,
    log: ServiceId,
    anvil: Option<ServiceId>,
    anvil_died: bool,
    shutdown: Option<ShutdownPhase>,
    retired: bool,
}

/// A live process moved from one supervisor to another (anvil across a reload).
#[derive(Debug, Clone)]
pub struct MovedProcess {
    pid: u32,
    proc_: Proc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShutdownPhase {
    /// Dead pipes closed; waiting for every service to stop accepting.
    Draining {
        until: Instant,
    },
    /// SIGQUIT sent; exiting at this time.
    Quitting {
        at: Instant,
    },
    Done,
}

impl Supervisor {
    /// A supervisor for the resolved services; nothing runs until [`Event::Start`].
    pub fn new(set: &ServiceSet) -> Supervisor {
        let svcs = set
            .services
            .iter()
            .map(|d| Svc {
                name: d.name.clone(),
                kind: d.kind.clone(),
                process_limit: d.process_limit,
                client_limit: d.client_limit,
                min_avail: d.process_min_avail,
                idle_kill: d.idle_kill.map(Duration::from_secs),
                log_fd: d.log_fd,
                has_listeners: !d.unix.is_empty() || !d.inet.is_empty(),
                has_per_pid: !d.per_pid.is_empty(),
                process_count: 0,
                process_avail: 0,
                listening: false,
                listen_pending: false,
                drop_mode: false,
                drop_deadline: None,
                last_drop_warning: None,
                throttled_until: None,
                throttle: Duration::from_secs(2),
                had_successful_exit: false,
                failure_second: None,
                failures_in_sec: 0,
                login_full: false,
                login_notified_at: None,
                login_notify_deadline: None,
                stopped: false,
                process_total: 0,
                throttle_current: Duration::ZERO,
                margin: d.process_limit_margin,
                evictions_in_flight: 0,
            })
            .collect();
        Supervisor {
            svcs,
            procs: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_generation: 1,
            log: set.log,
            anvil: set.anvil,
            anvil_died: false,
            shutdown: None,
            retired: false,
        }
    }

    /// The GENERATION the next process gets (carried over to the next service list).
    pub fn next_generation(&self) -> u32 {
        self.next_generation
    }

    /// Continue numbering processes from `n` (GENERATION is never reused).
    pub fn set_next_generation(&mut self, n: u32) {
        self.next_generation = self.next_generation.max(n);
    }

    /// True when no process of this supervisor is alive or being forked.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty() && self.pending.is_empty()
    }

    /// Takes the anvil process out (to move it to the next service list); its service
    /// counts drop as if it had exited, without any exit handling.
    pub fn release_anvil(&mut self) -> Vec<MovedProcess> {
        let Some(a) = self.anvil else {
            return Vec::new();
        };
        let pids = self.pids(a);
        let mut out = Vec::new();
        for pid in pids {
            let p = self.procs.remove(&pid).expect("listed");
            self.svcs[a].process_count -= 1;
            if p.available > 0 {
                self.svcs[a].process_avail -= 1;
            }
            out.push(MovedProcess { pid, proc_: p });
        }
        out
    }

    /// Adopts processes released by [`Supervisor::release_anvil`] as this list's anvil.
    pub fn adopt_anvil(&mut self, moved: Vec<MovedProcess>) {
        let Some(a) = self.anvil else {
            return;
        };
        for MovedProcess { pid, mut proc_ } in moved {
            proc_.service = a;
            self.svcs[a].process_count += 1;
            if proc_.available > 0 {
                self.svcs[a].process_avail += 1;
            }
            self.procs.insert(pid, proc_);
        }
    }

    /// Handles one event.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start => self.start(now, &mut out),
            Event::ListenerReadable(s) => self.listener_readable(now, s, &mut out),
            Event::StatusData(s, data) => self.status_data(now, s, &data, &mut out),
            Event::StatusEof(s) => {
                out.push(Action::Log(
                    LogLevel::Error,
                    format!("service({}): read(status) failed: EOF", self.svcs[s].name),
                ));
                self.svcs[s].stopped = true;
            }
            Event::Spawned { generation, pid } => self.spawned(now, generation, pid),
            Event::SpawnFailed { generation, error } => {
                if let Some(s) = self.pending.remove(&generation) {
                    self.svcs[s].process_count -= 1;
                    self.svcs[s].process_avail -= 1;
                    out.push(Action::Log(
                        LogLevel::Error,
                        format!("service({}): fork() failed: {error}", self.svcs[s].name),
                    ));
                    self.throttle(now, s, &mut out);
                }
            }
            Event::ChildExited { pid, how } => self.child_exited(now, pid, how, &mut out),
            Event::Tick => self.tick(now, &mut out),
            Event::Shutdown => self.begin_shutdown(now, &mut out),
            Event::NeedProcess(s) => self.need_process(now, s, &mut out),
            Event::StopService(s) => {
                self.svcs[s].stopped = true;
                if self.svcs[s].listening {
                    self.svcs[s].listening = false;
                    out.push(Action::Listen {
                        service: s,
                        on: false,
                    });
                }
                out.push(Action::StopService(s));
            }
            Event::Retire => {
                if !self.retired && self.shutdown.is_none() {
                    self.retired = true;
                    self.stop_listening_and_close_dead_pipes(&mut out);
                }
            }
        }
        if self.retired {
            // Only reaping and status bookkeeping from now on.
        } else if self.shutdown.is_none() {
            for s in 0..self.svcs.len() {
                self.refresh_listening(now, s, &mut out);
            }
        } else {
            self.check_shutdown(now, &mut out);
        }
        out
    }

    /// When [`Event::Tick`] is next due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let procs = self.procs.values().flat_map(|p| {
            let first = (!p.initialized).then_some(p.spawned_at + FIRST_STATUS_TIMEOUT);
            [first, p.idle_deadline]
        });
        let svcs = self
            .svcs
            .iter()
            .flat_map(|s| [s.drop_deadline, s.throttled_until, s.login_notify_deadline]);
        let shutdown = match self.shutdown {
            Some(ShutdownPhase::Draining { until }) => Some(until),
            Some(ShutdownPhase::Quitting { at }) => Some(at),
            _ => None,
        };
        procs.chain(svcs).chain([shutdown]).flatten().min()
    }

    /// True while an anvil process exists (else the shell drains the anvil pipes).
    pub fn anvil_running(&self) -> bool {
        self.anvil.is_some_and(|a| self.svcs[a].process_count > 0)
    }

    /// The service a live process belongs to.
    pub fn service_of(&self, pid: u32) -> Option<ServiceId> {
        self.procs.get(&pid).map(|p| p.service)
    }

    /// Live pids of a service.
    pub fn pids(&self, service: ServiceId) -> Vec<u32> {
        self.procs
            .iter()
            .filter(|(_, p)| p.service == service)
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// Every live pid.
    pub fn all_pids(&self) -> Vec<u32> {
        self.procs.keys().copied().collect()
    }

    /// Numbers per service.
    pub fn status(&self, now: Instant) -> Vec<ServiceStatus> {
        self.svcs
            .iter()
            .map(|s| ServiceStatus {
                name: s.name.clone(),
                process_count: s.process_count,
                process_avail: s.process_avail,
                process_limit: s.process_limit,
                client_limit: s.client_limit,
                throttle_secs: if s.throttled_until.is_some_and(|t| t > now) {
                    s.throttle_current.as_secs()
                } else {
                    0
                },
                exit_failure_last: s.failure_second,
                exit_failures_in_sec: s.failures_in_sec,
                last_drop_warning: s.last_drop_warning,
                listening: s.listening,
                listen_pending: s.listen_pending,
                doveadm_stop: s.stopped,
                process_total: s.process_total,
            })
            .collect()
    }

    /// Every live process, by pid.
    pub fn process_status(&self) -> Vec<ProcessStatus> {
        self.procs
            .iter()
            .map(|(&pid, p)| ProcessStatus {
                service: self.svcs[p.service].name.clone(),
                pid,
                available_count: p.available,
                total_count: p.total_count,
                idle_start: p.idle_start,
                last_status_update: p.last_status_update,
                last_kill_sent: p.last_kill_sent,
            })
            .collect()
    }

    /// The service called `name`.
    pub fn service_id(&self, name: &str) -> Option<ServiceId> {
        self.svcs.iter().position(|s| s.name == name)
    }

    fn start(&mut self, now: Instant, out: &mut Vec<Action>) {
        for s in 0..self.svcs.len() {
            if self.svcs[s].min_avail > 0 {
                self.top_up(now, s, out);
            }
        }
        if self.svcs[self.log].process_count == 0 {
            self.spawn(now, self.log, out);
        }
        for s in 0..self.svcs.len() {
            if self.svcs[s].kind == ServiceType::Startup && self.svcs[s].process_count == 0 {
                self.spawn(now, s, out);
            }
        }
    }

    fn spawn(&mut self, _now: Instant, s: ServiceId, out: &mut Vec<Action>) {
        if self.retired {
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.pending.insert(generation, s);
        let svc = &mut self.svcs[s];
        svc.process_count += 1;
        svc.process_total += 1;
        // A new process is assumed fully available until it reports.
        svc.process_avail += 1;
        let anvil_restarted = Some(s) == self.anvil && self.anvil_died;
        out.push(Action::Spawn {
            service: s,
            generation,
            anvil_restarted,
        });
    }

    fn spawned(&mut self, now: Instant, generation: u32, pid: u32) {
        let Some(s) = self.pending.remove(&generation) else {
            return;
        };
        self.procs.insert(
            pid,
            Proc {
                service: s,
                generation,
                available: self.svcs[s].client_limit,
                total_count: 0,
                initialized: false,
                spawned_at: now,
                idle_start: None,
                last_status_update: None,
                last_kill_sent: None,
                idle_deadline: None,
                evicting: false,
            },
        );
    }

    fn throttled(&self, now: Instant, s: ServiceId) -> bool {
        self.svcs[s].throttled_until.is_some_and(|t| t > now)
    }

    fn top_up(&mut self, now: Instant, s: ServiceId, out: &mut Vec<Action>) {
        if self.shutdown.is_some() || self.retired || self.throttled(now, s) || self.svcs[s].stopped
        {
            return;
        }
        while self.svcs[s].process_avail < self.svcs[s].min_avail
            && self.svcs[s].process_count < self.svcs[s].process_limit
        {
            self.spawn(now, s, out);
        }
    }

    fn refresh_listening(&mut self, now: Instant, s: ServiceId, out: &mut Vec<Action>) {
        let throttled = self.throttled(now, s);
        let svc = &mut self.svcs[s];
        let want = svc.has_listeners
            && !svc.stopped
            && !throttled
            && svc.evictions_in_flight == 0
            && (svc.drop_mode
                || (svc.process_avail == 0
                    && !(svc.process_count >= svc.process_limit && svc.listen_pending)));
        if want != svc.listening {
            svc.listening = want;
            out.push(Action::Listen {
                service: s,
                on: want,
            });
        }
    }

    fn listener_readable(&mut self, now: Instant, s: ServiceId, out: &mut Vec<Action>) {
        if self.shutdown.is_some() || !self.svcs[s].listening {
            return;
        }
        if self.svcs[s].process_avail == 0 {
            self.need_process(now, s, out);
        }
    }

    /// A new process of the service is needed (a connection is waiting that no existing
    /// process can take). Below `process_limit − process_limit_margin`: spawn. At or above
    /// it: ask the longest-idle process to exit (SIGINT, as idle kill does) and spawn as soon
    /// as it is gone; without an idle process, spawn while below `process_limit`, else take
    /// the drop path.
    fn need_process(&mut self, now: Instant, s: ServiceId, out: &mut Vec<Action>) {
        if self.retired || self.shutdown.is_some() || self.svcs[s].stopped {
            return;
        }
        let svc = &self.svcs[s];
        if svc.evictions_in_flight > 0 {
            // The slot being freed is for this need; the connection waits in the queue.
            return;
        }
        let threshold = svc.process_limit.saturating_sub(svc.margin).max(1);
        if svc.process_count < threshold {
            self.spawn(now, s, out);
            return;
        }
        if let Some(pid) = self.longest_idle(s) {
            let p = self.procs.get_mut(&pid).expect("present");
            p.evicting = true;
            p.last_kill_sent = Some(now);
            self.svcs[s].evictions_in_flight += 1;
            out.push(Action::Log(
                LogLevel::Info,
                format!(
                    "service({}): {} processes (limit {} - margin {}): evicting idle process {pid}",
                    self.svcs[s].name,
                    self.svcs[s].process_count,
                    self.svcs[s].process_limit,
                    self.svcs[s].margin
                ),
            ));
            out.push(Action::Kill {
                pid,
                signal: libc::SIGINT,
            });
            return;
        }
        if self.svcs[s].process_count < self.svcs[s].process_limit {
            self.spawn(now, s, out);
            return;
        }
        self.drop_path(now, s, out);
    }

    /// The idle process (all slots free, initial status seen, not already asked to go) that
    /// has been idle longest.
    fn longest_idle(&self, s: ServiceId) -> Option<u32> {
        let limit = self.svcs[s].client_limit;
        self.procs
            .iter()
            .filter(|(_, p)| p.service == s && p.initialized && !p.evicting && p.available == limit)
            .min_by_key(|(_, p)| p.idle_start)
            .map(|(&pid, _)| pid)
    }

    /// The drop path (§7.2): process_limit reached and nothing can be freed.
    fn drop_path(&mut self, now: Instant, s: ServiceId, out: &mut Vec<Action>) {
        let svc = &mut self.svcs[s];
        if svc
            .last_drop_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            svc.last_drop_warning = Some(now);
            let limit = if svc.process_limit <= 1 {
                "client_limit".to_owned()
            } else {
                format!("process_limit ({})", svc.process_limit)
            };
            out.push(Action::Log(
                LogLevel::Warning,
                format!(
                    "service({}): {limit} reached, client connections are being dropped",
                    svc.name
                ),
            ));
        }
        if svc.drop_mode {
            out.push(Action::DropQueued(s));
            return;
        }
        if !svc.listen_pending {
            svc.listen_pending = true;
            svc.drop_deadline = Some(now + DROP_DELAY);
        }
        if svc.kind == ServiceType::Login {
            self.set_login_state(now, s, true, out);
        }
    }

    fn set_login_state(&mut self, now: Instant, s: ServiceId, full: bool, out: &mut Vec<Action>) {
        if self.svcs[s].login_full == full {
            return;
        }
        self.svcs[s].login_full = full;
        out.push(Action::LoginState { service: s, full });
        let svc = &self.svcs[s];
        match svc.login_notified_at {
            Some(t) if now.duration_since(t) < LOGIN_NOTIFY_INTERVAL => {
                self.svcs[s].login_notify_deadline = Some(t + LOGIN_NOTIFY_INTERVAL);
            }
            _ => self.notify_login(now, s, out),
        }
    }

    fn notify_login(&mut self, now: Instant, s: ServiceId, out: &mut Vec<Action>) {
        self.svcs[s].login_notified_at = Some(now);
        self.svcs[s].login_notify_deadline = None;
        for (&pid, p) in &self.procs {
            if p.service == s && p.initialized {
                out.push(Action::Kill {
                    pid,
                    signal: libc::SIGUSR1,
                });
            }
        }
    }

    fn status_data(&mut self, now: Instant, s: ServiceId, data: &[u8], out: &mut Vec<Action>) {
        if !data.len().is_multiple_of(STATUS_RECORD_LEN) {
            out.push(Action::Log(
                LogLevel::Error,
                format!(
                    "service({}): service sent partial status update ({} bytes)",
                    self.svcs[s].name,
                    data.len()
                ),
            ));
            return;
        }
        for chunk in data.chunks(STATUS_RECORD_LEN) {
            if let Some(rec) = StatusRecord::decode(chunk) {
                self.status_record(now, s, rec, out);
            }
        }
    }

    fn status_record(
        &mut self,
        now: Instant,
        s: ServiceId,
        rec: StatusRecord,
        out: &mut Vec<Action>,
    ) {
        let Ok(pid) = u32::try_from(rec.pid) else {
            return;
        };
        let Some(p) = self.procs.get_mut(&pid) else {
            return; // already reaped
        };
        if p.generation != rec.generation || p.service != s {
            out.push(Action::Log(
                LogLevel::Error,
                format!(
                    "service({}): Ignoring invalid update from child {pid} (UID={})",
                    self.svcs[s].name, rec.generation
                ),
            ));
            return;
        }
        p.last_status_update = Some(now);
        p.initialized = true;
        // A process asked to make room answered with a status record: it took a client (or
        // refused to die); it stays, and the next idle process is asked instead.
        let refused_eviction = std::mem::take(&mut p.evicting);
        let old = p.available;
        let new = rec.available_count;
        let client_limit = self.svcs[s].client_limit;
        if new < old {
            p.total_count += u64::from(old - new);
            p.idle_start = None;
            p.idle_deadline = None;
            if new == 0 {
                let svc = &mut self.svcs[s];
                svc.process_avail -= 1;
                if svc.has_per_pid {
                    out.push(Action::PerPidMode {
                        service: s,
                        pid,
                        open: false,
                    });
                }
                if svc.kind == ServiceType::Login
                    && svc.process_avail == 0
                    && svc.process_count >= svc.process_limit
                {
                    self.set_login_state(now, s, true, out);
                }
                self.procs.get_mut(&pid).expect("present").available = 0;
                self.top_up(now, s, out);
            }
        } else if new > old && old == 0 {
            let svc = &mut self.svcs[s];
            svc.process_avail += 1;
            if svc.has_per_pid {
                out.push(Action::PerPidMode {
                    service: s,
                    pid,
                    open: true,
                });
            }
            svc.listen_pending = false;
            svc.drop_mode = false;
            svc.drop_deadline = None;
            if svc.kind == ServiceType::Login {
                self.set_login_state(now, s, false, out);
            }
        }
        if refused_eviction {
            self.svcs[s].evictions_in_flight -= 1;
            self.need_process(now, s, out);
        }
        let svc = &self.svcs[s];
        let p = self.procs.get_mut(&pid).expect("present");
        p.available = new;
        if new == client_limit {
            p.idle_start = Some(now);
            if let Some(idle) = svc.idle_kill {
                if svc.process_avail > svc.min_avail && p.idle_deadline.is_none() {
                    p.idle_deadline = Some(now + idle + jitter(p.generation));
                }
            }
        }
    }

    fn child_exited(&mut self, now: Instant, pid: u32, how: ExitHow, out: &mut Vec<Action>) {
        let Some(p) = self.procs.remove(&pid) else {
            out.push(Action::Log(
                LogLevel::Warning,
                format!("waitpid() returned unknown PID {pid}"),
            ));
            return;
        };
        let s = p.service;
        {
            let svc = &mut self.svcs[s];
            svc.process_count -= 1;
            if p.available > 0 {
                svc.process_avail -= 1;
            }
        }
        out.push(Action::UnlinkPerPid { service: s, pid });
        let evicted = p.evicting;
        if evicted {
            self.svcs[s].evictions_in_flight -= 1;
        }
        let name = self.svcs[s].name.clone();
        let log_fd = self.svcs[s].log_fd;
        let failed = how != ExitHow::Code(0);
        if !failed {
            let svc = &mut self.svcs[s];
            svc.had_successful_exit = true;
            svc.failures_in_sec = 0;
            svc.throttle = Duration::from_secs(2);
        } else {
            let (msg, default_fatal) = exit_message(&name, pid, how);
            match log_fd {
                Some(fd) if self.svcs[self.log].process_count > 0 => {
                    let kind = if default_fatal {
                        "DEFAULT-FATAL"
                    } else {
                        "FATAL"
                    };
                    out.push(Action::LogControl(format!("{fd} {pid} {kind} {msg}")));
                }
                _ => out.push(Action::Log(LogLevel::Error, msg)),
            }
            if Some(s) != self.anvil {
                out.push(Action::AnvilKill(pid));
            }
            let svc = &mut self.svcs[s];
            let same_second = svc
                .failure_second
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1));
            if same_second {
                svc.failures_in_sec += 1;
            } else {
                svc.failure_second = Some(now);
                svc.failures_in_sec = 1;
            }
            if !p.initialized || (!svc.had_successful_exit && svc.failures_in_sec > 10) {
                self.throttle(now, s, out);
            }
        }
        if let Some(fd) = log_fd {
            out.push(Action::LogControl(format!("{fd} {pid} BYE")));
        }
        if Some(s) == self.anvil {
            self.anvil_died = true;
        }
        if self.shutdown.is_some() {
            return;
        }
        if self.svcs[s].kind == ServiceType::Login
            && self.svcs[s].process_count < self.svcs[s].process_limit
        {
            self.set_login_state(now, s, false, out);
        }
        if s == self.log && self.svcs[s].process_count == 0 {
            self.spawn(now, s, out);
        }
        if evicted {
            // The slot was freed for a waiting need: fill it now.
            self.need_process(now, s, out);
        }
        self.top_up(now, s, out);
    }

    fn throttle(&mut self, now: Instant, s: ServiceId, out: &mut Vec<Action>) {
        let svc = &mut self.svcs[s];
        if svc.throttled_until.is_some_and(|t| t > now) {
            return;
        }
        let secs = svc.throttle;
        svc.throttled_until = Some(now + secs);
        svc.throttle_current = secs;
        svc.throttle = (secs * 2).min(MAX_THROTTLE);
        out.push(Action::Log(
            LogLevel::Error,
            format!(
                "service({}): command startup failed, throttling for {}.000 secs",
                svc.name,
                secs.as_secs()
            ),
        ));
        if svc.process_count == 0 && svc.has_listeners {
            out.push(Action::DropQueued(s));
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        // First status timeouts and idle kills.
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for pid in pids {
            let p = &self.procs[&pid];
            let s = p.service;
            if !p.initialized && now >= p.spawned_at + FIRST_STATUS_TIMEOUT {
                if self.shutdown.is_none() {
                    out.push(Action::Log(
                        LogLevel::Error,
                        format!(
                            "service({}): Initial status notification not received in 30 seconds, killing the process",
                            self.svcs[s].name
                        ),
                    ));
                    out.push(Action::Kill {
                        pid,
                        signal: libc::SIGKILL,
                    });
                }
                self.procs.get_mut(&pid).expect("present").initialized = true;
                continue;
            }
            if p.idle_deadline.is_some_and(|d| now >= d) {
                self.idle_timer(now, pid, out);
            }
        }
        for s in 0..self.svcs.len() {
            let svc = &mut self.svcs[s];
            if svc.throttled_until.is_some_and(|t| now >= t) {
                svc.throttled_until = None;
                self.top_up(now, s, out);
            }
            let svc = &mut self.svcs[s];
            if svc.drop_deadline.is_some_and(|t| now >= t) {
                svc.drop_deadline = None;
                svc.drop_mode = true;
                out.push(Action::DropQueued(s));
            }
            if self.svcs[s].login_notify_deadline.is_some_and(|t| now >= t) {
                self.notify_login(now, s, out);
            }
        }
    }

    fn idle_timer(&mut self, now: Instant, pid: u32, out: &mut Vec<Action>) {
        let s = self.procs[&pid].service;
        let (avail, min) = (self.svcs[s].process_avail, self.svcs[s].min_avail);
        let interval = self.svcs[s].idle_kill.unwrap_or(Duration::MAX);
        let p = self.procs.get_mut(&pid).expect("present");
        if avail <= min || self.shutdown.is_some() {
            p.idle_deadline = None;
            return;
        }
        let ignoring = match (p.last_kill_sent, p.last_status_update) {
            (Some(k), Some(u)) => k > u + Duration::from_secs(1),
            (Some(_), None) => true,
            _ => false,
        };
        if ignoring {
            out.push(Action::Log(
                LogLevel::Error,
                format!(
                    "service({}): Process {pid} is ignoring idle SIGINT",
                    self.svcs[s].name
                ),
            ));
            p.idle_deadline = None;
            if p.available > 0 {
                p.available = 0;
                self.svcs[s].process_avail -= 1;
            }
            return;
        }
        p.last_kill_sent = Some(now);
        p.idle_deadline = Some(now + interval);
        out.push(Action::Kill {
            pid,
            signal: libc::SIGINT,
        });
    }

    /// Stops listening on every service and closes the dead pipes, so that every child sees
    /// "master gone" (shutdown, and retiring an old generation on reload).
    fn stop_listening_and_close_dead_pipes(&mut self, out: &mut Vec<Action>) {
        for (s, svc) in self.svcs.iter_mut().enumerate() {
            if svc.listening {
                svc.listening = false;
                out.push(Action::Listen {
                    service: s,
                    on: false,
                });
            }
        }
        out.push(Action::CloseDeadPipes);
    }

    fn begin_shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.shutdown.is_some() || self.retired {
            return;
        }
        self.shutdown = Some(ShutdownPhase::Draining {
            until: now + SHUTDOWN_WAIT,
        });
        self.stop_listening_and_close_dead_pipes(out);
    }

    fn check_shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.shutdown {
            Some(ShutdownPhase::Draining { until }) => {
                // Spawns not yet forked never will be.
                let accepting = self.procs.values().any(|p| p.available > 0);
                if !accepting || now >= until {
                    for pid in self.procs.keys() {
                        out.push(Action::Kill {
                            pid: *pid,
                            signal: libc::SIGQUIT,
                        });
                    }
                    self.shutdown = Some(ShutdownPhase::Quitting {
                        at: now + SHUTDOWN_QUIT_PAUSE,
                    });
                }
            }
            Some(ShutdownPhase::Quitting { at }) if now >= at => {
                self.shutdown = Some(ShutdownPhase::Done);
                out.push(Action::Exit);
            }
            _ => {}
        }
    }
}

/// Stock adds 0..990 ms (10 ms steps) to each idle timer; derived from the generation so
/// tests are deterministic.
fn jitter(generation: u32) -> Duration {
    Duration::from_millis(u64::from(generation.wrapping_mul(37) % 100) * 10)
}

/// The message for an abnormal exit; the bool is true for exit 89 (DEFAULT-FATAL).
pub fn exit_message(service: &str, pid: u32, how: ExitHow) -> (String, bool) {
    match how {
        ExitHow::Signal {
            signal,
            core_dumped,
        } => {
            let hint = if core_dumped { " (core dumped)" } else { "" };
            (
                format!("service({service}): child {pid} killed with signal {signal}{hint}"),
                false,
            )
        }
        ExitHow::Code(code) => {
            let hint = match code {
                80 => " (Can't open log file)".to_owned(),
                81 => " (Can't write to log file)".to_owned(),
                82 => " (Internal logging error)".to_owned(),
                83 => " (Out of memory (service imap { vsz_limit }))".to_owned(),
                89 => " (Fatal failure)".to_owned(),
                c => ChildFailure::from_code(c)
                    .map(|f| format!(" ({})", f.describe()))
                    .unwrap_or_default(),
            };
            (
                format!("service({service}): child {pid} returned error {code}{hint}"),
                code == 89,
            )
        }
    }
}

#[cfg(test)]
mod tests;
