//! The master control socket `$BASE/master` (master-interface.md §13): the line protocol
//! `doveadm service status`, `doveadm process status` and `doveadm service stop` speak, plus
//! Foreman's `FOREMAN-NEED\t<service>\t<waiting>` (docs/reuse.md): the dispatcher has
//! `<waiting>` logins that found no process; reply `+` or `-<reason>`.
//! Pure: [`ControlConn::input`] takes bytes and a view of the supervisor, returns reply
//! bytes and the services to stop; the shell owns the socket.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::master_compat::supervisor::{ProcessStatus, ServiceStatus};
use crate::wire::escape::{escape, split_fields};

/// The server's handshake line.
pub const SERVER_VERSION: &[u8] = b"VERSION\tmaster-server\t1\t0\n";
const CLIENT_VERSION_PREFIX: &[u8] = b"VERSION\tmaster-client\t1\t";
/// Longest request line accepted.
pub const MAX_LINE: usize = 8192;

/// What the control socket needs to know about the master's state.
pub trait ControlView {
    fn services(&self) -> Vec<ServiceStatus>;
    fn processes(&self) -> Vec<ProcessStatus>;
    fn has_service(&self, name: &str) -> bool;
    /// True when the service is a reuse pool (has a `%{pid}` unix listener).
    fn is_reuse_pool(&self, name: &str) -> bool;
}

/// What a request asks the shell to do besides replying.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub reply: Vec<u8>,
    /// Services to stop (`STOP`).
    pub stop: Vec<String>,
    /// `FOREMAN-NEED` requests: (service, waiting).
    pub need: Vec<(String, u32)>,
    /// Close the connection (bad handshake, unknown command, oversized line).
    pub close: bool,
    /// A message for the master's log.
    pub error: Option<String>,
}

/// One client connection's protocol state.
#[derive(Debug, Default)]
pub struct ControlConn {
    buf: Vec<u8>,
    handshake_done: bool,
}

/// Converts a monotonic instant to unix seconds (0 = never).
fn unix(t: Option<Instant>, now: Instant, now_unix: u64) -> u64 {
    t.map_or(0, |t| {
        now_unix.saturating_sub(now.saturating_duration_since(t).as_secs())
    })
}

fn yn(b: bool) -> char {
    if b {
        'y'
    } else {
        'n'
    }
}

