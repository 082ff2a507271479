//! Dovecot's internal log-pipe line format, what a service writes to fd 2 under a master
//! (master-interface.md §10.2): `\x01 <type byte> <pid> SP <text> LF`, type byte = level + 1,
//! 8 = option line (`prefix=…`, `ip=…`). Lines longer than PIPE_BUF are split.

/// Log levels with their internal type bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 1,
    Info = 2,
    Warning = 3,
    Error = 4,
    Fatal = 5,
    Panic = 6,
}

impl Level {
    /// The word Dovecot prints in log files (`Error`, `Info`, …).
    pub fn name(self) -> &'static str {
        match self {
            Level::Debug => "Debug",
            Level::Info => "Info",
            Level::Warning => "Warning",
            Level::Error => "Error",
            Level::Fatal => "Fatal",
            Level::Panic => "Panic",
        }
    }
}

/// Largest atomic pipe write; longer messages are split into several lines.
pub const PIPE_BUF: usize = 4096;

/// Appends one or more internal-format lines carrying `text` at `level` for `pid`. Text is
/// split so that each line (header and LF included) fits in [`PIPE_BUF`]; an LF inside the
/// text also splits it, as stock's writer does.
pub fn encode_line(level: Level, pid: u32, text: &[u8], out: &mut Vec<u8>) {
    let _ = (level, pid, text, out);
    todo!()
}

/// Appends the option line that sets the per-pid prefix: `\x01\x08<pid> prefix=<prefix>\n`.
pub fn encode_prefix_option(pid: u32, prefix: &[u8], out: &mut Vec<u8>) {
    let _ = (pid, prefix, out);
    todo!()
}
