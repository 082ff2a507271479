//! Drives the supervisor without processes: a small service set resolved from a config text.

use super::*;
use crate::master_compat::services::{resolve, test_settings, Resolver, ServiceSet};

struct Table;
impl Resolver for Table {
    fn user(&self, _: &str) -> Option<(u32, u32)> {
        Some((100, 100))
    }
    fn group(&self, _: &str) -> Option<u32> {
        Some(100)
    }
}

fn set(extra: &str) -> ServiceSet {
    resolve(&test_settings(extra), &Table, &[]).unwrap()
}

fn id(set: &ServiceSet, name: &str) -> ServiceId {
    set.services.iter().position(|s| s.name == name).unwrap()
}

fn status(pid: u32, generation: u32, avail: u32) -> Vec<u8> {
    StatusRecord {
        pid: pid as i32,
        generation,
        available_count: avail,
    }
    .encode()
    .to_vec()
}

/// Runs the spawns in `actions` as pids 1000, 1001, … and returns (service, generation, pid).
struct Harness {
    sup: Supervisor,
    next_pid: u32,
    now: Instant,
    spawned: Vec<(ServiceId, u32, u32)>,
}

impl Harness {
    fn new(set: &ServiceSet) -> Harness {
        Harness {
            sup: Supervisor::new(set),
            next_pid: 1000,
            now: Instant::now(),
            spawned: Vec::new(),
        }
    }

    fn ev(&mut self, e: Event) -> Vec<Action> {
        let acts = self.sup.handle(self.now, e);
        let mut all = acts.clone();
        for a in acts {
            if let Action::Spawn {
                service,
                generation,
                ..
            } = a
            {
                let pid = self.next_pid;
                self.next_pid += 1;
                self.spawned.push((service, generation, pid));
                all.extend(
                    self.sup
                        .handle(self.now, Event::Spawned { generation, pid }),
                );
            }
        }
        all
    }

    /// Every spawned process sends its initial status (fully available).
    fn init_all(&mut self, set: &ServiceSet) {
        for (s, g, pid) in self.spawned.clone() {
            let limit = set.services[s].client_limit;
            self.ev(Event::StatusData(s, status(pid, g, limit)));
        }
    }

    fn last(&self, s: ServiceId) -> (u32, u32) {
        let (_, g, p) = *self.spawned.iter().rev().find(|x| x.0 == s).unwrap();
        (g, p)
    }
}

/// True when the master logged a line containing `text`.
fn logged(acts: &[Action], text: &str) -> bool {
    acts.iter()
        .any(|a| matches!(a, Action::Log(_, m) if m.contains(text)))
}

fn spawns_of(acts: &[Action], s: ServiceId) -> usize {
    acts.iter()
        .filter(|a| matches!(a, Action::Spawn { service, .. } if *service == s))
        .count()
}

#[test]
fn start_spawns_log_then_anvil_and_listens_on_demand_services() {
    let set = set("");
    let mut h = Harness::new(&set);
    let acts = h.ev(Event::Start);
    let order: Vec<ServiceId> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { service, .. } => Some(*service),
            _ => None,
        })
        .collect();
    // Log first (stock starts process_min_avail services first): a line written before the
    // log process read its pipe's handshake waited there until the writer wrote again.
    assert_eq!(order, vec![id(&set, "log"), id(&set, "anvil")]);
    assert!(acts.contains(&Action::Listen {
        service: id(&set, "imap-login"),
        on: true
    }));
    // anvil and log are assumed available until they report: not listening.
    assert!(!acts.contains(&Action::Listen {
        service: id(&set, "anvil"),
        on: true
    }));
}

#[test]
fn demand_spawn_stops_listening_until_the_child_reports_busy() {
    let set = set("");
    let login = id(&set, "imap-login");
    let mut h = Harness::new(&set);
    h.ev(Event::Start);
    let acts = h.ev(Event::ListenerReadable(login));
    assert_eq!(spawns_of(&acts, login), 1);
    assert!(acts.contains(&Action::Listen {
        service: login,
        on: false
    }));
    let (g, pid) = h.last(login);
    // Initial status 1 (client_limit), then 0 after accept: listen again.
    let acts = h.ev(Event::StatusData(login, status(pid, g, 1)));
    assert!(acts.is_empty(), "{acts:?}");
    let acts = h.ev(Event::StatusData(login, status(pid, g, 0)));
    assert!(acts.contains(&Action::Listen {
        service: login,
        on: true
    }));
    // Normal exit: BYE to the log, no KILL to anvil, no FATAL.
    let acts = h.ev(Event::ChildExited {
        pid,
        how: ExitHow::Code(0),
    });
    let fd = set.services[login].log_fd.unwrap();
    assert!(acts.contains(&Action::LogControl(format!("{fd} {pid} BYE"))));
    assert!(!acts.iter().any(|a| matches!(a, Action::AnvilKill(_))));
}

#[test]
fn abnormal_exit_logs_fatal_and_kills_in_anvil() {
    let set = set("");
    let login = id(&set, "imap-login");
    let mut h = Harness::new(&set);
    h.ev(Event::Start);
    h.ev(Event::ListenerReadable(login));
    let (g, pid) = h.last(login);
    h.ev(Event::StatusData(login, status(pid, g, 1)));
    let acts = h.ev(Event::ChildExited {
        pid,
        how: ExitHow::Signal {
            signal: 9,
            core_dumped: false,
        },
    });
    let fd = set.services[login].log_fd.unwrap();
    assert!(acts.contains(&Action::LogControl(format!(
        "{fd} {pid} FATAL service(imap-login): child {pid} killed with signal 9"
    ))));
    assert!(acts.contains(&Action::AnvilKill(pid)));
    assert!(acts.contains(&Action::UnlinkPerPid {
        service: login,
        pid
    }));
}

