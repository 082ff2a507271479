//! LF-terminated line framing with stock Dovecot's 1024-byte input buffer.
//!
//! A line including its LF may be at most [`MAX_LINE`] bytes. One CR right before the LF is
//! stripped; any other CR is data. A raw NUL ends the line's content (the rest up to LF is
//! ignored), as stock anvil handles lines as C strings.
//!
//! The CR is stripped before the NUL cut, as stock does (it strips the CR while framing and
//! only later reads the line as a C string): `a\r\0\n` is `a\r`, `a\0\r\n` is `a`.

use memchr::memchr;

use super::scan::find_lf_or_nul;

/// The stock input buffer size: a line, LF included, may be at most this long.
pub const MAX_LINE: usize = 1024;

/// A framing violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// [`MAX_LINE`] bytes are buffered and none is an LF.
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
}

/// Finds the first complete line in `buf`.
///
/// Returns `Ok(Some((consumed, content)))` where `consumed` counts the bytes up to and
/// including the LF and `content` is the line without LF, without one trailing CR, cut at
/// the first NUL. `Ok(None)` means more bytes are needed (fewer than [`MAX_LINE`] bytes and no
/// LF). `Err(TooLong)` when the first [`MAX_LINE`] bytes hold no LF.
#[inline]
pub fn next_line(buf: &[u8]) -> Result<Option<(usize, &[u8])>, LineError> {
    let window = &buf[..buf.len().min(MAX_LINE)];
    // One pass finds the LF of a NUL-free line; a NUL (rare) needs a second look for the LF.
    let lf = match find_lf_or_nul(window) {
        Some(i) if window[i] == b'\n' => return Ok(Some((i + 1, strip_cr(&buf[..i])))),
        // Content ends at the NUL; a CR stripped before the LF lies after it.
        Some(nul) => memchr(b'\n', &window[nul..]).map(|lf| (nul, nul + lf)),
        None => None,
    };
    match lf {
        Some((nul, lf)) => Ok(Some((lf + 1, &buf[..nul]))),
        None if buf.len() >= MAX_LINE => Err(LineError::TooLong),
        None => Ok(None),
    }
}

/// Like [`next_line`] without a length limit, for clients reading replies (stock clients
/// read anvil's replies with an unlimited buffer; an escaped dump row can exceed 1024 bytes).
#[inline]
pub fn next_line_unlimited(buf: &[u8]) -> Option<(usize, &[u8])> {
    memchr(b'\n', buf).map(|lf| (lf + 1, content(&buf[..lf])))
}

/// The content of a line given without its LF: one trailing CR stripped, then cut at NUL.
#[inline]
fn content(line: &[u8]) -> &[u8] {
    let line = strip_cr(line);
    match memchr(0, line) {
        Some(nul) => &line[..nul],
        None => line,
    }
}

/// One trailing CR removed.
#[inline]
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Framed<'a> = Option<(usize, &'a [u8])>;

    #[test]
    fn known_answers() {
        let cases: &[(&[u8], Framed)] = &[
            (b"", None),
            (b"abc", None),
            (b"\n", Some((1, b""))),
            (b"\r\n", Some((2, b""))),
            (b"abc\nrest", Some((4, b"abc"))),
            (b"abc\r\n", Some((5, b"abc"))),
            // [live, L14/L15]: only one CR right before LF is stripped.
            (b"a\rb\n", Some((4, b"a\rb"))),
            (b"a\r\r\n", Some((4, b"a\r"))),
            // [live, L11]: a raw NUL ends the content.
            (b"LOOKUP\tx\0garbage\n", Some((17, b"LOOKUP\tx"))),
            (b"a\r\0\n", Some((4, b"a\r"))),
            (b"a\0\r\n", Some((4, b"a"))),
            (b"\0\n", Some((2, b""))),
        ];
        for (input, want) in cases {
            assert_eq!(
                next_line(input).unwrap(),
                *want,
                "input {:?}",
                bstr::BStr::new(input)
            );
            assert_eq!(next_line_unlimited(input), *want);
        }
    }

    /// [live, L7/L8/L9]: 1024 bytes including the LF are accepted, 1025 are not.
    #[test]
    fn oversized_lines() {
        let mut ok = b"LOOKUP\t".to_vec();
        ok.extend(std::iter::repeat_n(b'a', 1016));
        ok.push(b'\n');
        assert_eq!(ok.len(), 1024);
        assert_eq!(next_line(&ok).unwrap(), Some((1024, &ok[..1023])));

        let mut long = b"LOOKUP\t".to_vec();
        long.extend(std::iter::repeat_n(b'a', 1017));
        long.push(b'\n');
        assert_eq!(long.len(), 1025);
        assert_eq!(next_line(&long), Err(LineError::TooLong));
        assert_eq!(next_line(&long[..1024]), Err(LineError::TooLong));
        // One byte short of the limit without LF: still waiting.
        assert_eq!(next_line(&long[..1023]), Ok(None));
        // The unlimited variant takes it.
        assert_eq!(next_line_unlimited(&long), Some((1025, &long[..1024])));
    }

    #[test]
    fn only_first_line_is_taken() {
        let buf = b"one\ntwo\n";
        let (n, l) = next_line(buf).unwrap().unwrap();
        assert_eq!((n, l), (4, &b"one"[..]));
        assert_eq!(next_line(&buf[n..]).unwrap(), Some((4, &b"two"[..])));
    }
}
