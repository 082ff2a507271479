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
//!
//! Reuse pools (services with a `%{pid}` unix listener, docs/reuse.md "Master") additionally
//! emit registry reports ([`Report`]: birth at spawn, busy/idle from status records, death at
//! reap), count `process_min_avail` in *fresh* processes (never busy yet), serve
//! [`Event::NeedFresh`] (FOREMAN-NEED) with the spawn-into-the-margin rule, and while the
//! registry connection is up ([`Event::RegistryConnected`]) kill a process only after an
//! [`Action::AskEvict`] came back with its pid ([`Event::EvictAnswer`]); without a registry
//! they fall back to their own longest-idle choice.

use std::collections::{BTreeMap, VecDeque};
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
/// `shutdown_clients = yes`: interval of the signal rounds for a retired list's processes
/// (SIGTERM first, SIGKILL after; the log process last).
pub const RELOAD_KILL_INTERVAL: Duration = Duration::from_secs(6);

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
    /// longest-idle process (reuse pool with a registry: the one `EVICT` returns) at
    /// `process_limit − process_limit_margin`.
    NeedProcess(ServiceId),
    /// `FOREMAN-NEED <service> <waiting>` (reuse pools, docs/reuse.md): make sure the pool has
    /// at least `waiting + process_min_avail` fresh processes (spawning ones and evictions
    /// that will free a slot for a spawn included).
    NeedFresh { service: ServiceId, waiting: u32 },
    /// The foreman-anvil registry connection is up (greeting received: re-report every live
    /// process of the reuse pools) or gone (every pending [`Action::AskEvict`] is answered
    /// "no registry": the supervisor falls back to its own choice).
    RegistryConnected(bool),
    /// The registry's answer to the oldest pending [`Action::AskEvict`]: the pid it reserved
    /// for killing, or none.
    EvictAnswer {
        service: ServiceId,
        pid: Option<u32>,
    },
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
    /// A report for the foreman-anvil registry (reuse pools only; the shell writes it if
    /// the registry connection is up, else drops it: the state is re-reported on connect).
    Registry(Report),
    /// Ask the registry `EVICT <service>[ <pid>]`; the shell answers with exactly one
    /// [`Event::EvictAnswer`], or with [`Event::RegistryConnected`]`(false)` when it cannot.
    AskEvict {
        service: ServiceId,
        pid: Option<u32>,
    },
}

/// A registry report (docs/anvil-extensions.md §3 "From the master"); the shell turns
/// instants into unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// `PROC-BIRTH <service name> <pid> <uid>[ used]`
    Birth {
        service: ServiceId,
        pid: u32,
        uid: u32,
        /// Re-reported after a registry reconnect, having served somebody (or leaving): the
        /// registry registers it busy in the same command, so no claim can see it fresh.
        used: bool,
    },
    /// `PROC-IDLE <pid> <since>`
    Idle { pid: u32, since: Instant },
    /// `PROC-BUSY <pid> <since>`
    Busy { pid: u32, since: Instant },
    /// `PROC-DEATH <pid>`
    Death { pid: u32 },
}

/// Why a process is to be killed (or why the registry is asked about one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Free a slot for a spawn (the spawn is owed until the process is gone); `listener`:
    /// the need came from a readable shared listener (stock path: drop path if nothing).
    MakeRoom { listener: bool },
    /// Get back to `process_limit − process_limit_margin` (no spawn follows).
    Shrink,
    /// idle_kill of this process.
    IdleKill,
    /// After an anvil restart: a process that served somebody the registry cannot know.
    Retire,
}

