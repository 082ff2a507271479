//! Dovecot's tab escaping (`str_tabescape` / `str_tabunescape`): 0x01 is the escape byte.
//! See `../shared/reference/anvil-protocol.md` §3 for every edge case.
//!
//! Decoding is not the inverse of encoding: several spellings decode to the same bytes
//! (`\x01x` and `x`), an escaped NUL truncates the field, and NUL is never encoded. What
//! does hold: `unescape(escape(b)) == b` for every NUL-free `b`.

use std::borrow::Cow;

use memchr::{memchr, memchr2};

use super::scan::find_tab_or_special;

/// The escape byte.
const ESC: u8 = 0x01;

/// The escape letter for a byte that must be escaped, or `None`.
#[inline]
fn escape_letter(b: u8) -> Option<u8> {
    match b {
        ESC => Some(b'1'),
        b'\t' => Some(b't'),
        b'\n' => Some(b'n'),
        b'\r' => Some(b'r'),
        _ => None,
    }
}

/// Appends `raw` to `out`, escaped: 0x01 -> `\x01 1`, TAB -> `\x01 t`, LF -> `\x01 n`,
/// CR -> `\x01 r`; every other byte unchanged. NUL is not escaped (stored values never hold it).
pub fn escape_into(raw: &[u8], out: &mut Vec<u8>) {
    let mut start = 0;
    for (i, &b) in raw.iter().enumerate() {
        if let Some(letter) = escape_letter(b) {
            out.extend_from_slice(&raw[start..i]);
            out.extend_from_slice(&[ESC, letter]);
            start = i + 1;
        }
    }
    out.extend_from_slice(&raw[start..]);
}

/// Like [`escape_into`], returning a new vector.
pub fn escape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    escape_into(raw, &mut out);
    out
}

/// Unescapes one field as stock anvil does, then truncates at the first NUL (C string).
/// `\x01 0` -> NUL, `\x01 1` -> 0x01, `\x01 t` -> TAB, `\x01 r` -> CR, `\x01 n` -> LF,
/// `\x01 X` -> X for any other X, a trailing lone 0x01 is dropped. Borrows when `field` holds
/// no 0x01 and no NUL.
#[inline]
pub fn unescape(field: &[u8]) -> Cow<'_, [u8]> {
    match memchr2(ESC, 0, field) {
        None => Cow::Borrowed(field),
        Some(i) if field[i] == 0 => Cow::Borrowed(&field[..i]),
        // An escaped NUL right at the first escape: the result is the prefix.
        Some(i) if field.get(i + 1) == Some(&b'0') => Cow::Borrowed(&field[..i]),
        Some(i) => Cow::Owned(unescape_slow(field, i)),
    }
}

/// Unescapes `field` whose first 0x01 is at `first`.
#[cold]
fn unescape_slow(field: &[u8], first: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    out.extend_from_slice(&field[..first]);
    let mut rest = &field[first..];
    loop {
        // `rest` starts with 0x01 here.
        let Some(&x) = rest.get(1) else {
            return out; // trailing lone 0x01: dropped
        };
        let decoded = match x {
            b'0' | 0 => return out, // NUL: the C string ends here
            b'1' => ESC,
            b't' => b'\t',
            b'r' => b'\r',
            b'n' => b'\n',
            other => other,
        };
        out.push(decoded);
        rest = &rest[2..];
        match memchr2(ESC, 0, rest) {
            None => {
                out.extend_from_slice(rest);
                return out;
            }
            Some(i) => {
                out.extend_from_slice(&rest[..i]);
                if rest[i] == 0 {
                    return out;
                }
                rest = &rest[i..];
            }
        }
    }
}

/// Splits a line (already framed: no LF, CR stripped, cut at NUL) into unescaped fields.
/// An empty line gives zero fields; otherwise every TAB splits (an escape never protects a
/// TAB) and empty fields are kept.
pub fn split_fields(line: &[u8]) -> Vec<Cow<'_, [u8]>> {
    let mut fields = Vec::new();
    if line.is_empty() {
        return fields;
    }
    let mut rest = line;
    loop {
        let (after, field) = take_field(rest);
        fields.push(field);
        match after.split_first() {
            Some((_tab, next)) => rest = next,
            None => return fields,
        }
    }
}

