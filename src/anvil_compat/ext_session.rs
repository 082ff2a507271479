//! The foreman-anvil extension commands on one connection (`docs/anvil-extensions.md`): the
//! opt-in handshake and the dispatch of each extension request to the [`Registry`] in
//! [`Anvil`]. [`super::session`] calls in here at two points only (handshake, and each line
//! of an opted-in connection), so the v1 path is untouched.

use bstr::BString;

use super::registry::{Activity, Claim, ClaimKind, ConnectBinding, Outcome, Process};
use super::session::{ConnKind, LogBuf, INPUT_ERROR};
use super::{Anvil, UnixMillis};
use crate::wire::anvil::Pid;
use crate::wire::anvil_ext::{
    encode_ext_reply, is_ext_version, parse_ext_request, ClaimState, ClaimedKind, ExtReply,
    ExtRequest, ProcRow, ProcState, ReleaseOutcome, VERSION_LINE,
};
use crate::wire::log::Level;

/// The first line of a connection: true when it is an acceptable `foreman-anvil` handshake on
/// a socket (pipes never opt in); the greeting is appended to `out` then.
pub fn accept_handshake(kind: ConnKind, line: &[u8], out: &mut Vec<u8>) -> bool {
    if kind.fifo || !is_ext_version(line) {
        return false;
    }
    out.extend_from_slice(VERSION_LINE);
    true
}

/// A line that failed as an input error (already logged): the connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputError;

/// Handles one line of an opted-in connection if it is an extension command: `None` when it
/// is not (the caller handles it as v1), else whether it succeeded.
pub fn handle_line(
    anvil: &mut Anvil,
    now: UnixMillis,
    line: &[u8],
    out: &mut Vec<u8>,
    log: &mut LogBuf,
) -> Option<Result<(), InputError>> {
    let request = match parse_ext_request(line)? {
        Ok(request) => request,
        Err(e) => {
            log.push((Level::Error, format!("{INPUT_ERROR}{e}").into()));
            return Some(Err(InputError));
        }
    };
    let reg = &mut anvil.registry;
    let mut note = |text: String| log.push((Level::Error, format!("registry: {text}").into()));
    match request {
        ExtRequest::ProcBirth { service, pid, uid } => {
            if reg.birth(now, &service, pid, uid) {
                note(format!("pid {pid} born again"));
            }
        }
        ExtRequest::ProcIdle { pid, since } => {
            if reg.set_idle(pid, since).is_err() {
                note(format!("state change for unknown pid {pid}"));
            }
        }
        ExtRequest::ProcBusy { pid, since } => {
            if reg.set_busy(pid, since).is_err() {
                note(format!("state change for unknown pid {pid}"));
            }
        }
        ExtRequest::ProcDeath { pid } => {
            if !reg.death(pid) {
                note(format!("death of unknown pid {pid}"));
            }
        }
        ExtRequest::Claim { service, user, uid } => {
            let reply = match reg.claim(now, &service, &user, uid) {
                Ok(Some(c)) => ExtReply::Claimed {
                    pid: c.pid,
                    token: c.token,
                    kind: match c.kind {
                        ClaimKind::Reuse => ClaimedKind::Reuse,
                        ClaimKind::Fresh => ClaimedKind::Fresh,
                    },
                },
                // Empty user / uid 0 are rejected by the codec already.
                Ok(None) | Err(_) => ExtReply::None,
            };
            encode_ext_reply(&reply, out);
        }
        ExtRequest::Release {
            pid,
            token,
            outcome,
        } => {
            let outcome = match outcome {
                ReleaseOutcome::Served => Outcome::Served,
                ReleaseOutcome::Unused => Outcome::Unused,
                ReleaseOutcome::Failed => Outcome::Failed,
                ReleaseOutcome::Busy => Outcome::Busy,
            };
            if reg.release(now, pid, token, outcome).is_err() {
                note(format!(
                    "release of pid {pid} with a token that does not hold it ({token})"
                ));
            }
        }
        ExtRequest::Evict { service, pid } => {
            let got = match pid {
                None => reg.evict(now, &service),
                Some(pid) => reg
                    .get(pid)
                    .is_some_and(|p| p.service == service)
                    .then(|| reg.evict_pid(now, pid).ok().map(|()| pid))
                    .flatten(),
            };
            encode_ext_reply(&got.map_or(ExtReply::None, ExtReply::Evicted), out);
        }
        ExtRequest::ProcList { service, user } => {
            for p in reg.list(&service, &user) {
                encode_ext_reply(&ExtReply::Row(row(now, p)), out);
            }
            encode_ext_reply(&ExtReply::End, out);
        }
        ExtRequest::ProcDump => {
            for p in reg.dump() {
                encode_ext_reply(&ExtReply::Row(row(now, p)), out);
            }
            encode_ext_reply(&ExtReply::End, out);
        }
    }
    Some(Ok(()))
}

