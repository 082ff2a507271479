//! The auth-master protocol (`$BASE/auth-master`, master-interface.md §14 step 6): how a
//! post-login process turns a login's cookie into the user name and userdb fields.
//!
//! Client: `VERSION\t1\t1\n`, then per login
//! `REQUEST\t<id>\t<client_pid>\t<auth_id>\t<cookie: 32 lowercase hex>[\t<param>]*\n`.
//! Server: `VERSION\t1\t1\n`, `SPID\t<auth pid>\n`, then per request one of
//! `USER\t<id>\t<user>[\t<key=value>]*`, `NOTFOUND\t<id>`, `FAIL\t<id>[\treason=<text>]`.
//! Fields are tab-escaped ([`super::escape`]). A `CUID` line means the path is an auth
//! *client* socket, not the master socket.

use bstr::BString;

use super::escape::{escape_into, split_fields};
use super::DecodeError;

/// Longest reply line accepted (a USER line carries every userdb field).
pub const MAX_REPLY_LINE: usize = 16 * 1024;

/// The client's handshake line.
pub const CLIENT_VERSION: &[u8] = b"VERSION\t1\t1\n";

/// A REQUEST line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The request id the reply carries back.
    pub id: u32,
    /// The login process's pid (its CPID).
    pub client_pid: u32,
    /// The login's auth request id.
    pub auth_id: u32,
    pub cookie: [u8; 16],
    /// Extra parameters (`session_pid=<pid>`, `request_auth_token`), written escaped.
    pub params: Vec<BString>,
}

/// Appends a REQUEST line.
pub fn encode_request(req: &Request, out: &mut Vec<u8>) {
    out.extend_from_slice(
        format!("REQUEST\t{}\t{}\t{}\t", req.id, req.client_pid, req.auth_id).as_bytes(),
    );
    for b in req.cookie {
        out.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    for p in &req.params {
        out.push(b'\t');
        escape_into(p, out);
    }
    out.push(b'\n');
}

/// One line from the auth server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `VERSION\t<major>\t<minor>`
    Version { major: u32, minor: u32 },
    /// `SPID\t<pid>`: the auth server's pid (must equal the request's auth_pid).
    Spid(u32),
    /// `USER\t<id>\t<user>\t<fields>...`
    User {
        id: u32,
        user: BString,
        fields: Vec<BString>,
    },
    /// `NOTFOUND\t<id>`
    NotFound { id: u32 },
    /// `FAIL\t<id>[\treason=<text>]`; the reason without its `reason=`.
    Fail { id: u32, reason: Option<BString> },
    /// `CUID\t...`: we are talking to an auth client socket.
    Cuid,
}

/// A reply line that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthMasterError {
    #[error("auth-master reply line too long")]
    TooLong,
    #[error("invalid auth-master reply: {}", bstr::BStr::new(.0))]
    Invalid(BString),
}

fn num(f: &[u8]) -> Option<u32> {
    if f.is_empty() || f.len() > 10 || !f.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(f).ok()?.parse().ok()
}

/// Decodes the first line of `buf`. Returns the bytes consumed and the reply.
pub fn decode_reply(buf: &[u8]) -> Result<(usize, Reply), DecodeError<AuthMasterError>> {
    let Some(lf) = memchr::memchr(b'\n', buf) else {
        return if buf.len() >= MAX_REPLY_LINE {
            Err(DecodeError::Invalid(AuthMasterError::TooLong))
        } else {
            Err(DecodeError::Incomplete)
        };
    };
    if lf >= MAX_REPLY_LINE {
        return Err(DecodeError::Invalid(AuthMasterError::TooLong));
    }
    let line = &buf[..lf];
    let invalid = || DecodeError::Invalid(AuthMasterError::Invalid(BString::from(line)));
    let f = split_fields(line);
    let name = f.first().map(|c| c.as_ref()).unwrap_or(b"");
    let reply = match name {
        b"VERSION" if f.len() >= 3 => Reply::Version {
            major: num(&f[1]).ok_or_else(invalid)?,
            minor: num(&f[2]).ok_or_else(invalid)?,
        },
        b"SPID" if f.len() >= 2 => Reply::Spid(num(&f[1]).ok_or_else(invalid)?),
        b"USER" if f.len() >= 3 => Reply::User {
            id: num(&f[1]).ok_or_else(invalid)?,
            user: BString::from(f[2].as_ref()),
            fields: f[3..].iter().map(|x| BString::from(x.as_ref())).collect(),
        },
        b"NOTFOUND" if f.len() >= 2 => Reply::NotFound {
            id: num(&f[1]).ok_or_else(invalid)?,
        },
        b"FAIL" if f.len() >= 2 => Reply::Fail {
            id: num(&f[1]).ok_or_else(invalid)?,
            reason: f[2..]
                .iter()
                .find_map(|x| x.strip_prefix(b"reason=").map(BString::from)),
        },
        b"CUID" => Reply::Cuid,
        _ => return Err(invalid()),
    };
    Ok((lf + 1, reply))
}

