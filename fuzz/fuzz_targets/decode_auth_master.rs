//! auth-master replies (src/wire/auth_master.rs): no input may panic; a decoded reply
//! re-encodes to bytes that decode the same.
#![no_main]

use foreman::wire::auth_master::{decode_reply, encode_reply, MAX_REPLY_LINE};
use foreman::wire::DecodeError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match decode_reply(rest) {
            Ok((n, reply)) => {
                assert!(n >= 1 && rest[n - 1] == b'\n');
                let mut out = Vec::new();
                encode_reply(&reply, &mut out);
                assert_eq!(decode_reply(&out).map(|(_, r)| r), Ok(reply));
                rest = &rest[n..];
            }
            Err(DecodeError::Incomplete) => {
                assert!(!rest.contains(&b'\n') && rest.len() < MAX_REPLY_LINE);
                break;
            }
            Err(DecodeError::Invalid(_)) => break,
        }
    }
});
