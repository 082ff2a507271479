//! Known answers from stock 2.3.19.1 traffic (anvil-protocol.md, the **[live]** cases),
//! prefix (Incomplete) checks, a differential check against a field-splitting model, and
//! proptest round trips.

use super::*;
use crate::wire::escape::split_fields;
use proptest::prelude::*;

fn b(s: &[u8]) -> Cow<'_, [u8]> {
    Cow::Borrowed(s)
}

fn pid(n: u32) -> Pid {
    Pid::new(n).unwrap()
}

// ---- handshake ----

#[test]
fn handshake_known_answers() {
    let accepted: &[&[u8]] = &[
        b"VERSION\tanvil\t1\t0",          // every stock client
        b"VERSION\tanvil\t01\t0",         // R4: leading zeros
        b"VERSION\tanvil\t1\t99",         // R3: any minor
        b"VERSION\tanvil\t1\t4294967295", // R9e
        b"VERSION\tanvil\t0001\t007",
    ];
    let rejected: &[&[u8]] = &[
        b"VERSION\tanvil\t1\t4294967296", // R9d: minor overflows 32 bits
        b"VERSION\tanvil\t1",             // R5: no TAB after major
        b"VERSION\tanvil\t1\t0\tx",       // R6: extra field
        b"VERSION\tanvilx\t1\t0",         // R8
        b"version\tanvil\t1\t0",          // R9b
        b"VERSION\tanvil\t2\t0",          // major 2
        b"VERSION\tanvil-client\t2\t0",   // a 2.4 client
        b"",                              // empty first line
        b"CONNECT\t1\timap/127.0.0.1/alice",
        b"VERSION\tanvil\t1\t",
        b"VERSION\tanvil\t\t0",
        b"VERSION\tanvil\t+1\t0",
        b"VERSION\tanvil\t1\t+0",
        b"VERSION\tanvil\t 1\t0",
        b"VERSION\tanvil\t1\t0 ",
        b"VERSION\tanvil\t18446744073709551617\t0", // major overflows 64 bits
        b"VERSION\tanvil\t18446744073709551615\t0", // fits, but is not 1
        b"VERSION\tanvil\t1\t0\r",                  // a second CR survives framing
        b"VERSION\tanv\x01il\t1\t0",                // no unescaping here
        b"VERSION anvil 1 0",
    ];
    for line in accepted {
        assert!(is_compatible_version(line), "{:?}", bstr::BStr::new(line));
    }
    for line in rejected {
        assert!(!is_compatible_version(line), "{:?}", bstr::BStr::new(line));
    }
    // R7: the check runs after CR stripping.
    let (n, line) = next_line(b"VERSION\tanvil\t1\t0\r\n").unwrap().unwrap();
    assert_eq!(n, 19);
    assert!(is_compatible_version(line));
    assert_eq!(VERSION_LINE.len(), 18);
    assert!(is_compatible_version(&VERSION_LINE[..17]));
}

// ---- requests ----

type Expect = Result<Option<Request<'static>>, RequestError>;