/// Encodes a reply line (for tests and fake servers).
pub fn encode_reply(reply: &Reply, out: &mut Vec<u8>) {
    match reply {
        Reply::Version { major, minor } => {
            out.extend_from_slice(format!("VERSION\t{major}\t{minor}").as_bytes())
        }
        Reply::Spid(pid) => out.extend_from_slice(format!("SPID\t{pid}").as_bytes()),
        Reply::User { id, user, fields } => {
            out.extend_from_slice(format!("USER\t{id}\t").as_bytes());
            escape_into(user, out);
            for f in fields {
                out.push(b'\t');
                escape_into(f, out);
            }
        }
        Reply::NotFound { id } => out.extend_from_slice(format!("NOTFOUND\t{id}").as_bytes()),
        Reply::Fail { id, reason } => {
            out.extend_from_slice(format!("FAIL\t{id}").as_bytes());
            if let Some(r) = reason {
                out.extend_from_slice(b"\treason=");
                escape_into(r, out);
            }
        }
        Reply::Cuid => out.extend_from_slice(b"CUID\t1"),
    }
    out.push(b'\n');
}

/// The value of `key=` among userdb fields (the first one).
pub fn field<'a>(fields: &'a [BString], key: &str) -> Option<&'a [u8]> {
    fields.iter().find_map(|f| {
        f.strip_prefix(key.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"="))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_answer_request() {
        // master-interface.md §14: the REQUEST stock imap sent.
        let cookie: [u8; 16] = [
            0x73, 0x44, 0x6c, 0x36, 0x24, 0xb8, 0xa4, 0xc2, 0x69, 0x3d, 0xf7, 0xd6, 0x05, 0xd0,
            0x86, 0x00,
        ];
        let mut out = Vec::new();
        encode_request(
            &Request {
                id: 1439694849,
                client_pid: 13854,
                auth_id: 1,
                cookie,
                params: vec!["session_pid=13857".into(), "request_auth_token".into()],
            },
            &mut out,
        );
        assert_eq!(
            out,
            b"REQUEST\t1439694849\t13854\t1\t73446c3624b8a4c2693df7d605d08600\tsession_pid=13857\trequest_auth_token\n"
        );
    }

    #[test]
    fn known_answer_replies() {
        let cases: &[(&[u8], Reply)] = &[
            (b"VERSION\t1\t1\n", Reply::Version { major: 1, minor: 1 }),
            (b"SPID\t13856\n", Reply::Spid(13856)),
            (
                b"USER\t1439694849\ttestuser\tuid=5000\tgid=5000\thome=/h\tauth_mech=PLAIN\n",
                Reply::User {
                    id: 1439694849,
                    user: "testuser".into(),
                    fields: vec![
                        "uid=5000".into(),
                        "gid=5000".into(),
                        "home=/h".into(),
                        "auth_mech=PLAIN".into(),
                    ],
                },
            ),
            (b"NOTFOUND\t7\n", Reply::NotFound { id: 7 }),
            (
                b"FAIL\t7\n",
                Reply::Fail {
                    id: 7,
                    reason: None,
                },
            ),
            (
                b"FAIL\t7\treason=gone away\n",
                Reply::Fail {
                    id: 7,
                    reason: Some("gone away".into()),
                },
            ),
            (b"CUID\t1\n", Reply::Cuid),
        ];
        for (bytes, want) in cases {
            let (used, got) = decode_reply(bytes).unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(&got, want);
            let mut out = Vec::new();
            encode_reply(want, &mut out);
            assert_eq!(&out[..], *bytes);
            for n in 0..bytes.len() {
                assert_eq!(decode_reply(&bytes[..n]), Err(DecodeError::Incomplete));
            }
        }
    }

    #[test]
    fn escaped_fields_are_unescaped() {
        let (_, r) = decode_reply(b"USER\t1\tu\x01tx\thome=/a\x01tb\n").unwrap();
        assert_eq!(
            r,
            Reply::User {
                id: 1,
                user: "u\tx".into(),
                fields: vec!["home=/a\tb".into()]
            }
        );
    }

    #[test]
    fn invalid_lines() {
        for bad in [
            &b"USER\tx\tu\n"[..],
            b"USER\t1\n",
            b"SPID\t-1\n",
            b"BOGUS\t1\n",
            b"\n",
            b"VERSION\t1\n",
        ] {
            assert!(
                matches!(decode_reply(bad), Err(DecodeError::Invalid(_))),
                "{bad:?}"
            );
        }
        let long = vec![b'a'; MAX_REPLY_LINE];
        assert_eq!(
            decode_reply(&long),
            Err(DecodeError::Invalid(AuthMasterError::TooLong))
        );
    }

    #[test]
    fn field_lookup() {
        let f: Vec<BString> = vec!["uidx=1".into(), "uid=5".into(), "uid=6".into()];
        assert_eq!(field(&f, "uid"), Some(&b"5"[..]));
        assert_eq!(field(&f, "gid"), None);
    }

    proptest! {
        #[test]
        fn user_round_trip(id in any::<u32>(),
                           user in proptest::collection::vec(1u8..=255, 1..20),
                           fields in proptest::collection::vec(
                               proptest::collection::vec(1u8..=255, 0..20), 0..5)) {
            let r = Reply::User {
                id,
                user: user.into(),
                fields: fields.into_iter().map(BString::from).collect(),
            };
            let mut out = Vec::new();
            encode_reply(&r, &mut out);
            let (used, back) = decode_reply(&out).unwrap();
            prop_assert_eq!(used, out.len());
            prop_assert_eq!(back, r);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_reply(&bytes);
        }
    }
}
