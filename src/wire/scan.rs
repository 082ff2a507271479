//! Word-at-a-time (SWAR) byte scanning for the short lines of the anvil hot path.
//!
//! `memchr` pays a dispatch and setup cost per call that dominates on 5–40 byte fields;
//! these helpers test 8 bytes per step with plain integer arithmetic and no `unsafe`.
//! Each `*_bytes` function returns a word whose high bit is set in the bytes that match;
//! bits above the lowest match may be false positives (borrows propagate upward), so only
//! the lowest set bit is meaningful, which is all a "find first" needs.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Every byte the line and field scanners stop at is below this: NUL, 0x01, TAB, LF (and,
/// rarely, other control bytes, which the callers step over as data).
const CONTROL_LIMIT: u8 = 0x0b;

/// The first byte below [`CONTROL_LIMIT`] in `s` at or after `from`.
///
/// Eight bytes per step: `(w - 0x0b..) & !w & 0x80..` flags bytes below 0x0b. Bits above the
/// lowest flagged byte can be false positives (a borrow moves upward), the lowest never is.
/// The tail is covered by one overlapping load with the already seen bytes masked off.
#[inline(always)]
fn find_control(s: &[u8], from: usize) -> Option<usize> {
    let below = |w: u64| w.wrapping_sub(LO * u64::from(CONTROL_LIMIT)) & !w & HI;
    let len = s.len();
    let mut at = from;
    while at + 8 <= len {
        let m = below(u64::from_le_bytes(
            s[at..at + 8].try_into().expect("8 bytes"),
        ));
        if m != 0 {
            return Some(at + (m.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    if at >= len {
        None
    } else if len >= 8 {
        let base = len - 8;
        let fresh = !0u64 << (8 * (at - base));
        let m = below(u64::from_le_bytes(s[base..].try_into().expect("8 bytes"))) & fresh;
        (m != 0).then(|| base + (m.trailing_zeros() / 8) as usize)
    } else {
        s[at..]
            .iter()
            .position(|&b| b < CONTROL_LIMIT)
            .map(|i| at + i)
    }
}

/// First TAB, NUL or 0x01: where a raw field ends or stops being plain.
#[inline]
pub(crate) fn find_tab_or_special(s: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let i = find_control(s, at)?;
        if matches!(s[i], b'\t' | 0 | 1) {
            return Some(i);
        }
        at = i + 1;
    }
}

/// First LF or NUL.
#[inline]
pub(crate) fn find_lf_or_nul(s: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let i = find_control(s, at)?;
        if s[i] == b'\n' || s[i] == 0 {
            return Some(i);
        }
        at = i + 1;
    }
}

/// The TAB positions of a request line, as far as a request can use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tabs {
    /// Positions of the first `count` TABs.
    pub at: [usize; Tabs::MAX],
    pub count: usize,
}

impl Tabs {
    /// No request uses more than four fields, so the fourth TAB ends the last one needed.
    pub const MAX: usize = 4;
}

/// Finds the first [`Tabs::MAX`] TABs of `line`. `None` when a NUL or 0x01 comes before the
/// last of them (or before the end): the fields that matter then need unescaping. With
/// `Some`, every field up to the last TAB found, and the one after it when fewer than
/// [`Tabs::MAX`] were found, is plain bytes. An LF here is data.
#[inline]
pub(crate) fn plain_tabs(line: &[u8]) -> Option<Tabs> {
    let mut tabs = Tabs {
        at: [0; Tabs::MAX],
        count: 0,
    };
    let mut at = 0;
    while let Some(i) = find_control(line, at) {
        match line[i] {
            b'\t' => {
                tabs.at[tabs.count] = i;
                tabs.count += 1;
                if tabs.count == Tabs::MAX {
                    break;
                }
            }
            0 | 1 => return None,
            _ => {}
        }
        at = i + 1;
    }
    Some(tabs)
}

/// The hot path of request framing and splitting in one pass: the position of the first LF
/// in `window` and the TABs before it (as [`plain_tabs`] would find them in the line).
/// `None` when `window` holds no LF, or a NUL or 0x01 comes before the LF and before the
/// last TAB that matters: the caller then takes the general path.
#[inline]
pub(crate) fn scan_plain_line(window: &[u8]) -> Option<(usize, Tabs)> {
    let mut tabs = Tabs {
        at: [0; Tabs::MAX],
        count: 0,
    };
    let mut at = 0;
    loop {
        let i = find_control(window, at)?;
        match window[i] {
            b'\n' => return Some((i, tabs)),
            b'\t' if tabs.count < Tabs::MAX => {
                tabs.at[tabs.count] = i;
                tabs.count += 1;
            }
            // After the last TAB that matters, fields are ignored: only the LF counts.
            0 | 1 if tabs.count < Tabs::MAX => return None,
            _ => {}
        }
        at = i + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_search(s in proptest::collection::vec(
            prop_oneof![Just(0u8), Just(1), Just(2), Just(b'\t'), Just(b'\n'), Just(0x80), Just(0xff), any::<u8>()],
            0..40,
        )) {
            prop_assert_eq!(find_tab_or_special(&s), s.iter().position(|&b| b < 2 || b == b'\t'));
            prop_assert_eq!(find_lf_or_nul(&s), s.iter().position(|&b| b == 0 || b == b'\n'));
        }
    }

    /// The obvious implementation of [`plain_tabs`].
    fn plain_tabs_model(line: &[u8]) -> Option<Tabs> {
        let mut tabs = Tabs {
            at: [0; Tabs::MAX],
            count: 0,
        };
        for (i, &b) in line.iter().enumerate() {
            if b < 2 {
                return None;
            }
            if b == b'\t' {
                tabs.at[tabs.count] = i;
                tabs.count += 1;
                if tabs.count == Tabs::MAX {
                    break;
                }
            }
        }
        Some(tabs)
    }

    proptest! {
        #[test]
        fn plain_tabs_matches_model(s in proptest::collection::vec(
            prop_oneof![4 => Just(b'a'), 2 => Just(b'\t'), 1 => Just(0u8), 1 => Just(1u8), 1 => any::<u8>()],
            0..40,
        )) {
            prop_assert_eq!(plain_tabs(&s), plain_tabs_model(&s));
        }
    }

    proptest! {
        #[test]
        fn scan_plain_line_matches_model(s in proptest::collection::vec(
            prop_oneof![4 => Just(b'a'), 2 => Just(b'\t'), 1 => Just(b'\n'), 1 => Just(0u8), 1 => Just(1u8), 1 => any::<u8>()],
            0..40,
        )) {
            let want = s.iter().position(|&b| b == b'\n').and_then(|lf| Some((lf, plain_tabs_model(&s[..lf])?)));
            prop_assert_eq!(scan_plain_line(&s), want);
        }
    }

    #[test]
    fn plain_tabs_known_answers() {
        let t = |at: &[usize]| {
            let mut tabs = Tabs {
                at: [0; Tabs::MAX],
                count: at.len(),
            };
            tabs.at[..at.len()].copy_from_slice(at);
            Some(tabs)
        };
        assert_eq!(plain_tabs(b""), t(&[]));
        assert_eq!(plain_tabs(b"KILL\t1"), t(&[4]));
        assert_eq!(
            plain_tabs(b"CONNECT\t17908\timap/127.0.0.1/alice"),
            t(&[7, 13])
        );
        assert_eq!(plain_tabs(b"a\tb\tc\td\te\x01\0"), t(&[1, 3, 5, 7]));
        assert_eq!(plain_tabs(b"CONNECT\t1\tx\x01t"), None);
        assert_eq!(plain_tabs(b"\t\t\t\t\t\t\t\t\t"), t(&[0, 1, 2, 3]));
        for len in 0..24 {
            for pos in 0..len {
                let mut s = vec![b'x'; len];
                s[pos] = b'\t';
                assert_eq!(plain_tabs(&s), t(&[pos]));
                s[pos] = 1;
                assert_eq!(plain_tabs(&s), None);
            }
        }
    }

    #[test]
    fn every_position() {
        for len in 0..20 {
            for pos in 0..len {
                for b in [0u8, 1, b'\t'] {
                    let mut s = vec![b'a'; len];
                    s[pos] = b;
                    // A match below a false-positive candidate must still be found first.
                    if pos + 1 < len {
                        s[pos + 1] = 0x80;
                    }
                    assert_eq!(find_tab_or_special(&s), Some(pos));
                }
                let mut s = vec![0xffu8; len];
                s[pos] = b'\n';
                assert_eq!(find_lf_or_nul(&s), Some(pos));
            }
            assert_eq!(find_tab_or_special(&vec![b'x'; len]), None);
        }
    }
}