#[test]
fn death_before_first_status_throttles_with_doubling_interval() {
    let set = set("");
    let login = id(&set, "imap-login");
    let mut h = Harness::new(&set);
    h.ev(Event::Start);
    h.ev(Event::ListenerReadable(login));
    let (_, pid) = h.last(login);
    let acts = h.ev(Event::ChildExited {
        pid,
        how: ExitHow::Code(84),
    });
    assert!(logged(&acts, "throttling for 2.000 secs"), "{acts:?}");
    // Throttled: not listening, readable events ignored.
    assert!(h.ev(Event::ListenerReadable(login)).is_empty());
    h.now += Duration::from_secs(2);
    let acts = h.ev(Event::Tick);
    assert!(acts.contains(&Action::Listen {
        service: login,
        on: true
    }));
    h.ev(Event::ListenerReadable(login));
    let (_, pid) = h.last(login);
    let acts = h.ev(Event::ChildExited {
        pid,
        how: ExitHow::Code(84),
    });
    assert!(logged(&acts, "throttling for 4.000 secs"), "{acts:?}");
}

#[test]
fn process_limit_reached_takes_the_drop_path() {
    let set = set("service imap-login {\n process_limit = 1\n}\n");
    let login = id(&set, "imap-login");
    let mut h = Harness::new(&set);
    h.ev(Event::Start);
    h.ev(Event::ListenerReadable(login));
    let (g, pid) = h.last(login);
    let acts = h.ev(Event::StatusData(login, status(pid, g, 0)));
    assert!(acts.contains(&Action::LoginState {
        service: login,
        full: true
    }));
    // FULL: every initialized login process gets SIGUSR1.
    assert!(acts.contains(&Action::Kill {
        pid,
        signal: libc::SIGUSR1
    }));
    let acts = h.ev(Event::ListenerReadable(login));
    assert_eq!(spawns_of(&acts, login), 0);
    assert!(
        logged(&acts, "client connections are being dropped"),
        "{acts:?}"
    );
    assert!(acts.contains(&Action::Listen {
        service: login,
        on: false
    }));
    h.now += DROP_DELAY;
    let acts = h.ev(Event::Tick);
    assert!(acts.contains(&Action::DropQueued(login)));
}

#[test]
fn idle_kill_sigints_surplus_idle_process_and_detects_ignoring() {
    let set = set("");
    let auth = id(&set, "auth");
    let mut h = Harness::new(&set);
    h.ev(Event::Start);
    h.ev(Event::ListenerReadable(auth));
    let (g, pid) = h.last(auth);
    h.init_all(&set);
    h.ev(Event::StatusData(auth, status(pid, g, 1000)));
    let deadline = h.sup.next_deadline().unwrap();
    assert!(deadline >= h.now + Duration::from_secs(60));
    assert!(deadline < h.now + Duration::from_secs(61));
    h.now = deadline;
    let acts = h.ev(Event::Tick);
    assert!(acts.contains(&Action::Kill {
        pid,
        signal: libc::SIGINT
    }));
    // No answer for a whole interval: "ignoring idle SIGINT", treated as busy.
    h.now += Duration::from_secs(61);
    let acts = h.ev(Event::Tick);
    assert!(logged(&acts, "is ignoring idle SIGINT"), "{acts:?}");
}

#[test]
fn a_child_that_turned_busy_is_not_idle_killed() {
    let set = set("");
    let auth = id(&set, "auth");
    let mut h = Harness::new(&set);
    h.ev(Event::Start);
    h.ev(Event::ListenerReadable(auth));
    let (g, pid) = h.last(auth);
    h.init_all(&set);
    h.ev(Event::StatusData(auth, status(pid, g, 999)));
    h.now += Duration::from_secs(120);
    let acts = h.ev(Event::Tick);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Kill { .. })),
        "{acts:?}"
    );
}

#[test]
fn invalid_generation_is_ignored_with_a_message() {
    let set = set("");
    let auth = id(&set, "auth");
    let mut h = Harness::new(&set);
    h.ev(Event::Start);
    h.ev(Event::ListenerReadable(auth));
    let (g, pid) = h.last(auth);
    let acts = h.ev(Event::StatusData(auth, status(pid, g + 100, 0)));
    assert!(logged(&acts, "Ignoring invalid update"), "{acts:?}");
    let acts = h.ev(Event::StatusData(auth, vec![0; 5]));
    assert!(logged(&acts, "partial status update (5 bytes)"), "{acts:?}");
}

#[test]
fn shutdown_closes_dead_pipes_then_sigquits_and_exits() {
    let set = set("");
    let mut h = Harness::new(&set);
    h.ev(Event::Start);
    let acts = h.ev(Event::Shutdown);
    assert!(acts.contains(&Action::CloseDeadPipes));
    // anvil and log still count as available: wait.
    assert!(!acts.contains(&Action::Exit));
    let mut acts = Vec::new();
    for (s, g, pid) in h.spawned.clone() {
        acts.extend(h.ev(Event::StatusData(s, status(pid, g, 0))));
    }
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::Kill { signal, .. } if *signal == libc::SIGQUIT)));
    h.now += SHUTDOWN_QUIT_PAUSE;
    assert!(h.ev(Event::Tick).contains(&Action::Exit));
}

#[test]
fn log_process_is_restarted_at_once() {
    let set = set("");
    let log = set.log;
    let mut h = Harness::new(&set);
    h.ev(Event::Start);
    let (_, pid) = h.last(log);
    let acts = h.ev(Event::ChildExited {
        pid,
        how: ExitHow::Signal {
            signal: 9,
            core_dumped: false,
        },
    });
    assert_eq!(spawns_of(&acts, log), 1);
}

