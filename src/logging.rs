//! Logging: Dovecot's internal log format on fd 2 when running under a master
//! (`LOG_SERVICE=1`, master-interface.md §10.2), plain `<prefix><Level>: <text>` lines on
//! stderr otherwise.
//!
//! Internal format: before the first message (and again after fd 2 was replaced by a new
//! log pipe) the option line `\x01\x08<pid> prefix=<prefix>\n` is sent, then each message
//! is `\x01<level+1><pid> <text>\n`, split at PIPE_BUF ([`crate::wire::log`]). Each message
//! is rendered into one buffer and written with as few `write`s as possible.

use crate::wire::log::{encode_line, encode_prefix_option, Level};

/// How lines are rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFormat {
    /// Dovecot's internal log-pipe protocol, for a master's log service.
    Internal { pid: u32 },
    /// `<prefix><Level>: <text>` lines, for a terminal or a test.
    Plain,
}

/// A logger writing to fd 2.
#[derive(Debug)]
pub struct Logger {
    format: LogFormat,
    prefix: Vec<u8>,
    prefix_sent: bool,
    min_level: Level,
    buf: Vec<u8>,
}

impl Logger {
    /// A logger with `prefix` (e.g. `anvil: `); debug lines are dropped unless `debug`.
    pub fn new(format: LogFormat, prefix: &str, debug: bool) -> Logger {
        Logger {
            format,
            prefix: prefix.as_bytes().to_vec(),
            prefix_sent: false,
            min_level: if debug { Level::Debug } else { Level::Info },
            buf: Vec::new(),
        }
    }

    /// The logger of a service process started by a master: Dovecot's internal format when
    /// the master asked for it (`LOG_SERVICE=1`), else plain lines.
    pub fn for_service(env: &crate::master_compat::child_env::ChildEnv, prefix: &str) -> Logger {
        let format = if env.log_service {
            LogFormat::Internal {
                pid: std::process::id(),
            }
        } else {
            LogFormat::Plain
        };
        Logger::new(format, prefix, false)
    }

    /// The format in use.
    pub fn format(&self) -> &LogFormat {
        &self.format
    }

    /// Renders one message into `out` (pure; [`Logger::log`] writes it).
    pub fn render(&mut self, level: Level, text: &[u8], out: &mut Vec<u8>) {
        match self.format {
            LogFormat::Internal { pid } => {
                if !self.prefix_sent {
                    encode_prefix_option(pid, &self.prefix, out);
                    self.prefix_sent = true;
                }
                encode_line(level, pid, text, out);
            }
            LogFormat::Plain => {
                out.extend_from_slice(&self.prefix);
                out.extend_from_slice(level.name().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(text);
                out.push(b'\n');
            }
        }
    }

    /// Logs one message to fd 2.
    pub fn log(&mut self, level: Level, text: &[u8]) {
        if level < self.min_level {
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.render(level, text, &mut buf);
        crate::sys::write_stderr(&buf);
        self.buf = buf;
    }

    /// Error-level shorthand.
    pub fn error(&mut self, text: impl AsRef<[u8]>) {
        self.log(Level::Error, text.as_ref());
    }

    /// fd 2 now points to a new log pipe: send the prefix option again before the next line.
    pub fn stderr_replaced(&mut self) {
        self.prefix_sent = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines() {
        let mut l = Logger::new(LogFormat::Plain, "anvil: ", false);
        let mut out = Vec::new();
        l.render(Level::Error, b"Unknown command: X", &mut out);
        assert_eq!(out, b"anvil: Error: Unknown command: X\n");
    }

    #[test]
    fn internal_lines_send_prefix_once_and_after_replacement() {
        let mut l = Logger::new(LogFormat::Internal { pid: 42 }, "anvil: ", false);
        let mut out = Vec::new();
        l.render(Level::Error, b"a", &mut out);
        l.render(Level::Warning, b"b", &mut out);
        assert_eq!(
            out,
            b"\x01\x0842 prefix=anvil: \n\x01\x0442 a\n\x01\x0342 b\n"
        );
        out.clear();
        l.stderr_replaced();
        l.render(Level::Info, b"c", &mut out);
        assert_eq!(out, b"\x01\x0842 prefix=anvil: \n\x01\x0242 c\n");
    }
}
