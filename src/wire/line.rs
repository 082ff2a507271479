//! LF-terminated line framing with stock Dovecot's 1024-byte input buffer.
//!
//! A line including its LF may be at most [`MAX_LINE`] bytes. One CR right before the LF is
//! stripped; any other CR is data. A raw NUL ends the line's content (the rest up to LF is
//! ignored), as stock anvil handles lines as C strings.

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
pub fn next_line(buf: &[u8]) -> Result<Option<(usize, &[u8])>, LineError> {
    let _ = buf;
    todo!()
}