#[test]
fn anvil_restart_is_flagged() {
    let set = set("");
    let anvil = set.anvil.unwrap();
    let mut h = Harness::new(&set);
    h.ev(Event::Start);
    let (g, pid) = h.last(anvil);
    h.ev(Event::StatusData(anvil, status(pid, g, 1000)));
    assert!(h.sup.anvil_running());
    let acts = h.ev(Event::ChildExited {
        pid,
        how: ExitHow::Code(0),
    });
    assert!(acts.iter().any(
        |a| matches!(a, Action::Spawn { service, anvil_restarted: true, .. } if *service == anvil)
    ));
}

#[test]
fn per_pid_listener_closed_while_full_and_reopened_when_free() {
    let set = set(
        "service imap {\n service_count = 0\n client_limit = 2\n unix_listener imap-master-%{pid} {\n mode = 0666\n }\n}\n",
    );
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    h.ev(Event::Start);
    h.ev(Event::ListenerReadable(imap));
    let (g, pid) = h.last(imap);
    assert!(h.ev(Event::StatusData(imap, status(pid, g, 2))).is_empty());
    let acts = h.ev(Event::StatusData(imap, status(pid, g, 1)));
    assert!(!acts.iter().any(|a| matches!(a, Action::PerPidMode { .. })));
    let acts = h.ev(Event::StatusData(imap, status(pid, g, 0)));
    assert!(acts.contains(&Action::PerPidMode {
        service: imap,
        pid,
        open: false
    }));
    let acts = h.ev(Event::StatusData(imap, status(pid, g, 1)));
    assert!(acts.contains(&Action::PerPidMode {
        service: imap,
        pid,
        open: true
    }));
    // Services without per-pid listeners never get chmod actions.
    let login = id(&set, "imap-login");
    h.ev(Event::ListenerReadable(login));
    let (g, pid) = h.last(login);
    let acts = h.ev(Event::StatusData(login, status(pid, g, 0)));
    assert!(!acts.iter().any(|a| matches!(a, Action::PerPidMode { .. })));
}

#[test]
fn retired_list_reaps_but_never_spawns_and_anvil_moves_to_the_new_list() {
    let set = set("");
    let anvil = set.anvil.unwrap();
    let mut old = Harness::new(&set);
    old.ev(Event::Start);
    old.init_all(&set);
    let (_, anvil_pid) = old.last(anvil);
    let (_, log_pid) = old.last(set.log);

    let mut new = Harness::new(&set);
    new.next_pid = 5000;
    new.sup.set_next_generation(old.sup.next_generation());
    new.sup.adopt_anvil(old.sup.release_anvil());
    assert!(new.sup.anvil_running());
    assert!(!old.sup.anvil_running());
    let acts = new.ev(Event::Start);
    // Only a new log process: anvil was adopted.
    assert_eq!(spawns_of(&acts, anvil), 0);
    assert_eq!(spawns_of(&acts, set.log), 1);
    let new_gens: Vec<u32> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { generation, .. } => Some(*generation),
            _ => None,
        })
        .collect();
    assert!(new_gens.iter().all(|&g| g >= old.sup.next_generation()));

    let acts = old.ev(Event::Retire);
    assert!(acts.contains(&Action::CloseDeadPipes));
    assert!(old
        .ev(Event::ListenerReadable(id(&set, "imap-login")))
        .is_empty());
    // The old log process exits: reaped, not replaced.
    let acts = old.ev(Event::ChildExited {
        pid: log_pid,
        how: ExitHow::Code(0),
    });
    assert_eq!(spawns_of(&acts, set.log), 0);
    assert!(
        old.sup.is_empty(),
        "{:?} {:?}",
        old.sup.all_pids(),
        old.spawned
    );
    // The anvil is reaped by its new owner.
    assert_eq!(new.sup.service_of(anvil_pid), Some(anvil));
}

#[test]
fn shutdown_clients_signals_retired_processes_term_then_kill_log_last() {
    let set = set("service imap {\n service_count = 0\n}\n");
    let imap = id(&set, "imap");
    let log = id(&set, "log");
    let mut h = Harness::new(&set);
    h.sup.set_shutdown_clients(true);
    h.ev(Event::Start);
    h.init_all(&set);
    h.ev(Event::ListenerReadable(imap));
    let (_, pid) = h.last(imap);
    let (_, log_pid) = h.last(log);
    h.ev(Event::Retire);
    let signals = |acts: &[Action]| -> Vec<(u32, i32)> {
        acts.iter()
            .filter_map(|a| match a {
                Action::Kill { pid, signal } => Some((*pid, *signal)),
                _ => None,
            })
            .collect()
    };
    h.now += Duration::from_secs(5);
    assert!(signals(&h.ev(Event::Tick)).is_empty(), "not before 6 s");
    h.now += Duration::from_secs(1);
    assert_eq!(h.sup.next_deadline(), Some(h.now), "the round is due");
    let acts = h.ev(Event::Tick);
    let sent = signals(&acts);
    assert!(sent.contains(&(pid, libc::SIGTERM)));
    assert!(!sent.iter().any(|&(p, _)| p == log_pid), "log last");
    assert!(logged(
        &acts,
        "Processes aren't dying after reload, sent SIGTERM to"
    ));
    h.now += Duration::from_secs(6);
    let acts = h.ev(Event::Tick);
    assert!(signals(&acts).contains(&(pid, libc::SIGKILL)));
    // Only the log process is left: SIGTERM, then SIGKILL.
    for p in h.sup.all_pids() {
        if p != log_pid {
            h.ev(Event::ChildExited {
                pid: p,
                how: ExitHow::Signal {
                    signal: 9,
                    core_dumped: false,
                },
            });
        }
    }
    h.now += Duration::from_secs(6);
    assert_eq!(signals(&h.ev(Event::Tick)), vec![(log_pid, libc::SIGTERM)]);
    h.now += Duration::from_secs(6);
    assert_eq!(signals(&h.ev(Event::Tick)), vec![(log_pid, libc::SIGKILL)]);
    // Without shutdown_clients nothing is signalled.
    let mut h = Harness::new(&set);
    h.ev(Event::Start);
    h.init_all(&set);
    h.ev(Event::Retire);
    h.now += Duration::from_secs(30);
    assert!(signals(&h.ev(Event::Tick)).is_empty());
}

