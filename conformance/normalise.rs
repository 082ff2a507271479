//! What differs legitimately between a recording and a replay, and how it is matched.
//!
//! Only unix timestamps are normalised. They appear in anvil replies as the second number of a
//! `PENALTY-GET` reply and the last two columns of `PENALTY-DUMP` rows. A recording turns every
//! whitespace/TAB-delimited decimal token of 9 or 10 digits whose value lies inside the
//! recording's wall-clock window (widened by a day) into `{ts±K}`, K relative to the
//! transcript's base second. A replay accepts any decimal within a tolerance of
//! `replay base + K`. Pids need no marker: every pid an anvil prints was sent to it by a
//! client, and the replayer sends the recorded bytes unchanged.
//!
//! `CONNECT-DUMP` rows (exactly two TABs: ident, pid, refcount) come in hash order, so a run of
//! consecutive rows is compared as a multiset. `PENALTY-DUMP` rows (three TABs) are ordered
//! by the protocol and compared in order.

use super::transcript::Piece;

/// Seconds added on both sides of the recording window when spotting timestamps.
pub const WINDOW_SLACK_SECS: i64 = 86_400;

/// Turns one recorded reply line into pieces, replacing timestamps inside
/// `[window.0 - slack, window.1 + slack]` by markers relative to `base`.
pub fn normalise_reply(line: &[u8], base: i64, window: (i64, i64)) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut cur = Vec::new();
    let mut rest = line;
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\t' || b == b' ')
            .unwrap_or(rest.len());
        let token = &rest[..end];
        match timestamp_value(token) {
            Some(v) if v >= window.0 - WINDOW_SLACK_SECS && v <= window.1 + WINDOW_SLACK_SECS => {
                if !cur.is_empty() {
                    pieces.push(Piece::Bytes(std::mem::take(&mut cur)));
                }
                pieces.push(Piece::Timestamp(v - base));
            }
            _ => cur.extend_from_slice(token),
        }
        match rest.get(end) {
            Some(&sep) => {
                cur.push(sep);
                rest = &rest[end + 1..];
            }
            None => break,
        }
    }
    if !cur.is_empty() {
        pieces.push(Piece::Bytes(cur));
    }
    pieces
}

fn timestamp_value(token: &[u8]) -> Option<i64> {
    if !(9..=10).contains(&token.len()) || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// Whether `got` matches `expected`; `ts_ok(k, value)` decides a `{ts±k}` marker.
pub fn match_line(expected: &[Piece], got: &[u8], ts_ok: &dyn Fn(i64, i64) -> bool) -> bool {
    let mut rest = got;
    for p in expected {
        match p {
            Piece::Bytes(b) => match rest.strip_prefix(b.as_slice()) {
                Some(r) => rest = r,
                None => return false,
            },
            Piece::Timestamp(k) => {
                let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                let value = std::str::from_utf8(&rest[..n])
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok());
                match value {
                    Some(v) if n > 0 && ts_ok(*k, v) => rest = &rest[n..],
                    _ => return false,
                }
            }
        }
    }
    rest.is_empty()
}

/// Whether an expected reply line is a `CONNECT-DUMP` row (exactly two TABs).
pub fn is_connect_dump_row(pieces: &[Piece]) -> bool {
    let tabs: usize = pieces
        .iter()
        .map(|p| match p {
            Piece::Bytes(b) => b.iter().filter(|&&c| c == b'\t').count(),
            Piece::Timestamp(_) => 0,
        })
        .sum();
    tabs == 2
}

