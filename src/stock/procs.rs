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

/// `(ppid, process)` for `pid`, if it still exists.
fn read_proc_with_parent(pid: u32) -> Option<(u32, Proc)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split at the last ')'.
    let (head, tail) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let mut fields = tail.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
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