/// Takes the first field of `input` (up to its first TAB, or all of it) and unescapes it:
/// `(rest, field)` where `rest` is empty or starts at that TAB. Borrows when the field holds
/// no 0x01 and no NUL; one scan finds both the TAB and any escape.
#[inline]
pub(crate) fn take_field(input: &[u8]) -> (&[u8], Cow<'_, [u8]>) {
    match find_tab_or_special(input) {
        None => (&input[input.len()..], Cow::Borrowed(input)),
        Some(i) if input[i] == b'\t' => (&input[i..], Cow::Borrowed(&input[..i])),
        Some(i) => {
            let end = memchr(b'\t', &input[i..]).map_or(input.len(), |tab| i + tab);
            (&input[end..], unescape(&input[..end]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escape_known_answers() {
        // [live, E1]
        assert_eq!(
            escape(b"esc/a\tb\nc\rd\x01e"),
            b"esc/a\x01tb\x01nc\x01rd\x011e"
        );
        assert_eq!(escape(b"plain/127.0.0.1/alice"), b"plain/127.0.0.1/alice");
        assert_eq!(escape(b""), b"");
        assert_eq!(escape(b"\\ \x80\xff\0"), b"\\ \x80\xff\0");
        let mut out = b"pre".to_vec();
        escape_into(b"\t", &mut out);
        assert_eq!(out, b"pre\x01t");
    }

    #[test]
    fn unescape_known_answers() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"esc/a\x01tb\x01nc\x01rd\x011e", b"esc/a\tb\nc\rd\x01e"), // E1
            (b"\x01x", b"x"),                                           // E2
            (b"\x01\x01", b"\x01"),                                     // E5
            (b"q\x01", b"q"),                                           // E3: trailing lone 0x01
            (b"esc4/ab\x010cd", b"esc4/ab"),                            // E4
            (b"LOOK\x01UP", b"LOOKUP"),                                 // E5
            (b"9\x0105", b"9"),                                         // E6
            (b"a\x01tb\x010c", b"a\tb"),
            (b"a\0b", b"a"),
            (b"a\x01t\0b", b"a\t"),
            (b"\x01", b""),
            (b"", b""),
            (b"\x01\x01\x01t\x01", b"\x01\t"),
        ];
        for (input, want) in cases {
            assert_eq!(
                &*unescape(input),
                *want,
                "input {:?}",
                bstr::BStr::new(input)
            );
        }
    }

    #[test]
    fn unescape_borrows_without_escapes() {
        assert!(matches!(
            unescape(b"imap/127.0.0.1/alice"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(unescape(b"ab\x010cd"), Cow::Borrowed(b"ab")));
        assert!(matches!(unescape(b"a\x01tb"), Cow::Owned(_)));
    }

    #[test]
    fn split_known_answers() {
        let s = |l: &[u8]| {
            split_fields(l)
                .into_iter()
                .map(|c| c.into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(s(b""), Vec::<Vec<u8>>::new()); // [live, L1]
        assert_eq!(s(b"\t"), vec![b"".to_vec(), b"".to_vec()]); // [live, L2]
        assert_eq!(s(b"q\x01\tx"), vec![b"q".to_vec(), b"x".to_vec()]); // [live, E3]
        assert_eq!(
            s(b"a\t\tb\t"),
            vec![b"a".to_vec(), vec![], b"b".to_vec(), vec![]]
        );
        assert_eq!(
            s(b"CONNECT\t1\ta\x01tb"),
            vec![b"CONNECT".to_vec(), b"1".to_vec(), b"a\tb".to_vec()]
        );
    }

    proptest! {
        #[test]
        fn escape_round_trip(raw in proptest::collection::vec(1u8..=255, 0..64)) {
            let e = escape(&raw);
            prop_assert!(!e.contains(&b'\t') && !e.contains(&b'\n') && !e.contains(&b'\r'));
            prop_assert_eq!(&*unescape(&e), &raw[..]);
        }

        #[test]
        fn escape_round_trip_biased(raw in proptest::collection::vec(
            prop_oneof![Just(1u8), Just(b'\t'), Just(b'\n'), Just(b'\r'), Just(b'0'), Just(b'1'), Just(b'a')],
            0..32,
        )) {
            let e = escape(&raw);
            prop_assert_eq!(&*unescape(&e), &raw[..]);
        }

        #[test]
        fn split_joins_escaped_fields(fields in proptest::collection::vec(
            proptest::collection::vec(1u8..=255, 0..8), 1..6,
        )) {
            let mut line = Vec::new();
            for (i, f) in fields.iter().enumerate() {
                if i > 0 { line.push(b'\t'); }
                escape_into(f, &mut line);
            }
            let got = split_fields(&line);
            if line.is_empty() {
                prop_assert!(got.is_empty());
            } else {
                prop_assert_eq!(got.len(), fields.len());
                for (g, f) in got.iter().zip(&fields) {
                    prop_assert_eq!(&**g, &f[..]);
                }
            }
        }

        #[test]
        fn unescape_never_longer_and_nul_free(field in proptest::collection::vec(any::<u8>(), 0..64)) {
            let u = unescape(&field);
            prop_assert!(u.len() <= field.len());
            prop_assert!(!u.contains(&0));
        }
    }
}