/// (line as sent, LF included; expected parse; whether `encode_request` gives these bytes back)
fn request_table() -> Vec<(&'static [u8], Expect, bool)> {
    use Command as C;
    use RequestError as E;
    let not_enough = |c| Err(E::NotEnoughParameters(c));
    let invalid_pid = |c| Err(E::InvalidPid(c));
    let invalid = |c| Err(E::InvalidParameters(c));
    let unknown = |n: &[u8]| Err(E::UnknownCommand(BString::from(n)));
    let ok = |r| Ok(Some(r));
    vec![
        // §6.1 mail process lines [live]
        (
            b"CONNECT\t17908\timap/127.0.0.1/alice\n",
            ok(Request::Connect {
                pid: pid(17908),
                ident: b(b"imap/127.0.0.1/alice"),
            }),
            true,
        ),
        (
            b"DISCONNECT\t17908\timap/127.0.0.1/alice\n",
            ok(Request::Disconnect {
                pid: pid(17908),
                ident: b(b"imap/127.0.0.1/alice"),
            }),
            true,
        ),
        (
            b"CONNECT\t21018\tpop3/127.0.0.1/alice\n",
            ok(Request::Connect {
                pid: pid(21018),
                ident: b(b"pop3/127.0.0.1/alice"),
            }),
            true,
        ),
        (
            b"CONNECT\t13857\timap/127.0.0.1/testuser\n",
            ok(Request::Connect {
                pid: pid(13857),
                ident: b(b"imap/127.0.0.1/testuser"),
            }),
            true,
        ),
        // §4.2 C1 [live]
        (
            b"CONNECT\t4242\ttest/1.2.3.4/u\n",
            ok(Request::Connect {
                pid: pid(4242),
                ident: b(b"test/1.2.3.4/u"),
            }),
            true,
        ),
        (
            b"CONNECT\t4343\tother/u2\n",
            ok(Request::Connect {
                pid: pid(4343),
                ident: b(b"other/u2"),
            }),
            true,
        ),
        (b"CONNECT-DUMP\n", ok(Request::ConnectDump), true),
        (
            b"CONNECT-DUMP\tignored\targs\n",
            ok(Request::ConnectDump),
            false,
        ), // C14
        (b"PENALTY-DUMP\n", ok(Request::PenaltyDump), true),
        (b"PENALTY-DUMP\tx\n", ok(Request::PenaltyDump), false),
        // §6.2 login LOOKUP, §6.3 auth sequence [live]
        (
            b"LOOKUP\timap/127.0.0.1/testuser\n",
            ok(Request::Lookup {
                ident: b(b"imap/127.0.0.1/testuser"),
            }),
            true,
        ),
        (
            b"PENALTY-SET-EXPIRE-SECS\t29\n",
            ok(Request::PenaltySetExpireSecs { secs: 29 }),
            true,
        ),
        (
            b"PENALTY-GET\t127.0.0.1\n",
            ok(Request::PenaltyGet {
                ident: b(b"127.0.0.1"),
            }),
            true,
        ),
        (
            b"PENALTY-INC\t127.0.0.1\t1818353248\t1\n",
            ok(Request::PenaltyInc {
                ident: b(b"127.0.0.1"),
                checksum: 1818353248,
                value: 1,
            }),
            true,
        ),
        (
            b"PENALTY-INC\t127.0.0.1\t1818353248\t2\n",
            ok(Request::PenaltyInc {
                ident: b(b"127.0.0.1"),
                checksum: 1818353248,
                value: 2,
            }),
            true,
        ),
        (
            b"PENALTY-INC\t127.0.0.1\t3941969102\t2\n",
            ok(Request::PenaltyInc {
                ident: b(b"127.0.0.1"),
                checksum: 3941969102,
                value: 2,
            }),
            true,
        ),
        (
            b"PENALTY-INC\t127.0.0.1\t0\t0\n",
            ok(Request::PenaltyInc {
                ident: b(b"127.0.0.1"),
                checksum: 0,
                value: 0,
            }),
            true,
        ),
        (
            b"PENALTY-INC\t2001:db8:1::\t0\t4\n",
            ok(Request::PenaltyInc {
                ident: b(b"2001:db8:1::"),
                checksum: 0,
                value: 4,
            }),
            true,
        ),
        // §6.5 master KILL
        (
            b"KILL\t24322\n",
            ok(Request::Kill {
                pid: Some(pid(24322)),
            }),
            true,
        ),
        // framing and fields (§1.8, §3.2, §4.1)
        (b"\n", Ok(None), false),                // L1
        (b"\r\n", Ok(None), false),              // L1 with CR
        (b"\0CONNECT\t1\tx\n", Ok(None), false), // L11: NUL first
        (
            b"LOOKUP\tx\0\tjunk\n",
            ok(Request::Lookup { ident: b(b"x") }),
            false,
        ), // L11
        (
            b"LOOKUP\ta\rb\n",
            ok(Request::Lookup { ident: b(b"a\rb") }),
            false,
        ), // L14 (CR is data, not escaped on encode... see below)
        (
            b"LOOKUP\ta\r\r\n",
            ok(Request::Lookup { ident: b(b"a\r") }),
            false,
        ), // L15
        (b"\t\n", unknown(b""), false),          // L2
        (b"lookup\tx\n", unknown(b"lookup"), false), // L4
        (b"FOO\n", unknown(b"FOO"), false),      // L3
        (b"VERSION\tanvil\t1\t0\n", unknown(b"VERSION"), false), // R9
        (
            b"LOOKUP\tx\textra\tmore\n",
            ok(Request::Lookup { ident: b(b"x") }),
            false,
        ), // L5
        // escaping (§3.2)
        (
            b"CONNECT\t1\tesc/a\x01tb\x01nc\x01rd\x011e\n",
            ok(Request::Connect {
                pid: pid(1),
                ident: b(b"esc/a\tb\nc\rd\x01e"),
            }),
            true,
        ), // E1
        (
            b"CONNECT\t1\tesc2/\x01x\x01\x01\n",
            ok(Request::Connect {
                pid: pid(1),
                ident: b(b"esc2/x\x01"),
            }),
            false,
        ), // E2/E5
        (
            b"CONNECT\t1\tq\x01\tx\n",
            ok(Request::Connect {
                pid: pid(1),
                ident: b(b"q"),
            }),
            false,
        ), // E3
        (
            b"CONNECT\t1\tesc4/ab\x010cd\n",
            ok(Request::Connect {
                pid: pid(1),
                ident: b(b"esc4/ab"),
            }),
            false,
        ), // E4
        (
            b"LOOK\x01UP\tx\n",
            ok(Request::Lookup { ident: b(b"x") }),
            false,
        ), // E5
        (
            b"CONNECT\t9\x0105\tx\n",
            ok(Request::Connect {
                pid: pid(9),
                ident: b(b"x"),
            }),
            false,
        ), // E6
        (
            b"CONNECT\x010junk\t1\tx\n",
            ok(Request::Connect {
                pid: pid(1),
                ident: b(b"x"),
            }),
            false,
        ), // NUL cuts the name only
        (b"q\x01\tx\n", unknown(b"q"), false),
        (b"\x01\n", unknown(b""), false),
        (b"\x01\x01\n", unknown(b"\x01"), false),
        // CONNECT / DISCONNECT argument rules (C6–C10)
        (b"CONNECT\n", not_enough(C::Connect), false), // C7
        (b"CONNECT\t1\n", not_enough(C::Connect), false), // C6
        (b"DISCONNECT\t1\n", not_enough(C::Disconnect), false),
        (
            b"CONNECT\t1\t\n",
            ok(Request::Connect {
                pid: pid(1),
                ident: b(b""),
            }),
            true,
        ), // C10
        (
            b"CONNECT\t007\tx\n",
            ok(Request::Connect {
                pid: pid(7),
                ident: b(b"x"),
            }),
            false,
        ),
        (
            b"CONNECT\t0\tx\n",
            ok(Request::Connect {
                pid: pid(0),
                ident: b(b"x"),
            }),
            true,
        ),
        (
            b"CONNECT\t2147483647\tx\n",
            ok(Request::Connect {
                pid: pid(2147483647),
                ident: b(b"x"),
            }),
            true,
        ),
        (
            b"CONNECT\t0000000000000000000000042\tx\n",
            ok(Request::Connect {
                pid: pid(42),
                ident: b(b"x"),
            }),
            false,
        ),
        (b"CONNECT\tabc\tx\n", invalid_pid(C::Connect), false), // C8.x
        (b"CONNECT\t-1\tx\n", invalid_pid(C::Connect), false),
        (b"CONNECT\t\tx\n", invalid_pid(C::Connect), false),
        (b"CONNECT\t+5\tx\n", invalid_pid(C::Connect), false),
        (b"CONNECT\t 5\tx\n", invalid_pid(C::Connect), false),
        (b"CONNECT\t5 \tx\n", invalid_pid(C::Connect), false),
        (b"CONNECT\t2147483648\tx\n", invalid_pid(C::Connect), false), // C9
        (
            b"CONNECT\t99999999999999999999\tx\n",
            invalid_pid(C::Connect),
            false,
        ),
        (b"DISCONNECT\tx\ty\n", invalid_pid(C::Disconnect), false),
        // KILL (C4, C5): an invalid pid is carried to the session's master check.
        (b"KILL\n", not_enough(C::Kill), false), // C5
        (b"KILL\tabc\n", ok(Request::Kill { pid: None }), false),
        (b"KILL\t\n", ok(Request::Kill { pid: None }), true),
        (
            b"KILL\t2147483648\n",
            ok(Request::Kill { pid: None }),
            false,
        ),
        // LOOKUP, PENALTY-GET (C11, P12)
        (b"LOOKUP\n", not_enough(C::Lookup), false),
        (b"LOOKUP\t\n", ok(Request::Lookup { ident: b(b"") }), true),
        (b"PENALTY-GET\n", not_enough(C::PenaltyGet), false),
        (
            b"PENALTY-GET\t\n",
            ok(Request::PenaltyGet { ident: b(b"") }),
            true,
        ), // auth with no IP
        // PENALTY-INC (P8–P11, P17)
        (b"PENALTY-INC\n", not_enough(C::PenaltyInc), false),
        (b"PENALTY-INC\tx\t1\n", not_enough(C::PenaltyInc), false), // P11
        (
            b"PENALTY-INC\tx\t1\t65535\n",
            ok(Request::PenaltyInc {
                ident: b(b"x"),
                checksum: 1,
                value: 65535,
            }),
            true,
        ),
        (b"PENALTY-INC\tx\t1\t65536\n", invalid(C::PenaltyInc), false),
        (b"PENALTY-INC\tx\t1\t0\n", invalid(C::PenaltyInc), false),
        (
            b"PENALTY-INC\tx\t4294967295\t1\n",
            ok(Request::PenaltyInc {
                ident: b(b"x"),
                checksum: u32::MAX,
                value: 1,
            }),
            true,
        ),
        (
            b"PENALTY-INC\tx\t4294967296\t1\n",
            invalid(C::PenaltyInc),
            false,
        ),
        (b"PENALTY-INC\tx\t-1\t1\n", invalid(C::PenaltyInc), false),
        (b"PENALTY-INC\tx\t1\tabc\n", invalid(C::PenaltyInc), false),
        (b"PENALTY-INC\tx\t\t1\n", invalid(C::PenaltyInc), false),
        (
            b"PENALTY-INC\tx\t1\t4294967296\n",
            invalid(C::PenaltyInc),
            false,
        ),
        // PENALTY-SET-EXPIRE-SECS (P13, P14)
        (
            b"PENALTY-SET-EXPIRE-SECS\n",
            invalid(C::PenaltySetExpireSecs),
            false,
        ),
        (
            b"PENALTY-SET-EXPIRE-SECS\tabc\n",
            invalid(C::PenaltySetExpireSecs),
            false,
        ),
        (
            b"PENALTY-SET-EXPIRE-SECS\t\n",
            invalid(C::PenaltySetExpireSecs),
            false,
        ),
        (
            b"PENALTY-SET-EXPIRE-SECS\t0\n",
            ok(Request::PenaltySetExpireSecs { secs: 0 }),
            true,
        ),
        (
            b"PENALTY-SET-EXPIRE-SECS\t4294967295\n",
            ok(Request::PenaltySetExpireSecs { secs: u32::MAX }),
            true,
        ),
        (
            b"PENALTY-SET-EXPIRE-SECS\t4294967296\n",
            invalid(C::PenaltySetExpireSecs),
            false,
        ),
    ]
}

