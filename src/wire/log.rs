//! Dovecot's internal log-pipe line format, what a service writes to fd 2 under a master
//! (master-interface.md §10.2): `\x01 <type byte> <pid> SP <text> LF`, type byte = level + 1,
//! 8 = option line (`prefix=…`, `ip=…`). Lines longer than PIPE_BUF are split.
//!
//! Every line this module produces, header and LF included, is at most [`PIPE_BUF`] bytes, so
//! a caller that writes each line with one `write()` never interleaves with other writers.

/// Log levels with their internal type bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 1,
    Info = 2,
    Warning = 3,
    Error = 4,
    Fatal = 5,
    Panic = 6,
}

impl Level {
    /// The word Dovecot prints in log files (`Error`, `Info`, …).
    pub fn name(self) -> &'static str {
        match self {
            Level::Debug => "Debug",
            Level::Info => "Info",
            Level::Warning => "Warning",
            Level::Error => "Error",
            Level::Fatal => "Fatal",
            Level::Panic => "Panic",
        }
    }
}

/// Largest atomic pipe write; longer messages are split into several lines.
pub const PIPE_BUF: usize = 4096;

/// Magic of the handshake the master writes into a fresh log pipe (master-interface.md §10.1).
pub const LOG_HANDSHAKE_MAGIC: u32 = 0x02ff_03fe;

/// The log-pipe handshake: magic, prefix length (both native u32), prefix (`"imap: "`, or
/// `"MASTER"` for the control pipe).
pub fn encode_handshake(prefix: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&LOG_HANDSHAKE_MAGIC.to_ne_bytes());
    out.extend_from_slice(&(prefix.len() as u32).to_ne_bytes());
    out.extend_from_slice(prefix);
}

#[cfg(test)]
mod handshake_tests {
    /// Bytes observed with strace from the stock master (§10.1).
    #[test]
    fn observed_handshakes() {
        let mut out = Vec::new();
        super::encode_handshake(b"MASTER", &mut out);
        assert_eq!(out, b"\xfe\x03\xff\x02\x06\0\0\0MASTER");
        out.clear();
        super::encode_handshake(b"imap-login: ", &mut out);
        assert_eq!(&out[..8], b"\xfe\x03\xff\x02\x0c\0\0\0");
    }
}

/// Option-line type byte.
const OPTION_TYPE: u8 = 8;

/// Appends one or more internal-format lines carrying `text` at `level` for `pid`. Text is
/// split so that each line (header and LF included) fits in [`PIPE_BUF`]; an LF inside the
/// text also splits it, as stock's writer does.
///
/// Empty text gives one line with empty text; one trailing LF in `text` does not add an
/// empty line (`"a\n"` gives the same bytes as `"a"`), LFs elsewhere are kept as empty lines.
pub fn encode_line(level: Level, pid: u32, text: &[u8], out: &mut Vec<u8>) {
    let mut header = [0u8; 13];
    let header = fill_header(&mut header, level as u8, pid);
    let max_text = PIPE_BUF - header.len() - 1;
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    for piece in text.split(|&b| b == b'\n') {
        let mut chunks = piece.chunks(max_text);
        // `chunks` yields nothing for an empty piece; it still gets its line.
        let first = chunks.next().unwrap_or(b"");
        for chunk in std::iter::once(first).chain(chunks) {
            out.extend_from_slice(header);
            out.extend_from_slice(chunk);
            out.push(b'\n');
        }
    }
}

/// Appends the option line that sets the per-pid prefix: `\x01\x08<pid> prefix=<prefix>\n`.
///
/// The prefix is cut at its first LF or CR and to what fits in one [`PIPE_BUF`] line, as it
/// cannot be split or continued.
pub fn encode_prefix_option(pid: u32, prefix: &[u8], out: &mut Vec<u8>) {
    let mut header = [0u8; 13];
    let header = fill_header(&mut header, OPTION_TYPE, pid);
    const KEY: &[u8] = b"prefix=";
    let end = memchr::memchr2(b'\n', b'\r', prefix).unwrap_or(prefix.len());
    let max = PIPE_BUF - header.len() - KEY.len() - 1;
    let prefix = &prefix[..end.min(max)];
    out.extend_from_slice(header);
    out.extend_from_slice(KEY);
    out.extend_from_slice(prefix);
    out.push(b'\n');
}

