use proptest::prelude::*;

use super::*;

fn pid(n: u32) -> Pid {
    Pid::new(n).unwrap()
}

#[test]
fn version_lines() {
    assert!(is_ext_version(b"VERSION\tforeman-anvil\t1\t0"));
    assert!(is_ext_version(b"VERSION\tforeman-anvil\t01\t7"));
    assert_eq!(VERSION_LINE, b"VERSION\tforeman-anvil\t1\t0\n");
    for bad in [
        &b"VERSION\tanvil\t1\t0"[..],
        b"VERSION\tforeman-anvil\t2\t0",
        b"VERSION\tforeman-anvil\t1",
        b"VERSION\tforeman-anvil\t1\t0\tx",
        b"VERSION\tforeman-anvil\t1\t4294967296",
        b"version\tforeman-anvil\t1\t0",
    ] {
        assert!(!is_ext_version(bad), "{:?}", bstr::BStr::new(bad));
    }
    // Stock anvil's check rejects ours, so a stock server closes the connection.
    assert!(!crate::wire::anvil::is_compatible_version(
        &VERSION_LINE[..VERSION_LINE.len() - 1]
    ));
}

#[test]
fn known_requests() {
    let cases: Vec<(&[u8], ExtRequest)> = vec![
        (
            b"PROC-BIRTH\timap\t4242\t0",
            ExtRequest::ProcBirth {
                service: "imap".into(),
                pid: pid(4242),
                uid: 0,
            },
        ),
        (
            b"PROC-IDLE\t4242\t1795892735123",
            ExtRequest::ProcIdle {
                pid: pid(4242),
                since: 1_795_892_735_123,
            },
        ),
        (
            b"PROC-BUSY\t4242\t5",
            ExtRequest::ProcBusy {
                pid: pid(4242),
                since: 5,
            },
        ),
        (
            b"PROC-DEATH\t4242",
            ExtRequest::ProcDeath { pid: pid(4242) },
        ),
        (
            b"CLAIM\timap\tal\x01tice\t1000",
            ExtRequest::Claim {
                service: "imap".into(),
                user: "al\tice".into(),
                uid: 1000,
            },
        ),
        (
            b"RELEASE\t4242\t17\tserved",
            ExtRequest::Release {
                pid: pid(4242),
                token: 17,
                outcome: ReleaseOutcome::Served,
            },
        ),
        (
            b"EVICT\timap",
            ExtRequest::Evict {
                service: "imap".into(),
                pid: None,
            },
        ),
        (
            b"EVICT\timap\t",
            ExtRequest::Evict {
                service: "imap".into(),
                pid: None,
            },
        ),
        (
            b"EVICT\timap\t9",
            ExtRequest::Evict {
                service: "imap".into(),
                pid: Some(pid(9)),
            },
        ),
        (
            b"PROC-LIST\timap\talice\textra",
            ExtRequest::ProcList {
                service: "imap".into(),
                user: "alice".into(),
            },
        ),
        (b"PROC-DUMP", ExtRequest::ProcDump),
    ];
    for (line, want) in cases {
        assert_eq!(parse_ext_request(line), Some(Ok(want.clone())));
        let mut framed = line.to_vec();
        framed.push(b'\n');
        assert_eq!(
            decode_ext_request(&framed),
            Ok((framed.len(), Some(want.clone())))
        );
        // Every proper prefix is Incomplete.
        for n in 0..framed.len() {
            assert_eq!(
                decode_ext_request(&framed[..n]),
                Err(DecodeError::Incomplete)
            );
        }
    }
}

#[test]
fn not_extension_lines_are_left_to_v1() {
    assert_eq!(parse_ext_request(b""), None);
    assert_eq!(parse_ext_request(b"LOOKUP\tx"), None);
    assert_eq!(parse_ext_request(b"claim\timap\ta\t1"), None);
    assert_eq!(decode_ext_request(b"CONNECT\t1\tx\n"), Ok((12, None)));
}