/// An `EVICT` question waiting for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ask {
    service: ServiceId,
    pid: Option<u32>,
    purpose: Purpose,
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
    /// SIGINT sent for this purpose (eviction, retirement), no exit and no status since.
    evict: Option<Purpose>,
    /// Reuse pools: has had a client (a busy status record), so is no longer fresh.
    served: bool,
    /// Reuse pools: the last state reported to the registry was busy.
    reported_busy: bool,
    /// Since when the process is busy (reuse pools).
    busy_since: Option<Instant>,
    /// An `EVICT <service> <pid>` for this process is pending.
    asked: bool,
    /// An idle-kill SIGINT was sent and no status record came since.
    idle_sigint: bool,
    /// Answered an eviction SIGINT with a status record: not picked again until busy.
    refused: bool,
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
    /// Spawns owed to evictions that free a slot (EVICT asked, or SIGINT sent, not gone).
    owed: u32,
    /// Evictions to get back to the threshold (asked or SIGINT sent, not gone).
    shrinking: u32,
    /// A reuse pool: the service has a `%{pid}` unix listener.
    reuse: bool,
    /// The uid its processes start as (`RESTRICT_SETUID`, else 0 = root).
    birth_uid: u32,
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
    /// The foreman-anvil registry connection is up.
    registry: bool,
    /// `shutdown_clients`: retired processes are signalled after a reload.
    shutdown_clients: bool,
    /// Retired with `shutdown_clients = yes`: the next signal round.
    reload_kill: Option<ReloadKill>,
    /// `EVICT` questions in the order they were asked.
    asks: VecDeque<Ask>,
}

/// A live process moved from one supervisor to another (anvil across a reload).
#[derive(Debug, Clone)]
pub struct MovedProcess {
    pid: u32,
    proc_: Proc,
}