/// Writes `\x01 <type> <pid> SP` into `buf` and returns the used part (at most 13 bytes).
fn fill_header(buf: &mut [u8; 13], type_byte: u8, pid: u32) -> &[u8] {
    buf[0] = 0x01;
    buf[1] = type_byte;
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = pid;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    buf[2..2 + len].copy_from_slice(&digits[i..]);
    buf[2 + len] = b' ';
    &buf[..3 + len]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: Level, pid: u32, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_line(level, pid, text, &mut out);
        out
    }

    /// The anvil lines observed on fd 2 of stock anvil (anvil-protocol.md §1.7) [live].
    #[test]
    fn known_answers() {
        let mut out = Vec::new();
        encode_prefix_option(24310, b"anvil: ", &mut out);
        assert_eq!(out, b"\x01\x0824310 prefix=anvil: \n");
        assert_eq!(
            line(Level::Error, 24310, b"connect limit: disconnection for unknown pid 24322 + ident imap/127.0.0.1/alice"),
            b"\x01\x0424310 connect limit: disconnection for unknown pid 24322 + ident imap/127.0.0.1/alice\n"
        );
        // master-interface.md §10.2 observations.
        assert_eq!(
            line(Level::Info, 13854, b"Login: user=<testuser>, method=PLAIN"),
            b"\x01\x0213854 Login: user=<testuser>, method=PLAIN\n"
        );
        let mut out = Vec::new();
        encode_prefix_option(
            13857,
            b"imap(testuser)<13857><Hp251FphBMh/AAAB>: ",
            &mut out,
        );
        assert_eq!(
            out,
            b"\x01\x0813857 prefix=imap(testuser)<13857><Hp251FphBMh/AAAB>: \n"
        );
    }

    #[test]
    fn type_bytes() {
        for (level, byte) in [
            (Level::Debug, 1u8),
            (Level::Info, 2),
            (Level::Warning, 3),
            (Level::Error, 4),
            (Level::Fatal, 5),
            (Level::Panic, 6),
        ] {
            assert_eq!(line(level, 0, b"x"), [1, byte, b'0', b' ', b'x', b'\n']);
        }
        assert_eq!(line(Level::Info, u32::MAX, b""), b"\x01\x024294967295 \n");
    }

    #[test]
    fn lf_splits_with_repeated_header() {
        assert_eq!(
            line(Level::Warning, 7, b"a\nb"),
            b"\x01\x037 a\n\x01\x037 b\n"
        );
        assert_eq!(line(Level::Warning, 7, b"a\n"), b"\x01\x037 a\n");
        assert_eq!(
            line(Level::Warning, 7, b"a\n\nb"),
            b"\x01\x037 a\n\x01\x037 \n\x01\x037 b\n"
        );
        assert_eq!(line(Level::Warning, 7, b""), b"\x01\x037 \n");
    }

    #[test]
    fn long_text_splits_at_pipe_buf() {
        let header = b"\x01\x0412345 ";
        let max_text = PIPE_BUF - header.len() - 1;
        for len in [
            max_text - 1,
            max_text,
            max_text + 1,
            3 * max_text + 5,
            10_000,
        ] {
            let text: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let out = line(Level::Error, 12345, &text);
            let lines: Vec<&[u8]> = out.split_inclusive(|&b| b == b'\n').collect();
            assert_eq!(lines.len(), len.div_ceil(max_text), "len {len}");
            let mut joined = Vec::new();
            for l in &lines {
                assert!(l.len() <= PIPE_BUF);
                assert!(l.starts_with(header));
                joined.extend_from_slice(&l[header.len()..l.len() - 1]);
            }
            assert_eq!(joined, text);
            assert_eq!(lines[0].len(), PIPE_BUF.min(header.len() + len + 1));
        }
    }

    #[test]
    fn prefix_option_is_one_bounded_line() {
        let mut out = Vec::new();
        encode_prefix_option(1, b"evil\nprefix", &mut out);
        assert_eq!(out, b"\x01\x081 prefix=evil\n");
        out.clear();
        encode_prefix_option(1, &[b'p'; 9000], &mut out);
        assert_eq!(out.len(), PIPE_BUF);
        assert!(out.ends_with(b"pp\n"));
    }
}