#[test]
fn request_known_answers() {
    for (wire, want, canonical) in request_table() {
        let shown = bstr::BStr::new(wire);
        let got = decode_request(wire);
        match &want {
            Ok(req) => assert_eq!(got, Ok((wire.len(), req.clone())), "{shown:?}"),
            Err(e) => assert_eq!(got, Err(DecodeError::Invalid(Ok(e.clone()))), "{shown:?}"),
        }
        if let Ok(Some(req)) = &want {
            let mut out = Vec::new();
            encode_request(req, &mut out);
            if canonical {
                assert_eq!(bstr::BStr::new(&out), shown);
            }
            // Whatever the spelling, the canonical form decodes to the same request.
            assert_eq!(
                decode_request(&out),
                Ok((out.len(), Some(req.clone()))),
                "{shown:?}"
            );
        }
    }
}

/// Every strict prefix of every table line is Incomplete (none holds an LF).
#[test]
fn request_prefixes_are_incomplete() {
    for (wire, _, _) in request_table() {
        for end in 0..wire.len() {
            assert_eq!(
                decode_request(&wire[..end]),
                Err(DecodeError::Incomplete),
                "{:?}",
                bstr::BStr::new(&wire[..end])
            );
        }
    }
}

#[test]
fn error_texts_are_stock_reasons() {
    use Command as C;
    use RequestError as E;
    let cases: Vec<(RequestError, &str)> = vec![
        (
            E::NotEnoughParameters(C::Connect),
            "CONNECT: Not enough parameters",
        ),
        (E::InvalidPid(C::Connect), "CONNECT: Invalid pid"),
        (
            E::NotEnoughParameters(C::Disconnect),
            "DISCONNECT: Not enough parameters",
        ),
        (E::InvalidPid(C::Disconnect), "DISCONNECT: Invalid pid"),
        (
            E::NotEnoughParameters(C::Kill),
            "KILL: Not enough parameters",
        ),
        (E::InvalidPid(C::Kill), "KILL: Invalid pid"),
        (
            E::NotEnoughParameters(C::Lookup),
            "LOOKUP: Not enough parameters",
        ),
        (
            E::NotEnoughParameters(C::PenaltyGet),
            "PENALTY-GET: Not enough parameters",
        ),
        (
            E::NotEnoughParameters(C::PenaltyInc),
            "PENALTY-INC: Not enough parameters",
        ),
        (
            E::InvalidParameters(C::PenaltyInc),
            "PENALTY-INC: Invalid parameters",
        ),
        (
            E::InvalidParameters(C::PenaltySetExpireSecs),
            "PENALTY-SET-EXPIRE-SECS: Invalid parameters",
        ),
        (
            E::UnknownCommand(BString::from("VERSION")),
            "Unknown command: VERSION",
        ),
        (E::UnknownCommand(BString::from("")), "Unknown command: "),
    ];
    for (e, text) in cases {
        assert_eq!(e.to_string(), text);
    }
}

