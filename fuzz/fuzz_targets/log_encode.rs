//! The log-line encoder: every line fits PIPE_BUF and carries the header; the texts of the
//! lines joined with LF give back the input text (minus one trailing LF).
#![no_main]

use foreman::wire::log::{encode_line, encode_prefix_option, Level, PIPE_BUF};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let levels = [Level::Debug, Level::Info, Level::Warning, Level::Error, Level::Fatal, Level::Panic];
    let level = levels[usize::from(data[0]) % levels.len()];
    let pid = u32::from_le_bytes(data[1..5].try_into().unwrap());
    // Repeat the text to reach past PIPE_BUF now and then.
    let text: Vec<u8> = data[5..].repeat(if data[0] & 0x80 != 0 { 64 } else { 1 });
    let header = format!("\x01{}{} ", char::from(level as u8), pid).into_bytes();

    let mut out = Vec::new();
    encode_line(level, pid, &text, &mut out);
    assert_eq!(out.last(), Some(&b'\n'));
    let mut pieces: Vec<&[u8]> = Vec::new();
    for line in out.split_inclusive(|&b| b == b'\n') {
        assert!(line.len() <= PIPE_BUF);
        assert!(line.starts_with(&header));
        pieces.push(&line[header.len()..line.len() - 1]);
    }
    // Rejoin: pieces of one LF-free segment are concatenated; we cannot tell segments apart
    // here, so compare with the LFs removed.
    let joined: Vec<u8> = pieces.concat();
    let want: Vec<u8> = text.iter().copied().filter(|&b| b != b'\n').collect();
    assert_eq!(joined, want);

    let mut opt = Vec::new();
    encode_prefix_option(pid, &text, &mut opt);
    assert!(opt.len() <= PIPE_BUF);
    assert_eq!(opt.iter().filter(|&&b| b == b'\n').count(), 1);
    assert!(opt.starts_with(format!("\x01\x08{pid} prefix=").as_bytes()));
});
