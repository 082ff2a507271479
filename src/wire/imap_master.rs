//! The imap-master protocol: handing an authenticated IMAP connection to a running stock
//! `imap` process (imap-master-handoff.md).
//!
//! Both sides send `VERSION\timap-master\t1\t0\n`. The sender then sends one line,
//! `<user>[\t<key>=<value>]*\n`, every field tab-escaped, with the client fd attached to its
//! first byte. `userdb_fields` is itself a tab-joined list of escaped `key=value` fields
//! (escaped twice on the wire); `client_output` / `client_input` are base64. The reply is
//! `+` or `-<error>`, then imap closes the connection.

use bstr::BString;

use super::escape::{escape_into, split_fields, unescape};
use super::DecodeError;

/// The handshake line both sides send.
pub const VERSION_LINE: &[u8] = b"VERSION\timap-master\t1\t0\n";

/// Longest line accepted from imap (its replies are short).
pub const MAX_REPLY_LINE: usize = 8192;

/// One hand-off request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Handoff {
    /// The user name (never empty: stock imap asserts on an empty one).
    pub user: BString,
    pub session: Option<BString>,
    pub lip: Option<String>,
    pub lport: Option<u16>,
    pub rip: Option<String>,
    pub rport: Option<u16>,
    /// Every userdb field as `key=value`.
    pub userdb_fields: Vec<BString>,
    /// Bytes imap writes to the client first (the LOGIN reply).
    pub client_output: Vec<u8>,
    /// Bytes imap parses as already-received client input.
    pub client_input: Vec<u8>,
}

fn push_field(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.push(b'\t');
    let mut kv = Vec::with_capacity(key.len() + 1 + value.len());
    kv.extend_from_slice(key.as_bytes());
    kv.push(b'=');
    kv.extend_from_slice(value);
    escape_into(&kv, out);
}

/// Appends the request line (with its LF).
pub fn encode_handoff(h: &Handoff, out: &mut Vec<u8>) {
    escape_into(&h.user, out);
    if let Some(s) = &h.session {
        push_field(out, "session", s);
    }
    if let Some(v) = &h.lip {
        push_field(out, "lip", v.as_bytes());
    }
    if let Some(v) = h.lport {
        push_field(out, "lport", v.to_string().as_bytes());
    }
    if let Some(v) = &h.rip {
        push_field(out, "rip", v.as_bytes());
    }
    if let Some(v) = h.rport {
        push_field(out, "rport", v.to_string().as_bytes());
    }
    if !h.userdb_fields.is_empty() {
        let mut nested = Vec::new();
        for (i, f) in h.userdb_fields.iter().enumerate() {
            if i > 0 {
                nested.push(b'\t');
            }
            escape_into(f, &mut nested);
        }
        push_field(out, "userdb_fields", &nested);
    }
    if !h.client_output.is_empty() {
        push_field(
            out,
            "client_output",
            base64_encode(&h.client_output).as_bytes(),
        );
    }
    if !h.client_input.is_empty() {
        push_field(
            out,
            "client_input",
            base64_encode(&h.client_input).as_bytes(),
        );
    }
    out.push(b'\n');
}

/// Why a request line is not one we understand (used by tests and fake servers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImapMasterError {
    #[error("line too long")]
    TooLong,
    #[error("empty user name")]
    EmptyUser,
    #[error("invalid {0} value")]
    BadValue(&'static str),
    #[error("invalid reply: {}", bstr::BStr::new(.0))]
    BadReply(BString),
}