/// The hot path borrows its idents from the line.
#[test]
fn plain_idents_are_borrowed() {
    let line = b"CONNECT\t17908\timap/127.0.0.1/alice";
    match parse_request(line) {
        Ok(Some(Request::Connect {
            ident: Cow::Borrowed(i),
            ..
        })) => assert_eq!(i, b"imap/127.0.0.1/alice"),
        other => panic!("{other:?}"),
    }
    match parse_request(b"PENALTY-INC\t127.0.0.1\t0\t0") {
        Ok(Some(Request::PenaltyInc {
            ident: Cow::Borrowed(_),
            ..
        })) => {}
        other => panic!("{other:?}"),
    }
}

/// Pipelined input (§1.8, L6; §6.3 auth start-up; doveadm's single write).
#[test]
fn pipelined_transcripts() {
    let doveadm = b"VERSION\tanvil\t1\t0\nCONNECT-DUMP\n";
    let (n, first) = next_line(doveadm).unwrap().unwrap();
    assert!(is_compatible_version(first));
    assert_eq!(
        decode_request(&doveadm[n..]),
        Ok((13, Some(Request::ConnectDump)))
    );

    let mut stream = Vec::new();
    let table = request_table();
    for (wire, _, _) in &table {
        stream.extend_from_slice(wire);
    }
    let mut rest = &stream[..];
    for (wire, want, _) in &table {
        match decode_request(rest) {
            Ok((n, req)) => {
                assert_eq!(n, wire.len());
                assert_eq!(Ok(req), *want);
                rest = &rest[n..];
            }
            Err(DecodeError::Invalid(Ok(e))) => {
                assert_eq!(Err(e), *want);
                rest = &rest[wire.len()..];
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(rest.is_empty());
    assert_eq!(decode_request(rest), Err(DecodeError::Incomplete));
}

#[test]
fn oversized_request_lines() {
    let mut ok = b"LOOKUP\t".to_vec();
    ok.extend(std::iter::repeat_n(b'a', 1016));
    ok.push(b'\n');
    assert_eq!(ok.len(), 1024); // L7
    assert_eq!(
        decode_request(&ok),
        Ok((
            1024,
            Some(Request::Lookup {
                ident: b(&ok[7..1023])
            })
        ))
    );
    let mut long = ok.clone();
    long.insert(7, b'a'); // L8: 1025 bytes
    assert_eq!(
        decode_request(&long),
        Err(DecodeError::Invalid(Err(LineError::TooLong)))
    );
    assert_eq!(
        decode_request(&long[..1024]),
        Err(DecodeError::Invalid(Err(LineError::TooLong)))
    );
    assert_eq!(decode_request(&long[..1023]), Err(DecodeError::Incomplete));
}

#[test]
fn pid_rules() {
    assert_eq!(Pid::parse(b"0"), Some(pid(0)));
    assert_eq!(Pid::parse(b"007"), Some(pid(7)));
    assert_eq!(Pid::parse(b"2147483647"), Some(pid(2147483647)));
    for bad in [
        &b""[..],
        b"2147483648",
        b"4294967296",
        b"-1",
        b"+5",
        b" 5",
        b"5 ",
        b"abc",
        b"1e3",
        b"12345678901234567890",
    ] {
        assert_eq!(Pid::parse(bad), None, "{:?}", bstr::BStr::new(bad));
    }
    assert_eq!(Pid::new(Pid::MAX + 1), None);
    assert_eq!(pid(7).to_string(), "7");
}

// ---- replies ----

#[derive(Debug, Clone, Copy)]
enum Decoder {
    Count,
    Penalty,
    ConnectRow,
    PenaltyRow,
}

/// Decodes one reply with the decoder a client would use for it.
fn decode_as(decoder: Decoder, buf: &[u8]) -> Result<(usize, Reply), DecodeError<ReplyError>> {
    Ok(match decoder {
        Decoder::Count => decode_count_reply(buf).map(|(n, c)| (n, Reply::Count(c)))?,
        Decoder::Penalty => decode_penalty_reply(buf).map(|(n, (penalty, last_penalty))| {
            (
                n,
                Reply::Penalty {
                    penalty,
                    last_penalty,
                },
            )
        })?,
        Decoder::ConnectRow => decode_connect_row(buf)
            .map(|(n, r)| (n, r.map_or(Reply::DumpEnd, Reply::ConnectRow)))?,
        Decoder::PenaltyRow => decode_penalty_row(buf)
            .map(|(n, r)| (n, r.map_or(Reply::DumpEnd, Reply::PenaltyRow)))?,
    })
}

fn crow(ident: &[u8], p: u32, refcount: u32) -> Reply {
    Reply::ConnectRow(ConnectRow {
        ident: BString::from(ident),
        pid: pid(p),
        refcount,
    })
}

fn prow(ident: &[u8], penalty: u32, last_penalty: u32, last_update: u32) -> Reply {
    Reply::PenaltyRow(PenaltyRow {
        ident: BString::from(ident),
        penalty,
        last_penalty,
        last_update,
    })
}

fn reply_table() -> Vec<(&'static [u8], Decoder, Reply)> {
    use Decoder as D;
    vec![
        (b"0\n", D::Count, Reply::Count(0)),
        (b"3\n", D::Count, Reply::Count(3)), // scenario 03
        (b"4294967295\n", D::Count, Reply::Count(u32::MAX)),
        // §6.3 auth sequence [live, scenario 05]
        (
            b"0 0\n",
            D::Penalty,
            Reply::Penalty {
                penalty: 0,
                last_penalty: 0,
            },
        ),
        (
            b"1 1795892735\n",
            D::Penalty,
            Reply::Penalty {
                penalty: 1,
                last_penalty: 1795892735,
            },
        ),
        (
            b"2 1795892747\n",
            D::Penalty,
            Reply::Penalty {
                penalty: 2,
                last_penalty: 1795892747,
            },
        ),
        // C1 [live]
        (
            b"test/1.2.3.4/u\t4242\t2\n",
            D::ConnectRow,
            crow(b"test/1.2.3.4/u", 4242, 2),
        ),
        (
            b"other/u2\t4343\t1\n",
            D::ConnectRow,
            crow(b"other/u2", 4343, 1),
        ),
        (
            b"test/1.2.3.4/u\t4343\t1\n",
            D::ConnectRow,
            crow(b"test/1.2.3.4/u", 4343, 1),
        ),
        (b"\n", D::ConnectRow, Reply::DumpEnd),
        // E1 [live]
        (
            b"esc/a\x01tb\x01nc\x01rd\x011e\t1\t1\n",
            D::ConnectRow,
            crow(b"esc/a\tb\nc\rd\x01e", 1, 1),
        ),
        (b"\t0\t1\n", D::ConnectRow, crow(b"", 0, 1)), // C10: empty ident
        // P6 [live]
        (
            b"pA\t2\t1795892932\t1795892932\n",
            D::PenaltyRow,
            prow(b"pA", 2, 1795892932, 1795892932),
        ),
        (
            b"pD\t0\t1795892942\t1795892943\n",
            D::PenaltyRow,
            prow(b"pD", 0, 1795892942, 1795892943),
        ),
        (b"\n", D::PenaltyRow, Reply::DumpEnd),
    ]
}

#[test]
fn reply_known_answers() {
    for (wire, decoder, reply) in reply_table() {
        let shown = bstr::BStr::new(wire);
        let mut out = Vec::new();
        encode_reply(&reply, &mut out);
        assert_eq!(bstr::BStr::new(&out), shown);
        assert_eq!(
            decode_as(decoder, wire),
            Ok((wire.len(), reply)),
            "{shown:?}"
        );
    }
}

#[test]
fn reply_prefixes_are_incomplete() {
    for (wire, decoder, _) in reply_table() {
        for end in 0..wire.len() {
            assert_eq!(
                decode_as(decoder, &wire[..end]),
                Err(DecodeError::Incomplete)
            );
        }
    }
}

#[test]
fn whole_dumps() {
    // C1 as anvil writes it, one write per row, read as one buffer.
    let dump = b"test/1.2.3.4/u\t4242\t2\nother/u2\t4343\t1\ntest/1.2.3.4/u\t4343\t1\n\n";
    let mut rest = &dump[..];
    let mut rows = Vec::new();
    loop {
        let (n, row) = decode_connect_row(rest).unwrap();
        rest = &rest[n..];
        match row {
            Some(r) => rows.push((r.ident.to_string(), r.pid.get(), r.refcount)),
            None => break,
        }
    }
    assert!(rest.is_empty());
    assert_eq!(
        rows,
        [
            ("test/1.2.3.4/u".into(), 4242, 2),
            ("other/u2".into(), 4343, 1),
            ("test/1.2.3.4/u".into(), 4343, 1)
        ]
    );
}

#[test]
fn invalid_replies() {
    let bad_counts: &[&[u8]] = &[b"x\n", b"-1\n", b"1 \n", b"4294967296\n", b"\n", b"1\t2\n"];
    for wire in bad_counts {
        assert_eq!(
            decode_count_reply(wire),
            Err(DecodeError::Invalid(ReplyError(BString::from(
                &wire[..wire.len() - 1]
            ))))
        );
    }
    for wire in [
        &b"1\n"[..],
        b"1  2\n",
        b"1\t2\n",
        b" 1 2\n",
        b"1 2 \n",
        b"1 x\n",
    ] {
        assert!(
            matches!(decode_penalty_reply(wire), Err(DecodeError::Invalid(_))),
            "{:?}",
            bstr::BStr::new(wire)
        );
    }
    // doveadm: `Invalid input: <raw row>`
    for wire in [
        &b"x\t1\n"[..],
        b"x\tabc\t1\n",
        b"x\t1\t-1\n",
        b"x\t2147483648\t1\n",
        b"x\n",
    ] {
        assert!(
            matches!(decode_connect_row(wire), Err(DecodeError::Invalid(_))),
            "{:?}",
            bstr::BStr::new(wire)
        );
    }
    for wire in [&b"x\t1\t2\n"[..], b"x\t1\t2\tz\n", b"x\n"] {
        assert!(
            matches!(decode_penalty_row(wire), Err(DecodeError::Invalid(_))),
            "{:?}",
            bstr::BStr::new(wire)
        );
    }
    assert_eq!(
        decode_count_reply(b"x\n").unwrap_err(),
        DecodeError::Invalid(ReplyError(BString::from("x")))
    );
    assert_eq!(
        ReplyError(BString::from("x")).to_string(),
        "invalid anvil reply: x"
    );
}

#[test]
fn reply_lenience_like_stock_clients() {
    // One CR is stripped, a NUL ends the line, extra row fields are ignored, and a dumped
    // pid is unescaped like doveadm does (note 5 in §8.3).
    assert_eq!(decode_count_reply(b"3\r\n"), Ok((3, 3)));
    assert_eq!(decode_count_reply(b"3\0junk\n"), Ok((7, 3)));
    assert_eq!(
        decode_connect_row(b"a\t9\x0105\t1\textra\n"),
        Ok((
            15,
            Some(ConnectRow {
                ident: "a".into(),
                pid: pid(9),
                refcount: 1
            })
        ))
    );
    // Rows may be longer than the request limit.
    let mut long = vec![b'\t'; 1000];
    long.extend_from_slice(b"\t1\t1\n");
    let (_, row) = decode_connect_row(&escape_long(&long)).unwrap();
    assert_eq!(row.unwrap().ident.len(), 1000);
}

fn escape_long(row_with_tabs: &[u8]) -> Vec<u8> {
    // The first 1000 bytes are the ident (TABs), escaped; the tail is the numeric fields.
    let mut out = Vec::new();
    escape_into(&row_with_tabs[..1000], &mut out);
    out.extend_from_slice(&row_with_tabs[1000..]);
    out
}

// ---- differential check against a field-splitting model ----

/// The parser written the obvious way, with `split_fields`, as the reference describes it.
fn model(line: &[u8]) -> Result<Option<Request<'static>>, RequestError> {
    use Command as C;
    use RequestError as E;
    let fields: Vec<Vec<u8>> = split_fields(line)
        .into_iter()
        .map(Cow::into_owned)
        .collect();
    let Some(name) = fields.first() else {
        return Ok(None);
    };
    let args = &fields[1..];
    let arg = |i: usize| args.get(i).cloned();
    let own = |v: Vec<u8>| Cow::Owned(v);
    let u32_of = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|s| s.parse::<u32>().ok())
    };
    let pid_of = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .map(|s| s.trim_start_matches('0'))
            .and_then(|s| {
                if s.is_empty() {
                    Some(0)
                } else if s.len() > 10 {
                    None
                } else {
                    s.parse::<u64>().ok()
                }
            })
            .filter(|&v| v <= i32::MAX as u64)
            .map(|v| pid(v as u32))
    };
    Ok(Some(match name.as_slice() {
        b"CONNECT" | b"DISCONNECT" => {
            let c = if name == b"CONNECT" {
                C::Connect
            } else {
                C::Disconnect
            };
            if args.len() < 2 {
                return Err(E::NotEnoughParameters(c));
            }
            let p = pid_of(&args[0]).ok_or(E::InvalidPid(c))?;
            if c == C::Connect {
                Request::Connect {
                    pid: p,
                    ident: own(args[1].clone()),
                }
            } else {
                Request::Disconnect {
                    pid: p,
                    ident: own(args[1].clone()),
                }
            }
        }
        b"KILL" => Request::Kill {
            pid: pid_of(&arg(0).ok_or(E::NotEnoughParameters(C::Kill))?),
        },
        b"LOOKUP" => Request::Lookup {
            ident: own(arg(0).ok_or(E::NotEnoughParameters(C::Lookup))?),
        },
        b"PENALTY-GET" => Request::PenaltyGet {
            ident: own(arg(0).ok_or(E::NotEnoughParameters(C::PenaltyGet))?),
        },
        b"PENALTY-INC" => {
            if args.len() < 3 {
                return Err(E::NotEnoughParameters(C::PenaltyInc));
            }
            let bad = E::InvalidParameters(C::PenaltyInc);
            let (Some(checksum), Some(value)) = (u32_of(&args[1]), u32_of(&args[2])) else {
                return Err(bad);
            };
            if value > 65535 || (value == 0 && checksum != 0) {
                return Err(bad);
            }
            Request::PenaltyInc {
                ident: own(args[0].clone()),
                checksum,
                value: value as u16,
            }
        }
        b"PENALTY-SET-EXPIRE-SECS" => Request::PenaltySetExpireSecs {
            secs: arg(0)
                .and_then(|a| u32_of(&a))
                .ok_or(E::InvalidParameters(C::PenaltySetExpireSecs))?,
        },
        b"CONNECT-DUMP" => Request::ConnectDump,
        b"PENALTY-DUMP" => Request::PenaltyDump,
        other => return Err(E::UnknownCommand(BString::from(other))),
    }))
}

