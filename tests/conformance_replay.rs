//! The anvil conformance corpus (fixtures/anvil, recorded from stock Dovecot 2.3.19.1) replayed
//! against the stock anvil binary and against Foreman's anvil, plus checks that the replayer
//! really catches differences.

use std::path::PathBuf;
use std::time::Duration;

use foreman::conformance::cli::{replay_files, transcript_paths, Deviations};
use foreman::conformance::fake_master::{AnvilBinary, STOCK_ANVIL};
use foreman::conformance::replay::{replay, ReplayOptions};
use foreman::conformance::transcript::Transcript;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/anvil")
}

fn run_corpus(binary: AnvilBinary, deviations: Deviations) -> foreman::conformance::cli::Summary {
    let opts = ReplayOptions {
        binary,
        ..ReplayOptions::default()
    };
    run_corpus_with(opts, deviations)
}

fn run_corpus_with(
    opts: ReplayOptions,
    deviations: Deviations,
) -> foreman::conformance::cli::Summary {
    let mut out = Vec::new();
    let summary = replay_files(&[corpus()], &opts, &deviations, 4, &mut out).expect("replay ran");
    let text = String::from_utf8_lossy(&out);
    assert!(
        summary.failed.is_empty(),
        "transcripts that did not replay clean: {:?}\n{text}",
        summary.failed
    );
    summary
}

#[test]
fn corpus_is_large_enough_and_parses() {
    let paths = transcript_paths(&[corpus()]).unwrap();
    assert!(paths.len() >= 20, "only {} transcripts", paths.len());
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap();
        let t = Transcript::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        // Printing a parsed transcript gives the file back byte for byte: the format is stable.
        assert_eq!(
            t.render(3),
            text,
            "{} is not in canonical form",
            p.display()
        );
    }
}

#[test]
fn corpus_replays_clean_against_the_stock_anvil() {
    assert!(
        std::path::Path::new(STOCK_ANVIL).exists(),
        "stock anvil missing; run scripts/test.sh"
    );
    let s = run_corpus(AnvilBinary::Stock, Deviations::default());
    assert_eq!(s.deviated, 0);
    assert!(s.passed >= 20);
}

#[test]
fn corpus_replays_against_foreman_with_only_the_documented_deviations() {
    let text = std::fs::read_to_string(corpus().join("foreman-deviations")).unwrap();
    let deviations = Deviations::parse(&text).unwrap();
    let s = run_corpus(
        AnvilBinary::Path(env!("CARGO_BIN_EXE_foreman").into()),
        deviations.clone(),
    );
    assert_eq!(
        s.deviated,
        deviations.0.len(),
        "every documented deviation is still there"
    );
}

#[test]
fn socket_only_transcripts_replay_against_standalone_foreman() {
    let opts = ReplayOptions {
        binary: AnvilBinary::Path(env!("CARGO_BIN_EXE_foreman").into()),
        standalone: true,
        ..ReplayOptions::default()
    };
    let s = run_corpus_with(opts, Deviations::default());
    assert!(
        s.passed >= 10,
        "only {} transcripts replayed standalone",
        s.passed
    );
    assert!(
        s.skipped > 0,
        "transcripts with pipes must be skipped, not replayed"
    );
}

/// Replays a transcript edited by `edit` against stock and returns the mismatch report.
fn replay_edited(name: &str, edit: impl Fn(&str) -> String) -> String {
    let text = std::fs::read_to_string(corpus().join(name)).unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit changed nothing");
    let t = Transcript::parse(&edited).unwrap();
    let opts = ReplayOptions {
        binary: AnvilBinary::Stock,
        timeout: Duration::from_secs(2),
        ..ReplayOptions::default()
    };
    let m = replay(&t, name, &opts)
        .unwrap()
        .expect("the edited transcript must not replay clean");
    m.to_string()
}

#[test]
fn a_changed_reply_is_reported_with_its_line_and_both_sides() {
    let report = replay_edited("connect-lookup-dump.transcript", |t| {
        t.replacen("3 anvil anvil->client 3\n", "3 anvil anvil->client 4\n", 1)
    });
    assert!(
        report.contains("connect-lookup-dump.transcript:17"),
        "{report}"
    );
    assert!(
        report.contains("expected: 4") && report.contains("got:      3"),
        "{report}"
    );
}

