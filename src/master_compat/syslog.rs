//! The master's own log lines to syslog (`log_path = syslog`), as stock writes them: ident =
//! `instance_name`, facility = `syslog_facility`, no pid; message `master: <text>` for info and
//! `master: Warning: <text>` / `master: Error: <text>` otherwise. Datagrams to `/dev/log` in
//! the local format glibc's `syslog(3)` sends: `<PRI>Mmm dd hh:mm:ss ident: message`.

use std::os::unix::net::UnixDatagram;
use std::path::Path;

use crate::master_compat::supervisor::LogLevel;

/// The usual local syslog socket.
pub const DEV_LOG: &str = "/dev/log";

/// Facility code of a `syslog_facility` name (unknown: mail, as stock falls back).
pub fn facility(name: &str) -> u8 {
    match name {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        l if l.starts_with("local") && l.len() == 6 => match l.as_bytes()[5] {
            d @ b'0'..=b'7' => 16 + (d - b'0'),
            _ => 2,
        },
        _ => 2,
    }
}

/// One datagram: `<PRI>timestamp ident: master: [Level: ]text`.
pub fn format(facility: u8, ident: &str, timestamp: &str, level: LogLevel, text: &str) -> String {
    let (severity, label) = match level {
        LogLevel::Info => (6, ""),
        LogLevel::Warning => (4, "Warning: "),
        LogLevel::Error => (3, "Error: "),
    };
    let pri = u32::from(facility) * 8 + severity;
    format!("<{pri}>{timestamp} {ident}: master: {label}{text}")
}

/// A connected syslog socket.
#[derive(Debug)]
pub struct Syslog {
    sock: UnixDatagram,
    facility: u8,
    ident: String,
}

impl Syslog {
    /// Connects to `path` (normally [`DEV_LOG`]).
    pub fn connect(path: &Path, facility_name: &str, ident: &str) -> std::io::Result<Syslog> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(path)?;
        sock.set_nonblocking(true)?;
        Ok(Syslog {
            sock,
            facility: facility(facility_name),
            ident: ident.to_owned(),
        })
    }

    /// Sends one line (dropped if syslog does not take it at once: the master never blocks).
    pub fn send(&self, timestamp: &str, level: LogLevel, text: &str) -> bool {
        let msg = format(self.facility, &self.ident, timestamp, level, text);
        self.sock.send(msg.as_bytes()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_facility_severity_ident_and_stock_labels() {
        assert_eq!(
            format(
                2,
                "dovecot",
                "Nov 28 23:40:01",
                LogLevel::Info,
                "starting up"
            ),
            "<22>Nov 28 23:40:01 dovecot: master: starting up"
        );
        assert_eq!(
            format(facility("local3"), "mx", "T", LogLevel::Warning, "w"),
            "<156>T mx: master: Warning: w"
        );
        assert_eq!(
            format(facility("nonsense"), "d", "T", LogLevel::Error, "e"),
            "<19>T d: master: Error: e"
        );
    }

    #[test]
    fn datagrams_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let s = Syslog::connect(&path, "daemon", "dovecot").unwrap();
        assert!(s.send("T", LogLevel::Info, "hello"));
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<30>T dovecot: master: hello");
    }
}