#[test]
fn errors() {
    use ExtCommand as C;
    let cases: &[(&[u8], ExtError)] = &[
        (
            b"PROC-BIRTH\timap\t1",
            ExtError::NotEnoughParameters(C::ProcBirth),
        ),
        (
            b"PROC-BIRTH\timap\t-1\t0",
            ExtError::InvalidPid(C::ProcBirth),
        ),
        (
            b"PROC-BIRTH\timap\t1\tx",
            ExtError::InvalidParameters(C::ProcBirth),
        ),
        (
            b"PROC-BIRTH\timap\t1\t4294967296",
            ExtError::InvalidParameters(C::ProcBirth),
        ),
        (b"PROC-IDLE\t1", ExtError::NotEnoughParameters(C::ProcIdle)),
        (b"PROC-BUSY\t1\t", ExtError::InvalidParameters(C::ProcBusy)),
        (b"PROC-DEATH", ExtError::NotEnoughParameters(C::ProcDeath)),
        (
            b"PROC-DEATH\t2147483648",
            ExtError::InvalidPid(C::ProcDeath),
        ),
        (
            b"CLAIM\timap\talice",
            ExtError::NotEnoughParameters(C::Claim),
        ),
        (
            b"CLAIM\timap\t\t1000",
            ExtError::InvalidParameters(C::Claim),
        ),
        (
            b"CLAIM\timap\talice\t0",
            ExtError::InvalidParameters(C::Claim),
        ),
        (
            b"CLAIM\timap\t\x010\t1000",
            ExtError::InvalidParameters(C::Claim),
        ),
        (
            b"RELEASE\t1\t2\tok",
            ExtError::InvalidParameters(C::Release),
        ),
        (
            b"RELEASE\t1\t\tserved",
            ExtError::InvalidParameters(C::Release),
        ),
        (b"EVICT", ExtError::NotEnoughParameters(C::Evict)),
        (b"EVICT\timap\tx", ExtError::InvalidPid(C::Evict)),
        (
            b"PROC-LIST\timap",
            ExtError::NotEnoughParameters(C::ProcList),
        ),
    ];
    for (line, want) in cases {
        assert_eq!(
            parse_ext_request(line),
            Some(Err(want.clone())),
            "{:?}",
            bstr::BStr::new(line)
        );
    }
    assert_eq!(
        ExtError::NotEnoughParameters(C::Claim).to_string(),
        "CLAIM: Not enough parameters"
    );
    let mut long = b"CLAIM\t".to_vec();
    long.resize(1100, b'a');
    assert_eq!(
        decode_ext_request(&long),
        Err(DecodeError::Invalid(Err(LineError::TooLong)))
    );
}

#[test]
fn known_replies() {
    let row = ProcRow {
        pid: pid(4242),
        service: "imap".into(),
        user: "a\tb".into(),
        uid: 1000,
        state: ProcState::Idle,
        since: 1_795_892_735_000,
        claim: ClaimState::None,
    };
    let cases: Vec<(ExtReply, &[u8])> = vec![
        (
            ExtReply::Claimed {
                pid: pid(4242),
                token: 7,
                kind: ClaimedKind::Reuse,
            },
            b"4242\t7\treuse\n",
        ),
        (ExtReply::None, b"none\n"),
        (ExtReply::Evicted(pid(9)), b"9\n"),
        (
            ExtReply::Row(row),
            b"4242\timap\ta\x01tb\t1000\tidle\t1795892735000\t-\n",
        ),
        (ExtReply::End, b"\n"),
    ];
    for (reply, bytes) in cases {
        let mut out = Vec::new();
        encode_ext_reply(&reply, &mut out);
        assert_eq!(out, bytes);
        let decoded = match reply {
            ExtReply::Claimed { .. } | ExtReply::None => decode_claim_reply(bytes),
            ExtReply::Evicted(_) => decode_evict_reply(bytes),
            _ => decode_proc_row(bytes),
        };
        assert_eq!(decoded, Ok((bytes.len(), reply)));
        for n in 0..bytes.len() {
            assert_eq!(decode_proc_row(&bytes[..n]), Err(DecodeError::Incomplete));
        }
    }
    assert!(matches!(
        decode_claim_reply(b"4242\t7\tmaybe\n"),
        Err(DecodeError::Invalid(_))
    ));
    assert!(matches!(
        decode_evict_reply(b"-1\n"),
        Err(DecodeError::Invalid(_))
    ));
    assert!(matches!(
        decode_proc_row(b"1\timap\tu\t1\tidle\t5\n"),
        Err(DecodeError::Invalid(_))
    ));
}

