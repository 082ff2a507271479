//! Processes from /proc: which processes a master started, for tests and benchmarks that
//! must find (and only ever signal) the processes of their own instance.

use std::fs;

/// One process as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    /// The kernel's command name (`/proc/<pid>/stat` field 2, without parentheses).
    pub comm: String,
    /// The state letter (`R`, `S`, `Z`, …).
    pub state: char,
    /// The command line with NULs as separators replaced by spaces (Dovecot's process titles
    /// overwrite it, e.g. `dovecot-<instance>/imap [alice 127.0.0.1]`).
    pub cmdline: String,
}

impl Proc {
    /// The service name from a Dovecot process title: the basename of its first word.
    pub fn title_name(&self) -> &str {
        let first = self.cmdline.split(' ').next().unwrap_or("");
        first.rsplit('/').next().unwrap_or(first)
    }
}

/// The live (not zombie) children of `parent`, sorted by pid.
pub fn children_of(parent: u32) -> Vec<Proc> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<Proc> = dir
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_proc_with_parent)
        .filter(|(ppid, p)| *ppid == parent && p.state != 'Z')
        .map(|(_, p)| p)
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

/// The fields of `/proc/<pid>/stat` used here.
struct Stat {
    comm: String,
    state: char,
    ppid: u32,
    /// utime + stime, in clock ticks.
    own_ticks: u64,
    /// cutime + cstime (reaped children), in clock ticks.
    children_ticks: u64,
}

fn parse_stat(stat: &str) -> Option<Stat> {
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split at the last ')'.
    let (head, tail) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    // After the state: ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
    // utime(11) stime(12) cutime(13) cstime(14).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(Stat {
        comm,
        state,
        ppid,
        own_ticks: ticks(11) + ticks(12),
        children_ticks: ticks(13) + ticks(14),
    })
}

/// CPU time (user + system, in clock ticks) used so far by `root` and all its live
/// descendants, including what they collected from children they reaped. A child that exits
/// and is reaped between two calls moves from its own figure into its parent's, so the
/// difference of two calls is the tree's CPU time in between.
pub fn tree_cpu_ticks(root: u32) -> u64 {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    let stats: Vec<(u32, Stat)> = dir
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_stat(&stat)?))
        })
        .collect();
    let mut in_tree = std::collections::HashSet::from([root]);
    // Parents first would need sorting by ancestry; iterate until nothing is added instead.
    loop {
        let before = in_tree.len();
        for (pid, st) in &stats {
            if in_tree.contains(&st.ppid) {
                in_tree.insert(*pid);
            }
        }
        if in_tree.len() == before {
            break;
        }
    }
    stats
        .iter()
        .filter(|(pid, _)| in_tree.contains(pid))
        .map(|(_, st)| st.own_ticks + st.children_ticks)
        .sum()
}

/// CPU time (user + system, in clock ticks) of this process's own threads, not its children.
pub fn own_cpu_ticks() -> u64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
        .map_or(0, |st| st.own_ticks)
}

/// `(ppid, process)` for `pid`, if it still exists.
fn read_proc_with_parent(pid: u32) -> Option<(u32, Proc)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let Stat {
        comm, state, ppid, ..
    } = parse_stat(&stat)?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline)
        .trim_end_matches('\0')
        .replace('\0', " ");
    Some((
        ppid,
        Proc {
            pid,
            comm,
            state,
            cmdline,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_with_a_tricky_comm() {
        let st = parse_stat("42 (a) b (c)) S 7 42 42 0 -1 4194560 1 2 3 4 10 20 30 40 20 0 1 0")
            .unwrap();
        assert_eq!(st.comm, "a) b (c)");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 7);
        assert_eq!(st.own_ticks, 30);
        assert_eq!(st.children_ticks, 70);
    }

    #[test]
    fn tree_cpu_counts_a_busy_child() {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 30",
            ])
            .spawn()
            .unwrap();
        let pid = child.id();
        // Wait (bounded) until the loop has burnt at least 2 ticks in the child's tree.
        let seen = crate::stock::wait_for(std::time::Duration::from_secs(30), || {
            (tree_cpu_ticks(pid) >= 2).then_some(())
        });
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            seen.is_some(),
            "child {pid} never showed CPU time in the tree"
        );
    }

    #[test]
    fn finds_a_child_it_started_and_not_after_it_is_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id();
        let kids = children_of(me);
        let found = kids.iter().find(|p| p.pid == child.id()).cloned();
        child.kill().unwrap();
        child.wait().unwrap();
        let found = found.expect("the sleep child");
        assert_eq!(found.comm, "sleep");
        assert_eq!(found.cmdline, "sleep 30");
        assert_eq!(found.title_name(), "sleep");
        assert!(children_of(me).iter().all(|p| p.pid != found.pid));
    }
}