/// A v1 `CONNECT` on any connection (socket or pipe): if `pid` is a registered process,
/// binds it to the ident's user when unbound, and logs a warning when it is bound to another
/// user (a process serving two users is a reuse bug). See "Binding from CONNECT" in
/// `docs/anvil-extensions.md`. Costs one lookup when the pid is not registered, nothing when
/// no process is.
#[inline]
pub fn on_connect(anvil: &mut Anvil, pid: Pid, ident: &[u8], log: &mut LogBuf) {
    if !anvil.registry.has_processes() || anvil.registry.get(pid).is_none() {
        return;
    }
    let Some((_, _, user)) = crate::who::split_ident_raw(ident) else {
        return;
    };
    if let ConnectBinding::Conflict { bound_to } = anvil.registry.connect(pid, user) {
        let mut text = format!("registry: pid {pid} is bound to user ").into_bytes();
        text.extend_from_slice(&bound_to);
        text.extend_from_slice(b" but reported a CONNECT for user ");
        text.extend_from_slice(user);
        log.push((Level::Warning, text.into()));
    }
}

/// The wire row of a process at `now`.
pub fn row(now: UnixMillis, p: &Process) -> ProcRow {
    let (state, since) = match p.activity {
        Activity::Fresh => (ProcState::Fresh, p.born),
        Activity::Idle { since } => (ProcState::Idle, since),
        Activity::Busy { since } => (ProcState::Busy, since),
    };
    let (user, uid) = match &p.binding {
        Some(b) => (b.user.clone(), b.uid.unwrap_or(p.birth_uid)),
        None => (BString::default(), p.birth_uid),
    };
    ProcRow {
        pid: p.pid,
        service: p.service.clone(),
        user,
        uid,
        state,
        since,
        claim: match p.claim_at(now) {
            None => ClaimState::None,
            Some(Claim::Dispatch { .. }) => ClaimState::Claimed,
            Some(Claim::Evict) => ClaimState::Evicting,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::session::{Fed, Session, NOT_COMPATIBLE};
    use super::*;

    const NOW: UnixMillis = 1_795_892_735_000;

    fn feed(anvil: &mut Anvil, kind: ConnKind, input: &[u8]) -> (Vec<u8>, Vec<String>, Fed) {
        let mut s = Session::new(kind, false);
        let (mut out, mut log) = (Vec::new(), LogBuf::new());
        let fed = s.feed(anvil, NOW, input, &mut out, &mut log);
        let logs = log.into_iter().map(|(_, t)| t.to_string()).collect();
        (out, logs, fed)
    }

    #[test]
    fn stock_handshake_keeps_extension_names_unknown() {
        let mut anvil = Anvil::new();
        let (out, logs, fed) = feed(
            &mut anvil,
            ConnKind::SOCKET,
            b"VERSION\tanvil\t1\t0\nCLAIM\timap\ta\t1\nLOOKUP\tx\n",
        );
        assert_eq!(out, b"");
        assert_eq!(logs, [format!("{INPUT_ERROR}Unknown command: CLAIM")]);
        assert!(fed.close);
    }

    #[test]
    fn pipes_never_opt_in() {
        let mut anvil = Anvil::new();
        let (out, logs, _) = feed(&mut anvil, ConnKind::MASTER_PIPE, VERSION_LINE);
        assert_eq!(out, b"");
        assert_eq!(
            logs,
            [format!("{NOT_COMPATIBLE}VERSION\tforeman-anvil\t1\t0")]
        );
    }

    #[test]
    fn a_claim_round_on_the_wire() {
        let mut anvil = Anvil::new();
        let input = [
            VERSION_LINE,
            b"PROC-BIRTH\timap\t4242\t0\n",
            b"CLAIM\timap\talice\t1000\n",
            b"CLAIM\timap\tbob\t1001\n",
            b"RELEASE\t4242\t1\tserved\n",
            b"PROC-IDLE\t4242\t1795892736000\n",
            b"CLAIM\timap\tbob\t1001\n",
            b"PROC-DUMP\n",
            b"CLAIM\timap\talice\t1000\n",
            b"EVICT\timap\n",
            b"PROC-LIST\timap\talice\n",
            b"RELEASE\t4242\t1\tserved\n",
            b"LOOKUP\tx\n",
        ]
        .concat();
        let (out, logs, fed) = feed(&mut anvil, ConnKind::SOCKET, &input);
        let want: &[u8] = b"VERSION\tforeman-anvil\t1\t0\n\
            4242\t1\tfresh\n\
            none\n\
            none\n\
            4242\timap\talice\t1000\tidle\t1795892736000\t-\n\
            \n\
            4242\t2\treuse\n\
            none\n\
            4242\timap\talice\t1000\tidle\t1795892736000\tclaimed\n\
            \n\
            0\n";
        assert_eq!(bstr::BStr::new(&out), bstr::BStr::new(want));
        assert_eq!(
            logs,
            ["registry: release of pid 4242 with a token that does not hold it (1)"]
        );
        assert!(!fed.close);
    }

    #[test]
    fn input_errors_close() {
        let mut anvil = Anvil::new();
        let (out, logs, fed) = feed(
            &mut anvil,
            ConnKind::SOCKET,
            b"VERSION\tforeman-anvil\t1\t0\nCLAIM\timap\t\t1000\nPROC-DUMP\n",
        );
        assert_eq!(out, VERSION_LINE);
        assert_eq!(logs, [format!("{INPUT_ERROR}CLAIM: Invalid parameters")]);
        assert!(fed.close);
    }

    #[test]
    fn evict_by_pid_and_state_for_unknown_pids() {
        let mut anvil = Anvil::new();
        let (out, logs, _) = feed(
            &mut anvil,
            ConnKind::SOCKET,
            b"VERSION\tforeman-anvil\t1\t0\nPROC-BIRTH\timap\t7\t0\nEVICT\tpop3\t7\n\
              EVICT\timap\t7\nEVICT\timap\t7\nPROC-BUSY\t8\t1\nPROC-DEATH\t7\nPROC-DEATH\t7\n",
        );
        // A second EVICT of the reserved pid confirms it (the master may have stopped
        // waiting for the first answer).
        assert_eq!(out, b"VERSION\tforeman-anvil\t1\t0\nnone\n7\n7\n");
        assert_eq!(
            logs,
            [
                "registry: state change for unknown pid 8",
                "registry: death of unknown pid 7"
            ]
        );
    }

    #[test]
    fn connect_on_any_connection_binds_a_registered_process() {
        let mut anvil = Anvil::new();
        feed(
            &mut anvil,
            ConnKind::SOCKET,
            b"VERSION\tforeman-anvil\t1\t0\nPROC-BIRTH\timap\t4242\t0\nPROC-BIRTH\timap\t4243\t1001\n",
        );
        // A stock imap process reports its session on the shared pipe.
        let (_, logs, _) = feed(
            &mut anvil,
            ConnKind::SHARED_PIPE,
            b"VERSION\tanvil\t1\t0\nCONNECT\t4242\timap/127.0.0.1/alice\n\
              CONNECT\t4243\timap/bob\nCONNECT\t77\timap/127.0.0.1/carol\n\
              CONNECT\t4242\timap/127.0.0.1/mallory\n",
        );
        assert_eq!(
            logs,
            ["registry: pid 4242 is bound to user alice but reported a CONNECT for user mallory"]
        );
        // The v1 table counts every session as before.
        assert_eq!(anvil.connect_limit.lookup(b"imap/127.0.0.1/mallory"), 1);
        let (out, _, _) = feed(
            &mut anvil,
            ConnKind::SOCKET,
            b"VERSION\tforeman-anvil\t1\t0\nPROC-DUMP\nCLAIM\timap\tcarol\t1002\n",
        );
        let want: &[u8] = b"VERSION\tforeman-anvil\t1\t0\n\
            4242\timap\talice\t0\tfresh\t1795892735000\t-\n\
            4243\timap\tbob\t1001\tfresh\t1795892735000\t-\n\
            \n\
            none\n";
        assert_eq!(bstr::BStr::new(&out), bstr::BStr::new(want));
    }
}