fn line(buf: &[u8], max: usize) -> Result<(usize, &[u8]), DecodeError<ImapMasterError>> {
    match memchr::memchr(b'\n', buf) {
        Some(lf) if lf < max => {
            let l = &buf[..lf];
            Ok((lf + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        }
        Some(_) => Err(DecodeError::Invalid(ImapMasterError::TooLong)),
        None if buf.len() >= max => Err(DecodeError::Invalid(ImapMasterError::TooLong)),
        None => Err(DecodeError::Incomplete),
    }
}

/// Decodes a request line (the inverse of [`encode_handoff`]; unknown keys are ignored).
pub fn decode_handoff(buf: &[u8]) -> Result<(usize, Handoff), DecodeError<ImapMasterError>> {
    let (used, l) = line(buf, 64 * 1024)?;
    let f = split_fields(l);
    let mut h = Handoff {
        user: BString::from(f.first().map(|x| x.as_ref()).unwrap_or(b"")),
        ..Handoff::default()
    };
    if h.user.is_empty() {
        return Err(DecodeError::Invalid(ImapMasterError::EmptyUser));
    }
    let bad = |k| DecodeError::Invalid(ImapMasterError::BadValue(k));
    for kv in &f[1..] {
        let (k, v) = match memchr::memchr(b'=', kv) {
            Some(i) => (&kv[..i], &kv[i + 1..]),
            None => (&kv[..], &b""[..]),
        };
        let text = || String::from_utf8(v.to_vec()).ok();
        match k {
            b"session" => h.session = Some(v.into()),
            b"lip" => h.lip = Some(text().ok_or_else(|| bad("lip"))?),
            b"rip" => h.rip = Some(text().ok_or_else(|| bad("rip"))?),
            b"lport" => {
                h.lport = Some(
                    text()
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| bad("lport"))?,
                )
            }
            b"rport" => {
                h.rport = Some(
                    text()
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| bad("rport"))?,
                )
            }
            b"userdb_fields" => {
                h.userdb_fields = if v.is_empty() {
                    Vec::new()
                } else {
                    v.split(|&b| b == b'\t')
                        .map(|x| BString::from(unescape(x).into_owned()))
                        .collect()
                }
            }
            b"client_output" => {
                h.client_output = base64_decode(v).ok_or_else(|| bad("client_output"))?
            }
            b"client_input" => {
                h.client_input = base64_decode(v).ok_or_else(|| bad("client_input"))?
            }
            _ => {}
        }
    }
    Ok((used, h))
}

/// A line imap sends on the imap-master connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine {
    /// `VERSION\timap-master\t<major>\t<minor>`
    Version { major: u32, minor: u32 },
    /// `+`: imap took the client.
    Accepted,
    /// `-<error>`
    Rejected(BString),
}

/// Decodes one line from imap.
pub fn decode_server_line(buf: &[u8]) -> Result<(usize, ServerLine), DecodeError<ImapMasterError>> {
    let (used, l) = line(buf, MAX_REPLY_LINE)?;
    let bad = || DecodeError::Invalid(ImapMasterError::BadReply(BString::from(l)));
    let msg = if l == b"+" {
        ServerLine::Accepted
    } else if let Some(err) = l.strip_prefix(b"-") {
        ServerLine::Rejected(BString::from(err))
    } else if l.starts_with(b"VERSION\t") {
        let f: Vec<&[u8]> = l.split(|&b| b == b'\t').collect();
        if f.len() != 4 || f[1] != b"imap-master" {
            return Err(bad());
        }
        let n = |x: &[u8]| -> Option<u32> {
            if x.is_empty() || x.len() > 9 || !x.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(x).ok()?.parse().ok()
        };
        ServerLine::Version {
            major: n(f[2]).ok_or_else(bad)?,
            minor: n(f[3]).ok_or_else(bad)?,
        }
    } else {
        return Err(bad());
    };
    Ok((used, msg))
}

