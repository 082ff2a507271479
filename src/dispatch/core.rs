//! The dispatcher's decisions, free of I/O and clocks: what a login may be handed over as,
//! what the client must see, and what to do after each attempt on a claimed process.
//!
//! One login runs: auth lookup → [`validate`] → CLAIM → connect → wait for imap's VERSION →
//! hand-off → reply. Every outcome of one attempt on a claimed process is an [`Attempt`];
//! [`decide`] maps it to the RELEASE outcome and the next step. Retrying on another process
//! is only allowed while the client cannot have seen anything of the failed attempt
//! (docs/dispatch.md, "Retry rules").

use std::time::Duration;

use bstr::{BStr, BString, ByteSlice};

use crate::sys::service::TcpProgress;
use crate::wire::anvil_ext::ReleaseOutcome;
use crate::wire::auth_master::field;
use crate::wire::master_auth::ImapLoginPrefix;

/// A user the dispatcher may hand to an imap process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidUser {
    pub user: BString,
    /// The userdb uid (never 0).
    pub uid: u32,
}

/// Why a user from the userdb is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// Stock imap asserts on an empty user name and dies.
    #[error("userdb returned an empty user name")]
    EmptyUser,
    /// A control byte would break the registry's and imap's line protocols.
    #[error("user name {0:?} contains a control character")]
    ControlByte(BString),
    /// No `uid=` field and no fallback.
    #[error(
        "userdb returned no uid for {0:?} (reuse groups processes by uid; set uid in the userdb)"
    )]
    NoUid(BString),
    /// `uid=` not a number.
    #[error("userdb returned an invalid uid {1:?} for {0:?}")]
    BadUid(BString, BString),
    /// uid 0: stock imap refuses it; never sent.
    #[error("userdb returned 0 as uid for {0:?}")]
    RootUid(BString),
}

/// Checks the user name and finds the uid (`uid=` field, else `fallback_uid`, e.g. the
/// config's `mail_uid` resolved to a number).
pub fn validate(
    user: &[u8],
    fields: &[BString],
    fallback_uid: Option<u32>,
) -> Result<ValidUser, UserError> {
    if user.is_empty() {
        return Err(UserError::EmptyUser);
    }
    if user.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(UserError::ControlByte(user.into()));
    }
    let uid = match field(fields, "uid") {
        Some(v) => {
            let n = (!v.is_empty() && v.len() <= 10 && v.iter().all(u8::is_ascii_digit))
                .then(|| v.to_str().ok()?.parse::<u32>().ok())
                .flatten();
            n.ok_or_else(|| UserError::BadUid(user.into(), v.into()))?
        }
        None => fallback_uid.ok_or_else(|| UserError::NoUid(user.into()))?,
    };
    if uid == 0 {
        return Err(UserError::RootUid(user.into()));
    }
    Ok(ValidUser {
        user: user.into(),
        uid,
    })
}

/// What stock imap writes to the client right after a successful login (the LOGIN reply):
/// the tagged OK with capabilities, or untagged CAPABILITY then a plain tagged OK when the
/// login process asked for it. With no IMAP prefix stock sends a PREAUTH line; that never
/// happens behind imap-login, so nothing is written.
pub fn login_output(prefix: Option<&ImapLoginPrefix>, capabilities: &str) -> Vec<u8> {
    let Some(p) = prefix else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if p.send_untagged_capability {
        out.extend_from_slice(format!("* CAPABILITY {capabilities}\r\n").as_bytes());
        out.extend_from_slice(&p.tag);
        out.extend_from_slice(b" OK Logged in\r\n");
    } else {
        out.extend_from_slice(&p.tag);
        out.extend_from_slice(format!(" OK [CAPABILITY {capabilities}] Logged in\r\n").as_bytes());
    }
    out
}

/// What stock imap writes when a login fails before the session exists
/// (`<tag> NO [UNAVAILABLE] <message>`).
pub const INTERNAL_FAILURE: &str =
    "Internal error occurred. Refer to server log for more information.";