fn text() -> impl Strategy<Value = BString> {
    proptest::collection::vec(1u8..=255, 0..12).prop_map(BString::from)
}

fn nonempty() -> impl Strategy<Value = BString> {
    proptest::collection::vec(1u8..=255, 1..12).prop_map(BString::from)
}

fn a_pid() -> impl Strategy<Value = Pid> {
    (0..=Pid::MAX).prop_map(pid)
}

fn request() -> impl Strategy<Value = ExtRequest> {
    let outcome = prop_oneof![
        Just(ReleaseOutcome::Served),
        Just(ReleaseOutcome::Unused),
        Just(ReleaseOutcome::Busy),
        Just(ReleaseOutcome::Failed)
    ];
    prop_oneof![
        (text(), a_pid(), any::<u32>()).prop_map(|(service, pid, uid)| ExtRequest::ProcBirth {
            service,
            pid,
            uid
        }),
        (a_pid(), any::<u64>()).prop_map(|(pid, since)| ExtRequest::ProcIdle { pid, since }),
        (a_pid(), any::<u64>()).prop_map(|(pid, since)| ExtRequest::ProcBusy { pid, since }),
        a_pid().prop_map(|pid| ExtRequest::ProcDeath { pid }),
        (text(), nonempty(), 1u32..).prop_map(|(service, user, uid)| ExtRequest::Claim {
            service,
            user,
            uid
        }),
        (a_pid(), any::<u64>(), outcome).prop_map(|(pid, token, outcome)| ExtRequest::Release {
            pid,
            token,
            outcome
        }),
        (text(), proptest::option::of(a_pid()))
            .prop_map(|(service, pid)| ExtRequest::Evict { service, pid }),
        (text(), text()).prop_map(|(service, user)| ExtRequest::ProcList { service, user }),
        Just(ExtRequest::ProcDump),
    ]
}

fn row() -> impl Strategy<Value = ProcRow> {
    (
        a_pid(),
        text(),
        text(),
        any::<u32>(),
        prop_oneof![
            Just(ProcState::Fresh),
            Just(ProcState::Idle),
            Just(ProcState::Busy)
        ],
        any::<u64>(),
        prop_oneof![
            Just(ClaimState::None),
            Just(ClaimState::Claimed),
            Just(ClaimState::Evicting)
        ],
    )
        .prop_map(|(pid, service, user, uid, state, since, claim)| ProcRow {
            pid,
            service,
            user,
            uid,
            state,
            since,
            claim,
        })
}

proptest! {
    #[test]
    fn requests_round_trip(req in request()) {
        let mut bytes = Vec::new();
        encode_ext_request(&req, &mut bytes);
        prop_assert_eq!(decode_ext_request(&bytes), Ok((bytes.len(), Some(req))));
    }

    #[test]
    fn rows_round_trip(row in row()) {
        let mut bytes = Vec::new();
        let reply = ExtReply::Row(row);
        encode_ext_reply(&reply, &mut bytes);
        prop_assert_eq!(decode_proc_row(&bytes), Ok((bytes.len(), reply)));
    }

    #[test]
    fn claim_replies_round_trip(pid in a_pid(), token in any::<u64>(), reuse in any::<bool>()) {
        let kind = if reuse { ClaimedKind::Reuse } else { ClaimedKind::Fresh };
        let reply = ExtReply::Claimed { pid, token, kind };
        let mut bytes = Vec::new();
        encode_ext_reply(&reply, &mut bytes);
        prop_assert_eq!(decode_claim_reply(&bytes), Ok((bytes.len(), reply)));
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_ext_request(&bytes);
        let _ = decode_claim_reply(&bytes);
        let _ = decode_evict_reply(&bytes);
        let _ = decode_proc_row(&bytes);
    }
}