/// Encodes a server line (for fake servers in tests).
pub fn encode_server_line(l: &ServerLine, out: &mut Vec<u8>) {
    match l {
        ServerLine::Version { major, minor } => {
            out.extend_from_slice(format!("VERSION\timap-master\t{major}\t{minor}").as_bytes())
        }
        ServerLine::Accepted => out.push(b'+'),
        ServerLine::Rejected(e) => {
            out.push(b'-');
            out.extend_from_slice(e);
        }
    }
    out.push(b'\n');
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard padded base64; `None` on any invalid input.
pub fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| B64.iter().position(|&x| x == c).map(|p| p as u32);
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let chunks = text.len() / 4;
    for (ci, chunk) in text.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && ci + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_answer_handoff() {
        // imap-master-handoff.md: the line verified against stock imap (peer_* left out).
        let h = Handoff {
            user: "u1".into(),
            session: Some("hoff-84eb2ecea0d0".into()),
            lip: Some("127.0.0.1".into()),
            lport: Some(51587),
            rip: Some("127.0.0.1".into()),
            rport: Some(38332),
            userdb_fields: vec![
                "uid=999".into(),
                "gid=995".into(),
                "home=/srv/mail/u1".into(),
            ],
            client_output: Vec::new(),
            client_input: Vec::new(),
        };
        let mut out = Vec::new();
        encode_handoff(&h, &mut out);
        assert_eq!(
            out,
            b"u1\tsession=hoff-84eb2ecea0d0\tlip=127.0.0.1\tlport=51587\trip=127.0.0.1\trport=38332\tuserdb_fields=uid=999\x01tgid=995\x01thome=/srv/mail/u1\n"
        );
        assert_eq!(decode_handoff(&out), Ok((out.len(), h)));
    }

    #[test]
    fn output_and_input_are_base64() {
        let h = Handoff {
            user: "u".into(),
            client_output: b"x0 OK Logged in\r\n".to_vec(),
            client_input: b"p1 NOOP\r\n".to_vec(),
            ..Handoff::default()
        };
        let mut out = Vec::new();
        encode_handoff(&h, &mut out);
        assert_eq!(
            out,
            b"u\tclient_output=eDAgT0sgTG9nZ2VkIGluDQo=\tclient_input=cDEgTk9PUA0K\n"
        );
    }

    #[test]
    fn nested_escaping_of_userdb_fields() {
        let h = Handoff {
            user: "a\tb".into(),
            userdb_fields: vec!["home=/x\ty".into(), "mail=\x01".into()],
            ..Handoff::default()
        };
        let mut out = Vec::new();
        encode_handoff(&h, &mut out);
        assert_eq!(
            out,
            b"a\x01tb\tuserdb_fields=home=/x\x011ty\x01tmail=\x0111\n"
        );
        assert_eq!(decode_handoff(&out).unwrap().1, h);
    }

    #[test]
    fn server_lines() {
        let cases: &[(&[u8], ServerLine)] = &[
            (VERSION_LINE, ServerLine::Version { major: 1, minor: 0 }),
            (b"+\n", ServerLine::Accepted),
            (
                b"-Failed to create client: Invalid settings\n",
                ServerLine::Rejected("Failed to create client: Invalid settings".into()),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode_server_line(bytes), Ok((bytes.len(), want.clone())));
            let mut out = Vec::new();
            encode_server_line(want, &mut out);
            assert_eq!(&out[..], *bytes);
            for n in 0..bytes.len() {
                assert_eq!(
                    decode_server_line(&bytes[..n]),
                    Err(DecodeError::Incomplete)
                );
            }
        }
        for bad in [
            &b"VERSION\tanvil\t1\t0\n"[..],
            b"ok\n",
            b"\n",
            b"VERSION\timap-master\tx\t0\n",
        ] {
            assert!(matches!(
                decode_server_line(bad),
                Err(DecodeError::Invalid(_))
            ));
        }
    }

    #[test]
    fn base64_known_answers() {
        for (raw, enc) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"\xff\xfe", "//4="),
        ] {
            assert_eq!(base64_encode(raw), enc);
            assert_eq!(base64_decode(enc.as_bytes()).as_deref(), Some(raw));
        }
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Z!==", "===="] {
            assert_eq!(base64_decode(bad.as_bytes()), None, "{bad}");
        }
    }

    fn nul_free(min: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(1u8..=255, min..30)
    }

    proptest! {
        #[test]
        fn base64_round_trip(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(base64_decode(base64_encode(&data).as_bytes()), Some(data));
        }

        #[test]
        fn handoff_round_trip(user in nul_free(1), session in proptest::option::of(nul_free(0)),
                              fields in proptest::collection::vec(nul_free(1), 0..4),
                              output in proptest::collection::vec(any::<u8>(), 0..50),
                              input in proptest::collection::vec(any::<u8>(), 0..50),
                              ports in any::<(u16, u16)>()) {
            let h = Handoff {
                user: user.into(),
                session: session.map(BString::from),
                lip: Some("10.0.0.1".into()),
                lport: Some(ports.0),
                rip: Some("::1".into()),
                rport: Some(ports.1),
                userdb_fields: fields.into_iter().map(BString::from).collect(),
                client_output: output,
                client_input: input,
            };
            let mut out = Vec::new();
            encode_handoff(&h, &mut out);
            prop_assert_eq!(decode_handoff(&out), Ok((out.len(), h)));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_handoff(&bytes);
            let _ = decode_server_line(&bytes);
            let _ = base64_decode(&bytes);
        }
    }
}
