//! The login → post-login hand-off (master-interface.md §14): the 96-byte `master_auth`
//! request a login process (imap-login) sends with the client fd, the data that follows it
//! (session id, the IMAP prefix, buffered client input), and the 12-byte reply.
//!
//! Layout on x86-64 (native byte order, as stock sends it):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | tag (reply carries it back) |
//! | 4 | 4 | auth_pid |
//! | 8 | 4 | auth_id |
//! | 12 | 4 | client_pid |
//! | 16 | 16 | cookie |
//! | 32 | 20 | local ip: u16 family, 2 pad, 16 address bytes |
//! | 52 | 20 | remote ip |
//! | 72 | 2 | local port (host order) |
//! | 74 | 2 | remote port |
//! | 76 | 4 | flags |
//! | 80 | 4 | data_size (at most [`MAX_DATA_SIZE`]) |
//! | 84 | 4 | padding |
//! | 88 | 8 | ino of the passed fd |
//!
//! The decoder is pure: the caller reads bytes (and the fd) from the socket and feeds them in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bstr::BString;

use super::DecodeError;

/// Size of the request struct.
pub const REQUEST_SIZE: usize = 96;
/// Size of the reply struct.
pub const REPLY_SIZE: usize = 12;
/// Stock's `MASTER_AUTH_MAX_DATA_SIZE` (1024 + 128 + 64 + 2).
pub const MAX_DATA_SIZE: u32 = 1218;
/// Size of the auth cookie.
pub const COOKIE_SIZE: usize = 16;

/// Flag: the connection has TLS compression.
pub const FLAG_TLS_COMPRESSION: u32 = 1;
/// Flag: the connection is secured (TLS or trusted network).
pub const FLAG_CONN_SECURED: u32 = 2;
/// Flag: the connection is secured by TLS specifically.
pub const FLAG_CONN_SSL_SECURED: u32 = 4;
/// Flag: implicit login, no command reply expected (not used by imap-login in 2.3).
pub const FLAG_IMPLICIT: u32 = 8;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The fixed part of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub tag: u32,
    pub auth_pid: u32,
    pub auth_id: u32,
    pub client_pid: u32,
    pub cookie: [u8; COOKIE_SIZE],
    /// `None` for family 0 (no address, e.g. a unix socket client).
    pub local_ip: Option<IpAddr>,
    pub remote_ip: Option<IpAddr>,
    pub local_port: u16,
    pub remote_port: u16,
    pub flags: u32,
    pub data_size: u32,
    /// `st_ino` of the passed fd.
    pub ino: u64,
}

/// The data after the struct, split the way stock imap splits it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoginData {
    /// The session id (empty when the data had no NUL).
    pub session_id: BString,
    /// The IMAP prefix; `None` when nothing follows the session id (stock then sends a
    /// PREAUTH greeting instead of a tagged reply).
    pub imap: Option<ImapLoginPrefix>,
}

/// IMAP's protocol-specific part of the data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImapLoginPrefix {
    /// The first byte was `1`: send the capabilities untagged before the tagged OK.
    pub send_untagged_capability: bool,
    /// The tag of the client's LOGIN/AUTHENTICATE command.
    pub tag: BString,
    /// Client input already buffered by the login process (pipelined commands).
    pub input: Vec<u8>,
}

/// Why a request can never be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterAuthError {
    /// data_size above [`MAX_DATA_SIZE`] (stock: "Too large auth data_size sent").
    #[error("Too large auth data_size sent ({0})")]
    DataTooLarge(u32),
    /// An address family other than 0, AF_INET, AF_INET6.
    #[error("invalid address family {0}")]
    BadFamily(u16),
}

/// Status of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStatus {
    /// 0: the post-login process took the client.
    Ok,
    /// 1: internal error.
    InternalError,
}

/// The 12-byte reply to the login process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthReply {
    pub tag: u32,
    pub status: AuthStatus,
    /// pid of the process serving the client.
    pub mail_pid: i32,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn decode_ip(b: &[u8]) -> Result<Option<IpAddr>, MasterAuthError> {
    let family = u16_at(b, 0);
    let addr = &b[4..20];
    match family {
        0 => Ok(None),
        AF_INET => Ok(Some(IpAddr::V4(Ipv4Addr::new(
            addr[0], addr[1], addr[2], addr[3],
        )))),
        AF_INET6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(addr);
            Ok(Some(IpAddr::V6(Ipv6Addr::from(a))))
        }
        f => Err(MasterAuthError::BadFamily(f)),
    }
}