fn eviction_set() -> ServiceSet {
    // imap processes that stay after their client leaves (service_count = 0), one client
    // each; eviction starts at 3 - 1 = 2 processes.
    set("service imap {\n service_count = 0\n process_limit = 3\n process_limit_margin = 1\n}\n")
}

/// Two idle imap processes (the first idle since earlier).
fn two_idle(h: &mut Harness, set: &ServiceSet) -> [(u32, u32); 2] {
    let imap = id(set, "imap");
    h.ev(Event::Start);
    h.init_all(set);
    let mut out = [(0, 0); 2];
    for slot in &mut out {
        let acts = h.ev(Event::NeedProcess(imap));
        assert_eq!(spawns_of(&acts, imap), 1);
        let (g, pid) = h.last(imap);
        h.ev(Event::StatusData(imap, status(pid, g, 1)));
        *slot = (g, pid);
        h.now += Duration::from_secs(1);
    }
    out
}

#[test]
fn eviction_sigints_the_longest_idle_and_spawns_when_it_is_gone() {
    let set = eviction_set();
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    let [(_, first), _] = two_idle(&mut h, &set);
    let acts = h.ev(Event::NeedProcess(imap));
    assert_eq!(spawns_of(&acts, imap), 0, "at the threshold: no spawn");
    assert!(acts.contains(&Action::Kill {
        pid: first,
        signal: libc::SIGINT
    }));
    // While the eviction is in flight, further needs wait (no second victim, no spawn).
    let acts = h.ev(Event::NeedProcess(imap));
    assert!(!acts
        .iter()
        .any(|a| matches!(a, Action::Kill { .. } | Action::Spawn { .. })));
    let acts = h.ev(Event::ChildExited {
        pid: first,
        how: ExitHow::Code(0),
    });
    assert_eq!(
        spawns_of(&acts, imap),
        1,
        "the freed slot is filled at once"
    );
}

#[test]
fn an_evicted_process_that_turned_busy_stays_and_the_next_idle_one_is_asked() {
    let set = eviction_set();
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    let [(g1, first), (_, second)] = two_idle(&mut h, &set);
    h.ev(Event::NeedProcess(imap));
    // The first one accepted a client before the SIGINT was handled: status 0.
    let acts = h.ev(Event::StatusData(imap, status(first, g1, 0)));
    assert!(acts.contains(&Action::Kill {
        pid: second,
        signal: libc::SIGINT
    }));
    assert!(!acts.contains(&Action::Kill {
        pid: first,
        signal: libc::SIGINT
    }));
}

#[test]
fn busy_processes_are_never_evicted() {
    let set = eviction_set();
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    let [(g1, first), (g2, second)] = two_idle(&mut h, &set);
    h.ev(Event::StatusData(imap, status(first, g1, 0)));
    h.ev(Event::StatusData(imap, status(second, g2, 0)));
    // Nobody idle: below process_limit a third process starts (the margin is soft)…
    let acts = h.ev(Event::NeedProcess(imap));
    assert!(!acts.iter().any(|a| matches!(a, Action::Kill { .. })));
    assert_eq!(spawns_of(&acts, imap), 1);
    let (g3, third) = h.last(imap);
    h.ev(Event::StatusData(imap, status(third, g3, 0)));
    // …and at process_limit with everyone busy the drop path remains.
    let acts = h.ev(Event::NeedProcess(imap));
    assert!(!acts
        .iter()
        .any(|a| matches!(a, Action::Kill { .. } | Action::Spawn { .. })));
    assert!(
        logged(&acts, "client connections are being dropped"),
        "{acts:?}"
    );
}

fn reuse_set(extra: &str) -> ServiceSet {
    // One client per process, kept after the client leaves; threshold 4 - 1 = 3.
    reuse_set_limits(4, 1, extra)
}

fn reuse_set_limits(limit: u32, margin: u32, extra: &str) -> ServiceSet {
    set(&format!(
        "service imap {{\n service_count = 0\n client_limit = 1\n process_limit = {limit}\n \
         process_limit_margin = {margin}\n process_min_avail = 1\n{extra}\n \
         unix_listener imap-master-%{{pid}} {{\n mode = 0600\n }}\n}}\n"
    ))
}

fn reports(acts: &[Action]) -> Vec<Report> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Registry(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn asks(acts: &[Action]) -> Vec<Option<u32>> {
    acts.iter()
        .filter_map(|a| match a {
            Action::AskEvict { pid, .. } => Some(*pid),
            _ => None,
        })
        .collect()
}

fn sigints(acts: &[Action]) -> Vec<u32> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Kill { pid, signal } if *signal == libc::SIGINT => Some(*pid),
            _ => None,
        })
        .collect()
}

/// Imap processes of the reuse set: `served` of them served a client and are idle again
/// (oldest first), plus the one fresh spare process_min_avail keeps. Returns the served
/// ones (generation, pid) and the fresh one.
fn pool(
    h: &mut Harness,
    set: &ServiceSet,
    served: usize,
    registry: bool,
) -> (Vec<(u32, u32)>, (u32, u32)) {
    let imap = id(set, "imap");
    h.ev(Event::Start);
    if registry {
        h.ev(Event::RegistryConnected(true));
    }
    h.init_all(set);
    let mut out = Vec::new();
    for _ in 0..served {
        let (g, pid) = h.last(imap);
        // The spare takes a client: busy, and a new spare is spawned.
        let acts = h.ev(Event::StatusData(imap, status(pid, g, 0)));
        assert_eq!(spawns_of(&acts, imap), 1, "{acts:?}");
        let (ng, npid) = h.last(imap);
        h.ev(Event::StatusData(imap, status(npid, ng, 1)));
        h.now += Duration::from_secs(1);
        h.ev(Event::StatusData(imap, status(pid, g, 1)));
        out.push((g, pid));
    }
    let fresh = h.last(imap);
    (out, fresh)
}

