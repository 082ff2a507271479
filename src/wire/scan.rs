//! Word-at-a-time (SWAR) byte scanning for the short lines of the anvil hot path.
//!
//! `memchr` pays a dispatch and setup cost per call that dominates on 5–40 byte fields;
//! these helpers test 8 bytes per step with plain integer arithmetic and no `unsafe`.
//! Each `*_bytes` function returns a word whose high bit is set in the bytes that match;
//! bits above the lowest match may be false positives (borrows propagate upward), so only
//! the lowest set bit is meaningful, which is all a "find first" needs.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Bytes equal to zero.
#[inline(always)]
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(LO) & !w & HI
}

/// Bytes below `n` (`n` at most 128).
#[inline(always)]
fn bytes_below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(LO * u64::from(n)) & !w & HI
}

/// Bytes equal to `b`.
#[inline(always)]
fn bytes_equal(w: u64, b: u8) -> u64 {
    zero_bytes(w ^ (LO * u64::from(b)))
}

/// The position of the first byte of `s` for which `word` flags a match (see module doc)
/// and, for the tail shorter than a word, `byte` is true.
#[inline(always)]
fn find_first(s: &[u8], word: impl Fn(u64) -> u64, byte: impl Fn(u8) -> bool) -> Option<usize> {
    let mut chunks = s.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let w = u64::from_le_bytes(chunk.try_into().expect("chunk of 8"));
        let m = word(w);
        if m != 0 {
            return Some(offset + (m.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| byte(b))
        .map(|i| offset + i)
}

/// First TAB, NUL or 0x01: where a raw field ends or stops being plain.
#[inline]
pub(crate) fn find_tab_or_special(s: &[u8]) -> Option<usize> {
    find_first(
        s,
        |w| bytes_below(w, 2) | bytes_equal(w, b'\t'),
        |b| b < 2 || b == b'\t',
    )
}

/// First LF or NUL.
#[inline]
pub(crate) fn find_lf_or_nul(s: &[u8]) -> Option<usize> {
    find_first(
        s,
        |w| zero_bytes(w) | bytes_equal(w, b'\n'),
        |b| b == 0 || b == b'\n',
    )
}

/// High bit set in exactly the zero bytes of `x` (no false positives).
#[inline(always)]
fn exact_zero_bytes(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
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

/// Finds the first [`Tabs::MAX`] TABs of `line` in one word-at-a-time pass. `None` when a
/// NUL or 0x01 comes before the last of them (or before the end): the fields that matter
/// then need unescaping. With `Some`, every field before the last TAB found, and the one
/// after it when fewer than [`Tabs::MAX`] were found, is plain bytes.
#[inline]
pub(crate) fn plain_tabs(line: &[u8]) -> Option<Tabs> {
    const TAB: u64 = LO * b'\t' as u64;
    const NOT_LOW_BIT: u64 = LO * 0xfe;
    let mut tabs = Tabs {
        at: [0; Tabs::MAX],
        count: 0,
    };
    // Handles the flagged bytes of one word starting at `base`; true when done.
    let mut flagged = |tab_mask: u64, special_mask: u64, base: usize| -> Option<bool> {
        let mut m = tab_mask | special_mask;
        while m != 0 {
            let bit = m & m.wrapping_neg();
            if special_mask & bit != 0 {
                return None;
            }
            tabs.at[tabs.count] = base + (bit.trailing_zeros() / 8) as usize;
            tabs.count += 1;
            if tabs.count == Tabs::MAX {
                return Some(true);
            }
            m &= m - 1;
        }
        Some(false)
    };
    let len = line.len();
    let mut offset = 0;
    while offset + 8 <= len {
        let w = u64::from_le_bytes(line[offset..offset + 8].try_into().expect("8 bytes"));
        if flagged(
            exact_zero_bytes(w ^ TAB),
            exact_zero_bytes(w & NOT_LOW_BIT),
            offset,
        )? {
            return Some(tabs);
        }
        offset += 8;
    }
    if offset < len {
        if len >= 8 {
            // The last 8 bytes, overlapping what was scanned; mask off the overlap.
            let base = len - 8;
            let w = u64::from_le_bytes(line[base..].try_into().expect("8 bytes"));
            let fresh = !0u64 << (8 * (offset - base));
            flagged(
                exact_zero_bytes(w ^ TAB) & fresh,
                exact_zero_bytes(w & NOT_LOW_BIT) & fresh,
                base,
            )?;
        } else {
            for (i, &b) in line.iter().enumerate() {
                if b < 2 {
                    return None;
                }
                if b == b'\t' && flagged(0x80, 0, i)? {
                    break;
                }
            }
        }
    }
    Some(tabs)
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
