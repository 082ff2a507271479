//! LOOKUP replies: no panic; a decoded count re-encodes and reads back the same.
#![no_main]

use foreman::wire::anvil::{decode_count_reply, encode_reply, Reply};
use foreman::wire::DecodeError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_count_reply(data) {
        Ok((n, count)) => {
            assert!(n <= data.len() && data[n - 1] == b'\n');
            let mut out = Vec::new();
            encode_reply(&Reply::Count(count), &mut out);
            assert_eq!(decode_count_reply(&out), Ok((out.len(), count)));
        }
        Err(DecodeError::Incomplete) => assert!(!data.contains(&b'\n')),
        Err(DecodeError::Invalid(e)) => assert!(data.contains(&b'\n') && !e.0.contains(&b'\n')),
    }
});