/// Lines that look like requests: a known (sometimes escaped) name and fields drawn from
/// interesting bytes.
fn request_like_line() -> impl Strategy<Value = Vec<u8>> {
    let names = prop_oneof![
        Just(b"CONNECT".to_vec()),
        Just(b"DISCONNECT".to_vec()),
        Just(b"KILL".to_vec()),
        Just(b"LOOKUP".to_vec()),
        Just(b"PENALTY-GET".to_vec()),
        Just(b"PENALTY-INC".to_vec()),
        Just(b"PENALTY-SET-EXPIRE-SECS".to_vec()),
        Just(b"CONNECT-DUMP".to_vec()),
        Just(b"PENALTY-DUMP".to_vec()),
        Just(b"CON\x01NECT".to_vec()),
        Just(b"LOOKUP\x010".to_vec()),
        Just(b"".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..6),
    ];
    let byte = prop_oneof![
        4 => b'0'..=b'9',
        1 => Just(1u8),
        1 => Just(b'\t'),
        1 => Just(b'\r'),
        1 => Just(b'a'),
        1 => Just(b'-'),
        1 => any::<u8>(),
    ];
    let field = proptest::collection::vec(byte, 0..12);
    (names, proptest::collection::vec(field, 0..5)).prop_map(|(name, fields)| {
        let mut line = name;
        for f in fields {
            line.push(b'\t');
            line.extend(f);
        }
        // Framed content never holds NUL.
        if let Some(nul) = line.iter().position(|&b| b == 0) {
            line.truncate(nul);
        }
        line
    })
}