/// The failure line for a login, or nothing without a tag.
pub fn failure_output(prefix: Option<&ImapLoginPrefix>) -> Vec<u8> {
    match prefix {
        Some(p) => {
            let mut out = p.tag.to_vec();
            out.extend_from_slice(format!(" NO [UNAVAILABLE] {INTERNAL_FAILURE}\r\n").as_bytes());
            out
        }
        None => Vec::new(),
    }
}

/// How one attempt on a claimed process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// connect() refused: EACCES (busy, listener mode 0), ECONNREFUSED/ENOENT (process gone),
    /// EAGAIN (backlog full). Nothing was sent.
    ConnectBusy,
    /// Connected, but imap sent no VERSION in time or closed first: it is busy (the connect
    /// sits in its backlog) or dying. Nothing was sent.
    NoVersion,
    /// imap answered `+`: it serves the client now.
    Accepted,
    /// imap answered `-<error>`, or closed / timed out after the request went out.
    /// `client_untouched`: the client socket showed no progress since before the hand-off.
    Failed { client_untouched: bool },
}

/// The next step after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Reply OK (mail pid = the claimed pid) to the login process.
    ReplyOk,
    /// Claim again (another process, or the same one later).
    ClaimAgain,
    /// Give the login up: the client may have seen part of a session.
    FailLogin,
}

/// RELEASE outcome and next step for an attempt.
pub fn decide(a: &Attempt) -> (ReleaseOutcome, Next) {
    match a {
        Attempt::ConnectBusy | Attempt::NoVersion => (ReleaseOutcome::Busy, Next::ClaimAgain),
        Attempt::Accepted => (ReleaseOutcome::Served, Next::ReplyOk),
        Attempt::Failed {
            client_untouched: true,
        } => (ReleaseOutcome::Failed, Next::ClaimAgain),
        Attempt::Failed {
            client_untouched: false,
        } => (ReleaseOutcome::Failed, Next::FailLogin),
    }
}

/// True only when both snapshots exist and are equal: no byte was written to or read from
/// the client between them. Without TCP_INFO (a unix-socket client, an old kernel) the answer
/// is "may have been touched".
pub fn client_untouched(before: Option<TcpProgress>, after: Option<TcpProgress>) -> bool {
    matches!((before, after), (Some(b), Some(a)) if a == b)
}

/// The retry schedule of a login that found no process (CLAIM → `none`) or lost attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// Give up this long after the first claim.
    pub deadline: Duration,
    /// At most this many attempts on claimed processes (connect/version/hand-off) per login.
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(2),
            max: Duration::from_millis(50),
            deadline: Duration::from_secs(60),
            max_attempts: 1000,
        }
    }
}

impl Backoff {
    /// The wait before round `round` (0-based) of a login that started `elapsed` ago; `None`
    /// when the deadline is reached.
    pub fn wait(&self, round: u32, elapsed: Duration) -> Option<Duration> {
        if elapsed >= self.deadline {
            return None;
        }
        let w = self.first.saturating_mul(1u32 << round.min(16));
        Some(w.min(self.max).min(self.deadline - elapsed))
    }
}

