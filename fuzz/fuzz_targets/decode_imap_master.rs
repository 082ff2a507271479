//! imap-master lines (src/wire/imap_master.rs): no input may panic; a decoded hand-off
//! request and a decoded server line re-encode to bytes that decode the same.
#![no_main]

use foreman::wire::imap_master::{
    base64_decode, base64_encode, decode_handoff, decode_server_line, encode_handoff,
    encode_server_line, ServerLine,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, h)) = decode_handoff(data) {
        let mut out = Vec::new();
        encode_handoff(&h, &mut out);
        assert_eq!(decode_handoff(&out).map(|(_, x)| x), Ok(h));
    }
    if let Ok((_, line)) = decode_server_line(data) {
        let canonical = !matches!(&line, ServerLine::Rejected(e) if e.ends_with(b"\r"));
        if canonical {
            let mut out = Vec::new();
            encode_server_line(&line, &mut out);
            assert_eq!(decode_server_line(&out).map(|(_, x)| x), Ok(line));
        }
    }
    if let Some(raw) = base64_decode(data) {
        // Not canonical (unused low bits may be set), but what it decodes to round-trips.
        assert_eq!(base64_decode(base64_encode(&raw).as_bytes()), Some(raw));
    }
});
