//! Unit tests of `foreman who` with fixed dumps.
//!
//! `fixtures/who/stock-2.3.19.1.json` holds CONNECT-DUMP replies of a stock 2.3.19.1 anvil
//! (random tables plus a fixed one with masks) and what stock `doveadm who` printed for them.
//! In `-1` mode the output is a function of the dump, so it must match byte for byte. In the
//! default mode stock prints groups in hash order; the recorder reordered the dump's rows so
//! that first appearance follows stock's output order, which makes the comparison exact too.

use super::*;

fn pid(n: u32) -> Pid {
    Pid::new(n).unwrap()
}

fn session(ident: &str, p: u32, refcount: u32) -> Session {
    let (service, ip, username) = split_ident(ident.as_bytes()).unwrap();
    Session {
        service: service.into(),
        ip,
        username: username.into(),
        pid: pid(p),
        refcount,
    }
}

fn dump(sessions: Vec<Session>) -> Dump {
    Dump {
        sessions,
        invalid: Vec::new(),
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

#[test]
fn stock_recorded_outputs_match_byte_for_byte() {
    let cases: serde_json::Value =
        serde_json::from_str(include_str!("../../fixtures/who/stock-2.3.19.1.json")).unwrap();
    let cases = cases.as_array().unwrap();
    assert!(cases.len() > 300);
    for (i, case) in cases.iter().enumerate() {
        let one = case["mode"] == "-1";
        let args: Vec<String> = case["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        let stdout = case["stdout"].as_str().unwrap();
        let stderr = case["stderr"].as_str().unwrap();
        let rc = case["rc"].as_u64().unwrap();
        let context = format!("case {i}: who {} {args:?}", if one { "-1" } else { "" });
        let filter = match Filter::parse(&args) {
            Ok(filter) => filter,
            Err(err) => {
                assert_eq!(u64::from(err.exit_code()), rc, "{context}");
                assert_eq!(format!("Error: {err}\n"), stderr, "{context}");
                assert_eq!(stdout, "", "{context}");
                continue;
            }
        };
        assert_eq!(rc, 0, "{context}");
        let parsed = parse_dump(case["dump"].as_str().unwrap().as_bytes()).expect("complete dump");
        let errors: Vec<u8> = parsed
            .invalid
            .iter()
            .flat_map(|raw| invalid_row_message(raw))
            .collect();
        assert_eq!(text(errors), stderr, "{context}");
        assert_eq!(
            text(render_table(&parsed, &filter, one, 80)),
            stdout,
            "{context}"
        );
    }
}

#[test]
fn ident_split_rules() {
    let split = |s: &str| {
        split_ident(s.as_bytes()).map(|(svc, ip, user)| {
            (
                String::from_utf8_lossy(svc).into_owned(),
                ip.map(|ip| net::format_ip(&ip)),
                String::from_utf8_lossy(user).into_owned(),
            )
        })
    };
    assert_eq!(
        split("imap/127.0.0.1/alice"),
        Some(("imap".into(), Some("127.0.0.1".into()), "alice".into()))
    );
    assert_eq!(
        split("lmtp/alice"),
        Some(("lmtp".into(), None, "alice".into()))
    );
    assert_eq!(split("lmtp/e/f"), Some(("lmtp".into(), None, "f".into())));
    assert_eq!(split("a/b/c/d"), Some(("a".into(), None, "c/d".into())));
    assert_eq!(
        split("imap/1.2.3.4/"),
        Some(("imap".into(), Some("1.2.3.4".into()), "".into()))
    );
    assert_eq!(split("imap//j"), Some(("imap".into(), None, "j".into())));
    assert_eq!(split("noslash"), None);
}

#[test]
fn invalid_rows_are_reported_raw_and_skipped() {
    let parsed =
        parse_dump(b"noslash\t9\t1\nimap/1.2.3.4/a\t7\t1\nimap/x/b\tabc\t1\nimap/x/c\t1\n\n")
            .unwrap();
    assert_eq!(parsed.sessions.len(), 1);
    assert_eq!(parsed.sessions[0].username, "a");
    assert_eq!(
        parsed.invalid,
        vec![
            BString::from("noslash\t9\t1"),
            "imap/x/b\tabc\t1".into(),
            "imap/x/c\t1".into()
        ]
    );
    assert_eq!(
        invalid_row_message(b"noslash\t9\t1"),
        b"Error: Invalid input: noslash\t9\t1\n"
    );
}

#[test]
fn dump_needs_its_terminator() {
    assert_eq!(parse_dump(b"imap/1.2.3.4/a\t7\t1\n"), None);
    assert_eq!(parse_dump(b"\n"), Some(Dump::default()));
}

#[test]
fn escaped_idents_are_unescaped() {
    let parsed = parse_dump(b"imap/1.1.1.1/tab\x01tx\t7\t1\n\n").unwrap();
    assert_eq!(parsed.sessions[0].username, "tab\tx");
}

#[test]
fn grouping_sums_refcounts_and_keeps_first_appearance_order() {
    let d = dump(vec![
        session("imap/127.0.0.1/alice", 30, 1),
        session("pop3/127.0.0.1/bob", 40, 1),
        session("imap/10.0.0.1/alice", 20, 2),
        session("imap/127.0.0.1/alice", 10, 1),
        session("imap/127.0.0.1/alice", 20, 1),
        session("lmtp/alice", 50, 1),
    ]);
    let groups = aggregate(&d.sessions);
    assert_eq!(groups.len(), 3);
    assert_eq!(groups[0].username, "alice");
    assert_eq!(groups[0].service, "imap");
    assert_eq!(groups[0].count, 5);
    assert_eq!(groups[0].pids, vec![pid(30), pid(20), pid(10)]);
    let ips: Vec<String> = groups[0].ips.iter().map(net::format_ip).collect();
    assert_eq!(ips, ["127.0.0.1", "10.0.0.1"]);
    assert_eq!(groups[1].service, "pop3");
    assert_eq!(
        (groups[2].service.as_slice(), groups[2].ips.len()),
        (&b"lmtp"[..], 0)
    );
    assert_eq!(
        text(render_table(&d, &Filter::default(), false, 80)),
        "username # proto (pids)     (ips)                               \n\
         alice    5 imap  (30 20 10) (127.0.0.1 10.0.0.1)                \n\
         bob      1 pop3  (40)       (127.0.0.1)                         \n\
         alice    1 lmtp  (50)       ()                                  \n"
    );
}

#[test]
fn one_per_session_repeats_refcount_times() {
    let d = dump(vec![
        session("imap/127.0.0.1/alice", 7, 3),
        session("lmtp/bob", 8, 1),
    ]);
    assert_eq!(
        text(render_table(&d, &Filter::default(), true, 80)),
        "username                           proto pid ip       \n\
         alice                              imap  7   127.0.0.1\n\
         alice                              imap  7   127.0.0.1\n\
         alice                              imap  7   127.0.0.1\n\
         bob                                lmtp  8            \n"
    );
}

#[test]
fn empty_username_does_not_crash_the_grouping() {
    let d = dump(vec![
        session("imap/1.2.3.4/", 7, 1),
        session("imap/1.2.3.5/", 8, 1),
    ]);
    let groups = aggregate(&d.sessions);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].username, "");
    assert_eq!(groups[0].count, 2);
    let out = text(render_table(&d, &Filter::default(), false, 80));
    assert!(out.starts_with("username # proto"), "{out}");
    assert_eq!(out.lines().count(), 2);
}

#[test]
fn grouping_is_linear_on_many_sessions() {
    // 200k sessions of 100k users: a quadratic grouping would not finish in test time.
    let sessions: Vec<Session> = (0..200_000u32)
        .map(|i| Session {
            service: "imap".into(),
            ip: Some(IpAddr::from([10, 0, (i >> 8) as u8, i as u8])),
            username: format!("user{}", i % 100_000).into(),
            pid: pid(i),
            refcount: 1,
        })
        .collect();
    let groups = aggregate(&sessions);
    assert_eq!(groups.len(), 100_000);
    assert!(groups.iter().all(|g| g.count == 2 && g.pids.len() == 2));
}

#[test]
fn wildcard_masks() {
    let m = |t: &str, mask: &str| wildcard_match_icase(t.as_bytes(), mask.as_bytes());
    assert!(m("alice", "alice"));
    assert!(m("alice", "ALICE"));
    assert!(m("ALICE2", "ali*"));
    assert!(m("alice", "a?ice"));
    assert!(m("alice", "A*E"));
    assert!(!m("ALICE2", "A*E"));
    assert!(m("a?b", "a?b"));
    assert!(m("x", "?"));
    assert!(!m("10", "?"));
    assert!(m("", "*"));
    assert!(!m("", "?"));
    assert!(m("abcabcabd", "*abd"));
    assert!(m("aaaaaaaaaaaaaaaaaaaaaaaaaaaaab", "*a*a*a*a*a*b"));
    assert!(!m("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "*a*a*a*a*a*b"));
    assert!(!m("alice", "alic"));
    assert!(!m("alice", "lice"));
}

#[test]
fn mask_classification() {
    let f = Filter::parse(&["alice", "127.0.0.0/8"]).unwrap();
    assert_eq!(
        f.user_mask.as_ref().map(|m| m.as_slice()),
        Some(&b"alice"[..])
    );
    assert_eq!(f.network.unwrap().bits, 8);
    // Digits only: a username, although inet_aton would take it.
    let f = Filter::parse(&["10"]).unwrap();
    assert_eq!(
        (f.user_mask.as_ref().map(|m| m.as_slice()), f.network),
        (Some(&b"10"[..]), None)
    );
    // Not a valid network: a username mask.
    let f = Filter::parse(&["127.0.0.1/33"]).unwrap();
    assert_eq!(
        f.user_mask.as_ref().map(|m| m.as_slice()),
        Some(&b"127.0.0.1/33"[..])
    );
    let err = Filter::parse(&["al*", "bo*"]).unwrap_err();
    assert_eq!(
        (err.to_string().as_str(), err.exit_code()),
        ("Multiple username masks not supported", 64)
    );
    let err = Filter::parse(&["1.2.3.4", "10.0.0.0/8"]).unwrap_err();
    assert_eq!(
        (err.to_string().as_str(), err.exit_code()),
        ("Multiple network masks not supported", 64)
    );
}

#[test]
fn group_network_filter_takes_the_whole_group() {
    let d = dump(vec![
        session("imap/127.0.0.1/alice", 1, 1),
        session("imap/10.1.2.3/alice", 2, 1),
        session("lmtp/alice", 3, 1),
    ]);
    let groups = aggregate(&d.sessions);
    let f = Filter::parse(&["10.0.0.0/8"]).unwrap();
    assert!(f.matches_group(&groups[0]));
    assert!(!f.matches_group(&groups[1]));
    let all = Filter::parse(&["0/0"]).unwrap();
    assert!(
        all.matches_group(&groups[1]),
        "/0 also takes sessions without an IP"
    );
    let f = Filter::parse(&["10.0.0.0/8"]).unwrap();
    let one: Vec<u32> = d
        .sessions
        .iter()
        .filter(|s| f.matches_session(s))
        .map(|s| s.pid.get())
        .collect();
    assert_eq!(one, [2]);
}

#[test]
fn json_is_a_valid_array() {
    let d = dump(vec![
        session("imap/127.0.0.1/alice", 30, 2),
        session("imap/10.0.0.1/alice", 20, 1),
        session("lmtp/b\u{e9}b", 40, 1),
    ]);
    let v: serde_json::Value =
        serde_json::from_slice(&render_json(&d, &Filter::default(), false)).unwrap();
    assert_eq!(
        v,
        serde_json::json!([
            {"username": "alice", "service": "imap", "count": 3, "pids": [30, 20], "ips": ["127.0.0.1", "10.0.0.1"]},
            {"username": "b\u{e9}b", "service": "lmtp", "count": 1, "pids": [40], "ips": []},
        ])
    );
    let v: serde_json::Value =
        serde_json::from_slice(&render_json(&d, &Filter::parse(&["alice"]).unwrap(), true))
            .unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(
        v[0],
        serde_json::json!({"username": "alice", "service": "imap", "pid": 30, "ip": "127.0.0.1"})
    );
    let mut bad = dump(vec![session("lmtp/x", 1, 1)]);
    bad.sessions[0].username = BString::from(&b"a\xffb"[..]);
    let v: serde_json::Value =
        serde_json::from_slice(&render_json(&bad, &Filter::default(), true)).unwrap();
    assert_eq!(v[0]["ip"], serde_json::Value::Null);
    assert_eq!(v[0]["username"], "a\u{fffd}b");
}

#[test]
fn huge_refcounts_are_streamed() {
    struct LineCounter(usize);
    impl std::io::Write for LineCounter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.iter().filter(|&&b| b == b'\n').count();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let d = dump(vec![session("imap/127.0.0.1/alice", 7, 100_000)]);
    let mut lines = LineCounter(0);
    write_table(&d, &Filter::default(), true, 80, &mut lines).unwrap();
    assert_eq!(lines.0, 100_001);
    let mut items = LineCounter(0);
    write_json(&d, &Filter::default(), true, &mut items).unwrap();
    assert_eq!(items.0, 1);
}