/// A user name for log lines.
pub fn show(user: &[u8]) -> &BStr {
    user.as_bstr()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(list: &[&str]) -> Vec<BString> {
        list.iter().map(|s| BString::from(*s)).collect()
    }

    #[test]
    fn validate_table() {
        let ok = |u: &str, uid| {
            Ok(ValidUser {
                user: u.into(),
                uid,
            })
        };
        type Case = (
            &'static [u8],
            Vec<BString>,
            Option<u32>,
            Result<ValidUser, UserError>,
        );
        let cases: Vec<Case> = vec![
            (b"u1", f(&["uid=1000", "gid=1"]), None, ok("u1", 1000)),
            (b"u1", f(&["gid=1"]), Some(7), ok("u1", 7)),
            (b"u1", f(&["uid=1000"]), Some(7), ok("u1", 1000)),
            (b"", f(&["uid=1"]), None, Err(UserError::EmptyUser)),
            (
                b"a\tb",
                f(&["uid=1"]),
                None,
                Err(UserError::ControlByte("a\tb".into())),
            ),
            (
                b"a\x01",
                f(&["uid=1"]),
                None,
                Err(UserError::ControlByte("a\x01".into())),
            ),
            (b"u", f(&["gid=1"]), None, Err(UserError::NoUid("u".into()))),
            (
                b"u",
                f(&["uid=0"]),
                None,
                Err(UserError::RootUid("u".into())),
            ),
            (
                b"u",
                f(&["gid=1"]),
                Some(0),
                Err(UserError::RootUid("u".into())),
            ),
            (
                b"u",
                f(&["uid=vmail"]),
                None,
                Err(UserError::BadUid("u".into(), "vmail".into())),
            ),
            (
                b"u",
                f(&["uid="]),
                None,
                Err(UserError::BadUid("u".into(), "".into())),
            ),
            (
                b"u",
                f(&["uid=4294967296"]),
                None,
                Err(UserError::BadUid("u".into(), "4294967296".into())),
            ),
            (
                b"u",
                f(&["uid=-1"]),
                None,
                Err(UserError::BadUid("u".into(), "-1".into())),
            ),
            (
                b"user@example.com",
                f(&["uid=5000"]),
                None,
                ok("user@example.com", 5000),
            ),
        ];
        for (user, fields, fallback, want) in cases {
            assert_eq!(validate(user, &fields, fallback), want, "{:?}", show(user));
        }
    }

    #[test]
    fn login_output_forms() {
        let p = |untagged, tag: &str| ImapLoginPrefix {
            send_untagged_capability: untagged,
            tag: tag.into(),
            input: Vec::new(),
        };
        assert_eq!(
            login_output(Some(&p(false, "a1")), "IMAP4rev1 X"),
            b"a1 OK [CAPABILITY IMAP4rev1 X] Logged in\r\n"
        );
        assert_eq!(
            login_output(Some(&p(true, "a1")), "IMAP4rev1 X"),
            b"* CAPABILITY IMAP4rev1 X\r\na1 OK Logged in\r\n"
        );
        assert_eq!(login_output(None, "X"), b"");
        assert_eq!(
            failure_output(Some(&p(true, "t"))),
            b"t NO [UNAVAILABLE] Internal error occurred. Refer to server log for more information.\r\n"
        );
    }

    #[test]
    fn decide_table() {
        use Next::*;
        use ReleaseOutcome::*;
        let cases = [
            (Attempt::ConnectBusy, (Busy, ClaimAgain)),
            (Attempt::NoVersion, (Busy, ClaimAgain)),
            (Attempt::Accepted, (Served, ReplyOk)),
            (
                Attempt::Failed {
                    client_untouched: true,
                },
                (Failed, ClaimAgain),
            ),
            (
                Attempt::Failed {
                    client_untouched: false,
                },
                (Failed, FailLogin),
            ),
        ];
        for (a, want) in cases {
            assert_eq!(decide(&a), want, "{a:?}");
        }
    }

    #[test]
    fn untouched_needs_two_equal_snapshots() {
        let p = TcpProgress {
            bytes_sent: 1,
            notsent: 0,
            bytes_received: 5,
            unread: 0,
        };
        assert!(client_untouched(Some(p), Some(p)));
        assert!(!client_untouched(
            Some(p),
            Some(TcpProgress { bytes_sent: 2, ..p })
        ));
        assert!(!client_untouched(
            Some(p),
            Some(TcpProgress { notsent: 3, ..p })
        ));
        assert!(!client_untouched(
            Some(p),
            Some(TcpProgress { unread: 1, ..p })
        ));
        assert!(!client_untouched(None, Some(p)));
        assert!(!client_untouched(Some(p), None));
        assert!(!client_untouched(None, None));
    }

    #[test]
    fn backoff_grows_caps_and_ends() {
        let b = Backoff::default();
        let ms = Duration::from_millis;
        assert_eq!(b.wait(0, ms(0)), Some(ms(2)));
        assert_eq!(b.wait(1, ms(0)), Some(ms(4)));
        assert_eq!(b.wait(4, ms(0)), Some(ms(32)));
        assert_eq!(b.wait(5, ms(0)), Some(ms(50)));
        assert_eq!(b.wait(100, ms(0)), Some(ms(50)));
        assert_eq!(b.wait(3, ms(59_990)), Some(ms(10)));
        assert_eq!(b.wait(0, ms(60_000)), None);
    }
}