#[test]
fn reuse_pool_reports_birth_busy_idle_and_death() {
    let set = reuse_set("");
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    let acts = h.ev(Event::Start);
    let (g, pid) = h.last(imap);
    assert_eq!(
        reports(&acts),
        vec![Report::Birth {
            service: imap,
            pid,
            uid: 0,
            used: false
        }],
        "one fresh spare, reported at once"
    );
    // Its first status (idle) changes nothing: it is still fresh.
    assert!(reports(&h.ev(Event::StatusData(imap, status(pid, g, 1)))).is_empty());
    let t_busy = h.now;
    let acts = h.ev(Event::StatusData(imap, status(pid, g, 0)));
    let (_, spare) = h.last(imap);
    assert_eq!(
        reports(&acts),
        vec![
            Report::Busy { pid, since: t_busy },
            Report::Birth {
                service: imap,
                pid: spare,
                uid: 0,
                used: false
            }
        ],
        "busy, and process_min_avail counts fresh processes: a new spare"
    );
    h.now += Duration::from_secs(3);
    let acts = h.ev(Event::StatusData(imap, status(pid, g, 1)));
    assert_eq!(reports(&acts), vec![Report::Idle { pid, since: h.now }]);
    assert_eq!(
        spawns_of(&acts, imap),
        0,
        "an idle served process is not a spare"
    );
    let acts = h.ev(Event::ChildExited {
        pid,
        how: ExitHow::Signal {
            signal: 9,
            core_dumped: false,
        },
    });
    assert_eq!(reports(&acts), vec![Report::Death { pid }]);
    // Services without a %{pid} listener report nothing.
    let plain = eviction_set();
    let mut h = Harness::new(&plain);
    let acts = h.ev(Event::Start);
    assert!(reports(&acts).is_empty());
}

#[test]
fn need_spawns_fresh_processes_up_to_waiting_plus_min_avail_once() {
    let set = reuse_set("");
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    h.ev(Event::Start);
    h.ev(Event::RegistryConnected(true));
    let acts = h.ev(Event::NeedFresh {
        service: imap,
        waiting: 2,
    });
    assert_eq!(spawns_of(&acts, imap), 2, "1 spare + 2 = 3 fresh");
    assert!(asks(&acts).is_empty(), "below the threshold: no eviction");
    // The same number again (spawns still pending or running): nothing more.
    let acts = h.ev(Event::NeedFresh {
        service: imap,
        waiting: 2,
    });
    assert_eq!(spawns_of(&acts, imap), 0);
    assert!(asks(&acts).is_empty());
    h.init_all(&set);
    let acts = h.ev(Event::NeedFresh {
        service: imap,
        waiting: 2,
    });
    assert_eq!(spawns_of(&acts, imap), 0);
}

#[test]
fn need_at_the_threshold_spawns_into_the_margin_and_evicts_what_the_registry_returns() {
    let set = reuse_set("");
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    let (served, _fresh) = pool(&mut h, &set, 2, true);
    // 3 processes = the threshold; one login waits.
    let acts = h.ev(Event::NeedFresh {
        service: imap,
        waiting: 1,
    });
    assert_eq!(spawns_of(&acts, imap), 1, "a login never waits for a death");
    assert_eq!(asks(&acts), vec![None], "and one idle process is to go");
    assert!(
        sigints(&acts).is_empty(),
        "nothing killed before EVICT answers"
    );
    // Repeating the need changes nothing: the spawn and the eviction are under way.
    let acts = h.ev(Event::NeedFresh {
        service: imap,
        waiting: 1,
    });
    assert_eq!(spawns_of(&acts, imap), 0);
    assert!(asks(&acts).is_empty(), "{acts:?}");
    // The registry picks the second served process (not the longest idle): it is killed.
    let victim = served[1].1;
    let acts = h.ev(Event::EvictAnswer {
        service: imap,
        pid: Some(victim),
    });
    assert_eq!(sigints(&acts), vec![victim]);
    let acts = h.ev(Event::ChildExited {
        pid: victim,
        how: ExitHow::Code(0),
    });
    assert_eq!(spawns_of(&acts, imap), 0, "a shrink owes no spawn");
    assert_eq!(reports(&acts), vec![Report::Death { pid: victim }]);
}

#[test]
fn need_at_process_limit_evicts_and_spawns_when_the_slot_frees() {
    // No margin: threshold = process_limit = 4 = 3 served idle + 1 fresh.
    let set = reuse_set_limits(4, 0, "");
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    let (served, _fresh) = pool(&mut h, &set, 3, true);
    let acts = h.ev(Event::NeedFresh {
        service: imap,
        waiting: 1,
    });
    assert_eq!(spawns_of(&acts, imap), 0);
    assert_eq!(asks(&acts), vec![None], "one eviction to make room");
    let acts = h.ev(Event::EvictAnswer {
        service: imap,
        pid: Some(served[0].1),
    });
    assert_eq!(sigints(&acts), vec![served[0].1]);
    // The same need again while the eviction runs: the owed spawn counts.
    let acts = h.ev(Event::NeedFresh {
        service: imap,
        waiting: 1,
    });
    assert_eq!(spawns_of(&acts, imap), 0);
    assert!(asks(&acts).is_empty());
    let acts = h.ev(Event::ChildExited {
        pid: served[0].1,
        how: ExitHow::Code(0),
    });
    assert_eq!(
        spawns_of(&acts, imap),
        1,
        "the owed spawn, as soon as the slot is free"
    );
    // Everybody busy or claimed: the registry has nothing, nothing is killed or spawned.
    let acts = h.ev(Event::NeedFresh {
        service: imap,
        waiting: 3,
    });
    assert_eq!(asks(&acts), vec![None, None]);
    for _ in 0..2 {
        let acts = h.ev(Event::EvictAnswer {
            service: imap,
            pid: None,
        });
        assert!(sigints(&acts).is_empty());
        assert_eq!(spawns_of(&acts, imap), 0);
    }
}