/// The signal rounds after a reload (master-interface.md §16.2 step 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReloadKill {
    at: Instant,
    term_sent: bool,
    log_term_sent: bool,
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
                owed: 0,
                shrinking: 0,
                reuse: !d.per_pid.is_empty(),
                birth_uid: d
                    .restrict_env
                    .iter()
                    .find(|(k, _)| k == "RESTRICT_SETUID")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0),
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
            registry: false,
            shutdown_clients: false,
            reload_kill: None,
            asks: VecDeque::new(),
        }
    }

    /// `shutdown_clients` (stock default yes): after a reload, processes of the retired list
    /// still alive get SIGTERM 6 s later, SIGKILL every 6 s after that (the log process only
    /// when nothing else is left).
    pub fn set_shutdown_clients(&mut self, on: bool) {
        self.shutdown_clients = on;
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
            Event::Spawned { generation, pid } => self.spawned(now, generation, pid, &mut out),
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
            Event::NeedFresh { service, waiting } => {
                if self.svcs[service].reuse {
                    self.need_fresh(now, service, waiting, &mut out);
                }
            }
            Event::RegistryConnected(up) => self.registry_connected(now, up, &mut out),
            Event::EvictAnswer { service, pid } => self.evict_answer(now, service, pid, &mut out),
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
                    self.report_all_leaving(now, &mut out);
                    if self.shutdown_clients {
                        self.reload_kill = Some(ReloadKill {
                            at: now + RELOAD_KILL_INTERVAL,
                            term_sent: false,
                            log_term_sent: false,
                        });
                    }
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
        let reload_kill = self.reload_kill.map(|k| k.at);
        procs
            .chain(svcs)
            .chain([shutdown, reload_kill])
            .flatten()
            .min()
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

    /// True when the service is a reuse pool (has a `%{pid}` unix listener).
    pub fn is_reuse_pool(&self, s: ServiceId) -> bool {
        self.svcs[s].reuse
    }

    /// True when any service is a reuse pool (the shell then talks to the registry).
    pub fn has_reuse_pool(&self) -> bool {
        self.svcs.iter().any(|s| s.reuse)
    }

    /// The service called `name`.
    pub fn service_id(&self, name: &str) -> Option<ServiceId> {
        self.svcs.iter().position(|s| s.name == name)
    }

    fn start(&mut self, now: Instant, out: &mut Vec<Action>) {
        // The log process first, as stock: it reads each pipe's handshake on its first read
        // and then only reads on new input, so a line a child wrote before the log process
        // started sat in the pipe unlogged until that child wrote again.
        if self.svcs[self.log].process_count == 0 {
            self.spawn(now, self.log, out);
        }
        for s in 0..self.svcs.len() {
            if self.svcs[s].min_avail > 0 {
                self.top_up(now, s, out);
            }
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

    fn spawned(&mut self, now: Instant, generation: u32, pid: u32, out: &mut Vec<Action>) {
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
                evict: None,
                served: false,
                reported_busy: false,
                busy_since: None,
                asked: false,
                idle_sigint: false,
                refused: false,
            },
        );
        if self.svcs[s].reuse {
            out.push(Action::Registry(Report::Birth {
                service: s,
                pid,
                uid: self.svcs[s].birth_uid,
                used: false,
            }));
        }
    }

    fn throttled(&self, now: Instant, s: ServiceId) -> bool {
        self.svcs[s].throttled_until.is_some_and(|t| t > now)
    }

    fn top_up(&mut self, now: Instant, s: ServiceId, out: &mut Vec<Action>) {
        if self.shutdown.is_some() || self.retired || self.throttled(now, s) || self.svcs[s].stopped
        {
            return;
        }
        if self.svcs[s].reuse {
            self.fresh_up_to(now, s, 0, false, out);
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
            && svc.owed == 0
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
    /// it: evict an idle process (SIGINT, as idle kill does; for a reuse pool with a registry
    /// connection, the one `EVICT` returns) and spawn as soon as it is gone; without an idle
    /// process, spawn while below `process_limit`, else take the drop path.
    fn need_process(&mut self, now: Instant, s: ServiceId, out: &mut Vec<Action>) {
        if self.retired || self.shutdown.is_some() || self.svcs[s].stopped {
            return;
        }
        let svc = &self.svcs[s];
        if svc.owed > 0 {
            // The slot being freed is for this need; the connection waits in the queue.
            return;
        }
        if svc.process_count < self.threshold(s) {
            self.spawn(now, s, out);
            return;
        }
        let purpose = Purpose::MakeRoom { listener: true };
        if !self.evict_one(now, s, purpose, out) {
            self.evict_failed(now, s, purpose, out);
        }
    }

    /// `process_limit − process_limit_margin` (at least 1).
    fn threshold(&self, s: ServiceId) -> u32 {
        let svc = &self.svcs[s];
        svc.process_limit.saturating_sub(svc.margin).max(1)
    }

    /// Reuse pools: processes that have served nobody and are not on their way out, plus
    /// spawns whose pid is not known yet.
    fn fresh_count(&self, s: ServiceId) -> u32 {
        let pending = self.pending.values().filter(|&&x| x == s).count();
        let live = self
            .procs
            .values()
            .filter(|p| p.service == s && !p.served && !dying(p))
            .count();
        (pending + live) as u32
    }

    /// docs/reuse.md "Master": make sure `fresh (incl. spawning) + owed spawns >= waiting +
    /// process_min_avail`. Spawns below `process_limit` (into the margin, too: a login never
    /// waits for a death), evicts to make room at `process_limit`, and, when it spawned or
    /// was asked explicitly, evicts idle processes to get back to the threshold. In-flight
    /// spawns and evictions are counted, so repeating the same request does nothing more.
    fn fresh_up_to(
        &mut self,
        now: Instant,
        s: ServiceId,
        waiting: u32,
        explicit: bool,
        out: &mut Vec<Action>,
    ) {
        if self.retired || self.shutdown.is_some() || self.svcs[s].stopped || self.throttled(now, s)
        {
            return;
        }
        let target = waiting.saturating_add(self.svcs[s].min_avail);
        let mut have = self.fresh_count(s) + self.svcs[s].owed;
        let mut spawned = false;
        while have < target {
            if self.svcs[s].process_count < self.svcs[s].process_limit {
                self.spawn(now, s, out);
                spawned = true;
            } else if !self.evict_one(now, s, Purpose::MakeRoom { listener: false }, out) {
                break;
            }
            have += 1;
        }
        if spawned || explicit {
            self.shrink(now, s, out);
        }
    }

    fn need_fresh(&mut self, now: Instant, s: ServiceId, waiting: u32, out: &mut Vec<Action>) {
        self.refresh_idle_reports(s, out);
        self.fresh_up_to(now, s, waiting, true, out);
    }

    /// Re-reports `PROC-IDLE` for every process the master sees idle after it served
    /// somebody. A dispatcher's `RELEASE … served` (busy since now) can reach anvil after the
    /// master's `PROC-IDLE` for a short session (two connections, no order between them); the
    /// process would then look busy to the registry until its next status change, neither
    /// reusable nor evictable. A NEED means a login is stuck, so the master repeats what it
    /// knows first (same `since`: nothing changes where the registry was right); the `EVICT`
    /// that may follow goes out after it on the same connection.
    fn refresh_idle_reports(&self, s: ServiceId, out: &mut Vec<Action>) {
        if !self.registry || self.retired {
            return;
        }
        let limit = self.svcs[s].client_limit;
        for (&pid, p) in &self.procs {
            if p.service == s && p.served && !p.reported_busy && !dying(p) && p.available == limit {
                if let Some(since) = p.idle_start {
                    out.push(Action::Registry(Report::Idle { pid, since }));
                }
            }
        }
    }

    /// Evicts idle processes while the service is above its threshold (counting the
    /// evictions already under way).
    fn shrink(&mut self, now: Instant, s: ServiceId, out: &mut Vec<Action>) {
        let threshold = self.threshold(s);
        while self.svcs[s]
            .process_count
            .saturating_sub(self.svcs[s].shrinking)
            > threshold
        {
            if !self.evict_one(now, s, Purpose::Shrink, out) {
                break;
            }
        }
    }

    fn count_eviction(&mut self, s: ServiceId, purpose: Purpose, up: bool) {
        let svc = &mut self.svcs[s];
        let n = match purpose {
            Purpose::MakeRoom { .. } => &mut svc.owed,
            Purpose::Shrink => &mut svc.shrinking,
            Purpose::IdleKill | Purpose::Retire => return,
        };
        if up {
            *n += 1;
        } else {
            *n -= 1;
        }
    }

    /// Starts one eviction: asks the registry (reuse pool with a registry connection), else
    /// SIGINTs the longest-idle process. False when there is nothing to evict.
    fn evict_one(
        &mut self,
        now: Instant,
        s: ServiceId,
        purpose: Purpose,
        out: &mut Vec<Action>,
    ) -> bool {
        if self.svcs[s].reuse && self.registry {
            // No more open questions than processes the registry could return.
            let candidates = self
                .procs
                .values()
                .filter(|p| p.service == s && p.served && !dying(p))
                .count();
            let open = self
                .asks
                .iter()
                .filter(|a| a.service == s && a.pid.is_none())
                .count();
            if open >= candidates {
                return false;
            }
            self.asks.push_back(Ask {
                service: s,
                pid: None,
                purpose,
            });
            self.count_eviction(s, purpose, true);
            out.push(Action::AskEvict {
                service: s,
                pid: None,
            });
            return true;
        }
        let Some(pid) = self.longest_idle(s) else {
            return false;
        };
        self.count_eviction(s, purpose, true);
        self.kill_for(now, pid, purpose, out);
        true
    }

    /// An eviction found nothing (or its process refused to go): what the need does then.
    fn evict_failed(
        &mut self,
        now: Instant,
        s: ServiceId,
        purpose: Purpose,
        out: &mut Vec<Action>,
    ) {
        let Purpose::MakeRoom { listener } = purpose else {
            return;
        };
        if self.svcs[s].process_count < self.svcs[s].process_limit && !self.throttled(now, s) {
            self.spawn(now, s, out);
        } else if listener {
            self.drop_path(now, s, out);
        }
    }

    /// SIGINTs `pid` for `purpose` (the caller counted it).
    fn kill_for(&mut self, now: Instant, pid: u32, purpose: Purpose, out: &mut Vec<Action>) {
        let p = self.procs.get_mut(&pid).expect("present");
        p.evict = Some(purpose);
        p.last_kill_sent = Some(now);
        p.idle_deadline = None;
        let svc = &self.svcs[p.service];
        let text = match purpose {
            Purpose::Retire => format!(
                "service({}): retiring process {pid} (it served a user before the anvil restart)",
                svc.name
            ),
            _ => format!(
                "service({}): {} processes (limit {} - margin {}): evicting idle process {pid}",
                svc.name, svc.process_count, svc.process_limit, svc.margin
            ),
        };
        out.push(Action::Log(LogLevel::Info, text));
        out.push(Action::Kill {
            pid,
            signal: libc::SIGINT,
        });
    }

    /// The idle process (all slots free, initial status seen, not on its way out, and in a
    /// reuse pool one that has served somebody: a fresh one is a spare) idle longest.
    fn longest_idle(&self, s: ServiceId) -> Option<u32> {
        let svc = &self.svcs[s];
        self.procs
            .iter()
            .filter(|(_, p)| {
                p.service == s
                    && p.initialized
                    && !dying(p)
                    && !p.refused
                    && p.available == svc.client_limit
                    && (!svc.reuse || p.served)
            })
            .min_by_key(|(_, p)| p.idle_start)
            .map(|(&pid, _)| pid)
    }

    fn registry_connected(&mut self, now: Instant, up: bool, out: &mut Vec<Action>) {
        self.registry = up;
        if !up {
            // Nobody will answer: every pending question falls back to the own choice.
            for ask in std::mem::take(&mut self.asks) {
                self.answer(now, ask, None, out);
            }
            return;
        }
        // docs/anvil-extensions.md §6: re-report every live process of the reuse pools; one
        // that served somebody is reported busy (never fresh again) and, if idle, retired.
        let live: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| self.svcs[p.service].reuse)
            .map(|(&pid, _)| pid)
            .collect();
        for pid in live {
            let p = &self.procs[&pid];
            let s = p.service;
            let leaving = dying(p) || self.retired;
            // One command: a busy report after a plain birth would leave a window in which a
            // claim gets this used process as a fresh one, for another user.
            out.push(Action::Registry(Report::Birth {
                service: s,
                pid,
                uid: self.svcs[s].birth_uid,
                used: p.served || leaving,
            }));
            if p.served && !leaving && !p.reported_busy {
                out.push(Action::Registry(Report::Idle {
                    pid,
                    since: p.idle_start.unwrap_or(now),
                }));
                self.ask_about(s, pid, Purpose::Retire, out);
            }
        }
    }

    /// A retired list's processes are on their way out: reported busy, so the registry never
    /// hands them a client again (they stop accepting once their dead pipe closes).
    fn report_all_leaving(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.registry {
            return;
        }
        for (&pid, p) in self.procs.iter_mut() {
            if self.svcs[p.service].reuse && !p.reported_busy {
                p.reported_busy = true;
                out.push(Action::Registry(Report::Busy { pid, since: now }));
            }
        }
    }

    /// `EVICT <service> <pid>` for one process (idle kill, retirement).
    fn ask_about(&mut self, s: ServiceId, pid: u32, purpose: Purpose, out: &mut Vec<Action>) {
        let p = self.procs.get_mut(&pid).expect("present");
        p.asked = true;
        p.idle_deadline = None;
        self.asks.push_back(Ask {
            service: s,
            pid: Some(pid),
            purpose,
        });
        out.push(Action::AskEvict {
            service: s,
            pid: Some(pid),
        });
    }

    fn evict_answer(
        &mut self,
        now: Instant,
        service: ServiceId,
        pid: Option<u32>,
        out: &mut Vec<Action>,
    ) {
        let Some(ask) = self.asks.pop_front() else {
            out.push(Action::Log(
                LogLevel::Error,
                format!(
                    "service({}): registry answered an EVICT nobody asked",
                    self.svcs[service].name
                ),
            ));
            return;
        };
        self.answer(now, ask, pid, out);
    }

    /// Acts on the answer to `ask` (`None` also when the registry went away).
    fn answer(&mut self, now: Instant, ask: Ask, pid: Option<u32>, out: &mut Vec<Action>) {
        let s = ask.service;
        // Only a live, not already leaving process of the service is killed, and for a
        // question about one pid only that pid.
        let granted = pid.filter(|&v| {
            ask.pid.is_none_or(|a| a == v)
                && self
                    .procs
                    .get(&v)
                    .is_some_and(|p| p.service == s && p.evict.is_none())
        });
        if let Some(asked) = ask.pid {
            if let Some(p) = self.procs.get_mut(&asked) {
                p.asked = false;
            }
        }
        match ask.purpose {
            Purpose::MakeRoom { .. } | Purpose::Shrink => match granted {
                Some(v) => self.kill_for(now, v, ask.purpose, out),
                None => {
                    self.count_eviction(s, ask.purpose, false);
                    if self.retired || self.shutdown.is_some() {
                        return;
                    }
                    if self.registry || !self.evict_one(now, s, ask.purpose, out) {
                        self.evict_failed(now, s, ask.purpose, out);
                    }
                }
            },
            Purpose::IdleKill => {
                let Some(asked) = ask.pid else { return };
                if !self.procs.contains_key(&asked) || self.shutdown.is_some() {
                    return;
                }
                if granted.is_some() || !self.registry {
                    self.idle_kill_now(now, asked, out);
                } else if let Some(idle) = self.svcs[s].idle_kill {
                    // Claimed or busy: look again after another interval.
                    let p = self.procs.get_mut(&asked).expect("present");
                    if p.available == self.svcs[s].client_limit {
                        p.idle_deadline = Some(now + idle);
                    }
                }
            }
            Purpose::Retire => {
                if let Some(v) = granted {
                    self.kill_for(now, v, Purpose::Retire, out);
                }
            }
        }
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
        p.idle_sigint = false;
        // A process asked to go answered with a status record: it took a client (or
        // refused to die); it stays, and the next idle process is asked instead.
        let refused_eviction = p.evict.take();
        let old = p.available;
        let new = rec.available_count;
        let client_limit = self.svcs[s].client_limit;
        if self.svcs[s].reuse && !self.retired {
            if new < client_limit && !p.reported_busy {
                p.reported_busy = true;
                p.served = true;
                p.busy_since = Some(now);
                out.push(Action::Registry(Report::Busy { pid, since: now }));
            } else if new == client_limit && p.reported_busy {
                p.reported_busy = false;
                out.push(Action::Registry(Report::Idle { pid, since: now }));
            }
        }
        if new < client_limit {
            p.refused = false;
        } else if refused_eviction.is_some() {
            p.refused = true;
        }
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
        self.procs.get_mut(&pid).expect("present").available = new;
        if let Some(purpose) = refused_eviction {
            self.count_eviction(s, purpose, false);
            if matches!(purpose, Purpose::MakeRoom { .. } | Purpose::Shrink)
                && !self.evict_one(now, s, purpose, out)
            {
                self.evict_failed(now, s, purpose, out);
            }
        }
        let surplus = if self.svcs[s].reuse {
            self.procs[&pid].served || self.fresh_count(s) > self.svcs[s].min_avail
        } else {
            self.svcs[s].process_avail > self.svcs[s].min_avail
        };
        let svc = &self.svcs[s];
        let p = self.procs.get_mut(&pid).expect("present");
        if new == client_limit {
            p.idle_start = Some(now);
            if let Some(idle) = svc.idle_kill {
                if surplus && p.idle_deadline.is_none() && p.evict.is_none() && !p.asked {
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
        if self.svcs[s].reuse {
            out.push(Action::Registry(Report::Death { pid }));
        }
        {
            let svc = &mut self.svcs[s];
            svc.process_count -= 1;
            if p.available > 0 {
                svc.process_avail -= 1;
            }
        }
        out.push(Action::UnlinkPerPid { service: s, pid });
        let evicted = p.evict;
        if let Some(purpose) = evicted {
            self.count_eviction(s, purpose, false);
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
        match evicted {
            // The slot was freed for a waiting connection: fill it now.
            Some(Purpose::MakeRoom { listener: true }) => self.need_process(now, s, out),
            // The slot was freed for a FOREMAN-NEED: the owed spawn.
            Some(Purpose::MakeRoom { listener: false })
                if self.svcs[s].process_count < self.svcs[s].process_limit
                    && !self.throttled(now, s)
                    && !self.svcs[s].stopped =>
            {
                self.spawn(now, s, out);
            }
            _ => {}
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

    /// One signal round for a retired list (`shutdown_clients = yes`).
    fn reload_kill_round(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(mut k) = self.reload_kill.filter(|k| now >= k.at) else {
            return;
        };
        let sig = if k.term_sent {
            libc::SIGKILL
        } else {
            libc::SIGTERM
        };
        k.term_sent = true;
        let mut signalled: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.service != self.log)
            .map(|(&pid, _)| pid)
            .collect();
        let mut sig_used = sig;
        if signalled.is_empty() {
            // The log process last, so that the others could still log.
            sig_used = if k.log_term_sent {
                libc::SIGKILL
            } else {
                libc::SIGTERM
            };
            k.log_term_sent = true;
            signalled = self.pids(self.log);
        }
        for &pid in &signalled {
            out.push(Action::Kill {
                pid,
                signal: sig_used,
            });
        }
        if !signalled.is_empty() {
            out.push(Action::Log(
                LogLevel::Warning,
                format!(
                    "Processes aren't dying after reload, sent {} to {} processes.",
                    if sig_used == libc::SIGTERM {
                        "SIGTERM"
                    } else {
                        "SIGKILL"
                    },
                    signalled.len()
                ),
            ));
        }
        k.at = now + RELOAD_KILL_INTERVAL;
        self.reload_kill = (!self.procs.is_empty()).then_some(k);
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.reload_kill_round(now, out);
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
        let surplus = if self.svcs[s].reuse {
            self.procs[&pid].served || self.fresh_count(s) > self.svcs[s].min_avail
        } else {
            self.svcs[s].process_avail > self.svcs[s].min_avail
        };
        let p = self.procs.get_mut(&pid).expect("present");
        if !surplus || self.shutdown.is_some() || p.asked || p.evict.is_some() {
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
            p.idle_sigint = false;
            if p.available > 0 {
                p.available = 0;
                self.svcs[s].process_avail -= 1;
            }
            return;
        }
        if self.svcs[s].reuse && self.registry {
            // A registered process is killed only after EVICT returned its pid.
            self.ask_about(s, pid, Purpose::IdleKill, out);
            return;
        }
        self.idle_kill_now(now, pid, out);
    }

    fn idle_kill_now(&mut self, now: Instant, pid: u32, out: &mut Vec<Action>) {
        let s = self.procs[&pid].service;
        let interval = self.svcs[s].idle_kill.unwrap_or(Duration::MAX);
        let p = self.procs.get_mut(&pid).expect("present");
        p.last_kill_sent = Some(now);
        p.idle_deadline = now.checked_add(interval);
        p.idle_sigint = true;
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

/// On its way out: SIGINTed (eviction, retirement, idle kill) with no status since, or a
/// question about it pending in the registry.
fn dying(p: &Proc) -> bool {
    p.evict.is_some() || p.asked || p.idle_sigint
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