// ---- round trips ----

fn ident() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(1u8..=255, 0..40),
        proptest::collection::vec(
            prop_oneof![
                Just(1u8),
                Just(b'\t'),
                Just(b'\n'),
                Just(b'\r'),
                Just(b'0'),
                Just(b'/')
            ],
            0..10
        ),
    ]
}

fn arb_pid() -> impl Strategy<Value = Pid> {
    prop_oneof![0..=Pid::MAX, 0u32..100000].prop_map(pid)
}

fn arb_request() -> impl Strategy<Value = Request<'static>> {
    let c = |v: Vec<u8>| Cow::Owned(v);
    prop_oneof![
        (arb_pid(), ident()).prop_map(move |(pid, i)| Request::Connect { pid, ident: c(i) }),
        (arb_pid(), ident()).prop_map(move |(pid, i)| Request::Disconnect { pid, ident: c(i) }),
        proptest::option::of(arb_pid()).prop_map(|pid| Request::Kill { pid }),
        ident().prop_map(move |i| Request::Lookup { ident: c(i) }),
        ident().prop_map(move |i| Request::PenaltyGet { ident: c(i) }),
        (ident(), any::<u32>(), 1u16..).prop_map(move |(i, checksum, value)| Request::PenaltyInc {
            ident: c(i),
            checksum,
            value
        }),
        (ident(), 0u16..).prop_map(move |(i, value)| Request::PenaltyInc {
            ident: c(i),
            checksum: 0,
            value
        }),
        any::<u32>().prop_map(|secs| Request::PenaltySetExpireSecs { secs }),
        Just(Request::ConnectDump),
        Just(Request::PenaltyDump),
    ]
}