#[test]
fn a_pid_the_registry_did_not_return_is_never_killed() {
    let set = reuse_set_limits(4, 0, "");
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    let (served, (_, fresh)) = pool(&mut h, &set, 3, true);
    h.ev(Event::NeedFresh {
        service: imap,
        waiting: 2,
    });
    // An unknown pid, a fresh spare's pid for the other question: neither is killed.
    let acts = h.ev(Event::EvictAnswer {
        service: imap,
        pid: Some(99_999),
    });
    assert!(sigints(&acts).is_empty());
    assert!(
        asks(&acts).is_empty(),
        "the registry said it has nothing: no retry"
    );
    let acts = h.ev(Event::EvictAnswer {
        service: imap,
        pid: Some(served[2].1),
    });
    assert_eq!(sigints(&acts), vec![served[2].1]);
    assert!(!sigints(&acts).contains(&fresh));
    // An answer nobody asked for is logged and ignored.
    let acts = h.ev(Event::EvictAnswer {
        service: imap,
        pid: Some(served[1].1),
    });
    assert!(sigints(&acts).is_empty());
    assert!(logged(&acts, "nobody asked"));
}

#[test]
fn without_a_registry_the_longest_idle_served_process_is_evicted() {
    let set = reuse_set_limits(4, 0, "");
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    let (served, (_, fresh)) = pool(&mut h, &set, 3, false);
    let acts = h.ev(Event::NeedFresh {
        service: imap,
        waiting: 2,
    });
    assert!(asks(&acts).is_empty());
    let killed = sigints(&acts);
    assert_eq!(killed, vec![served[0].1, served[1].1], "{acts:?}");
    assert!(!killed.contains(&fresh), "a fresh spare is never evicted");
}

#[test]
fn a_registry_that_goes_away_with_questions_pending_falls_back() {
    let set = reuse_set_limits(4, 0, "");
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    let (served, _) = pool(&mut h, &set, 3, true);
    let acts = h.ev(Event::NeedFresh {
        service: imap,
        waiting: 2,
    });
    assert_eq!(asks(&acts).len(), 2);
    let acts = h.ev(Event::RegistryConnected(false));
    assert_eq!(sigints(&acts), vec![served[0].1, served[1].1]);
    // Answers arriving later have no question any more.
    let acts = h.ev(Event::EvictAnswer {
        service: imap,
        pid: Some(served[2].1),
    });
    assert!(sigints(&acts).is_empty());
}

#[test]
fn an_evicted_process_that_turns_busy_makes_the_master_ask_for_the_next() {
    let set = reuse_set("");
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    let (served, _) = pool(&mut h, &set, 2, true);
    h.ev(Event::NeedFresh {
        service: imap,
        waiting: 1,
    });
    let (g, victim) = served[0];
    h.ev(Event::EvictAnswer {
        service: imap,
        pid: Some(victim),
    });
    let acts = h.ev(Event::StatusData(imap, status(victim, g, 0)));
    assert_eq!(asks(&acts), vec![None], "{acts:?}");
    assert!(sigints(&acts).is_empty());
}

#[test]
fn idle_kill_of_a_registered_process_waits_for_evict() {
    let set = reuse_set(" idle_kill = 10 secs\n");
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    let (served, _) = pool(&mut h, &set, 1, true);
    let (_, pid) = served[0];
    h.now += Duration::from_secs(12);
    let acts = h.ev(Event::Tick);
    assert_eq!(asks(&acts), vec![Some(pid)]);
    assert!(sigints(&acts).is_empty());
    // Claimed meanwhile: the registry says none; nothing is killed, the timer re-arms.
    let acts = h.ev(Event::EvictAnswer {
        service: imap,
        pid: None,
    });
    assert!(sigints(&acts).is_empty());
    h.now += Duration::from_secs(11);
    let acts = h.ev(Event::Tick);
    assert_eq!(asks(&acts), vec![Some(pid)]);
    let acts = h.ev(Event::EvictAnswer {
        service: imap,
        pid: Some(pid),
    });
    assert_eq!(sigints(&acts), vec![pid]);
}

#[test]
fn after_an_anvil_restart_every_process_is_reported_again_and_served_idle_ones_retire() {
    let set = reuse_set("");
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    let (served, (_, fresh)) = pool(&mut h, &set, 2, false);
    let (g1, busy) = served[1];
    h.ev(Event::StatusData(imap, status(busy, g1, 0)));
    let idle = served[0].1;
    let acts = h.ev(Event::RegistryConnected(true));
    let rep = reports(&acts);
    let births: Vec<u32> = rep
        .iter()
        .filter_map(|r| match r {
            Report::Birth { pid, .. } => Some(*pid),
            _ => None,
        })
        .collect();
    assert_eq!(births.len(), 3);
    for pid in [idle, busy, fresh] {
        assert!(births.contains(&pid));
    }
    // Used processes are born busy in one command: no claim can see them fresh.
    let used: Vec<u32> = rep
        .iter()
        .filter_map(|r| match r {
            Report::Birth {
                pid, used: true, ..
            } => Some(*pid),
            _ => None,
        })
        .collect();
    assert_eq!(used.len(), 2, "both served ones are never fresh again");
    assert!(!used.contains(&fresh));
    assert!(!rep.iter().any(|r| matches!(r, Report::Busy { .. })));
    assert_eq!(asks(&acts), vec![Some(idle)], "the idle served one retires");
    let acts = h.ev(Event::EvictAnswer {
        service: imap,
        pid: Some(idle),
    });
    assert_eq!(sigints(&acts), vec![idle]);
}