#[test]
fn a_missing_close_and_a_changed_dump_row_are_caught() {
    // The anvil closes connection 2 after a bad handshake; a transcript that keeps it open
    // and expects a reply instead must fail.
    let report = replay_edited("handshake-rejected.transcript", |t| {
        t.replacen("1 anvil close-by-anvil", "1 anvil anvil->client 0", 1)
    });
    assert!(report.contains("anvil closed the connection"), "{report}");
    // Dump rows are a multiset, but a different refcount is still a difference.
    let report = replay_edited("connect-lookup-dump.transcript", |t| {
        t.replacen(
            "test/1.2.3.4/u\\x094242\\x092",
            "test/1.2.3.4/u\\x094242\\x093",
            1,
        )
    });
    assert!(report.contains("CONNECT-DUMP rows differ"), "{report}");
    // A close the recording does not have is a difference too.
    let report = replay_edited("connect-malformed.transcript", |t| {
        t.lines()
            .filter(|l| !l.ends_with("close-by-anvil"))
            .map(|l| format!("{l}\n"))
            .collect()
    });
    assert!(
        report.contains("closed a connection the recording kept open"),
        "{report}"
    );
}

#[test]
fn the_direct_recorder_writes_what_stock_answers_and_it_replays() {
    use foreman::conformance::direct::{record, Script};
    let script = Script::new("tiny", "a tiny scenario")
        .client(1)
        .send(
            1,
            "CONNECT\t7\tx/1\nLOOKUP\tx/1\nPENALTY-INC\tp\t0\t3\nPENALTY-GET\tp\n",
        )
        .client(2)
        .send(2, "NOPE\n")
        .close(1);
    let t = record(&script, AnvilBinary::Stock).unwrap();
    let text = t.render(3);
    // Times vary; the timestamp falls in the recording's first or second wall-clock second.
    let body: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("foreman-"))
        .map(|l| l.split_once(' ').unwrap().1.replace("{ts+1}", "{ts+0}"))
        .collect();
    assert_eq!(
        body,
        [
            "- process start",
            "1 anvil open",
            "1 anvil client->anvil VERSION\\x09anvil\\x091\\x090\\x0a",
            "1 anvil client->anvil CONNECT\\x097\\x09x/1\\x0aLOOKUP\\x09x/1\\x0aPENALTY-INC\\x09p\\x090\\x093\\x0aPENALTY-GET\\x09p\\x0a",
            "1 anvil anvil->client 1",
            "1 anvil anvil->client 3 {ts+0}",
            "2 anvil open",
            "2 anvil client->anvil VERSION\\x09anvil\\x091\\x090\\x0a",
            "2 anvil client->anvil NOPE\\x0a",
            "2 anvil close-by-anvil",
            "1 anvil close-by-client",
        ]
    );
    let reparsed = Transcript::parse(&text).unwrap();
    let opts = ReplayOptions::default();
    assert!(replay(&reparsed, "tiny", &opts).unwrap().is_none());
}

#[test]
fn the_recording_proxy_captures_a_live_imap_login_that_replays_on_both_anvils() {
    use foreman::conformance::scenarios::live_scenarios;
    let scenario = live_scenarios()
        .into_iter()
        .find(|s| s.name == "live-imap-login-logout")
        .unwrap();
    let foreman = PathBuf::from(env!("CARGO_BIN_EXE_foreman"));
    let t = foreman::conformance::live::record(&scenario, &foreman).unwrap();
    let text = t.render(3);
    for needle in [
        "- process start\n",
        "master-pipe client->anvil VERSION\\x09anvil\\x091\\x090\\x0a\n",
        "anvil client->anvil LOOKUP\\x09imap/127.0.0.1/alice\\x0a\n",
        "anvil anvil->client 0\n",
        "shared-pipe client->anvil CONNECT\\x09",
        "shared-pipe client->anvil DISCONNECT\\x09",
        "- process master-dead\n",
        "- process exit status 0\n",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    for binary in [AnvilBinary::Stock, AnvilBinary::Path(foreman.clone())] {
        let opts = ReplayOptions {
            binary,
            ..ReplayOptions::default()
        };
        let m = replay(&t, "live-imap-login-logout (fresh)", &opts).unwrap();
        assert!(m.is_none(), "{}", m.unwrap());
    }
}
