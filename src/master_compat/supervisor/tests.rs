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
fn start_spawns_anvil_then_log_and_listens_on_demand_services() {
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
    assert_eq!(order, vec![id(&set, "anvil"), id(&set, "log")]);
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
            let evicting = procs.iter().filter(|p| p.evicting).count() as u32;
            assert_eq!(svc.evictions_in_flight, evicting, "{}", svc.name);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn bookkeeping_holds_for_any_event_sequence(ops in proptest::collection::vec(op(), 1..120)) {
            let set = set(
                "service imap {\n service_count = 0\n client_limit = 4\n process_limit = 3\n \
                 process_limit_margin = 1\n idle_kill = 5 secs\n}\n\
                 service imap-login {\n process_limit = 2\n process_min_avail = 1\n}\n",
            );
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
                });
                while let Some(ev) = queue.pop() {
                    for a in sup.handle(now, ev) {
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