#[test]
fn a_retired_list_reports_its_processes_busy_and_never_idle_again() {
    let set = reuse_set("");
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    let (served, (fg, fresh)) = pool(&mut h, &set, 1, true);
    let acts = h.ev(Event::Retire);
    let mut busy: Vec<u32> = reports(&acts)
        .iter()
        .filter_map(|r| match r {
            Report::Busy { pid, .. } => Some(*pid),
            _ => None,
        })
        .collect();
    busy.sort_unstable();
    assert_eq!(busy, vec![served[0].1, fresh]);
    // A status record (its client left) does not make it claimable again.
    h.ev(Event::StatusData(imap, status(fresh, fg, 0)));
    let acts = h.ev(Event::StatusData(imap, status(fresh, fg, 1)));
    assert!(reports(&acts).is_empty(), "{acts:?}");
    // Reconnected: born again, busy, never asked to retire (it is leaving anyway).
    h.ev(Event::RegistryConnected(false));
    let acts = h.ev(Event::RegistryConnected(true));
    assert!(asks(&acts).is_empty());
    assert_eq!(
        reports(&acts)
            .iter()
            .filter(|r| matches!(r, Report::Birth { used: true, .. }))
            .count(),
        2
    );
    // Deaths are still reported.
    let acts = h.ev(Event::ChildExited {
        pid: fresh,
        how: ExitHow::Code(0),
    });
    assert_eq!(reports(&acts), vec![Report::Death { pid: fresh }]);
}

#[test]
fn a_huge_need_asks_at_most_once_per_process_that_could_go() {
    let set = reuse_set_limits(4, 0, "");
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    pool(&mut h, &set, 3, true);
    let acts = h.ev(Event::NeedFresh {
        service: imap,
        waiting: u32::MAX,
    });
    assert_eq!(
        asks(&acts).len(),
        3,
        "three served processes, three questions"
    );
    let acts = h.ev(Event::NeedFresh {
        service: imap,
        waiting: u32::MAX,
    });
    assert!(asks(&acts).is_empty(), "{acts:?}");
}

#[test]
fn a_need_repeats_the_idle_reports_of_served_processes_before_asking() {
    let set = reuse_set_limits(4, 0, "");
    let imap = id(&set, "imap");
    let mut h = Harness::new(&set);
    let (served, (_, fresh)) = pool(&mut h, &set, 3, true);
    let acts = h.ev(Event::NeedFresh {
        service: imap,
        waiting: 1,
    });
    let idle: Vec<u32> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Registry(Report::Idle { pid, .. }) => Some(*pid),
            _ => None,
        })
        .collect();
    let mut want: Vec<u32> = served.iter().map(|s| s.1).collect();
    want.sort_unstable();
    assert_eq!(idle, want, "the fresh one {fresh} is not repeated");
    // The EVICT comes after the repeated reports (same connection, so anvil sees them first).
    let first_ask = acts
        .iter()
        .position(|a| matches!(a, Action::AskEvict { .. }))
        .unwrap();
    let last_idle = acts
        .iter()
        .rposition(|a| matches!(a, Action::Registry(Report::Idle { .. })))
        .unwrap();
    assert!(last_idle < first_ask);
}

