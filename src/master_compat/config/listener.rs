//! Unix listener paths, shared or per process (`%{pid}`, a Foreman extension).
//!
//! A `unix_listener` path may contain the token `%{pid}` once. The master then creates one socket
//! per process of that service, with the token replaced by the process's pid, so a dispatcher can
//! reach one specific process.
//!
//! **Name seen by the child.** A stock service learns each listener's name from
//! `SOCKETn_SETTINGS`, which is the basename of the path. For a per-process path the name is the
//! basename with the token *and one adjacent separator* removed: the separator (`-`, `_` or `.`)
//! just before the token if there is one, otherwise the one just after it. So
//! `imap-master-%{pid}` → `imap-master` (what stock `imap` needs to treat the connection as an
//! imap-master handoff), `%{pid}.ctl` → `ctl`, `login/imap-%{pid}` → `imap`.

use std::fmt;

/// The per-process token.
pub const PID_TOKEN: &str = "%{pid}";

/// A unix/fifo listener path as written (relative to base_dir unless absolute).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenerPath {
    /// One socket shared by all processes of the service.
    Shared(String),
    /// One socket per process: `prefix` + pid + `suffix`.
    PerProcess { prefix: String, suffix: String },
}

impl ListenerPath {
    /// Splits at the (single, already validated) `%{pid}` token.
    pub fn new(path: &str) -> ListenerPath {
        match path.split_once(PID_TOKEN) {
            Some((prefix, suffix)) => ListenerPath::PerProcess {
                prefix: prefix.to_owned(),
                suffix: suffix.to_owned(),
            },
            None => ListenerPath::Shared(path.to_owned()),
        }
    }

    pub fn is_per_process(&self) -> bool {
        matches!(self, ListenerPath::PerProcess { .. })
    }

    /// The path for process `pid` (the shared path for shared listeners).
    pub fn for_pid(&self, pid: u32) -> String {
        match self {
            ListenerPath::Shared(p) => p.clone(),
            ListenerPath::PerProcess { prefix, suffix } => format!("{prefix}{pid}{suffix}"),
        }
    }

    /// The listener name a child sees in `SOCKETn_SETTINGS` (see the module docs).
    pub fn child_name(&self) -> String {
        match self {
            ListenerPath::Shared(p) => basename(p).to_owned(),
            ListenerPath::PerProcess { prefix, suffix } => {
                let (before, after) = (basename(prefix), suffix);
                if after.contains('/') {
                    // The token is in a directory component; the basename is plain.
                    return basename(after).to_owned();
                }
                let is_sep = |c: char| matches!(c, '-' | '_' | '.');
                if let Some(stripped) = before.strip_suffix(is_sep) {
                    format!("{stripped}{after}")
                } else if let Some(stripped) = after.strip_prefix(is_sep) {
                    format!("{before}{stripped}")
                } else {
                    format!("{before}{after}")
                }
            }
        }
    }
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

impl fmt::Display for ListenerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenerPath::Shared(p) => f.write_str(p),
            ListenerPath::PerProcess { prefix, suffix } => write!(f, "{prefix}{PID_TOKEN}{suffix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imap_master_per_pid_reaches_child_as_imap_master() {
        let p = ListenerPath::new("imap-master-%{pid}");
        assert!(p.is_per_process());
        assert_eq!(p.for_pid(4242), "imap-master-4242");
        assert_eq!(p.child_name(), "imap-master");
    }

    #[test]
    fn child_names() {
        assert_eq!(ListenerPath::new("login/imap").child_name(), "imap");
        assert_eq!(ListenerPath::new("%{pid}.ctl").child_name(), "ctl");
        assert_eq!(ListenerPath::new("sub/x_%{pid}").child_name(), "x");
        assert_eq!(ListenerPath::new("a%{pid}b").child_name(), "ab");
        assert_eq!(
            ListenerPath::new("d-%{pid}/imap-master").child_name(),
            "imap-master"
        );
        assert_eq!(
            ListenerPath::new("d-%{pid}/imap-master").for_pid(7),
            "d-7/imap-master"
        );
        assert_eq!(
            ListenerPath::new("imap-master-%{pid}").to_string(),
            "imap-master-%{pid}"
        );
    }
}