fn arb_reply() -> impl Strategy<Value = (Decoder, Reply)> {
    let s = |v: Vec<u8>| BString::from(v);
    prop_oneof![
        any::<u32>().prop_map(|n| (Decoder::Count, Reply::Count(n))),
        (any::<u32>(), any::<u32>()).prop_map(|(penalty, last_penalty)| (
            Decoder::Penalty,
            Reply::Penalty {
                penalty,
                last_penalty
            }
        )),
        (ident(), arb_pid(), any::<u32>()).prop_map(move |(i, pid, refcount)| (
            Decoder::ConnectRow,
            Reply::ConnectRow(ConnectRow {
                ident: s(i),
                pid,
                refcount
            })
        )),
        (ident(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            move |(i, penalty, last_penalty, last_update)| {
                (
                    Decoder::PenaltyRow,
                    Reply::PenaltyRow(PenaltyRow {
                        ident: s(i),
                        penalty,
                        last_penalty,
                        last_update,
                    }),
                )
            }
        ),
        Just((Decoder::ConnectRow, Reply::DumpEnd)),
        Just((Decoder::PenaltyRow, Reply::DumpEnd)),
    ]
}

proptest! {
    #[test]
    fn parser_matches_model(line in request_like_line()) {
        prop_assert_eq!(parse_request(&line), model(&line));
    }

    #[test]
    fn parser_matches_model_on_any_bytes(line in proptest::collection::vec(1u8..=255, 0..40)) {
        prop_assert_eq!(parse_request(&line), model(&line));
    }

    #[test]
    fn request_round_trip(req in arb_request()) {
        let mut out = Vec::new();
        encode_request(&req, &mut out);
        prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        // Every encoded line ending within the limit decodes back to the request.
        if out.len() <= crate::wire::line::MAX_LINE {
            prop_assert_eq!(decode_request(&out), Ok((out.len(), Some(req.clone()))));
        }
        // Encoding is canonical: decode -> encode gives the same bytes.
        if let Ok((_, Some(again))) = decode_request(&out) {
            let mut out2 = Vec::new();
            encode_request(&again, &mut out2);
            prop_assert_eq!(out2, out);
        }
    }

    #[test]
    fn reply_round_trip((decoder, reply) in arb_reply()) {
        let mut out = Vec::new();
        encode_reply(&reply, &mut out);
        prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        prop_assert_eq!(decode_as(decoder, &out), Ok((out.len(), reply)));
        for end in 0..out.len() {
            prop_assert_eq!(decode_as(decoder, &out[..end]), Err(DecodeError::Incomplete));
        }
    }

    /// The one-pass hot path of `decode_request` agrees with framing then parsing.
    #[test]
    fn decode_request_matches_frame_then_parse(buf in proptest::collection::vec(
        prop_oneof![8 => b'0'..=b'9', 4 => Just(b'\t'), 2 => Just(b'\n'), 1 => Just(b'\r'), 1 => Just(0u8), 1 => Just(1u8),
            1 => Just(b'T'), 1 => Just(b'0')],
        0..60,
    ), name in prop_oneof![Just(&b"CONNECT\t"[..]), Just(&b"PENALTY-INC\t"[..]), Just(&b"KILL\t"[..]), Just(&b""[..])]) {
        let buf = [name, &buf].concat();
        let want = match next_line(&buf) {
            Ok(Some((n, line))) => match parse_request(line) {
                Ok(r) => Ok((n, r)),
                Err(e) => Err(DecodeError::Invalid(Ok(e))),
            },
            Ok(None) => Err(DecodeError::Incomplete),
            Err(e) => Err(DecodeError::Invalid(Err(e))),
        };
        prop_assert_eq!(decode_request(&buf), want);
    }

    #[test]
    fn decode_request_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..1100)) {
        match decode_request(&buf) {
            Ok((n, _)) => prop_assert!(n <= buf.len() && n <= crate::wire::line::MAX_LINE && buf[n - 1] == b'\n'),
            Err(DecodeError::Incomplete) => prop_assert!(buf.len() < crate::wire::line::MAX_LINE && !buf.contains(&b'\n')),
            Err(DecodeError::Invalid(_)) => {}
        }
    }
}