/// Compares a group of expected reply lines with as many received lines. Returns the index
/// (into `expected`) of the first line or dump run that does not match, and a note.
pub fn compare_lines(
    expected: &[Vec<Piece>],
    got: &[Vec<u8>],
    ts_ok: &dyn Fn(i64, i64) -> bool,
) -> Result<(), (usize, String)> {
    let mut i = 0;
    while i < expected.len() {
        if i >= got.len() {
            return Err((i, "missing reply line".into()));
        }
        if is_connect_dump_row(&expected[i]) {
            let mut j = i;
            while j < expected.len() && is_connect_dump_row(&expected[j]) {
                j += 1;
            }
            let got_run = &got[i..j.min(got.len())];
            let mut used = vec![false; got_run.len()];
            for (n, e) in expected[i..j].iter().enumerate() {
                let hit =
                    (0..got_run.len()).find(|&g| !used[g] && match_line(e, &got_run[g], ts_ok));
                match hit {
                    Some(g) => used[g] = true,
                    None => {
                        return Err((
                            i + n,
                            "CONNECT-DUMP rows differ (compared as a multiset)".into(),
                        ));
                    }
                }
            }
            if got_run.len() < j - i {
                return Err((i, "fewer CONNECT-DUMP rows than expected".into()));
            }
            i = j;
        } else {
            if !match_line(&expected[i], &got[i], ts_ok) {
                return Err((i, "reply line differs".into()));
            }
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::transcript::{escape_pieces, unescape};

    fn show(p: &[Piece]) -> String {
        let mut s = String::new();
        escape_pieces(p, &mut s);
        s
    }

    #[test]
    fn timestamps_in_the_window_become_markers() {
        let base = 1_795_892_930;
        let w = (base, base + 20);
        assert_eq!(show(&normalise_reply(b"2 1795892932", base, w)), "2 {ts+2}");
        assert_eq!(show(&normalise_reply(b"0 0", base, w)), "0 0");
        assert_eq!(
            show(&normalise_reply(b"pA\t2\t1795892932\t1795892933", base, w)),
            "pA\\x092\\x09{ts+2}\\x09{ts+3}"
        );
        // A pid-like number far from the window, and digits inside an ident, stay.
        assert_eq!(
            show(&normalise_reply(b"x/1795892932y\t2147483647\t1", base, w)),
            "x/1795892932y\\x092147483647\\x091"
        );
    }

    #[test]
    fn markers_match_within_tolerance_only() {
        let e = unescape("2 {ts+2}", true).unwrap();
        let ok = |k: i64, v: i64| (v - (1000 + k)).abs() <= 1;
        assert!(match_line(&e, b"2 1002", &ok));
        assert!(match_line(&e, b"2 1003", &ok));
        assert!(!match_line(&e, b"2 1005", &ok));
        assert!(!match_line(&e, b"2 1002 ", &ok));
        assert!(!match_line(&e, b"3 1002", &ok));
        assert!(!match_line(&e, b"2 ", &ok));
    }

    #[test]
    fn connect_dump_rows_are_a_multiset() {
        let ok = |_: i64, _: i64| true;
        let exp: Vec<Vec<Piece>> = ["a\\x091\\x092", "b\\x092\\x091", ""]
            .iter()
            .map(|s| unescape(s, true).unwrap())
            .collect();
        let got: Vec<Vec<u8>> = vec![b"b\t2\t1".to_vec(), b"a\t1\t2".to_vec(), b"".to_vec()];
        assert!(compare_lines(&exp, &got, &ok).is_ok());
        let bad: Vec<Vec<u8>> = vec![b"b\t2\t1".to_vec(), b"a\t1\t3".to_vec(), b"".to_vec()];
        assert_eq!(compare_lines(&exp, &bad, &ok).unwrap_err().0, 0);
        // Penalty rows (three TABs) keep their order.
        let exp: Vec<Vec<Piece>> = ["a\\x091\\x092\\x093", "b\\x091\\x092\\x093"]
            .iter()
            .map(|s| unescape(s, true).unwrap())
            .collect();
        let swapped: Vec<Vec<u8>> = vec![b"b\t1\t2\t3".to_vec(), b"a\t1\t2\t3".to_vec()];
        assert!(compare_lines(&exp, &swapped, &ok).is_err());
    }
}