/// Seconds since the epoch now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ControlConn {
    /// Feeds received bytes; returns what to send and do.
    pub fn input(
        &mut self,
        data: &[u8],
        view: &dyn ControlView,
        now: Instant,
        now_unix: u64,
    ) -> Outcome {
        let mut out = Outcome::default();
        self.buf.extend_from_slice(data);
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = &line[..line.len() - 1];
            if !self.handshake_done {
                if line.starts_with(CLIENT_VERSION_PREFIX) {
                    self.handshake_done = true;
                    out.reply.extend_from_slice(SERVER_VERSION);
                    continue;
                }
                out.error = Some("master client: invalid handshake".into());
                out.close = true;
                return out;
            }
            self.command(line, view, now, now_unix, &mut out);
            if out.close {
                return out;
            }
        }
        if self.buf.len() > MAX_LINE {
            out.error = Some("master client: line too long".into());
            out.close = true;
        }
        out
    }

    fn command(
        &mut self,
        line: &[u8],
        view: &dyn ControlView,
        now: Instant,
        now_unix: u64,
        out: &mut Outcome,
    ) {
        let fields = split_fields(line);
        let Some(cmd) = fields.first() else {
            return;
        };
        let args: Vec<String> = fields[1..]
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        match cmd.as_ref() {
            b"SERVICE-STATUS" => {
                for s in view.services() {
                    let row = format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                        String::from_utf8_lossy(&escape(s.name.as_bytes())),
                        s.process_count,
                        s.process_avail,
                        s.process_limit,
                        s.client_limit,
                        s.throttle_secs,
                        unix(s.exit_failure_last, now, now_unix),
                        s.exit_failures_in_sec,
                        unix(s.last_drop_warning, now, now_unix),
                        yn(s.listen_pending),
                        yn(s.listening),
                        yn(s.doveadm_stop),
                        s.process_total,
                    );
                    out.reply.extend_from_slice(row.as_bytes());
                }
                out.reply.push(b'\n');
            }
            b"PROCESS-STATUS" => {
                for p in view.processes() {
                    if !args.is_empty() && !args.contains(&p.service) {
                        continue;
                    }
                    let row = format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                        String::from_utf8_lossy(&escape(p.service.as_bytes())),
                        p.pid,
                        p.available_count,
                        p.total_count,
                        unix(p.idle_start, now, now_unix),
                        unix(p.last_status_update, now, now_unix),
                        unix(p.last_kill_sent, now, now_unix),
                    );
                    out.reply.extend_from_slice(row.as_bytes());
                }
                out.reply.push(b'\n');
            }
            b"STOP" => {
                if let Some(bad) = args.iter().find(|a| !view.has_service(a)) {
                    out.reply
                        .extend_from_slice(format!("-Unknown service: {bad}\n").as_bytes());
                } else {
                    out.stop.extend(args);
                    out.reply.extend_from_slice(b"+\n");
                }
            }
            b"FOREMAN-NEED" => {
                let waiting = args.get(1).and_then(|w| {
                    (!w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| w.parse::<u32>().ok())
                        .flatten()
                });
                let reply = match (args.first(), waiting) {
                    (Some(name), Some(waiting)) => {
                        if !view.has_service(name) {
                            format!("-Unknown service: {name}\n")
                        } else if !view.is_reuse_pool(name) {
                            format!("-Not a reuse pool: {name}\n")
                        } else {
                            out.need.push((name.clone(), waiting));
                            "+\n".to_owned()
                        }
                    }
                    _ => "-Invalid parameters\n".to_owned(),
                };
                out.reply.extend_from_slice(reply.as_bytes());
            }
            other => {
                out.error = Some(format!(
                    "master client: Unknown command: {}",
                    String::from_utf8_lossy(other)
                ));
                out.close = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct View;
    impl ControlView for View {
        fn services(&self) -> Vec<ServiceStatus> {
            vec![ServiceStatus {
                name: "imap".into(),
                process_count: 2,
                process_avail: 1,
                process_limit: 1024,
                client_limit: 1,
                throttle_secs: 0,
                exit_failure_last: None,
                exit_failures_in_sec: 0,
                last_drop_warning: None,
                listening: false,
                listen_pending: false,
                doveadm_stop: false,
                process_total: 5,
            }]
        }
        fn processes(&self) -> Vec<ProcessStatus> {
            let t = Instant::now();
            vec![
                ProcessStatus {
                    service: "imap".into(),
                    pid: 42,
                    available_count: 1,
                    total_count: 0,
                    idle_start: Some(t),
                    last_status_update: Some(t),
                    last_kill_sent: None,
                },
                ProcessStatus {
                    service: "auth".into(),
                    pid: 43,
                    available_count: 1000,
                    total_count: 0,
                    idle_start: None,
                    last_status_update: None,
                    last_kill_sent: None,
                },
            ]
        }
        fn has_service(&self, name: &str) -> bool {
            name == "imap" || name == "auth"
        }
        fn is_reuse_pool(&self, name: &str) -> bool {
            name == "imap"
        }
    }

    fn run(conn: &mut ControlConn, input: &[u8]) -> Outcome {
        conn.input(input, &View, Instant::now(), 1_000_000)
    }

    #[test]
    fn handshake_then_service_status() {
        let mut c = ControlConn::default();
        let out = run(&mut c, b"VERSION\tmaster-client\t1\t0\nSERVICE-STATUS\n");
        assert_eq!(
            out.reply,
            b"VERSION\tmaster-server\t1\t0\nimap\t2\t1\t1024\t1\t0\t0\t0\t0\tn\tn\tn\t5\n\n"
        );
        assert!(!out.close);
    }

    #[test]
    fn process_status_filters_by_service() {
        let mut c = ControlConn::default();
        run(&mut c, b"VERSION\tmaster-client\t1\t0\n");
        let out = run(&mut c, b"PROCESS-STATUS\tauth\n");
        assert_eq!(out.reply, b"auth\t43\t1000\t0\t0\t0\t0\n\n");
        let out = run(&mut c, b"PROCESS-STATUS\n");
        assert!(out
            .reply
            .starts_with(b"imap\t42\t1\t0\t1000000\t1000000\t0\n"));
    }

    #[test]
    fn stop_and_errors() {
        let mut c = ControlConn::default();
        run(&mut c, b"VERSION\tmaster-client\t1\t0\n");
        let out = run(&mut c, b"STOP\tnope\n");
        assert_eq!(out.reply, b"-Unknown service: nope\n");
        assert!(out.stop.is_empty());
        let out = run(&mut c, b"STOP\timap\n");
        assert_eq!(out.reply, b"+\n");
        assert_eq!(out.stop, vec!["imap".to_owned()]);
        let out = run(&mut c, b"BOGUS\n");
        assert!(out.close);
        let mut c = ControlConn::default();
        assert!(run(&mut c, b"HELLO\n").close);
    }

    #[test]
    fn foreman_need_accepts_reuse_pools_only() {
        let mut c = ControlConn::default();
        run(&mut c, b"VERSION\tmaster-client\t1\t0\n");
        let out = run(&mut c, b"FOREMAN-NEED\timap\t3\n");
        assert_eq!(out.reply, b"+\n");
        assert_eq!(out.need, vec![("imap".to_owned(), 3)]);
        assert!(!out.close);
        for (line, reply) in [
            (
                &b"FOREMAN-NEED\tauth\t1\n"[..],
                &b"-Not a reuse pool: auth\n"[..],
            ),
            (b"FOREMAN-NEED\tnope\t1\n", b"-Unknown service: nope\n"),
            (b"FOREMAN-NEED\timap\n", b"-Invalid parameters\n"),
            (b"FOREMAN-NEED\timap\t-1\n", b"-Invalid parameters\n"),
            (
                b"FOREMAN-NEED\timap\t99999999999\n",
                b"-Invalid parameters\n",
            ),
            (b"FOREMAN-NEED\n", b"-Invalid parameters\n"),
        ] {
            let out = run(&mut c, line);
            assert_eq!(out.reply, reply, "{}", String::from_utf8_lossy(line));
            assert!(out.need.is_empty());
            assert!(!out.close);
        }
    }

    #[test]
    fn partial_lines_wait_for_more() {
        let mut c = ControlConn::default();
        assert!(run(&mut c, b"VERSION\tmaster-cl").reply.is_empty());
        assert_eq!(run(&mut c, b"ient\t1\t0\n").reply, SERVER_VERSION);
    }
}