mod random_sequences {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Readable(usize),
        Need(usize),
        /// Status for the n-th live process with this fraction of its client_limit.
        Status(usize, u8),
        Garbage(usize, usize),
        Exit(usize, i32),
        Signaled(usize),
        Advance(u32),
        SpawnFails,
        Shutdown,
        Retire,
        /// FOREMAN-NEED for the reuse pool.
        NeedFresh(u32),
        Registry(bool),
        /// Answer the oldest EVICT: 0 none, 1 a live pid of the service (the asked one if
        /// the question was about one), 2 a pid nobody has.
        Answer(u8, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..40).prop_map(Op::Readable),
            2 => (0usize..40).prop_map(Op::Need),
            6 => (0usize..50, 0u8..=4).prop_map(|(p, f)| Op::Status(p, f)),
            1 => (0usize..40, 0usize..30).prop_map(|(s, n)| Op::Garbage(s, n)),
            3 => (0usize..50, 0i32..3).prop_map(|(p, c)| Op::Exit(p, c)),
            1 => (0usize..50).prop_map(Op::Signaled),
            3 => (0u32..70_000).prop_map(Op::Advance),
            1 => Just(Op::SpawnFails),
            1 => Just(Op::Shutdown),
            1 => Just(Op::Retire),
            3 => (0u32..4).prop_map(Op::NeedFresh),
            2 => any::<bool>().prop_map(Op::Registry),
            5 => (0u8..3, 0usize..50).prop_map(|(k, i)| Op::Answer(k, i)),
        ]
    }

    fn check_invariants(sup: &Supervisor) {
        for (s, svc) in sup.svcs.iter().enumerate() {
            let procs: Vec<&Proc> = sup.procs.values().filter(|p| p.service == s).collect();
            let pending = sup.pending.values().filter(|&&x| x == s).count() as u32;
            assert_eq!(
                svc.process_count,
                procs.len() as u32 + pending,
                "{}",
                svc.name
            );
            let avail = procs.iter().filter(|p| p.available > 0).count() as u32 + pending;
            assert_eq!(svc.process_avail, avail, "{}", svc.name);
            assert!(svc.process_count <= svc.process_limit, "{}", svc.name);
            let asked = |want: fn(&Purpose) -> bool| {
                sup.asks
                    .iter()
                    .filter(|a| a.service == s && want(&a.purpose))
                    .count() as u32
            };
            let making_room = procs
                .iter()
                .filter(|p| matches!(p.evict, Some(Purpose::MakeRoom { .. })))
                .count() as u32;
            assert_eq!(
                svc.owed,
                making_room + asked(|p| matches!(p, Purpose::MakeRoom { .. })),
                "{}",
                svc.name
            );
            let shrinking = procs
                .iter()
                .filter(|p| p.evict == Some(Purpose::Shrink))
                .count() as u32;
            assert_eq!(
                svc.shrinking,
                shrinking + asked(|p| *p == Purpose::Shrink),
                "{}",
                svc.name
            );
        }
        for (pid, p) in &sup.procs {
            let questions = sup.asks.iter().filter(|a| a.pid == Some(*pid)).count();
            assert_eq!(usize::from(p.asked), questions, "pid {pid}");
        }
        if !sup.registry {
            assert!(sup.asks.is_empty());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn bookkeeping_holds_for_any_event_sequence(ops in proptest::collection::vec(op(), 1..120)) {
            let set = set(
                "service imap {\n service_count = 0\n client_limit = 4\n process_limit = 3\n \
                 process_limit_margin = 1\n idle_kill = 5 secs\n}\n\
                 service imap-login {\n process_limit = 2\n process_min_avail = 1\n}\n\
                 service pooled {\n executable = imap\n service_count = 0\n client_limit = 1\n process_limit = 4\n \
                 process_limit_margin = 1\n process_min_avail = 1\n idle_kill = 5 secs\n \
                 unix_listener pooled-%{pid} {\n mode = 0600\n }\n}\n",
            );
            let pool = id(&set, "pooled");
            // Pids the registry knows (born, not dead), as the reports say.
            let mut registered = std::collections::BTreeSet::new();
            let n = set.services.len();
            let mut sup = Supervisor::new(&set);
            let mut now = Instant::now();
            let mut next_pid = 100u32;
            let mut fail_next_spawn = false;
            let mut queue = vec![Event::Start];
            for op in ops {
                queue.push(match op {
                    Op::Readable(s) => Event::ListenerReadable(s % n),
                    Op::Need(s) => Event::NeedProcess(s % n),
                    Op::Status(i, f) => {
                        let live: Vec<(u32, u32, ServiceId)> =
                            sup.procs.iter().map(|(&pid, p)| (pid, p.generation, p.service)).collect();
                        if live.is_empty() { continue; }
                        let (pid, g, s) = live[i % live.len()];
                        let limit = set.services[s].client_limit;
                        let avail = (u64::from(limit) * u64::from(f) / 4) as u32;
                        Event::StatusData(s, status(pid, g, avail))
                    }
                    Op::Garbage(s, len) => Event::StatusData(s % n, vec![7; len]),
                    Op::Exit(..) | Op::Signaled(_) if sup.procs.is_empty() => continue,
                    Op::Exit(i, code) => {
                        let pids: Vec<u32> = sup.procs.keys().copied().collect();
                        Event::ChildExited { pid: pids[i % pids.len()], how: ExitHow::Code(code) }
                    }
                    Op::Signaled(i) => {
                        let pids: Vec<u32> = sup.procs.keys().copied().collect();
                        Event::ChildExited {
                            pid: pids[i % pids.len()],
                            how: ExitHow::Signal { signal: 9, core_dumped: false },
                        }
                    }
                    Op::Advance(ms) => {
                        now += Duration::from_millis(u64::from(ms));
                        Event::Tick
                    }
                    Op::SpawnFails => {
                        fail_next_spawn = true;
                        continue;
                    }
                    Op::Shutdown => Event::Shutdown,
                    Op::Retire => Event::Retire,
                    Op::NeedFresh(w) => Event::NeedFresh { service: pool, waiting: w },
                    Op::Registry(up) => Event::RegistryConnected(up),
                    Op::Answer(k, i) => {
                        let Some(ask) = sup.asks.front().copied() else { continue };
                        let live: Vec<u32> = sup.pids(ask.service);
                        let pid = match k {
                            0 => None,
                            1 => ask.pid.or_else(|| (!live.is_empty()).then(|| live[i % live.len()])),
                            _ => Some(1),
                        };
                        Event::EvictAnswer { service: ask.service, pid }
                    }
                });
                while let Some(ev) = queue.pop() {
                    // The registry gone is the one moment the own choice takes over.
                    let registry_before =
                        sup.registry && ev != Event::RegistryConnected(false);
                    let named = match &ev {
                        Event::EvictAnswer { pid, .. } => *pid,
                        _ => None,
                    };
                    let acts = sup.handle(now, ev);
                    for a in &acts {
                        match a {
                            // A registered process is killed only with the registry's consent
                            // (or without a registry: the own choice).
                            Action::Kill { pid, signal } if *signal == libc::SIGINT
                                && registry_before
                                && sup.service_of(*pid) == Some(pool) =>
                            {
                                prop_assert_eq!(Some(*pid), named, "{:?}", acts);
                            }
                            Action::Registry(Report::Birth { pid, service, .. }) => {
                                prop_assert_eq!(*service, pool);
                                registered.insert(*pid);
                            }
                            Action::Registry(Report::Idle { pid, .. } | Report::Busy { pid, .. }) => {
                                prop_assert!(registered.contains(pid), "report before birth: {}", pid);
                            }
                            Action::Registry(Report::Death { pid }) => {
                                prop_assert!(registered.remove(pid), "death before birth: {}", pid);
                            }
                            _ => {}
                        }
                    }
                    for a in acts {
                        if let Action::Spawn { generation, .. } = a {
                            if std::mem::take(&mut fail_next_spawn) {
                                queue.push(Event::SpawnFailed { generation, error: "EAGAIN".into() });
                            } else {
                                queue.push(Event::Spawned { generation, pid: next_pid });
                                next_pid += 1;
                            }
                        }
                    }
                    check_invariants(&sup);
                }
            }
        }
    }
}