fn encode_ip(ip: Option<IpAddr>, out: &mut [u8]) {
    out.fill(0);
    match ip {
        None => {}
        Some(IpAddr::V4(v4)) => {
            out[0..2].copy_from_slice(&AF_INET.to_ne_bytes());
            out[4..8].copy_from_slice(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            out[0..2].copy_from_slice(&AF_INET6.to_ne_bytes());
            out[4..20].copy_from_slice(&v6.octets());
        }
    }
}

/// Decodes the 96-byte struct at the start of `buf` (validating data_size and the families).
pub fn decode_request_head(buf: &[u8]) -> Result<AuthRequest, DecodeError<MasterAuthError>> {
    let b = buf.get(..REQUEST_SIZE).ok_or(DecodeError::Incomplete)?;
    let data_size = u32_at(b, 80);
    if data_size > MAX_DATA_SIZE {
        return Err(DecodeError::Invalid(MasterAuthError::DataTooLarge(
            data_size,
        )));
    }
    let mut cookie = [0u8; COOKIE_SIZE];
    cookie.copy_from_slice(&b[16..32]);
    Ok(AuthRequest {
        tag: u32_at(b, 0),
        auth_pid: u32_at(b, 4),
        auth_id: u32_at(b, 8),
        client_pid: u32_at(b, 12),
        cookie,
        local_ip: decode_ip(&b[32..52]).map_err(DecodeError::Invalid)?,
        remote_ip: decode_ip(&b[52..72]).map_err(DecodeError::Invalid)?,
        local_port: u16_at(b, 72),
        remote_port: u16_at(b, 74),
        flags: u32_at(b, 76),
        data_size,
        ino: u64::from_ne_bytes(b[88..96].try_into().expect("8 bytes")),
    })
}

/// Decodes a whole request (struct + data). Returns the bytes consumed.
pub fn decode_request(
    buf: &[u8],
) -> Result<(usize, AuthRequest, LoginData), DecodeError<MasterAuthError>> {
    let req = decode_request_head(buf)?;
    let end = REQUEST_SIZE + req.data_size as usize;
    let data = buf.get(REQUEST_SIZE..end).ok_or(DecodeError::Incomplete)?;
    Ok((end, req, parse_login_data(data)))
}

/// Splits the request data as stock imap does: session id up to the first NUL (no NUL: no
/// session id and no data), then `'0'|'1'`, the tag up to NUL, the rest is client input.
pub fn parse_login_data(data: &[u8]) -> LoginData {
    let Some(nul) = memchr::memchr(0, data) else {
        return LoginData::default();
    };
    let session_id = BString::from(&data[..nul]);
    let rest = &data[nul + 1..];
    if rest.is_empty() {
        return LoginData {
            session_id,
            imap: None,
        };
    }
    let send_untagged_capability = rest[0] == b'1';
    let rest = &rest[1..];
    let (tag, input) = match memchr::memchr(0, rest) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    LoginData {
        session_id,
        imap: Some(ImapLoginPrefix {
            send_untagged_capability,
            tag: BString::from(tag),
            input: input.to_vec(),
        }),
    }
}

/// Encodes the data part (the inverse of [`parse_login_data`] for NUL-free session ids and tags).
pub fn encode_login_data(data: &LoginData, out: &mut Vec<u8>) {
    out.extend_from_slice(&data.session_id);
    out.push(0);
    if let Some(p) = &data.imap {
        out.push(if p.send_untagged_capability {
            b'1'
        } else {
            b'0'
        });
        out.extend_from_slice(&p.tag);
        out.push(0);
        out.extend_from_slice(&p.input);
    }
}

/// Encodes the 96-byte struct (`data_size` as given) followed by nothing.
pub fn encode_request_head(req: &AuthRequest) -> [u8; REQUEST_SIZE] {
    let mut b = [0u8; REQUEST_SIZE];
    b[0..4].copy_from_slice(&req.tag.to_ne_bytes());
    b[4..8].copy_from_slice(&req.auth_pid.to_ne_bytes());
    b[8..12].copy_from_slice(&req.auth_id.to_ne_bytes());
    b[12..16].copy_from_slice(&req.client_pid.to_ne_bytes());
    b[16..32].copy_from_slice(&req.cookie);
    encode_ip(req.local_ip, &mut b[32..52]);
    encode_ip(req.remote_ip, &mut b[52..72]);
    b[72..74].copy_from_slice(&req.local_port.to_ne_bytes());
    b[74..76].copy_from_slice(&req.remote_port.to_ne_bytes());
    b[76..80].copy_from_slice(&req.flags.to_ne_bytes());
    b[80..84].copy_from_slice(&req.data_size.to_ne_bytes());
    b[88..96].copy_from_slice(&req.ino.to_ne_bytes());
    b
}

/// Encodes a request with its data; `req.data_size` is set from the data.
pub fn encode_request(req: &AuthRequest, data: &LoginData, out: &mut Vec<u8>) {
    let mut d = Vec::new();
    encode_login_data(data, &mut d);
    let mut head = req.clone();
    head.data_size = d.len() as u32;
    out.extend_from_slice(&encode_request_head(&head));
    out.extend_from_slice(&d);
}

impl AuthReply {
    /// The 12 reply bytes.
    pub fn encode(&self) -> [u8; REPLY_SIZE] {
        let mut b = [0u8; REPLY_SIZE];
        b[0..4].copy_from_slice(&self.tag.to_ne_bytes());
        let status: u32 = match self.status {
            AuthStatus::Ok => 0,
            AuthStatus::InternalError => 1,
        };
        b[4..8].copy_from_slice(&status.to_ne_bytes());
        b[8..12].copy_from_slice(&self.mail_pid.to_ne_bytes());
        b
    }

    /// Decodes a reply; `None` if shorter than 12 bytes or the status is unknown.
    pub fn decode(buf: &[u8]) -> Option<AuthReply> {
        let b = buf.get(..REPLY_SIZE)?;
        let status = match u32_at(b, 4) {
            0 => AuthStatus::Ok,
            1 => AuthStatus::InternalError,
            _ => return None,
        };
        Some(AuthReply {
            tag: u32_at(b, 0),
            status,
            mail_pid: i32::from_ne_bytes(b[8..12].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The request observed from stock imap-login (master-interface.md §14), with a made-up
    /// cookie: tag 1, auth pid 13856, auth id 1, client pid 13854,
    /// 127.0.0.1:14300 <- 127.0.0.1:51204, flags secured, data_size 24, inode 17318.
    #[cfg(target_endian = "little")]
    fn observed() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&[1, 0, 0, 0, 0x20, 0x36, 0, 0, 1, 0, 0, 0, 0x1e, 0x36, 0, 0]);
        b.extend_from_slice(&[0xab; 16]);
        for _ in 0..2 {
            b.extend_from_slice(&[2, 0, 0, 0, 0x7f, 0, 0, 1]);
            b.extend_from_slice(&[0; 12]);
        }
        b.extend_from_slice(&[
            0xdc, 0x37, 0x04, 0xc8, 2, 0, 0, 0, 0x18, 0, 0, 0, 0, 0, 0, 0,
        ]);
        b.extend_from_slice(&[0xa6, 0x43, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(b"Hp251FphBMh/AAAB\x001BBDE2\x00");
        b
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn known_answer_request() {
        let bytes = observed();
        let (used, req, data) = decode_request(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(req.tag, 1);
        assert_eq!(req.auth_pid, 13856);
        assert_eq!(req.auth_id, 1);
        assert_eq!(req.client_pid, 13854);
        assert_eq!(req.local_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(req.remote_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(req.local_port, 14300);
        assert_eq!(req.remote_port, 51204);
        assert_eq!(req.flags, FLAG_CONN_SECURED);
        assert_eq!(req.data_size, 24);
        assert_eq!(req.ino, 17318);
        assert_eq!(data.session_id, "Hp251FphBMh/AAAB");
        let imap = data.imap.clone().unwrap();
        assert!(imap.send_untagged_capability);
        assert_eq!(imap.tag, "BBDE2");
        assert!(imap.input.is_empty());
        // And back to the same bytes.
        let mut out = Vec::new();
        encode_request(&req, &data, &mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn known_answer_reply() {
        let r = AuthReply {
            tag: 1,
            status: AuthStatus::Ok,
            mail_pid: 13857,
        };
        let bytes = [1, 0, 0, 0, 0, 0, 0, 0, 0x21, 0x36, 0, 0];
        assert_eq!(r.encode(), bytes);
        assert_eq!(AuthReply::decode(&bytes), Some(r));
        assert_eq!(AuthReply::decode(&bytes[..11]), None);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn every_prefix_is_incomplete() {
        let bytes = observed();
        for n in 0..bytes.len() {
            assert_eq!(
                decode_request(&bytes[..n]),
                Err(DecodeError::Incomplete),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn too_large_data_size_is_invalid_before_the_data_arrives() {
        let mut head = encode_request_head(&sample(AuthRequest::default_for_tests()));
        head[80..84].copy_from_slice(&(MAX_DATA_SIZE + 1).to_ne_bytes());
        assert_eq!(
            decode_request(&head),
            Err(DecodeError::Invalid(MasterAuthError::DataTooLarge(
                MAX_DATA_SIZE + 1
            )))
        );
    }

    #[test]
    fn bad_family_is_invalid() {
        let mut head = encode_request_head(&sample(AuthRequest::default_for_tests()));
        head[52..54].copy_from_slice(&7u16.to_ne_bytes());
        assert_eq!(
            decode_request(&head),
            Err(DecodeError::Invalid(MasterAuthError::BadFamily(7)))
        );
    }

    #[test]
    fn login_data_table() {
        type Case = (
            &'static [u8],
            &'static str,
            Option<(bool, &'static str, &'static [u8])>,
        );
        let cases: &[Case] = &[
            (b"", "", None),
            (b"no-nul-at-all", "", None),
            (b"sess\0", "sess", None),
            (b"sess\x000t1\0", "sess", Some((false, "t1", b""))),
            (b"sess\x001t1", "sess", Some((true, "t1", b""))),
            (
                b"s\x000a\0b NOOP\r\n",
                "s",
                Some((false, "a", b"b NOOP\r\n")),
            ),
            (b"s\x000\0", "s", Some((false, "", b""))),
        ];
        for (data, session, imap) in cases {
            let d = parse_login_data(data);
            assert_eq!(d.session_id, *session, "{data:?}");
            let got = d.imap.as_ref().map(|p| {
                (
                    p.send_untagged_capability,
                    p.tag.to_string(),
                    p.input.clone(),
                )
            });
            let want = imap.map(|(u, t, i)| (u, t.to_owned(), i.to_vec()));
            assert_eq!(got, want, "{data:?}");
        }
    }

    fn sample(r: AuthRequest) -> AuthRequest {
        r
    }

    impl AuthRequest {
        fn default_for_tests() -> AuthRequest {
            AuthRequest {
                tag: 1,
                auth_pid: 2,
                auth_id: 3,
                client_pid: 4,
                cookie: [9; 16],
                local_ip: None,
                remote_ip: None,
                local_port: 0,
                remote_port: 0,
                flags: 0,
                data_size: 0,
                ino: 5,
            }
        }
    }

    fn ip() -> impl Strategy<Value = Option<IpAddr>> {
        prop_oneof![
            Just(None),
            any::<[u8; 4]>().prop_map(|a| Some(IpAddr::V4(a.into()))),
            any::<[u8; 16]>().prop_map(|a| Some(IpAddr::V6(a.into()))),
        ]
    }

    fn nul_free() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(1u8..=255, 0..40)
    }

    proptest! {
        #[test]
        fn round_trip(
            ints in any::<[u32; 5]>(),
            cookie in any::<[u8; 16]>(),
            lip in ip(), rip in ip(),
            ports in any::<(u16, u16)>(),
            ino in any::<u64>(),
            session in nul_free(), tag in nul_free(),
            input in proptest::collection::vec(any::<u8>(), 0..100),
            untagged in any::<bool>(),
        ) {
            let req = AuthRequest {
                tag: ints[0], auth_pid: ints[1], auth_id: ints[2], client_pid: ints[3],
                cookie, local_ip: lip, remote_ip: rip, local_port: ports.0,
                remote_port: ports.1, flags: ints[4], data_size: 0, ino,
            };
            let data = LoginData {
                session_id: session.into(),
                imap: Some(ImapLoginPrefix {
                    send_untagged_capability: untagged, tag: tag.into(), input,
                }),
            };
            let mut out = Vec::new();
            encode_request(&req, &data, &mut out);
            let (used, req2, data2) = decode_request(&out).unwrap();
            prop_assert_eq!(used, out.len());
            prop_assert_eq!(req2, AuthRequest { data_size: (out.len() - REQUEST_SIZE) as u32, ..req });
            prop_assert_eq!(data2, data);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_request(&bytes);
            let _ = AuthReply::decode(&bytes);
        }
    }
}
